"""Run a scenario against the VMX unit on either simulator and report the results.

:func:`run_scenario` builds the hardware a scenario's ``[config]`` describes and replays its steps
with :func:`execute_steps`, which is the same coroutine on both backends:

* ``pysim`` — Amaranth's own simulator, in this process (the default; nothing to install);
* ``icarus`` — the generated Verilog under Icarus Verilog, driven by cocotb (:mod:`hwvirt.sim.icarus`).

Each step gives one JSON-ready dict with the keys ``index, op, outcome, error, fault, value,
exit_reason, qualification, check, cycles, expect_ok`` (see the README for their meaning).
"""

from pathlib import Path

from amaranth.sim import Simulator

from hwvirt.hdl.entry_check_catalogue import CHECKS
from hwvirt.hdl.exit_logic import ExitReason
from hwvirt.hdl.vmcs_unit import Fault, Outcome, VMCSUnit, VMXOp

from . import ept_map, guest_events
from .driver import PhysicalMemory, PortIO, UnitDriver
from .fresh_stack import run_simulation


__all__ = ["BACKENDS", "ENTRY_OPS", "execute_steps", "run_scenario", "build_unit", "build_unit_from_config",
           "expect_mismatches", "STEP_KEYS"]

BACKENDS = ("pysim", "icarus")

#: The keys of one step in the JSON report, in order.
STEP_KEYS = ("index", "op", "outcome", "error", "fault", "value", "exit_reason", "qualification",
             "check", "checks", "injected", "walk", "delivered", "cycles", "expect_ok")

# Scenario op → (instruction, how its operands are formed from the step's arguments).
_INSTRUCTIONS = {
    "vmxon":    (VMXOp.VMXON,    lambda a: {"operand": a["addr"]}),
    "vmxoff":   (VMXOp.VMXOFF,   lambda a: {}),
    "vmclear":  (VMXOp.VMCLEAR,  lambda a: {"operand": a["addr"]}),
    "vmptrld":  (VMXOp.VMPTRLD,  lambda a: {"operand": a["addr"]}),
    "vmptrst":  (VMXOp.VMPTRST,  lambda a: {}),
    "vmread":   (VMXOp.VMREAD,   lambda a: {"reg": a["field"]}),
    "vmlaunch": (VMXOp.VMLAUNCH, lambda a: {}),
    "vmresume": (VMXOp.VMRESUME, lambda a: {}),
    "vmcall":   (VMXOp.VMCALL,   lambda a: {}),
    "invept":   (VMXOp.INVEPT,   lambda a: {"reg": a["type"], "operand": a["eptp"]}),
    "invvpid":  (VMXOp.INVVPID,  lambda a: {
        "reg": a["type"],
        "operand": a["vpid"] | (a.get("descriptor_reserved", 0) << 16) | (a.get("addr", 0) << 64)}),
    "rdmsr":    (VMXOp.RDMSR,    lambda a: {"reg": a["msr"]}),
}
_VALUE_OPS = {"vmread", "vmptrst", "rdmsr", "mem_read"}
#: The ops that are VM entries.
ENTRY_OPS = ("vmlaunch", "vmresume")
_ENTRY_INSTRUCTION_EXITS = (ExitReason.VMLAUNCH.value, ExitReason.VMRESUME.value)


def build_unit_from_config(config):
    """The :class:`VMCSUnit` a ``[config]`` (:class:`~hwvirt.sim.scenario.Config`) describes."""
    return VMCSUnit(config.capabilities(), cache_slots=config.vmcs_cache_slots)


def build_unit(scenario):
    """The :class:`VMCSUnit` a scenario's ``[config]`` describes."""
    return build_unit_from_config(scenario.config)


