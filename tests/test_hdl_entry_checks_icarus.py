"""The VM-entry checker in the generated Verilog on Icarus (cocotb) agrees with Amaranth's simulator
and with the reference checker on the table-driven mutation cases, instruction by instruction.

Each case writes the valid baseline VMCS, breaks one check with its table mutation, and executes
VMLAUNCH through the whole unit. Cases whose mutation changes a checker input that lives outside the
VMCS (the processor's IA32_EFER.LMA, memory behind the link pointer, the virtual-APIC page or the
PDPTEs) are covered by the component tests in test_hdl_entry_checks.py and left out here.
"""

import pytest

from hwvirt.hdl.capabilities import VMXCapabilities
from hwvirt.hdl.entry_check_catalogue import BY_ID, CheckGroup
from hwvirt.hdl.vmcs_fields import BY_NAME
from hwvirt.sim.icarus import icarus_available
from hwvirt.sim.runner import run_scenario
from hwvirt.sim.scenario import parse_scenario

from entry_baseline import MUTATIONS, NotApplicable, baseline
from entry_model import reference_failures


pytestmark = [pytest.mark.icarus,
              pytest.mark.skipif(not icarus_available(), reason="Icarus Verilog not installed")]

VMCS = 0x5000          # the baseline's current-VMCS pointer
MEMORY_INPUTS = {"VMCS_LINK_POINTER", "VIRTUAL_APIC_PAGE_ADDR", "GUEST_CR3", "GUEST_CR0", "GUEST_CR4"}


def cases(caps):
    base_fields, base_env = baseline(caps)
    out = []
    for check_id, mutate in MUTATIONS.items():
        fields, env = dict(base_fields), {k: (list(v) if isinstance(v, list) else v)
                                          for k, v in base_env.items()}
        try:
            mutate(caps, fields, env)
        except NotApplicable:
            continue
        changed = {name for name in fields if fields[name] != base_fields.get(name)}
        if env != base_env or changed & MEMORY_INPUTS or set(fields) - set(base_fields):
            continue
        if any(not caps.field_supported(BY_NAME[name]) for name in changed):
            continue
        out.append((check_id, fields, env))
    return out


def scenario_text(caps, cases_):
    writes = lambda f: ", ".join(f"{n} = {v:#x}" for n, v in f.items() if caps.field_supported(BY_NAME[n]))
    lines = [f"[[memory]]\naddr = 0x1000\nu32 = [{caps.revision_id}]",
             f"[[memory]]\naddr = {VMCS:#x}\nu32 = [{caps.revision_id}]",
             '[[step]]\nop = "vmxon"\naddr = 0x1000\nexpect = { outcome = "succeed" }']
    for check_id, fields, _ in cases_:
        lines += [f'[[step]]\nop = "vmclear"\naddr = {VMCS:#x}\nexpect = {{ outcome = "succeed" }}',
                  f'[[step]]\nop = "vmptrld"\naddr = {VMCS:#x}\nexpect = {{ outcome = "succeed" }}',
                  f'[[step]]\nop = "vmwrite"\nfields = {{ {writes(fields)} }}\nexpect = {{ outcome = "succeed" }}',
                  f'[[step]]\nop = "vmlaunch"\ncomment = "{check_id}"',
                  # back to root operation if the entry succeeded (it must not: a check fails)
                  '[[step]]\nop = "vmcall"']
    return "\n".join(lines)


def test_checker_agrees_on_both_simulators_and_with_the_reference():
    caps = VMXCapabilities()
    cases_ = cases(caps)
    assert len(cases_) > 100
    scenario = parse_scenario(scenario_text(caps, cases_), source="entry-check-table")
    pysim = run_scenario(scenario, backend="pysim")
    icarus = run_scenario(scenario, backend="icarus")
    assert icarus["steps"] == pysim["steps"]
    assert pysim["passed"], [r for r in pysim["steps"] if not r["expect_ok"]]
    launches = [row for row in pysim["steps"] if row["op"] == "vmlaunch"]
    for (check_id, fields, env), row in zip(cases_, launches):
        expected = reference_failures(caps, fields, **env)
        assert row["checks"] == expected, check_id
        assert check_id in row["checks"]
        # The deciding check: the first failing one of the first failing group (SDM §27.1 order).
        order = [CheckGroup.CONTROLS, CheckGroup.HOST, CheckGroup.GUEST]
        deciding = min(expected, key=lambda c: (order.index(BY_ID[c].group), expected.index(c)))
        assert row["check"] == deciding, check_id
        group = BY_ID[deciding].group
        if group == CheckGroup.GUEST:
            assert row["outcome"] == "entry_failed" and row["exit_reason"] == 0x80000021, check_id
            assert row["qualification"] == BY_ID[deciding].qualification
        else:
            assert (row["outcome"], row["error"]) == ("fail_valid", group.value), check_id
