"""The exit decision gateware (:class:`hwvirt.hdl.exit_logic.ExitDecider`) against the reference model.

* Table: one case per event kind and rule, run through the gateware and compared field by field with
  :mod:`tests.exit_model` (whose own tests hold the literal expectations from the facts).
* Property (hypothesis): batches of random events, controls, guest states and bitmap contents.
* The boundary exits (pending MTF, preemption timer, NMI and interrupt windows).
* The timing contract: every case is run at the documented latencies (``PREPARE_LATENCY``,
  ``DECIDE_LATENCY``) of the clocked decider, and one test checks them edge by edge.
* The tables the scenario layer and the gateware share agree with the model's.
"""

import collections
import random

import pytest
from amaranth.sim import Simulator
from hypothesis import HealthCheck, given, settings, strategies as st

from hwvirt.hdl.exit_logic import DEFAULT_LENGTH, ExitDecider, ExitDecision, GuestEvent, GuestRegisters
from hwvirt.sim import guest_events
from hwvirt.sim.driver import pack, unpack
from hwvirt.sim.fresh_stack import run_simulation

import exit_model


MASK64 = (1 << 64) - 1
IO_A, IO_B, MSR_BITMAP = 0x10000, 0x11000, 0x12000
GUEST_KEYS = ("cr0", "cr3", "cr4", "dr7", "rip", "rflags", "efer", "pat", "debugctl", "sysenter_cs",
              "sysenter_esp", "sysenter_eip", "interruptibility", "activity", "tpr")
INFO_KEYS = ("reason", "qualification", "intr_info", "intr_error", "idt_info", "idt_error", "instr_len",
             "instr_info", "guest_linear")


def memory_of(seed):
    """A byte reader for pseudo-random bitmap contents (``seed`` None: all zero)."""
    if seed is None:
        return lambda address: 0
    return lambda address: random.Random(seed * 0x1_0000_0001 + address).getrandbits(8)


def present(ctx, dut, case):
    """Drive the decider's inputs (all but ``bitmap_words``) for one case."""
    event, vmcs, guest, _, boundary = case
    ctx.set(dut.event.as_value(), pack(GuestEvent, guest_events.encode(event)))
    controls = dut.controls
    proc = vmcs.get("CPU_BASED_VM_EXEC_CONTROL", 0)
    for member, name in (
            ("pin", "PIN_BASED_VM_EXEC_CONTROL"), ("proc", "CPU_BASED_VM_EXEC_CONTROL"),
            ("exit", "VM_EXIT_CONTROLS"), ("exception_bitmap", "EXCEPTION_BITMAP"),
            ("pfec_mask", "PAGE_FAULT_ERROR_CODE_MASK"), ("pfec_match", "PAGE_FAULT_ERROR_CODE_MATCH"),
            ("cr0_mask", "CR0_GUEST_HOST_MASK"), ("cr4_mask", "CR4_GUEST_HOST_MASK"),
            ("cr0_shadow", "CR0_READ_SHADOW"), ("cr4_shadow", "CR4_READ_SHADOW"),
            ("cr3_target_count", "CR3_TARGET_COUNT"), ("io_bitmap_a", "IO_BITMAP_A"),
            ("io_bitmap_b", "IO_BITMAP_B"), ("msr_bitmap", "MSR_BITMAP"),
            ("tsc_offset", "TSC_OFFSET"), ("tpr_threshold", "TPR_THRESHOLD")):
        ctx.set(getattr(controls, member), vmcs.get(name, 0))
    # The unit hands the decider the secondary controls only when they are activated.
    ctx.set(controls.proc2, vmcs.get("SECONDARY_VM_EXEC_CONTROL", 0) if proc >> 31 & 1 else 0)
    for i in range(4):
        ctx.set(controls.cr3_targets[i], vmcs.get(f"CR3_TARGET_VALUE{i}", 0))
    ctx.set(dut.guest.as_value(), pack(GuestRegisters, {k: guest[k] for k in GUEST_KEYS}))
    ctx.set(dut.tsc, guest["tsc"])
    ctx.set(dut.at_entry, boundary["at_entry"])
    ctx.set(dut.mtf_pending, boundary["mtf_pending"])
    ctx.set(dut.timer_expired, boundary["timer_expired"])


