"""The cocotb test that runs the SoC firmware inside Icarus Verilog (started by :mod:`fpga.sim_icarus`).

It drives the clock, reset and ``boot_sel``, decodes the UART line into text, and ends when the
firmware writes the HALT register (or the core traps, or the cycle budget runs out). The result —
the UART text, the exit code, the cycles and how the run ended — goes to the JSON file named by
``$HWVIRT_SOC_JOB``.
"""

import json
import os
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, First, RisingEdge, Timer

PERIOD_NS = 10


async def _uart_reader(dut, divisor, sink):
    bit_ns = divisor * PERIOD_NS
    while True:
        await FallingEdge(dut.uart_tx)              # start bit
        await Timer(bit_ns * 3 // 2, unit="ns")     # the middle of data bit 0
        byte = 0
        for i in range(8):
            byte |= int(dut.uart_tx.value) << i
            await Timer(bit_ns, unit="ns")
        # now in the middle of the stop bit
        sink.append(byte)


@cocotb.test()
async def run_firmware(dut):
    job = json.loads(open(os.environ["HWVIRT_SOC_JOB"]).read())
    Clock(dut.clk, PERIOD_NS, unit="ns").start()
    dut.rst.value = 1
    dut.boot_sel.value = job["boot_sel"]
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await FallingEdge(dut.clk)
    for name in ("uart_tx", "halted", "trap"):
        if not getattr(dut, name).value.is_resolvable:
            raise AssertionError(f"{name} is not resolvable after reset: {getattr(dut, name).value}")
    received = []
    cocotb.start_soon(_uart_reader(dut, job["uart_divisor"], received))
    start = time.monotonic()
    ended = await First(RisingEdge(dut.halted), RisingEdge(dut.trap), ClockCycles(dut.clk, job["max_cycles"]))
    end_time = cocotb.utils.get_sim_time(unit="ns")
    if dut.halted.value == 1:
        how = "halted"
    elif dut.trap.value == 1:
        how = "trap"
    else:
        how = "timeout"
    await ClockCycles(dut.clk, 12 * job["uart_divisor"])     # let the last character out
    wall = time.monotonic() - start
    cycles = int(end_time // PERIOD_NS)
    result = {
        "how": how, "exit_code": int(dut.exit_code.value) if how == "halted" else None,
        "cycles": cycles, "wall_s": wall, "uart": bytes(received).decode("latin-1"),
    }
    with open(job["result"], "w") as f:
        json.dump(result, f)
