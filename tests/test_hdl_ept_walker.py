# amaranth: UnusedElaboratable=no
# (the signature test builds a walker only to inspect it, never to elaborate it)
"""The EPT walker (``hwvirt.hdl.ept_walker``) in Amaranth's simulator.

Table cases from the fact sheet §8 (SDM vol. 3C §29.3: every misconfiguration cause, every violation
cause, 1 GiB / 2 MiB / 4 KiB leaves, accessed/dirty updates, the exit-qualification bits), the
translation caches and INVEPT/INVVPID flushes, two-dimensional walks (reference counts, guest page
faults, guest A/D), nested paging (APM vol. 2 §15.25, #NPF EXITINFO1), and hypothesis property tests
against the plain-Python reference walker (``ept_model.py``) on random, partly malformed tables
under random bus latency, with the cycle bound asserted on every walk.
"""

import functools

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from hwvirt.hdl.bus import WishboneSignature
from hwvirt.hdl.ept_walker import (EPTWalker, Invalidation, InvalidationKind as K, Outcome, WalkRequest, WalkResult)
from hwvirt.sim.ept_bench import EPTSimulation

import ept_model as model


N = 39
FRAME = ((1 << N) - 1) & ~0xFFF
WB = 6 << 3                       # memory type WB in an EPT leaf
EPTP_FLAGS = 6 | 3 << 3           # WB paging-structure accesses, 4-level walk
AD = 1 << 6                       # EPTP[6]: accessed/dirty flags
R, W, X = 1, 2, 4
RWX = 7
READ, WRITE, FETCH = 0, 1, 2
ACC = {READ: 1, WRITE: 2, FETCH: 4}


@functools.lru_cache(maxsize=None)
def simulation(**params):
    return EPTSimulation(**params)


def idx(address, level):
    return (address >> (12 + 9 * (level - 1))) & 0x1FF


class Space:
    """Builds tables in a memory dict (byte address -> word), allocating 4 KiB pages."""

    def __init__(self, memory=None, base=0x10_0000):
        self.mem = {} if memory is None else memory
        self.next = base

    def page(self):
        page, self.next = self.next, self.next + 0x1000
        return page

    def map(self, root, address, leaf, *, level=1, levels=4, nonleaf=RWX):
        """Put ``leaf`` (a whole entry) at ``level`` on the path of ``address`` from ``root``,
        creating intermediate tables whose entries are ``nonleaf`` (+ frame). Returns its address."""
        table = root
        for lvl in range(levels, level, -1):
            slot = table + idx(address, lvl) * 8
            if slot not in self.mem:
                self.mem[slot] = self.page() | nonleaf
            table = self.mem[slot] & FRAME
        slot = table + idx(address, level) * 8
        self.mem[slot] = leaf
        return slot

    def path(self, root, address, levels=4):
        """Entry addresses on the path (top first), as far as the tables go."""
        out, table = [], root
        for lvl in range(levels, 0, -1):
            slot = table + idx(address, lvl) * 8
            out.append(slot)
            if slot not in self.mem:
                break
            table = self.mem[slot] & FRAME
        return out


def req(**fields):
    base = dict(eptp=0, gpa=0, access=READ, user=0, linear_valid=0, linear=0, vpid=0, paging_entry=0,
                linear_rights=0, cr3=0, guest_paging=0, npt=0)
    base.update(fields)
    return base


RESULT_KEYS = ("outcome", "hpa", "memory_type", "ignore_pat", "qualification", "gpa", "linear", "error_code")


def check_against_model(results, requests, memory_before, memory_after, *, cold_refs=True, **config):
    """Run the model on a copy of ``memory_before``, request after request; compare."""
    mem = dict(memory_before)
    walker = model.Walker(mem, model.Config(**config))
    for got, request in zip(results, requests):
        if got is None:
            continue
        want = walker.walk(model.Request(**request))
        assert {k: got[k] for k in RESULT_KEYS} == {k: getattr(want, k) for k in RESULT_KEYS}, request
        if cold_refs and not request["guest_paging"]:
            assert got["refs"] == want.refs
        else:
            assert got["refs"] <= want.refs
        cold_refs = False
    assert {a: v for a, v in memory_after.items() if v} == {a: v for a, v in mem.items() if v}


def walk(requests, memory, *, latency=0, seed=None, config=None, compare=True, **kw):
    """Run requests (dicts; ("invalidate", dict) tuples pass through) on a fresh walker."""
    config = config or {}
    ops = [op if isinstance(op, tuple) else ("walk", op) for op in requests]
    before = dict(memory)
    results = simulation(**config).run(memory, ops, latency=latency, seed=seed)
    for result in results:
        if result is not None:
            assert result["cycles"] <= EPTWalker.cycle_bound(latency)
    if compare:
        check_against_model(results, [op[1] if op[0] == "walk" else None for op in ops], before, memory,
                            **{k: v for k, v in config.items() if k in model.Config.__dataclass_fields__}, **kw)
    return results


# -- signature -----------------------------------------------------------------------------------------

def test_signature():
    walker = EPTWalker(maxphyaddr=46)
    members = walker.signature.members
    assert set(members) == {"req", "resp", "invalidate", "bus"}
    assert members["bus"].signature == WishboneSignature(addr_width=43)
    assert members["req"].signature.members["payload"].shape == WalkRequest
    assert members["resp"].signature.members["payload"].shape == WalkResult
    assert members["invalidate"].signature.members["payload"].shape == Invalidation
    with pytest.raises(ValueError):
        EPTWalker(maxphyaddr=30)
    with pytest.raises(ValueError):
        EPTWalker(tlb_entries=0)


# -- one-dimensional table cases ---------------------------------------------------------------------

GPA = 0x0000_1234_5678_9ABC & ((1 << 48) - 1)
HPA_4K = 0x7_6543_2000


