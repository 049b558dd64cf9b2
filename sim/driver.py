"""A backend-independent driver for the VMX unit: command port, processor state and memory.

The same :class:`UnitDriver` runs inside Amaranth's simulator and inside a cocotb test on Icarus
Verilog; only :class:`PortIO` differs. Every cycle the driver first *reads* the unit's outputs, then
*writes* its inputs, then advances one clock — so both simulators see the same inputs at the same
clock edges and report the same cycle counts.

Memory is a sparse byte-addressed model (:class:`PhysicalMemory`) answering the unit's Wishbone
requests with ``latency`` wait cycles (0: the acknowledge comes in the cycle of the request).
"""

from amaranth.lib import data

from hwvirt.hdl.exit_logic import GuestEvent
from hwvirt.hdl.vmcs_unit import Command, Fault, Outcome, ProcessorState, Result, VMXOp


__all__ = ["PortIO", "PhysicalMemory", "StreamBusDriver", "UnitDriver", "pack", "unpack", "CommandResult"]


def pack(layout, values):
    """Pack a dict of field values (ints or enum members) into an int for a ``data.Layout``."""
    layout = data.Layout.cast(layout)
    word = 0
    for name, field in layout:
        value = values.get(name, 0)
        value = getattr(value, "value", value)
        word |= (int(value) & ((1 << field.width) - 1)) << field.offset
    return word


def unpack(layout, word):
    """Unpack an int into a dict of ints, by the fields of a ``data.Layout``."""
    layout = data.Layout.cast(layout)
    return {name: (word >> field.offset) & ((1 << field.width) - 1) for name, field in layout}


class PortIO:
    """What a simulator backend provides: named ports, and a clock step.

    Port names are the unit's signature paths joined with ``__`` (``cmd__valid``, ``bus__adr``, ``cpu``).
    ``tick`` returns once the clock edge has happened and the outputs have settled; inputs written
    after it take effect at the next edge.
    """

    async def tick(self):
        raise NotImplementedError

    def get(self, name):
        raise NotImplementedError

    def set(self, name, value):
        raise NotImplementedError


