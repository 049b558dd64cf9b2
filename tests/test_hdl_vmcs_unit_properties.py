# amaranth: UnusedElaboratable=no
# (compare() builds a VMCSUnit only to ask how many cycles its VM-entry gather takes)
"""Property tests: the VMCS unit (pysim) against the reference model in ``vmx_model.py``.

* Random programs of VMPTRLD / VMCLEAR / VMWRITE / VMREAD (with VMLAUNCH, VMRESUME, VMPTRST, VMCALL,
  VMXOFF+VMXON, processor-mode changes, peeks at launch words and software writes into regions)
  over more VMCS regions than cache slots: every result row agrees with the model, every cycle
  count agrees with the number of bus transfers the model's cache policy needs, and after
  VMCLEARing everything every word of every region agrees with the model's memory. So that VM
  entries get past the consistency checks, a program now and then VMWRITEs a whole valid VMCS
  (a variant of ``entry_baseline.py``'s baseline: flat 64-bit, PAE, virtual-8086, 32-bit host, or
  "rich" with a link pointer, an MSR-load list and an injected event) in one step; random
  single-field VMWRITEs, some aimed at the fields the checks read, break it again.
* Encoding sweeps: VMREAD and VMWRITE of encodings 0x0000–0x7FFF, plus reserved-bit patterns in
  and outside 64-bit mode, checked against the model and against counts that follow from the
  architecture alone. The default run sweeps a sample (every supported encoding, its one-bit
  neighbours and a seeded draw of the rest: :func:`sweep_sample`); every encoding is a slow test
  (``make test-slow``), and the field decoder alone is swept over all of them in the default run.
"""

import os
import random

import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

from hwvirt.hdl.capabilities import MSR, VMXCapabilities
from hwvirt.hdl.exit_logic import ExitDecider
from hwvirt.hdl.vmcs_fields import BY_NAME, VMCS_FIELDS, FieldType, field_name, lookup_encoding
from hwvirt.hdl.vmcs_unit import VMCSUnit
from hwvirt.sim.runner import run_scenario
from hwvirt.sim.scenario import Config

from entry_baseline import LINK_VMCS, MSR_AREA, variants
from vmx_model import (
    CPU_RESET, ENTRY_FIELDS, FIELD_BASE, LAUNCH_WORD_OFFSET, REDUCED_FEATURES, ROW_KEYS, field_offset, model_rows,
    region_words, scenario, step,
)


REVISION = 4
VMXON_REGION = 0x1000
REGION_BASE = 0x20000                # clear of the pages the baseline VMCS variants point at
UNSET_PAGE = 0x9000                  # never written: revision 0
MAXPHYADDR = 39
GUEST_PDPT = 0x2000                  # GUEST_CR3 of the PAE variants: their PDPTEs (EPT is off)

#: The smallest configuration (115 fields).
REDUCED = REDUCED_FEATURES
#: ... plus VMCS shadowing (a VMCS with revision bit 31 set may be loaded).
REDUCED_SHADOWING = {**REDUCED, "secondary_controls": True, "vmcs_shadowing": True}

#: Processor states a program switches between (complete, so each switch is self-contained).
CPU_STATES = {
    "long":   dict(CPU_RESET),
    "prot32": {**CPU_RESET, "efer": 0x0, "cs_l": 0},          # 32-bit protected mode, paging on
    "compat": {**CPU_RESET, "cs_l": 0},                        # compatibility mode: #UD
    "user":   {**CPU_RESET, "cpl": 3},                         # #GP(0)
    "movss":  {**CPU_RESET, "mov_ss_blocking": 1},             # VM entry fails with 26
}

U64 = (1 << 64) - 1


def _u32(value):
    return value.to_bytes(4, "little")


def row_of(hw_row):
    return {k: hw_row[k] for k in ROW_KEYS}


def describe(scn, index, hw, expected):
    """A readable report of the first disagreement: the program up to it and both answers."""
    lines = [f"step {index + 1} disagrees:", f"  hardware {hw!r}", f"  model    {expected!r}",
             "program (last 40 steps):"]
    for s in scn.steps[max(0, index - 40):index + 1]:
        args = dict(s.args)
        if "field" in args:
            args["field"] = field_name(args["field"])
        if "fields" in args:
            args["fields"] = [(field_name(e), hex(v)) for e, v in args["fields"]]
        lines.append(f"  {s.index:4d} {s.op} {args}")
    return "\n".join(lines)