def ept_case(leaf, *, level=1, nonleaf=RWX, eptp_flags=EPTP_FLAGS, mutate=None):
    space = Space()
    root = space.page()
    slot = space.map(root, GPA, leaf, level=level, nonleaf=nonleaf)
    if mutate:
        mutate(space, root)
    return space, root | eptp_flags, slot


MISCONFIGS = {
    "write-without-read leaf":     dict(leaf=HPA_4K | W | WB),
    "write+execute without read":  dict(leaf=HPA_4K | W | X | WB),
    "write-without-read PML4E":    dict(leaf=HPA_4K | RWX | WB, mutate=lambda s, r: s.mem.__setitem__(
                                        s.path(r, GPA)[0], (s.mem[s.path(r, GPA)[0]] & ~7) | W)),
    "bits 51:N in a PDE":          dict(leaf=HPA_4K | RWX | WB, mutate=lambda s, r: s.mem.__setitem__(
                                        s.path(r, GPA)[2], s.mem[s.path(r, GPA)[2]] | 1 << 45)),
    "bits 51:N in a PTE":          dict(leaf=HPA_4K | RWX | WB | 1 << 51),
    "bit 7 in a PML4E":            dict(leaf=HPA_4K | RWX | WB, mutate=lambda s, r: s.mem.__setitem__(
                                        s.path(r, GPA)[0], s.mem[s.path(r, GPA)[0]] | 1 << 7)),
    "bits 5:3 in a PML4E":         dict(leaf=HPA_4K | RWX | WB, mutate=lambda s, r: s.mem.__setitem__(
                                        s.path(r, GPA)[0], s.mem[s.path(r, GPA)[0]] | WB)),
    "bit 6 in a non-leaf PDPTE":   dict(leaf=HPA_4K | RWX | WB, mutate=lambda s, r: s.mem.__setitem__(
                                        s.path(r, GPA)[1], s.mem[s.path(r, GPA)[1]] | 1 << 6)),
    "bits 5:3 in a non-leaf PDE":  dict(leaf=HPA_4K | RWX | WB, mutate=lambda s, r: s.mem.__setitem__(
                                        s.path(r, GPA)[2], s.mem[s.path(r, GPA)[2]] | 1 << 3)),
    "1 GiB leaf bits 29:12":       dict(leaf=0x40000000 | 1 << 7 | RWX | WB | 1 << 20, level=3),
    "2 MiB leaf bits 20:12":       dict(leaf=0x200000 | 1 << 7 | RWX | WB | 1 << 12, level=2),
    "memory type 2":               dict(leaf=HPA_4K | RWX | 2 << 3),
    "memory type 3":               dict(leaf=HPA_4K | RWX | 3 << 3),
    "memory type 7":               dict(leaf=HPA_4K | RWX | 7 << 3),
    "memory type 7 in a 2 MiB leaf": dict(leaf=0x200000 | 1 << 7 | R | 7 << 3, level=2),
    "memory type 2 in a 1 GiB leaf": dict(leaf=0x40000000 | 1 << 7 | R | 2 << 3, level=3),
}


@pytest.mark.parametrize("name", MISCONFIGS)
def test_misconfiguration(name):
    space, eptp, _ = ept_case(**MISCONFIGS[name])
    result, = walk([req(eptp=eptp, gpa=GPA, linear_valid=1, linear=0xABC000)], space.mem)
    assert (result["outcome"], result["qualification"], result["gpa"]) == (Outcome.MISCONFIG.value, 0, GPA)
    assert result["linear"] == 0xABC000


def test_execute_only_without_the_capability_is_a_misconfiguration():
    space, eptp, _ = ept_case(HPA_4K | X | WB)
    config = dict(execute_only=False)
    result, = walk([req(eptp=eptp, gpa=GPA, access=FETCH)], space.mem, config=config)
    assert result["outcome"] == Outcome.MISCONFIG.value
    space, eptp, _ = ept_case(HPA_4K | X | WB)
    result, = walk([req(eptp=eptp, gpa=GPA, access=FETCH)], space.mem)
    assert result["outcome"] == Outcome.OK.value


def test_not_present_is_tested_before_misconfiguration():
    # bits 2:0 = 0 with reserved bits set: a violation, not a misconfiguration
    space, eptp, _ = ept_case(HPA_4K | WB | 1 << 51)
    result, = walk([req(eptp=eptp, gpa=GPA)], space.mem)
    assert result["outcome"] == Outcome.VIOLATION.value


# (leaf, nonleaf rights, access, request extras) -> qualification
VIOLATIONS = {
    "not present leaf, read":        (HPA_4K | WB, RWX, READ, {}, 0x1),
    "not present leaf, write, GLA":  (HPA_4K | WB, RWX, WRITE, dict(linear_valid=1), 0x2 | 0x80 | 0x100),
    "not present, paging entry":     (HPA_4K | WB, RWX, READ, dict(linear_valid=1, paging_entry=1), 0x1 | 0x80),
    "write to read-only":            (HPA_4K | R | WB, RWX, WRITE, dict(linear_valid=1), 0x2 | 0x8 | 0x80 | 0x100),
    "fetch from R/W":                (HPA_4K | R | W | WB, RWX, FETCH, {}, 0x4 | 0x8 | 0x10),
    "read of execute-only":          (HPA_4K | X | WB, RWX, READ, {}, 0x1 | 0x20),
    "write, upper level read-only":  (HPA_4K | RWX | WB, R | X, WRITE, {}, 0x2 | 0x8 | 0x20),
    "advanced info (bits 9-11)":     (HPA_4K | R | WB, RWX, WRITE, dict(linear_valid=1, linear_rights=0b101),
                                      0x2 | 0x8 | 0x80 | 0x100 | 0b101 << 9),
    "no advanced info for paging entries": (HPA_4K | R | WB, RWX, WRITE,
                                      dict(linear_valid=1, paging_entry=1, linear_rights=7), 0x2 | 0x8 | 0x80),
}