def bitmap_words(ctx, dut, memory):
    """The words the decider names (``bitmap_reads``, ``bitmap_addr``) read from ``memory``; 0 beyond."""
    reads = ctx.get(dut.bitmap_reads)
    words = []
    for i in range(2):
        address = ctx.get(dut.bitmap_addr[i])
        words.append(sum(memory(address + b) << (8 * b) for b in range(8)) if i < reads else 0)
    return words[0] | words[1] << 64


def outcome(ctx, dut):
    """The decision and the guest state afterwards, as dicts."""
    return (unpack(ExitDecision, ctx.get(dut.decision.as_value())),
            unpack(GuestRegisters, ctx.get(dut.next_guest.as_value())))


class DeciderBench:
    """One :class:`ExitDecider` in one clocked pysim simulation, kept running between batches.

    Each case follows the decider's timing contract: the inputs are presented and held; after
    ``PREPARE_LATENCY`` clock edges the boundary exit and the bitmap words it names are read, and
    the words presented; after ``DECIDE_LATENCY`` more edges the decision is read.
    """

    def __init__(self):
        self.dut = ExitDecider()
        self.jobs = collections.deque()
        self.sim = Simulator(self.dut)
        self.sim.add_clock(1e-6)
        self.sim.add_testbench(self._testbench, background=True)

    async def _testbench(self, ctx):
        dut = self.dut
        while True:
            while self.jobs:
                case, out = self.jobs.popleft()
                present(ctx, dut, case)
                await ctx.tick().repeat(ExitDecider.PREPARE_LATENCY)
                boundary = ctx.get(dut.boundary_exit), ctx.get(dut.boundary_reason)
                ctx.set(dut.bitmap_words.as_value(), bitmap_words(ctx, dut, case[3]))
                await ctx.tick().repeat(ExitDecider.DECIDE_LATENCY)
                out.append((*outcome(ctx, dut), *boundary))
            await ctx.tick()

    def run(self, cases):
        out = []
        for case in cases:
            self.jobs.append((case, out))
        while len(out) < len(cases):
            self.sim.advance()
        assert not self.jobs
        return out


@pytest.fixture(scope="module")
def bench():
    return DeciderBench()


def base_guest(**changes):
    guest = {"cr0": 0x8000_0031, "cr3": 0x1000, "cr4": 0x2020, "dr7": 0x400, "rip": 0x100, "rflags": 0x202,
             "efer": 0xD01, "pat": 0x0007_0406_0007_0406, "debugctl": 0, "sysenter_cs": 0x10,
             "sysenter_esp": 0x8000, "sysenter_eip": 0x9000, "interruptibility": 0, "activity": 0, "tpr": 0,
             "tsc": 0x1234_5678}
    guest.update(changes)
    return guest


NO_BOUNDARY = {"at_entry": 0, "mtf_pending": 0, "timer_expired": 0}


def compare(case, result):
    """Mismatches between the gateware's answer and the model's for one case, as strings."""
    event, vmcs, guest, memory, _ = case
    want = exit_model.decide(event, vmcs, guest, memory)
    decision, after, _, _ = result
    problems = []
    if bool(decision["exit"]) != want.exit:
        problems.append(f"exit {decision['exit']} != {want.exit}")
    if want.exit:
        for key in INFO_KEYS:
            if decision[key] != getattr(want, key):
                problems.append(f"{key} {decision[key]:#x} != {getattr(want, key):#x}")
    got_value = decision["value"] if decision["value_valid"] else None
    if got_value != want.value:
        problems.append(f"value {got_value} != {want.value}")
    for key in GUEST_KEYS:
        if after[key] != want.guest[key]:
            problems.append(f"next {key} {after[key]:#x} != {want.guest[key]:#x}")
    return problems


# -- table ----------------------------------------------------------------------------------------

