"""The AMD SVM tables: VMCB layout, exit codes, VMCB clean-bit groups and the VMRUN consistency checks.

One source of truth for the SVM unit (:mod:`hwvirt.hdl.svm_unit`), the scenario runner
(:mod:`hwvirt.sim.svm_runner`), reports and tests.

* :data:`VMCB_FIELDS` — the named fields of the VMCB (AMD APM vol. 2 appendix B, "Layout of VMCB"):
  control area at offsets 0x000–0x3FF (table B-1), state-save area from 0x400 (table B-2). A field is
  (name, byte offset, size in bytes). Scenarios name fields by these names (``vmcb_write``).
* :class:`ExitCode` — the EXITCODE values (APM vol. 2 appendix C, "SVM Intercept Exit Codes").
  ``INVALID`` is −1: the 64-bit field holds 0xFFFF_FFFF_FFFF_FFFF.
* :class:`CleanBit` — the VMCB clean bits of APM vol. 2 §15.15.3 (field 0x0C0) and what each covers.
* :data:`CHECKS` — every VMRUN consistency check (APM vol. 2 §15.5.1, "Canonicalization and Consistency
  Checks"): ID, the VMCB fields it reads, the failing condition in words. A failing check makes VMRUN
  end in #VMEXIT(INVALID); the first failing check in catalogue order is the one reported (as
  ``1 + index``), and every failing check is reported as well.

Model configuration the checks depend on (see :class:`SVMConfig` in :mod:`hwvirt.hdl.svm_unit`):
MAXPHYADDR, long-mode support, nested-paging support, and the CR4 bits the modelled core implements.
"""

from dataclasses import dataclass

from amaranth.lib import enum


__all__ = ["VMCBField", "VMCB_FIELDS", "VMCB_BY_NAME", "field_offset", "ExitCode", "CleanBit",
           "Check", "CHECKS", "BY_ID", "CR4_RESERVED", "EFER_RESERVED", "PAT_TYPES", "TLB_CONTROL_VALUES",
           "EVENT_TYPES_VALID", "MSR_EFER", "MSR_VM_CR", "MSR_VM_HSAVE_PA", "EFER_SVME",
           "SVM_INSTRUCTIONS", "SVMInstruction", "NRIP_EXIT_CODES"]


# -- VMCB layout (APM vol. 2 appendix B) -----------------------------------------------------------

@dataclass(frozen=True)
class VMCBField:
    name: str
    offset: int
    size: int        # bytes


def _segment(name, offset):
    return [VMCBField(f"{name}_SELECTOR", offset, 2), VMCBField(f"{name}_ATTRIB", offset + 2, 2),
            VMCBField(f"{name}_LIMIT", offset + 4, 4), VMCBField(f"{name}_BASE", offset + 8, 8)]