@pytest.mark.parametrize("name", VIOLATIONS)
def test_violation(name):
    leaf, nonleaf, access, extra, qualification = VIOLATIONS[name]
    space, eptp, _ = ept_case(leaf, nonleaf=nonleaf)
    result, = walk([req(eptp=eptp, gpa=GPA, access=access, linear=0x5000, **extra)], space.mem)
    assert result["outcome"] == Outcome.VIOLATION.value
    assert result["qualification"] == qualification
    assert result["gpa"] == GPA


@pytest.mark.parametrize("level", [4, 3, 2])
def test_not_present_upper_levels(level):
    space, eptp, _ = ept_case(HPA_4K | RWX | WB)
    slot = space.path(eptp & FRAME, GPA)[4 - level]
    space.mem[slot] &= ~7
    result, = walk([req(eptp=eptp, gpa=GPA, access=WRITE)], space.mem)
    assert (result["outcome"], result["qualification"], result["refs"]) == (Outcome.VIOLATION.value, 0x2, 5 - level)


def test_supervisor_shadow_stack_bit_14():
    space, eptp, _ = ept_case(HPA_4K | R | WB | 1 << 60)
    result, = walk([req(eptp=eptp | 1 << 7, gpa=GPA, access=WRITE)], space.mem)
    assert result["qualification"] == 0x2 | 0x8 | 1 << 14


def test_paging_structure_access_with_ad_is_a_write():
    space, eptp, _ = ept_case(HPA_4K | R | WB)
    result, = walk([req(eptp=eptp | AD, gpa=GPA, paging_entry=1, linear_valid=1)], space.mem)
    assert result["qualification"] == 0x3 | 0x8 | 0x80


@pytest.mark.parametrize("level, leaf, hpa", [
    (1, HPA_4K | RWX | WB | 1 << 6, HPA_4K | (GPA & 0xFFF)),
    (2, 0x4_0000_0000 | 1 << 7 | RWX | 4 << 3, 0x4_0000_0000 | (GPA & 0x1F_FFFF)),
    (3, 0x40_0000_0000 | 1 << 7 | R | 1 << 3, 0x40_0000_0000 | (GPA & 0x3FFF_FFFF)),
])
def test_leaf_sizes(level, leaf, hpa):
    space, eptp, _ = ept_case(leaf, level=level)
    result, = walk([req(eptp=eptp, gpa=GPA)], space.mem)
    assert result["outcome"] == Outcome.OK.value
    assert (result["hpa"], result["memory_type"], result["ignore_pat"]) == (hpa, (leaf >> 3) & 7, (leaf >> 6) & 1)
    assert result["refs"] == 5 - level
    # the 2 MiB / 1 GiB TLB entry covers the whole page
    other = GPA ^ ((1 << (12 + 9 * (level - 1))) - 1) & ~0xFFF if level > 1 else GPA
    results = walk([req(eptp=eptp, gpa=GPA), req(eptp=eptp, gpa=other)], space.mem)
    assert results[1]["tlb_hit"] == 1 and results[1]["refs"] == 0


def test_accessed_and_dirty_flags():
    space, eptp, leaf_slot = ept_case(HPA_4K | RWX | WB)
    path = space.path(eptp & FRAME, GPA)
    r1, r2, r3, r4 = walk([req(eptp=eptp | AD, gpa=GPA), req(eptp=eptp | AD, gpa=GPA),
                           req(eptp=eptp | AD, gpa=GPA, access=WRITE), req(eptp=eptp | AD, gpa=GPA, access=WRITE)],
                          space.mem)
    assert all(space.mem[a] >> 8 & 1 for a in path)             # accessed everywhere
    assert space.mem[leaf_slot] >> 9 & 1                        # dirty on the leaf
    assert not any(space.mem[a] >> 9 & 1 for a in path[:-1])
    assert r1["refs"] == 8                                      # 4 reads, 4 accessed-flag writes
    assert r2["tlb_hit"] == 1 and r2["refs"] == 0
    assert r3["tlb_hit"] == 0 and r3["refs"] == 2 and r3["pwc_hits"] == 3   # re-walk to set dirty
    assert r4["tlb_hit"] == 1
    sim = simulation()
    assert [t[0] for t in sim.transactions] == ["r", "w"] * 4 + ["r", "w"]


def test_no_flag_writes_without_eptp_bit_6():
    space, eptp, _ = ept_case(HPA_4K | RWX | WB)
    before = dict(space.mem)
    walk([req(eptp=eptp, gpa=GPA, access=WRITE)], space.mem)
    assert space.mem == before


def test_no_leaf_flags_on_a_violation():
    space, eptp, leaf_slot = ept_case(HPA_4K | R | WB)
    walk([req(eptp=eptp | AD, gpa=GPA, access=WRITE)], space.mem)
    assert not space.mem[leaf_slot] >> 8 & 1


def test_self_pointing_table_terminates():
    space = Space()
    root = space.page()
    for level in range(4):
        space.mem[root + idx(0, 4 - level) * 8] = root | RWX          # every level reads the root's entry 0
    result, = walk([req(eptp=root | EPTP_FLAGS, gpa=0x10)], space.mem, latency=5, seed=1)
    # the level counter ends the walk: the fourth read is taken as the PTE (UC, RWX)
    assert (result["outcome"], result["refs"], result["hpa"]) == (Outcome.OK.value, 4, root | 0x10)
    assert result["cycles"] <= EPTWalker.cycle_bound(5)


def test_five_level_walk():
    config = dict(five_level=True)
    space = Space()
    root = space.page()
    gpa = 0x1_2345_6789_A000
    space.map(root, gpa, HPA_4K | RWX | WB, levels=5)
    eptp5 = root | 6 | 4 << 3
    r5, r4 = walk([req(eptp=eptp5, gpa=gpa), req(eptp=root | EPTP_FLAGS, gpa=gpa)], space.mem, config=config)
    assert r5["outcome"] == Outcome.OK.value and r5["hpa"] == HPA_4K and r5["refs"] == 5
    assert r4["tlb_hit"] == 0                    # the 4-level walk is another context