PROC_ALL = 0xB7E9_8E8C | 1 << 31         # most exiting controls on, secondary controls active
TABLE = [
    # (name, event, vmcs changes, guest changes, memory seed)
    ("cpuid", {"event": "cpuid"}, {}, {}, None),
    ("getsec", {"event": "getsec"}, {}, {}, None),
    ("invd", {"event": "invd"}, {}, {}, None),
    ("xsetbv", {"event": "xsetbv", "ecx": 0, "value": 7}, {}, {}, None),
    ("vmcall", {"event": "vmcall"}, {}, {}, None),
    ("hlt exits", {"event": "hlt"}, {"CPU_BASED_VM_EXEC_CONTROL": 1 << 7}, {}, None),
    ("hlt halts", {"event": "hlt"}, {}, {}, None),
    ("invlpg", {"event": "invlpg", "addr": 0xFFFF_8000_1234_5000}, {"CPU_BASED_VM_EXEC_CONTROL": 1 << 9}, {}, None),
    ("invpcid #UD", {"event": "invpcid"}, {"EXCEPTION_BITMAP": 1 << 6}, {}, None),
    ("invpcid exits", {"event": "invpcid"}, {"CPU_BASED_VM_EXEC_CONTROL": 1 << 31 | 1 << 9,
                                             "SECONDARY_VM_EXEC_CONTROL": 1 << 12}, {}, None),
    ("mwait", {"event": "mwait"}, {"CPU_BASED_VM_EXEC_CONTROL": 1 << 10}, {}, None),
    ("monitor", {"event": "monitor"}, {"CPU_BASED_VM_EXEC_CONTROL": 1 << 29}, {}, None),
    ("pause", {"event": "pause"}, {"CPU_BASED_VM_EXEC_CONTROL": 1 << 30}, {}, None),
    ("rdpmc", {"event": "rdpmc"}, {"CPU_BASED_VM_EXEC_CONTROL": 1 << 11}, {}, None),
    ("rdtsc exits", {"event": "rdtsc"}, {"CPU_BASED_VM_EXEC_CONTROL": 1 << 12}, {}, None),
    ("rdtsc offset", {"event": "rdtsc"}, {"CPU_BASED_VM_EXEC_CONTROL": 1 << 3, "TSC_OFFSET": MASK64 - 0x10}, {}, None),
    ("rdtscp #UD delivered", {"event": "rdtscp"}, {}, {"activity": 1}, None),
    ("rdtscp exits", {"event": "rdtscp"}, {"CPU_BASED_VM_EXEC_CONTROL": 1 << 31 | 1 << 12,
                                           "SECONDARY_VM_EXEC_CONTROL": 1 << 3}, {}, None),
    ("wbinvd", {"event": "wbinvd"}, {"CPU_BASED_VM_EXEC_CONTROL": 1 << 31, "SECONDARY_VM_EXEC_CONTROL": 1 << 6}, {}, None),
    ("wbinvd inactive secondary", {"event": "wbinvd"}, {"SECONDARY_VM_EXEC_CONTROL": 1 << 6}, {}, None),
    ("rdrand", {"event": "rdrand"}, {"CPU_BASED_VM_EXEC_CONTROL": 1 << 31, "SECONDARY_VM_EXEC_CONTROL": 1 << 11}, {}, None),
    ("rdseed", {"event": "rdseed"}, {"CPU_BASED_VM_EXEC_CONTROL": 1 << 31, "SECONDARY_VM_EXEC_CONTROL": 1 << 16}, {}, None),
    ("lidt", {"event": "descriptor", "instr": "lidt"}, {"CPU_BASED_VM_EXEC_CONTROL": 1 << 31,
                                                       "SECONDARY_VM_EXEC_CONTROL": 1 << 2}, {}, None),
    ("ltr", {"event": "descriptor", "instr": "ltr"}, {"CPU_BASED_VM_EXEC_CONTROL": 1 << 31,
                                                     "SECONDARY_VM_EXEC_CONTROL": 1 << 2}, {}, None),
    ("rdmsr no bitmaps", {"event": "rdmsr", "msr": 0x10}, {}, {}, None),
    ("rdmsr clear bit", {"event": "rdmsr", "msr": 0x174}, {"CPU_BASED_VM_EXEC_CONTROL": 1 << 28,
                                                          "MSR_BITMAP": MSR_BITMAP}, {}, None),
    ("wrmsr high", {"event": "wrmsr", "msr": 0xC000_0080, "value": 0x501}, {"CPU_BASED_VM_EXEC_CONTROL": 1 << 28,
                                                                          "MSR_BITMAP": MSR_BITMAP}, {}, 7),
    ("rdmsr out of range", {"event": "rdmsr", "msr": 0x4000_0000}, {"CPU_BASED_VM_EXEC_CONTROL": 1 << 28,
                                                                    "MSR_BITMAP": MSR_BITMAP}, {}, None),
    ("io unconditional", {"event": "io", "port": 0x3F8, "dir": "in"}, {"CPU_BASED_VM_EXEC_CONTROL": 1 << 24}, {}, None),
    ("io straddle", {"event": "io", "port": 0x7FFE, "size": 4}, {"CPU_BASED_VM_EXEC_CONTROL": 1 << 25,
                                                                "IO_BITMAP_A": IO_A, "IO_BITMAP_B": IO_B}, {}, 3),
    ("io wrap", {"event": "io", "port": 0xFFFE, "size": 4}, {"CPU_BASED_VM_EXEC_CONTROL": 1 << 25,
                                                            "IO_BITMAP_A": IO_A, "IO_BITMAP_B": IO_B}, {}, None),
    ("io string rep", {"event": "io", "port": 0x60, "size": 2, "string": True, "rep": True, "addr": 0x5000},
     {"CPU_BASED_VM_EXEC_CONTROL": 1 << 24}, {}, None),
    ("cr0 write shadow equal", {"event": "cr_write", "cr": 0, "value": 0x8000_0011},
     {"CR0_GUEST_HOST_MASK": 0x21, "CR0_READ_SHADOW": 0x11}, {}, None),
    ("cr0 write shadow differs", {"event": "cr_write", "cr": 0, "value": 0x8000_0031, "gpr": 5},
     {"CR0_GUEST_HOST_MASK": 0x21, "CR0_READ_SHADOW": 0x11}, {}, None),
    ("cr4 read", {"event": "cr_read", "cr": 4, "gpr": 3}, {"CR4_GUEST_HOST_MASK": 0x2000, "CR4_READ_SHADOW": 0}, {}, None),
    ("cr3 write target hit", {"event": "cr_write", "cr": 3, "value": 0x5000},
     {"CPU_BASED_VM_EXEC_CONTROL": 1 << 15, "CR3_TARGET_COUNT": 2, "CR3_TARGET_VALUE1": 0x5000}, {}, None),
    ("cr3 write target beyond count", {"event": "cr_write", "cr": 3, "value": 0x5000},
     {"CPU_BASED_VM_EXEC_CONTROL": 1 << 15, "CR3_TARGET_COUNT": 1, "CR3_TARGET_VALUE1": 0x5000}, {}, None),
    ("cr3 read", {"event": "cr_read", "cr": 3}, {"CPU_BASED_VM_EXEC_CONTROL": 1 << 16}, {}, None),
    ("cr8 write tpr below", {"event": "cr_write", "cr": 8, "value": 2},
     {"CPU_BASED_VM_EXEC_CONTROL": 1 << 21, "TPR_THRESHOLD": 5}, {}, None),
    ("cr8 read", {"event": "cr_read", "cr": 8}, {}, {"tpr": 9}, None),
    ("clts owned shadow set", {"event": "clts"}, {"CR0_GUEST_HOST_MASK": 8, "CR0_READ_SHADOW": 8}, {}, None),
    ("clts owned shadow clear", {"event": "clts"}, {"CR0_GUEST_HOST_MASK": 8}, {"cr0": 0x8000_0039}, None),
    ("clts not owned", {"event": "clts"}, {}, {"cr0": 0x8000_0039}, None),
    ("lmsw sets PE", {"event": "lmsw", "value": 1}, {"CR0_GUEST_HOST_MASK": 1}, {"cr0": 0x8000_0030}, None),
    ("lmsw cannot clear PE", {"event": "lmsw", "value": 0xE}, {}, {"cr0": 0x8000_0031}, None),
    ("dr7 write", {"event": "dr_write", "dr": 7, "value": 0x401}, {}, {}, None),
    ("dr read exits", {"event": "dr_read", "dr": 6, "gpr": 2}, {"CPU_BASED_VM_EXEC_CONTROL": 1 << 23}, {}, None),
    ("vminstr", {"event": "vminstr", "name": "vmptrld"}, {}, {}, None),
    ("task switch gate", {"event": "task_switch", "selector": 0x28, "source": "gate"}, {}, {}, None),
    ("#PF matched", {"event": "exception", "vector": 14, "error_code": 2, "addr": 0xDEAD000},
     {"EXCEPTION_BITMAP": 1 << 14, "PAGE_FAULT_ERROR_CODE_MASK": 2, "PAGE_FAULT_ERROR_CODE_MATCH": 2}, {}, None),
    ("#PF not matched, bit clear", {"event": "exception", "vector": 14, "error_code": 0},
     {"PAGE_FAULT_ERROR_CODE_MASK": 2, "PAGE_FAULT_ERROR_CODE_MATCH": 2}, {}, None),
    ("#GP during extint", {"event": "exception", "vector": 13, "error_code": 0x10,
                           "during": {"vector": 0x20, "type": "extint"}}, {"EXCEPTION_BITMAP": 1 << 13}, {}, None),
    ("#BP software", {"event": "exception", "vector": 3, "type": "software"}, {"EXCEPTION_BITMAP": 1 << 3}, {}, None),
    ("nmi exits", {"event": "nmi"}, {"PIN_BASED_VM_EXEC_CONTROL": 1 << 3}, {}, None),
    ("extint acknowledged", {"event": "extint", "vector": 0x31}, {"PIN_BASED_VM_EXEC_CONTROL": 1,
                                                                  "VM_EXIT_CONTROLS": 1 << 15}, {}, None),
    ("extint delivered", {"event": "extint", "vector": 0x31}, {}, {"activity": 1}, None),
    ("init", {"event": "init"}, {}, {}, None),
    ("sipi waiting", {"event": "sipi", "vector": 0x9A}, {}, {"activity": 3}, None),
    ("sipi ignored", {"event": "sipi", "vector": 0x9A}, {}, {}, None),
    ("triple fault", {"event": "triple_fault"}, {}, {}, None),
    ("smi", {"event": "smi"}, {"CPU_BASED_VM_EXEC_CONTROL": PROC_ALL | 1 << 27}, {}, None),
    ("run", {"event": "run", "cycles": 100}, {"CPU_BASED_VM_EXEC_CONTROL": PROC_ALL}, {}, None),
    ("mtf after rdtsc", {"event": "rdtsc"}, {"CPU_BASED_VM_EXEC_CONTROL": 1 << 27}, {}, None),
    ("mtf after delivered #UD", {"event": "invpcid"}, {"CPU_BASED_VM_EXEC_CONTROL": 1 << 27}, {}, None),
]