VMCB_FIELDS = tuple([
    # control area (table B-1)
    VMCBField("INTERCEPT_CR_READ", 0x000, 2),
    VMCBField("INTERCEPT_CR_WRITE", 0x002, 2),
    VMCBField("INTERCEPT_DR_READ", 0x004, 2),
    VMCBField("INTERCEPT_DR_WRITE", 0x006, 2),
    VMCBField("INTERCEPT_EXCEPTIONS", 0x008, 4),
    VMCBField("INTERCEPT_MISC1", 0x00C, 4),        # vector 3: INTR … SHUTDOWN
    VMCBField("INTERCEPT_MISC2", 0x010, 4),        # vector 4: VMRUN … CR write traps
    VMCBField("INTERCEPT_MISC3", 0x014, 4),        # vector 5: INVLPGB … idle HLT
    VMCBField("PAUSE_FILTER_THRESHOLD", 0x03C, 2),
    VMCBField("PAUSE_FILTER_COUNT", 0x03E, 2),
    VMCBField("IOPM_BASE_PA", 0x040, 8),
    VMCBField("MSRPM_BASE_PA", 0x048, 8),
    VMCBField("TSC_OFFSET", 0x050, 8),
    VMCBField("GUEST_ASID", 0x058, 4),
    VMCBField("TLB_CONTROL", 0x05C, 1),
    VMCBField("INT_CTL", 0x060, 4),                # V_TPR 3:0, V_IRQ 8, V_INTR_PRIO 19:16, V_IGN_TPR 20, V_INTR_MASKING 24
    VMCBField("INT_VECTOR", 0x064, 4),
    VMCBField("INT_STATE", 0x068, 4),              # bit 0 interrupt shadow
    VMCBField("EXITCODE", 0x070, 8),
    VMCBField("EXITINFO1", 0x078, 8),
    VMCBField("EXITINFO2", 0x080, 8),
    VMCBField("EXITINTINFO", 0x088, 4),
    VMCBField("EXITINTINFO_ERR", 0x08C, 4),
    VMCBField("NP_CONTROL", 0x090, 8),             # bit 0 NP_ENABLE
    VMCBField("AVIC_APIC_BAR", 0x098, 8),
    VMCBField("GHCB_GPA", 0x0A0, 8),
    VMCBField("EVENTINJ", 0x0A8, 4),
    VMCBField("EVENTINJ_ERR", 0x0AC, 4),
    VMCBField("N_CR3", 0x0B0, 8),
    VMCBField("VIRT_EXT", 0x0B8, 8),               # bit 0 LBR virtualization, bit 1 virtual VMLOAD/VMSAVE
    VMCBField("VMCB_CLEAN", 0x0C0, 4),
    VMCBField("NRIP", 0x0C8, 8),
    VMCBField("INSN_LEN", 0x0D0, 1),
    # state-save area (table B-2)
    *_segment("ES", 0x400), *_segment("CS", 0x410), *_segment("SS", 0x420), *_segment("DS", 0x430),
    *_segment("FS", 0x440), *_segment("GS", 0x450), *_segment("GDTR", 0x460), *_segment("LDTR", 0x470),
    *_segment("IDTR", 0x480), *_segment("TR", 0x490),
    VMCBField("CPL", 0x4CB, 1),
    VMCBField("EFER", 0x4D0, 8),
    VMCBField("CR4", 0x548, 8),
    VMCBField("CR3", 0x550, 8),
    VMCBField("CR0", 0x558, 8),
    VMCBField("DR7", 0x560, 8),
    VMCBField("DR6", 0x568, 8),
    VMCBField("RFLAGS", 0x570, 8),
    VMCBField("RIP", 0x578, 8),
    VMCBField("RSP", 0x5D8, 8),
    VMCBField("RAX", 0x5F8, 8),
    VMCBField("STAR", 0x600, 8),
    VMCBField("LSTAR", 0x608, 8),
    VMCBField("CSTAR", 0x610, 8),
    VMCBField("SFMASK", 0x618, 8),
    VMCBField("KERNEL_GS_BASE", 0x620, 8),
    VMCBField("SYSENTER_CS", 0x628, 8),
    VMCBField("SYSENTER_ESP", 0x630, 8),
    VMCBField("SYSENTER_EIP", 0x638, 8),
    VMCBField("CR2", 0x640, 8),
    VMCBField("G_PAT", 0x668, 8),
    VMCBField("DBGCTL", 0x670, 8),
    VMCBField("BR_FROM", 0x678, 8),
    VMCBField("BR_TO", 0x680, 8),
    VMCBField("LASTEXCPFROM", 0x688, 8),
    VMCBField("LASTEXCPTO", 0x690, 8),
])

VMCB_BY_NAME = {f.name: f for f in VMCB_FIELDS}


def field_offset(name):
    """(offset, size) of a VMCB field named ``name`` (case-insensitive)."""
    f = VMCB_BY_NAME.get(name.upper())
    if f is None:
        raise ValueError(f"unknown VMCB field {name!r}")
    return f.offset, f.size


# -- MSRs and bits (APM vol. 2 §15.30, §15.4) --------------------------------------------------------

MSR_EFER = 0xC000_0080
MSR_VM_CR = 0xC001_0114
MSR_VM_HSAVE_PA = 0xC001_0117
EFER_SVME = 1 << 12

#: EFER bits that must be zero for a guest (bit 9 and bits 63:16) — the mask the hardware-derived
#: tests of kvm-unit-tests use (APM vol. 2 §15.5.1).
EFER_RESERVED = 0xFFFF_FFFF_FFFF_0200
#: CR4 bits the modelled core does not implement (must be zero): 13 (VMXE; no VMX on AMD), 14, 15,
#: 19, 25 and above (APM vol. 2 §3.1.3, the modelled feature set).
CR4_RESERVED = 0xFFFF_FFFF_FE08_E000
#: Valid memory-type encodings of a PAT entry (UC, WC, WT, WP, WB, UC-) (APM vol. 2 §7.8.1).
PAT_TYPES = (0, 1, 4, 5, 6, 7)
#: Architected TLB_CONTROL values (APM vol. 2 §15.16.1): nothing, everything, this guest's, this
#: guest's non-global entries.
TLB_CONTROL_VALUES = (0, 1, 3, 7)
#: EVENTINJ types (bits 10:8) that are defined: INTR, NMI, exception, software interrupt (§15.20).
EVENT_TYPES_VALID = (0, 2, 3, 4)


