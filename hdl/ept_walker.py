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
does not use any cache. An accepted invalidation keeps the walker busy for one cycle (INVEPT
all-context) or for one cycle plus a scan of the entries (``max(tlb_entries, pwc_entries) + 2``
cycles; the other types), before the request accepted with it, if any, is looked up.

Implementation: the caches compare, per entry, the page tag and rights held in flip-flops, with
match bits standing for "this entry's context (EPTP key; VPID, CR3) is the current one"; contexts
and the selected entry's data live in LUT RAM. A request of another context than the last one
(for a one-dimensional request: another EPTP key) rescans the entries' contexts first when any
entry is valid. Entries, replacement and the choice among several hits are those of a plain
fully associative cache: a request gets the same results (``tlb_hit``, ``refs`` and ``pwc_hits``
included) whatever the timing.

Timing: every request finishes within :meth:`EPTWalker.cycle_bound` cycles whatever the tables
contain: the level counters only count down. Every path from a register to a register is short
(the request and the invalidation are registered before any lookup; lookups are registered hit
vectors; each entry is checked in one cycle and acted on in the next). Cycles from acceptance to
the response, with bus latency L (wait cycles per transaction):

* TLB hit (guest-physical or combined): 3 (acceptance, lookup, selection); 4 when several entries
  hit (the lowest-numbered one is read in a second cycle);
* cold 4-level EPT walk without flag writes: 4 × (L + 2) + 5 (acceptance, lookup, selection and
  set-up, per level a read and a check, the action on the leaf) — 13 at L = 0;
* a walk starting from a paging-structure-cache hit at level k: k × (L + 2) + 5;
* an accessed/dirty flag write: its transaction, plus one cycle (non-leaf: the next read no longer
  starts in the cycle acting on the check; leaf: a cycle to finish);
* a new context, while any entry is valid: ``max(tlb_entries, pwc_entries) + 4`` more (a
  selection that gives up, the scan, a second lookup).
