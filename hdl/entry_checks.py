"""The VM-entry consistency checker: every check of the catalogue as combinational logic.

Two components evaluate the rules of :data:`hwvirt.hdl.entry_check_catalogue.CHECKS` (Intel SDM vol. 3C,
chapter 27 "VM Entries"):

* :class:`EntryChecker` — every CONTROLS (§27.2.1), HOST (§27.2.2–§27.2.4) and GUEST (§27.3) check,
  all in parallel, from the current VMCS's field values and a few values the caller fetches from
  memory (the VMCS-link revision word, VTPR, the PDPTEs). One output bit per check, in catalogue order.
* :class:`MSRLoadChecker` — the checks of one 16-byte entry of the VM-entry MSR-load list (§27.4); the
  sequencer walks the list through it one entry at a time.

Neither decides the outcome: the sequencer takes the first failing group in the order of SDM §27.1
(controls → VMfailValid(7), host → VMfailValid(8), guest → exit reason 33, MSR-load → exit reason 34),
and within a group the first failing bit is the reported check.

Everything the configuration decides (allowed control settings, CR0/CR4 fixed bits, MAXPHYADDR,
IA32_VMX_MISC, IA32_VMX_EPT_VPID_CAP, IA32_VMX_BASIC[56]) is a constant at elaboration time.

Controls the configuration does not allow. A control whose allowed-1 setting in its capability MSR
is 0 (the control of a feature the configuration does not offer, or a reserved bit) is reserved,
and only the check of its control word against that MSR reports it: CTL_PIN_RSVD, CTL_PROC1_RSVD,
CTL_PROC2_RSVD, CTL_PROC3_RSVD, CTL_VMFUNC_RSVD, CTL_EXIT_RSVD, CTL_EXIT2_RSVD and CTL_ENTRY_RSVD
read the control words *as written*. Every other check that reads a control word is evaluated
twice, on the words as written and on the words *in effect* — each word ANDed with its allowed-1
mask (IA32_VMX_TRUE_*_CTLS when IA32_VMX_BASIC[55] = 1, as for the ``*_RSVD`` checks), so that a
control the processor does not allow reads as 0 — and fails only when its rule fails on both. A 1
in a control the processor does not allow therefore makes no check fail but its ``*_RSVD`` check:
not the checks that need the control to be 1 (CTL_VPID_ZERO for "enable VPID" = 1, the EPTP checks
for "enable EPT" = 1, …: they fail as written, not in effect), nor those that need it to be 0
(HOST_ADDRSZ_LMA for "host address-space size" = 0, CTL_SAVE_PT_NEEDS_PT for "activate
VMX-preemption timer" = 0: they fail in effect, not as written). A failing check's rule holds of
the VMCS as written and of the controls in effect alike. The outcome is the same either way — the
``*_RSVD`` check fails, and controls come first (SDM §27.1) — only the list of failing checks
depends on it.

No feature of the model offers the VM-entry controls "entry to SMM" (bit 10) and "deactivate
dual-monitor treatment" (bit 11), so CTL_ENTRY_SMM, GUEST_ACT_WFS_SMM and GUEST_INTR_SMI_ENTRY can
fail only on a configuration whose ``msr_overrides`` allow those controls.

Conventions of the rules, as implemented here:

* "phys-valid(a)": bits 63:MAXPHYADDR of *a* are 0; "4K(a)": bits 11:0 of *a* are 0.
* "canonical": bits 63:47 all equal (48-bit linear addresses). Only the guest RIP check uses 57 bits,
  when guest CR4.LA57 (bit 12) is 1: the modelled core does not offer LA57 in IA32_VMX_CR4_FIXED1, so
  the host (whose CR4 must pass the fixed-bit check) is always a 4-level-paging host.
* A segment is *usable* when access-rights bit 16 is 0; the guest is *virtual-8086* when RFLAGS bit 17
  is 1.
* Secondary controls read as 0 when "activate secondary controls" (primary bit 31) is 0, tertiary
  controls when "activate tertiary controls" (primary bit 17) is 0, secondary VM-exit controls when
  exit-control bit 31 is 0 and VM-function controls when "enable VM functions" (secondary bit 13) is 0
  (SDM §24.6.2, §24.7.1, §27.2.1.1): in the words as written by the gate as written, in the words in
  effect by the gate in effect.
* The modelled processor is never in SMM (no SMM support), so "outside SMM" is always true.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .capabilities import MSR, VMXCapabilities
from .entry_check_catalogue import CHECKS, CheckGroup
from .vmcs_fields import BY_NAME


__all__ = [
    "ENTRY_CHECKS", "MSR_LOAD_CHECKS", "entry_fields_layout", "EntryChecker", "MSRLoadChecker",
    "MSR_LOADABLE", "MSR_CANONICAL", "MSR_PAT_TYPES",
    "PERF_GLOBAL_CTRL_VALID", "DEBUGCTL_VALID", "EFER_VALID", "RFLAGS_RESERVED", "PDE_RESERVED",
    "PAT_TYPES", "HW_EXCEPTIONS_WITH_ERROR_CODE",
]


#: The checks :class:`EntryChecker` evaluates, in catalogue order: bit *i* of ``failures``.
ENTRY_CHECKS = tuple(c for c in CHECKS if c.group != CheckGroup.MSR_LOAD)
#: The checks :class:`MSRLoadChecker` evaluates, in catalogue order: bit *i* of its ``failures``.
MSR_LOAD_CHECKS = tuple(c for c in CHECKS if c.group == CheckGroup.MSR_LOAD)

# -- model choices for MSR values (shared with the reference model) ------------------------------------

#: IA32_PERF_GLOBAL_CTRL (0x38F) bits the modelled core implements: 4 general-purpose counters
#: (EN_PMC0-3, bits 3:0) and 3 fixed-function counters (EN_FIXED_CTR0-2, bits 34:32); the rest is
#: reserved (SDM vol. 3B §20.2.2, architectural performance monitoring version 2).
PERF_GLOBAL_CTRL_VALID = 0x0000_0007_0000_000F
#: IA32_DEBUGCTL (0x1D9) bits the model implements: LBR (0), BTF (1), TR … FREEZE_WHILE_SMM (6-15).
DEBUGCTL_VALID = 0x0000_0000_0000_FFC3
#: IA32_EFER (0xC000_0080) bits the model implements: SCE (0), LME (8), LMA (10), NXE (11).
EFER_VALID = 0x0000_0000_0000_0D01
#: Reserved RFLAGS bits: 63:22, 15, 5, 3 (SDM vol. 3C §27.3.1.4).
RFLAGS_RESERVED = 0xFFFF_FFFF_FFC0_8028
#: Reserved pending-debug-exceptions bits: 11:4, 13, 15, 63:16 (bit 16, RTM, is reserved: no RTM).
PDE_RESERVED = 0xFFFF_FFFF_FFFF_AFF0
#: Valid memory types of an IA32_PAT entry: UC, WC, WT, WP, WB, UC- (SDM vol. 3A §13.12.2).
PAT_TYPES = (0, 1, 4, 5, 6, 7)
#: Hardware exceptions that push an error code: #DF, #TS, #NP, #SS, #GP, #PF, #AC (SDM §27.2.1.3).
HW_EXCEPTIONS_WITH_ERROR_CODE = (8, 10, 11, 12, 13, 14, 17)

_SEL_RESERVED_RPL_TI = 0x7
_AR_RESERVED = 0xFFFE_0F00          # access-rights bits 31:17 and 11:8 (SDM §24.4.1)
_PDPTE_RESERVED_LOW = 0x1E6         # PAE PDPTE bits 8:5 and 2:1 (SDM vol. 3A §4.4.1)


#: The MSRs the model lets WRMSR (and so the VM-entry MSR-load list) write: index → (name, reserved
#: mask). A load of any other index, or of a value with a reserved bit set, raises #GP and fails
#: MSRLD_WRMSR_GP (SDM vol. 3C §27.4). Two further rules are not masks: the indices in
#: :data:`MSR_CANONICAL` need a canonical (48-bit) value, and every byte of IA32_PAT must be one of
#: :data:`MSR_PAT_TYPES` (its mask covers bits 7:3 of each byte; types 2 and 3 are checked apart).
#: IA32_FS_BASE, IA32_GS_BASE, the x2APIC range, IA32_SMM_MONITOR_CTL and the microcode MSRs are not in
#: the table: loading them fails their own check *and* MSRLD_WRMSR_GP.
MSR_LOADABLE = {
    0x0000_0010: ("IA32_TIME_STAMP_COUNTER", 0),
    0x0000_0048: ("IA32_SPEC_CTRL", 0xFFFF_FFFF_FFFF_FFF8),            # IBRS, STIBP, SSBD
    0x0000_0174: ("IA32_SYSENTER_CS", 0xFFFF_FFFF_0000_0000),           # bits 63:32 reserved
    0x0000_0175: ("IA32_SYSENTER_ESP", 0),                            # canonical
    0x0000_0176: ("IA32_SYSENTER_EIP", 0),                            # canonical
    0x0000_01D9: ("IA32_DEBUGCTL", ~DEBUGCTL_VALID & (2**64 - 1)),
    0x0000_0277: ("IA32_PAT", 0xF8F8_F8F8_F8F8_F8F8),                 # + types 2, 3 invalid
    0x0000_038F: ("IA32_PERF_GLOBAL_CTRL", ~PERF_GLOBAL_CTRL_VALID & (2**64 - 1)),
    0xC000_0080: ("IA32_EFER", ~EFER_VALID & (2**64 - 1)),
    0xC000_0081: ("IA32_STAR", 0),
    0xC000_0082: ("IA32_LSTAR", 0),                                   # canonical
    0xC000_0083: ("IA32_CSTAR", 0),                                   # canonical
    0xC000_0084: ("IA32_FMASK", 0xFFFF_FFFF_0000_0000),
    0xC000_0102: ("IA32_KERNEL_GS_BASE", 0),                          # canonical
    0xC000_0103: ("IA32_TSC_AUX", 0xFFFF_FFFF_0000_0000),
}
#: Loadable MSRs whose WRMSR raises #GP for a non-canonical (48-bit) value.
MSR_CANONICAL = frozenset({0x0000_0175, 0x0000_0176, 0xC000_0082, 0xC000_0083, 0xC000_0102})
#: The PAT MSR, whose bytes must each be a valid memory type (:data:`PAT_TYPES`).
MSR_PAT_TYPES = 0x0000_0277


def entry_fields_layout():
    """Layout of :attr:`EntryChecker.fields`: every VMCS field a CONTROLS, HOST or GUEST check reads.

    Fields are named as in :data:`~hwvirt.hdl.vmcs_fields.BY_NAME`, sorted by encoding (the first at
    bit 0), each as wide as its storage (16, 32 or 64 bits).
    """
    names = {name for check in ENTRY_CHECKS for name in check.fields}
    for name in names:
        if name not in BY_NAME:
            raise ValueError(f"catalogue names unknown VMCS field {name!r}")
    ordered = sorted(names, key=lambda name: BY_NAME[name].encoding)
    return data.StructLayout({name: BY_NAME[name].bits for name in ordered})


# -- helpers ---------------------------------------------------------------------------------------

def _false():
    return Const(0, 1)


def _any_set(value, mask):
    """Some bit of ``mask`` (a non-negative constant) is set in ``value``."""
    mask &= (1 << len(value)) - 1
    if mask == 0:
        return _false()
    return (value & mask) != 0


def _one_of(value, choices):
    """``value`` equals one of the constants ``choices`` (false for no choices)."""
    choices = tuple(choices)
    if not choices:
        return _false()
    return value.matches(*choices)


def _noncanonical(addr, bits=48):
    """Bits 63:bits-1 of the 64-bit ``addr`` are not all equal."""
    top = addr[bits - 1:64]
    return top.any() & ~top.all()


def _violates(value, must1, may1):
    """A control word or CR value breaks its fixed-1 (``must1``) / allowed-1 (``may1``) masks."""
    full = (1 << len(value)) - 1
    return ((value & must1) != must1) | _any_set(value, full & ~may1)


class _Segment:
    """Named access to one guest segment register (SDM §24.4.1; access-rights format: facts §2.3)."""

    def __init__(self, v, name):
        has = lambda part: f"GUEST_{name}_{part}" in v.layout_names
        self.selector = v[f"GUEST_{name}_SELECTOR"] if has("SELECTOR") else None
        self.base = v[f"GUEST_{name}_BASE"] if has("BASE") else None
        self.limit = v[f"GUEST_{name}_LIMIT"] if has("LIMIT") else None
        self.ar = v[f"GUEST_{name}_AR_BYTES"] if has("AR_BYTES") else None

    rpl = property(lambda self: self.selector[0:2])
    ti = property(lambda self: self.selector[2])
    type = property(lambda self: self.ar[0:4])
    s = property(lambda self: self.ar[4])
    dpl = property(lambda self: self.ar[5:7])
    p = property(lambda self: self.ar[7])
    l = property(lambda self: self.ar[13])
    d = property(lambda self: self.ar[14])
    g = property(lambda self: self.ar[15])
    usable = property(lambda self: ~self.ar[16])
    ar_reserved = property(lambda self: _any_set(self.ar, _AR_RESERVED))

    @property
    def limit_g_bad(self):
        """G = 1 with limit[11:0] ≠ 0xFFF, or G = 0 with limit[31:20] ≠ 0 (SDM §27.3.1.2)."""
        return Mux(self.g, self.limit[0:12] != 0xFFF, self.limit[20:32] != 0)


#: The control words (SDM §24.6, §24.7.1, §24.8.1), by VMCS field name.
_CONTROL_WORDS = frozenset({
    "PIN_BASED_VM_EXEC_CONTROL", "CPU_BASED_VM_EXEC_CONTROL", "SECONDARY_VM_EXEC_CONTROL",
    "TERTIARY_VM_EXEC_CONTROL", "VM_EXIT_CONTROLS", "SECONDARY_VM_EXIT_CONTROLS", "VM_ENTRY_CONTROLS",
    "VM_FUNCTION_CONTROL",
})
#: The checks of a control word against its capability MSR: they read the words as written only.
_WORD_CHECKS = frozenset({
    "CTL_PIN_RSVD", "CTL_PROC1_RSVD", "CTL_PROC2_RSVD", "CTL_PROC3_RSVD", "CTL_VMFUNC_RSVD",
    "CTL_EXIT_RSVD", "CTL_EXIT2_RSVD", "CTL_ENTRY_RSVD",
})
#: The _View attributes derived from the control words.
_CONTROL_ATTRS = frozenset({"pin", "proc", "proc2", "proc3", "exit", "exit2", "entry", "vmfunc",
                            "ept", "ug", "ia32e_guest", "host64", "load_debug", "entry_to_smm"})


class _View:
    """What a check builder sees: fields by name (``v["GUEST_CR0"]`` or ``v.GUEST_CR0``), the other
    inputs, derived control bits (with the SDM's "treated as 0" gating) and the configuration.

    ``controls`` says which control words the view holds: ``"written"`` (as in the VMCS),
    ``"effective"`` (each ANDed with its allowed-1 mask) or None — a view for the checks whose
    catalogue row names no control word, where reading one is an error (the catalogue would be
    wrong, and the check would escape the as-written-and-in-effect rule of the module docstring)."""

    def __init__(self, checker, controls):
        self.caps = checker.capabilities
        self.maxphyaddr = self.caps.maxphyaddr
        self._fields = checker.fields
        self.layout_names = {name for name, _ in entry_fields_layout()}
        self.host_lma = checker.host_lma
        self.current_vmcs = checker.current_vmcs
        self.link_revision = checker.link_revision
        self.vtpr = checker.vtpr
        self.pdptes = [checker.pdptes[i] for i in range(4)]
        self.controls = controls

        if controls is not None:
            assert controls in ("written", "effective"), controls
            word = lambda name, msr: self._in_effect(self._fields[name], msr, controls)
            self.pin = word("PIN_BASED_VM_EXEC_CONTROL", MSR.IA32_VMX_PINBASED_CTLS)
            self.proc = word("CPU_BASED_VM_EXEC_CONTROL", MSR.IA32_VMX_PROCBASED_CTLS)
            self.proc2 = Mux(self.proc[31], word("SECONDARY_VM_EXEC_CONTROL",
                                                 MSR.IA32_VMX_PROCBASED_CTLS2), 0)
            self.proc3 = Mux(self.proc[17], word("TERTIARY_VM_EXEC_CONTROL",
                                                 MSR.IA32_VMX_PROCBASED_CTLS3), 0)
            self.exit = word("VM_EXIT_CONTROLS", MSR.IA32_VMX_EXIT_CTLS)
            self.exit2 = Mux(self.exit[31], word("SECONDARY_VM_EXIT_CONTROLS", MSR.IA32_VMX_EXIT_CTLS2), 0)
            self.entry = word("VM_ENTRY_CONTROLS", MSR.IA32_VMX_ENTRY_CTLS)
            self.vmfunc = Mux(self.proc2[13], word("VM_FUNCTION_CONTROL", MSR.IA32_VMX_VMFUNC), 0)

            self.ept = self.proc2[1]
            self.ug = self.proc2[7]                     # unrestricted guest
            self.ia32e_guest = self.entry[9]
            self.host64 = self.exit[9]                  # host address-space size
            self.load_debug = self.entry[2]
            self.entry_to_smm = self.entry[10]

        inj = self["VM_ENTRY_INTR_INFO_FIELD"]
        self.inj = inj
        self.inj_valid = inj[31]
        self.inj_vector = inj[0:8]
        self.inj_type = inj[8:11]
        self.inj_deliver = inj[11]

        self.cr0 = self["GUEST_CR0"]
        self.cr4 = self["GUEST_CR4"]
        self.rflags = self["GUEST_RFLAGS"]
        self.v86 = self.rflags[17]
        self.intr = self["GUEST_INTERRUPTIBILITY_INFO"]
        self.act = self["GUEST_ACTIVITY_STATE"]
        self.link = self["VMCS_LINK_POINTER"]
        self.link_valid = self.link != 0xFFFF_FFFF_FFFF_FFFF
        self._segs = {}

    def __getitem__(self, name):
        if name in _CONTROL_WORDS:
            raise AssertionError(f"a check reads control word {name} directly: use the derived words")
        return self._fields[name]

    def __getattr__(self, name):
        if name.isupper():
            return self[name]
        if name in _CONTROL_ATTRS:
            raise AssertionError(f"a check whose catalogue row names no control word reads {name!r}")
        raise AttributeError(name)

    def seg(self, name):
        """Guest segment ``name`` (ES, CS, SS, DS, FS, GS, LDTR, TR)."""
        if name not in self._segs:
            self._segs[name] = _Segment(self, name)
        return self._segs[name]

    def segs(self, *names):
        return [self.seg(name) for name in names]

    def phys_invalid(self, addr):
        """Bits 63:MAXPHYADDR of ``addr`` are not all 0."""
        return addr[self.maxphyaddr:].any()

    def bad_4k(self, addr):
        """``addr`` is not 4K-aligned or not phys-valid."""
        return (addr[0:12] != 0) | self.phys_invalid(addr)

    def injecting(self, kind):
        """Event injection is valid and of interruption type ``kind``."""
        return self.inj_valid & (self.inj_type == kind)

    def _in_effect(self, value, msr, controls):
        """Control word ``value`` as written, or in effect: every control the allowed-1 mask of
        capability MSR ``msr`` does not allow reads as 0."""
        if controls == "written":
            return value
        may1 = self.caps.control_masks(msr)[1] & ((1 << len(value)) - 1)
        return value & Const(may1, len(value))

    def ctl(self, value, msr):
        """``value`` breaks the (must-be-1, may-be-1) masks of capability MSR ``msr``."""
        return _violates(value, *self.caps.control_masks(msr))

    def msr_list_bad(self, count, addr):
        """An MSR list with ``count`` > 0 entries at ``addr`` is misaligned or not phys-valid
        (its first or last byte; SDM §27.2.1.2, §27.2.1.3)."""
        last = addr + (count << 4) - 1
        return (count != 0) & ((addr[0:4] != 0) | self.phys_invalid(addr)
                               | last[self.maxphyaddr:].any())


def _pat_bad(value):
    """Some byte of the 64-bit PAT ``value`` is not a valid memory type."""
    bad = []
    for i in range(8):
        byte = value[8 * i:8 * i + 8]
        bad.append(~_one_of(byte, PAT_TYPES))
    return Cat(*bad).any()


def _cet_bad(s_cet, ssp, isst):
    """S_CET reserved bits 9:6 or non-canonical, SSP non-canonical or bits 1:0 set, ISST address
    non-canonical (SDM §27.2.2, §27.3.1.1)."""
    return ((s_cet[6:10] != 0) | _noncanonical(s_cet) | _noncanonical(ssp) | (ssp[0:2] != 0)
            | _noncanonical(isst))


# -- the checks: one builder per catalogue ID ------------------------------------------------------

_BUILDERS = {}


def _check(check_id):
    def register(builder):
        assert check_id not in _BUILDERS, check_id
        _BUILDERS[check_id] = builder
        return builder
    return register


# VM-execution control fields (SDM §27.2.1.1)

@_check("CTL_PIN_RSVD")
def _(v): return v.ctl(v.pin, MSR.IA32_VMX_PINBASED_CTLS)

@_check("CTL_PROC1_RSVD")
def _(v): return v.ctl(v.proc, MSR.IA32_VMX_PROCBASED_CTLS)

@_check("CTL_PROC2_RSVD")
def _(v): return v.proc[31] & v.ctl(v.proc2, MSR.IA32_VMX_PROCBASED_CTLS2)

@_check("CTL_PROC3_RSVD")
def _(v): return v.proc[17] & v.ctl(v.proc3, MSR.IA32_VMX_PROCBASED_CTLS3)

@_check("CTL_CR3_TARGET_CNT")
def _(v): return v.CR3_TARGET_COUNT > v.caps.cr3_target_count

@_check("CTL_IOBMP_ADDR")
def _(v): return v.proc[25] & (v.bad_4k(v.IO_BITMAP_A) | v.bad_4k(v.IO_BITMAP_B))

@_check("CTL_MSRBMP_ADDR")
def _(v): return v.proc[28] & v.bad_4k(v.MSR_BITMAP)

@_check("CTL_VAPIC_ADDR")
def _(v): return v.proc[21] & v.bad_4k(v.VIRTUAL_APIC_PAGE_ADDR)

@_check("CTL_TPR_THRESH_RSVD")
def _(v): return v.proc[21] & ~v.proc2[9] & (v.TPR_THRESHOLD[4:32] != 0)

@_check("CTL_TPR_THRESH_VTPR")
def _(v): return v.proc[21] & ~v.proc2[9] & ~v.proc2[0] & (v.TPR_THRESHOLD[0:4] > v.vtpr[4:8])

@_check("CTL_APICV_NEEDS_TPR")
def _(v): return ~v.proc[21] & (v.proc2[4] | v.proc2[8] | v.proc2[9])

@_check("CTL_X2APIC_VS_APICACC")
def _(v): return v.proc2[4] & v.proc2[0]

@_check("CTL_APICACC_ADDR")
def _(v): return v.proc2[0] & v.bad_4k(v.APIC_ACCESS_ADDR)

@_check("CTL_VID_NEEDS_EXTINT")
def _(v): return v.proc2[9] & ~v.pin[0]

@_check("CTL_PI_NEEDS_VID")
def _(v): return v.pin[7] & ~v.proc2[9]

@_check("CTL_PI_NEEDS_ACK")
def _(v): return v.pin[7] & ~v.exit[15]

@_check("CTL_PI_VECTOR")
def _(v): return v.pin[7] & (v.POSTED_INTR_NV[8:16] != 0)

@_check("CTL_PI_DESC_ADDR")
def _(v):
    addr = v.POSTED_INTR_DESC_ADDR
    return v.pin[7] & ((addr[0:6] != 0) | v.phys_invalid(addr))

@_check("CTL_VNMI_NEEDS_NMIEXIT")
def _(v): return ~v.pin[3] & v.pin[5]

@_check("CTL_NMIWIN_NEEDS_VNMI")
def _(v): return ~v.pin[5] & v.proc[22]

@_check("CTL_VPID_ZERO")
def _(v): return v.proc2[5] & (v.VIRTUAL_PROCESSOR_ID == 0)

@_check("CTL_EPTP_MEMTYPE")
def _(v):
    cap = v.caps.ept_vpid_cap
    allowed = [t for t, bit in ((0, 8), (6, 14)) if (cap >> bit) & 1]
    return v.ept & ~_one_of(v.EPT_POINTER[0:3], allowed)

@_check("CTL_EPTP_WALKLEN")
def _(v):
    cap = v.caps.ept_vpid_cap
    allowed = [n for n, bit in ((3, 6), (4, 7)) if (cap >> bit) & 1]
    return v.ept & ~_one_of(v.EPT_POINTER[3:6], allowed)

@_check("CTL_EPTP_AD")
def _(v):
    ad_supported = (v.caps.ept_vpid_cap >> 21) & 1
    return v.ept & v.EPT_POINTER[6] if not ad_supported else _false()

@_check("CTL_EPTP_RSVD")
def _(v):
    eptp = v.EPT_POINTER
    sss_supported = (v.caps.ept_vpid_cap >> 23) & 1
    bit7 = _false() if sss_supported else eptp[7]
    return v.ept & ((eptp[8:12] != 0) | bit7 | v.phys_invalid(eptp))

@_check("CTL_UG_NEEDS_EPT")
def _(v): return v.ug & ~v.ept

@_check("CTL_MBEC_NEEDS_EPT")
def _(v): return v.proc2[22] & ~v.ept

@_check("CTL_PML_NEEDS_EPT")
def _(v): return v.proc2[17] & ~v.ept

@_check("CTL_PML_ADDR")
def _(v): return v.proc2[17] & v.bad_4k(v.PML_ADDRESS)

@_check("CTL_SPP")
def _(v): return v.proc2[23] & (~v.ept | v.bad_4k(v.SPPT_POINTER))

@_check("CTL_SHADOW_BMP")
def _(v): return v.proc2[14] & (v.bad_4k(v.VMREAD_BITMAP) | v.bad_4k(v.VMWRITE_BITMAP))

@_check("CTL_VE_INFO_ADDR")
def _(v): return v.proc2[18] & v.bad_4k(v.VE_INFORMATION_ADDRESS)

@_check("CTL_VMFUNC_RSVD")
def _(v): return v.proc2[13] & v.ctl(v.vmfunc, MSR.IA32_VMX_VMFUNC)

@_check("CTL_EPTP_SWITCH")
def _(v): return v.vmfunc[0] & (~v.ept | v.bad_4k(v.EPTP_LIST_ADDRESS))

@_check("CTL_TSC_MULT_ZERO")
def _(v): return v.proc2[25] & (v.TSC_MULTIPLIER == 0)

# VM-exit control fields (SDM §27.2.1.2)

@_check("CTL_EXIT_RSVD")
def _(v): return v.ctl(v.exit, MSR.IA32_VMX_EXIT_CTLS)

@_check("CTL_EXIT2_RSVD")
def _(v): return v.exit[31] & v.ctl(v.exit2, MSR.IA32_VMX_EXIT_CTLS2)

@_check("CTL_SAVE_PT_NEEDS_PT")
def _(v): return v.exit[22] & ~v.pin[6]

@_check("CTL_EXIT_MSRST_ADDR")
def _(v): return v.msr_list_bad(v.VM_EXIT_MSR_STORE_COUNT, v.VM_EXIT_MSR_STORE_ADDR)

@_check("CTL_EXIT_MSRLD_ADDR")
def _(v): return v.msr_list_bad(v.VM_EXIT_MSR_LOAD_COUNT, v.VM_EXIT_MSR_LOAD_ADDR)

# VM-entry control fields (SDM §27.2.1.3)

@_check("CTL_ENTRY_RSVD")
def _(v): return v.ctl(v.entry, MSR.IA32_VMX_ENTRY_CTLS)

@_check("CTL_ENTRY_SMM")
def _(v): return v.entry_to_smm | v.entry[11]          # never in SMM

@_check("CTL_ENTRY_MSRLD_ADDR")
def _(v): return v.msr_list_bad(v.VM_ENTRY_MSR_LOAD_COUNT, v.VM_ENTRY_MSR_LOAD_ADDR)

@_check("CTL_INJ_TYPE_RSVD")
def _(v):
    other_ok = v.caps.supports("monitor_trap_flag")
    return v.injecting(1) | (v.injecting(7) if not other_ok else _false())

@_check("CTL_INJ_NMI_VEC")
def _(v): return v.injecting(2) & (v.inj_vector != 2)

@_check("CTL_INJ_HWEXC_VEC")
def _(v): return v.injecting(3) & (v.inj_vector > 31)

@_check("CTL_INJ_OTHER_VEC")
def _(v): return v.injecting(7) & (v.inj_vector != 0)

@_check("CTL_INJ_ERRCODE")
def _(v):
    if v.caps.basic_bit(56):
        return v.inj_valid & v.inj_deliver & (v.inj_type != 3)
    expected = ((v.inj_type == 3) & _one_of(v.inj_vector, HW_EXCEPTIONS_WITH_ERROR_CODE)
                & (~v.ug | v.cr0[0]))
    return v.inj_valid & (v.inj_deliver != expected)

@_check("CTL_INJ_RSVD")
def _(v): return v.inj_valid & (v.inj[12:31] != 0)

@_check("CTL_INJ_ERRCODE_HI")
def _(v): return v.inj_valid & v.inj_deliver & (v.VM_ENTRY_EXCEPTION_ERROR_CODE[16:32] != 0)

@_check("CTL_INJ_ILEN")
def _(v):
    length = v.VM_ENTRY_INSTRUCTION_LEN
    zero_ok = (v.caps.misc >> 30) & 1
    bad = (length > 15) | ((length == 0) if not zero_ok else _false())
    return v.inj_valid & _one_of(v.inj_type, (4, 5, 6)) & bad

# Host state (SDM §27.2.2 – §27.2.4)

@_check("HOST_ADDRSZ_LMA")
def _(v): return v.host_lma & ~v.host64

@_check("HOST_ADDRSZ_LEGACY")
def _(v): return ~v.host_lma & (v.host64 | v.ia32e_guest)

@_check("HOST_CR0_FIXED")
def _(v): return _violates(v.HOST_CR0, *v.caps.cr0_fixed)

@_check("HOST_CR4_FIXED")
def _(v): return _violates(v.HOST_CR4, *v.caps.cr4_fixed)

@_check("HOST_CR3_WIDTH")
def _(v): return v.phys_invalid(v.HOST_CR3)

@_check("HOST_CET_WP")
def _(v): return v.exit[28] & v.HOST_CR4[23] & ~v.HOST_CR0[16]

@_check("HOST_CET_FIELDS")
def _(v): return v.exit[28] & _cet_bad(v.HOST_S_CET, v.HOST_SSP, v.HOST_INTR_SSP_TABLE)

@_check("HOST_SYSENTER_CANON")
def _(v): return _noncanonical(v.HOST_IA32_SYSENTER_ESP) | _noncanonical(v.HOST_IA32_SYSENTER_EIP)

@_check("HOST_PERFGC_RSVD")
def _(v): return v.exit[12] & _any_set(v.HOST_IA32_PERF_GLOBAL_CTRL, ~PERF_GLOBAL_CTRL_VALID)

@_check("HOST_PAT")
def _(v): return v.exit[19] & _pat_bad(v.HOST_IA32_PAT)

@_check("HOST_EFER")
def _(v):
    efer = v.HOST_IA32_EFER
    return v.exit[21] & (_any_set(efer, ~EFER_VALID) | (efer[10] != v.host64) | (efer[8] != v.host64))

@_check("HOST_PKRS")
def _(v): return v.exit[29] & (v.HOST_IA32_PKRS[32:64] != 0)

@_check("HOST_SEL_RPL_TI")
def _(v):
    return Cat(*(_any_set(v[f"HOST_{s}_SELECTOR"], _SEL_RESERVED_RPL_TI)
                 for s in ("ES", "CS", "SS", "DS", "FS", "GS", "TR"))).any()

@_check("HOST_CS_NULL")
def _(v): return v.HOST_CS_SELECTOR == 0

@_check("HOST_TR_NULL")
def _(v): return v.HOST_TR_SELECTOR == 0

@_check("HOST_SS_NULL")
def _(v): return (v.HOST_SS_SELECTOR == 0) & ~v.host64

@_check("HOST_BASE_CANON")
def _(v):
    return Cat(*(_noncanonical(v[f"HOST_{r}_BASE"]) for r in ("FS", "GS", "TR", "GDTR", "IDTR"))).any()

@_check("HOST64_PAE")
def _(v): return v.host64 & ~v.HOST_CR4[5]

@_check("HOST64_RIP")
def _(v): return v.host64 & _noncanonical(v.HOST_RIP)

@_check("HOST32_GUEST64")
def _(v): return ~v.host64 & v.ia32e_guest

@_check("HOST32_PCIDE")
def _(v): return ~v.host64 & v.HOST_CR4[17]

@_check("HOST32_RIP")
def _(v): return ~v.host64 & (v.HOST_RIP[32:64] != 0)

# Guest control registers, debug registers and MSRs (SDM §27.3.1.1)

@_check("GUEST_CR0_FIXED")
def _(v):
    must1, may1 = v.caps.cr0_fixed
    pe_pg = must1 & 0x8000_0001
    return (_violates(v.cr0, must1 & ~pe_pg, may1)
            | (~v.ug & ((v.cr0 & pe_pg) != pe_pg) if pe_pg else _false()))

@_check("GUEST_CR0_PG_NO_PE")
def _(v): return v.cr0[31] & ~v.cr0[0]

@_check("GUEST_CR4_FIXED")
def _(v): return _violates(v.cr4, *v.caps.cr4_fixed)

@_check("GUEST_CET_WP")
def _(v): return v.cr4[23] & ~v.cr0[16]

@_check("GUEST_DR7_HI")
def _(v): return v.load_debug & (v.GUEST_DR7[32:64] != 0)

@_check("GUEST_DEBUGCTL_RSVD")
def _(v): return v.load_debug & _any_set(v.GUEST_IA32_DEBUGCTL, ~DEBUGCTL_VALID)

@_check("GUEST_CR3_WIDTH")
def _(v): return v.phys_invalid(v.GUEST_CR3)

@_check("GUEST_SYSENTER_CANON")
def _(v): return _noncanonical(v.GUEST_SYSENTER_ESP) | _noncanonical(v.GUEST_SYSENTER_EIP)

@_check("GUEST_PERFGC_RSVD")
def _(v): return v.entry[13] & _any_set(v.GUEST_IA32_PERF_GLOBAL_CTRL, ~PERF_GLOBAL_CTRL_VALID)

@_check("GUEST_PAT")
def _(v): return v.entry[14] & _pat_bad(v.GUEST_IA32_PAT)

@_check("GUEST_EFER_RSVD")
def _(v): return v.entry[15] & _any_set(v.GUEST_IA32_EFER, ~EFER_VALID)

@_check("GUEST_EFER_LMA")
def _(v): return v.entry[15] & (v.GUEST_IA32_EFER[10] != v.ia32e_guest)

@_check("GUEST_EFER_LME")
def _(v): return v.entry[15] & v.cr0[31] & (v.GUEST_IA32_EFER[8] != v.ia32e_guest)

@_check("GUEST_BNDCFGS")
def _(v):
    bnd = v.GUEST_BNDCFGS
    return v.entry[16] & ((bnd[2:5] != 0) | _noncanonical(bnd))

@_check("GUEST_CET_FIELDS")
def _(v): return v.entry[20] & _cet_bad(v.GUEST_S_CET, v.GUEST_SSP, v.GUEST_INTR_SSP_TABLE)

@_check("GUEST_PKRS")
def _(v): return v.entry[22] & (v.GUEST_IA32_PKRS[32:64] != 0)

@_check("GUEST_IA32E_PG_PAE")
def _(v): return v.ia32e_guest & (~v.cr0[31] | ~v.cr4[5])

@_check("GUEST_32_PCIDE")
def _(v): return ~v.ia32e_guest & v.cr4[17]

# Guest segment registers (SDM §27.3.1.2)

_DATA_SEGS = ("DS", "ES", "FS", "GS")
_NONCS_SEGS = ("SS",) + _DATA_SEGS
_V86_SEGS = ("CS", "SS", "DS", "ES", "FS", "GS")


def _cs_or_usable(v, predicate):
    """``predicate`` holds for CS, or for one of SS, DS, ES, FS, GS that is usable."""
    cs = v.seg("CS")
    return Cat(predicate(cs), *(s.usable & predicate(s) for s in v.segs(*_NONCS_SEGS))).any()


def _any_usable(v, names, predicate):
    return Cat(*(s.usable & predicate(s) for s in v.segs(*names))).any()


@_check("GUEST_TR_TI")
def _(v): return v.seg("TR").ti

@_check("GUEST_LDTR_TI")
def _(v):
    ldtr = v.seg("LDTR")
    return ldtr.usable & ldtr.ti

@_check("GUEST_SS_RPL")
def _(v): return ~v.v86 & ~v.ug & (v.seg("SS").rpl != v.seg("CS").rpl)

@_check("GUEST_V86_BASE")
def _(v): return v.v86 & Cat(*(s.base != (s.selector << 4) for s in v.segs(*_V86_SEGS))).any()

@_check("GUEST_V86_LIMIT")
def _(v): return v.v86 & Cat(*(s.limit != 0xFFFF for s in v.segs(*_V86_SEGS))).any()

@_check("GUEST_V86_AR")
def _(v): return v.v86 & Cat(*(s.ar != 0xF3 for s in v.segs(*_V86_SEGS))).any()

@_check("GUEST_BASE_CANON")
def _(v):
    ldtr = v.seg("LDTR")
    return (Cat(*(_noncanonical(s.base) for s in v.segs("TR", "FS", "GS"))).any()
            | (ldtr.usable & _noncanonical(ldtr.base)))

@_check("GUEST_BASE_HI")
def _(v):
    return ((v.seg("CS").base[32:64] != 0)
            | _any_usable(v, ("SS", "DS", "ES"), lambda s: s.base[32:64] != 0))

@_check("GUEST_CS_TYPE")
def _(v):
    cs_type = v.seg("CS").type
    return ~v.v86 & ~cs_type.matches(9, 11, 13, 15) & ~(v.ug & (cs_type == 3))

@_check("GUEST_SS_TYPE")
def _(v):
    ss = v.seg("SS")
    return ~v.v86 & ss.usable & ~ss.type.matches(3, 7)

@_check("GUEST_DSEG_ACCESSED")
def _(v): return ~v.v86 & _any_usable(v, _DATA_SEGS, lambda s: ~s.type[0])

@_check("GUEST_DSEG_CODE_READ")
def _(v): return ~v.v86 & _any_usable(v, _DATA_SEGS, lambda s: s.type[3] & ~s.type[1])

@_check("GUEST_SEG_S")
def _(v): return ~v.v86 & _cs_or_usable(v, lambda s: ~s.s)

@_check("GUEST_CS_DPL_UG")
def _(v):
    cs = v.seg("CS")
    return ~v.v86 & (cs.type == 3) & (cs.dpl != 0)

@_check("GUEST_CS_DPL_NONCONF")
def _(v):
    cs, ss = v.segs("CS", "SS")
    return ~v.v86 & cs.type.matches(9, 11) & (cs.dpl != ss.dpl)

@_check("GUEST_CS_DPL_CONF")
def _(v):
    cs, ss = v.segs("CS", "SS")
    return ~v.v86 & cs.type.matches(13, 15) & (cs.dpl > ss.dpl)

@_check("GUEST_SS_DPL_RPL")
def _(v):
    ss = v.seg("SS")
    return ~v.v86 & ~v.ug & (ss.dpl != ss.rpl)

@_check("GUEST_SS_DPL_REAL")
def _(v):
    cs, ss = v.segs("CS", "SS")
    return ~v.v86 & ((cs.type == 3) | ~v.cr0[0]) & (ss.dpl != 0)

@_check("GUEST_DSEG_DPL")
def _(v):
    return ~v.v86 & ~v.ug & _any_usable(v, _DATA_SEGS, lambda s: (s.type <= 11) & (s.dpl < s.rpl))

@_check("GUEST_SEG_P")
def _(v): return ~v.v86 & _cs_or_usable(v, lambda s: ~s.p)

@_check("GUEST_SEG_AR_RSVD")
def _(v): return ~v.v86 & _cs_or_usable(v, lambda s: s.ar_reserved)

@_check("GUEST_CS_L_D")
def _(v):
    cs = v.seg("CS")
    return v.ia32e_guest & cs.l & cs.d

@_check("GUEST_SEG_G")
def _(v): return ~v.v86 & _cs_or_usable(v, lambda s: s.limit_g_bad)

@_check("GUEST_TR_UNUSABLE")
def _(v): return ~v.seg("TR").usable

@_check("GUEST_TR_TYPE")
def _(v):
    tr_type = v.seg("TR").type
    return ~((tr_type == 11) | ((tr_type == 3) & ~v.ia32e_guest))

@_check("GUEST_TR_S_P_AR_G")
def _(v):
    tr = v.seg("TR")
    return tr.s | ~tr.p | tr.ar_reserved | tr.limit_g_bad

@_check("GUEST_LDTR_AR")
def _(v):
    ldtr = v.seg("LDTR")
    return ldtr.usable & ((ldtr.type != 2) | ldtr.s | ~ldtr.p | ldtr.ar_reserved | ldtr.limit_g_bad)

# Guest descriptor-table registers (SDM §27.3.1.3)

@_check("GUEST_GDTR_IDTR_CANON")
def _(v): return _noncanonical(v.GUEST_GDTR_BASE) | _noncanonical(v.GUEST_IDTR_BASE)

@_check("GUEST_GDTR_IDTR_LIMIT")
def _(v): return (v.GUEST_GDTR_LIMIT[16:32] != 0) | (v.GUEST_IDTR_LIMIT[16:32] != 0)

# Guest RIP and RFLAGS (SDM §27.3.1.4)

@_check("GUEST_RIP_HI")
def _(v): return (~v.ia32e_guest | ~v.seg("CS").l) & (v.GUEST_RIP[32:64] != 0)

@_check("GUEST_RIP_CANON")
def _(v):
    rip = v.GUEST_RIP
    return (v.ia32e_guest & v.seg("CS").l
            & Mux(v.cr4[12], _noncanonical(rip, 57), _noncanonical(rip, 48)))

@_check("GUEST_RFLAGS_RSVD")
def _(v): return _any_set(v.rflags, RFLAGS_RESERVED)

@_check("GUEST_RFLAGS_BIT1")
def _(v): return ~v.rflags[1]

@_check("GUEST_RFLAGS_VM")
def _(v): return v.v86 & (v.ia32e_guest | ~v.cr0[0])

@_check("GUEST_RFLAGS_IF_INJ")
def _(v): return v.injecting(0) & ~v.rflags[9]

# Guest non-register state (SDM §27.3.1.5)

@_check("GUEST_ACT_RANGE")
def _(v):
    supported = [0] + [state for state in (1, 2, 3) if (v.caps.misc >> (5 + state)) & 1]
    return ~_one_of(v.act, supported)

@_check("GUEST_ACT_HLT_DPL")
def _(v): return (v.act == 1) & (v.seg("SS").dpl != 0)

@_check("GUEST_ACT_BLOCKING")
def _(v): return (v.intr[0] | v.intr[1]) & (v.act != 0)

@_check("GUEST_ACT_INJ")
def _(v):
    vector, kind = v.inj_vector, v.inj_type
    hlt_ok = ((kind == 0) | (kind == 2) | ((kind == 3) & vector.matches(1, 18))
              | ((kind == 7) & (vector == 0)))
    shutdown_ok = (kind == 2) | ((kind == 3) & (vector == 18))
    return v.inj_valid & (((v.act == 1) & ~hlt_ok) | ((v.act == 2) & ~shutdown_ok) | (v.act == 3))

@_check("GUEST_ACT_WFS_SMM")
def _(v): return v.entry_to_smm & (v.act == 3)

@_check("GUEST_INTR_RSVD")
def _(v): return v.intr[5:32] != 0

@_check("GUEST_INTR_STI_MOVSS")
def _(v): return v.intr[0] & v.intr[1]

@_check("GUEST_INTR_STI_IF")
def _(v): return v.intr[0] & ~v.rflags[9]

@_check("GUEST_INTR_EXTINT")
def _(v): return v.injecting(0) & (v.intr[0] | v.intr[1])

@_check("GUEST_INTR_NMI_MOVSS")
def _(v): return v.injecting(2) & v.intr[1]

@_check("GUEST_INTR_NMI_STI")
def _(v): return v.injecting(2) & v.intr[0]

@_check("GUEST_INTR_SMI_NOT_SMM")
def _(v): return v.intr[2]                               # never in SMM

@_check("GUEST_INTR_SMI_ENTRY")
def _(v): return v.entry_to_smm & ~v.intr[2]

@_check("GUEST_INTR_VNMI_BLOCK")
def _(v): return v.pin[5] & v.injecting(2) & v.intr[3]

@_check("GUEST_INTR_ENCLAVE")
def _(v): return v.intr[4]                               # no SGX

def _pde_precondition(v):
    """Blocking by STI or MOV SS, or activity state HLT (SDM §27.3.1.5, pending debug exceptions)."""
    return v.intr[0] | v.intr[1] | (v.act == 1)

@_check("GUEST_PDE_RSVD")
def _(v): return _any_set(v.GUEST_PENDING_DBG_EXCEPTIONS, PDE_RESERVED)

@_check("GUEST_PDE_BS_SET")
def _(v):
    tf, btf = v.rflags[8], v.GUEST_IA32_DEBUGCTL[1]
    return _pde_precondition(v) & tf & ~btf & ~v.GUEST_PENDING_DBG_EXCEPTIONS[14]

@_check("GUEST_PDE_BS_CLR")
def _(v):
    tf, btf = v.rflags[8], v.GUEST_IA32_DEBUGCTL[1]
    return _pde_precondition(v) & (~tf | btf) & v.GUEST_PENDING_DBG_EXCEPTIONS[14]

@_check("GUEST_LINK_ALIGN")
def _(v): return v.link_valid & v.bad_4k(v.link)

@_check("GUEST_LINK_REV")
def _(v): return v.link_valid & (v.link_revision[0:31] != v.caps.revision_id)

@_check("GUEST_LINK_SHADOW")
def _(v): return v.link_valid & (v.link_revision[31] != v.proc2[14])

@_check("GUEST_LINK_SELF")
def _(v): return v.link_valid & (v.link == v.current_vmcs)

# Guest PDPTEs (SDM §27.3.1.6)

@_check("GUEST_PDPTE_RSVD")
def _(v):
    pae = v.cr0[31] & v.cr4[5] & ~v.ia32e_guest
    bad = [pdpte[0] & (_any_set(pdpte, _PDPTE_RESERVED_LOW) | v.phys_invalid(pdpte))
           for pdpte in v.pdptes]
    return pae & Cat(*bad).any()


def _check_builders():
    ids = [check.id for check in ENTRY_CHECKS]
    missing = [i for i in ids if i not in _BUILDERS]
    extra = [i for i in _BUILDERS if i not in ids]
    if missing or extra:
        raise AssertionError(f"entry-check builders out of step with the catalogue: "
                             f"missing {missing}, not in the catalogue {extra}")


class EntryChecker(wiring.Component):
    """Evaluates every CONTROLS, HOST and GUEST check of the catalogue in parallel, combinationally.

    The rules are those of :data:`~hwvirt.hdl.entry_check_catalogue.CHECKS` (Intel SDM vol. 3C §27.2
    "Checks on VMX controls and host-state area" and §27.3 "Checking and loading guest state"); see the
    module docstring for the conventions. The capability-dependent parts are constants of
    ``capabilities``.

    Parameters
    ----------
    capabilities : VMXCapabilities

    Members
    -------
    fields : In(entry_fields_layout())
        The current VMCS's field values; fields absent from the configuration are driven 0.
    host_lma : In(1)
        The processor is in IA-32e mode (IA32_EFER.LMA of the host executing VMLAUNCH/VMRESUME).
    current_vmcs : In(64)
        The current-VMCS pointer (GUEST_LINK_SELF).
    link_revision : In(32)
        The 32-bit word at the VMCS link pointer; only looked at when the pointer is not all ones.
    vtpr : In(8)
        Byte 0x80 of the virtual-APIC page (CTL_TPR_THRESH_VTPR).
    pdptes : In(data.ArrayLayout(64, 4))
        The four PDPTEs in effect: GUEST_PDPTR0-3 when "enable EPT" = 1, else the four quadwords at
        guest CR3[31:5] in guest memory (GUEST_PDPTE_RSVD).
    failures : Out(len(ENTRY_CHECKS))
        Bit *i* is 1 when check ``ENTRY_CHECKS[i]`` (the *i*-th non-MSR_LOAD check of the catalogue,
        in catalogue order) fails.

    Raises
    ------
    TypeError
        If ``capabilities`` is not a :class:`VMXCapabilities`.
    """

    def __init__(self, capabilities):
        if not isinstance(capabilities, VMXCapabilities):
            raise TypeError(f"capabilities must be a VMXCapabilities, not {capabilities!r}")
        _check_builders()
        self._capabilities = capabilities
        super().__init__({
            "fields":        In(entry_fields_layout()),
            "host_lma":      In(1),
            "current_vmcs":  In(64),
            "link_revision": In(32),
            "vtpr":          In(8),
            "pdptes":        In(data.ArrayLayout(64, 4)),
            "failures":      Out(len(ENTRY_CHECKS)),
        })

    @property
    def capabilities(self):
        return self._capabilities

    @staticmethod
    def bit(check_id):
        """Index of ``check_id`` in ``failures``."""
        for i, check in enumerate(ENTRY_CHECKS):
            if check.id == check_id:
                return i
        raise KeyError(check_id)

    def elaborate(self, platform):
        _check_builders()
        m = Module()
        views = {controls: _View(self, controls) for controls in ("written", "effective", None)}
        bits = []
        for check in ENTRY_CHECKS:
            build = lambda controls: Value.cast(_BUILDERS[check.id](views[controls]))
            if check.id in _WORD_CHECKS:
                value = build("written")
            elif _CONTROL_WORDS & set(check.fields):
                # A control the configuration does not allow makes the check fail neither by being
                # 1 (as written) nor by reading as 0 (in effect): module docstring.
                value = build("written") & build("effective")
            else:
                value = build(None)
            if len(value) != 1:
                raise AssertionError(f"{check.id}: builder gave a {len(value)}-bit value")
            fail = Signal(name=f"fail_{check.id.lower()}")
            m.d.comb += fail.eq(value)
            bits.append(fail)
        m.d.comb += self.failures.eq(Cat(*bits))
        return m


class MSRLoadChecker(wiring.Component):
    """Checks one 16-byte VM-entry MSR-load list entry (SDM vol. 3C §27.4).

    The entry format (SDM §24.8.2): bits 31:0 the MSR index, bits 63:32 reserved, bits 127:64 the
    value. Whether WRMSR of the value would raise #GP is decided by :data:`MSR_LOADABLE`,
    :data:`MSR_CANONICAL` and the PAT memory-type rule (:data:`MSR_PAT_TYPES`).

    Parameters
    ----------
    capabilities : VMXCapabilities
        For the recommended list maximum 512 × (IA32_VMX_MISC[27:25] + 1).

    Members
    -------
    number : In(32)
        1-based number of the entry in the list.
    msr : In(32)
        Entry bits 31:0.
    reserved : In(32)
        Entry bits 63:32.
    value : In(64)
        Entry bits 127:64.
    failures : Out(len(MSR_LOAD_CHECKS))
        Bit *i* is 1 when check ``MSR_LOAD_CHECKS[i]`` fails for this entry.
    """

    def __init__(self, capabilities):
        if not isinstance(capabilities, VMXCapabilities):
            raise TypeError(f"capabilities must be a VMXCapabilities, not {capabilities!r}")
        self._capabilities = capabilities
        super().__init__({
            "number":   In(32),
            "msr":      In(32),
            "reserved": In(32),
            "value":    In(64),
            "failures": Out(len(MSR_LOAD_CHECKS)),
        })

    @property
    def capabilities(self):
        return self._capabilities

    @staticmethod
    def bit(check_id):
        """Index of ``check_id`` in ``failures``."""
        for i, check in enumerate(MSR_LOAD_CHECKS):
            if check.id == check_id:
                return i
        raise KeyError(check_id)

    def _wrmsr_gp(self, m):
        gp = Signal(name="wrmsr_gp")
        with m.Switch(self.msr):
            for index, (_name, reserved_mask) in MSR_LOADABLE.items():
                with m.Case(index):
                    bad = _any_set(self.value, reserved_mask)
                    if index in MSR_CANONICAL:
                        bad = bad | _noncanonical(self.value)
                    if index == MSR_PAT_TYPES:
                        bad = bad | _pat_bad(self.value)
                    m.d.comb += gp.eq(bad)
            with m.Default():
                m.d.comb += gp.eq(1)
        return gp

    def elaborate(self, platform):
        m = Module()
        limit = 512 * (((self._capabilities.misc >> 25) & 0x7) + 1)
        msr = self.msr
        rules = {
            "MSRLD_RSVD":     self.reserved != 0,
            "MSRLD_FSGS":     msr.matches(0xC000_0100, 0xC000_0101),
            "MSRLD_X2APIC":   msr[8:32] == 0x8,
            "MSRLD_SMM_MON":  msr == 0x9B,
            "MSRLD_UCODE":    msr.matches(0x79, 0x8B),
            "MSRLD_WRMSR_GP": self._wrmsr_gp(m),
            "MSRLD_TOO_MANY": self.number > limit,
        }
        ids = [check.id for check in MSR_LOAD_CHECKS]
        if set(ids) != set(rules):
            raise AssertionError(f"MSR-load rules out of step with the catalogue: {sorted(ids)} "
                                 f"vs {sorted(rules)}")
        m.d.comb += self.failures.eq(Cat(*(rules[i] for i in ids)))
        return m
