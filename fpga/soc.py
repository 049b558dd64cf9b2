"""A PicoRV32 SoC with the VMX unit as an MMIO coprocessor.

The soft core (PicoRV32, instantiated from the ``pythondata-cpu-picorv32`` package's Verilog, which
is read at build time and never copied into this repository) runs the mini hypervisor in
``fpga/firmware``. It drives the unit through the register map of :mod:`fpga.regmap`: it writes the
raw bits of a :class:`~hwvirt.hdl.vmcs_unit.Command` into the ``cmd`` window, starts it with GO, polls
the ``resp`` block until a :class:`~hwvirt.hdl.vmcs_unit.Result` is held, reads it and POPs it. The
unit's own 64-bit Wishbone master reaches the same RAM (VMXON and VMCS regions, MSR lists and EPT
tables live there), arbitrated with the core: the unit's physical address *P* is RAM byte *P*, so a
pointer the firmware takes of a RAM object is the physical address it hands to the unit.

Address map (the core's view; 32-bit accesses to the registers)
---------------------------------------------------------------

===========================  =============================================================================
address                      contents
===========================  =============================================================================
0x0000_0000 … RAM size − 1   RAM (64 KiB by default), initialised with the firmware image; 64 bits wide,
                             shared with the unit's bus master (round-robin, one access a cycle). Unit
                             accesses beyond the RAM read 0, writes are dropped.
0x1000_0000                  UART_TX: write — send the low byte (8N1); the write waits while busy
0x1000_0004                  UART_STATUS: bit 0 BUSY
0x1000_0008                  CYCLES_LO: clock cycles since reset, bits 31:0; reading it latches bits 63:32
0x1000_000C                  CYCLES_HI: the latched bits 63:32
0x1000_0010                  BOOT_SEL: the board's program-select inputs (switches; 0 in simulation unless
                             the bench drives ``boot_sel``)
0x1000_0014                  HALT: write — stop: ``halted`` goes high with the low byte on ``exit_code``
                             (the simulation bench ends there; the board shows it on its LEDs)
0x1000_0018                  CLOCK_HZ: the clock frequency the SoC was built for (read-only)
0x2000_0000 …                the VMX unit, :data:`fpga.regmap` layout: block *b* at 0x2000_0000 + 0x400 *b*
  + 0x000                    ID (reads 0x48564D58, "HVMX"); + 0x004 BLOCKS
  + 0x400 (block 1)          ``cmd`` (in-stream, Command): raw words, named OP, REG_LO/HI, OPERAND_W0…3,
                             control at + 0x3F0 (write GO, read PENDING)
  + 0x800 (block 2)          ``guest`` (in-stream, GuestEvent) — present when the unit has the port
  + 0xC00 (block 3)          ``resp`` (out-stream, Result): raw words, named OUTCOME, FAULT, ERROR,
                             VALUE_LO/HI, EXIT_REASON, QUALIFICATION_LO/HI, CHECK, EVENT, EVENT_ERROR;
                             control (read VALID and the result count, write POP)
  + 0x1000 (block 4)         ``cpu`` (input, ProcessorState): the x86 state the instructions depend on
                             (CR0_LO/HI, CR4_LO/HI, EFER, RFLAGS, FEATURE_CONTROL, CPL, CS_L,
                             MOV_SS_BLOCKING), written by the firmware
  + 0x1400 / 0x1800 / 0x1C00 ``status`` (IN_VMX, NON_ROOT), ``current_vmcs``, ``entry_failures`` (every
                             failing VM-entry check of the last entry, bit *k* = catalogue entry *k*)
anything else                reads 0, writes ignored (answered at once, so a stray access never hangs)
===========================  =============================================================================

The exact offsets, and the bit positions of every field inside the raw words, are in the generated
``hwvirt_regs.h`` (:func:`fpga.regmap.c_header`), which the firmware build writes from the same map.
"""

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Module, Mux, ResetSignal, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from hwvirt.hdl.bus import WishboneSignature
from hwvirt.hdl.vmcs_unit import VMCSUnit

from .regmap import BLOCK_SIZE, CONTROL_OFFSET, UNIT_ID, unit_register_map


