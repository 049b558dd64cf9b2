"""A plain-Python reference walker for EPT (Intel SDM vol. 3C §29.3) and AMD nested paging
(APM vol. 2 §15.25), written from the fact sheet without looking at the gateware.

It models the architecture without translation caches: one call translates one request against
a memory dictionary (8-byte-aligned byte address -> 64-bit word, missing words read as 0) and
applies the accessed/dirty writes to that dictionary. Policies that the architecture leaves to the
implementation follow the walker's documented choices:

* EPT A/D (EPTP[6] = 1) and nested paging: a non-leaf entry gets its accessed bit when the walk
  passes it; the leaf gets accessed (and dirty, for a write) only when the access is allowed.
  Guest paging entries are treated the same way (A on each entry used, A|D on the leaf).
* Guest paging-structure accesses are EPT reads, or writes+reads when EPTP[6] = 1; an A/D update
  of a guest entry whose page is not EPT-writable is a violation with access bits R|W, bit 8 = 0.
* Guest paging: IA-32e 4-level, CR0.WP = 1, EFER.NXE = 1, CR4.PGE = 1, no SMEP/SMAP/PKE.
* Nested paging: long-mode host format (4 levels), every access a user access, NXE = 1.
"""

from dataclasses import dataclass

READ, WRITE, FETCH = 0, 1, 2
OK, VIOLATION, MISCONFIG, GUEST_PAGE_FAULT, NPF = 0, 1, 2, 3, 4

ACCESS_BITS = {READ: 0b001, WRITE: 0b010, FETCH: 0b100}
BAD_MEMORY_TYPES = {2, 3, 7}


def bits(value, hi, lo):
    return (value >> lo) & ((1 << (hi - lo + 1)) - 1)


def bit(value, n):
    return (value >> n) & 1


@dataclass
class Request:
    eptp: int = 0
    gpa: int = 0
    access: int = READ
    user: int = 0
    linear_valid: int = 0
    linear: int = 0
    vpid: int = 0
    paging_entry: int = 0
    linear_rights: int = 0
    cr3: int = 0
    guest_paging: int = 0
    npt: int = 0


@dataclass
class Result:
    outcome: int
    hpa: int = 0
    memory_type: int = 0
    ignore_pat: int = 0
    qualification: int = 0
    gpa: int = 0
    linear: int = 0
    error_code: int = 0
    refs: int = 0


class _Fault(Exception):
    def __init__(self, result):
        self.result = result


@dataclass
class Config:
    maxphyaddr: int = 39
    five_level: bool = False
    mode_based_execute: bool = False
    execute_only: bool = True
    advanced_info: bool = True
    accessed_dirty: bool = True


