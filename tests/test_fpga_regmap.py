"""The SoC's register map and bus pieces: the map derived from the unit, the generated C header, and
the MMIO block, the shared RAM and the UART on Amaranth's simulator (quick; no core, no toolchain)."""

import re
import shutil
import subprocess

import pytest
from amaranth.hdl import Module
from amaranth.lib import data, wiring
from amaranth.sim import Simulator


from hwvirt.fpga.regmap import CONTROL_OFFSET, NAMED_OFFSET, UNIT_ID, c_header, c_names_header, \
    unit_register_map
from hwvirt.fpga.soc import GROUP_WORDS, CPUBusSignature, SharedRAM, UARTTx, UnitMMIO
from hwvirt.hdl.entry_check_catalogue import CHECKS
from hwvirt.hdl.vmcs_fields import BY_NAME
from hwvirt.hdl.vmcs_unit import Command, Outcome, ProcessorState, Result, VMCSUnit, VMXOp
from hwvirt.sim.fresh_stack import run_simulation


@pytest.fixture(scope="module")
def unit_map():
    unit = VMCSUnit()
    unit._MustUse__silence = True
    return unit_register_map(unit)


def test_map_follows_the_unit_signature(unit_map):
    assert unit_map["cmd"].kind == "in_stream"
    assert unit_map["resp"].kind == "out_stream"
    assert unit_map["cpu"].kind == "in"
    assert unit_map["entry_failures"].kind == "out"
    assert "arch_state" not in unit_map and "bus" not in unit_map
    assert unit_map["cmd"].width == data.Layout.cast(Command).size
    assert unit_map["resp"].width == data.Layout.cast(Result).size
    assert unit_map["cpu"].width == data.Layout.cast(ProcessorState).size
    # fixed blocks do not move when a port is added
    assert (unit_map["cmd"].base, unit_map["resp"].base, unit_map["cpu"].base) == (0x400, 0xC00, 0x1000)
    # every field of Result has named registers covering exactly its bits
    resp = unit_map["resp"]
    for name, field in data.Layout.cast(Result):
        regs = [r for r in resp.registers
                if re.fullmatch(re.escape(name.upper()) + r"(_LO|_HI|_W\d+)?", r.name)]
        covered = sorted(b for r in regs for b in range(r.lo, r.lo + r.width))
        assert covered == list(range(field.offset, field.offset + field.width)), name
    for block in unit_map.blocks:
        offsets = [r.offset for r in block.registers]
        assert len(set(offsets)) == len(offsets)
        assert all(NAMED_OFFSET <= o < CONTROL_OFFSET for o in offsets)
        assert 4 * block.words <= NAMED_OFFSET


def _defines(text):
    return dict(re.findall(r"^#define (\w+)\s+(\S.*?)(?:\s+/\*.*)?$", text, re.MULTILINE))


def test_c_header_matches_the_map(unit_map):
    text = c_header(unit_map, unit_base=0x2000_0000)
    d = _defines(text)
    assert d["HV_UNIT_ID"] == f"HV_U(0x{UNIT_ID:08x})"
    for block in unit_map.blocks:
        prefix = "HV_" + block.name.upper()
        assert d[prefix + "_BASE"] == f"(HV_UNIT_BASE + HV_U(0x{block.base:04x}))"
        assert int(d[prefix + "_WORDS"]) == block.words
        for reg in block.registers:
            assert d[f"{prefix}_{reg.name}"] == f"({prefix}_BASE + HV_U(0x{reg.offset:03x}))"
    for name, field in data.Layout.cast(Command):
        assert int(d[f"HV_CMD_{name.upper()}_OFFSET"]) == field.offset
    for op in VMXOp:
        assert int(d[f"HV_OP_{op.name}"]) == op.value
    names = c_names_header()
    assert f"#define VMCS_GUEST_CR0{' ' * 30} 0x{BY_NAME['GUEST_CR0'].encoding:04x}" in names
    # check k of the catalogue is entry k + 1 of the name table (0 = none)
    table = re.search(r"hv_check_names\[\] = \{(.*?)\};", names, re.S).group(1)
    entries = re.findall(r'"([^"]*)"', table)
    assert entries == ["none"] + [c.id for c in CHECKS]