@pytest.mark.parametrize("name, event, vmcs, guest, seed", TABLE, ids=[row[0] for row in TABLE])
def test_table(bench, name, event, vmcs, guest, seed):
    case = (event, vmcs, base_guest(**guest), memory_of(seed), NO_BOUNDARY)
    [result] = bench.run([case])
    assert compare(case, result) == []


# -- the timing contract -------------------------------------------------------------------------------

def test_latency_contract():
    """The latencies of :class:`ExitDecider`'s docstring, cycle by cycle, with a TSC that counts every
    cycle as in the unit: each output takes its new value exactly at its latency, not an edge earlier."""
    P, D = ExitDecider.PREPARE_LATENCY, ExitDecider.DECIDE_LATENCY
    dut = ExitDecider()
    t0, offset = 0x1234_5678, 0x100
    rdtsc = ({"event": "rdtsc"}, {"CPU_BASED_VM_EXEC_CONTROL": 1 << 3, "TSC_OFFSET": offset},
             base_guest(tsc=t0), memory_of(None), NO_BOUNDARY)
    # OUT DX, EAX at 7FFEh: ports 7FFEh–7FFFh in bitmap A's last word, 8000h–8001h in B's first;
    # port 8001h's bit is set. The preemption timer has expired too.
    io_event = {"event": "io", "port": 0x7FFE, "size": 4}
    io_vmcs = {"CPU_BASED_VM_EXEC_CONTROL": 1 << 25, "IO_BITMAP_A": IO_A, "IO_BITMAP_B": IO_B}
    port_8001_set = lambda address: 0b10 if address == IO_B else 0
    timer = {**NO_BOUNDARY, "timer_expired": 1}
    io = (io_event, io_vmcs, base_guest(), port_8001_set, timer)
    io_clear = (io_event, io_vmcs, base_guest(), memory_of(None), timer)
    assert exit_model.decide(*io[:4]).exit and not exit_model.decide(*io_clear[:4]).exit

    async def testbench(ctx):
        cycle = 0

        async def tick(count=1):
            nonlocal cycle
            for _ in range(count):
                await ctx.tick()
                cycle += 1
                ctx.set(dut.tsc, t0 + cycle)            # the TSC of cycle n is t0 + n

        def result():
            return (*outcome(ctx, dut), None, None)

        # RDTSC held: the value is the TSC of D cycles before, plus the offset.
        present(ctx, dut, rdtsc)
        ctx.set(dut.bitmap_words.as_value(), 0)
        await tick(P + D)
        for _ in range(4):
            decision, _ = result()[:2]
            assert decision["value_valid"] and not decision["exit"]
            assert decision["value"] == t0 + cycle - D + offset
            await tick()

        # The I/O access, presented in cycle c: the bitmap words and the boundary exit after P edges.
        present(ctx, dut, io)
        ctx.set(dut.tsc, t0 + cycle)
        await tick(P - 1)
        assert (ctx.get(dut.bitmap_reads), ctx.get(dut.boundary_exit)) == (0, 0)
        await tick()
        assert ctx.get(dut.bitmap_reads) == 2
        assert [ctx.get(dut.bitmap_addr[i]) for i in range(2)] == [IO_A + 0xFF8, IO_B]
        assert (ctx.get(dut.boundary_exit), ctx.get(dut.boundary_reason)) == (1, 52)
        # ... the words presented in cycle c + P: the decision after D more edges, not one earlier.
        ctx.set(dut.bitmap_words.as_value(), bitmap_words(ctx, dut, io[3]))
        await tick(D - 1)
        assert compare(io, result()) != []
        await tick()
        assert compare(io, result()) == [] and result()[0]["reason"] == 30

        # New words (the bit clear): the decision follows D edges later.
        ctx.set(dut.bitmap_words.as_value(), bitmap_words(ctx, dut, io_clear[3]))
        for _ in range(D):
            assert compare(io, result()) == []
            await tick()
        assert compare(io_clear, result()) == []

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    run_simulation(sim)