#: Cycles a VM entry that reaches the consistency checks may take beyond its bus transfers and the
#: gather of the checked fields (one store row a cycle, the last row's data two cycles later): the
#: check, the first failure picked in two steps, the decision, the result, and the exit decider's
#: first stage at the entry boundary, whose verdict is registered before it is acted on.
ENTRY_OVERHEAD = 12 + ExitDecider.PREPARE_LATENCY
#: … and per VM-entry MSR-load entry beyond its two words: its checks, its first failure picked.
MSR_ENTRY_CHECK_CYCLES = 2
#: Fields the random programs leave at 0 (see :func:`random_program`).
EXIT_MSR_COUNTS = ("VM_EXIT_MSR_STORE_COUNT", "VM_EXIT_MSR_LOAD_COUNT")
#: … and a VM exit beyond its save rows: the exit decider's pipeline (its declared latencies), the
#: host-state load, the result.
EXIT_OVERHEAD = 3 + ExitDecider.PREPARE_LATENCY + ExitDecider.DECIDE_LATENCY


def compare(scn, *, cycle_slack=5):
    """Run ``scn`` on the hardware and the model; assert every row (and the cycle count) agrees.

    The cycle count must lie between the number of 64-bit bus transfers the model's cache policy
    needs (one cycle each at least) and that number plus a small constant: this is what makes the
    policy itself observable (a write-back of a clean VMCS, a miss instead of a hit, the wrong
    victim all change the count). A VM entry that reaches the consistency checks may take the
    gather of the checked fields and :data:`ENTRY_OVERHEAD` more; its bus transfers (link word,
    VTPR, PDPTEs, MSR-load entries) are the model's too. A field written back to memory takes a
    cycle more (the store's read).
    """
    hw_rows = run_scenario(scn)["steps"]
    model, words, reference = model_rows(scn)
    unit = VMCSUnit(scn.config.capabilities())
    entry_slack = unit.entry_gather_cycles + ENTRY_OVERHEAD
    # A VM exit (a VMX instruction in non-root operation) saves guest state a store row a cycle.
    exit_slack = len(unit.exit_save_rows) + EXIT_OVERHEAD
    assert len(hw_rows) == len(model)
    for i, (hw, expected, moved, msr_entries, written_back) in enumerate(
            zip(hw_rows, model, words, reference.msr_entries_by_step, reference.written_back_by_step)):
        got = row_of(hw)
        assert got == expected, describe(scn, i, got, expected)
        # Every instruction finishes within (64-bit words moved over the bus) + a small constant.
        if hw["op"] not in ("set_cpu", "mem_write", "mem_read"):
            slack = (entry_slack + MSR_ENTRY_CHECK_CYCLES * msr_entries if hw["checks"] is not None else
                     exit_slack if hw["outcome"] == "exit" else cycle_slack)
            if hw["op"] == "vmwrite":                        # a fields step: one VMWRITE per field
                slack *= len(scn.steps[i].args["fields"])
            # (A field written back waits a cycle more for the store's two-cycle read.)
            assert moved <= hw["cycles"] <= moved + written_back + slack, (
                describe(scn, i, got, expected) +
                f"\n{hw['cycles']} cycles, the model moves {moved} bus words")
    return hw_rows, model


# -- random programs ----------------------------------------------------------------------------

SPECIAL_VALUES = (0, 1, 0xFFFF, 0x1_0000, 0xFFFF_FFFF, 0x1_0000_0000, U64, 0x8000_0000_0000_0000)


@st.composite
def programs(draw, shadowing):
    """A configuration, initial memory and a random program, ending in a full flush and read-back.

    The op sequence comes from a ``random.Random`` that hypothesis seeds (so a failure replays),
    with explicit weights: hypothesis's own choices favour "simple" values (the first element of
    a list, small numbers), which left the cache almost never full (measured: 3 full-cache loads in
    40 programs); drawn this way the programs keep more VMCSs live than there are slots.
    """
    rnd = draw(st.randoms(use_true_random=True))
    misc29 = draw(st.booleans())
    return Program(random_program(rnd, shadowing=shadowing, misc29=misc29,
                                  length=draw(st.integers(20, 60))))


