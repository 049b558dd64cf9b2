# amaranth: UnusedElaboratable=no
"""The VM-entry consistency checkers (pysim) against the reference model in ``entry_model.py``.

* Reference self-tests: every valid VMCS of ``entry_baseline.py`` passes on every configuration;
  every mutation makes exactly its check fail (plus the companions it declares) and its check is
  the first failing one of its group; the boundary cases give exactly their expected sets;
  ``first_failure`` picks outcomes by group priority.
* Hardware against the reference, table-driven: for every configuration, the valid VMCSs, every
  applicable mutation and every boundary case go through one :class:`EntryChecker` simulation;
  the failure vector must decode to exactly the reference's failing set. The same for
  :class:`MSRLoadChecker` over a table of MSR-load entries.
* Property tests (hypothesis): batches of randomly mutated valid VMCSs (fields set to random or
  boundary values, bit flips in control words, access rights, CR0/CR4, RFLAGS, ...) and random
  MSR-load entries, hardware failing set == reference failing set.
* Controls the configuration does not allow (a feature configured off): the VMCS sets the
  control and fails exactly the ``*_RSVD`` check of its control word — no other check fails because
  of it, neither by its being 1 as written nor by its reading 0 in effect — on the reference and on
  the hardware (``DISALLOWED_CONTROL_CASES``).

Mutations that necessarily make other checks fail too (the mutation returns them and the test
demands exactly that set):

* GUEST_INTR_SMI_ENTRY, GUEST_ACT_WFS_SMM: "entry to SMM" outside SMM is also CTL_ENTRY_SMM (and
  wait-for-SIPI with it, without blocking by SMI, also GUEST_INTR_SMI_ENTRY). These two and
  CTL_ENTRY_SMM are not applicable on any preset: no feature of the model offers "entry to SMM" or
  "deactivate dual-monitor treatment" (``UNREACHABLE_IN_PRESETS``); they run on a configuration
  whose msr_overrides allow them (``CONFIGS["smm_controls"]``).
* HOST32_GUEST64: a 32-bit host with an IA-32e guest is also HOST_ADDRSZ_LEGACY (or, inside
  IA-32e mode, HOST_ADDRSZ_LMA).
* HOST_CET_WP, GUEST_CET_WP: HOST_/GUEST_CR4_FIXED too, where IA32_VMX_CR4_FIXED1 lacks CR4.CET.
* GUEST_CR0_PG_NO_PE: GUEST_CR0_FIXED too without "unrestricted guest".
* GUEST_CS_DPL_UG, GUEST_SS_DPL_REAL: GUEST_CS_TYPE too without "unrestricted guest" (CS type 3).
"""

import collections
import copy

import pytest
from amaranth.hdl import Shape
from amaranth.sim import Simulator
from hypothesis import HealthCheck, given, settings, strategies as st

from hwvirt.hdl.entry_check_catalogue import BY_ID, CHECKS, CheckGroup
from hwvirt.hdl.entry_checks import EntryChecker, MSRLoadChecker, MSR_LOADABLE, entry_fields_layout
from hwvirt.hdl.vmcs_fields import BY_NAME
from hwvirt.sim.fresh_stack import run_simulation

from entry_baseline import (
    CHECKED_FIELDS, CONFIGS, DISALLOWED_CONTROL_CASES, EXTRA_CASES, MUTATIONS, PRESETS,
    UNREACHABLE_IN_PRESETS, NotApplicable, apply_contract, variants,
)
from entry_model import (
    ENTRYC, EXITC, INJ, MSR_CHECKS, NON_MSR_CHECKS, PIN, PROC, PROC2, PROC3, VMFUNC, EXITC2,
    first_failure, reference_failures, reference_msr_entry,
)


MASK64 = (1 << 64) - 1
VARIANTS = ("flat64", "v86", "pae32", "host32", "rich64", "rich_pae32")
ORDER = {c.id: i for i, c in enumerate(CHECKS)}