class Walker:
    """The reference walker. ``memory`` maps byte addresses (multiples of 8) to 64-bit words."""

    def __init__(self, memory, config=None, **kwargs):
        self.mem = memory
        self.cfg = config or Config(**kwargs)
        self.refs = 0
        self.writes = []        # (address, old, new) in bus order

    # memory ---------------------------------------------------------------------------------------
    def read(self, address):
        self.refs += 1
        return self.mem.get(address, 0)

    def write(self, address, value):
        self.refs += 1
        self.writes.append((address, self.mem.get(address, 0), value))
        self.mem[address] = value

    # helpers --------------------------------------------------------------------------------------
    def frame_mask(self):
        return ((1 << self.cfg.maxphyaddr) - 1) & ~0xFFF

    def high_reserved(self, entry):
        return bits(entry, 51, self.cfg.maxphyaddr) if self.cfg.maxphyaddr < 52 else 0

    def levels(self, req):
        if req.npt:
            return 4
        return 5 if (self.cfg.five_level and bits(req.eptp, 5, 3) == 4) else 4

    def fault(self, req, outcome, *, access_bits=0, perm=0, final=True, gpa=0, sss=0,
              present=0, rsvd=0, write=0, fetch=0):
        if outcome == NPF:
            qual = present | write << 1 | 1 << 2 | rsvd << 3 | fetch << 4 | (1 << 32 if final else 1 << 33)
        elif outcome == VIOLATION:
            lv = 1 if req.guest_paging else req.linear_valid
            f = lv & int(final)
            qual = access_bits | (perm & 7) << 3 | lv << 7 | f << 8 | sss << 14
            if self.cfg.mode_based_execute:
                qual |= bit(perm, 3) << 6
            if self.cfg.advanced_info and f:
                qual |= self.adv << 9
        else:
            qual = 0
        raise _Fault(Result(outcome, qualification=qual, gpa=gpa, linear=req.linear))

    # the EPT / nested dimension ----------------------------------------------------------------------
    def translate(self, req, gpa, access_bits, final, user_exec):
        """Translate ``gpa``; return (hpa, perm, memory_type, ignore_pat) or raise _Fault."""
        cfg, N = self.cfg, self.cfg.maxphyaddr
        npt = req.npt
        ad = 1 if npt else bit(req.eptp, 6) & int(cfg.accessed_dirty)
        levels = self.levels(req)
        base = req.eptp & self.frame_mask()
        perm = 0b1111 if cfg.mode_based_execute and not npt else 0b0111
        for level in range(levels, 0, -1):
            address = base + bits(gpa, 20 + 9 * (level - 1), 12 + 9 * (level - 1)) * 8
            e = self.read(address)
            leaf = level == 1 or (level in (2, 3) and bit(e, 7))
            if npt:
                present = bit(e, 0)
                eperm = bit(e, 2) | (bit(e, 1) & bit(e, 2)) << 1 | (bit(e, 2) & (1 - bit(e, 63))) << 2
                bad = (self.high_reserved(e) or (level >= 4 and bit(e, 7))
                       or (level == 3 and leaf and bits(e, 29, 13))
                       or (level == 2 and leaf and bits(e, 20, 13)))
            else:
                xu = bit(e, 10) if cfg.mode_based_execute else 0
                present = bits(e, 2, 0) != 0 or xu
                eperm = bits(e, 2, 0) | xu << 3
                r, w = bit(e, 0), bit(e, 1)
                bad = (
                    (not r and w)
                    or (not cfg.execute_only and not r and not w)
                    or self.high_reserved(e)
                    or (level >= 4 and bits(e, 7, 3))
                    or (level in (2, 3) and not leaf and bits(e, 6, 3))
                    or (level == 3 and leaf and bits(e, 29, 12))
                    or (level == 2 and leaf and bits(e, 20, 12))
                    or (leaf and bits(e, 5, 3) in BAD_MEMORY_TYPES)
                )
            perm &= eperm
            if not present:
                if npt:
                    self.fault(req, NPF, final=final, gpa=gpa, write=bit(access_bits, 1),
                               fetch=bit(access_bits, 2))
                self.fault(req, VIOLATION, access_bits=access_bits, perm=perm, final=final, gpa=gpa)
            if bad:
                if npt:
                    self.fault(req, NPF, final=final, gpa=gpa, present=1, rsvd=1,
                               write=bit(access_bits, 1), fetch=bit(access_bits, 2))
                self.fault(req, MISCONFIG, gpa=gpa)
            a_bit, d_bit = (5, 6) if npt else (8, 9)
            if not leaf:
                if ad and not bit(e, a_bit):
                    self.write(address, e | 1 << a_bit)
                base = e & self.frame_mask()
                continue
            # leaf: permission check against the accumulated rights
            x = bit(perm, 3) if (cfg.mode_based_execute and not npt and user_exec) else bit(perm, 2)
            eff = bit(perm, 0) | bit(perm, 1) << 1 | x << 2
            if access_bits & ~eff:
                if npt:
                    self.fault(req, NPF, final=final, gpa=gpa, present=1,
                               write=bit(access_bits, 1), fetch=bit(access_bits, 2))
                sss = bit(e, 60) & bit(req.eptp, 7)
                self.fault(req, VIOLATION, access_bits=access_bits, perm=perm, final=final, gpa=gpa, sss=sss)
            if ad:
                new = e | 1 << a_bit | (bit(access_bits, 1) << d_bit)
                if new != e:
                    self.write(address, new)
            shift = 12 + 9 * (level - 1)
            hpa = (e & ((1 << N) - 1) & ~((1 << shift) - 1)) | (gpa & ((1 << shift) - 1))
            mt, ipat = (0, 0) if npt else (bits(e, 5, 3), bit(e, 6))
            return hpa, perm, mt, ipat
        raise AssertionError("unreachable")

    # the request ------------------------------------------------------------------------------------
    def walk(self, req):
        self.refs = 0
        self.writes = []
        self.adv = req.linear_rights
        width = 57 if self.levels(req) == 5 else 48
        req = Request(**{**req.__dict__})
        req.gpa &= (1 << width) - 1
        if req.guest_paging:
            req.linear &= (1 << 48) - 1
        try:
            if req.guest_paging:
                result = self.walk_2d(req)
            else:
                acc = ACCESS_BITS[req.access]
                if req.paging_entry and not req.npt and bit(req.eptp, 6) and self.cfg.accessed_dirty:
                    acc = 0b011
                final = not req.paging_entry
                hpa, _, mt, ipat = self.translate(req, req.gpa, acc, final, req.user)
                result = Result(OK, hpa=hpa, memory_type=mt, ignore_pat=ipat, gpa=req.gpa, linear=req.linear)
        except _Fault as fault:
            result = fault.result
        result.refs = self.refs
        return result

    def walk_2d(self, req):
        N = self.cfg.maxphyaddr
        write, fetch = int(req.access == WRITE), int(req.access == FETCH)
        table_access = 0b011 if (not req.npt and bit(req.eptp, 6) and self.cfg.accessed_dirty) else 0b001
        g_u, g_w, g_nx = 1, 1, 0
        base = req.cr3 & self.frame_mask()
        pf = lambda p, rsvd=0: _Fault(Result(GUEST_PAGE_FAULT, qualification=req.linear, linear=req.linear,
                                             error_code=p | write << 1 | req.user << 2 | rsvd << 3 | fetch << 4))
        for level in range(4, 0, -1):
            egpa = base + bits(req.linear, 20 + 9 * (level - 1), 12 + 9 * (level - 1)) * 8
            self.adv = 0
            hpa, tperm, _, _ = self.translate(req, egpa, table_access, False, 0)
            e = self.read(hpa)
            if not bit(e, 0):
                raise pf(0)
            leaf = level == 1 or (level in (2, 3) and bit(e, 7))
            if (self.high_reserved(e) or (level == 4 and bit(e, 7))
                    or (level == 3 and leaf and bits(e, 29, 13)) or (level == 2 and leaf and bits(e, 20, 13))):
                raise pf(1, 1)
            g_u &= bit(e, 2)
            g_w &= bit(e, 1)
            g_nx |= bit(e, 63)
            if not leaf:
                if not bit(e, 5):
                    self.check_table_write(req, tperm, egpa)
                    self.write(hpa, e | 1 << 5)
                base = e & self.frame_mask()
                continue
            if (req.user and not g_u) or (write and not g_w) or (fetch and g_nx):
                raise pf(1)
            new = e | 1 << 5 | write << 6
            if new != e:
                self.check_table_write(req, tperm, egpa)
                self.write(hpa, new)
            shift = 12 + 9 * (level - 1)
            gpa = (e & ((1 << N) - 1) & ~((1 << shift) - 1)) | (req.linear & ((1 << shift) - 1))
            self.adv = g_u | g_w << 1 | g_nx << 2
            hpa, _, mt, ipat = self.translate(req, gpa, ACCESS_BITS[req.access], True, g_u)
            return Result(OK, hpa=hpa, memory_type=mt, ignore_pat=ipat, gpa=gpa, linear=req.linear)
        raise AssertionError("unreachable")

    def check_table_write(self, req, tperm, egpa):
        """An A/D update of a guest paging entry is a write to its page (EPT or nested)."""
        if bit(tperm, 1):
            return
        if req.npt:
            self.fault(req, NPF, final=False, gpa=egpa, present=1, write=1)
        self.fault(req, VIOLATION, access_bits=0b011, perm=tperm, final=False, gpa=egpa)


def walk(memory, request, **config):
    """Translate one request against ``memory`` (modified in place by A/D updates)."""
    return Walker(memory, Config(**config)).walk(request)