class Program:
    """A drawn scenario with a short repr (hypothesis prints a falsifying example; the whole
    scenario would be ~100 kB, and ``describe`` already shows the steps that matter)."""

    def __init__(self, scn):
        self.scn = scn

    def __repr__(self):
        return (f"<program of {len(self.scn.steps)} steps, {self.scn.config.vmcs_cache_slots} slots, "
                f"features {sorted(n for n, on in self.scn.config.features.items() if on)}>")


def random_program(rnd, *, shadowing, misc29, length):
    """The program :func:`programs` draws, from a ``random.Random`` and the drawn switches."""
    slots = rnd.randint(1, 3)
    n_regions = rnd.randint(max(3, slots + 1), 5)
    features = REDUCED_SHADOWING if shadowing else REDUCED
    msr = {}
    if not misc29:
        misc = VMXCapabilities(features=[n for n, on in features.items() if on]).misc
        msr[MSR.IA32_VMX_MISC] = misc & ~(1 << 29)
    config = Config(vmcs_cache_slots=slots, features=features, msr=msr)
    caps = config.capabilities()
    # The VM-exit MSR-store and MSR-load lists stay empty: their memory traffic on a VM exit (and
    # the load list's after a VM-entry failure) depends on guest MSR state the model does not keep;
    # tests/test_hdl_vmcs_unit_exits.py covers them.
    supported = [f for f in caps.supported_fields if f.name not in EXIT_MSR_COUNTS]
    regions = [REGION_BASE + 0x1000 * i for i in range(n_regions)]

    # Initial memory: revision words (mostly right), launch words, a few preset field values.
    memory = [(VMXON_REGION, _u32(REVISION))]
    for i, base in enumerate(regions):
        revision = REVISION if i < 2 else rnd.choice([REVISION] * 4 + [REVISION | 1 << 31, 5, 0])
        launch = rnd.choice([0] * 5 + [1, 2, 3])
        memory.append((base, _u32(revision)))
        memory.append((base + LAUNCH_WORD_OFFSET, _u32(launch)))
        for field in rnd.sample(supported, rnd.randint(0, 6)):
            memory.append((base + field_offset(field.encoding),
                           rnd.getrandbits(field.bits).to_bytes(8, "little")))

    # What the baseline variants' VM entries read from memory: the PAE guests' PDPTEs, the "rich"
    # variant's link-pointer VMCS and two-entry MSR-load list; mostly valid, sometimes not.
    pdptes = [0x3001, 0x4001, 0x5001, 0]
    if rnd.random() < 0.3:
        pdptes[rnd.randrange(4)] |= 1 << rnd.choice([1, 2, 5, 8, MAXPHYADDR, 63])
    memory.append((GUEST_PDPT, b"".join(p.to_bytes(8, "little") for p in pdptes)))
    good_link = REVISION | (1 << 31 if shadowing else 0)     # "rich" turns VMCS shadowing on
    link_revision = rnd.choice([good_link] * 3 + [good_link ^ 1 << 31, 5])
    memory.append((LINK_VMCS, _u32(link_revision)))
    msr_entries = [(0x174, 0x10), (0xC000_0080, 0xD01), (0x277, 0x0007_0406_0007_0406),
                   (0xC000_0082, 0xFFFF_FFFF_8100_0000)]
    bad_entries = [(0xC000_0100, 0), (0x174 | 1 << 32, 0x10), (0x808, 0), (0x176, 1 << 47), (0x8B, 0)]
    listed = [rnd.choice(bad_entries if rnd.random() < 0.3 else msr_entries) for _ in range(2)]
    memory.append((MSR_AREA, b"".join(w.to_bytes(8, "little") for e in listed for w in e)))

    # Valid VMCSs for this configuration (fields it supports, read-only ones excepted).
    valid = {}
    for name, (fields, _) in variants(caps).items():
        valid[name] = [(BY_NAME[n].encoding, 0 if n in EXIT_MSR_COUNTS else v) for n, v in fields.items()
                       if caps.field_supported(BY_NAME[n]) and not BY_NAME[n].readonly]
    base_values = dict(variants(caps)["flat64"][0])
    checked = [n for n in ENTRY_FIELDS if caps.field_supported(BY_NAME[n]) and not BY_NAME[n].readonly
               and n not in EXIT_MSR_COUNTS]

    full = [f.encoding for f in supported]
    high = [f.encoding | 1 for f in supported if f.has_high]
    unsupported = ([f.encoding for f in VMCS_FIELDS if f not in caps.supported_fields]
                   + [f.encoding | 1 for f in supported if not f.has_high])
    reserved_bits = [12, *range(15, 64)]
    bad_pointers = [VMXON_REGION, UNSET_PAGE, regions[0] + 0x10, regions[-1] + 0x800,
                    regions[1] | (1 << MAXPHYADDR), regions[0] | (1 << 63)]

    def encoding():
        kind = rnd.choices(["full", "high", "unsupported", "any", "reserved"], [60, 15, 10, 5, 10])[0]
        if kind == "full":
            return rnd.choice(full)
        if kind == "high":
            return rnd.choice(high)
        if kind == "unsupported":
            return rnd.choice(unsupported)
        if kind == "any":
            excluded = {BY_NAME[n].encoding for n in EXIT_MSR_COUNTS}
            return next(e for e in iter(lambda: rnd.randrange(0x8000), None) if e not in excluded)
        return rnd.choice(full + high) | (1 << rnd.choice(reserved_bits))

    def value():
        return rnd.choice(SPECIAL_VALUES) if rnd.random() < 0.3 else rnd.getrandbits(64)

    def pointer():
        return rnd.choice(regions) if rnd.random() < 0.85 else rnd.choice(bad_pointers)

    loaded = [regions[0]]

    def instruction(kind):
        if kind == "vmptrld":
            loaded.append(pointer())
            return [step("vmptrld", addr=loaded[-1])]
        if kind == "vmptrld-previous":
            # Back to the VMCS loaded before the last one: a hit that makes a VMCS other than
            # the last-loaded one current, so that the victim choice must skip it.
            loaded.append(loaded[-2] if len(loaded) > 1 else regions[1])
            return [step("vmptrld", addr=loaded[-1])]
        if kind == "vmclear":
            return [step("vmclear", addr=pointer())]
        if kind == "vmwrite":
            return [step("vmwrite", fields=[(encoding(), value())])]
        if kind == "vmread":
            return [step("vmread", field=encoding())]
        if kind == "baseline":
            # A whole valid VMCS in one step; sometimes with the link pointer aimed at a region.
            name = rnd.choices(list(valid), [5, 1, 2, 1, 3, 2])[0]
            pairs = list(valid[name])
            if rnd.random() < 0.2:
                pairs.append((BY_NAME["VMCS_LINK_POINTER"].encoding, pointer()))
            steps = [step("vmwrite", fields=pairs)]
            if rnd.random() < 0.6:
                # Usually an entry right away: VMLAUNCH, and VMRESUME for when the VMCS was
                # launched (or, after a successful VMLAUNCH, a VM exit).
                steps += [step("vmlaunch"), step("vmresume")]
            return steps
        if kind == "break":
            # One field the checks read: a bit of its baseline value flipped, or a special value.
            name = rnd.choice(checked)
            bits = BY_NAME[name].bits
            new = (base_values.get(name, 0) ^ (1 << rnd.randrange(bits)) if rnd.random() < 0.6
                   else rnd.choice(SPECIAL_VALUES))
            return [step("vmwrite", fields=[(BY_NAME[name].encoding, new)])]
        return [step(kind)]                                  # vmlaunch, vmresume

    kinds = {
        "vmptrld": 16, "vmptrld-previous": 6, "vmclear": 6, "vmwrite": 16, "vmread": 16, "vmlaunch": 6, "vmresume": 6,
        "vmptrst": 2, "vmcall": 4, "vmxoff+vmxon": 2, "mode": 3, "one-off": 3, "peek": 3,
        "scribble": 3, "baseline": 8, "break": 5,
    }
    body = []
    for _ in range(length):
        kind = rnd.choices(list(kinds), list(kinds.values()))[0]
        if kind in ("vmptrld", "vmptrld-previous", "vmclear", "vmwrite", "vmread", "vmlaunch",
                    "vmresume", "baseline", "break"):
            body += instruction(kind)
        elif kind in ("vmptrst", "vmcall"):
            body.append(step(kind))
        elif kind == "vmxoff+vmxon":
            body += [step("vmxoff"), step("vmxon", addr=VMXON_REGION)]
        elif kind == "mode":                                 # 32-bit operands, or back to 64
            body.append(step("set_cpu", **CPU_STATES[rnd.choice(["long", "prot32"])]))
        elif kind == "one-off":
            # One instruction in a state that makes it fault (or, with MOV-SS blocking, makes a
            # VM entry fail with 26), then back to 64-bit mode.
            body += [step("set_cpu", **CPU_STATES[rnd.choice(["compat", "user", "movss"])]),
                     *instruction(rnd.choice(["vmptrld", "vmwrite", "vmread", "vmlaunch", "vmresume"])),
                     step("set_cpu", **CPU_STATES["long"])]
        elif kind == "peek":
            body.append(step("mem_read", addr=rnd.choice(regions) + LAUNCH_WORD_OFFSET, width=32))
        else:
            # Software scribbling on a region the processor may hold (architecturally undefined;
            # with the unit's policy it shows which VMCSs are cached and which are dirty).
            field = rnd.choice(supported)
            data = rnd.getrandbits(field.bits).to_bytes(8, "little")
            body.append(step("mem_write", addr=rnd.choice(regions) + field_offset(field.encoding),
                             data=data))

    steps = [step("vmxon", addr=VMXON_REGION), step("vmptrld", addr=regions[0]), *body,
             # Back to a known state: 64-bit mode, root operation (VMCALL exits from a guest),
             # in VMX operation (VMXON re-enters if a VMXOFF left it), then flush everything.
             step("set_cpu", **CPU_STATES["long"]), step("vmcall"), step("vmxon", addr=VMXON_REGION),
             *(step("vmclear", addr=base) for base in regions)]
    # Every word of every region as the processor left it (revision … last catalogue field).
    for base in (VMXON_REGION, *regions):
        steps += [step("mem_read", addr=base + 8 * k, width=64) for k in range(region_words())]
    return scenario(steps, config=config, memory=memory, name="random-program")