def test_table_covers_every_event():
    # ``mem`` goes to the EPT walker, not to the decider (tests/test_hdl_ept_walker.py, the examples).
    assert {row[1]["event"] for row in TABLE} == set(guest_events.EVENTS) - {"mem"}


def test_default_lengths_agree_with_model():
    assert DEFAULT_LENGTH == exit_model.DEFAULT_LENGTH


# -- property: random events, controls, guest states, bitmaps -------------------------------------------

def _events():
    u = lambda bits: st.integers(0, (1 << bits) - 1)
    gpr = st.integers(0, 15)
    port = st.one_of(u(16), st.integers(0x7FF8, 0x8003), st.integers(0xFFF8, 0xFFFF))
    msr = st.one_of(u(13), st.integers(0xC000_0000, 0xC000_1FFF), u(32))
    simple = st.sampled_from([n for n, s in guest_events.EVENTS.items() if not s.required and not s.optional])
    length = st.integers(1, 15)
    def with_len(strategy):
        return st.tuples(strategy, st.one_of(st.none(), length)).map(
            lambda t: {**t[0], **({"len": t[1]} if t[1] else {})})
    return with_len(st.one_of(
        simple.map(lambda n: {"event": n}),
        st.builds(lambda a: {"event": "invlpg", "addr": a}, u(64)),
        st.builds(lambda i: {"event": "descriptor", "instr": i}, st.sampled_from(list(guest_events.DESCRIPTOR_INSTRUCTIONS))),
        st.builds(lambda m: {"event": "rdmsr", "msr": m}, msr),
        st.builds(lambda m, v: {"event": "wrmsr", "msr": m, "value": v}, msr, u(64)),
        st.builds(lambda p, s, d, string, rep, imm, a: {"event": "io", "port": p, "size": s, "dir": d, "string": string,
                                                        "rep": rep, "imm": imm, "addr": a},
                  port, st.sampled_from([1, 2, 4]), st.sampled_from(["in", "out"]), st.booleans(), st.booleans(),
                  st.booleans(), u(64)),
        st.builds(lambda c, v, g: {"event": "cr_write", "cr": c, "value": v, "gpr": g},
                  st.sampled_from([0, 3, 4, 8]), u(64), gpr),
        st.builds(lambda c, g: {"event": "cr_read", "cr": c, "gpr": g}, st.sampled_from([0, 3, 4, 8]), gpr),
        st.builds(lambda v: {"event": "lmsw", "value": v}, u(16)),
        st.builds(lambda d, v, g: {"event": "dr_write", "dr": d, "value": v, "gpr": g}, st.integers(0, 7), u(64), gpr),
        st.builds(lambda d, g: {"event": "dr_read", "dr": d, "gpr": g}, st.integers(0, 7), gpr),
        st.builds(lambda n: {"event": "vminstr", "name": n}, st.sampled_from(list(guest_events.VMX_INSTRUCTIONS))),
        st.builds(lambda s, src: {"event": "task_switch", "selector": s, "source": src},
                  u(16), st.sampled_from(list(guest_events.TASK_SOURCES))),
        st.builds(lambda v, e, t, a, during: {"event": "exception", "vector": v, "error_code": e, "type": t, "addr": a,
                                              **({"during": during} if during else {})},
                  st.integers(0, 31), u(32), st.sampled_from(list(guest_events.EXCEPTION_TYPES)), u(64),
                  st.one_of(st.none(), st.fixed_dictionaries(
                      {"vector": u(8), "type": st.sampled_from(list(guest_events.DURING_TYPES))},
                      optional={"error_code": u(32)}))),
        st.builds(lambda v: {"event": "extint", "vector": v}, u(8)),
        st.builds(lambda v: {"event": "sipi", "vector": v}, u(8)),
    ))


