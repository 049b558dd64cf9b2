"""A plain-Python reference model of the SVM unit's decisions (AMD APM vol. 2 chapter 15), written
from the fact sheet, independent of the gateware: VMRUN consistency checks (§15.5.1), intercept
decisions with EXITCODE / EXITINFO1 / EXITINFO2 / EXITINTINFO / nRIP (§15.9–15.13, appendix C), IOPM
and MSRPM lookups (§15.10–15.11), and a valid baseline VMCB.

VMCB contents are dicts ``{FIELD_NAME: value}`` (names of
:data:`hwvirt.hdl.svm_check_catalogue.VMCB_FIELDS`); missing fields are 0.
"""

from hwvirt.hdl.exit_logic import DEFAULT_LENGTH   # the default instruction lengths (a table)

MASK64 = (1 << 64) - 1
INVALID = -1

#: A VMCB that passes every VMRUN check: a 64-bit guest with the VMRUN intercept and ASID 1.
BASELINE = {
    "INTERCEPT_MISC2": 1,                  # VMRUN
    "GUEST_ASID": 1,
    "IOPM_BASE_PA": 0x20000,
    "MSRPM_BASE_PA": 0x30000,
    "EFER": 0x1D00,                        # SVME, NXE, LMA, LME
    "CR0": 0x8005_0033,
    "CR3": 0x5000,
    "CR4": 0x20,                           # PAE
    "DR6": 0xFFFF_0FF0,
    "DR7": 0x400,
    "RFLAGS": 0x2,
    "RIP": 0x1000,
    "RSP": 0x8000,
    "CS_SELECTOR": 0x8, "CS_ATTRIB": 0x29B, "CS_LIMIT": 0xFFFF_FFFF,
    "SS_SELECTOR": 0x10, "SS_ATTRIB": 0xC93, "SS_LIMIT": 0xFFFF_FFFF,
    "DS_SELECTOR": 0x10, "DS_ATTRIB": 0xC93, "DS_LIMIT": 0xFFFF_FFFF,
    "ES_SELECTOR": 0x10, "ES_ATTRIB": 0xC93, "ES_LIMIT": 0xFFFF_FFFF,
    "GDTR_LIMIT": 0x7F, "GDTR_BASE": 0x6000, "IDTR_LIMIT": 0xFFF, "IDTR_BASE": 0x7000,
    "G_PAT": 0x0007_0406_0007_0406,
}

#: One mutation per check ID that makes exactly that check fail (on the baseline).
MUTATIONS = {
    "SVM_EFER_SVME": {"EFER": 0x0D00},
    "SVM_CR0_CD_NW": {"CR0": 0xA005_0033},
    "SVM_CR0_HI": {"CR0": 0x1_8005_0033},
    "SVM_CR3_MBZ": {"CR3": 0x0010_0000_0000_5000},
    "SVM_CR4_MBZ": {"CR4": 0x2020},         # VMXE
    "SVM_DR6_HI": {"DR6": 0x1_FFFF_0FF0},
    "SVM_DR7_HI": {"DR7": 0x1_0000_0400},
    "SVM_EFER_MBZ": {"EFER": 0x1F00},       # bit 9
    "SVM_EFER_LM_NOLM": None,               # only on a core without long mode
    "SVM_LME_PG_NOPAE": {"CR4": 0},
    "SVM_LME_PG_NOPE": {"CR0": 0x8005_0032},
    "SVM_LME_CS_LD": {"CS_ATTRIB": 0x69B},
    "SVM_NO_VMRUN_INTERCEPT": {"INTERCEPT_MISC2": 0},
    "SVM_MSRPM_RANGE": {"MSRPM_BASE_PA": (1 << 39) - 0x2000},
    "SVM_IOPM_RANGE": {"IOPM_BASE_PA": (1 << 39) - 0x2000},
    "SVM_ASID_ZERO": {"GUEST_ASID": 0},
    "SVM_EVENTINJ_TYPE": {"EVENTINJ": 0x8000_0520},
    "SVM_EVENTINJ_VECTOR": {"EVENTINJ": 0x8000_0302},
    "SVM_EVENTINJ_64BIT": {"EVENTINJ": 0x8000_0304},
    "SVM_NP_UNSUPPORTED": None,             # only on a core without nested paging
    "SVM_NP_HOST_NOPG": "host",             # needs a host with CR0.PG = 0
    "SVM_GPAT": {"NP_CONTROL": 1, "N_CR3": 0x40000, "G_PAT": 0x0007_0406_0007_0402},
    "SVM_NCR3": {"NP_CONTROL": 1, "N_CR3": 1 << 45},
    "SVM_TLBCTL": {"TLB_CONTROL": 2},
}


