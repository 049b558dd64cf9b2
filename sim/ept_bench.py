"""Driving the EPT walker (:class:`~hwvirt.hdl.ept_walker.EPTWalker`) on either simulator.

:class:`EPTDriver` is backend-independent, like :class:`~hwvirt.sim.driver.UnitDriver`: every cycle
it reads the walker's outputs, then writes its inputs (the memory's answer included), then advances
one clock, so Amaranth's simulator and Icarus Verilog (through cocotb) see identical inputs at
identical edges. Memory is a dict from byte address (a multiple of 8) to a 64-bit word; bus
latency is drawn per transaction from a seeded generator, so both backends draw the same numbers.

:class:`EPTSimulation` keeps one Amaranth simulator per walker configuration and resets it between
jobs (elaboration takes about half a second; a reset costs nothing). :func:`run_walks` is the cocotb
test that runs a pickled job inside Icarus Verilog.
"""

import json
import os
import pickle
import random

from amaranth.lib import data

from hwvirt.hdl.ept_walker import EPTWalker, Invalidation, WalkRequest, WalkResult

from .driver import PortIO, pack, unpack
from .fresh_stack import run_simulation


__all__ = ["EPTDriver", "EPTSimulation", "AmaranthEPTIO", "run_job", "INPUTS", "OUTPUTS"]

INPUTS = ("req__valid", "req__payload", "resp__ready", "invalidate__valid", "invalidate__payload",
          "bus__dat_r", "bus__ack")
OUTPUTS = ("req__ready", "resp__valid", "resp__payload", "invalidate__ready", "bus__cyc", "bus__stb",
           "bus__we", "bus__adr", "bus__dat_w", "bus__sel")


class EPTDriver:
    """Requests, invalidations and a memory target for the walker, over a :class:`PortIO`.

    Parameters
    ----------
    io : PortIO
    memory : dict
        Byte address → 64-bit word; A/D writes land here.
    latency : int
        Largest number of wait cycles before a bus acknowledge.
    seed : int or None
        With a seed, each transaction waits a random 0..``latency`` cycles; without, ``latency``.
    """

    def __init__(self, io, memory, *, latency=0, seed=None):
        self.io = io
        self.memory = memory
        self.latency = latency
        self._rng = random.Random(seed) if seed is not None else None
        self._wait = 0
        self._target = None
        self.cycle = 0
        self.transactions = []          # (kind, byte address, value) in bus order

    async def start(self):
        for name in INPUTS:
            self.io.set(name, 0)
        self.io.set("resp__ready", 1)
        await self._tick()

    def _draw(self):
        return self._rng.randint(0, self.latency) if self._rng is not None else self.latency

    def _serve_bus(self):
        io = self.io
        if io.get("bus__cyc") and io.get("bus__stb"):
            if self._target is None:
                self._target = self._draw()
            if self._wait < self._target:
                self._wait += 1
                io.set("bus__ack", 0)
                return
            self._wait, self._target = 0, None
            address = io.get("bus__adr") * 8
            if io.get("bus__we"):
                value, select = io.get("bus__dat_w"), io.get("bus__sel")
                mask = sum(0xFF << (8 * b) for b in range(8) if select >> b & 1)
                self.memory[address] = (self.memory.get(address, 0) & ~mask) | (value & mask)
                self.transactions.append(("w", address, self.memory[address]))
                io.set("bus__dat_r", 0)
            else:
                io.set("bus__dat_r", self.memory.get(address, 0))
                self.transactions.append(("r", address, self.memory.get(address, 0)))
            io.set("bus__ack", 1)
        else:
            self._wait, self._target = 0, None
            io.set("bus__ack", 0)

    async def _tick(self):
        await self.io.tick()
        self.cycle += 1

    async def walk(self, request, *, limit=10_000):
        """Translate one request (a dict of :class:`WalkRequest` fields); return the result dict
        with ``cycles`` (accepting edge to the first cycle with a valid response)."""
        io = self.io
        io.set("req__payload", pack(WalkRequest, request))
        io.set("req__valid", 1)
        accepted = None
        for _ in range(limit):
            ready, valid, payload = io.get("req__ready"), io.get("resp__valid"), io.get("resp__payload")
            self._serve_bus()
            if accepted is None:
                if ready:
                    accepted = self.cycle
            else:
                io.set("req__valid", 0)
                if valid:
                    result = unpack(WalkResult, payload)
                    result["cycles"] = self.cycle - accepted
                    await self._tick()
                    return result
            await self._tick()
        raise TimeoutError(f"no walk result within {limit} cycles")

    async def invalidate(self, invalidation, *, limit=100):
        io = self.io
        io.set("invalidate__payload", pack(Invalidation, invalidation))
        io.set("invalidate__valid", 1)
        for _ in range(limit):
            ready = io.get("invalidate__ready")
            self._serve_bus()
            await self._tick()
            if ready:
                io.set("invalidate__valid", 0)
                return
        raise TimeoutError("invalidation not accepted")

    async def run(self, ops):
        """Run ``("walk", request)`` / ``("invalidate", descriptor)`` operations; return the results
        (None for an invalidation)."""
        out = []
        for kind, value in ops:
            if kind == "walk":
                out.append(await self.walk(value))
            else:
                await self.invalidate(value)
                out.append(None)
        return out