def test_mode_based_execute():
    config = dict(mode_based_execute=True)
    space, eptp, _ = ept_case(HPA_4K | R | X | WB)                  # XU = 0
    sup, user = walk([req(eptp=eptp, gpa=GPA, access=FETCH), req(eptp=eptp, gpa=GPA, access=FETCH, user=1)],
                     space.mem, config=config)
    assert sup["outcome"] == Outcome.OK.value
    assert user["outcome"] == Outcome.VIOLATION.value and user["qualification"] == 0x4 | 0x8 | 0x20
    space, eptp, _ = ept_case(HPA_4K | R | 1 << 10 | WB, nonleaf=RWX | 1 << 10)
    user, = walk([req(eptp=eptp, gpa=GPA, access=FETCH, user=1)], space.mem, config=config)
    assert user["outcome"] == Outcome.OK.value
    space, eptp, _ = ept_case(HPA_4K | 1 << 10 | WB, nonleaf=RWX | 1 << 10)   # user-execute-only: present
    sup, = walk([req(eptp=eptp, gpa=GPA, access=FETCH)], space.mem, config=config)
    assert sup["outcome"] == Outcome.VIOLATION.value and sup["qualification"] == 0x4 | 0x40


# -- timing -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("latency, cycles", [(0, 13), (1, 17), (3, 25)])
def test_cold_walk_cycles(latency, cycles):
    space, eptp, _ = ept_case(HPA_4K | RWX | WB)
    space.map(eptp & FRAME, GPA + 0x1000, HPA_4K + 0x1000 | RWX | WB)
    cold, hit, pwc = walk([req(eptp=eptp, gpa=GPA), req(eptp=eptp, gpa=GPA), req(eptp=eptp, gpa=GPA + 0x1000)],
                          space.mem, latency=latency)
    # acceptance, lookup, cache selection and walk set-up (4 cycles); per level a read of
    # (latency + 1) cycles and a check cycle (the cycle acting on a non-leaf entry's check is the
    # first cycle of the next level's read); one cycle acting on the leaf's check (the result)
    assert cold["cycles"] == cycles == 4 + 4 * (latency + 1 + 1) + 1
    # a TLB hit: acceptance, lookup, selection (the result is registered from the selected entry)
    assert hit["cycles"] == 3 and hit["tlb_hit"] == 1
    # a paging-structure-cache hit on the page table: one level of the cold walk
    assert pwc["pwc_hits"] == 3 and pwc["cycles"] == 4 + (latency + 1 + 1) + 1


def test_context_switch_cycles():
    """The caches keep match bits for the context of the last request: a request of another
    context (EPTP, or for 2D requests VPID / CR3), while any entry is valid, first scans the
    entries (one per cycle) and looks up again."""
    space, roots = two_contexts()
    eptps = [root | EPTP_FLAGS for root in roots]
    # the selection state finds the match bits are for another context (1), the scan (8 entries
    # through a 3-stage pipeline: 10), a second lookup (1)
    scan = 1 + 8 + 2 + 1
    cold = 4 + 4 * 2 + 1
    a, b, a2, b2 = walk([req(eptp=eptps[0], gpa=GPA), req(eptp=eptps[1], gpa=GPA),
                         req(eptp=eptps[0], gpa=GPA), req(eptp=eptps[1], gpa=GPA)], space.mem)
    assert [r["cycles"] for r in (a, b, a2, b2)] == [cold, cold + scan, 3 + scan, 3 + scan]
    assert [r["tlb_hit"] for r in (a, b, a2, b2)] == [0, 0, 1, 1]


# -- caches and invalidation ------------------------------------------------------------------------------

def test_paging_structure_cache_cuts_references():
    space = Space()
    root = space.page()
    pages = [GPA + n * 0x1000 for n in range(3)] + [GPA + 0x20_0000, GPA + 0x4000_0000]
    for n, gpa in enumerate(pages):
        space.map(root, gpa, HPA_4K + n * 0x1000 | RWX | WB)
    results = walk([req(eptp=root | EPTP_FLAGS, gpa=g) for g in pages], space.mem)
    assert [r["refs"] for r in results] == [4, 1, 1, 2, 3]
    assert [r["pwc_hits"] for r in results] == [0, 3, 3, 2, 1]


def two_contexts():
    """Two EPT hierarchies mapping GPA, walked once each through a 2D request (vpid 5 and 6)."""
    space = Space()
    roots = [space.page(), space.page()]
    for root in roots:
        space.map(root, GPA, HPA_4K | RWX | WB)
    return space, roots


INVALIDATIONS = {
    # kind, eptp (root index), vpid, linear -> (first-context gpa walk hits TLB?, second?)
    "INVEPT single": (K.INVEPT_SINGLE_CONTEXT, 0, 0, 0, (False, True)),
    "INVEPT all": (K.INVEPT_ALL_CONTEXT, 0, 0, 0, (False, False)),
    "INVVPID address": (K.INVVPID_INDIVIDUAL_ADDRESS, 0, 5, GPA, (True, True)),
    "INVVPID single": (K.INVVPID_SINGLE_CONTEXT, 0, 5, 0, (True, True)),
    "INVVPID all": (K.INVVPID_ALL_CONTEXT, 0, 0, 0, (True, True)),
    "INVVPID retaining globals": (K.INVVPID_SINGLE_CONTEXT_RETAINING_GLOBALS, 0, 5, 0, (True, True)),
}


@pytest.mark.parametrize("name", INVALIDATIONS)
def test_guest_physical_flush(name):
    """INVEPT flushes guest-physical mappings of its context (or all); INVVPID never does."""
    kind, root_index, vpid, linear, expect = INVALIDATIONS[name]
    space, roots = two_contexts()
    eptps = [root | EPTP_FLAGS for root in roots]
    results = walk([req(eptp=eptps[0], gpa=GPA), req(eptp=eptps[1], gpa=GPA),
                    ("invalidate", dict(kind=kind, eptp=eptps[root_index], vpid=vpid, linear=linear)),
                    req(eptp=eptps[0], gpa=GPA), req(eptp=eptps[1], gpa=GPA)], space.mem)
    assert [bool(r["tlb_hit"]) for r in results[3:]] == list(expect)