# -- building the cases --------------------------------------------------------------------------

def make_case(caps, kind, name):
    """``(fields, env, expected)`` for one table case, or raise NotApplicable.

    ``kind`` is "variant" (expected: no failure), "mutation" (expected: the check plus its
    companions) or "extra" (expected: the set the case declares).
    """
    if kind == "variant":
        fields, env = variants(caps)[name]
        return fields, env, set()
    fields, env = variants(caps)["flat64"]
    if kind == "mutation":
        companions = MUTATIONS[name](caps, fields, env)
        expected = {name} | set(companions)
    else:
        expected = set(EXTRA_CASES[name](caps, fields, env))
    apply_contract(caps, fields, env)
    return fields, env, expected


def reference(caps, fields, env):
    return reference_failures(caps, fields, **env)


CASES = ([("variant", name) for name in VARIANTS]
         + [("mutation", check_id) for check_id in MUTATIONS]
         + [("extra", name) for name in EXTRA_CASES])


def case_id(case):
    return f"{case[0]}:{case[1]}"


# -- the hardware benches ------------------------------------------------------------------------

class EntryBench:
    """One :class:`EntryChecker` in one pysim simulation, kept running between batches.

    A background testbench drains a queue of input sets and records the failure vector of each;
    :meth:`run` queues a batch and advances simulated time by one step, so a configuration is
    elaborated once however many batches (table rows, hypothesis examples) it evaluates.
    """

    def __init__(self, caps):
        self.caps = caps
        self.dut = EntryChecker(caps)
        layout = entry_fields_layout()
        self.slots = [(name, field.offset, Shape.cast(field.shape).width) for name, field in layout]
        assert {name for name, _, _ in self.slots} == set(CHECKED_FIELDS)
        self.present = {name for name, _, _ in self.slots if caps.field_supported(BY_NAME[name])}
        self.jobs = collections.deque()
        self.steps = 0
        self.sim = Simulator(self.dut)
        self.sim.add_testbench(self._testbench, background=True)

    def pack(self, fields):
        """The ``fields`` struct as an integer; fields the configuration lacks are driven 0."""
        unknown = set(fields) - set(CHECKED_FIELDS)
        assert not unknown, f"fields no check reads: {sorted(unknown)}"
        packed = 0
        for name, offset, width in self.slots:
            if name in self.present:
                packed |= (fields.get(name, 0) & ((1 << width) - 1)) << offset
        return packed

    async def _testbench(self, ctx):
        dut = self.dut
        while True:
            while self.jobs:
                packed, env, out = self.jobs.popleft()
                ctx.set(dut.fields.as_value(), packed)
                ctx.set(dut.host_lma, env["host_lma"])
                ctx.set(dut.current_vmcs, env["current_vmcs"])
                ctx.set(dut.link_revision, env["link_revision"])
                ctx.set(dut.vtpr, env["vtpr"])
                ctx.set(dut.pdptes.as_value(),
                        sum((p & MASK64) << (64 * i) for i, p in enumerate(env["pdptes"])))
                out.append(ctx.get(dut.failures))
            await ctx.delay(1e-6)

    def run(self, cases):
        """Failing check IDs (catalogue order) for each ``(fields, env)`` of ``cases``."""
        out = []
        for fields, env in cases:
            self.jobs.append((self.pack(fields), env, out))
        run_simulation(self.sim, until=(self.steps + 0.5) * 1e-6)
        self.steps += 1
        assert len(out) == len(cases) and not self.jobs
        return [[c.id for i, c in enumerate(NON_MSR_CHECKS) if (vector >> i) & 1] for vector in out]