def vmrun_checks(v, *, host_cr0=0x8005_0033, host_efer=0x1D01, maxphyaddr=39, long_mode=True,
                 nested_paging=True):
    """The IDs of every failing VMRUN consistency check, in catalogue order."""
    g = lambda name: v.get(name, 0)
    cr0, cr3, cr4, efer = g("CR0"), g("CR3"), g("CR4"), g("EFER")
    cs = g("CS_ATTRIB")
    lme_pg = bool(efer >> 8 & 1 and cr0 >> 31 & 1)
    inj = g("EVENTINJ")
    inj_v, inj_type, inj_vec = inj >> 31 & 1, inj >> 8 & 7, inj & 0xFF
    np = g("NP_CONTROL") & 1
    top = 1 << maxphyaddr
    long64 = lme_pg and cs >> 9 & 1
    pat_bad = any((g("G_PAT") >> (8 * i) & 0xFF) not in (0, 1, 4, 5, 6, 7) for i in range(8))
    rules = [
        ("SVM_EFER_SVME", not efer >> 12 & 1),
        ("SVM_CR0_CD_NW", not cr0 >> 30 & 1 and cr0 >> 29 & 1),
        ("SVM_CR0_HI", cr0 >> 32 != 0),
        ("SVM_CR3_MBZ", cr3 >> 52 != 0 if lme_pg else cr3 >> 32 != 0),
        ("SVM_CR4_MBZ", cr4 & 0xFFFF_FFFF_FE08_E000 != 0),
        ("SVM_DR6_HI", g("DR6") >> 32 != 0),
        ("SVM_DR7_HI", g("DR7") >> 32 != 0),
        ("SVM_EFER_MBZ", efer & 0xFFFF_FFFF_FFFF_0200 != 0),
        ("SVM_EFER_LM_NOLM", not long_mode and (efer >> 8 & 1 or efer >> 10 & 1)),
        ("SVM_LME_PG_NOPAE", lme_pg and not cr4 >> 5 & 1),
        ("SVM_LME_PG_NOPE", lme_pg and not cr0 & 1),
        ("SVM_LME_CS_LD", lme_pg and cr4 >> 5 & 1 and cs >> 9 & 1 and cs >> 10 & 1),
        ("SVM_NO_VMRUN_INTERCEPT", not g("INTERCEPT_MISC2") & 1),
        ("SVM_MSRPM_RANGE", (g("MSRPM_BASE_PA") & ~0xFFF) + 0x2000 >= top),
        ("SVM_IOPM_RANGE", (g("IOPM_BASE_PA") & ~0xFFF) + 0x2001 >= top),
        ("SVM_ASID_ZERO", g("GUEST_ASID") == 0),
        ("SVM_EVENTINJ_TYPE", inj_v and inj_type in (1, 5, 6, 7)),
        ("SVM_EVENTINJ_VECTOR", inj_v and inj_type == 3 and (inj_vec == 2 or inj_vec > 31)),
        ("SVM_EVENTINJ_64BIT", inj_v and inj_type == 3 and inj_vec in (4, 5) and long64),
        ("SVM_NP_UNSUPPORTED", np and not nested_paging),
        ("SVM_NP_HOST_NOPG", np and not host_cr0 >> 31 & 1),
        ("SVM_GPAT", np and pat_bad),
        ("SVM_NCR3", np and host_efer >> 10 & 1 and g("N_CR3") >> maxphyaddr != 0),
        ("SVM_TLBCTL", g("TLB_CONTROL") not in (0, 1, 3, 7)),
    ]
    return [name for name, failed in rules if failed]


# -- intercepts --------------------------------------------------------------------------------------

ERROR_CODE_VECTORS = (8, 10, 11, 12, 13, 14, 17)
_MISC1 = {"cpuid": (18, 0x72), "invd": (22, 0x76), "hlt": (24, 0x78), "rdpmc": (15, 0x6F), "rdtsc": (14, 0x6E),
          "invlpg": (25, 0x79), "extint": (0, 0x60), "nmi": (1, 0x61), "smi": (2, 0x62), "init": (3, 0x63),
          "task_switch": (29, 0x7D), "triple_fault": (31, 0x7F)}