# guest-linear mappings: a 2D space with pages L1 (vpid 5), L2 (vpid 5, global), L3 (vpid 6), L4 (vpid 0)
def guest_space():
    space = Space()
    root = space.page()
    identity_top = 0x40_0000_0000
    # EPT: identity map of the first 1 GiB with a 1 GiB leaf
    space.map(root, 0, 0 | 1 << 7 | RWX | WB, level=3)
    gspace = Space(space.mem, base=0x20_0000)            # guest tables in guest-physical = host-physical
    cr3 = gspace.page()
    pages = {}
    for n, (linear, glob) in enumerate([(0x7000_0000, 0), (0x7000_1000, 1), (0x7020_0000, 0)]):
        gspace.map(cr3, linear, (0x50_0000 + n * 0x1000) | 7 | (glob << 8), nonleaf=7)
        pages[linear] = 0x50_0000 + n * 0x1000
    return space, root | EPTP_FLAGS, cr3, pages


COMBINED = {
    # kind, vpid, linear -> still cached after: (L1 vpid5, L2 vpid5 global, L3 vpid6, L1 vpid0)
    "INVEPT single": (K.INVEPT_SINGLE_CONTEXT, 0, 0, (False, False, False, False)),
    "INVEPT all": (K.INVEPT_ALL_CONTEXT, 0, 0, (False, False, False, False)),
    "INVVPID address": (K.INVVPID_INDIVIDUAL_ADDRESS, 5, 0x7000_0000, (False, True, True, True)),
    "INVVPID single": (K.INVVPID_SINGLE_CONTEXT, 5, 0, (False, False, True, True)),
    "INVVPID all": (K.INVVPID_ALL_CONTEXT, 0, 0, (False, False, False, True)),
    "INVVPID retaining globals": (K.INVVPID_SINGLE_CONTEXT_RETAINING_GLOBALS, 5, 0, (False, True, True, True)),
}


@pytest.mark.parametrize("name", COMBINED)
def test_combined_flush(name):
    kind, vpid, linear, expect = COMBINED[name]
    space, eptp, cr3, _ = guest_space()
    targets = [(0x7000_0000, 5), (0x7000_1000, 5), (0x7020_0000, 6), (0x7000_0000, 0)]
    walks = [req(eptp=eptp, cr3=cr3, guest_paging=1, linear=lin, vpid=v) for lin, v in targets]
    results = walk(walks + walks + [("invalidate", dict(kind=kind, eptp=eptp, vpid=vpid, linear=linear))] + walks,
                   space.mem)
    assert [r["tlb_hit"] for r in results[4:8]] == [1, 1, 1, 1]
    assert [bool(r["tlb_hit"]) for r in results[9:]] == list(expect)


def test_guest_cr3_tags_combined_entries():
    space, eptp, cr3, pages = guest_space()
    other = Space(space.mem, base=0x30_0000)
    cr3b = other.page()
    other.map(cr3b, 0x7000_0000, 0x60_0000 | 7, nonleaf=7)
    a, b, a2 = walk([req(eptp=eptp, cr3=cr3, guest_paging=1, linear=0x7000_0123),
                     req(eptp=eptp, cr3=cr3b, guest_paging=1, linear=0x7000_0123),
                     req(eptp=eptp, cr3=cr3, guest_paging=1, linear=0x7000_0123)], space.mem)
    assert (a["hpa"], b["hpa"], a2["hpa"]) == (0x50_0123, 0x60_0123, 0x50_0123)
    assert a2["tlb_hit"] == 1 and b["tlb_hit"] == 0


# -- two-dimensional walks ---------------------------------------------------------------------------

def two_d_space(n_pages=1, *, guest_flags=7, ept_rights=RWX, eptp_flags=EPTP_FLAGS):
    """Guest tables and data all reached through 4 KiB EPT mappings (GPA g -> HPA g + 0x1_0000_0000)."""
    space = Space()
    eroot = space.page()
    shift = 0x1_0000_0000
    gpas = []

    def ept(gpa):
        slot = space.path(eroot, gpa)
        if not (len(slot) == 4 and slot[-1] in space.mem):
            space.map(eroot, gpa, ((gpa & ~0xFFF) + shift) | ept_rights | WB)

    gnext = [0x80_0000]

    def gpage():
        page, gnext[0] = gnext[0], gnext[0] + 0x1000
        ept(page)
        return page

    cr3 = gpage()
    linears = []
    for n in range(n_pages):
        linear = 0x40_0000_0000 + n * 0x1000
        table = cr3
        for level in (4, 3, 2):
            slot = table + idx(linear, level) * 8 + shift
            if slot not in space.mem:
                space.mem[slot] = gpage() | 7
            table = space.mem[slot] & FRAME
        data = 0x100_0000 + n * 0x1000
        ept(data)
        space.mem[table + idx(linear, 1) * 8 + shift] = data | guest_flags
        linears.append(linear)
    return space, eroot | eptp_flags, cr3, linears, shift


def test_cold_two_dimensional_walk_in_one_region():
    space, eptp, cr3, (linear,), shift = two_d_space()
    result, = walk([req(eptp=eptp, cr3=cr3, guest_paging=1, linear=linear | 0x123, access=WRITE)], space.mem)
    assert result["outcome"] == Outcome.OK.value
    assert result["hpa"] == 0x100_0123 + shift
    # guest tables and data share the EPT's upper levels: the paging-structure cache already helps
    # inside the cold walk; the 4 guest A/D writes are counted too
    test_cold_two_dimensional_walk_in_one_region.refs = result["refs"]
    assert result["refs"] < 24 + 4


