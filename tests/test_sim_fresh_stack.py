"""sim/fresh_stack.py: a call on a new thread, with its result or exception handed back."""

import threading

import pytest

from hwvirt.sim.fresh_stack import call_on_fresh_stack


def test_result_and_arguments_come_back():
    caller = threading.get_ident()
    ran_on = []

    def work(a, *, b):
        ran_on.append(threading.get_ident())
        return a + b

    assert call_on_fresh_stack(work, 2, b=3) == 5
    assert ran_on and ran_on[0] != caller


def test_exception_is_re_raised_unchanged():
    class Marker(Exception):
        pass

    def fail():
        raise Marker("from the simulation")

    with pytest.raises(Marker, match="from the simulation"):
        call_on_fresh_stack(fail)


def test_run_simulation_runs_the_testbenches_or_until_a_time():
    from amaranth.hdl import Module, Signal
    from amaranth.sim import Simulator

    from hwvirt.sim.fresh_stack import run_simulation

    def counter_sim():
        m = Module()
        count = Signal(8)
        m.d.sync += count.eq(count + 1)
        sim = Simulator(m)
        sim.add_clock(1e-6)
        return sim, count

    sim, count = counter_sim()
    seen = []

    async def bench(ctx):
        seen.append(threading.get_ident())
        await ctx.tick().repeat(5)
        seen.append(ctx.get(count))

    sim.add_testbench(bench)
    run_simulation(sim)
    assert seen[0] != threading.get_ident() and seen[1] == 5

    sim, count = counter_sim()
    edges = []

    async def watch(ctx):
        async for *_, value in ctx.tick().sample(count):
            edges.append(value)

    sim.add_process(watch)
    run_simulation(sim, until=10.75e-6)
    # 1 µs clock, first rising edge at 0.5 µs: 11 edges by 10.75 µs, and the simulation stops there.
    assert edges == list(range(11))