_MISC2 = {"xsetbv": (13, 0x8D), "wbinvd": (9, 0x89), "rdtscp": (7, 0x87), "monitor": (10, 0x8A)}
_SVM_INSTR = {"vmrun": ("MISC2", 0, 0x80), "vmmcall": ("MISC2", 1, 0x81), "vmload": ("MISC2", 2, 0x82),
              "vmsave": ("MISC2", 3, 0x83), "stgi": ("MISC2", 4, 0x84), "clgi": ("MISC2", 5, 0x85),
              "skinit": ("MISC2", 6, 0x86), "invlpga": ("MISC1", 26, 0x7A), "rdpru": ("MISC2", 14, 0x8E)}
_DESCRIPTOR = {"sgdt": (7, 0x67), "sidt": (6, 0x66), "lgdt": (11, 0x6B), "lidt": (10, 0x6A),
               "sldt": (8, 0x68), "str": (9, 0x69), "lldt": (12, 0x6C), "ltr": (13, 0x6D)}


def msrpm_bit(msr, write):
    """Bit number in the MSRPM of an access to ``msr``, or None outside the three ranges (§15.11)."""
    for first, byte in ((0, 0), (0xC000_0000, 0x800), (0xC001_0000, 0x1000)):
        if first <= msr < first + 0x2000:
            return byte * 8 + (msr - first) * 2 + write
    return None