def test_cold_two_dimensional_walk_reference_count_without_caches_hits():
    """With every guest table and the data in distinct 1 GiB regions, the EPT paging-structure cache
    cannot help inside the walk, and with A/D bits preset no writes: exactly 24 references."""
    space = Space()
    eroot = space.page()
    shift = 0x1_0000_0000
    regions = [(n + 1) << 39 for n in range(5)]          # distinct PML4 entries: no PWC sharing
    regions = [r & ((1 << 48) - 1) for r in regions]
    for gpa in regions:
        space.map(eroot, gpa, (0x100_0000 + len(space.mem) * 0x1000) | RWX | WB)
    hpa = {gpa: space.mem[space.path(eroot, gpa)[-1]] & FRAME for gpa in regions}
    linear = 0x1234_5678_9000
    for level, (table, nxt) in zip((4, 3, 2, 1), zip(regions, regions[1:])):
        space.mem[hpa[table] + idx(linear, level) * 8] = nxt | 7 | 1 << 5 | (1 << 6 if level == 1 else 0)
    result, = walk([req(eptp=eroot | EPTP_FLAGS, cr3=regions[0], guest_paging=1, linear=linear, access=WRITE)],
                   space.mem, config=dict(maxphyaddr=48))
    assert result["outcome"] == Outcome.OK.value and result["hpa"] == hpa[regions[4]]
    assert result["refs"] == 24 and result["pwc_hits"] == 0


def test_warm_two_dimensional_walks():
    """A fixed workload: 64 distinct 4 KiB pages in one guest page table, walked in order after
    one cold walk; the combined TLB misses (new pages), the paging-structure caches are hot."""
    space, eptp, cr3, linears, shift = two_d_space(65, guest_flags=7 | 1 << 5)
    results = walk([req(eptp=eptp, cr3=cr3, guest_paging=1, linear=lin) for lin in linears], space.mem)
    assert all(r["outcome"] == Outcome.OK.value and r["tlb_hit"] == 0 for r in results)
    warm = [r["refs"] for r in results[1:]]
    average = sum(warm) / len(warm)
    assert average <= 3
    test_warm_two_dimensional_walks.average = average


def test_guest_page_faults():
    space, eptp, cr3, (linear,), shift = two_d_space(guest_flags=1 | 1 << 5)   # present, read-only, supervisor
    results = walk([req(eptp=eptp, cr3=cr3, guest_paging=1, linear=linear, access=WRITE),
                    req(eptp=eptp, cr3=cr3, guest_paging=1, linear=linear, user=1),
                    req(eptp=eptp, cr3=cr3, guest_paging=1, linear=linear + 0x200000),
                    req(eptp=eptp, cr3=cr3, guest_paging=1, linear=linear | 0x10)], space.mem)
    assert [r["outcome"] for r in results] == [Outcome.GUEST_PAGE_FAULT.value] * 3 + [Outcome.OK.value]
    assert [r["error_code"] for r in results[:3]] == [0b011, 0b101, 0b000]
    assert results[0]["qualification"] == linear


def test_ept_violation_on_a_guest_table_has_bit_8_clear():
    space, eptp, cr3, (linear,), shift = two_d_space()
    # the guest page directory's page: not present in EPT
    pd_gpa = space.mem[(space.mem[cr3 + shift + idx(linear, 4) * 8] & FRAME) + shift + idx(linear, 3) * 8] & FRAME
    slot = space.path(eptp & FRAME, pd_gpa)[-1]
    space.mem[slot] &= ~7
    result, = walk([req(eptp=eptp, cr3=cr3, guest_paging=1, linear=linear, access=WRITE)], space.mem)
    assert result["outcome"] == Outcome.VIOLATION.value
    assert result["qualification"] == 0x1 | 0x80                     # read, GLA valid, bit 8 clear
    assert result["gpa"] == pd_gpa + idx(linear, 2) * 8
    # the final access: bit 8 set, advanced information from the guest's rights (U/S, R/W)
    space2, eptp2, cr3b, (linear2,), shift2 = two_d_space()
    data_slot = space2.path(eptp2 & FRAME, 0x100_0000)[-1]
    space2.mem[data_slot] &= ~W
    result, = walk([req(eptp=eptp2, cr3=cr3b, guest_paging=1, linear=linear2, access=WRITE)], space2.mem)
    assert result["qualification"] == 0x2 | 0x8 | 0x20 | 0x80 | 0x100 | 0b011 << 9
    assert result["gpa"] == 0x100_0000


def test_guest_accessed_dirty_updates():
    space, eptp, cr3, (linear,), shift = two_d_space()
    before = dict(space.mem)
    result, = walk([req(eptp=eptp, cr3=cr3, guest_paging=1, linear=linear, access=WRITE)], space.mem)
    changed = {a for a in space.mem if space.mem[a] != before.get(a)}
    assert len(changed) == 4                                          # A on 4 guest entries (D on the leaf)
    assert all(space.mem[a] & 1 << 5 for a in changed)
    # a read-only EPT mapping of a guest table with EPTP[6] = 0: the A update is a violation (R|W)
    space, eptp, cr3, (linear,), shift = two_d_space(ept_rights=R | X)
    result, = walk([req(eptp=eptp, cr3=cr3, guest_paging=1, linear=linear)], space.mem)
    assert result["outcome"] == Outcome.VIOLATION.value
    assert result["qualification"] == 0x3 | 0x8 | 0x20 | 0x80
    # with EPTP[6] = 1 every guest-table access is an EPT write
    space, eptp, cr3, (linear,), shift = two_d_space(ept_rights=R | X, eptp_flags=EPTP_FLAGS | AD)
    result, = walk([req(eptp=eptp, cr3=cr3, guest_paging=1, linear=linear)], space.mem)
    assert result["qualification"] == 0x3 | 0x8 | 0x20 | 0x80
    assert result["refs"] == 4 + 3                     # 4 reads, 3 non-leaf accessed flags, then the fault