class MSRBench:
    """One :class:`MSRLoadChecker` simulation, kept running between batches (as :class:`EntryBench`)."""

    def __init__(self, caps):
        self.dut = MSRLoadChecker(caps)
        self.jobs = collections.deque()
        self.steps = 0
        self.sim = Simulator(self.dut)
        self.sim.add_testbench(self._testbench, background=True)

    async def _testbench(self, ctx):
        dut = self.dut
        while True:
            while self.jobs:
                (number, msr, reserved, value), out = self.jobs.popleft()
                ctx.set(dut.number, number)
                ctx.set(dut.msr, msr)
                ctx.set(dut.reserved, reserved)
                ctx.set(dut.value, value)
                out.append(ctx.get(dut.failures))
            await ctx.delay(1e-6)

    def run(self, entries):
        out = []
        for entry in entries:
            self.jobs.append((entry, out))
        run_simulation(self.sim, until=(self.steps + 0.5) * 1e-6)
        self.steps += 1
        assert len(out) == len(entries)
        return [[c.id for i, c in enumerate(MSR_CHECKS) if (vector >> i) & 1] for vector in out]


_BENCHES = {}


def bench(kind, preset):
    """The bench of configuration ``preset`` (a name in ``CONFIGS``, which holds ``PRESETS``)."""
    key = (kind, preset)
    if key not in _BENCHES:
        _BENCHES[key] = (EntryBench if kind == "entry" else MSRBench)(CONFIGS[preset])
    return _BENCHES[key]


_TABLE_RESULTS = {}


def table_results(preset):
    """Hardware failing sets of every applicable table case of ``preset``, from one batch."""
    if preset not in _TABLE_RESULTS:
        caps = PRESETS[preset]
        inputs, names = [], []
        for case in CASES:
            try:
                fields, env, _ = make_case(caps, *case)
            except NotApplicable:
                continue
            inputs.append((fields, env))
            names.append(case)
        _TABLE_RESULTS[preset] = dict(zip(names, bench("entry", preset).run(inputs)))
    return _TABLE_RESULTS[preset]


def describe(caps, fields, env, hw, ref):
    hw, ref = set(hw), set(ref)
    lines = [f"hardware only: {sorted(hw - ref, key=ORDER.get)}",
             f"reference only: {sorted(ref - hw, key=ORDER.get)}"]
    for check_id in sorted(hw ^ ref, key=ORDER.get):
        check = BY_ID[check_id]
        lines.append(f"  {check_id}: {check.rule}")
        for name in check.fields:
            if name in fields:
                lines.append(f"    {name} = {fields[name]:#x}")
    lines.append(f"  env = {env!r}")
    return "\n".join(lines)


# == reference self-tests ========================================================================

def test_every_check_has_a_mutation():
    assert set(MUTATIONS) == {c.id for c in NON_MSR_CHECKS}


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_reference_variants_pass(preset, variant):
    caps = PRESETS[preset]
    fields, env = variants(caps)[variant]
    assert reference(caps, fields, env) == []


def _reachable(configs):
    reachable = set()
    for caps in configs:
        for check_id, mutate in MUTATIONS.items():
            fields, env = variants(caps)["flat64"]
            try:
                mutate(caps, fields, env)
            except NotApplicable:
                continue
            reachable.add(check_id)
    return reachable


def test_every_check_is_reachable_in_some_preset():
    """Every check but the SMM ones fails on some preset. CTL_ENTRY_SMM, GUEST_ACT_WFS_SMM and
    GUEST_INTR_SMI_ENTRY are architecturally present but unreachable on the modelled processor: no
    feature offers 'entry to SMM' or 'deactivate dual-monitor treatment', so setting either fails
    CTL_ENTRY_RSVD alone; only msr_overrides allowing the controls reach them."""
    assert UNREACHABLE_IN_PRESETS == {"CTL_ENTRY_SMM", "GUEST_ACT_WFS_SMM", "GUEST_INTR_SMI_ENTRY"}
    assert _reachable(PRESETS.values()) == set(MUTATIONS) - UNREACHABLE_IN_PRESETS
    assert UNREACHABLE_IN_PRESETS <= _reachable([CONFIGS["smm_controls"]])


