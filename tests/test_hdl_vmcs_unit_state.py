"""The architectural state a VM entry hands to the processor (the ``arch_state`` output): the guest
state after a successful entry (SDM vol. 3C §27.3.2), MSRs from the VM-entry MSR-load list on top
(§27.4), and the host state after a VM-entry failure (§28.5)."""

from amaranth.sim import Simulator

from hwvirt.hdl.arch_state import SEGMENTS
from hwvirt.hdl.capabilities import VMXCapabilities
from hwvirt.hdl.vmcs_fields import BY_NAME
from hwvirt.sim.driver import PhysicalMemory, UnitDriver
from hwvirt.sim.fresh_stack import run_simulation
from hwvirt.sim.runner import AmaranthIO, build_unit, execute_steps
from hwvirt.sim.scenario import parse_scenario

from entry_baseline import baseline


def run_and_read_state(scenario):
    unit = build_unit(scenario)
    sim = Simulator(unit)
    sim.add_clock(1e-8)
    out = {}

    async def bench(ctx):
        driver = UnitDriver(AmaranthIO(ctx, unit), PhysicalMemory())
        out["rows"] = await execute_steps(driver, scenario)
        out["state"] = ctx.get(unit.arch_state)
        out["status"] = ctx.get(unit.status)

    sim.add_testbench(bench)
    run_simulation(sim)
    return out["rows"], out["state"], out["status"]


def launch_scenario(fields, extra_steps="", memory=""):
    caps = VMXCapabilities()
    writes = ", ".join(f"{n} = {v:#x}" for n, v in fields.items() if caps.field_supported(BY_NAME[n]))
    return parse_scenario(f"""
[[memory]]
addr = 0x1000
u32 = [4]
[[memory]]
addr = 0x5000
u32 = [4]
{memory}
[[step]]
op = "vmxon"
addr = 0x1000
[[step]]
op = "vmptrld"
addr = 0x5000
[[step]]
op = "vmwrite"
fields = {{ {writes} }}
expect = {{ outcome = "succeed" }}
{extra_steps}
[[step]]
op = "vmlaunch"
""")


def valid_fields():
    fields, _ = baseline(VMXCapabilities())
    return fields


def test_entry_loads_the_guest_state():
    fields = valid_fields()
    fields.update(GUEST_RIP=0x1234_5678, GUEST_RSP=0xFFFF_8000_0000_1000, GUEST_CR3=0x7_7000,
                  GUEST_FS_BASE=0xFFFF_8000_DEAD_B000, GUEST_IDTR_LIMIT=0xFFF, GUEST_SYSENTER_EIP=0x42)
    rows, state, status = run_and_read_state(launch_scenario(fields))
    assert rows[-1]["outcome"] == "entered"
    assert status.non_root == 1
    for name in ("cr0", "cr3", "cr4", "rsp", "rip", "rflags", "sysenter_esp", "sysenter_eip"):
        assert getattr(state, name) == fields[f"GUEST_{name.upper()}"], name
    for seg in SEGMENTS:
        reg = getattr(state, seg)
        prefix = f"GUEST_{seg.upper()}_"
        assert (reg.selector, reg.base, reg.limit, reg.ar) == (
            fields[prefix + "SELECTOR"], fields[prefix + "BASE"], fields[prefix + "LIMIT"],
            fields[prefix + "AR_BYTES"]), seg
    assert (state.idtr.base, state.idtr.limit) == (fields["GUEST_IDTR_BASE"], 0xFFF)
    if fields["VM_ENTRY_CONTROLS"] >> 15 & 1:            # "load IA32_EFER"
        assert state.efer == fields["GUEST_IA32_EFER"]
    else:                                                # the processor's EFER, LMA/LME = IA-32e guest
        assert state.efer == 0xD01
    assert state.activity == fields["GUEST_ACTIVITY_STATE"]


def test_msr_load_list_reaches_the_state():
    fields = valid_fields()
    fields.update(VM_ENTRY_MSR_LOAD_COUNT=2, VM_ENTRY_MSR_LOAD_ADDR=0x8000)
    memory = """[[memory]]
addr = 0x8000
u64 = [0x175, 0xffff800000002000, 0x277, 0x0007010600070106]"""
    rows, state, _ = run_and_read_state(launch_scenario(fields, memory=memory))
    assert rows[-1]["outcome"] == "entered"
    assert state.sysenter_esp == 0xFFFF_8000_0000_2000
    assert state.pat == 0x0007_0106_0007_0106


def test_entry_failure_loads_the_host_state():
    fields = valid_fields()
    fields["GUEST_RFLAGS"] = 0          # GUEST_RFLAGS_BIT1: a guest-state failure
    rows, state, status = run_and_read_state(launch_scenario(fields))
    assert (rows[-1]["outcome"], rows[-1]["check"]) == ("entry_failed", "GUEST_RFLAGS_BIT1")
    assert status.non_root == 0
    for name in ("cr0", "cr3", "cr4", "rsp", "rip"):
        assert getattr(state, name) == fields.get(f"HOST_{name.upper()}", 0), name
    assert state.rflags == 0x2 and state.dr7 == 0x400
    assert state.cs.selector == fields["HOST_CS_SELECTOR"]
    assert state.cs.ar == 0xA09B                       # 64-bit host code segment
    assert (state.tr.base, state.tr.limit, state.tr.ar) == (fields.get("HOST_TR_BASE", 0), 0x67, 0x8B)
    assert state.ldtr.ar == 0x1_0000                   # unusable
    assert state.gdtr.base == fields.get("HOST_GDTR_BASE", 0) and state.gdtr.limit == 0xFFFF
    assert state.efer == 0xD01                         # 64-bit host: LMA = LME = 1