class SVMInstruction(enum.Enum, shape=4):
    """The SVM instructions a guest can execute (reported through the guest-event port with kind
    ``VMX_INSTRUCTION`` and this value in ``index``; the scenario event ``svminstr``)."""
    VMRUN   = 0
    VMMCALL = 1
    VMLOAD  = 2
    VMSAVE  = 3
    STGI    = 4
    CLGI    = 5
    SKINIT  = 6
    INVLPGA = 7
    RDPRU   = 8


#: Scenario name → guest SVM instruction.
SVM_INSTRUCTIONS = {i.name.lower(): i for i in SVMInstruction}


# -- exit codes (APM vol. 2 appendix C) ------------------------------------------------------------

class ExitCode(enum.IntEnum):
    """EXITCODE values. CR/DR/exception exits are ranges: ``CR0_READ + n``, ``CR0_WRITE + n``,
    ``DR0_READ + n``, ``DR0_WRITE + n``, ``EXCP_BASE + vector``, ``CR0_WRITE_TRAP + n``."""
    CR0_READ = 0x000
    CR0_WRITE = 0x010
    DR0_READ = 0x020
    DR0_WRITE = 0x030
    EXCP_BASE = 0x040
    INTR = 0x060
    NMI = 0x061
    SMI = 0x062
    INIT = 0x063
    VINTR = 0x064
    CR0_SEL_WRITE = 0x065
    IDTR_READ = 0x066
    GDTR_READ = 0x067
    LDTR_READ = 0x068
    TR_READ = 0x069
    IDTR_WRITE = 0x06A
    GDTR_WRITE = 0x06B
    LDTR_WRITE = 0x06C
    TR_WRITE = 0x06D
    RDTSC = 0x06E
    RDPMC = 0x06F
    PUSHF = 0x070
    POPF = 0x071
    CPUID = 0x072
    RSM = 0x073
    IRET = 0x074
    SWINT = 0x075
    INVD = 0x076
    PAUSE = 0x077
    HLT = 0x078
    INVLPG = 0x079
    INVLPGA = 0x07A
    IOIO = 0x07B
    MSR = 0x07C
    TASK_SWITCH = 0x07D
    FERR_FREEZE = 0x07E
    SHUTDOWN = 0x07F
    VMRUN = 0x080
    VMMCALL = 0x081
    VMLOAD = 0x082
    VMSAVE = 0x083
    STGI = 0x084
    CLGI = 0x085
    SKINIT = 0x086
    RDTSCP = 0x087
    ICEBP = 0x088
    WBINVD = 0x089
    MONITOR = 0x08A
    MWAIT = 0x08B
    MWAIT_CONDITIONAL = 0x08C
    XSETBV = 0x08D
    RDPRU = 0x08E
    EFER_WRITE_TRAP = 0x08F
    CR0_WRITE_TRAP = 0x090
    INVLPGB = 0x0A0
    INVLPGB_ILLEGAL = 0x0A1
    INVPCID = 0x0A2
    MCOMMIT = 0x0A3
    TLBSYNC = 0x0A4
    BUSLOCK = 0x0A5
    IDLE_HLT = 0x0A6
    NPF = 0x400
    AVIC_INCOMPLETE_IPI = 0x401
    AVIC_NOACCEL = 0x402
    VMGEXIT = 0x403
    INVALID = -1


#: Exit codes for which #VMEXIT saves nRIP (the next sequential RIP) in 0x0C8; for every other exit
#: nRIP is written as 0 (APM vol. 2 §15.7.1). Instruction intercepts, plus the exception exits of
#: INT3, INTO and BOUND (0x43–0x45), which the software-exception event type reports.
NRIP_EXIT_CODES = frozenset([*range(0x00, 0x40), 0x43, 0x44, 0x45, *range(0x65, 0x7D), *range(0x80, 0x8E),
                             0xA2])


class CleanBit(enum.IntEnum):
    """VMCB clean bits (field 0x0C0, APM vol. 2 §15.15.3, table 15-9)."""
    I = 0          # intercept vectors, TSC offset, pause-filter count
    IOPM = 1       # IOPM_BASE_PA, MSRPM_BASE_PA
    ASID = 2
    TPR = 3        # V_TPR, V_IRQ, V_INTR_PRIO, V_IGN_TPR, V_INTR_MASKING, V_INTR_VECTOR
    NP = 4         # NP_ENABLE, N_CR3, G_PAT
    CRX = 5        # CR0, CR3, CR4, EFER
    DRX = 6        # DR6, DR7
    DT = 7         # GDTR, IDTR
    SEG = 8        # CS, DS, SS, ES, CPL
    CR2 = 9
    LBR = 10
    AVIC = 11


# -- VMRUN consistency checks (APM vol. 2 §15.5.1) -------------------------------------------------

@dataclass(frozen=True)
class Check:
    id: str
    fields: tuple
    rule: str
    apm: str = "15.5.1"