@pytest.mark.parametrize("check_id", sorted(UNREACHABLE_IN_PRESETS))
def test_smm_checks_where_the_controls_are_allowed(check_id):
    """The SMM checks on a configuration that allows the SMM controls: the mutation's exact set, its
    check first in its group, on the reference and on the hardware."""
    caps = CONFIGS["smm_controls"]
    fields, env, expected = make_case(caps, "mutation", check_id)
    failing = reference(caps, fields, env)
    assert set(failing) == expected
    assert [c for c in failing if BY_ID[c].group == BY_ID[check_id].group][0] == check_id
    hw, = bench("entry", "smm_controls").run([(fields, env)])
    assert hw == failing, describe(caps, fields, env, hw, failing)


@pytest.mark.parametrize("name", DISALLOWED_CONTROL_CASES)
def test_disallowed_control(name):
    """A control the configuration does not allow fails only the *_RSVD check of its control word:
    every other check fails only when it fails both on the controls as written and on the controls
    in effect (on the reference and on the hardware)."""
    config, build = DISALLOWED_CONTROL_CASES[name]
    caps = CONFIGS[config]
    fields, env = variants(caps)["flat64"]
    expected = build(caps, fields, env)
    apply_contract(caps, fields, env)
    assert reference(caps, fields, env) == expected
    hw, = bench("entry", config).run([(fields, env)])
    assert hw == expected, describe(caps, fields, env, hw, expected)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("check_id", MUTATIONS)
def test_reference_mutation(preset, check_id):
    caps = PRESETS[preset]
    try:
        fields, env, expected = make_case(caps, "mutation", check_id)
    except NotApplicable as reason:
        pytest.skip(f"{preset}: {reason}")
    failing = reference(caps, fields, env)
    assert set(failing) == expected
    group = BY_ID[check_id].group
    in_group = [c for c in failing if BY_ID[c].group == group]
    earlier_companion = any(BY_ID[c].group == group and ORDER[c] < ORDER[check_id]
                            for c in expected - {check_id})
    if not earlier_companion:
        assert in_group[0] == check_id


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("name", EXTRA_CASES)
def test_reference_extra_case(preset, name):
    caps = PRESETS[preset]
    try:
        fields, env, expected = make_case(caps, "extra", name)
    except NotApplicable as reason:
        pytest.skip(f"{preset}: {reason}")
    assert set(reference(caps, fields, env)) == expected


def test_first_failure_priority():
    caps = PRESETS["default"]
    assert first_failure(caps, []) == (None, None)
    assert first_failure(caps, ["GUEST_TR_TI", "HOST_CS_NULL", "CTL_INJ_RSVD", "CTL_PIN_RSVD"]) == \
        ({"outcome": "fail_valid", "error": 7}, "CTL_PIN_RSVD")
    assert first_failure(caps, ["GUEST_TR_TI", "HOST_TR_NULL", "HOST_CR0_FIXED"]) == \
        ({"outcome": "fail_valid", "error": 8}, "HOST_CR0_FIXED")
    assert first_failure(caps, ["GUEST_LINK_SELF", "GUEST_RFLAGS_BIT1"]) == \
        ({"outcome": "exit", "exit_reason": 0x8000_0021, "qualification": 0}, "GUEST_RFLAGS_BIT1")
    for check_id, qualification in (("GUEST_LINK_SELF", 4), ("GUEST_PDPTE_RSVD", 2),
                                    ("GUEST_INTR_NMI_STI", 3), ("GUEST_CR0_FIXED", 0)):
        assert first_failure(caps, [check_id]) == \
            ({"outcome": "exit", "exit_reason": 0x8000_0021, "qualification": qualification}, check_id)
    assert first_failure(caps, ["MSRLD_TOO_MANY", "MSRLD_RSVD"], msr_index=5) == \
        ({"outcome": "exit", "exit_reason": 0x8000_0022, "qualification": 5}, "MSRLD_RSVD")
    assert first_failure(caps, ["MSRLD_RSVD", "GUEST_TR_TI"])[1] == "GUEST_TR_TI"