"""

from contextlib import contextmanager

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.memory import Memory
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
    def cycle_bound(cls, latency, entries=8):
        """Cycles from acceptance to response, at most, when every bus transaction is acknowledged
        after at most ``latency`` wait cycles; ``entries`` is the larger of ``tlb_entries`` and
        ``pwc_entries``."""
        # Bus states: latency + 1 cycles per transaction. Other cycles:
        # * acceptance, then a lookup; for a new context (or after an invalidation offered with the
        #   request) a selection that gives up, a scan of entries + 2 cycles and a second lookup:
        #   6 + entries;
        # * 2D: the combined-cache selection, and (a paging-structure-cache hit) its read: 2;
        # * per EPT walk (5 at most): selection, then either the TLB's second read on several hits
        #   and the finish (2 more), or the walk set-up, a check and an act cycle per level (up
        #   to 5) and the finish after a flag write (12 more): 13;
        # * per guest level (4 at most): a check and an act cycle, and the second lookup stage of
        #   the next address when it is not overlapped with a flag write: 3.
        return cls.max_transactions() * (latency + 1) + (6 + entries) + 2 + 5 * 13 + 4 * 3

    def elaborate(self, platform):
        m = Module()
        N = self.maxphyaddr
        FW = N - 12                                     # frame-number width
        VW = 57 if self.five_level else 48              # guest-physical width indexed by a walk
        TW = VW - 12                                    # guest-physical TLB tag: GPA bits VW-1:12
        LW = 36                                         # linear page-number width (4-level guest)
        mbec = self.mode_based_execute
        P4 = 4 if mbec else 3                           # rights bits tracked: R, W, X (, XU)
        NT, NP = self.tlb_entries, self.pwc_entries
        EPT_LEVELS = (1, 2, 3, 4) if self.five_level else (1, 2, 3)   # levels an EPT PWC entry holds
        GUEST_LEVELS = (1, 2, 3)

        # Cache entries are split three ways. What a lookup compares lives in flip-flops (all
        # entries are compared at once), with the context (EPTP key; VPID and CR3 for combined
        # entries) reduced to match bits: "this entry's context is the current one" (``km``: key,
        # ``kvm``: key and VPID, ``cm``: CR3), kept for the context of the last request. The context
        # itself lives in a LUT RAM scanned an entry a cycle when a request brings another context
        # (the match bits are recomputed) and by an invalidation (entries are removed). What only
        # the selected entry supplies lives in another LUT RAM, read through the registered hit
        # vector. Paging-structure-cache tags omit the GPA / linear bits 20:12, which no level
        # compares.
        key_layout = data.StructLayout({"root": FW, "ad": 1, "five": 1, "npt": 1})
        gt_tag = data.StructLayout({
            "valid": 1, "km": 1, "tag": TW, "size": 2, "perm": 4, "dirty": 1})
        gt_dat = data.StructLayout({
            "frame": FW, "size": 2, "perm": 4, "memory_type": 3, "ignore_pat": 1, "dirty": 1})
        ep_tag = data.StructLayout({
            "valid": 1, "km": 1, "tag": TW - 9, "level": len(EPT_LEVELS)})   # level one-hot
        ep_dat = data.StructLayout({"base": FW, "perm": 4})
        ct_tag = data.StructLayout({
            "valid": 1, "kvm": 1, "cm": 1, "global_": 1, "tag": LW, "perm": 4, "guest": 3, "dirty": 1})
        ct_dat = data.StructLayout({"frame": FW, "gpa": FW, "memory_type": 3, "ignore_pat": 1})
        gp_tag = data.StructLayout({
            "valid": 1, "kvm": 1, "cm": 1, "tag": LW - 9, "level": len(GUEST_LEVELS)})
        gp_dat = data.StructLayout({"table_gpa": FW, "table_hpa": FW, "table_perm": 4, "guest": 3})
        key_ctx = data.StructLayout({"key": key_layout})
        full_ctx = data.StructLayout({"key": key_layout, "vpid": 16, "cr3": FW})

        def index(address, level, offset=0):
            """The 9-bit table index of ``address`` at ``level - offset`` (``level`` a Value)."""
            out = Const(0, 9)
            for n in range(5 if self.five_level else 4, 0, -1):
                out = Mux(level == n + offset, address[12 + 9 * (n - 1):21 + 9 * (n - 1)], out)
            return out

        def index_oh(address, level, offset=0):
            """The 9-bit table index of ``address`` at the level below one-hot ``level`` by ``offset``."""
            out = Const(0, 9)
            for n in range(1, (5 if self.five_level else 4) + 1):
                if n + offset < len(level):
                    out = out | Mux(level[n + offset], address[12 + 9 * (n - 1):21 + 9 * (n - 1)], 0)
            return out

        def onehot(value, width=6):
            return Cat(*[value == n for n in range(width)])

        def access_bits(access):
            return Cat(access == Access.READ, access == Access.WRITE, access == Access.FETCH)

        def effective(perm, user):
            """R, W and the execute right that applies (XU for user-mode addresses under MBEC)."""
            x = Mux(user, perm[3], perm[2]) if mbec else perm[2]
            return Cat(perm[0], perm[1], x)

        def allows(acc, perm, user):
            return (acc & ~effective(perm, user)) == 0

        def lowest_only(vec):
            """``vec`` with its lowest set bit only."""
            return Cat(*[vec[i] & ~vec[:i].any() if i else vec[0] for i in range(len(vec))])

        def lowest(vec):
            """Index of the lowest set bit of ``vec`` (0 if none)."""
            idx = Signal(range(len(vec)))
            for i in reversed(range(len(vec))):
                with m.If(vec[i]):
                    m.d.comb += idx.eq(i)
            return idx

        def or_index(vec):
            """The index of the set bit of a one-hot ``vec``: an OR of entries per index bit."""
            idx = Signal(range(len(vec)))
            for b in range(len(idx)):
                m.d.comb += idx[b].eq(Cat(*[vec[i] for i in range(len(vec)) if i >> b & 1]).any())
            return idx

        def several(vec):
            """More than one bit of ``vec`` set."""
            return Cat(Const(0), *[vec[i] & vec[:i].any() for i in range(1, len(vec))]).any()

        def highest(vec):
            idx = Signal(range(len(vec)))
            for i in range(len(vec)):
                with m.If(vec[i]):
                    m.d.comb += idx.eq(i)
            return idx

        def deepest(anys, tops):
            """Paging-structure-cache choice: the lowest level with a hit, and within it the
            highest-numbered entry (``anys``, ``tops``: per level, any hit and the highest-numbered
            hit). Returns (any, level, index)."""
            index = Signal(len(next(iter(tops.values()))))
            level = Signal(3)
            for k in sorted(anys, reverse=True):
                with m.If(anys[k]):
                    m.d.comb += [index.eq(tops[k]), level.eq(k)]
            return Cat(*anys.values()).any(), level, index

        # -- request, ports -------------------------------------------------------------------
        p = self.req.payload
        r = Signal(WalkRequest)
        r_key = Signal(key_layout)
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
        p_keyv = data.View(key_layout, p_key)
        # a one-dimensional access to a guest paging structure is a write too when EPTP[6] = 1
        p_acc = Mux(~p.guest_paging & p.paging_entry & p_keyv.ad, 0b011, access_bits(p.access))
        p_gpa = Mux(p_five, p.gpa[:VW], p.gpa[:48]) if self.five_level else p.gpa[:48]
        p_linear = Mux(p.guest_paging, p.linear[:48], p.linear)
        ad_enabled = r.npt | r_key.ad                   # A/D flags in this request's tables
        write = r.access == Access.WRITE
        fetch = r.access == Access.FETCH
        top = Mux(r_key.five, 5, 4)

        # -- walk registers ----------------------------------------------------------------------
        gl = Signal(3)              # guest level being walked; 0 = the final translation
        x_gpa = Signal(VW)          # address the EPT dimension is translating
        x_acc = Signal(3)           # access bits required (R, W, X)
        x_level = Signal(6)         # the EPT level being walked, one-hot (bit n: level n)
        x_base = Signal(FW)
        x_perm = Signal(4)          # rights accumulated (after a check: including that entry)
        x_eaddr = Signal(N - 3)     # word address of the EPT entry being checked
        x_hpa = Signal(N)           # the translation, once a leaf has been checked (or a TLB hit)
        x_mt = Signal(3)
        x_ipat = Signal()
        x_dirty = Signal()
        entry = Signal(64)          # the entry read last (EPT or guest)
        wdat = Signal(64)           # the entry with its A/D flags set, for a flag write
        b_adr = Signal(N - 3)       # the bus address, always set a cycle ahead
        g_base = Signal(FW)
        g_egpa = Signal(N)          # guest-physical address of the guest entry being walked
        g_tperm = Signal(4)
        g_u = Signal()
        g_w = Signal()
        g_nx = Signal()
        g_global = Signal()
        g_dirty = Signal()
        skip = Signal()             # an invalidation came with the request: its first lookup misses
        # The guest-physical caches' comparators have their own copies of x_gpa (one inverted, one
        # without reset and with another initial value, so that synthesis keeps the copies apart):
        # that keeps the comparators of a cache together, near their operand.
        gt_op_n = Signal(TW, reset_less=True)                           # ~x_gpa[12:]
        ep_op = Signal(TW - 9, reset_less=True, init=(1 << (TW - 9)) - 1)   # x_gpa[21:]
        gt_op = ~gt_op_n

        we_xg = Signal(init=1)      # x_gpa is written (= in Idle or Guest-Check; a flip-flop of its own)
        xg_next = Signal(VW)        # what Guest-Check writes

        def set_x_gpa(value):
            m.d.comb += xg_next.eq(value)
        # an entry's check, registered for the following cycle (EPT or guest entry)
        c_np = Signal()             # not present
        c_bad = Signal()            # present, and misconfigured / reserved bits set
        c_leaf = Signal()
        c_deny = Signal()           # the leaf does not allow the access
        c_wr = Signal()             # accessed / dirty flags to be written
        c_cont = Signal()           # EPT: a non-leaf entry without a flag write: read the next one
        c_sss = Signal()            # EPT: the present leaf has supervisor-shadow-stack set, EPTP[7] = 1

        # The sequencer is one-hot: a flip-flop per state, so that no state decoding comes before
        # the wide enables it drives.
        STATES = ["Idle", "Invalidate", "Scan", "Lookup", "Combined-Select", "Combined-Start",
                  "EPT-Select", "EPT-Start", "EPT-Read", "EPT-Check", "EPT-Act", "EPT-Write",
                  "Finish", "Guest-Read", "Guest-Check", "Guest-Act", "EPT-Lookup", "Guest-Write", "Respond"]
        st = {name: Signal(init=int(name == "Idle"), name="st_" + name.lower().replace("-", "_"))
              for name in STATES}
        busy_gt = Signal()          # = ~st["Idle"] (a copy, for fan-out)

        # -- caches --------------------------------------------------------------------------------
        class Cache:
            def __init__(self, name, n, tag_layout, data_layout, ctx_layout):
                self.name = name
                self.n = n
                self.tags = [Signal(tag_layout, name=f"{name}{i}") for i in range(n)]
                self.mem = Memory(shape=data_layout, depth=n, init=[])
                m.submodules[f"{name}_data"] = self.mem
                self.rd = self.mem.read_port()              # registered: addressed a cycle ahead
                self.wr = self.mem.write_port()
                self.ctx = Memory(shape=ctx_layout, depth=n, init=[])
                m.submodules[f"{name}_ctx"] = self.ctx
                self.ctx_rd = self.ctx.read_port()          # registered: read while scanning
                self.ctx_wr = self.ctx.write_port()
                self.rr = Signal(range(n), name=f"{name}_rr")
                self.fill = Signal(name=f"{name}_fill")
                self.new = Signal(tag_layout, name=f"{name}_new")
                self.new_data = Signal(data_layout, name=f"{name}_new_data")
                self.slot = Signal(range(n), name=f"{name}_slot")
                self.slot_is_rr = Signal(name=f"{name}_slot_is_rr")

            def elaborate_fill(self):
                m.d.comb += [self.wr.addr.eq(self.slot), self.wr.data.eq(self.new_data),
                             self.wr.en.eq(self.fill),
                             self.ctx_wr.addr.eq(self.slot), self.ctx_wr.en.eq(self.fill),
                             self.ctx_wr.data.key.eq(r_key)]
                if len(self.ctx_wr.data.as_value()) > len(r_key.as_value()):
                    m.d.comb += [self.ctx_wr.data.vpid.eq(r.vpid), self.ctx_wr.data.cr3.eq(r.cr3[12:N])]
                with m.If(self.fill):
                    for i, t in enumerate(self.tags):
                        with m.If(self.slot == i):
                            m.d.sync += t.eq(self.new)
                    with m.If(self.slot_is_rr):
                        m.d.sync += self.rr.eq(Mux(self.rr == self.n - 1, 0, self.rr + 1))

        gt = Cache("gtlb", NT, gt_tag, gt_dat, key_ctx)
        ep = Cache("epwc", NP, ep_tag, ep_dat, key_ctx)
        ct = Cache("ctlb", NT, ct_tag, ct_dat, full_ctx)
        gp = Cache("gpwc", NP, gp_tag, gp_dat, full_ctx)
        for c in (ep, ct, gp):
            m.d.comb += [c.slot.eq(c.rr), c.slot_is_rr.eq(1)]
        g_slot = Signal(range(NT))          # the guest-physical TLB slot the current EPT walk fills
        g_slot_rr = Signal()
        m.d.comb += [gt.slot.eq(g_slot), gt.slot_is_rr.eq(g_slot_rr)]
        for c in (gt, ep, ct, gp):
            c.elaborate_fill()

        any_valid = Cat(*[t.valid for c in (gt, ep, ct, gp) for t in c.tags]).any()

        # Lookups are a two-stage pipeline running every cycle. Stage 1 compares each entry's tag, 9
        # bits at a time, and checks its rights: on the request while idle (a request's lookup
        # starts in the cycle it is accepted), on the walk registers otherwise. Stage 2 combines
        # the registered pieces with the entries' valid and match bits. A selection state uses the
        # registered results of stage 2: it comes two cycles after the state that set the walk
        # registers, one cycle after the acceptance.
        # (The combined caches are looked up once per request: their stage 1 runs while idle and
        # holds its result. The guest-physical caches' stage 1 selects its operands with a state
        # flip-flop of its own, ``busy_gt`` = not idle, for the fan-out.)
        idle = st["Idle"]
        r_ltag = r.linear[12:48]
        p_xg = Signal(VW)                   # x_gpa as the acceptance sets it
        m.d.comb += p_xg.eq(Mux(p.guest_paging, Cat(Const(0, 3), p.linear[39:48], p.cr3[12:N]), p_gpa))
        # (at the acceptance only a 1D request's lookup matters: a 2D request looks up the
        # guest-physical caches two cycles later, on the walk registers)
        s1_gt = Mux(busy_gt, gt_op, p_gpa[12:])
        s1_ep = Mux(idle, p_gpa[21:], ep_op)
        s1_acc = Mux(busy_gt, x_acc, p_acc)
        s1_user = Mux(busy_gt, Mux(r.guest_paging, g_u, r.user) & ~r.npt, p.user & ~p.npt)

        def chunks(tag, op, name, en=Const(1)):
            """Registered 9-bit-chunk equalities of ``tag`` and ``op``."""
            out = Signal(-(-len(tag) // 9), name=name)
            with m.If(en):
                for j in range(len(out)):
                    m.d.sync += out[j].eq(tag[9 * j:9 * j + 9] == op[9 * j:9 * j + 9])
            return out

        # With several TLB hits, the selection state keeps only the lowest-numbered one (a mask
        # for one cycle) and the lookup's second stage runs again.
        gt_mask = Signal(NT, init=(1 << NT) - 1)
        ct_mask = Signal(NT, init=(1 << NT) - 1)
        m.d.sync += [gt_mask.eq((1 << NT) - 1), ct_mask.eq((1 << NT) - 1)]
        gt_th = Signal(NT)          # tag hits (the fill slot of a walk of this address)
        gt_hv = Signal(NT)          # hits that allow the access
        gt_h = Signal(NT)
        for i, t in enumerate(gt.tags):
            c = chunks(t.tag, s1_gt, f"gtlb{i}_chunks")
            ok = Signal(name=f"gtlb{i}_rights")
            m.d.sync += ok.eq(allows(s1_acc, t.perm, s1_user) & (~s1_acc[1] | t.dirty))
            tag_hit = t.valid & t.km & c[2:].all() & (c[1] | t.size[1]) & (c[0] | t.size.any())
            m.d.comb += gt_h[i].eq(tag_hit & ok & gt_mask[i])
            m.d.sync += gt_th[i].eq(tag_hit)
        gt_any = Signal()
        gt_several = Signal()
        m.d.sync += [gt_hv.eq(gt_h), gt_any.eq(gt_h.any()), gt_several.eq(several(gt_h))]

        # paging-structure caches: per level, whether any entry hits and the highest-numbered one
        def per_level(vectors, name):
            anys = {k: Signal(name=f"{name}_any_l{k}") for k in vectors}
            tops = {k: Signal(range(len(v)), name=f"{name}_top_l{k}") for k, v in vectors.items()}
            for k, v in vectors.items():
                m.d.sync += [anys[k].eq(v.any()), tops[k].eq(highest(v))]
            return anys, tops

        ep_hl = {k: Signal(NP, name=f"epwc_hit_l{k}") for k in EPT_LEVELS}
        for i, t in enumerate(ep.tags):
            c = chunks(t.tag, s1_ep, f"epwc{i}_chunks")
            base = t.valid & t.km
            for n, k in enumerate(EPT_LEVELS):
                hit = base & t.level[n] & c[k - 1:].all()
                if k == 4:
                    hit &= r_key.five                   # the entry's level is below the walk's top
                m.d.comb += ep_hl[k][i].eq(hit)
        ep_anys, ep_tops = per_level(ep_hl, "epwc")

        ct_hv = Signal(NT)
        ct_h = Signal(NT)
        for i, t in enumerate(ct.tags):
            c = chunks(t.tag, p.linear[12:48], f"ctlb{i}_chunks", en=idle)
            ok = Signal(name=f"ctlb{i}_rights")
            gu, gw, gnx = t.guest[0], t.guest[1], t.guest[2]
            p_write = p.access == Access.WRITE
            with m.If(idle):
                m.d.sync += ok.eq(
                    (~p.user | gu) & ~(p_write & ~gw) & ~((p.access == Access.FETCH) & gnx)
                    & allows(access_bits(p.access), t.perm, gu & ~p.npt) & (~p_write | t.dirty))
            m.d.comb += ct_h[i].eq(t.valid & t.kvm & (t.global_ | t.cm) & c.all() & ok & ct_mask[i])
        ct_any = Signal()
        ct_several = Signal()
        m.d.sync += [ct_hv.eq(ct_h), ct_any.eq(ct_h.any()), ct_several.eq(several(ct_h))]

        gp_hl = {k: Signal(NP, name=f"gpwc_hit_l{k}") for k in GUEST_LEVELS}
        for i, t in enumerate(gp.tags):
            c = chunks(t.tag, p.linear[21:48], f"gpwc{i}_chunks", en=idle)
            base = t.valid & t.kvm & t.cm
            for n, k in enumerate(GUEST_LEVELS):
                m.d.comb += gp_hl[k][i].eq(base & t.level[n] & c[k - 1:].all())
        gp_anys, gp_tops = per_level(gp_hl, "gpwc")

        # selections (in the cycle after a lookup): TLBs take the lowest-numbered hit, and read
        # its data right away; paging-structure caches take the deepest level's highest-numbered
        # hit, registered, and read it a cycle later
        # (a TLB's data is read at the index of its hit made by ORing the hit vector: right for a
        # single hit)
        gt_hit = gt_any & ~skip
        # (the data RAMs' reads are registered: addressed in the cycle before the selection)
        m.d.comb += gt.rd.addr.eq(or_index(gt_h))
        ct_hit = ct_any & ~skip
        m.d.comb += ct.rd.addr.eq(or_index(ct_h))
        ep_any, ep_lvl, ep_win = deepest(ep_anys, ep_tops)
        gp_any, gp_lvl, gp_win = deepest(gp_anys, gp_tops)
        ep_hit = Signal()
        ep_level = Signal(3)
        gp_level = Signal(3)
        # (the paging-structure caches' data is read in the selection state, for the state after)
        m.d.comb += [ep.rd.addr.eq(ep_win), gp.rd.addr.eq(gp_win)]
        th_any = gt_th.any()
        th_low = lowest(gt_th)

        # -- contexts and invalidation -----------------------------------------------------------
        # The match bits are kept for the context in cur_*; a request of another context (when any
        # entry is valid) first scans every entry's context. An invalidation (registered) removes
        # all entries at once (INVEPT all-context) or scans the entries' contexts.
        cur_key = Signal(key_layout)
        cur_vpid = Signal(16)
        cur_cr3 = Signal(FW)
        inv_r = Signal(Invalidation)
        inv_root = inv_r.eptp[12:N]
        kind = inv_r.kind
        NS = max(NT, NP)
        # The scan is a pipeline: entry ``scan``'s context is read (registered), compared in the
        # next cycle (registered), and the entry updated in the cycle after; NS + 2 cycles in all.
        scan = Signal(range(NS + 2))    # the entry whose context is read
        scanning = Signal()
        scan_cmp = Signal()             # compare the context read for entry scan_idx1
        scan_idx1 = Signal(range(NS + 2))
        scan_upd = Signal()             # update entry scan_idx2
        scan_idx2 = Signal(range(NS + 2))
        scan_inv = Signal()             # the scan applies the invalidation in inv_r
        m.d.sync += [scan_cmp.eq(scanning & (scan < NS)), scan_idx1.eq(scan),
                     scan_upd.eq(scan_cmp), scan_idx2.eq(scan_idx1)]
        req_pending = Signal()          # a request came with the invalidation
        for c in (gt, ep, ct, gp):
            m.d.comb += c.ctx_rd.addr.eq(scan)
        # INVVPID individual-address: the linear page of each combined TLB entry, compared at once
        # (in two registered steps: inv_r is loaded at the acceptance, the scan compares from its
        # second cycle on)
        ct_inv_tag = Signal(NT)
        for i, t in enumerate(ct.tags):
            c = chunks(t.tag, inv_r.linear[12:48], f"ctlb{i}_inv_chunks")
            m.d.sync += ct_inv_tag[i].eq(c.all())
        for c in (gt, ep):
            x = c.ctx_rd.data
            km_q = Signal(name=f"{c.name}_scan_km")
            flush_q = Signal(name=f"{c.name}_scan_flush")
            m.d.sync += [
                km_q.eq(x.key.as_value() == cur_key.as_value()),
                flush_q.eq(scan_inv & (kind == InvalidationKind.INVEPT_SINGLE_CONTEXT) & (x.key.root == inv_root)),
            ]
            with m.If(scan_upd):
                for i, t in enumerate(c.tags):
                    with m.If(scan_idx2 == i):
                        m.d.sync += t.km.eq(km_q)
                        with m.If(flush_q):
                            m.d.sync += t.valid.eq(0)
        for c in (ct, gp):
            x = c.ctx_rd.data
            kvm_q = Signal(name=f"{c.name}_scan_kvm")
            cm_q = Signal(name=f"{c.name}_scan_cm")
            flush_q = Signal(name=f"{c.name}_scan_flush")
            vpid_match = x.vpid == inv_r.vpid
            flush = Mux(kind == InvalidationKind.INVEPT_SINGLE_CONTEXT, x.key.root == inv_root,
                    Mux(kind == InvalidationKind.INVVPID_SINGLE_CONTEXT, vpid_match,
                    Mux(kind == InvalidationKind.INVVPID_ALL_CONTEXT, x.vpid != 0, 0)))
            if c is ct:
                flush = flush | ((kind == InvalidationKind.INVVPID_INDIVIDUAL_ADDRESS) & vpid_match
                                 & ct_inv_tag.bit_select(scan_idx1, 1))
                flush = flush | ((kind == InvalidationKind.INVVPID_SINGLE_CONTEXT_RETAINING_GLOBALS)
                                 & vpid_match & ~Cat(*[t.global_ for t in ct.tags]).bit_select(scan_idx1, 1))
            else:
                flush = flush | (((kind == InvalidationKind.INVVPID_INDIVIDUAL_ADDRESS)
                                  | (kind == InvalidationKind.INVVPID_SINGLE_CONTEXT_RETAINING_GLOBALS))
                                 & vpid_match)
            m.d.sync += [
                kvm_q.eq((x.key.as_value() == cur_key.as_value()) & (x.vpid == cur_vpid)),
                cm_q.eq(x.cr3 == cur_cr3),
                flush_q.eq(scan_inv & flush),
            ]
            with m.If(scan_upd):
                for i, t in enumerate(c.tags):
                    with m.If(scan_idx2 == i):
                        m.d.sync += [t.kvm.eq(kvm_q), t.cm.eq(cm_q)]
                        with m.If(flush_q):
                            m.d.sync += t.valid.eq(0)

        # -- new entries (written when a state sets ``fill``; the values do not depend on it) ----
        m.d.comb += [
            # guest-physical TLB: the leaf just checked (EPT-Act)
            gt.new.valid.eq(1), gt.new.km.eq(1), gt.new.tag.eq(gt_op),
            gt.new.size.eq(Cat(x_level[2], x_level[3])), gt.new.perm.eq(x_perm), gt.new.dirty.eq(x_dirty),
            gt.new_data.frame.eq(x_hpa[12:]), gt.new_data.size.eq(Cat(x_level[2], x_level[3])),
            gt.new_data.perm.eq(x_perm), gt.new_data.memory_type.eq(x_mt),
            gt.new_data.ignore_pat.eq(x_ipat), gt.new_data.dirty.eq(x_dirty),
            # EPT paging-structure cache: the table the non-leaf entry just checked points to
            ep.new.valid.eq(1), ep.new.km.eq(1), ep.new.tag.eq(ep_op),
            ep.new.level.eq(Cat(*[x_level[k + 1] for k in EPT_LEVELS])),
            ep.new_data.base.eq(entry[12:N]), ep.new_data.perm.eq(x_perm),
            # combined TLB: the final translation of a 2D request (finish, gl = 0)
            ct.new.valid.eq(1), ct.new.kvm.eq(1), ct.new.cm.eq(1),
            ct.new.global_.eq(g_global), ct.new.tag.eq(r_ltag),
            ct.new.perm.eq(x_perm), ct.new.guest.eq(Cat(g_u, g_w, g_nx)),
            ct.new.dirty.eq(x_dirty & g_dirty),
            ct.new_data.frame.eq(x_hpa[12:]), ct.new_data.gpa.eq(x_gpa[12:N]),
            ct.new_data.memory_type.eq(x_mt), ct.new_data.ignore_pat.eq(x_ipat),
            # combined paging-structure cache: the guest table at level gl (finish, gl = 1..3)
            gp.new.valid.eq(1), gp.new.kvm.eq(1), gp.new.cm.eq(1), gp.new.tag.eq(r_ltag[9:]),
            gp.new.level.eq(Cat(*[gl == k for k in GUEST_LEVELS])),
            gp.new_data.table_gpa.eq(g_base), gp.new_data.table_hpa.eq(x_hpa[12:]),
            gp.new_data.table_perm.eq(x_perm), gp.new_data.guest.eq(Cat(g_u, g_w, g_nx)),
        ]

        # -- results and fills -----------------------------------------------------------------------
        # Wide register writes (the result, the translation, cache entries) are enabled by
        # one-shot flags registered by the state before, not by decoding the state and the checks.
        sel_c = Signal()            # this cycle is Combined-Select
        sel_g = Signal()            # this cycle is EPT-Select
        do_fault = Signal()         # EPT-Act: a fault
        do_tfault = Signal()        # Guest-Act: the A/D update of a guest entry faults
        do_pf = Signal()            # Guest-Act: a guest page fault
        do_answer = Signal()        # EPT-Act or Finish: x_gpa translated; the answer (gl = 0)
        do_next = Signal()          # ... or the next guest level (gl > 0)
        do_gtfill = Signal()        # EPT-Act: fill the guest-physical TLB
        do_epfill = Signal()        # EPT-Act: fill the EPT paging-structure cache
        do_ctfill = Signal()        # do_answer for a 2D request: fill the combined TLB
        do_gpfill = Signal()        # do_next below the PML4: fill the combined paging-structure cache
        res_we = Signal()           # the result is written (one of sel_c, sel_g, do_fault, do_pf, do_answer)
        abort = Signal()            # this selection state is for a lookup on another context's match bits
        other_key = Signal()        # the request accepted is of another context than cur_*: EPTP key,
        other_vc = Signal()         # VPID or CR3 (for a 2D request)
        other = other_key | other_vc
        any_valid_r = Signal()
        m.d.sync += any_valid_r.eq(any_valid)
        m.d.sync += [f.eq(0) for f in (sel_c, sel_g, do_fault, do_tfault, do_pf, do_answer, do_next,
                                         do_gtfill, do_epfill, do_ctfill, do_gpfill, res_we, abort)]
        m.d.comb += [gt.fill.eq(do_gtfill), ep.fill.eq(do_epfill),
                     ct.fill.eq(do_ctfill), gp.fill.eq(do_gpfill)]

        lin_valid = Mux(r.guest_paging, 1, r.linear_valid)
        adv = Mux(r.guest_paging, Cat(g_u, g_w, g_nx), r.linear_rights)
        x_final = (gl == 0) & (r.guest_paging | ~r.paging_entry)

        # a fault (violation / misconfiguration / #NPF), from the registered check of an EPT entry
        # or (``table``) the A/D update of a guest entry whose page is not writable
        def fault_values(table):
            f_acc = Const(0b011, 3) if table else x_acc
            f_perm = g_tperm if table else x_perm
            f_final = Const(0) if table else x_final
            f_present = Const(1) if table else ~c_np
            f_mc = Const(0) if table else c_bad
            f_sss = Const(0) if table else c_sss
            ept_qual = Cat(f_acc, f_perm[:3], f_perm[3] if mbec else Const(0), lin_valid, lin_valid & f_final,
                           Mux(lin_valid & f_final, adv, 0) if self.advanced_info else Const(0, 3),
                           Const(0, 2), f_sss)
            npf_info = Cat(f_present, f_acc[1], Const(1), f_mc, f_acc[2], Const(0, 27), f_final, ~f_final)
            outcome = Mux(r.npt, Outcome.NPF, Mux(f_mc, Outcome.MISCONFIG, Outcome.VIOLATION))
            qual = Mux(r.npt, npf_info, Mux(f_mc, 0, ept_qual))
            return outcome, qual, (g_egpa if table else x_gpa)

        fault_outcome, fault_qual, fault_gpa = fault_values(False)
        tfault_outcome, tfault_qual, tfault_gpa = fault_values(True)

        # a TLB's selected entry
        ct_d = ct.rd.data
        gt_d = gt.rd.data
        gt_hpa = Cat(x_gpa[:12], Mux(gt_d.size == 0, gt_d.frame,
                                     Mux(gt_d.size == 1, Cat(x_gpa[12:21], gt_d.frame[9:]),
                                         Cat(x_gpa[12:30], gt_d.frame[18:]))))

        # The result: an AND-OR of its sources under registered one-hot flags. (The selection states
        # write it whether there is a hit or not: every path that answers writes it again.)
        def pick(*sources):
            out = 0
            for sel, value in sources:
                out = out | Mux(sel, value, 0)
            return out

        with m.If(res_we):
            m.d.sync += [
                res.outcome.eq(pick((do_fault, fault_outcome), (do_tfault, tfault_outcome),
                                    (do_pf, Outcome.GUEST_PAGE_FAULT.value))),
                res.hpa.eq(pick((sel_c, Cat(r.linear[:12], ct_d.frame)), (sel_g, gt_hpa), (do_answer, x_hpa))),
                res.memory_type.eq(pick((sel_c, ct_d.memory_type), (sel_g, gt_d.memory_type), (do_answer, x_mt))),
                res.ignore_pat.eq(pick((sel_c, ct_d.ignore_pat), (sel_g, gt_d.ignore_pat), (do_answer, x_ipat))),
                res.qualification.eq(pick((do_fault, fault_qual), (do_tfault, tfault_qual), (do_pf, r.linear))),
                res.gpa.eq(pick((sel_c, Cat(r.linear[:12], ct_d.gpa)), (sel_g | do_answer, x_gpa),
                                (do_fault, fault_gpa), (do_tfault, tfault_gpa))),
                res.error_code.eq(pick((do_pf, Cat(~c_np, write, r.user, c_bad, fetch)))),
            ]

        # the next guest level's entry
        with m.If(do_next):
            m.d.sync += g_tperm.eq(x_perm)

        # -- bus -------------------------------------------------------------------------------------
        bus = self.bus
        m.d.comb += bus.dat_w.eq(wdat)

        # An entry is loaded with ORs of its reserved-bit fields, which the check uses.
        ent_hi = Signal()           # bits 51:N
        ent_12_21 = Signal()        # bits 20:12
        ent_13_21 = Signal()        # bits 20:13
        ent_21_30 = Signal()        # bits 29:21

        # And, for an EPT / nested entry, what the check needs of it alone at the level being
        # walked (x_level and the format are known before the read).
        ent_present = Signal()
        ent_perm = Signal(4)        # the entry's rights, R W X XU
        ent_a = Signal()            # accessed flag set
        ent_d = Signal()            # dirty flag set
        ent_bad = Signal()          # misconfigured / reserved, but for the large-page alignment

        def load_entry():
            d = bus.dat_r
            dv = data.View(EPTEntry, d)
            dp = data.View(PagingEntry, d)
            # (the level of the entry read: in EPT-Act, x_level is still the one above)
            lv = Mux(st["EPT-Act"], x_level[1:], x_level)
            mid = lv[2] | lv[3]
            leaf = lv[1] | (mid & d[7])
            xu = dv.user_execute if mbec else Const(0)
            mt = dv.memory_type
            hi = d[N:52].any() if N < 52 else Const(0)
            ept_bad = (
                (~dv.read & dv.write)
                | (Const(0) if self.execute_only else (~dv.read & ~dv.write))
                | ((lv[4] | lv[5]) & d[3:8].any())
                | (mid & ~d[7] & d[3:7].any())
                | (leaf & ((mt == 2) | (mt == 3) | (mt == 7)))
            )
            npt_bad = (lv[4] | lv[5]) & d[7]
            m.d.sync += [
                entry.eq(d), ent_hi.eq(hi), ent_12_21.eq(d[12:21].any()), ent_13_21.eq(d[13:21].any()),
                ent_21_30.eq(d[21:30].any()),
                ent_present.eq(Mux(r.npt, dp.present, d[0:3].any() | xu)),
                ent_perm.eq(Mux(r.npt, Cat(dp.user, dp.writable & dp.user, dp.user & ~dp.execute_disable, Const(0)),
                                Cat(dv.read, dv.write, dv.execute, xu))),
                ent_a.eq(Mux(r.npt, dp.accessed, dv.accessed)),
                ent_d.eq(Mux(r.npt, dp.dirty, dv.dirty)),
                ent_bad.eq(hi | Mux(r.npt, npt_bad, ept_bad)),
            ]

        # The request's context becomes the current one in Lookup, or in Invalidate when a request
        # came with the invalidation (VPID and CR3 only for a 2D request: a 1D one leaves the
        # combined entries' match bits as they are).
        we_ctx = Signal()
        we_ctx2 = Signal()
        m.d.sync += [we_ctx.eq(0), we_ctx2.eq(0)]
        with m.If(we_ctx):
            m.d.sync += [cur_key.eq(r_key), other_key.eq(0), other_vc.eq(0)]
        with m.If(we_ctx2):
            m.d.sync += [cur_vpid.eq(r.vpid), cur_cr3.eq(r.cr3[12:N])]
        with m.If(we_xg):
            xg = Mux(st["Idle"], p_xg, xg_next)
            m.d.sync += [x_gpa.eq(xg), gt_op_n.eq(~xg[12:]), ep_op.eq(xg[21:])]


        # Registered one-shot write enables, set when entering the (one-cycle) states that write
        # a group of registers: the wide enables come straight from flip-flops.
        we_g = Signal()             # g_base, g_u, g_w, g_nx
        we_egpa = Signal()          # g_egpa
        we_xh = Signal()            # x_hpa, x_mt, x_ipat, x_dirty
        we_xp = Signal()            # x_perm
        we_xl = Signal()            # x_level, x_base
        we_adr = Signal()           # b_adr
        we_wd = Signal()            # wdat
        rd = Signal()               # a read is on the bus
        m.d.sync += [f.eq(0) for f in (we_g, we_egpa, we_xh, we_xp, we_xl, we_adr, we_wd, rd)]

        # -- register groups written under the one-shot enables ------------------------------------
        # (the states' own computations, selected by the state flip-flops)
        with m.If(we_g):
            d = gp.rd.data
            m.d.sync += [
                g_base.eq(pick((st["Combined-Select"], r.cr3[12:N]), (st["Combined-Start"], d.table_gpa),
                               (st["Guest-Check"], entry[12:N]))),
                Cat(g_u, g_w, g_nx).eq(pick(
                    (st["Combined-Select"], 0b011), (st["Combined-Start"], d.guest),
                    (st["Guest-Check"], Cat(g_u & entry[2], g_w & entry[1], g_nx | entry[63])))),
            ]
        with m.If(we_egpa):
            d = gp.rd.data
            m.d.sync += g_egpa.eq(pick(
                (st["Combined-Select"], x_gpa[:N]),
                (st["Combined-Start"], Cat(Const(0, 3), index(r.linear, gp_level), d.table_gpa)),
                (st["Guest-Act"], x_gpa[:N])))
        x_frame = Mux(x_level[3], Cat(x_gpa[12:30], entry[30:N]),
                      Mux(x_level[2], Cat(x_gpa[12:21], entry[21:N]), entry[12:N]))
        ck_ev = data.View(EPTEntry, entry)
        ck_perm = x_perm & ent_perm
        ck_leaf = x_level[1] | ((x_level[2] | x_level[3]) & entry[7])
        with m.If(we_xh):
            m.d.sync += [
                x_hpa.eq(pick((sel_g, gt_hpa), (st["EPT-Check"], Cat(x_gpa[:12], x_frame)))),
                x_mt.eq(pick((sel_g, gt_d.memory_type), (st["EPT-Check"], Mux(r.npt, 0, ck_ev.memory_type)))),
                x_ipat.eq(pick((sel_g, gt_d.ignore_pat), (st["EPT-Check"], ~r.npt & ck_ev.ignore_pat))),
                x_dirty.eq(pick((sel_g, gt_d.dirty),
                                (st["EPT-Check"], ~ad_enabled | ent_d | x_acc[1]))),
            ]
        with m.If(we_xp):
            d = ep.rd.data
            m.d.sync += x_perm.eq(pick((sel_g, gt_d.perm), (st["EPT-Check"], ck_perm),
                                       (st["EPT-Start"], Mux(ep_hit, d.perm, (1 << P4) - 1))))
        with m.If(we_xl):
            d = ep.rd.data
            m.d.sync += [
                x_level.eq(pick((st["EPT-Start"], onehot(Mux(ep_hit, ep_level, top))),
                                (st["EPT-Act"], x_level[1:]))),
                x_base.eq(pick((st["EPT-Start"], Mux(ep_hit, d.base, r_key.root)), (st["EPT-Act"], entry[12:N]))),
            ]
        with m.If(we_adr):
            d_ep = ep.rd.data
            d_gp = gp.rd.data
            m.d.sync += b_adr.eq(pick(
                (st["Combined-Start"], Cat(index(r.linear, gp_level), d_gp.table_hpa)),
                (st["EPT-Start"], Cat(index(x_gpa, Mux(ep_hit, ep_level, top)), Mux(ep_hit, d_ep.base, r_key.root))),
                (st["EPT-Check"], Cat(index_oh(x_gpa, x_level, offset=1), entry[12:N])),   # the next level's entry
                (do_next, x_hpa[3:])))                                                  # the next guest entry
        with m.If(we_wd):
            m.d.sync += wdat.eq(pick(
                (st["EPT-Check"], entry | Mux(r.npt, 1 << 5, 1 << 8)
                                  | Mux(ck_leaf & x_acc[1], Mux(r.npt, 1 << 6, 1 << 9), 0)),
                (st["Guest-Check"], entry | (1 << 5) | Mux(((gl == 1) | (((gl == 2) | (gl == 3)) & entry[7]))
                                                           & write, 1 << 6, 0))))
        # the bus: a read under ``rd``, a write in EPT-Write (at x_eaddr) and Guest-Write
        with m.If(rd & bus.ack):
            load_entry()
            m.d.sync += x_eaddr.eq(b_adr)
        with m.If(bus.cyc & bus.ack):
            m.d.sync += refs.eq(refs + 1)
        ewr, gwr = st["EPT-Write"], st["Guest-Write"]
        m.d.comb += [
            bus.cyc.eq(rd | ewr | gwr), bus.stb.eq(rd | ewr | gwr), bus.we.eq(ewr | gwr),
            bus.adr.eq(Mux(ewr, x_eaddr, b_adr)),
            bus.sel.eq(Mux(ewr, Mux(r.npt, 0x01, 0x02), Mux(gwr, 0x01, 0xFF))),
        ]

        # -- the sequencer ---------------------------------------------------------------------
        shadows = {
            "Combined-Select": [sel_c, res_we, we_g, we_egpa],
            "Combined-Start": [we_g, we_egpa, we_adr],
            "EPT-Select": [sel_g, res_we, we_xh, we_xp],
            "EPT-Start": [we_xp, we_xl, we_adr], "EPT-Read": [rd],
            "EPT-Check": [we_xh, we_xp, we_adr, we_wd],
            "Guest-Read": [rd], "Guest-Check": [we_g, we_wd], "Guest-Act": [we_egpa],
        }

        current = []

        @contextmanager
        def state(name):
            current.append(name)
            with m.If(st[name]):
                yield
            current.pop()

        def goto(state):
            """Go to ``state`` next cycle (with its registered one-hot flags). At most one ``goto``
            takes effect per cycle."""
            if state != current[-1]:
                m.d.sync += [st[current[-1]].eq(0), st[state].eq(1),
                             we_xg.eq(int(state in ("Idle", "Guest-Check"))),
                             busy_gt.eq(int(state != "Idle"))]
            if state == "Lookup" or (state == "Invalidate" and current[-1] == "Idle"):
                # the request's context becomes the current one in the next cycle
                gp_ = p.guest_paging if current[-1] == "Idle" else r.guest_paging
                valid_ = self.req.valid if state == "Invalidate" else Const(1)
                m.d.sync += [we_ctx.eq(valid_), we_ctx2.eq(valid_ & gp_)]
            m.d.sync += [f.eq(1) for f in shadows.get(state, [])]

        def finish(cond=Const(1)):
            """Set the one-shot flags of a finish in the next cycle (when ``cond``)."""
            m.d.sync += [do_answer.eq(cond & (gl == 0)), do_next.eq(cond & (gl != 0)),
                         do_ctfill.eq(cond & (gl == 0) & r.guest_paging),
                         do_gpfill.eq(cond & (gl != 0) & (gl != 4))]
            with m.If(cond & (gl == 0)):
                m.d.sync += res_we.eq(1)
            with m.If(cond & (gl != 0)):
                m.d.sync += we_adr.eq(1)

        def finish_next():
            with m.If(gl == 0):
                goto("Respond")
            with m.Else():
                goto("Guest-Read")

        if True:
            with state("Idle"):
                m.d.comb += [self.invalidate.ready.eq(1), self.req.ready.eq(1)]
                m.d.sync += [
                    req_pending.eq(self.req.valid),
                    # does the request bring another context than the match bits are for?
                    other_key.eq(p_key != cur_key.as_value()),
                    other_vc.eq(p.guest_paging & ((p.vpid != cur_vpid) | (p.cr3[12:N] != cur_cr3))),
                ]
                # The request and the invalidation are loaded in every idle cycle (the enables do
                # not depend on the handshake); the ones accepted stay when the walker leaves Idle.
                m.d.sync += [
                    r.eq(p), r.gpa.eq(p_gpa), r.linear.eq(p_linear), r_key.eq(p_key),
                    refs.eq(0), pwc_hits.eq(0), tlb_hit.eq(0), res.linear.eq(p_linear),
                    skip.eq(self.invalidate.valid),
                    # a one-dimensional request translates the GPA; a two-dimensional one
                    # starts (unless the caches hold it) with the PML4E from CR3
                    gl.eq(Mux(p.guest_paging, 4, 0)),
                    x_acc.eq(Mux(p.guest_paging, Cat(Const(1), p_keyv.ad, Const(0)), p_acc)),
                    inv_r.eq(self.invalidate.payload),
                ]
                with m.If(self.invalidate.valid):
                    # (a request accepted with it waits for it)
                    goto("Invalidate")
                with m.Elif(self.req.valid):
                    goto("Lookup")

            with state("Invalidate"):
                with m.If(kind == InvalidationKind.INVEPT_ALL_CONTEXT):
                    for c in (gt, ep, ct, gp):
                        for t in c.tags:
                            m.d.sync += t.valid.eq(0)
                    with m.If(req_pending):
                        goto("Lookup")
                    with m.Else():
                        goto("Idle")
                with m.Else():
                    m.d.sync += [scan.eq(0), scan_inv.eq(1)]
                    # (with a request, the scan recomputes the match bits for its context too)
                    goto("Scan")

            with state("Scan"):
                m.d.comb += scanning.eq(1)
                m.d.sync += scan.eq(scan + 1)
                with m.If(scan == NS + 1):
                    with m.If(req_pending):
                        goto("Lookup")
                    with m.Else():
                        goto("Idle")

            with state("Lookup"):
                # The lookups run this cycle, on match bits for the last context. If the request
                # brings another one, and some entry is valid, the selection state that follows
                # does nothing but start a scan, and the request is looked up again after it.
                m.d.sync += abort.eq(other & any_valid_r)
                with m.If(r.guest_paging):
                    goto("Combined-Select")
                with m.Else():
                    goto("EPT-Select")

            def rescan():
                m.d.sync += [scan.eq(0), scan_inv.eq(0)]
                goto("Scan")

            with state("Combined-Select"):
                m.d.sync += [gp_level.eq(gp_lvl), tlb_hit.eq(ct_hit)]
                with m.If(abort):
                    rescan()
                with m.Elif(ct_hit):
                    with m.If(ct_several):
                        m.d.sync += ct_mask.eq(lowest_only(ct_hv))
                        goto("Lookup")
                    with m.Else():
                        goto("Respond")
                with m.Elif(gp_any & ~skip):
                    goto("Combined-Start")
                with m.Else():
                    goto("EPT-Select")              # gl = 4, the PML4E's address in x_gpa
                with m.If(~abort):
                    m.d.sync += skip.eq(0)

            with state("Combined-Start"):
                d = gp.rd.data
                idx = index(r.linear, gp_level)
                m.d.sync += [gl.eq(gp_level), g_tperm.eq(d.table_perm), pwc_hits.eq(4 - gp_level)]
                goto("Guest-Read")

            with state("EPT-Select"):
                m.d.sync += [
                    ep_hit.eq(ep_any & ~skip), ep_level.eq(ep_lvl),
                    g_slot.eq(Mux(th_any, th_low, gt.rr)), g_slot_rr.eq(~th_any | (th_low == gt.rr)),
                    tlb_hit.eq(gt_hit & ~r.guest_paging),
                ]
                with m.If(~abort):
                    m.d.sync += skip.eq(0)
                with m.If(abort):
                    rescan()
                with m.Elif(gt_hit):
                    with m.If(gt_several):
                        m.d.sync += gt_mask.eq(lowest_only(gt_hv))
                        goto("EPT-Lookup")
                    with m.Elif(r.guest_paging):
                        finish()
                        goto("Finish")
                    with m.Else():
                        goto("Respond")
                with m.Else():
                    goto("EPT-Start")

            with state("EPT-Start"):
                # begin at the deepest paging-structure-cache hit, or at the root
                d = ep.rd.data
                level = Mux(ep_hit, ep_level, top)
                base = Mux(ep_hit, d.base, r_key.root)
                with m.If(ep_hit):
                    m.d.sync += pwc_hits.eq(pwc_hits + top - ep_level)
                goto("EPT-Read")

            with state("EPT-Read"):
                with m.If(bus.ack):
                    goto("EPT-Check")
                with m.Else():
                    m.d.sync += rd.eq(1)

            with state("EPT-Check"):
                e = entry
                ev = data.View(EPTEntry, e)
                pv = data.View(PagingEntry, e)
                lv = x_level
                mid = lv[2] | lv[3]
                leaf = lv[1] | (mid & e[7])
                # EPT format (SDM §29.3.2, misconfigurations §29.3.3.1) or nested paging, long-mode
                # host format (APM §15.25.5; every access is a user access): the entry's own checks
                # were made as it was loaded (ent_*); a large page's alignment is checked here
                # (bits 29:12 / 20:12 for EPT, 29:13 / 20:13 for nested paging)
                present = ent_present
                perm = x_perm & ent_perm
                bad = (ent_bad
                       | (lv[3] & e[7] & (Mux(r.npt, ent_13_21, ent_12_21) | ent_21_30))
                       | (lv[2] & e[7] & Mux(r.npt, ent_13_21, ent_12_21)))
                a_set = ent_a
                d_set = ent_d
                user_x = Mux(r.guest_paging, g_u, r.user) & ~r.npt
                deny = ~allows(x_acc, perm, user_x)
                wr = ad_enabled & (~a_set | (leaf & x_acc[1] & ~d_set))
                ok = present & ~bad
                m.d.sync += [
                    c_np.eq(~present), c_bad.eq(present & bad), c_leaf.eq(leaf), c_deny.eq(deny), c_wr.eq(wr),
                    c_sss.eq(present & r.eptp[7] & ev.supervisor_shadow_stack & ~r.npt),
                    # what EPT-Act does
                    do_fault.eq(~ok | (leaf & deny)),
                    do_epfill.eq(ok & ~leaf),
                    do_gtfill.eq(ok & leaf & ~deny),
                    we_xl.eq(ok & ~leaf), rd.eq(ok & ~leaf & ~wr),
                ]
                finish(ok & leaf & ~deny & ~wr)
                with m.If(~ok | (leaf & deny)):
                    m.d.sync += res_we.eq(1)
                goto("EPT-Act")

            with state("EPT-Act"):
                # (the result, the fills and the finish are written under the do_* flags)
                with m.If(c_np | c_bad):
                    goto("Respond")
                with m.Elif(~c_leaf):
                    with m.If(c_wr):
                        goto("EPT-Write")
                    with m.Else():
                        # the next level's read started in this cycle (rd)
                        with m.If(bus.ack):
                            goto("EPT-Check")
                        with m.Else():
                            goto("EPT-Read")
                with m.Elif(c_deny):
                    goto("Respond")
                with m.Elif(c_wr):
                    goto("EPT-Write")
                with m.Else():
                    finish_next()

            with state("EPT-Write"):
                # (at x_eaddr; b_adr keeps the next level's entry)
                with m.If(bus.ack):
                    with m.If(~c_leaf):
                        goto("EPT-Read")
                    with m.Else():
                        finish()
                        goto("Finish")

            with state("Finish"):
                finish_next()

            with state("Guest-Read"):
                with m.If(bus.ack):
                    goto("Guest-Check")
                with m.Else():
                    m.d.sync += rd.eq(1)

            with state("Guest-Check"):
                e = entry
                pv = data.View(PagingEntry, e)
                lvl = gl
                mid = (lvl == 2) | (lvl == 3)
                leaf = (lvl == 1) | (mid & pv.page_size)
                rsvd = (ent_hi | ((lvl == 4) & e[7]) | ((lvl == 3) & e[7] & (ent_13_21 | ent_21_30))
                        | ((lvl == 2) & e[7] & ent_13_21))
                nu = g_u & pv.user
                nw = g_w & pv.writable
                nnx = g_nx | pv.execute_disable
                gpa = Mux(lvl == 3, Cat(r.linear[:30], e[30:N]),
                          Mux(lvl == 2, Cat(r.linear[:21], e[21:N]), Cat(r.linear[:12], e[12:N])))
                egpa = Cat(Const(0, 3), index(r.linear, lvl, offset=1), e[12:N])
                deny = (r.user & ~nu) | (write & ~nw) | (fetch & nnx)
                wr = ~pv.accessed | (leaf & write & ~pv.dirty)
                pf = ~pv.present | rsvd | (leaf & deny)
                m.d.sync += [
                    c_np.eq(~pv.present), c_bad.eq(pv.present & rsvd), c_leaf.eq(leaf), c_deny.eq(deny),
                    c_wr.eq(wr),
                    # what Guest-Act does
                    do_pf.eq(pf), do_tfault.eq(~pf & wr & ~g_tperm[1]),
                    # what the next cycle may need, whichever way the check goes
                    g_global.eq(pv.global_), g_dirty.eq(pv.dirty | write),
                    gl.eq(Mux(leaf, 0, lvl - 1)),
                    x_acc.eq(Mux(leaf, access_bits(r.access), Cat(Const(1), r_key.ad, Const(0)))),
                ]
                set_x_gpa(Mux(leaf, gpa, egpa))
                with m.If(pf | (wr & ~g_tperm[1])):
                    m.d.sync += res_we.eq(1)
                goto("Guest-Act")

            with state("Guest-Act"):
                # (a fault is written under do_pf / do_tfault)
                def table_write():
                    """An A/D update of the guest entry: a write to its page."""
                    with m.If(~g_tperm[1]):
                        goto("Respond")
                    with m.Else():
                        goto("Guest-Write")

                with m.If(c_np | c_bad):
                    goto("Respond")
                with m.Elif(~c_leaf):
                    with m.If(c_wr):
                        table_write()
                    with m.Else():
                        goto("EPT-Lookup")          # x_gpa: the next guest entry
                with m.Elif(c_deny):
                    goto("Respond")
                with m.Elif(c_wr):
                    table_write()
                with m.Else():
                    goto("EPT-Lookup")              # x_gpa: the final guest-physical address

            with state("EPT-Lookup"):
                # (the second stage of the lookup of the x_gpa set by Guest-Check)
                goto("EPT-Select")

            with state("Guest-Write"):
                with m.If(bus.ack):
                    goto("EPT-Select")

            with state("Respond"):
                m.d.comb += self.resp.valid.eq(1)
                with m.If(self.resp.ready):
                    goto("Idle")

        return m