# No shrinking unless asked for: one example takes ~0.5 s, so shrinking a failure takes minutes;
# the failure message already lists the 40 steps before the disagreement.
_PHASES = tuple(Phase) if os.environ.get("HWVIRT_SHRINK") else (
    Phase.explicit, Phase.reuse, Phase.generate, Phase.target)


@settings(max_examples=15, deadline=None, phases=_PHASES, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
@pytest.mark.parametrize("shadowing", [False, True], ids=["reduced", "reduced-shadowing"])
def test_random_programs_agree_with_model(shadowing, data):
    """Random programs on the reduced configuration, with and without VMCS shadowing (two items,
    so that the xdist workers share the work): hardware and model agree on every row."""
    program = data.draw(programs(shadowing), label="program")
    compare(program.scn)


def test_programs_reach_every_entry_outcome():
    """The generator's programs are meaningful for VM entries (checked on the model alone, so it
    is quick): over a fixed set of seeds, VM entries succeed (VMRESUME too, and with an injected
    event), fail every way the checks decide (7, 8, exit reasons 33 and 34), and guests exit."""
    import random
    seen, checks = set(), set()
    for seed in range(60):
        scn = random_program(random.Random(seed), shadowing=bool(seed & 1), misc29=bool(seed & 2),
                             length=60)
        rows, _, _ = model_rows(scn)
        for s, row in zip(scn.steps, rows):
            if s.op in ("vmlaunch", "vmresume"):
                seen.add((s.op, row["outcome"], row["error"], row["exit_reason"],
                          row["injected"] is not None))
                checks.update(row["checks"] or ())
            elif row["outcome"] == "exit":
                seen.add(("exit", row["exit_reason"]))
    outcomes = {(op, outcome, error, reason) for op, outcome, error, reason, _ in
                (x for x in seen if len(x) == 5)}
    for op in ("vmlaunch", "vmresume"):
        assert (op, "entered", None, None) in outcomes, sorted(outcomes, key=str)
    assert any(x[1:] == ("fail_valid", 7, None) for x in outcomes), outcomes
    assert any(x[1:] == ("fail_valid", 8, None) for x in outcomes), outcomes
    assert any(x[1:] == ("entry_failed", None, 0x8000_0021) for x in outcomes), outcomes
    assert any(x[1:] == ("entry_failed", None, 0x8000_0022) for x in outcomes), outcomes
    assert any(len(x) == 5 and x[1] == "entered" and x[4] for x in seen), "no injection"
    assert sum(1 for x in seen if x[0] == "exit") >= 3, seen
    assert len(checks) >= 20, sorted(checks)


def test_program_exercises_eviction_and_corruption():
    """A fixed program that reaches the interesting cache paths, whatever hypothesis draws."""
    regions = [REGION_BASE + 0x1000 * i for i in range(4)]
    memory = [(VMXON_REGION, _u32(REVISION))] + [(b, _u32(REVISION)) for b in regions]
    body = []
    for i, base in enumerate(regions):               # fill the cache and evict dirty VMCSs
        body += [step("vmptrld", addr=base), step("vmwrite", field="GUEST_RIP", value=0x1000 + i),
                 step("vmwrite", field="TSC_OFFSET_HIGH", value=0xA0 + i)]
    body += [step("vmlaunch"), step("vmread", field="GUEST_RIP")]          # exit 23: dirty again
    body += [step("mem_read", addr=b + LAUNCH_WORD_OFFSET, width=32) for b in regions]
    body += [step("vmxoff"), step("vmxon", addr=VMXON_REGION)]             # drop the cache
    for base in regions:
        body += [step("vmptrld", addr=base), step("vmread", field="GUEST_RIP"),
                 step("vmread", field="TSC_OFFSET"), step("vmresume"), step("vmcall"),
                 step("vmlaunch"), step("vmcall")]        # a VMCALL after an entry exits
    body += [step("vmclear", addr=b) for b in regions]
    body += [step("mem_read", addr=b + 8 * k, width=64) for b in regions for k in range(region_words())]
    for slots in (1, 2, 3):
        scn = scenario([step("vmxon", addr=VMXON_REGION), *body], memory=memory,
                       config=Config(vmcs_cache_slots=slots, features=REDUCED))
        hw_rows, model = compare(scn)
        # The program does reach both corruption outcomes (VMRESUME 6 and VMLAUNCH 4).
        errors = {(r["op"], r["error"]) for r in hw_rows if r["outcome"] == "fail_valid"}
        assert ("vmresume", 6) in errors and ("vmlaunch", 4) in errors, errors


def test_round_robin_pointer_follows_every_fill():
    """The round-robin pointer moves past every slot that is filled, free or evicted.

    Three slots hold A, B, C (pointer at slot 0). VMCLEAR B frees slot 1; D fills it, moving the
    pointer to slot 2, so E evicts C (not A): A is still a hit afterwards, C a miss. A model whose
    pointer moved only on evictions would evict A and be caught by the cycle counts.
    """
    a, b, c, d, e = (REGION_BASE + 0x1000 * i for i in range(5))
    memory = [(VMXON_REGION, _u32(REVISION))] + [(x, _u32(REVISION)) for x in (a, b, c, d, e)]
    steps = [step("vmxon", addr=VMXON_REGION), step("vmptrld", addr=a), step("vmptrld", addr=b),
             step("vmptrld", addr=c), step("vmclear", addr=b), step("vmptrld", addr=d),
             step("vmptrld", addr=e),
             *(step("mem_read", addr=x + LAUNCH_WORD_OFFSET, width=32) for x in (a, b, c, d, e)),
             step("vmptrld", addr=a), step("vmptrld", addr=c)]
    scn = scenario(steps, memory=memory, config=Config(vmcs_cache_slots=3, features=REDUCED))
    hw_rows, _ = compare(scn)
    held = [row["value"] >> 1 & 1 for row in hw_rows[7:12]]
    assert held == [1, 0, 0, 1, 1]                    # A, D, E resident; B cleared; C evicted
    assert hw_rows[12]["cycles"] <= 2 < hw_rows[13]["cycles"]


# -- encoding sweeps ---------------------------------------------------------------------------

def distinctive(encoding):
    """A value with bits in every byte that tells fields apart after truncation."""
    return ((0xA5 ^ (encoding & 0xFF)) << 56) | (encoding << 40) | (0x5A << 32) | (encoding << 16) \
        | ((encoding * 0x9E37) & 0xFFFF)


SWEEP = range(0x8000)
#: The full VMREAD sweep is split into parts of consecutive encodings, test items the xdist workers
#: share (one sweep of all 2**15 encodings was a 458 s item; a quarter takes 30 s).
SWEEP_PARTS = 4
#: The VMREAD sweep's test items: the sample, then the full sweep's parts.
VMREAD_SWEEPS = ("sample", *(f"full-{part}" for part in range(SWEEP_PARTS)))
#: Unsupported encodings drawn (seeded) into the sampled sweeps beside the structured ones.
SAMPLE_OTHERS = 256


def sweep_sample(caps):
    """The encodings the default (not slow) sweeps try through the whole unit, in order.

    Every supported field's encoding and its high-half access, each of those with one of bits 14:0
    flipped (a neighbour that differs in one bit: a width, type or index one off, or bit 12), and
    :data:`SAMPLE_OTHERS` encodings drawn with a fixed seed. The field decoder itself is checked
    over every encoding at the block (``test_field_decoder_every_encoding``); the full sweeps
    through the unit (``[full]``) are slow tests, run by ``make test-slow``.
    """
    chosen = set()
    for f in caps.supported_fields:
        for base in (f.encoding, f.encoding | 1):
            chosen.add(base)
            chosen.update(base ^ (1 << bit) for bit in range(15))
    chosen.update(random.Random(0x5EED).sample(SWEEP, SAMPLE_OTHERS))
    return sorted(chosen)


def sweeps(caps):
    """``(name, encodings)`` of the :data:`VMREAD_SWEEPS` items, in that order."""
    size = len(SWEEP) // SWEEP_PARTS
    full = [list(SWEEP[part * size:(part + 1) * size]) for part in range(SWEEP_PARTS)]
    return list(zip(VMREAD_SWEEPS, [sweep_sample(caps), *full], strict=True))


def _sweep_params(names):
    return [pytest.param(name, id=name, marks=() if name == "sample" else pytest.mark.slow) for name in names]


# Supported encodings of each width (and a VM-exit information field) to decorate with reserved bits.
RESERVED_BASES = ("GUEST_ES_SELECTOR", "TSC_OFFSET", "TSC_OFFSET_HIGH", "CPU_BASED_VM_EXEC_CONTROL",
                  "GUEST_RIP", "VM_INSTRUCTION_ERROR", "VIRTUAL_PROCESSOR_ID")


def _sweep_memory():
    return [(VMXON_REGION, _u32(REVISION)), (REGION_BASE, _u32(REVISION))]


def _architectural_counts(caps, encodings, *, misc29):
    """How many of ``encodings`` a VMWRITE sweep must accept, and fail with 12 / 13."""
    accessible = {f.encoding | high: f for f in caps.supported_fields
                  for high in ((0, 1) if f.has_high else (0,))}
    present = [accessible[e] for e in encodings if e in accessible]
    readonly = sum(1 for f in present if f.type == FieldType.EXIT_INFORMATION)
    ok = len(present) - (0 if misc29 else readonly)
    return ok, len(encodings) - len(present), (0 if misc29 else readonly)


def _vmread_scenario(caps, config, tail, name):
    """VMXON, VMPTRLD, a distinctive value VMWRITten into every supported field, then ``tail``."""
    steps = [step("vmxon", addr=VMXON_REGION), step("vmptrld", addr=REGION_BASE)]
    steps += [step("vmwrite", fields=[(f.encoding, distinctive(f.encoding))]) for f in caps.supported_fields]
    return len(steps), scenario(steps + tail, config=config, memory=_sweep_memory(), name=name)


@pytest.mark.parametrize("part", _sweep_params(VMREAD_SWEEPS))
def test_vmread_encoding_sweep(part):
    """VMWRITE a distinctive value into every field, then VMREAD every encoding of this part."""
    config = Config()                                # the default configuration: 152 fields
    caps = config.capabilities()
    encodings = dict(sweeps(caps))[part]
    first_read, scn = _vmread_scenario(caps, config, [step("vmread", field=e) for e in encodings],
                                       f"vmread-sweep-{part}")
    hw_rows, model = compare(scn)

    # Independently of the model: exactly the supported fields and the high halves of the 64-bit
    # ones are readable, everything else is error 12 (SDM vol. 3C §24.11.2, VMREAD).
    reads = dict(zip(encodings, hw_rows[first_read:]))
    readable = {f.encoding for f in caps.supported_fields} | \
        {f.encoding | 1 for f in caps.supported_fields if f.has_high}
    for encoding, row in reads.items():
        if encoding in readable:
            assert row["outcome"] == "succeed", (hex(encoding), row)
        else:
            assert (row["outcome"], row["error"]) == ("fail_valid", 12), (hex(encoding), row)
    # The high half of TSC_OFFSET reads bits 63:32 of what was written to the full field.
    tsc = lookup_encoding("TSC_OFFSET")
    if tsc + 1 in reads:
        assert reads[tsc + 1]["value"] == distinctive(tsc) >> 32


def test_vmread_encoding_sweep_covers_every_encoding():
    """The full sweep's parts cover every encoding once; the sample holds every supported one."""
    caps = Config().capabilities()
    parts = sweeps(caps)
    assert [e for name, part in parts[1:] for e in part] == list(SWEEP)
    sample = set(parts[0][1])
    assert {f.encoding for f in caps.supported_fields} <= sample
    assert len(sample) < len(SWEEP) // 4


def test_reserved_encoding_bits():
    """Bit 12 and bits 31:15 of an encoding always fail VMREAD/VMWRITE (error 12); bits 63:32 fail
    only in 64-bit mode (outside it the register operand is 32 bits)."""
    config = Config()
    caps = config.capabilities()
    patterns = [(lookup_encoding(name), bit) for name in RESERVED_BASES for bit in (12, *range(15, 64))]
    tail = []
    for mode in ("long", "prot32"):
        tail.append(step("set_cpu", **CPU_STATES[mode]))
        for encoding, bit in patterns:
            tail.append(step("vmread", field=encoding | (1 << bit)))
            tail.append(step("vmwrite", fields=[(encoding | (1 << bit), distinctive(bit))]))
    first, scn = _vmread_scenario(caps, config, tail, "reserved-encoding-bits")
    hw_rows, model = compare(scn)
    tail_rows = hw_rows[first:]
    per_mode = 1 + 2 * len(patterns)
    for mode_index, mode in enumerate(("long", "prot32")):
        rows = tail_rows[mode_index * per_mode + 1:(mode_index + 1) * per_mode]
        for (encoding, bit), read, write in zip(patterns, rows[0::2], rows[1::2]):
            ignored = mode == "prot32" and bit >= 32
            supported = caps.field_supported(next(f for f in VMCS_FIELDS if f.encoding == encoding & ~1))
            for row in (read, write):
                if ignored and supported:
                    assert row["outcome"] == "succeed", (mode, hex(encoding), bit, row)
                else:
                    assert (row["outcome"], row["error"]) == ("fail_valid", 12), (mode, hex(encoding), bit, row)


def _vmwrite_sweep(misc29, full):
    features = dict(REDUCED)
    msr = {}
    if not misc29:
        msr[MSR.IA32_VMX_MISC] = VMXCapabilities(features=()).misc & ~(1 << 29)
    config = Config(features=features, msr=msr)
    caps = config.capabilities()
    assert caps.vmwrite_exit_info == misc29
    encodings = list(SWEEP) if full else sweep_sample(caps)
    steps = [step("vmxon", addr=VMXON_REGION), step("vmptrld", addr=REGION_BASE)]
    first = len(steps)
    steps += [step("vmwrite", fields=[(e, distinctive(e))]) for e in encodings]
    steps += [step("vmread", field=f.encoding) for f in caps.supported_fields]
    steps += [step("vmclear", addr=REGION_BASE)]
    steps += [step("mem_read", addr=REGION_BASE + 8 * k, width=64) for k in range(region_words())]
    scn = scenario(steps, config=config, memory=_sweep_memory(),
                   name=f"vmwrite-sweep-misc29-{misc29}-{'full' if full else 'sample'}")
    hw_rows, _ = compare(scn)
    writes = hw_rows[first:first + len(encodings)]
    ok = sum(r["outcome"] == "succeed" for r in writes)
    e12 = sum(r["outcome"] == "fail_valid" and r["error"] == 12 for r in writes)
    e13 = sum(r["outcome"] == "fail_valid" and r["error"] == 13 for r in writes)
    assert (ok, e12, e13) == _architectural_counts(caps, encodings, misc29=misc29)
    assert ok + e12 + e13 == len(encodings)


@pytest.mark.parametrize("part", _sweep_params(["sample", "full"]))
def test_vmwrite_encoding_sweep_misc29_set(part):
    _vmwrite_sweep(True, part == "full")


@pytest.mark.parametrize("part", _sweep_params(["sample", "full"]))
def test_vmwrite_encoding_sweep_misc29_clear(part):
    _vmwrite_sweep(False, part == "full")


def test_model_layout_constants():
    """The model's region layout is the one the unit documents (and what the sweeps read back)."""
    from hwvirt.hdl.vmcs_unit import REGION_FIELD_BASE
    assert FIELD_BASE == REGION_FIELD_BASE
    assert region_words() * 8 == FIELD_BASE + 8 * len(VMCS_FIELDS)
    assert field_offset(VMCS_FIELDS[0].encoding) == 0x10