@pytest.mark.parametrize("preset", PRESETS)
def test_first_failure_of_mutations(preset):
    """The architectural outcome of each mutation follows the group of its first failing check."""
    caps = PRESETS[preset]
    for check_id in MUTATIONS:
        try:
            fields, env, expected = make_case(caps, "mutation", check_id)
        except NotApplicable:
            continue
        outcome, first = first_failure(caps, reference(caps, fields, env))
        group = min((BY_ID[c].group for c in expected),
                    key=lambda g: [CheckGroup.CONTROLS, CheckGroup.HOST, CheckGroup.GUEST].index(g))
        assert BY_ID[first].group == group
        if group == CheckGroup.GUEST:
            assert outcome == {"outcome": "exit", "exit_reason": 0x8000_0021,
                               "qualification": BY_ID[first].qualification}
        else:
            assert outcome == {"outcome": "fail_valid", "error": group.value}


# == hardware against the reference: tables =====================================================

@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_hardware_table(preset, case):
    caps = PRESETS[preset]
    try:
        fields, env, expected = make_case(caps, *case)
    except NotApplicable as reason:
        pytest.skip(f"{preset}: {reason}")
    hw = table_results(preset)[case]
    ref = reference(caps, fields, env)
    assert hw == ref, describe(caps, fields, env, hw, ref)


def test_signature():
    caps = PRESETS["default"]
    dut = EntryChecker(caps)
    members = dut.signature.members
    assert set(members) == {"fields", "host_lma", "current_vmcs", "link_revision", "vtpr", "pdptes",
                            "failures"}
    assert Shape.cast(members["failures"].shape).width == len(NON_MSR_CHECKS)
    assert members["fields"].shape == entry_fields_layout()
    msr = MSRLoadChecker(caps)
    assert set(msr.signature.members) == {"number", "msr", "reserved", "value", "failures"}
    assert Shape.cast(msr.signature.members["failures"].shape).width == len(MSR_CHECKS)
    with pytest.raises(TypeError):
        EntryChecker(None)
    with pytest.raises(TypeError):
        MSRLoadChecker(None)


def msr_table(caps):
    """name → (number, msr, reserved, value): one entry per MSRLD check, good entries, boundaries."""
    limit = 512 * (((caps.misc >> 25) & 7) + 1)
    table = {
        "MSRLD_RSVD": (1, 0xC000_0081, 1, 0),
        "MSRLD_RSVD_high": (1, 0x10, 0x8000_0000, 0),
        "MSRLD_FSGS_fs": (1, 0xC000_0100, 0, 0),
        "MSRLD_FSGS_gs": (2, 0xC000_0101, 0, 0),
        "MSRLD_X2APIC_low": (1, 0x800, 0, 0),
        "MSRLD_X2APIC_tpr": (1, 0x808, 0, 0),
        "MSRLD_X2APIC_high": (1, 0x8FF, 0, 0),
        "below_x2apic": (1, 0x7FF, 0, 0),
        "above_x2apic": (1, 0x900, 0, 0),
        "MSRLD_SMM_MON": (1, 0x9B, 0, 0),
        "MSRLD_UCODE_write": (1, 0x79, 0, 0),
        "MSRLD_UCODE_rev": (1, 0x8B, 0, 0),
        "MSRLD_WRMSR_GP_unknown": (1, 0x1234_5678, 0, 0),
        "MSRLD_WRMSR_GP_efer_rsvd": (1, 0xC000_0080, 0, 1 << 1),
        "MSRLD_WRMSR_GP_pat_type": (1, 0x277, 0, 0x0007_0406_0007_0402),
        "MSRLD_WRMSR_GP_lstar_noncanonical": (1, 0xC000_0082, 0, 1 << 47),
        "MSRLD_WRMSR_GP_sysenter_cs_high": (1, 0x174, 0, 1 << 32),
        "MSRLD_TOO_MANY": (limit + 1, 0x10, 0, 0),
        "last_recommended": (limit, 0x10, 0, 0),
        "everything_wrong": (0xFFFF_FFFF, 0xC000_0100, 0xFFFF_FFFF, MASK64),
    }
    for index, (name, reserved) in MSR_LOADABLE.items():
        table[f"good_{name}_zero"] = (3, index, 0, 0)
        table[f"good_{name}_max"] = (4, index, 0, ~reserved & MASK64)
        table[f"rsvd_{name}_all_ones"] = (5, index, 0, MASK64)
    return table