@pytest.mark.skipif(shutil.which("cc") is None, reason="no host C compiler")
def test_c_headers_compile(unit_map, tmp_path):
    (tmp_path / "hwvirt_regs.h").write_text(c_header(unit_map, unit_base=0x2000_0000))
    (tmp_path / "hwvirt_names.h").write_text(c_names_header())
    (tmp_path / "t.c").write_text('#define HV_DEFINE_NAMES\n#include <stdint.h>\n#include "hwvirt_regs.h"\n'
                                  '#include "hwvirt_names.h"\nint main(void){return HV_CMD_WORDS + '
                                  '(int)(HV_RESP_OUTCOME & 0) + (hv_check_names[1] != 0);}\n')
    subprocess.run(["cc", "-std=c11", "-Wall", "-Werror", "-c", "t.c", "-o", "t.o"], cwd=tmp_path, check=True)


class _Bench(wiring.Component):
    """UnitMMIO + SharedRAM, the core's port split into the register bus and the RAM port."""

    def __init__(self):
        unit = VMCSUnit()
        self.mmio = UnitMMIO(unit)
        self.ram = SharedRAM(size=64 * 1024, addr_width=self.mmio.mem.signature.addr_width)
        super().__init__({"regs": In(CPUBusSignature()), "mem": In(CPUBusSignature())})

    def elaborate(self, platform):
        m = Module()
        m.submodules.mmio = self.mmio
        m.submodules.ram = self.ram
        wiring.connect(m, self.mmio.mem, self.ram.wb)
        wiring.connect(m, wiring.flipped(self.regs), self.mmio.bus)
        wiring.connect(m, wiring.flipped(self.mem), self.ram.cpu)
        return m


from amaranth.lib.wiring import In


async def _access(ctx, bus, addr, value=None):
    ctx.set(bus.addr, addr)
    ctx.set(bus.wdata, value or 0)
    ctx.set(bus.wstrb, 0xF if value is not None else 0)
    ctx.set(bus.valid, 1)
    while True:
        await ctx.tick()
        if ctx.get(bus.ready):
            data = ctx.get(bus.rdata)
            break
    ctx.set(bus.valid, 0)
    await ctx.tick()
    return data


def test_unit_through_the_register_map():
    """VMXON, VMCLEAR, VMPTRLD, VMWRITE, VMREAD written as raw Command bits; results read both raw
    and through the named registers; the VMCS region is found in the shared RAM."""
    dut = _Bench()
    regmap = dut.mmio.regmap
    cmd, resp, cpu = regmap["cmd"], regmap["resp"], regmap["cpu"]
    named = {r.name: resp.base + r.offset for r in resp.registers}
    seen = []

    async def tb(ctx):
        async def exec_(op, reg=0, operand=0):
            bits = Command.const({"op": op, "reg": reg, "operand": operand}).as_value().value
            for i in range(cmd.words):
                await _access(ctx, dut.regs, cmd.base + 4 * i, (bits >> (32 * i)) & 0xFFFF_FFFF)
            await _access(ctx, dut.regs, cmd.base + CONTROL_OFFSET, 1)
            while not (await _access(ctx, dut.regs, resp.base + CONTROL_OFFSET)) & 1:
                pass
            raw = 0
            for i in range(resp.words):
                raw |= await _access(ctx, dut.regs, resp.base + 4 * i) << (32 * i)
            result = data.Const(Result, raw)
            outcome = await _access(ctx, dut.regs, named["OUTCOME"])
            value = await _access(ctx, dut.regs, named["VALUE_LO"]) | \
                await _access(ctx, dut.regs, named["VALUE_HI"]) << 32
            assert Outcome(outcome) == result.outcome
            assert value == result.value
            await _access(ctx, dut.regs, resp.base + CONTROL_OFFSET, 1)   # POP
            assert not (await _access(ctx, dut.regs, resp.base + CONTROL_OFFSET)) & 1
            seen.append((op, Outcome(outcome), value))
            return Outcome(outcome), value

        assert await _access(ctx, dut.regs, 0) == UNIT_ID
        state = ProcessorState.const({"cr0": 0x8005_0033, "cr4": 0x2020, "efer": 0xD01, "rflags": 2,
                                            "feature_control": 5, "cpl": 0, "cs_l": 1,
                                        "mov_ss_blocking": 0}).as_value().value
        for i in range(cpu.words):
            await _access(ctx, dut.regs, cpu.base + 4 * i, (state >> (32 * i)) & 0xFFFF_FFFF)
        # revision identifiers into the VMXON region (0x2000) and the VMCS (0x3000), through the core's port
        await _access(ctx, dut.mem, 0x2000, 4)
        await _access(ctx, dut.mem, 0x3000, 4)
        assert await exec_(VMXOp.VMXON, operand=0x2000) == (Outcome.SUCCEED, 0)
        assert (await exec_(VMXOp.VMCLEAR, operand=0x3000))[0] == Outcome.SUCCEED
        assert (await exec_(VMXOp.VMPTRLD, operand=0x3000))[0] == Outcome.SUCCEED
        rip = BY_NAME["GUEST_RIP"].encoding
        assert (await exec_(VMXOp.VMWRITE, reg=rip, operand=0x1234_5678_9ABC))[0] == Outcome.SUCCEED
        assert await exec_(VMXOp.VMREAD, reg=rip) == (Outcome.SUCCEED, 0x1234_5678_9ABC)
        assert await exec_(VMXOp.VMPTRST) == (Outcome.SUCCEED, 0x3000)
        # VMCLEAR writes the VMCS back into the shared RAM: GUEST_RIP lands in the region
        assert (await exec_(VMXOp.VMCLEAR, operand=0x3000))[0] == Outcome.SUCCEED
        words = []
        for offset in range(0x10, 0x1000, 4):
            words.append(await _access(ctx, dut.mem, 0x3000 + offset))
        assert 0x5678_9ABC in words and 0x1234 in words
        assert (await _access(ctx, dut.regs, regmap["status"].base)) & 1        # in VMX operation

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    run_simulation(sim)
    assert len(seen) == 7