class PhysicalMemory:
    """Sparse physical memory, 4 KiB pages allocated on first touch (unwritten bytes read as 0)."""

    PAGE = 4096

    def __init__(self):
        self._pages = {}

    def _page(self, address):
        return self._pages.setdefault(address // self.PAGE, bytearray(self.PAGE))

    def write(self, address, payload):
        for offset, byte in enumerate(payload):
            self._page(address + offset)[(address + offset) % self.PAGE] = byte

    def read(self, address, length):
        out = bytearray()
        for offset in range(length):
            page = self._pages.get((address + offset) // self.PAGE)
            out.append(page[(address + offset) % self.PAGE] if page is not None else 0)
        return bytes(out)

    def read_int(self, address, width_bytes):
        return int.from_bytes(self.read(address, width_bytes), "little")

    def write_int(self, address, value, width_bytes):
        self.write(address, int(value).to_bytes(width_bytes, "little"))

    def write_word(self, word_address, value, select):
        """A bus write: the bytes of a 64-bit word whose ``select`` bit is set."""
        for byte in range(8):
            if select >> byte & 1:
                self.write(word_address * 8 + byte, bytes([value >> (8 * byte) & 0xFF]))

    def read_word(self, word_address):
        return self.read_int(word_address * 8, 8)


class CommandResult(dict):
    """The decoded :class:`~hwvirt.hdl.vmcs_unit.Result` plus ``cycles`` (acceptance to result)."""


class StreamBusDriver:
    """The test-bench side of a unit with stream ports, one result stream and a Wishbone memory
    port, through a :class:`PortIO`: every cycle it reads the outputs, then serves the bus from a
    :class:`PhysicalMemory` (acknowledging after ``latency`` wait cycles) and writes the inputs, then
    lets the clock tick.

    Parameters
    ----------
    io : PortIO
    memory : PhysicalMemory
    latency : int
        Wait cycles before the memory acknowledges a bus request.
    """

    def __init__(self, io, memory, *, latency=0):
        self.io = io
        self.memory = memory
        self.latency = latency
        self.cycle = 0
        self.bus_accesses = 0
        self._wait = 0

    def _serve_bus(self):
        """One cycle of the memory target: read the request, answer it after the wait cycles."""
        io = self.io
        if io.get("bus__cyc") and io.get("bus__stb"):
            if self._wait < self.latency:
                self._wait += 1
                io.set("bus__ack", 0)
                return
            self._wait = 0
            address = io.get("bus__adr")
            if io.get("bus__we"):
                self.memory.write_word(address, io.get("bus__dat_w"), io.get("bus__sel"))
                io.set("bus__dat_r", 0)
            else:
                io.set("bus__dat_r", self.memory.read_word(address))
            io.set("bus__ack", 1)
            self.bus_accesses += 1
        else:
            self._wait = 0
            io.set("bus__ack", 0)

    async def _handshake(self, port, payload, *, what, limit, sample=None):
        """Offer ``payload`` on the input stream ``port`` and wait for the result.

        Returns ``(result payload, sampled, cycles)``: ``sampled`` is the output named ``sample``
        read in the cycle the result is valid (None without one); ``cycles`` counts clock cycles
        from the edge that accepts the payload to the first cycle in which the result is valid.
        """
        io = self.io
        io.set(f"{port}__payload", payload)
        io.set(f"{port}__valid", 1)
        accepted_at = None
        for _ in range(limit):
            # Read phase: every output of this cycle, before any input changes.
            ready = io.get(f"{port}__ready")
            resp_valid = io.get("resp__valid")
            resp_payload = io.get("resp__payload")
            sampled = io.get(sample) if sample and resp_valid else None
            # Write phase.
            self._serve_bus()
            if accepted_at is None:
                if ready:
                    accepted_at = self.cycle
            else:
                io.set(f"{port}__valid", 0)
                if resp_valid:
                    cycles = self.cycle - accepted_at
                    await self._tick()
                    return resp_payload, sampled, cycles
            await self._tick()
        raise TimeoutError(f"{what}: no result within {limit} cycles")

    async def _tick(self):
        await self.io.tick()
        self.cycle += 1


class UnitDriver(StreamBusDriver):
    """Drives a :class:`~hwvirt.hdl.vmcs_unit.VMCSUnit` (see :class:`StreamBusDriver`)."""

    async def start(self, cpu):
        """Drive idle inputs and the initial processor state, then let one clock pass."""
        self.set_cpu(cpu)
        self.io.set("cmd__valid", 0)
        self.io.set("guest__valid", 0)
        self.io.set("resp__ready", 1)
        self.io.set("bus__ack", 0)
        await self.io.tick()

    def set_cpu(self, cpu):
        self.io.set("cpu", pack(ProcessorState, cpu))

    async def execute(self, op, *, reg=0, operand=0, limit=100_000):
        """Issue one command and return its :class:`CommandResult`.

        ``cycles`` counts clock cycles from the edge that accepts the command to the first cycle in
        which the result is valid.
        """
        payload = pack(Command, {"op": op, "reg": reg, "operand": operand})
        return await self._transact("cmd", payload, VMXOp(op).name, limit)

    async def guest_event(self, event, *, limit=1_000_000):
        """Report one guest event (the fields of :class:`~hwvirt.hdl.exit_logic.GuestEvent`) and
        return the unit's :class:`CommandResult` (an exit or no exit), timed as :meth:`execute`."""
        return await self._transact("guest", pack(GuestEvent, event), "guest event", limit)

    async def _transact(self, port, payload, what, limit):
        payload, entry_failures, cycles = await self._handshake(port, payload, what=what, limit=limit,
                                                                sample="entry_failures")
        fields = unpack(Result, payload)
        return CommandResult(
            outcome=Outcome(fields["outcome"]),
            fault=Fault(fields["fault"]),
            error=fields["error"],
            value=fields["value"],
            exit_reason=fields["exit_reason"],
            qualification=fields["qualification"],
            check=fields["check"],
            event=fields["event"],
            event_error=fields["event_error"],
            walk_refs=fields["walk_refs"],
            walk_tlb_hit=fields["walk_tlb_hit"],
            walk_pwc_hits=fields["walk_pwc_hits"],
            entry_failures=entry_failures,
            cycles=cycles,
        )
