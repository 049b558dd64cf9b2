"""The cocotb test that runs a scenario inside Icarus Verilog (started by :mod:`hwvirt.sim.icarus`)."""

import json
import os
import pickle

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge

from .driver import PhysicalMemory, PortIO, UnitDriver
from .runner import execute_steps
from .toolchain import CLOCK_PERIOD_NS


class CocotbIO(PortIO):
    """:class:`PortIO` over cocotb handles. Inputs are written and outputs read at the falling edge,
    half a cycle after the rising edge that updated the registers."""

    def __init__(self, dut):
        self._dut = dut

    async def tick(self):
        await FallingEdge(self._dut.clk)

    def get(self, name):
        value = getattr(self._dut, name).value
        if not value.is_resolvable:
            raise RuntimeError(f"output {name} is not resolvable (X or Z): {value}")
        return int(value)

    def set(self, name, value):
        getattr(self._dut, name).value = value


@cocotb.test()
async def run_scenario(dut):
    job = json.loads(open(os.environ["HWVIRT_JOB"]).read())
    with open(job["scenario"], "rb") as f:
        scenario = pickle.load(f)
    Clock(dut.clk, CLOCK_PERIOD_NS, unit="ns").start()
    io = CocotbIO(dut)
    dut.rst.value = 1
    for name in ("cmd__valid", "guest__valid", "resp__ready", "bus__ack", "bus__dat_r", "cmd__payload",
                 "guest__payload", "cpu"):
        io.set(name, 0)
    await FallingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    for name in ("cmd__ready", "guest__ready", "resp__valid", "bus__cyc", "bus__stb"):
        io.get(name)  # every output must be resolvable right after reset
    driver = UnitDriver(io, PhysicalMemory(), latency=scenario.config.memory_latency)
    rows = await execute_steps(driver, scenario)
    with open(job["result"], "w") as f:
        json.dump(rows, f)