__all__ = ["CPUBusSignature", "UARTTx", "SysRegs", "SharedRAM", "UnitMMIO", "PicoRV32", "SoC",
           "RAM_BASE", "SYS_BASE", "UNIT_BASE", "GROUP_WORDS", "SYS_REGISTERS", "picorv32_source"]

RAM_BASE = 0x0000_0000
SYS_BASE = 0x1000_0000
UNIT_BASE = 0x2000_0000

#: Words per group of UnitMMIO's first read select (a block's words are picked in two registered
#: steps: the word within its group, then the group).
GROUP_WORDS = 16

#: The system registers: (C name, offset from SYS_BASE, description) — also written to the C header.
SYS_REGISTERS = (
    ("SYS_UART_TX",     0x00, "write: send a byte (8N1)"),
    ("SYS_UART_STATUS", 0x04, "bit 0: transmitter busy"),
    ("SYS_CYCLES_LO",   0x08, "cycle counter bits 31:0 (latches bits 63:32)"),
    ("SYS_CYCLES_HI",   0x0C, "latched cycle counter bits 63:32"),
    ("SYS_BOOT_SEL",    0x10, "program-select inputs"),
    ("SYS_HALT",        0x14, "write: halt with exit code (low byte)"),
    ("SYS_CLOCK_HZ",    0x18, "clock frequency the SoC was built for"),
)
_SYS = {name: offset for name, offset, _ in SYS_REGISTERS}


class CPUBusSignature(wiring.Signature):
    """PicoRV32's native memory interface, from the core's side (valid/ready handshake).

    ``valid`` and the request stay stable until ``ready``; ``wstrb`` = 0 is a read, whose data is
    taken in the cycle with ``ready``.

    Members
    -------
    valid : Out(1)
    addr : Out(32)
        Byte address (word aligned).
    wdata : Out(32)
    wstrb : Out(4)
    rdata : In(32)
    ready : In(1)
    """

    def __init__(self):
        super().__init__({
            "valid": Out(1), "addr": Out(32), "wdata": Out(32), "wstrb": Out(4),
            "rdata": In(32), "ready": In(1),
        })

    def __eq__(self, other):
        return isinstance(other, CPUBusSignature)

    def __repr__(self):
        return "CPUBusSignature()"


class UARTTx(wiring.Component):
    """A UART transmitter, 8N1, ``divisor`` clock cycles per bit.

    Members
    -------
    data : In(8)
    start : In(1)
        Send ``data`` (ignored while ``busy``).
    busy : Out(1)
    tx : Out(1)
        The serial line, high when idle.
    """

    data: In(8)
    start: In(1)
    busy: Out(1)
    tx: Out(1, init=1)

    def __init__(self, divisor):
        if not isinstance(divisor, int) or divisor < 2:
            raise ValueError(f"divisor must be an integer of at least 2, not {divisor!r}")
        self.divisor = divisor
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        shift = Signal(10, init=0x3FF)
        bits = Signal(range(11))
        timer = Signal(range(self.divisor))
        m.d.comb += [self.tx.eq(shift[0]), self.busy.eq(bits != 0)]
        with m.If(bits == 0):
            with m.If(self.start):
                m.d.sync += [shift.eq(Cat(Const(0, 1), self.data, Const(1, 1))), bits.eq(10),
                             timer.eq(self.divisor - 1)]
        with m.Elif(timer == 0):
            m.d.sync += [shift.eq(Cat(shift[1:], Const(1, 1))), bits.eq(bits - 1),
                         timer.eq(self.divisor - 1)]
        with m.Else():
            m.d.sync += timer.eq(timer - 1)
        return m