def _step_result(step, result, cycles):
    outcome = result["outcome"] if result else Outcome.SUCCEED
    row = dict.fromkeys(STEP_KEYS)
    row.update(index=step.index, op=step.op, outcome=outcome.name.lower(), cycles=cycles)
    if result is None:
        return row
    if outcome == Outcome.FAIL_VALID:
        row["error"] = result["error"]
    if outcome == Outcome.FAULT:
        row["fault"] = Fault(result["fault"]).name
    if outcome in (Outcome.EXIT, Outcome.ENTRY_FAILED):
        row["exit_reason"] = result["exit_reason"]
        row["qualification"] = result["qualification"]
    if outcome == Outcome.SUCCEED and step.op in _VALUE_OPS:
        row["value"] = result["value"]
    if outcome == Outcome.NO_EXIT and step.args.get("event") in guest_events.READING_EVENTS:
        row["value"] = result["value"]
    if step.args.get("event") == "mem":
        row["walk"] = {"refs": result["walk_refs"], "tlb_hit": bool(result["walk_tlb_hit"]),
                       "pwc_hits": result["walk_pwc_hits"]}
        if outcome == Outcome.NO_EXIT and result["event"] >> 31:
            # The guest's own paging faulted and the #PF went to the guest: nothing was read.
            row["value"] = None
            row["delivered"] = {"vector": result["event"] & 0xFF, "error_code": result["event_error"]}
    if result.get("check"):
        row["check"] = CHECKS[result["check"] - 1].id
    # A VM exit on a VMLAUNCH/VMRESUME step is either the instruction's own exit in non-root
    # operation (reason 20/24: no entry) or one due right after a successful entry.
    entered = outcome in (Outcome.ENTERED, Outcome.ENTRY_FAILED) or (
        outcome == Outcome.EXIT and result["exit_reason"] not in _ENTRY_INSTRUCTION_EXITS)
    if step.op in ENTRY_OPS and (result["check"] or entered):
        # The entry reached the checker: every failing check, in catalogue order.
        row["checks"] = [check.id for i, check in enumerate(CHECKS) if result["entry_failures"] >> i & 1]
    if entered and step.op in ENTRY_OPS and result["event"] >> 31:
        row["injected"] = {"vector": result["event"] & 0xFF, "type": result["event"] >> 8 & 7,
                           "error_code": result["event_error"] if result["event"] >> 11 & 1 else None}
    return row


def expect_mismatches(step, row):
    """The ``expect`` entries of a step that its result row does not meet, as readable strings."""
    mismatches = []
    for key, wanted in step.expect.items():
        got = row.get(key)
        if isinstance(wanted, str) and isinstance(got, str):
            same = wanted.lower() == got.lower()
        elif key in ("injected", "walk", "delivered"):
            same = got is not None and all(got.get(k) == v for k, v in wanted.items())
        else:
            same = wanted == got
        if not same:
            shown = (lambda v: f"{v:#x}" if isinstance(v, int) and key in ("value", "qualification",
                                                                            "exit_reason") else repr(v))
            mismatches.append(f"{key}: expected {shown(wanted)}, got {shown(got)}")
    return mismatches