@pytest.mark.parametrize("preset", ["default", "quirks"])
def test_msr_load_table(preset):
    caps = PRESETS[preset]
    table = msr_table(caps)
    hw = bench("msr", preset).run(list(table.values()))
    seen = set()
    for (name, entry), got in zip(table.items(), hw):
        ref = reference_msr_entry(caps, *entry)
        assert got == ref, f"{name} {entry}: hardware {got}, reference {ref}"
        seen.update(ref)
        if name.startswith("MSRLD_"):
            check_id = next(c.id for c in MSR_CHECKS if name.startswith(c.id))
            assert check_id in ref, f"{name}: {ref}"
        if name.startswith("good_") or name == "last_recommended":
            assert ref == [], (name, ref)
        if name in ("below_x2apic", "above_x2apic"):
            assert "MSRLD_X2APIC" not in ref, (name, ref)
    assert seen == {c.id for c in MSR_CHECKS}


# == hardware against the reference: properties =================================================

#: Fields hit more often by random mutations: control words, access rights, the registers most
#: checks read.
HOT_FIELDS = (
    PIN, PROC, PROC2, PROC3, EXITC, EXITC2, ENTRYC, VMFUNC, INJ,
    "GUEST_CR0", "GUEST_CR4", "GUEST_RFLAGS", "GUEST_INTERRUPTIBILITY_INFO", "GUEST_ACTIVITY_STATE",
    "GUEST_PENDING_DBG_EXCEPTIONS", "VMCS_LINK_POINTER", "GUEST_RIP", "HOST_CR0", "HOST_CR4",
    "HOST_RIP", "EPT_POINTER", "GUEST_IA32_EFER", "HOST_IA32_EFER",
    *(f"GUEST_{s}_AR_BYTES" for s in ("ES", "CS", "SS", "DS", "FS", "GS", "LDTR", "TR")),
    *(f"GUEST_{s}_SELECTOR" for s in ("CS", "SS", "DS", "TR", "LDTR")),
)

INTERESTING = (0, 1, 2, 3, 0xF3, 0x82, 0x8B, 0xC093, 0xA09B, 0xC09B, 0x1_0000, 0xFFFF, 0xFFF,
               0xFFFF_F000, 0xFFFF_FFFF, 1 << 32, 1 << 47, 0xFFFF_8000_0000_0000,
               0x0000_7FFF_FFFF_FFFF, 0x0080_0000_0000_0000, MASK64, 0x8000_0000, 0x8000_0B0E,
               0x8000_0202, 0x8000_0020, 0x8000_0700, 0x8000_0480)


def _field_width(name):
    return BY_NAME[name].bits