def decide(event, v, mem, *, armed=False, pause_count=0):
    """The outcome of a guest event (a parsed scenario event dict) for VMCB ``v``.

    ``mem(address)`` reads one byte of physical memory (the permission maps). Returns a dict:
    ``exit`` (bool), and for an exit ``exit_code, exitinfo1, exitinfo2, exitintinfo, nrip``; without an
    exit ``fault`` ("UD" when the guest takes #UD, else None), ``completes`` (RIP advances) and
    ``value`` (what a reading event returns, when the model knows it).
    """
    g = lambda name: v.get(name, 0)
    name = event["event"]
    length = event.get("len", {**DEFAULT_LENGTH, "svminstr": 3, "smi": 0}.get(name, 0))
    rip = g("RIP")
    m1, m2, m3 = g("INTERCEPT_MISC1"), g("INTERCEPT_MISC2"), g("INTERCEPT_MISC3")
    efer = g("EFER")
    cs = g("CS_ATTRIB")
    long64 = efer >> 10 & 1 and cs >> 9 & 1
    out = {"exit": False, "fault": None, "completes": True, "value": None}

    def exit_(code, info1=0, info2=0, intinfo=0, instr=True):
        return {"exit": True, "exit_code": code, "exitinfo1": info1, "exitinfo2": info2,
                "exitintinfo": intinfo, "nrip": (rip + length) & MASK64 if instr else 0}

    def exception(vector, error_code=0, etype="hardware", addr=0, during=None, ud=False):
        if g("INTERCEPT_EXCEPTIONS") >> vector & 1 and vector < 32:
            info1 = error_code if etype == "hardware" and vector in ERROR_CODE_VECTORS else 0
            info2 = addr if vector == 14 and not ud else 0
            intinfo = 0
            if during is not None and not ud:
                t = {"hardware": 3, "software": 3, "privileged": 3, "extint": 0, "nmi": 2,
                     "soft_int": 4}[during.get("type", "hardware")]
                ev = "error_code" in during
                intinfo = during["vector"] | t << 8 | ev << 11 | 1 << 31 | (during.get("error_code", 0) << 32 if ev else 0)
            return exit_(0x40 + vector, info1, info2, intinfo, instr=(etype == "software" and not ud))
        return {"exit": False, "fault": "UD" if vector == 6 else ("PF" if vector == 14 else None),
                "completes": False, "value": None}

    def simple(bit_vector, bit, code, **kw):
        if bit_vector >> bit & 1:
            return exit_(code, **kw)
        return out

    if name in _MISC1 and name not in ("invlpg", "task_switch"):
        bit, code = _MISC1[name]
        instr = name in ("cpuid", "invd", "hlt", "rdpmc", "rdtsc")
        res = simple(m1, bit, code, instr=instr)
        if not res["exit"] and not instr:
            res = dict(res, completes=False)
        return res
    if name == "invlpg":
        return simple(m1, 25, 0x79, info1=event["addr"])
    if name in _MISC2:
        bit, code = _MISC2[name]
        return simple(m2, bit, code)
    if name == "mwait":
        if armed and m2 >> 12 & 1:
            return exit_(0x8C)
        return simple(m2, 11, 0x8B)
    if name == "pause":
        if m1 >> 23 & 1 and pause_count == 0:
            return exit_(0x77)
        return out
    if name == "invpcid":
        return simple(m3, 2, 0xA2)
    if name in ("rdrand", "rdseed"):
        return out
    if name == "getsec":
        return exception(6, ud=True)
    if name in ("vmcall", "svminstr"):
        instr = "vmmcall" if name == "vmcall" else event["name"]
        vec, bit, code = _SVM_INSTR[instr]
        word = m2 if vec == "MISC2" else m1
        if word >> bit & 1:
            return exit_(code)
        if instr in ("vmmcall", "rdpru") or not efer >> 12 & 1:
            return exception(6, ud=True)
        return out
    if name == "descriptor":
        bit, code = _DESCRIPTOR[event["instr"]]
        return simple(m1, bit, code)
    if name in ("rdmsr", "wrmsr"):
        write = int(name == "wrmsr")
        msr = event["msr"]
        if m1 >> 28 & 1:
            bit = msrpm_bit(msr, write)
            if bit is None or mem((g("MSRPM_BASE_PA") & ~0xFFF) + bit // 8) >> (bit % 8) & 1:
                return exit_(0x7C, info1=write)
        if not write:
            out = dict(out, value={0xC000_0080: efer, 0x277: g("G_PAT")}.get(msr, 0))
        return out
    if name == "io":
        port, size = event["port"], event.get("size", 1)
        if m1 >> 27 & 1:
            base = g("IOPM_BASE_PA") & ~0xFFF
            if any(mem(base + (p >> 3)) >> (p & 7) & 1 for p in range(port, port + size)):
                inp = event.get("dir", "out") == "in"
                string = event.get("string", False)
                a64, a32 = long64, (not long64) and cs >> 10 & 1
                a16 = not a64 and not a32
                info1 = (inp | string << 2 | event.get("rep", False) << 3 | (size == 1) << 4 | (size == 2) << 5
                         | (size == 4) << 6 | a16 << 7 | a32 << 8 | a64 << 9 | (3 if string and not inp else 0) << 10
                         | port << 16)
                return exit_(0x7B, info1=info1, info2=(rip + length) & MASK64)
        return out
    if name in ("cr_read", "cr_write"):
        n, gpr = event["cr"], event.get("gpr", 0)
        info1 = 1 << 63 | gpr
        if name == "cr_read":
            if g("INTERCEPT_CR_READ") >> n & 1:
                return exit_(n, info1=info1)
            return dict(out, value={0: g("CR0"), 2: g("CR2"), 3: g("CR3"), 4: g("CR4"), 8: g("INT_CTL") & 0xF}.get(n, 0))
        if g("INTERCEPT_CR_WRITE") >> n & 1:
            return exit_(0x10 + n, info1=info1)
        if n == 0 and m1 >> 5 & 1 and (event["value"] ^ g("CR0")) & ~0xA & MASK64:
            return exit_(0x65, info1=info1)
        return out
    if name == "clts":
        return simple(g("INTERCEPT_CR_WRITE"), 0, 0x10)
    if name == "lmsw":
        if g("INTERCEPT_CR_WRITE") & 1:
            return exit_(0x10)
        cr0, val = g("CR0"), event["value"]
        changes = ((cr0 | val) & 1) != (cr0 & 1) or (val >> 2 & 1) != (cr0 >> 2 & 1)
        if m1 >> 5 & 1 and changes:
            return exit_(0x65)
        return out
    if name in ("dr_read", "dr_write"):
        n, gpr = event["dr"], event.get("gpr", 0)
        field = "INTERCEPT_DR_READ" if name == "dr_read" else "INTERCEPT_DR_WRITE"
        if g(field) >> n & 1:
            return exit_((0x20 if name == "dr_read" else 0x30) + n, info1=gpr)
        if name == "dr_read":
            return dict(out, value={7: g("DR7"), 6: g("DR6")}.get(n, 0))
        return out
    if name == "task_switch":
        source = event.get("source", "call")
        if m1 >> 29 & 1:
            return exit_(0x7D, info1=event["selector"],
                         info2=(source == "iret") << 36 | (source == "jmp") << 38, instr=False)
        return dict(out, completes=False)
    if name == "exception":
        return exception(event["vector"], event.get("error_code", 0), event.get("type", "hardware"),
                         event.get("addr", 0), event.get("during"))
    if name == "run":
        ctl = g("INT_CTL")
        prio_ok = ctl >> 20 & 1 or (ctl >> 16 & 0xF) > (ctl & 0xF)
        if (m1 >> 4 & 1 and ctl >> 8 & 1 and g("RFLAGS") >> 9 & 1 and not g("INT_STATE") & 1 and prio_ok):
            return exit_(0x64, instr=False)
        return dict(out, completes=False)
    if name == "sipi":
        return dict(out, completes=False)
    raise ValueError(f"model has no rule for event {name!r}")