def _vmcs():
    u = lambda bits: st.integers(0, (1 << bits) - 1)
    return st.fixed_dictionaries({
        "PIN_BASED_VM_EXEC_CONTROL": u(32), "CPU_BASED_VM_EXEC_CONTROL": u(32),
        "SECONDARY_VM_EXEC_CONTROL": u(32), "VM_EXIT_CONTROLS": u(32), "EXCEPTION_BITMAP": u(32),
        "PAGE_FAULT_ERROR_CODE_MASK": st.sampled_from([0, 1, 2, 4, 0xFFFF_FFFF]) | u(32),
        "PAGE_FAULT_ERROR_CODE_MATCH": st.sampled_from([0, 1, 2, 4]) | u(32),
        "CR0_GUEST_HOST_MASK": u(64), "CR4_GUEST_HOST_MASK": u(64), "CR0_READ_SHADOW": u(64),
        "CR4_READ_SHADOW": u(64), "CR3_TARGET_COUNT": st.integers(0, 4), "CR3_TARGET_VALUE0": u(64),
        "CR3_TARGET_VALUE1": st.sampled_from([0, 0x5000]), "CR3_TARGET_VALUE2": u(64), "CR3_TARGET_VALUE3": u(64),
        "IO_BITMAP_A": st.just(IO_A), "IO_BITMAP_B": st.just(IO_B), "MSR_BITMAP": st.just(MSR_BITMAP),
        "TSC_OFFSET": u(64), "TPR_THRESHOLD": u(4),
    })