@st.composite
def edits(draw, caps):
    """One edit: (target, value-function) applied to (fields, env)."""
    present = [n for n in CHECKED_FIELDS if caps.field_supported(BY_NAME[n])]
    hot = [n for n in HOT_FIELDS if n in present]
    target = draw(st.one_of(st.sampled_from(present), st.sampled_from(hot), st.sampled_from(hot),
                            st.sampled_from(("host_lma", "current_vmcs", "link_revision", "vtpr",
                                             "pdptes"))))
    if target == "host_lma":
        return target, None, draw(st.integers(0, 1))
    if target == "pdptes":
        index = draw(st.integers(0, 3))
        return target, index, draw(value_for(64, caps))
    width = {"current_vmcs": 64, "link_revision": 32, "vtpr": 8}.get(target) or _field_width(target)
    if target == INJ:
        return target, None, draw(st.one_of(value_for(width, caps),
                                            st.tuples(st.just("set"), injections())))
    if target.endswith("_AR_BYTES"):
        return target, None, draw(st.one_of(value_for(width, caps),
                                            st.tuples(st.just("set"), access_rights())))
    if target.endswith("_SELECTOR"):
        return target, None, draw(st.one_of(value_for(width, caps),
                                            st.tuples(st.just("set"), selectors())))
    if target == "link_revision":
        return target, None, draw(st.one_of(
            st.just(caps.revision_id), st.just(caps.revision_id | (1 << 31)),
            st.integers(0, (1 << 32) - 1)))
    if target == "current_vmcs":
        return target, None, draw(st.one_of(st.just(0x14000), st.just(0x5000),
                                            st.integers(0, (1 << 52) - 1).map(lambda a: a & ~0xFFF)))
    return target, None, draw(value_for(width, caps))


def injections():
    """Valid interruption-information words: any type, vectors near the rules' edges."""
    return st.builds(
        lambda kind, vector, deliver, extra: (1 << 31) | (kind << 8) | vector | (deliver << 11) | extra,
        st.integers(0, 7), st.sampled_from((0, 1, 2, 3, 6, 8, 13, 14, 17, 18, 21, 31, 32, 0x80, 0xFF)),
        st.integers(0, 1), st.sampled_from((0, 0, 0, 1 << 12, 1 << 30)))


def access_rights():
    """Access-rights words built from their parts (SDM §24.4.1): any type, S, DPL, P, L, D/B, G,
    sometimes unusable, sometimes a reserved bit."""
    return st.builds(
        lambda kind, s, dpl, p, l, db, g, unusable, reserved:
            kind | (s << 4) | (dpl << 5) | (p << 7) | (l << 13) | (db << 14) | (g << 15)
            | (unusable << 16) | reserved,
        st.integers(0, 15), st.sampled_from((1, 1, 0)), st.integers(0, 3), st.sampled_from((1, 1, 0)),
        st.integers(0, 1), st.integers(0, 1), st.integers(0, 1), st.sampled_from((0, 0, 0, 1)),
        st.sampled_from((0,) * 6 + (1 << 8, 1 << 11, 1 << 12, 1 << 17, 1 << 31)))


def selectors():
    """Selectors with a small index, any TI and RPL."""
    return st.builds(lambda index, ti, rpl: (index << 3) | (ti << 2) | rpl,
                     st.sampled_from((0, 1, 2, 8, 0x1FFF)), st.integers(0, 1), st.integers(0, 3))


def value_for(width, caps):
    mask = (1 << width) - 1
    special = [v & mask for v in INTERESTING] + [(1 << caps.maxphyaddr) & mask,
                                                ((1 << caps.maxphyaddr) - 0x1000) & mask]
    return st.one_of(
        st.tuples(st.just("flip"), st.integers(0, width - 1)),
        st.tuples(st.just("flip"), st.integers(0, min(width, 20) - 1)),
        st.tuples(st.just("set"), st.integers(0, 0x3F)),
        st.tuples(st.just("flip2"), st.integers(0, width - 1), st.integers(0, width - 1)),
        st.tuples(st.just("set"), st.integers(0, mask)),
        st.tuples(st.just("set"), st.sampled_from(special)),
    )


