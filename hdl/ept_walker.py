"""The EPT page walker: guest-physical to host-physical translation, translation caches and
two-dimensional (guest-linear) walks.

:class:`EPTWalker` implements the extended-page-table walk of Intel SDM vol. 3C §29.3 (EPT
translation, EPT misconfigurations and violations, the EPT-violation exit qualification, accessed
and dirty flags) and, per request, the nested-paging walk of AMD APM vol. 2 §15.25 (host-format
nested tables, #NPF with EXITINFO1/EXITINFO2). It sits on the same 64-bit Wishbone bus as the VMCS
unit (:class:`~hwvirt.hdl.bus.WishboneSignature`, word addresses) and reads 8-byte entries.

Walk (one request at a time)
----------------------------
* One-dimensional request (``guest_paging = 0``): translate ``gpa`` for ``access``.
* Two-dimensional request (``guest_paging = 1``): walk the guest's IA-32e 4-level tables from
  ``cr3`` for the guest-linear address ``linear``; every guest entry address is itself translated
  (an access to a guest paging structure: EPT read, or read+write when EPTP[6] = 1, qualification
  bit 8 = 0), then the final guest-physical address is translated for ``access`` (bit 8 = 1).
  Guest paging is modelled with CR0.WP = 1, EFER.NXE = 1, CR4.PGE = 1 and no SMEP/SMAP/PKE; a
  fault in the guest dimension is the outcome ``GUEST_PAGE_FAULT`` with the #PF error code.
* Per level: the entry is read, tested "not present" first (violation / #NPF P=0), then
  misconfigured (EPT misconfiguration) or reserved (#NPF P|RSVD); the permission check against
  the rights accumulated over all levels is made at the leaf (SDM §29.3.3).

Accessed/dirty flags, in bus order (EPTP[6] = 1, or always for nested paging; and for guest
entries in two-dimensional walks): a non-leaf entry without its accessed flag is written back
with it right after it has been checked, before the next level is read; the leaf is written once,
with accessed and (for a write) dirty, after the permission check passed. An entry whose flags
are already set is not written. Writes use the byte lane of the flags only (``sel``). A fault
leaves the leaf untouched. An A/D update of a guest entry whose page the EPT maps read-only is an
EPT violation with access bits R|W and qualification bit 8 = 0 (#NPF with W=1, bit 33).

Translation caches (tagged; never flushed by VM entries or exits)
------------------------------------------------------------------
* guest-physical TLB, ``tlb_entries`` entries: GPA page (4 KiB, 2 MiB or 1 GiB) → HPA, rights,
  memory type, tagged by the EPTP (EP4TA, EPTP[6], walk length, nested mode);
* EPT paging-structure cache, ``pwc_entries`` entries: the table at level *L* for the GPA bits
  above it, with the rights accumulated above it; a hit skips the upper levels;
* combined TLB, ``tlb_entries`` entries: guest-linear 4 KiB page → HPA, tagged by EPTP, VPID and
  CR3 (a global guest leaf matches any CR3);
* combined paging-structure cache, ``pwc_entries`` entries: guest table at level *L* (its GPA and
  HPA) for the linear bits above it, tagged like the combined TLB.

Every cache is fully associative with round-robin replacement. A hit is used only if it allows
the access (and, for a write, if no dirty flag would change); otherwise the request walks the
tables, which also refreshes the entry. INVEPT single-context removes every entry tagged with the
descriptor's EP4TA (EPTP[N-1:12]); INVEPT all-context removes everything; INVVPID (SDM vol. 3C
§31, INVVPID) removes combined entries only: individual-address removes that VPID's combined TLB
entries for the page and all its combined paging-structure entries; single-context every combined
entry of the VPID; all-context every combined entry of every VPID except 0; single-context-
retaining-globals the VPID's non-global combined entries. Guest-physical entries are never touched
by INVVPID. A new guest CR3 selects other combined entries (they are tagged by CR3).

Handshakes: ``req.ready`` and ``invalidate.ready`` are both 1 while idle and depend on no input.
An invalidation offered in the same cycle as a request takes effect first: that request's walk
does not use any cache.

Timing: every request finishes within :meth:`EPTWalker.cycle_bound` cycles whatever the tables
contain: the level counters only count down. A TLB hit answers in the cycle after the request is
accepted. A cold 4-level walk takes 4 × (latency + 1) bus cycles plus one check cycle per level
plus one cycle for the acceptance.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from .bus import WishboneSignature


__all__ = [
    "Access", "Outcome", "InvalidationKind", "WalkRequest", "WalkResult", "Invalidation",
    "EPTPointer", "EPTEntry", "PagingEntry", "EPTWalker",
]


class Access(enum.Enum, shape=2):
    """The kind of memory access being translated."""
    READ = 0
    WRITE = 1
    FETCH = 2


class Outcome(enum.Enum, shape=3):
    """How a walk ended: translated, EPT violation (exit 48), EPT misconfiguration (exit 49),
    a guest page fault (#PF, vector 14) or a nested page fault (#VMEXIT 0x400)."""
    OK = 0
    VIOLATION = 1
    MISCONFIG = 2
    GUEST_PAGE_FAULT = 3
    NPF = 4


class InvalidationKind(enum.Enum, shape=3):
    """INVEPT and INVVPID types. Bit 2 selects INVVPID; bits 1:0 are the instruction's type."""
    INVEPT_SINGLE_CONTEXT = 1
    INVEPT_ALL_CONTEXT = 2
    INVVPID_INDIVIDUAL_ADDRESS = 4
    INVVPID_SINGLE_CONTEXT = 5
    INVVPID_ALL_CONTEXT = 6
    INVVPID_SINGLE_CONTEXT_RETAINING_GLOBALS = 7


class EPTPointer(data.Struct):
    """EPTP, VMCS field 0x201A (SDM vol. 3C §25.6.11)."""
    memory_type: 3
    walk_length_minus_1: 3
    accessed_dirty: 1
    supervisor_shadow_stack: 1
    _reserved_8: 4
    address: 40
    _reserved_52: 12


class EPTEntry(data.Struct):
    """An EPT paging-structure entry (SDM vol. 3C §29.3.2), every level's bits by name."""
    read: 1
    write: 1
    execute: 1
    memory_type: 3
    ignore_pat: 1
    page_size: 1
    accessed: 1
    dirty: 1
    user_execute: 1
    _ignored_11: 1
    address: 40
    _ignored_52: 5
    verify_guest_paging: 1
    paging_write: 1
    _ignored_59: 1
    supervisor_shadow_stack: 1
    sub_page_write: 1
    _ignored_62: 1
    suppress_ve: 1


class PagingEntry(data.Struct):
    """An IA-32e paging entry (guest tables, and nested tables in AMD's host format)."""
    present: 1
    writable: 1
    user: 1
    write_through: 1
    cache_disable: 1
    accessed: 1
    dirty: 1
    page_size: 1
    global_: 1
    _ignored_9: 3
    address: 40
    _ignored_52: 11
    execute_disable: 1


class WalkRequest(data.Struct):
    """A translation request.

    ``eptp`` is the EPTP (or nested CR3 when ``npt``). ``linear_rights`` gives, for a
    one-dimensional request with a valid guest-linear address, the guest paging rights of that
    address for the advanced exit information (bit 0 U/S, bit 1 R/W, bit 2 XD); ``user`` is, for a
    one-dimensional request, "the linear address is user-mode" (mode-based execute control), and
    for a two-dimensional request the guest's CPL = 3. ``gpa`` is ignored when ``guest_paging``.
    """
    eptp: 64
    gpa: 64
    access: Access
    user: 1
    linear_valid: 1
    linear: 64
    vpid: 16
    paging_entry: 1
    linear_rights: 3
    cr3: 64
    guest_paging: 1
    npt: 1


class WalkResult(data.Struct):
    """A translation result.

    ``qualification``: the EPT-violation exit qualification (SDM §29.3.3.2 / exit reason 48) for
    ``VIOLATION``, 0 for ``MISCONFIG``, EXITINFO1 for ``NPF`` (EXITINFO2 is ``gpa``), the faulting
    linear address for ``GUEST_PAGE_FAULT`` (with the #PF error code in ``error_code``).
    ``gpa`` is the guest-physical address the fault is about (or, for ``OK``, the one translated).
    ``refs`` counts bus transactions (reads and A/D writes); ``pwc_hits`` the levels skipped by the
    paging-structure caches (both dimensions).
    """
    outcome: Outcome
    hpa: 64
    memory_type: 3
    ignore_pat: 1
    qualification: 64
    gpa: 64
    linear: 64
    error_code: 32
    refs: 8
    tlb_hit: 1
    pwc_hits: 5


class Invalidation(data.Struct):
    """An INVEPT or INVVPID descriptor with its type."""
    kind: InvalidationKind
    eptp: 64
    vpid: 16
    linear: 64


class EPTWalker(wiring.Component):
    """The EPT / nested-paging walker with its translation caches (see the module docstring).

    Parameters
    ----------
    maxphyaddr : int
        Physical-address width N (32..52).
    tlb_entries, pwc_entries : int
        Entries of each TLB (guest-physical and combined) and of each paging-structure cache.
    five_level : bool
        Support 5-level EPT walks (EPTP[5:3] = 4).
    mode_based_execute : bool
        Mode-based execute control: bit 10 of EPT entries is user-mode execute.
    accessed_dirty : bool
        Support EPT accessed/dirty flags (EPTP[6]); when False, EPTP[6] is ignored.
    execute_only : bool
        Execute-only EPT entries are supported (IA32_VMX_EPT_VPID_CAP bit 0).
    advanced_info : bool
        Report qualification bits 9-11 (IA32_VMX_EPT_VPID_CAP bit 22).

    Members
    -------
    req : In(stream.Signature(WalkRequest))
    resp : Out(stream.Signature(WalkResult))
    invalidate : In(stream.Signature(Invalidation))
    bus : Out(WishboneSignature(addr_width=maxphyaddr - 3))
    """

    def __init__(self, *, maxphyaddr=39, tlb_entries=8, pwc_entries=8, five_level=False,
                 mode_based_execute=False, accessed_dirty=True, execute_only=True, advanced_info=True):
        if not isinstance(maxphyaddr, int) or not 32 <= maxphyaddr <= 52:
            raise ValueError(f"maxphyaddr must be an integer in 32..52, not {maxphyaddr!r}")
        for name, value in (("tlb_entries", tlb_entries), ("pwc_entries", pwc_entries)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        self.maxphyaddr = maxphyaddr
        self.tlb_entries = tlb_entries
        self.pwc_entries = pwc_entries
        self.five_level = bool(five_level)
        self.mode_based_execute = bool(mode_based_execute)
        self.accessed_dirty = bool(accessed_dirty)
        self.execute_only = bool(execute_only)
        self.advanced_info = bool(advanced_info)
        super().__init__({
            "req": In(stream.Signature(WalkRequest)),
            "resp": Out(stream.Signature(WalkResult)),
            "invalidate": In(stream.Signature(Invalidation)),
            "bus": Out(WishboneSignature(addr_width=maxphyaddr - 3)),
        })

    @staticmethod
    def max_transactions():
        """Bus transactions of the longest request: 4 guest levels × (5-level EPT walk with
        5 reads and 5 A/D writes, a guest read and a guest A/D write) plus the final EPT walk."""
        return 4 * (10 + 2) + 10

    @classmethod
    def cycle_bound(cls, latency):
        """Cycles from acceptance to response, at most, when every bus transaction is acknowledged
        after at most ``latency`` wait cycles."""
        # bus states: latency + 1 cycles each; other states: per EPT walk one lookup and up to
        # five checks, per guest level a set-up and a check cycle, plus acceptance.
        return cls.max_transactions() * (latency + 1) + 5 * (1 + 5) + 4 * 2 + 2

    def elaborate(self, platform):
        m = Module()
        N = self.maxphyaddr
        FW = N - 12                                     # frame-number width
        VW = 57 if self.five_level else 48              # guest-physical width indexed by a walk
        TW = VW - 12
        LW = 36                                         # linear page-number width (4-level guest)
        mbec = self.mode_based_execute
        P4 = 4 if mbec else 3                           # rights bits tracked: R, W, X (, XU)

        key_layout = data.StructLayout({"root": FW, "ad": 1, "five": 1, "npt": 1})
        gtlb_layout = data.StructLayout({
            "valid": 1, "key": key_layout, "tag": TW, "size": 2, "frame": FW, "perm": 4,
            "memory_type": 3, "ignore_pat": 1, "dirty": 1})
        epwc_layout = data.StructLayout({
            "valid": 1, "key": key_layout, "tag": TW, "level": 3, "base": FW, "perm": 4})
        ctlb_layout = data.StructLayout({
            "valid": 1, "key": key_layout, "vpid": 16, "cr3": FW, "global_": 1, "tag": LW,
            "gpa": FW, "frame": FW, "perm": 4, "guest": 3, "memory_type": 3, "ignore_pat": 1, "dirty": 1})
        gpwc_layout = data.StructLayout({
            "valid": 1, "key": key_layout, "vpid": 16, "cr3": FW, "tag": LW, "level": 2,
            "table_gpa": FW, "table_hpa": FW, "table_perm": 4, "guest": 3})

        def index(address, level):
            """The 9-bit table index of ``address`` at ``level`` (a Value, 1..5)."""
            out = Const(0, 9)
            for n in range(5 if self.five_level else 4, 0, -1):
                out = Mux(level == n, address[12 + 9 * (n - 1):21 + 9 * (n - 1)], out)
            return out

        def access_bits(access):
            return Cat(access == Access.READ, access == Access.WRITE, access == Access.FETCH)

        def effective(perm, user):
            """R, W and the execute right that applies (XU for user-mode addresses under MBEC)."""
            x = Mux(user, perm[3], perm[2]) if mbec else perm[2]
            return Cat(perm[0], perm[1], x)

        def allows(acc, perm, user):
            return (acc & ~effective(perm, user)) == 0

        # -- request, ports -------------------------------------------------------------------
        p = self.req.payload
        r = Signal(WalkRequest)
        res = Signal(WalkResult)
        refs = Signal(8)
        pwc_hits = Signal(5)
        tlb_hit = Signal()
        m.d.comb += [
            self.resp.payload.eq(res),
            self.resp.payload.refs.eq(refs),
            self.resp.payload.pwc_hits.eq(pwc_hits),
            self.resp.payload.tlb_hit.eq(tlb_hit),
        ]

        def key_of(req):
            five = ((req.eptp[3:6] == 4) & ~req.npt) if self.five_level else Const(0)
            ad = (req.eptp[6] & ~req.npt) if self.accessed_dirty else Const(0)
            return Cat(req.eptp[12:N], ad, five, req.npt), five

        p_key, p_five = key_of(p)
        r_key, r_five = key_of(r)
        p_keyv = data.View(key_layout, p_key)
        # a one-dimensional access to a guest paging structure is a write too when EPTP[6] = 1
        p_acc = Mux(~p.guest_paging & p.paging_entry & p_keyv.ad, 0b011, access_bits(p.access))
        p_gpa = Mux(p_five, p.gpa[:VW], p.gpa[:48]) if self.five_level else p.gpa[:48]
        r_keyv = data.View(key_layout, r_key)
        ad_enabled = r.npt | r_keyv.ad                  # A/D flags in this request's tables
        write = r.access == Access.WRITE
        fetch = r.access == Access.FETCH

        # -- walk registers ----------------------------------------------------------------------
        gl = Signal(3)              # guest level being walked; 0 = the final translation
        x_gpa = Signal(VW)          # address the EPT dimension is translating
        x_acc = Signal(3)           # access bits required (R, W, X)
        x_level = Signal(3)
        x_base = Signal(FW)
        x_perm = Signal(4)
        x_entry = Signal(64)
        x_eaddr = Signal(N)
        x_new = Signal(64)
        x_more = Signal()           # after an A/D write: read the next level (else: done)
        x_hpa = Signal(N)
        x_mt = Signal(3)
        x_ipat = Signal()
        x_dirty = Signal()
        g_base = Signal(FW)
        g_egpa = Signal(N)
        g_hpa = Signal(N)
        g_tperm = Signal(4)
        g_entry = Signal(64)
        g_new = Signal(64)
        g_u = Signal()
        g_w = Signal()
        g_nx = Signal()
        g_global = Signal()
        g_dirty = Signal()

        idle = Signal()
        # lookup inputs: the request payload while idle, the walk registers otherwise
        lk_key = Signal(key_layout)
        lk_gpa = Signal(VW)
        lk_acc = Signal(3)
        lk_user = Signal()
        m.d.comb += [
            lk_key.eq(Mux(idle, p_key, r_key)),
            lk_gpa.eq(Mux(idle, p_gpa, x_gpa)),
            lk_acc.eq(Mux(idle, p_acc, x_acc)),
            # "user-mode address" for mode-based execute control (EPT only)
            lk_user.eq(Mux(idle, p.user & ~p.npt, Mux(r.guest_paging, g_u, r.user) & ~r.npt)),
        ]
        lk_top = Mux(lk_key.five, 5, 4)

        # -- caches --------------------------------------------------------------------------------
        def make(layout, n, name):
            return [Signal(layout, name=f"{name}{i}") for i in range(n)]

        gtlb = make(gtlb_layout, self.tlb_entries, "gtlb")
        epwc = make(epwc_layout, self.pwc_entries, "epwc")
        ctlb = make(ctlb_layout, self.tlb_entries, "ctlb")
        gpwc = make(gpwc_layout, self.pwc_entries, "gpwc")
        gtlb_rr = Signal(range(self.tlb_entries))
        epwc_rr = Signal(range(self.pwc_entries))
        ctlb_rr = Signal(range(self.tlb_entries))
        gpwc_rr = Signal(range(self.pwc_entries))

        def select(entries, hits, layout):
            """(any hit, the lowest-numbered hitting entry)."""
            sel = Signal(layout)
            for e, h in reversed(list(zip(entries, hits))):
                with m.If(h):
                    m.d.comb += sel.eq(e)
            return Cat(*hits).any(), sel

        # guest-physical TLB
        lk_tag = lk_gpa[12:]
        gtlb_tag_hit = []
        gtlb_hit_v = []
        for i, e in enumerate(gtlb):
            tag = Mux(e.size == 0, e.tag == lk_tag,
                      Mux(e.size == 1, e.tag[9:] == lk_tag[9:], e.tag[18:] == lk_tag[18:]))
            t = Signal(name=f"gtlb{i}_tag_hit")
            h = Signal(name=f"gtlb{i}_hit")
            m.d.comb += [
                t.eq(e.valid & (e.key.as_value() == lk_key.as_value()) & tag),
                h.eq(t & allows(lk_acc, e.perm, lk_user) & (~lk_acc[1] | e.dirty)),
            ]
            gtlb_tag_hit.append(t)
            gtlb_hit_v.append(h)
        gtlb_any, gtlb_sel = select(gtlb, gtlb_hit_v, gtlb_layout)
        # a request accepted together with an invalidation sees the caches as flushed already
        use_caches = ~(idle & self.invalidate.valid)
        gtlb_hit = gtlb_any & use_caches
        gtlb_hpa = Cat(lk_gpa[:12], Mux(gtlb_sel.size == 0, gtlb_sel.frame,
                                       Mux(gtlb_sel.size == 1, Cat(lk_gpa[12:21], gtlb_sel.frame[9:]),
                                           Cat(lk_gpa[12:30], gtlb_sel.frame[18:]))))

        # EPT paging-structure cache: the deepest hit wins
        epwc_sel = Signal(epwc_layout)
        epwc_hit = Signal()
        for level in (4, 3, 2, 1) if self.five_level else (3, 2, 1):
            for e in epwc:
                with m.If(e.valid & (e.key.as_value() == lk_key.as_value()) & (e.level == level) & (e.level < lk_top)
                          & (e.tag[9 * level:] == lk_tag[9 * level:])):
                    m.d.comb += [epwc_sel.eq(e), epwc_hit.eq(use_caches)]

        # combined TLB and combined paging-structure cache (looked up only while idle)
        p_ltag = p.linear[12:48]
        ctlb_hit_v = []
        for i, e in enumerate(ctlb):
            h = Signal(name=f"ctlb{i}_hit")
            gu, gw, gnx = e.guest[0], e.guest[1], e.guest[2]
            m.d.comb += h.eq(
                e.valid & (e.key.as_value() == p_key) & (e.vpid == p.vpid) & (e.global_ | (e.cr3 == p.cr3[12:N]))
                & (e.tag == p_ltag)
                & (~p.user | gu) & ~((p.access == Access.WRITE) & ~gw) & ~((p.access == Access.FETCH) & gnx)
                & allows(p_acc, e.perm, gu & ~p.npt) & ((p.access != Access.WRITE) | e.dirty))
            ctlb_hit_v.append(h)
        ctlb_any, ctlb_sel = select(ctlb, ctlb_hit_v, ctlb_layout)
        ctlb_hit = ctlb_any & use_caches

        gpwc_sel = Signal(gpwc_layout)
        gpwc_hit = Signal()
        for level in (3, 2, 1):
            for e in gpwc:
                with m.If(e.valid & (e.key.as_value() == p_key) & (e.vpid == p.vpid) & (e.cr3 == p.cr3[12:N])
                          & (e.level == level) & (e.tag[9 * level:] == p_ltag[9 * level:])):
                    m.d.comb += [gpwc_sel.eq(e), gpwc_hit.eq(use_caches)]

        # fills (at most one per cache per cycle; never while idle)
        def filler(entries, rr, layout, slot_hint=None):
            en = Signal()
            value = Signal(layout)
            slot = Signal(range(len(entries)))
            m.d.comb += slot.eq(rr)
            if slot_hint is not None:
                for i, h in reversed(list(enumerate(slot_hint))):
                    with m.If(h):
                        m.d.comb += slot.eq(i)
            with m.If(en):
                for i, e in enumerate(entries):
                    with m.If(slot == i):
                        m.d.sync += e.eq(value)
                with m.If(slot == rr):
                    m.d.sync += rr.eq(Mux(rr == len(entries) - 1, 0, rr + 1))
            return en, value

        gtlb_fill, gtlb_new = filler(gtlb, gtlb_rr, gtlb_layout, gtlb_tag_hit)
        epwc_fill, epwc_new = filler(epwc, epwc_rr, epwc_layout)
        ctlb_fill, ctlb_new = filler(ctlb, ctlb_rr, ctlb_layout)
        gpwc_fill, gpwc_new = filler(gpwc, gpwc_rr, gpwc_layout)

        # -- invalidation --------------------------------------------------------------------------
        inv = self.invalidate.payload
        inv_root = inv.eptp[12:N]

        def invalidate():
            kind = inv.kind
            for e in gtlb + epwc:
                with m.If((kind == InvalidationKind.INVEPT_ALL_CONTEXT)
                          | ((kind == InvalidationKind.INVEPT_SINGLE_CONTEXT) & (e.key.root == inv_root))):
                    m.d.sync += e.valid.eq(0)
            for n, e in enumerate(ctlb + gpwc):
                vpid_match = e.vpid == inv.vpid
                flush = Mux(kind == InvalidationKind.INVEPT_ALL_CONTEXT, 1,
                        Mux(kind == InvalidationKind.INVEPT_SINGLE_CONTEXT, e.key.root == inv_root,
                        Mux(kind == InvalidationKind.INVVPID_SINGLE_CONTEXT, vpid_match,
                        Mux(kind == InvalidationKind.INVVPID_ALL_CONTEXT, e.vpid != 0, 0))))
                if n < len(ctlb):
                    flush = flush | ((kind == InvalidationKind.INVVPID_INDIVIDUAL_ADDRESS) & vpid_match
                                     & (e.tag == inv.linear[12:48]))
                    flush = flush | ((kind == InvalidationKind.INVVPID_SINGLE_CONTEXT_RETAINING_GLOBALS)
                                     & vpid_match & ~e.global_)
                else:
                    flush = flush | (((kind == InvalidationKind.INVVPID_INDIVIDUAL_ADDRESS)
                                      | (kind == InvalidationKind.INVVPID_SINGLE_CONTEXT_RETAINING_GLOBALS))
                                     & vpid_match)
                with m.If(flush):
                    m.d.sync += e.valid.eq(0)

        # -- result helpers --------------------------------------------------------------------
        lin_valid = Mux(r.guest_paging, 1, r.linear_valid)
        adv = Mux(r.guest_paging, Cat(g_u, g_w, g_nx), r.linear_rights)

        def ept_qualification(acc, perm, final, sss):
            f = lin_valid & final
            return Cat(acc[:3], perm[:3], perm[3] if mbec else Const(0), lin_valid, f,
                       Mux(f, adv, 0) if self.advanced_info else Const(0, 3), Const(0, 2), sss)

        def npf_info(present, wr, rsvd, fx, final):
            present, rsvd = Const(present, 1), Const(rsvd, 1)
            return Cat(present, wr, Const(1), rsvd, fx, Const(0, 27), final, ~final)

        def fault(*, acc, perm, final, gpa, present, rsvd=0, sss=0, misconfig=None):
            """End the walk with a violation / misconfiguration / #NPF."""
            outcome = Mux(r.npt, Outcome.NPF, Outcome.VIOLATION)
            if misconfig is not None:
                outcome = Mux(r.npt, Outcome.NPF, Mux(misconfig, Outcome.MISCONFIG, Outcome.VIOLATION))
            qual = Mux(r.npt, npf_info(present, acc[1], rsvd, acc[2], final),
                       ept_qualification(acc, perm, final, sss))
            if misconfig is not None:
                qual = Mux(misconfig & ~r.npt, 0, qual)
            m.d.sync += [
                res.outcome.eq(outcome),
                res.qualification.eq(qual),
                res.gpa.eq(gpa),
                res.hpa.eq(0), res.memory_type.eq(0), res.ignore_pat.eq(0), res.error_code.eq(0),
            ]
            m.next = "Respond"

        def page_fault(present, rsvd=0):
            m.d.sync += [
                res.outcome.eq(Outcome.GUEST_PAGE_FAULT),
                res.error_code.eq(Cat(present, write, r.user, rsvd, fetch)),
                res.qualification.eq(r.linear),
                res.gpa.eq(0), res.hpa.eq(0), res.memory_type.eq(0), res.ignore_pat.eq(0),
            ]
            m.next = "Respond"

        x_final = (gl == 0) & (r.guest_paging | ~r.paging_entry)

        def finish(hpa, perm, mt, ipat, dirty):
            """The EPT dimension translated ``x_gpa``: answer, or go on with the guest walk."""
            with m.If(gl == 0):
                m.d.sync += [
                    res.outcome.eq(Outcome.OK), res.hpa.eq(hpa), res.memory_type.eq(mt),
                    res.ignore_pat.eq(ipat), res.qualification.eq(0), res.gpa.eq(x_gpa),
                    res.error_code.eq(0),
                ]
                with m.If(r.guest_paging):
                    m.d.comb += [
                        ctlb_fill.eq(1),
                        ctlb_new.valid.eq(1), ctlb_new.key.eq(r_key), ctlb_new.vpid.eq(r.vpid),
                        ctlb_new.cr3.eq(r.cr3[12:N]), ctlb_new.global_.eq(g_global),
                        ctlb_new.tag.eq(r.linear[12:48]), ctlb_new.frame.eq(hpa[12:N]),
                        ctlb_new.gpa.eq(x_gpa[12:N]),
                        ctlb_new.perm.eq(perm), ctlb_new.guest.eq(Cat(g_u, g_w, g_nx)),
                        ctlb_new.memory_type.eq(mt), ctlb_new.ignore_pat.eq(ipat),
                        ctlb_new.dirty.eq(dirty & g_dirty),
                    ]
                m.next = "Respond"
            with m.Else():
                m.d.sync += [g_hpa.eq(hpa), g_tperm.eq(perm)]
                with m.If(gl != 4):
                    m.d.comb += [
                        gpwc_fill.eq(1),
                        gpwc_new.valid.eq(1), gpwc_new.key.eq(r_key), gpwc_new.vpid.eq(r.vpid),
                        gpwc_new.cr3.eq(r.cr3[12:N]), gpwc_new.tag.eq(r.linear[12:48]),
                        gpwc_new.level.eq(gl), gpwc_new.table_gpa.eq(g_base),
                        gpwc_new.table_hpa.eq(hpa[12:N]), gpwc_new.table_perm.eq(perm),
                        gpwc_new.guest.eq(Cat(g_u, g_w, g_nx)),
                    ]
                m.next = "Guest-Read"

        def start_ept_walk(hits_so_far):
            """Begin the EPT walk of ``lk_gpa`` at the deepest paging-structure-cache hit."""
            with m.If(epwc_hit):
                m.d.sync += [x_level.eq(epwc_sel.level), x_base.eq(epwc_sel.base), x_perm.eq(epwc_sel.perm),
                             pwc_hits.eq(hits_so_far + lk_top - epwc_sel.level)]
            with m.Else():
                m.d.sync += [x_level.eq(lk_top), x_base.eq(lk_key.root), x_perm.eq((1 << P4) - 1)]
            m.next = "EPT-Read"

        # -- bus defaults ----------------------------------------------------------------------
        bus = self.bus
        m.d.comb += bus.sel.eq(0xFF)

        # -- the sequencer ---------------------------------------------------------------------
        with m.FSM(name="walk"):
            with m.State("Idle"):
                m.d.comb += [
                    idle.eq(1),
                    self.invalidate.ready.eq(1),
                    self.req.ready.eq(1),
                ]
                with m.If(self.invalidate.valid):
                    invalidate()
                with m.If(self.req.valid):
                    m.d.sync += [
                        r.eq(p), r.gpa.eq(p_gpa), r.linear.eq(Mux(p.guest_paging, p.linear[:48], p.linear)),
                        refs.eq(0), pwc_hits.eq(0), tlb_hit.eq(0),
                        res.linear.eq(Mux(p.guest_paging, p.linear[:48], p.linear)),
                    ]
                    with m.If(p.guest_paging):
                        with m.If(ctlb_hit):
                            m.d.sync += [
                                tlb_hit.eq(1), res.outcome.eq(Outcome.OK),
                                res.hpa.eq(Cat(p.linear[:12], ctlb_sel.frame)),
                                res.memory_type.eq(ctlb_sel.memory_type), res.ignore_pat.eq(ctlb_sel.ignore_pat),
                                res.qualification.eq(0), res.error_code.eq(0),
                                res.gpa.eq(Cat(p.linear[:12], ctlb_sel.gpa)),
                            ]
                            m.next = "Respond"
                        with m.Elif(gpwc_hit):
                            level = gpwc_sel.level
                            idx = index(p.linear, level)
                            m.d.sync += [
                                gl.eq(level), g_base.eq(gpwc_sel.table_gpa),
                                g_egpa.eq(Cat(Const(0, 3), idx, gpwc_sel.table_gpa)),
                                g_hpa.eq(Cat(Const(0, 3), idx, gpwc_sel.table_hpa)),
                                g_tperm.eq(gpwc_sel.table_perm),
                                g_u.eq(gpwc_sel.guest[0]), g_w.eq(gpwc_sel.guest[1]), g_nx.eq(gpwc_sel.guest[2]),
                                pwc_hits.eq(4 - level),
                            ]
                            m.next = "Guest-Read"
                        with m.Else():
                            m.d.sync += [gl.eq(4), g_base.eq(p.cr3[12:N]), g_u.eq(1), g_w.eq(1), g_nx.eq(0)]
                            m.next = "Guest-Translate"
                    with m.Else():
                        m.d.sync += [gl.eq(0), x_gpa.eq(p_gpa), x_acc.eq(p_acc)]
                        with m.If(gtlb_hit):
                            m.d.sync += [
                                tlb_hit.eq(1), res.outcome.eq(Outcome.OK), res.hpa.eq(gtlb_hpa),
                                res.memory_type.eq(gtlb_sel.memory_type), res.ignore_pat.eq(gtlb_sel.ignore_pat),
                                res.qualification.eq(0), res.error_code.eq(0), res.gpa.eq(p_gpa),
                            ]
                            m.next = "Respond"
                        with m.Else():
                            start_ept_walk(0)

            with m.State("Guest-Translate"):
                egpa = Cat(Const(0, 3), index(r.linear, gl), g_base)
                m.d.sync += [g_egpa.eq(egpa), x_gpa.eq(egpa),
                             x_acc.eq(Cat(Const(1), r_keyv.ad, Const(0)))]
                m.next = "EPT-Lookup"

            with m.State("EPT-Lookup"):
                with m.If(gtlb_hit):
                    finish(gtlb_hpa, gtlb_sel.perm, gtlb_sel.memory_type, gtlb_sel.ignore_pat, gtlb_sel.dirty)
                with m.Else():
                    start_ept_walk(pwc_hits)

            with m.State("EPT-Read"):
                eaddr = Cat(Const(0, 3), index(x_gpa, x_level), x_base)
                m.d.comb += [bus.cyc.eq(1), bus.stb.eq(1), bus.adr.eq(eaddr[3:])]
                with m.If(bus.ack):
                    m.d.sync += [x_entry.eq(bus.dat_r), x_eaddr.eq(eaddr), refs.eq(refs + 1)]
                    m.next = "EPT-Check"

            with m.State("EPT-Check"):
                e = x_entry
                ev = data.View(EPTEntry, e)
                pv = data.View(PagingEntry, e)
                lvl = x_level
                mid = (lvl == 2) | (lvl == 3)
                leaf = (lvl == 1) | (mid & e[7])
                high = e[N:52].any() if N < 52 else Const(0)
                # EPT format (SDM §29.3.2, misconfigurations §29.3.3.1)
                xu = ev.user_execute if mbec else Const(0)
                ept_present = e[0:3].any() | xu
                ept_perm = Cat(ev.read, ev.write, ev.execute, xu)
                mt = ev.memory_type
                misconfig = (
                    (~ev.read & ev.write)
                    | (Const(0) if self.execute_only else (~ev.read & ~ev.write))
                    | high
                    | ((lvl >= 4) & e[3:8].any())
                    | (mid & ~e[7] & e[3:7].any())
                    | ((lvl == 3) & e[7] & e[12:30].any())
                    | ((lvl == 2) & e[7] & e[12:21].any())
                    | (leaf & ((mt == 2) | (mt == 3) | (mt == 7)))
                )
                # nested paging, long-mode host format (APM §15.25.5): every access is a user access
                npt_perm = Cat(pv.user, pv.writable & pv.user, pv.user & ~pv.execute_disable, Const(0))
                npt_rsvd = (high | ((lvl >= 4) & e[7]) | ((lvl == 3) & e[7] & e[13:30].any())
                            | ((lvl == 2) & e[7] & e[13:21].any()))
                present = Mux(r.npt, pv.present, ept_present)
                perm = x_perm & Mux(r.npt, npt_perm, ept_perm)
                bad = Mux(r.npt, npt_rsvd, misconfig)
                a_set = Mux(r.npt, pv.accessed, ev.accessed)
                d_set = Mux(r.npt, pv.dirty, ev.dirty)
                a_bit = Mux(r.npt, 1 << 5, 1 << 8)
                d_bit = Mux(r.npt, 1 << 6, 1 << 9)
                frame = Mux(lvl == 3, Cat(x_gpa[12:30], e[30:N]),
                            Mux(lvl == 2, Cat(x_gpa[12:21], e[21:N]), e[12:N]))
                hpa = Cat(x_gpa[:12], frame)
                leaf_mt = Mux(r.npt, 0, mt)
                leaf_ipat = Mux(r.npt, 0, ev.ignore_pat)
                user_x = Mux(r.guest_paging, g_u, r.user) & ~r.npt
                dirty_after = ~ad_enabled | d_set | x_acc[1]
                with m.If(~present):
                    fault(acc=x_acc, perm=perm, final=x_final, gpa=x_gpa, present=0)
                with m.Elif(bad):
                    fault(acc=x_acc, perm=perm, final=x_final, gpa=x_gpa, present=1, rsvd=1, misconfig=1)
                with m.Elif(~leaf):
                    m.d.sync += [x_perm.eq(perm), x_base.eq(e[12:N]), x_level.eq(lvl - 1)]
                    m.d.comb += [
                        epwc_fill.eq(1), epwc_new.valid.eq(1), epwc_new.key.eq(r_key),
                        epwc_new.tag.eq(x_gpa[12:]), epwc_new.level.eq(lvl - 1), epwc_new.base.eq(e[12:N]),
                        epwc_new.perm.eq(perm),
                    ]
                    with m.If(ad_enabled & ~a_set):
                        m.d.sync += [x_new.eq(e | a_bit), x_more.eq(1)]
                        m.next = "EPT-Write"
                    with m.Else():
                        m.next = "EPT-Read"
                with m.Elif(~allows(x_acc, perm, user_x)):
                    fault(acc=x_acc, perm=perm, final=x_final, gpa=x_gpa, present=1,
                          sss=r.eptp[7] & ev.supervisor_shadow_stack & ~r.npt)
                with m.Else():
                    m.d.comb += [
                        gtlb_fill.eq(1), gtlb_new.valid.eq(1), gtlb_new.key.eq(r_key),
                        gtlb_new.tag.eq(x_gpa[12:]), gtlb_new.size.eq(lvl - 1), gtlb_new.frame.eq(frame),
                        gtlb_new.perm.eq(perm), gtlb_new.memory_type.eq(leaf_mt),
                        gtlb_new.ignore_pat.eq(leaf_ipat), gtlb_new.dirty.eq(dirty_after),
                    ]
                    with m.If(ad_enabled & (~a_set | (x_acc[1] & ~d_set))):
                        m.d.sync += [
                            x_new.eq(e | a_bit | Mux(x_acc[1], d_bit, 0)), x_more.eq(0),
                            x_hpa.eq(hpa), x_perm.eq(perm), x_mt.eq(leaf_mt), x_ipat.eq(leaf_ipat),
                            x_dirty.eq(dirty_after),
                        ]
                        m.next = "EPT-Write"
                    with m.Else():
                        finish(hpa, perm, leaf_mt, leaf_ipat, dirty_after)

            with m.State("EPT-Write"):
                m.d.comb += [bus.cyc.eq(1), bus.stb.eq(1), bus.we.eq(1), bus.adr.eq(x_eaddr[3:]),
                             bus.dat_w.eq(x_new), bus.sel.eq(Mux(r.npt, 0x01, 0x02))]
                with m.If(bus.ack):
                    m.d.sync += refs.eq(refs + 1)
                    with m.If(x_more):
                        m.next = "EPT-Read"
                    with m.Else():
                        finish(x_hpa, x_perm, x_mt, x_ipat, x_dirty)

            with m.State("Guest-Read"):
                m.d.comb += [bus.cyc.eq(1), bus.stb.eq(1), bus.adr.eq(g_hpa[3:])]
                with m.If(bus.ack):
                    m.d.sync += [g_entry.eq(bus.dat_r), refs.eq(refs + 1)]
                    m.next = "Guest-Check"

            with m.State("Guest-Check"):
                e = g_entry
                pv = data.View(PagingEntry, e)
                lvl = gl
                mid = (lvl == 2) | (lvl == 3)
                leaf = (lvl == 1) | (mid & pv.page_size)
                high = e[N:52].any() if N < 52 else Const(0)
                rsvd = (high | ((lvl == 4) & e[7]) | ((lvl == 3) & e[7] & e[13:30].any())
                        | ((lvl == 2) & e[7] & e[13:21].any()))
                nu = g_u & pv.user
                nw = g_w & pv.writable
                nnx = g_nx | pv.execute_disable
                gpa = Mux(lvl == 3, Cat(r.linear[:30], e[30:N]),
                          Mux(lvl == 2, Cat(r.linear[:21], e[21:N]), Cat(r.linear[:12], e[12:N])))

                def table_write(value):
                    """An A/D update of the guest entry: a write to its page."""
                    with m.If(~g_tperm[1]):
                        fault(acc=Const(0b011, 3), perm=g_tperm, final=Const(0), gpa=g_egpa, present=1)
                    with m.Else():
                        m.d.sync += g_new.eq(value)
                        m.next = "Guest-Write"

                with m.If(~pv.present):
                    page_fault(0)
                with m.Elif(rsvd):
                    page_fault(1, 1)
                with m.Elif(~leaf):
                    m.d.sync += [g_u.eq(nu), g_w.eq(nw), g_nx.eq(nnx), g_base.eq(e[12:N]), gl.eq(lvl - 1)]
                    with m.If(~pv.accessed):
                        table_write(e | (1 << 5))
                    with m.Else():
                        m.next = "Guest-Translate"
                with m.Elif((r.user & ~nu) | (write & ~nw) | (fetch & nnx)):
                    page_fault(1)
                with m.Else():
                    m.d.sync += [
                        g_u.eq(nu), g_w.eq(nw), g_nx.eq(nnx), g_global.eq(pv.global_),
                        g_dirty.eq(pv.dirty | write),
                        gl.eq(0), x_gpa.eq(gpa), x_acc.eq(access_bits(r.access)),
                    ]
                    with m.If(~pv.accessed | (write & ~pv.dirty)):
                        table_write(e | (1 << 5) | Mux(write, 1 << 6, 0))
                    with m.Else():
                        m.next = "EPT-Lookup"

            with m.State("Guest-Write"):
                m.d.comb += [bus.cyc.eq(1), bus.stb.eq(1), bus.we.eq(1), bus.adr.eq(g_hpa[3:]),
                             bus.dat_w.eq(g_new), bus.sel.eq(0x01)]
                with m.If(bus.ack):
                    m.d.sync += refs.eq(refs + 1)
                    with m.If(gl == 0):
                        m.next = "EPT-Lookup"
                    with m.Else():
                        m.next = "Guest-Translate"

            with m.State("Respond"):
                m.d.comb += self.resp.valid.eq(1)
                with m.If(self.resp.ready):
                    m.next = "Idle"

        return m