# -- nested paging (AMD) -------------------------------------------------------------------------------

def npt_space(leaf_flags=0x7):
    space = Space()
    root = space.page()
    space.map(root, GPA, HPA_4K | leaf_flags, nonleaf=7)
    return space, root


@pytest.mark.parametrize("flags, access, info", [
    (0x0, READ, 0x4 | 1 << 32),                      # not present
    (0x5, WRITE, 0x1 | 0x2 | 0x4 | 1 << 32),         # read-only
    (0x3, READ, 0x1 | 0x4 | 1 << 32),                # supervisor page: nested accesses are user accesses
    (0x7 | 1 << 63, FETCH, 0x1 | 0x4 | 0x10 | 1 << 32),
    (0x7 | 1 << 45, READ, 0x1 | 0x4 | 0x8 | 1 << 32),  # reserved
    (0x7, READ, None),
])
def test_nested_page_faults(flags, access, info):
    space, root = npt_space(flags)
    result, = walk([req(eptp=root, gpa=GPA, access=access, npt=1)], space.mem)
    if info is None:
        assert result["outcome"] == Outcome.OK.value and result["hpa"] == HPA_4K | (GPA & 0xFFF)
        assert all(space.mem[a] & 1 << 5 for a in space.path(root, GPA))
    else:
        assert (result["outcome"], result["qualification"], result["gpa"]) == (Outcome.NPF.value, info, GPA)


def test_nested_fault_on_guest_table_sets_bit_33():
    space = Space()
    nroot = space.page()
    cr3 = 0x20_0000
    result, = walk([req(eptp=nroot, npt=1, cr3=cr3, guest_paging=1, linear=0x1000)], space.mem)
    assert result["outcome"] == Outcome.NPF.value
    assert result["qualification"] == 0x4 | 1 << 33 and result["gpa"] == cr3


# -- property tests against the reference walker ----------------------------------------------------

POOL = [0x10_0000 + n * 0x1000 for n in range(6)]
GUEST_POOL = [0x20_0000 + n * 0x1000 for n in range(6)]
# tables of one level each, none 2 MiB-aligned (a large page made from one is misaligned: misconfigured)
EPT_POOLS = {4: [0x7_0000_1000], 3: [0x7_0000_2000, 0x7_0000_3000], 2: [0x7_0000_4000, 0x7_0000_5000],
             1: [0x7_0000_6000, 0x7_0000_7000]}
EPT_PAGES = [page for pages in EPT_POOLS.values() for page in pages]


EPT_MUTATIONS = [
    lambda e, d: e & ~7,                      # not present
    lambda e, d: e & ~7 | 2,                  # write without read
    lambda e, d: e & ~7 | 6,
    lambda e, d: e & ~7 | 4,                  # execute-only
    lambda e, d: e & ~7 | 1,                  # read-only
    lambda e, d: e & ~7 | 5,
    lambda e, d: e | 1 << 7,                  # PML4E bit 7 / large page
    lambda e, d: e | 1 << 3,
    lambda e, d: e | 1 << 6,
    lambda e, d: e | 1 << 45,                 # bits 51:MAXPHYADDR
    lambda e, d: e & ~(7 << 3) | d(st.sampled_from([2, 3, 7, 0, 1, 4, 5])) << 3,
    lambda e, d: e | 1 << 12,                 # large-page misalignment
    lambda e, d: e | 1 << 10 | 1 << 60 | 1 << 63 | 1 << 8 | 1 << 9,
    lambda e, d: d(st.integers(0, (1 << 64) - 1)),
]
GUEST_MUTATIONS = [
    lambda e, d: e & ~1,                      # not present
    lambda e, d: e & ~2,                      # read-only
    lambda e, d: e & ~4,                      # supervisor
    lambda e, d: e | 1 << 63,                 # execute-disable
    lambda e, d: e | 1 << 7,                  # PS (reserved in a PML4E)
    lambda e, d: e | 1 << 45,                 # reserved
    lambda e, d: e | 1 << 13,                 # large-page misalignment
    lambda e, d: e | 1 << 5 | 1 << 6 | 1 << 8,
    lambda e, d: d(st.integers(0, (1 << 64) - 1)),
]


def address(draw):
    """An address whose table indices are all small, so that walks share entries."""
    value = draw(st.integers(0, 0xFFF))
    for level in range(1, 5):
        value |= draw(st.integers(0, 3)) << (12 + 9 * (level - 1))
    return value