class AmaranthEPTIO(PortIO):
    """:class:`PortIO` over an Amaranth testbench context."""

    def __init__(self, ctx, walker):
        self._ctx = ctx
        self._ports = {}
        for name in INPUTS + OUTPUTS:
            obj = walker
            for part in name.split("__"):
                obj = getattr(obj, part)
            self._ports[name] = obj.as_value() if isinstance(obj, data.View) else obj

    async def tick(self):
        await self._ctx.tick()

    def get(self, name):
        return self._ctx.get(self._ports[name])

    def set(self, name, value):
        self._ctx.set(self._ports[name], value)


class EPTSimulation:
    """One walker in Amaranth's simulator, reused job after job (reset in between, caches empty)."""

    def __init__(self, **params):
        from amaranth.sim import Simulator
        self.walker = EPTWalker(**params)
        self.sim = Simulator(self.walker)
        self.sim.add_clock(1e-8)
        self._job = None
        self._fresh = True
        self.sim.add_testbench(self._bench)

    async def _bench(self, ctx):
        if self._job is None:
            return
        memory, ops, latency, seed = self._job
        driver = EPTDriver(AmaranthEPTIO(ctx, self.walker), memory, latency=latency, seed=seed)
        await driver.start()
        self._results = await driver.run(ops)
        self._driver = driver

    def run(self, memory, ops, *, latency=0, seed=None):
        """Run ``ops`` against ``memory`` (modified in place); return the per-op results."""
        self._job = (memory, ops, latency, seed)
        self._results = None
        if not self._fresh:
            self.sim.reset()
        self._fresh = False
        try:
            run_simulation(self.sim)
        finally:
            self._job = None
        return self._results

    @property
    def transactions(self):
        return self._driver.transactions


def run_job(job_path):
    """Helper for the cocotb side: load the pickled job description."""
    with open(job_path, "rb") as f:
        return pickle.load(f)


try:
    import cocotb
    from cocotb.clock import Clock
    from cocotb.triggers import FallingEdge
except ImportError:         # pragma: no cover - only the Amaranth side is available
    cocotb = None

if cocotb is not None:
    from .cocotb_bench import CocotbIO as _CocotbIO

    @cocotb.test()
    async def run_walks(dut):
        """Run every job of ``$HWVIRT_EPT_JOB`` (a pickle: list of (memory, ops, latency, seed))
        with a reset before each; write the results and final memories as JSON beside it."""
        jobs = run_job(os.environ["HWVIRT_EPT_JOB"])
        Clock(dut.clk, 10, unit="ns").start()
        io = _CocotbIO(dut)
        out = []
        for memory, ops, latency, seed in jobs:
            dut.rst.value = 1
            for name in INPUTS:
                io.set(name, 0)
            await FallingEdge(dut.clk)
            await FallingEdge(dut.clk)
            dut.rst.value = 0
            for name in OUTPUTS:
                io.get(name)            # every output resolvable right after reset
            driver = EPTDriver(io, memory, latency=latency, seed=seed)
            await driver.start()
            results = await driver.run(ops)
            out.append({"results": results, "memory": sorted(memory.items())})
        with open(os.environ["HWVIRT_EPT_JOB"] + ".json", "w") as f:
            json.dump(out, f)