def _guests():
    u = lambda bits: st.integers(0, (1 << bits) - 1)
    return st.fixed_dictionaries({
        "cr0": u(64), "cr3": st.sampled_from([0x5000]) | u(64), "cr4": u(64), "dr7": u(64), "rip": u(64),
        "rflags": u(64), "efer": u(64), "pat": u(64), "debugctl": u(64), "sysenter_cs": u(32),
        "sysenter_esp": u(64), "sysenter_eip": u(64), "interruptibility": u(5), "activity": st.integers(0, 3),
        "tpr": u(4), "tsc": u(64),
    })


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(cases=st.lists(st.tuples(_events(), _vmcs(), _guests(), st.integers(0, 1 << 30)), min_size=20, max_size=20))
def test_random_events_match_model(bench, cases):
    batch = [(event, vmcs, guest, memory_of(seed), NO_BOUNDARY) for event, vmcs, guest, seed in cases]
    for case, result in zip(batch, bench.run(batch)):
        problems = compare(case, result)
        assert problems == [], (case[0], problems)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(proc=st.integers(0, (1 << 32) - 1), guest=_guests(), at_entry=st.booleans(), mtf=st.booleans(),
       timer=st.booleans())
def test_boundary_matches_model(bench, proc, guest, at_entry, mtf, timer):
    vmcs = {"CPU_BASED_VM_EXEC_CONTROL": proc}
    flags = {"at_entry": int(at_entry), "mtf_pending": int(mtf), "timer_expired": int(timer)}
    [(_, _, exits, reason)] = bench.run([({"event": "run"}, vmcs, guest, memory_of(None), flags)])
    want = exit_model.boundary(vmcs, guest, at_entry=at_entry, mtf_pending=mtf, timer_expired=timer)
    assert (bool(exits), reason if exits else None) == ((True, want.reason) if want else (False, None))