def apply_edit(fields, env, edit):
    target, index, op = edit
    if target == "host_lma":
        env["host_lma"] = op
        return
    if target in ("current_vmcs", "link_revision", "vtpr"):
        if isinstance(op, tuple):
            old = env[target]
            env[target] = _apply_op(old, op)
        else:
            env[target] = op
        return
    if target == "pdptes":
        env["pdptes"][index] = _apply_op(env["pdptes"][index], op)
        return
    fields[target] = _apply_op(fields.get(target, 0), op)


def _apply_op(old, op):
    if op[0] == "flip":
        return old ^ (1 << op[1])
    if op[0] == "flip2":
        return old ^ (1 << op[1]) ^ (1 << op[2])
    return op[1]


_STARTS = {}


def start_points(preset):
    """Every applicable table case of ``preset`` (valid VMCSs, mutations, boundary cases): random
    edits start from these, so that each check is near the edge where it fires."""
    if preset not in _STARTS:
        caps = PRESETS[preset]
        starts = {}
        for case in CASES:
            try:
                fields, env, _ = make_case(caps, *case)
            except NotApplicable:
                continue
            starts[case_id(case)] = (fields, env)
        _STARTS[preset] = starts
    return _STARTS[preset]


@st.composite
def mutated_vmcs(draw, preset):
    caps = PRESETS[preset]
    start = draw(st.one_of(st.sampled_from(VARIANTS).map(lambda v: f"variant:{v}"),
                           st.sampled_from(sorted(start_points(preset)))))
    changes = draw(st.lists(edits(caps), min_size=1, max_size=4))
    return start, changes


BATCH = 50


@pytest.mark.parametrize("preset", PRESETS)
@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_hardware_random_mutations(preset, data):
    caps = PRESETS[preset]
    batch = data.draw(st.lists(mutated_vmcs(preset), min_size=BATCH, max_size=BATCH), label="batch")
    inputs = []
    starts = start_points(preset)
    for start, changes in batch:
        fields, env = copy.deepcopy(starts[start])
        for edit in changes:
            apply_edit(fields, env, edit)
        apply_contract(caps, fields, env)
        inputs.append((fields, env))
    results = bench("entry", preset).run(inputs)
    for (start, changes), (fields, env), hw in zip(batch, inputs, results):
        ref = reference(caps, fields, env)
        assert hw == ref, (f"{preset}/{start} with {changes}:\n"
                           + describe(caps, fields, env, hw, ref))


@st.composite
def msr_entries(draw, caps):
    limit = 512 * (((caps.misc >> 25) & 7) + 1)
    number = draw(st.one_of(st.integers(1, 4), st.integers(limit - 2, limit + 2),
                            st.integers(0, (1 << 32) - 1)))
    msr = draw(st.one_of(st.sampled_from(sorted(MSR_LOADABLE)), st.sampled_from(sorted(MSR_LOADABLE)),
                         st.sampled_from((0xC000_0100, 0xC000_0101, 0x9B, 0x79, 0x8B, 0x7FF, 0x800,
                                          0x8FF, 0x900, 0x9A, 0x9C)),
                         st.integers(0, (1 << 32) - 1)))
    reserved = draw(st.one_of(st.just(0), st.just(0), st.integers(0, (1 << 32) - 1)))
    value = draw(st.one_of(st.just(0), st.integers(0, MASK64),
                           st.integers(0, 63).map(lambda b: 1 << b),
                           st.sampled_from((1 << 47, 0xFFFF_8000_0000_0000, 0x0000_7FFF_FFFF_F000,
                                            0x0007_0406_0007_0406, 0x0007_0406_0007_0403, 0xD01))))
    return number, msr, reserved, value


@pytest.mark.parametrize("preset", ["default", "quirks"])
@settings(max_examples=5, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_msr_load_random(preset, data):
    caps = PRESETS[preset]
    entries = data.draw(st.lists(msr_entries(caps), min_size=100, max_size=100), label="entries")
    for entry, hw in zip(entries, bench("msr", preset).run(entries)):
        assert hw == reference_msr_entry(caps, *entry), entry