class SysRegs(wiring.Component):
    """The system registers at :data:`SYS_BASE`: UART, cycle counter, program select, halt.

    Members
    -------
    bus : In(CPUBusSignature)
    tx : Out(1)
    boot_sel : In(4)
    halted : Out(1)
    exit_code : Out(8)
    """

    bus: In(CPUBusSignature())
    tx: Out(1, init=1)
    boot_sel: In(4)
    halted: Out(1)
    exit_code: Out(8)

    def __init__(self, *, uart_divisor, clock_hz):
        self.uart_divisor = uart_divisor
        self.clock_hz = clock_hz
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart = uart = UARTTx(self.uart_divisor)
        m.d.comb += self.tx.eq(uart.tx)
        cycles = Signal(64)
        cycles_hi = Signal(32)
        m.d.sync += cycles.eq(cycles + 1)

        bus = self.bus
        offset = bus.addr[0:8]
        write = bus.wstrb != 0
        # A write to UART_TX waits (no ready) while the transmitter is busy.
        stall = (offset == _SYS["SYS_UART_TX"]) & write & uart.busy
        ack = Signal()
        m.d.sync += ack.eq(bus.valid & ~ack & ~stall)
        m.d.comb += bus.ready.eq(ack)
        first = bus.valid & ~ack & ~stall
        rdata = Signal(32)
        m.d.comb += bus.rdata.eq(rdata)
        with m.If(first):
            with m.If(write):
                with m.Switch(offset):
                    with m.Case(_SYS["SYS_UART_TX"]):
                        m.d.comb += [uart.data.eq(bus.wdata[0:8]), uart.start.eq(1)]
                    with m.Case(_SYS["SYS_HALT"]):
                        m.d.sync += [self.halted.eq(1), self.exit_code.eq(bus.wdata[0:8])]
            with m.Else():
                with m.Switch(offset):
                    with m.Case(_SYS["SYS_UART_STATUS"]):
                        m.d.sync += rdata.eq(uart.busy)
                    with m.Case(_SYS["SYS_CYCLES_LO"]):
                        m.d.sync += [rdata.eq(cycles[0:32]), cycles_hi.eq(cycles[32:64])]
                    with m.Case(_SYS["SYS_CYCLES_HI"]):
                        m.d.sync += rdata.eq(cycles_hi)
                    with m.Case(_SYS["SYS_BOOT_SEL"]):
                        m.d.sync += rdata.eq(self.boot_sel)
                    with m.Case(_SYS["SYS_CLOCK_HZ"]):
                        m.d.sync += rdata.eq(self.clock_hz)
                    with m.Default():
                        m.d.sync += rdata.eq(0)
        return m