def _c(id, fields, rule, apm="15.5.1"):
    return Check(id, tuple(fields), rule, apm)


CHECKS = (
    _c("SVM_EFER_SVME", ["EFER"], "guest EFER.SVME (bit 12) = 0"),
    _c("SVM_CR0_CD_NW", ["CR0"], "guest CR0.CD (bit 30) = 0 and CR0.NW (bit 29) = 1"),
    _c("SVM_CR0_HI", ["CR0"], "guest CR0 bits 63:32 are not 0"),
    _c("SVM_CR3_MBZ", ["CR3", "CR0", "EFER"], "a must-be-zero bit of guest CR3 is set: bits 63:52 when "
       "EFER.LME = 1 and CR0.PG = 1 (long mode), else bits 63:32"),
    _c("SVM_CR4_MBZ", ["CR4"], "guest CR4 sets a bit the core does not implement (CR4_RESERVED: 13–15, "
       "19, 25–63)"),
    _c("SVM_DR6_HI", ["DR6"], "guest DR6 bits 63:32 are not 0"),
    _c("SVM_DR7_HI", ["DR7"], "guest DR7 bits 63:32 are not 0"),
    _c("SVM_EFER_MBZ", ["EFER"], "guest EFER sets a must-be-zero bit (bit 9 or bits 63:16)"),
    _c("SVM_EFER_LM_NOLM", ["EFER"], "guest EFER.LMA or EFER.LME = 1 on a core without long mode"),
    _c("SVM_LME_PG_NOPAE", ["EFER", "CR0", "CR4"], "EFER.LME = 1, CR0.PG = 1 and CR4.PAE = 0"),
    _c("SVM_LME_PG_NOPE", ["EFER", "CR0"], "EFER.LME = 1, CR0.PG = 1 and CR0.PE = 0"),
    _c("SVM_LME_CS_LD", ["EFER", "CR0", "CR4", "CS_ATTRIB"], "EFER.LME, CR0.PG, CR4.PAE, CS.L "
       "(attribute bit 9) and CS.D (attribute bit 10) all = 1"),
    _c("SVM_NO_VMRUN_INTERCEPT", ["INTERCEPT_MISC2"], "the VMRUN intercept (vector 4 bit 0) = 0"),
    _c("SVM_MSRPM_RANGE", ["MSRPM_BASE_PA"], "the MSR permission map reaches 2^MAXPHYADDR: "
       "(MSRPM_BASE_PA & ~0xFFF) + 8 KiB >= 2^MAXPHYADDR", "15.11"),
    _c("SVM_IOPM_RANGE", ["IOPM_BASE_PA"], "the I/O permission map reaches 2^MAXPHYADDR: "
       "(IOPM_BASE_PA & ~0xFFF) + 8 KiB + 1 >= 2^MAXPHYADDR", "15.10.1"),
    _c("SVM_ASID_ZERO", ["GUEST_ASID"], "guest ASID = 0 (the host's)", "15.16"),
    _c("SVM_EVENTINJ_TYPE", ["EVENTINJ"], "EVENTINJ.V = 1 with a reserved type (1, 5, 6 or 7)", "15.20"),
    _c("SVM_EVENTINJ_VECTOR", ["EVENTINJ"], "EVENTINJ.V = 1, type 3 (exception) and vector 2 or "
       "vector > 31", "15.20"),
    _c("SVM_EVENTINJ_64BIT", ["EVENTINJ", "EFER", "CR0", "CS_ATTRIB"], "EVENTINJ.V = 1, type 3 and "
       "vector 4 (#OF) or 5 (#BR) while the guest is in 64-bit mode (Bochs' rule)", "15.20"),
    _c("SVM_NP_UNSUPPORTED", ["NP_CONTROL"], "NP_ENABLE = 1 on a core without nested paging", "15.25.3"),
    _c("SVM_NP_HOST_NOPG", ["NP_CONTROL"], "NP_ENABLE = 1 while host CR0.PG = 0", "15.25.3"),
    _c("SVM_GPAT", ["NP_CONTROL", "G_PAT"], "NP_ENABLE = 1 and a byte of G_PAT is not a valid memory "
       "type (2, 3, or bits 7:3 set)", "15.25.8"),
    _c("SVM_NCR3", ["NP_CONTROL", "N_CR3"], "NP_ENABLE = 1, host EFER.LMA = 1 and N_CR3 sets a bit at or "
       "above MAXPHYADDR", "15.25.3"),
    _c("SVM_TLBCTL", ["TLB_CONTROL"], "TLB_CONTROL is not 0, 1, 3 or 7", "15.16.1"),
)

BY_ID = {c.id: c for c in CHECKS}
assert len(BY_ID) == len(CHECKS)