def test_register_access_takes_five_cycles():
    """The request is registered, decoded per block in two steps (the word of each group of 16, then
    the group), and the block's word picked: ``ready`` comes in the fifth cycle of ``valid`` (four
    clock edges after it rises), for reads and writes, and a write is seen by the next read; every
    group of a block's words reads back (the named registers at +0x200 are another group than the
    raw words)."""
    dut = _Bench()
    cpu = dut.mmio.regmap["cpu"]
    waits = []

    async def timed(ctx, addr, value=None):
        ctx.set(dut.regs.addr, addr)
        ctx.set(dut.regs.wdata, value or 0)
        ctx.set(dut.regs.wstrb, 0xF if value is not None else 0)
        ctx.set(dut.regs.valid, 1)
        cycles = 0
        while True:
            await ctx.tick()
            cycles += 1
            if ctx.get(dut.regs.ready):
                break
        data = ctx.get(dut.regs.rdata)
        ctx.set(dut.regs.valid, 0)
        await ctx.tick()
        waits.append(cycles)
        return data

    async def tb(ctx):
        assert await timed(ctx, 0) == UNIT_ID
        await timed(ctx, cpu.base + 4, 0x1234_5678)
        assert await timed(ctx, cpu.base + 4) == 0x1234_5678
        assert await timed(ctx, 0x8) == 0                     # an unused word of block 0
        assert await timed(ctx, 0x4) == len(dut.mmio.regmap.blocks)
        # a named register (a later group of the block) aliases the raw word's bits
        named = max(cpu.registers, key=lambda reg: reg.offset)
        assert named.offset // 4 >= GROUP_WORDS
        mask = (1 << min(named.width, 32)) - 1
        await timed(ctx, cpu.base + named.offset, 0x5A5A_A5A5 & mask)
        assert await timed(ctx, cpu.base + named.offset) == 0x5A5A_A5A5 & mask
        raw = 0
        for i in range(cpu.words):
            raw |= await timed(ctx, cpu.base + 4 * i) << (32 * i)
        assert (raw >> named.lo) & mask == 0x5A5A_A5A5 & mask
        # the last group: an in-stream's control register (PENDING, clear)
        assert await timed(ctx, dut.mmio.regmap["cmd"].base + CONTROL_OFFSET) == 0

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    run_simulation(sim)
    assert waits == [4] * len(waits)


