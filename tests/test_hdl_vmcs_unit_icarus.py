"""The VMCS unit's generated Verilog under cocotb + Icarus: cache write-back and eviction under
memory wait states, checked against memory and against Amaranth's simulator cycle for cycle."""

import pytest

from hwvirt.hdl.capabilities import VMXCapabilities
from hwvirt.hdl.vmcs_fields import BY_NAME, VMCS_FIELDS
from hwvirt.hdl.vmcs_unit import REGION_FIELD_BASE
from hwvirt.sim.icarus import icarus_available
from hwvirt.sim.runner import run_scenario
from hwvirt.sim.scenario import parse_scenario

from entry_baseline import baseline


pytestmark = [pytest.mark.icarus,
              pytest.mark.skipif(not icarus_available(), reason="Icarus Verilog not installed")]

REGIONS = [0x10000, 0x11000, 0x12000]


def offset(name):
    return REGION_FIELD_BASE + 8 * VMCS_FIELDS.index(BY_NAME[name])


def eviction_scenario(slots, latency):
    lines = [f"[config]\nvmcs_cache_slots = {slots}\nmemory_latency = {latency}",
             "[[memory]]\naddr = 0x1000\nu32 = [4]"]
    lines += [f"[[memory]]\naddr = {r:#x}\nu32 = [4]" for r in REGIONS]
    step = lambda body: lines.append("[[step]]\n" + body)
    step('op = "vmxon"\naddr = 0x1000\nexpect = { outcome = "succeed" }')
    for i, region in enumerate(REGIONS):
        step(f'op = "vmclear"\naddr = {region:#x}')
        step(f'op = "vmptrld"\naddr = {region:#x}\nexpect = {{ outcome = "succeed" }}')
        step(f'op = "vmwrite"\nfields = {{ GUEST_RIP = {0x1000 * (i + 1) + 0x77:#x}, '
             f'GUEST_ES_SELECTOR = {0x10 + i} }}')
    # With fewer slots than regions, the first region has been evicted: its fields are in memory,
    # and its launch-state word no longer says "held by a processor".
    if slots < len(REGIONS):
        step(f'op = "mem_read"\naddr = {REGIONS[0] + offset("GUEST_RIP"):#x}\nwidth = 64\n'
             f'expect = {{ value = 0x1077 }}')
        step(f'op = "mem_read"\naddr = {REGIONS[0] + 8:#x}\nwidth = 32\nexpect = {{ value = 0 }}')
    for i, region in enumerate(REGIONS):
        step(f'op = "vmptrld"\naddr = {region:#x}')
        step(f'op = "vmread"\nfield = "GUEST_RIP"\nexpect = {{ value = {0x1000 * (i + 1) + 0x77:#x} }}')
        step(f'op = "vmread"\nfield = "GUEST_ES_SELECTOR"\nexpect = {{ value = {0x10 + i} }}')
    caps = VMXCapabilities()
    valid, _ = baseline(caps)          # a VMCS that passes every VM-entry check
    writes = ", ".join(f"{name} = {value:#x}" for name, value in valid.items()
                       if caps.field_supported(BY_NAME[name]) and name != "GUEST_RIP")
    step(f'op = "vmwrite"\nfields = {{ {writes} }}\nexpect = {{ outcome = "succeed" }}')
    step('op = "vmlaunch"\nexpect = { outcome = "entered", checks = [] }')
    step('op = "vmcall"\nexpect = { outcome = "exit", exit_reason = 18 }')
    if slots == 1:
        # Loading another VMCS evicts the launched one: its launch word now says "launched".
        step(f'op = "vmptrld"\naddr = {REGIONS[0]:#x}')
        step(f'op = "mem_read"\naddr = {REGIONS[-1] + 8:#x}\nwidth = 32\nexpect = {{ value = 1 }}')
    for region in REGIONS:
        step(f'op = "vmclear"\naddr = {region:#x}\nexpect = {{ outcome = "succeed" }}')
    # After VMCLEAR every region holds its fields and its launch state is clear again.
    for i, region in enumerate(REGIONS):
        step(f'op = "mem_read"\naddr = {region + offset("GUEST_RIP"):#x}\nwidth = 64\n'
             f'expect = {{ value = {0x1000 * (i + 1) + 0x77:#x} }}')
        step(f'op = "mem_read"\naddr = {region + 8:#x}\nwidth = 32\n'
             f'expect = {{ value = 0 }}')
    step(f'op = "mem_read"\naddr = {REGIONS[-1] + offset("VM_EXIT_REASON"):#x}\nwidth = 32\n'
         f'expect = {{ value = 18 }}')
    return parse_scenario("\n".join(lines), source=f"eviction-{slots}-{latency}")


@pytest.mark.parametrize("slots, latency", [(1, 0), (2, 3), (3, 1)])
def test_writeback_and_eviction_agree_with_pysim(slots, latency):
    scenario = eviction_scenario(slots, latency)
    pysim = run_scenario(scenario, backend="pysim")
    icarus = run_scenario(scenario, backend="icarus")
    assert pysim["passed"], [r for r in pysim["steps"] if not r["expect_ok"]]
    assert icarus["steps"] == pysim["steps"]