@st.composite
def scenarios(draw, separate):
    """Memory with EPT (or nested) and guest tables built along the requests' paths, then mutated at
    a random rate (every misconfiguration / reserved / permission case, junk words, tables that
    point at themselves or at other levels' tables), and the requests.

    ``separate``: EPT tables of each level live in their own pages and map only guest-table/data
    pages, and no junk words: so no A/D write lands on an entry another walk reads at another level
    or in another format (as real software keeps them; otherwise a cached entry may legitimately go
    stale). Without it, tables alias freely and the
    requests are one-dimensional (their A/D writes only touch bits every level reads the same way).
    """
    npt = draw(st.booleans())
    rate = draw(st.sampled_from([0.0, 0.08, 0.25]))
    ept_pages = EPT_PAGES if separate else POOL + GUEST_POOL
    memory = {}

    def mutate(entry, mutations):
        if rate and draw(st.floats(0, 1)) < rate:
            entry = draw(st.sampled_from(mutations))(entry, draw)
        return entry

    def ept_leaf(gpa, level, identity):
        shift = 12 + 9 * (level - 1)
        frame = (gpa if identity else draw(st.sampled_from(GUEST_POOL + [0x40_0000, 0x7F_F000]))) & ~((1 << shift) - 1)
        if npt:
            flags = [7] * 8 + [5] if identity else [7, 7, 7, 5, 3, 7 | 1 << 63]
            return frame | draw(st.sampled_from(flags)) | (1 << 7 if level > 1 else 0)
        rights = draw(st.sampled_from([7] * 8 + [5] if identity else [7, 7, 7, 3, 1, 5, 7 | 1 << 10]))
        return frame | rights | draw(st.sampled_from([6, 6, 0, 4])) << 3 | (1 << 7 if level > 1 else 0)

    def build_ept(root, gpa, identity=False):
        table = root
        for level in range(4, 0, -1):
            slot = table + idx(gpa, level) * 8
            if slot not in memory:
                large = level in (2, 3) and draw(st.integers(0, 6)) == 0
                if separate and level == 3:
                    large = False
                if level == 1 or large:
                    entry = ept_leaf(gpa, level, identity)
                else:
                    entry = draw(st.sampled_from(EPT_POOLS[level - 1] if separate else ept_pages)) | 7
                memory[slot] = mutate(entry, EPT_MUTATIONS[:-1] if separate else EPT_MUTATIONS)
            entry = memory[slot]
            if level == 1 or (level in (2, 3) and entry >> 7 & 1):
                return
            table = entry & FRAME
            if table not in ept_pages and separate:
                return

    def build_guest(root, cr3, linear):
        table = cr3
        for level in range(4, 0, -1):
            slot = table + idx(linear, level) * 8
            build_ept(root, slot, identity=True)
            if slot not in memory:
                large = level == 2 and draw(st.integers(0, 5)) == 0
                flags = draw(st.sampled_from([7, 7, 7, 7, 5, 3, 7 | 1 << 5]))
                if level == 1 or large:
                    frame = draw(st.sampled_from(GUEST_POOL + [0x60_0000, 0x61_0000])) & ~(0x1F_FFFF if large else 0xFFF)
                    entry = frame | flags | (1 << 7 if large else 0)
                else:
                    entry = draw(st.sampled_from(GUEST_POOL)) | flags
                memory[slot] = mutate(entry, GUEST_MUTATIONS[:-1] if separate else GUEST_MUTATIONS)
            entry = memory[slot]
            if not entry & 1 or level == 1 or (level == 2 and entry >> 7 & 1):
                return entry
            table = entry & FRAME

    requests = []
    root = draw(st.sampled_from(EPT_POOLS[4] if separate else POOL))
    eptp = root | 6 | 3 << 3 | draw(st.sampled_from([0, AD, 1 << 7, AD | 1 << 7]))
    cr3 = draw(st.sampled_from(GUEST_POOL))
    for _ in range(draw(st.integers(1, 4))):
        if not separate:
            root = draw(st.sampled_from(POOL))
            eptp = root | 6 | 3 << 3 | draw(st.sampled_from([0, AD, 1 << 7]))
        two_d = draw(st.integers(0, 1)) if separate else 0
        gpa, linear = address(draw), address(draw)
        if two_d:
            leaf = build_guest(root, cr3, linear)
            if leaf is not None:
                build_ept(root, (leaf & FRAME) | (linear & 0xFFF))
                build_ept(root, (leaf & FRAME & ~0x1F_FFFF) | (linear & 0x1F_FFFF))
        else:
            build_ept(root, gpa)
        requests.append(req(
            eptp=eptp, gpa=gpa, access=draw(st.sampled_from([READ, WRITE, FETCH])),
            user=draw(st.integers(0, 1)), linear_valid=draw(st.integers(0, 1)), linear=linear,
            vpid=draw(st.sampled_from([0, 1])), paging_entry=draw(st.integers(0, 1)),
            linear_rights=draw(st.integers(0, 7)), cr3=cr3, guest_paging=two_d, npt=npt))
    return memory, requests


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenarios(separate=False), st.integers(0, 3), st.integers(0, 2**16))
def test_cold_walks_match_the_reference(scenario, latency, seed):
    """Each request on empty caches (a fresh reset), any aliasing between tables."""
    memory, requests = scenario
    for request in requests:
        before = dict(memory)
        result, = walk([request], memory, latency=latency, seed=seed, compare=False)
        check_against_model([result], [request], before, memory)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenarios(separate=True), st.integers(0, 3), st.integers(0, 2**16))
def test_cold_two_dimensional_walks_match_the_reference(scenario, latency, seed):
    memory, requests = scenario
    for request in requests:
        before = dict(memory)
        result, = walk([request], memory, latency=latency, seed=seed, compare=False)
        check_against_model([result], [request], before, memory)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenarios(separate=True), st.integers(0, 3), st.integers(0, 2**16),
       st.lists(st.tuples(st.integers(0, 3), st.sampled_from(list(K)), st.sampled_from(EPT_POOLS[4] + POOL),
                          st.integers(0, 1)), max_size=2))
def test_cached_walks_match_the_reference(scenario, latency, seed, invalidations):
    """Requests in sequence on one walker (caches warm, invalidations interleaved): the caches are
    transparent when only the walker itself writes memory."""
    memory, requests = scenario
    requests = requests + requests                       # repeat: hits in every cache
    ops = [("walk", r) for r in requests]
    for position, kind, root, vpid in invalidations:
        ops.insert(position, ("invalidate", dict(kind=kind, eptp=root, vpid=vpid, linear=0)))
    walk(ops, memory, latency=latency, seed=seed)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenarios(separate=False), st.integers(0, 2**16))
def test_five_level_and_mbec_configuration_matches_the_reference(scenario, seed):
    memory, requests = scenario
    config = dict(five_level=True, mode_based_execute=True, execute_only=False)
    for request in requests:
        if (request["gpa"] >> 13) & 1:            # half of the walks 5-level (PML5E from the pool)
            request = dict(request, eptp=request["eptp"] & ~(7 << 3) | 4 << 3)
            memory.setdefault(request["eptp"] & FRAME, POOL[1] | 7)
        before = dict(memory)
        result, = walk([request], memory, latency=2, seed=seed, config=config, compare=False)
        check_against_model([result], [request], before, memory, **config)