def test_every_raw_word_writes_only_itself_and_reads_back():
    """Each raw word of every writable block takes its own value (masked to the block's width) and
    reads it back after all were written, so no write reached another word; the word after each
    block's last raw word, and the window's last word (past the last block's control register),
    read 0."""
    dut = _Bench()
    regmap = dut.mmio.regmap
    blocks = [b for b in regmap.blocks if b.writable]
    expected = {}
    for number, block in enumerate(blocks):
        for i in range(block.words):
            width = min(32, block.width - 32 * i)
            expected[block.base + 4 * i] = (0x9E37_79B9 * (number * 64 + i + 1)) & ((1 << width) - 1)

    async def tb(ctx):
        for addr, value in expected.items():
            await _access(ctx, dut.regs, addr, value)
        for addr, value in expected.items():
            assert await _access(ctx, dut.regs, addr) == value, hex(addr)
        for block in blocks:
            assert await _access(ctx, dut.regs, block.base + 4 * block.words) == 0
        assert await _access(ctx, dut.regs, regmap.size - 4) == 0

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    run_simulation(sim)


def test_shared_ram_serves_both_masters():
    """Core and unit hammer the RAM at once: each gets every access, round robin. Alone, the core's
    access is answered three cycles after its request (registered grant, the block RAM's read, its
    read data registered), the unit's four cycles after (its request registered too)."""
    ram = SharedRAM(size=1024, init=[0x1111_0000_0000_0000 | i for i in range(128)], addr_width=36)

    async def ticks_until(ctx, answer):
        ticks = 0
        while not ticks or not ctx.get(answer):
            await ctx.tick()
            ticks += 1
        return ticks

    async def tb(ctx):
        cpu, wb = ram.cpu, ram.wb
        ctx.set(cpu.valid, 1)
        ctx.set(cpu.addr, 8 * 3)
        assert await ticks_until(ctx, cpu.ready) == 3 and ctx.get(cpu.rdata) == 3
        ctx.set(cpu.valid, 0)
        await ctx.tick()
        ctx.set(wb.cyc, 1)
        ctx.set(wb.stb, 1)
        ctx.set(wb.adr, 9)
        assert await ticks_until(ctx, wb.ack) == 4 and ctx.get(wb.dat_r) == 0x1111_0000_0000_0009
        ctx.set(wb.cyc, 0)
        ctx.set(wb.stb, 0)
        await ctx.tick()
        ctx.set(cpu.valid, 1)
        ctx.set(cpu.addr, 8 * 5 + 4)        # upper half of word 5
        ctx.set(wb.cyc, 1)
        ctx.set(wb.stb, 1)
        ctx.set(wb.adr, 7)
        cpu_data = wb_data = None
        for _ in range(6):
            await ctx.tick()
            if ctx.get(cpu.ready) and cpu_data is None:
                cpu_data = ctx.get(cpu.rdata)
                ctx.set(cpu.valid, 0)
            if ctx.get(wb.ack) and wb_data is None:
                wb_data = ctx.get(wb.dat_r)
                ctx.set(wb.stb, 0)
                ctx.set(wb.cyc, 0)
        assert cpu_data == 0x1111_0000
        assert wb_data == 0x1111_0000_0000_0007
        # a unit address beyond the RAM reads 0 and writes nothing
        ctx.set(wb.cyc, 1)
        ctx.set(wb.stb, 1)
        ctx.set(wb.adr, 1 << 20)
        ctx.set(wb.we, 1)
        ctx.set(wb.sel, 0xFF)
        ctx.set(wb.dat_w, 0xFFFF_FFFF_FFFF_FFFF)
        await ctx.tick().until(wb.ack)
        ctx.set(wb.we, 0)
        ctx.set(wb.stb, 0)
        ctx.set(wb.cyc, 0)
        await ctx.tick()
        ctx.set(wb.adr, 0)
        ctx.set(wb.stb, 1)
        ctx.set(wb.cyc, 1)
        value, = await ctx.tick().sample(wb.dat_r).until(wb.ack)
        assert value == 0x1111_0000_0000_0000

    sim = Simulator(ram)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    run_simulation(sim)


def test_uart_sends_8n1():
    uart = UARTTx(4)

    async def tb(ctx):
        ctx.set(uart.data, 0xA5)
        ctx.set(uart.start, 1)
        await ctx.tick()
        ctx.set(uart.start, 0)
        line = []
        for _ in range(40):
            line.append(ctx.get(uart.tx))
            await ctx.tick()
        bits = line[0::4][:10]
        assert bits[0] == 0 and bits[9] == 1
        assert sum(b << i for i, b in enumerate(bits[1:9])) == 0xA5
        assert ctx.get(uart.busy) == 0

    sim = Simulator(uart)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    run_simulation(sim)