class SharedRAM(wiring.Component):
    """RAM, 64 bits wide, shared by the core (32-bit port) and the unit (64-bit Wishbone target).

    One access a cycle, in registered steps (timing): the arbiter grants a request in cycle *t*
    and registers its address, data and byte enables; the block RAMs take them in *t* + 1 and their
    read data is there in *t* + 2, registered for the core and answered (``ready``) in *t* + 3. (The
    block RAM's 5.6 ns clock-to-out and the core's load path behind ``rdata`` did not fit one cycle:
    the SoC's critical path at 46f7338, seed 1, 19.1 ns.)
    Before, the grant drove the address and write enables of the 32 block RAMs in the cycle it was
    decided, and that was the SoC's critical path (b5d9ee0, 44.9 MHz: the core's address → the grant →
    the block RAMs' write enables, 22.3 ns). The unit's request is registered before it competes for
    the RAM, and its read data on the way back (the block RAM's 5.6 ns clock-to-out and the unit's logic
    behind ``dat_r`` do not fit one cycle): a Wishbone request first seen in cycle *t* is granted from
    *t* + 1 and answered (``ack``) three cycles after its grant, in *t* + 4 at the earliest. When both
    request, the one not served last wins (round robin), so neither starves. Wishbone addresses beyond
    the RAM read 0 and drop writes.

    Parameters
    ----------
    size : int
        Bytes (a power of two, at least 8).
    init : sequence of int
        Initial 64-bit words (the firmware image), little-endian.

    Members
    -------
    cpu : In(CPUBusSignature)
    wb : In(WishboneSignature(addr_width))
    """

    def __init__(self, *, size, init=(), addr_width=36):
        exact_log2(size)
        if size < 8:
            raise ValueError(f"size must be a power of two of at least 8, not {size!r}")
        if len(init) > size // 8:
            raise ValueError(f"the image ({8 * len(init)} bytes) does not fit the RAM ({size} bytes)")
        self.size = size
        self.depth = size // 8
        self.init = list(init)
        super().__init__({"cpu": In(CPUBusSignature()), "wb": In(WishboneSignature(addr_width=addr_width))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = Memory(shape=64, depth=self.depth, init=self.init)
        wr = mem.write_port(granularity=8)
        rd = mem.read_port()
        index_bits = ceil_log2(self.depth)
        cpu, wb = self.cpu, self.wb

        # Where a granted access is: in the block RAMs (*t* + 1), its read data out (*t* + 2), and
        # its data registered and acknowledged (*t* + 3).
        cpu_reading, cpu_answer, cpu_acked = Signal(), Signal(), Signal()
        wb_reading, wb_answer, wb_acked = Signal(), Signal(), Signal()
        cpu_in_flight = cpu_reading | cpu_answer | cpu_acked
        wb_in_flight = wb_reading | wb_answer | wb_acked

        # The unit's request, registered before it competes.
        wb_captured = Signal()                # registered, not yet granted
        adr = Signal.like(wb.adr)
        dat_w = Signal.like(wb.dat_w)
        sel = Signal.like(wb.sel)
        we = Signal()
        with m.If(wb.cyc & wb.stb & ~wb_captured & ~wb_in_flight):
            m.d.sync += [wb_captured.eq(1), adr.eq(wb.adr), dat_w.eq(wb.dat_w), sel.eq(wb.sel), we.eq(wb.we)]

        wb_beyond = adr[index_bits:] != 0     # beyond the RAM: reads 0, writes dropped

        # Step 1 (t): grant, round robin, and register the granted access.
        last_wb = Signal()
        cpu_req = cpu.valid & ~cpu_in_flight
        grant_wb = wb_captured & (~cpu_req | ~last_wb)
        grant_cpu = cpu_req & ~grant_wb
        ram_addr = Signal(index_bits)
        ram_data = Signal(64)
        ram_we = Signal(8)
        with m.If(grant_wb):
            m.d.sync += [
                wb_captured.eq(0),
                ram_addr.eq(adr[0:index_bits]), ram_data.eq(dat_w),
                ram_we.eq(Mux(we & ~wb_beyond, sel, 0)),
            ]
        with m.Else():
            m.d.sync += [
                ram_addr.eq(cpu.addr[3:3 + index_bits]), ram_data.eq(Cat(cpu.wdata, cpu.wdata)),
                ram_we.eq(Mux(grant_cpu, Mux(cpu.addr[2], cpu.wstrb << 4, cpu.wstrb), 0)),
            ]
        with m.If(grant_wb | grant_cpu):
            m.d.sync += last_wb.eq(grant_wb)

        # Step 2 (t + 1): the block RAMs take the access.
        m.d.comb += [rd.addr.eq(ram_addr), wr.addr.eq(ram_addr), wr.data.eq(ram_data), wr.en.eq(ram_we)]
        upper = [Signal(name="upper1"), Signal(name="upper2")]
        beyond = [Signal(name="beyond1"), Signal(name="beyond2")]
        m.d.sync += [
            cpu_reading.eq(grant_cpu), upper[0].eq(cpu.addr[2]), upper[1].eq(upper[0]),
            wb_reading.eq(grant_wb), beyond[0].eq(wb_beyond), beyond[1].eq(beyond[0]),
        ]

        # Step 3 (t + 2): the read data, registered; answered in t + 3.
        wb_data = Signal(64)
        cpu_data = Signal(32)
        m.d.sync += [cpu_answer.eq(cpu_reading), wb_answer.eq(wb_reading),
                     cpu_acked.eq(cpu_answer), wb_acked.eq(wb_answer)]
        with m.If(wb_answer):
            m.d.sync += wb_data.eq(Mux(beyond[1], 0, rd.data))
        with m.If(cpu_answer):
            m.d.sync += cpu_data.eq(Mux(upper[1], rd.data[32:64], rd.data[0:32]))
        m.d.comb += [
            wb.ack.eq(wb_acked), wb.dat_r.eq(wb_data),
            cpu.ready.eq(cpu_acked), cpu.rdata.eq(cpu_data),
        ]
        return m


class UnitMMIO(wiring.Component):
    """The VMX unit behind the register map of :func:`fpga.regmap.unit_register_map`.

    Parameters
    ----------
    unit : VMCSUnit
        Any component whose ports are streams (``payload``/``valid``/``ready``) or plain values,
        plus a ``bus`` Wishbone master.
    hidden : tuple of str
        Output ports left out of the map.

    Members
    -------
    bus : In(CPUBusSignature)
        Register accesses from the core (``addr`` bits above the window are ignored).
    mem : Out(WishboneSignature)
        The unit's memory master, passed through.
    """

    def __init__(self, unit, *, hidden=("arch_state",)):
        self.unit = unit
        self.regmap = unit_register_map(unit, hidden=hidden)
        super().__init__({
            "bus": In(CPUBusSignature()),
            "mem": Out(WishboneSignature(addr_width=unit.bus.signature.addr_width)),
        })

    def elaborate(self, platform):
        m = Module()
        unit = self.unit
        m.submodules.unit = unit
        wiring.connect(m, wiring.flipped(self.mem), unit.bus)

        # The request is registered first and decoded block by block, so that the ~300 registers
        # of the map do not converge on the core's address and data lines in one cycle: cycle 1
        # latches the request; cycle 2 performs a write, or latches, in each block, the addressed
        # word of every group of 16 words; cycle 3 latches each block's addressed group word (a
        # block has up to 256 words: two 16-way selects instead of one 256-way); cycle 4 picks the
        # addressed block's word; the core gets ``ready`` in cycle 5 (a register access takes five
        # cycles).
        bus = self.bus
        phase = Signal(range(5))
        req_block = Signal(range(self.regmap.size // BLOCK_SIZE))
        req_word = Signal(exact_log2(BLOCK_SIZE // 4))
        req_write = Signal()
        req_wdata = Signal(32)
        m.d.comb += bus.ready.eq(phase == 4)
        with m.Switch(phase):
            with m.Case(0):
                with m.If(bus.valid):
                    m.d.sync += [phase.eq(1), req_write.eq(bus.wstrb != 0), req_wdata.eq(bus.wdata),
                                 Cat(req_word, req_block).eq(bus.addr[2:ceil_log2(self.regmap.size)])]
            with m.Case(4):
                m.d.sync += phase.eq(0)
            with m.Default():
                m.d.sync += phase.eq(phase + 1)
        rdata = Signal(32)
        m.d.comb += bus.rdata.eq(rdata)

        readers = {0: Const(UNIT_ID, 32), 1: Const(len(self.regmap.blocks), 32)}
        writers = {}   # word index -> list of (target slice, source width) or callable
        for block in self.regmap.blocks:
            port = getattr(unit, block.name)
            base = block.base // 4
            ctrl = base + CONTROL_OFFSET // 4
            if block.kind == "in_stream":
                vec = Signal(block.width, name=f"{block.name}_payload")
                valid = Signal(name=f"{block.name}_valid")
                m.d.comb += [port.payload.eq(vec), port.valid.eq(valid)]
                with m.If(port.valid & port.ready):
                    m.d.sync += valid.eq(0)
                readers[ctrl] = valid
                writers[ctrl] = [("go", valid)]
            elif block.kind == "out_stream":
                vec = Signal(block.width, name=f"{block.name}_held")
                full = Signal(name=f"{block.name}_full")
                count = Signal(8, name=f"{block.name}_count")
                m.d.comb += port.ready.eq(~full)
                with m.If(port.valid & port.ready):
                    m.d.sync += [vec.eq(port.payload), full.eq(1), count.eq(count + 1)]
                readers[ctrl] = Cat(full, Const(0, 7), count)
                writers[ctrl] = [("pop", full)]
            elif block.kind == "in":
                vec = Signal(block.width, name=f"{block.name}_value")
                m.d.comb += port.eq(vec)
            else:
                vec = Value.cast(port)
            for i in range(block.words):
                part = vec[32 * i:min(32 * (i + 1), block.width)]
                readers[base + i] = part
                if block.writable:
                    writers[base + i] = [("set", part)]
            for reg in block.registers:
                index = base + reg.offset // 4
                part = vec[reg.lo:reg.lo + reg.width]
                readers[index] = part
                if block.writable:
                    writers[index] = [("set", part)]

        words_per_block = BLOCK_SIZE // 4
        with m.If((phase == 1) & req_write):
            with m.Switch(Cat(req_word, req_block)):
                for index, actions in writers.items():
                    with m.Case(index):
                        for action, target in actions:
                            if action == "set":
                                m.d.sync += target.eq(req_wdata[0:len(target)])
                            elif action == "go":
                                m.d.sync += target.eq(1)
                            elif action == "pop":
                                m.d.sync += target.eq(0)
        block_words = {}
        for index, value in readers.items():
            block_words.setdefault(index // words_per_block, {})[index % words_per_block] = value
        block_rdata = {}
        for number, words in block_words.items():
            groups = {}
            for word, value in words.items():
                groups.setdefault(word // GROUP_WORDS, {})[word % GROUP_WORDS] = value
            group_rdata = {}
            for group, members in groups.items():
                group_rdata[group] = Signal(32, name=f"block{number}_group{group}_rdata")
                with m.Switch(req_word % GROUP_WORDS):
                    for word, value in members.items():
                        with m.Case(word):
                            m.d.sync += group_rdata[group].eq(value)
                    with m.Default():
                        m.d.sync += group_rdata[group].eq(0)
            block_rdata[number] = Signal(32, name=f"block{number}_rdata")
            with m.Switch(req_word // GROUP_WORDS):
                for group, word_read in group_rdata.items():
                    with m.Case(group):
                        m.d.sync += block_rdata[number].eq(word_read)
                with m.Default():
                    m.d.sync += block_rdata[number].eq(0)
        with m.Switch(req_block):
            for number, word_read in block_rdata.items():
                with m.Case(number):
                    m.d.sync += rdata.eq(word_read)
            with m.Default():
                m.d.sync += rdata.eq(0)
        return m


def picorv32_source():
    """The text of ``picorv32.v`` from the installed ``pythondata-cpu-picorv32`` package."""
    import pathlib
    try:
        import pythondata_cpu_picorv32
    except ImportError as e:
        raise RuntimeError("the SoC needs the PicoRV32 Verilog: pip install pythondata-cpu-picorv32") from e
    return (pathlib.Path(pythondata_cpu_picorv32.data_location) / "picorv32.v").read_text()


class PicoRV32(wiring.Component):
    """PicoRV32 (RV32I, no interrupts, no counters), instantiated as a black box.

    On a platform build its Verilog is added from the package; for a simulation of the exported
    Verilog, compile :func:`picorv32_source` beside it.

    Members
    -------
    bus : Out(CPUBusSignature)
    trap : Out(1)
    """

    bus: Out(CPUBusSignature())
    trap: Out(1)

    def __init__(self, *, reset_address=0, stack_address):
        self.reset_address = reset_address
        self.stack_address = stack_address
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        if platform is not None:
            platform.add_file("picorv32.v", picorv32_source())
        # A power-on reset for the core: board platforms may give a reset-less sync domain, and the
        # core needs resetn low for a few cycles whatever the domain does.
        por = Signal(4, reset_less=True)
        with m.If(por != 15):
            m.d.sync += por.eq(por + 1)
        resetn = (por == 15) & ~ResetSignal(allow_reset_less=True)
        bus = self.bus
        m.submodules.core = Instance(
            "picorv32",
            p_ENABLE_COUNTERS=0, p_ENABLE_COUNTERS64=0, p_ENABLE_REGS_DUALPORT=1,
            p_BARREL_SHIFTER=0, p_COMPRESSED_ISA=0, p_ENABLE_MUL=0, p_ENABLE_DIV=0, p_ENABLE_IRQ=0,
            p_CATCH_MISALIGN=1, p_CATCH_ILLINSN=1,
            p_PROGADDR_RESET=Const(self.reset_address, 32), p_STACKADDR=Const(self.stack_address, 32),
            i_clk=ClockSignal(), i_resetn=resetn,
            o_trap=self.trap,
            o_mem_valid=bus.valid, i_mem_ready=bus.ready, o_mem_addr=bus.addr,
            o_mem_wdata=bus.wdata, o_mem_wstrb=bus.wstrb, i_mem_rdata=bus.rdata,
            i_pcpi_wr=0, i_pcpi_rd=0, i_pcpi_wait=0, i_pcpi_ready=0, i_irq=0,
        )
        return m


class SoC(wiring.Component):
    """PicoRV32 + RAM + system registers + the VMX unit (see the module docstring for the map).

    Parameters
    ----------
    firmware : bytes
        The RAM image (loaded at address 0; the core starts there).
    ram_size : int
        Bytes of RAM (a power of two).
    clock_hz : int
        The clock the SoC runs at (for the firmware, and the UART divisor).
    baud : int
        UART bit rate; ``uart_divisor`` overrides it (simulation uses a few cycles per bit).
    unit : VMCSUnit or None
        The unit (default: ``VMCSUnit()``, the default configuration).

    Members
    -------
    uart_tx : Out(1)
    boot_sel : In(4)
    halted : Out(1)
    exit_code : Out(8)
    trap : Out(1)
        The core stopped on an illegal instruction or misaligned access.
    in_vmx, non_root : Out(1)
    """

    uart_tx: Out(1, init=1)
    boot_sel: In(4)
    halted: Out(1)
    exit_code: Out(8)
    trap: Out(1)
    in_vmx: Out(1)
    non_root: Out(1)

    def __init__(self, firmware=b"", *, ram_size=64 * 1024, clock_hz=25_000_000, baud=115_200,
                 uart_divisor=None, unit=None):
        if len(firmware) > ram_size:
            raise ValueError(f"the firmware ({len(firmware)} bytes) does not fit the RAM ({ram_size} bytes)")
        padded = bytes(firmware) + bytes(-len(firmware) % 8)
        self.image = [int.from_bytes(padded[i:i + 8], "little") for i in range(0, len(padded), 8)]
        self.ram_size = ram_size
        self.clock_hz = clock_hz
        self.uart_divisor = uart_divisor if uart_divisor is not None else max(2, round(clock_hz / baud))
        self.unit = unit if unit is not None else VMCSUnit()
        self.mmio = UnitMMIO(self.unit)
        super().__init__()

    @property
    def regmap(self):
        return self.mmio.regmap

    def elaborate(self, platform):
        m = Module()
        m.submodules.cpu = cpu = PicoRV32(stack_address=self.ram_size)
        m.submodules.ram = ram = SharedRAM(size=self.ram_size, init=self.image,
                                           addr_width=self.mmio.mem.signature.addr_width)
        m.submodules.sys = sys = SysRegs(uart_divisor=self.uart_divisor, clock_hz=self.clock_hz)
        m.submodules.mmio = mmio = self.mmio
        wiring.connect(m, mmio.mem, ram.wb)

        bus = cpu.bus
        region = bus.addr[28:32]
        slaves = ((RAM_BASE >> 28, ram.cpu), (SYS_BASE >> 28, sys.bus), (UNIT_BASE >> 28, mmio.bus))
        for number, slave in slaves:
            m.d.comb += [slave.valid.eq(bus.valid & (region == number)), slave.addr.eq(bus.addr),
                         slave.wdata.eq(bus.wdata), slave.wstrb.eq(bus.wstrb)]
        # Anything else is answered at once with 0.
        stray_ack = Signal()
        stray = bus.valid & ~stray_ack & ~Cat(*(region == n for n, _ in slaves)).any()
        m.d.sync += stray_ack.eq(stray)
        ready = stray_ack
        rdata = Const(0, 32)
        for number, slave in slaves:
            ready = ready | slave.ready
            rdata = Mux(region == number, slave.rdata, rdata)
        m.d.comb += [bus.ready.eq(ready), bus.rdata.eq(rdata)]

        m.d.comb += [
            self.uart_tx.eq(sys.tx), sys.boot_sel.eq(self.boot_sel),
            self.halted.eq(sys.halted), self.exit_code.eq(sys.exit_code), self.trap.eq(cpu.trap),
            self.in_vmx.eq(self.unit.status.in_vmx), self.non_root.eq(self.unit.status.non_root),
        ]
        return m