async def execute_steps(driver, scenario):
    """Replay every step of ``scenario`` through ``driver``; return the report rows."""
    memory = driver.memory
    for address, payload in scenario.memory:
        memory.write(address, payload)
    cpu = dict(scenario.cpu)
    await driver.start(cpu)
    rows = []
    for step in scenario.steps:
        args = step.args
        if step.op == "set_cpu":
            cpu.update(args["cpu"])
            driver.set_cpu(cpu)
            row = _step_result(step, None, 0)
        elif step.op == "mem_write":
            memory.write(args["addr"], args["data"])
            row = _step_result(step, None, 0)
        elif step.op == "mem_read":
            row = _step_result(step, {"outcome": Outcome.SUCCEED,
                                      "value": memory.read_int(args["addr"], args["width"] // 8)}, 0)
        elif step.op == "vmwrite":
            # A fields table is one VMWRITE per field, in order, stopping at the first that fails.
            cycles = 0
            for encoding, value in args["fields"]:
                result = await driver.execute(VMXOp.VMWRITE, reg=encoding, operand=value)
                cycles += result["cycles"]
                if result["outcome"] != Outcome.SUCCEED:
                    break
            row = _step_result(step, result, cycles)
        elif step.op == "ept_map":
            ept_map.build_ept(memory, args["pml4"], args["map"], args["tables"])
            row = _step_result(step, None, 0)
        elif step.op == "guest":
            result = await driver.guest_event(guest_events.encode(args))
            row = _step_result(step, result, result["cycles"])
        elif step.op in _INSTRUCTIONS:
            op, operands = _INSTRUCTIONS[step.op]
            result = await driver.execute(op, **operands(args))
            row = _step_result(step, result, result["cycles"])
        else:  # the parser only lets known ops through; a new op must be added above
            raise NotImplementedError(f"{step.label}: the runner has no implementation of {step.op!r}")
        row["expect_ok"] = not expect_mismatches(step, row)
        rows.append(row)
    return rows


class AmaranthIO(PortIO):
    """:class:`PortIO` over an Amaranth simulator testbench context."""

    def __init__(self, ctx, unit):
        self._ctx = ctx
        self._ports = {}
        for name in ("cmd__valid", "cmd__ready", "cmd__payload", "guest__valid", "guest__ready", "guest__payload",
                     "resp__valid", "resp__ready",
                     "resp__payload", "entry_failures", "arch_state", "cpu", "bus__cyc", "bus__stb", "bus__we", "bus__adr",
                     "bus__dat_w", "bus__sel", "bus__dat_r", "bus__ack"):
            obj = unit
            for part in name.split("__"):
                obj = getattr(obj, part)
            self._ports[name] = obj.as_value() if hasattr(obj, "as_value") else obj

    async def tick(self):
        await self._ctx.tick()

    def get(self, name):
        return self._ctx.get(self._ports[name])

    def set(self, name, value):
        self._ctx.set(self._ports[name], value)


def _waveform_traces(unit):
    """The signals a person needs in a waveform, in display order."""
    debug = unit.debug_signals
    return [
        unit.cmd.valid, unit.cmd.ready, unit.cmd.payload, unit.guest.valid, unit.guest.ready, unit.guest.payload,
        debug["state"], unit.resp.valid,
        unit.resp.payload, unit.status, unit.current_vmcs, debug["store_r_index"],
        debug["store_w_index"], debug["store_w_en"], debug["store_w_data"], unit.bus.cyc, unit.bus.stb,
        unit.bus.we, unit.bus.adr, unit.bus.sel, unit.bus.dat_w, unit.bus.dat_r, unit.bus.ack,
    ]


def _run_pysim(scenario, waveform=None):
    unit = build_unit(scenario)
    sim = Simulator(unit)
    sim.add_clock(1e-8)
    rows = []
    memory = PhysicalMemory()

    async def bench(ctx):
        driver = UnitDriver(AmaranthIO(ctx, unit), memory, latency=scenario.config.memory_latency)
        rows.extend(await execute_steps(driver, scenario))

    sim.add_testbench(bench)
    if waveform is None:
        run_simulation(sim)
    else:
        waveform = Path(waveform)
        waveform.parent.mkdir(parents=True, exist_ok=True)
        with sim.write_vcd(str(waveform), str(waveform.with_suffix(".gtkw")),
                           traces=_waveform_traces(unit)):
            run_simulation(sim)
    return rows


def run_scenario(scenario, *, backend="pysim", waveform=None):
    """Run a parsed scenario; return the JSON report as a dict.

    ``waveform``: a path for a VCD (pysim) or FST (icarus) with a GTKWave save file beside it.
    """
    if scenario.arch == "svm":
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        from .svm_runner import run_svm_scenario
        return run_svm_scenario(scenario, backend=backend, waveform=waveform if backend == "pysim" else None)
    if backend == "pysim":
        rows = _run_pysim(scenario, waveform)
    elif backend == "icarus":
        from .icarus import run_icarus
        rows = run_icarus(scenario, waveform=waveform)
    else:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return {
        "scenario": scenario.name,
        "backend": backend,
        "passed": all(row["expect_ok"] for row in rows),
        "total_cycles": sum(row["cycles"] or 0 for row in rows),
        "steps": rows,
    }
