"""A plain-Python reference model of the VM-entry consistency checks (no Amaranth).

Written from the check catalogue (:data:`hwvirt.hdl.entry_check_catalogue.CHECKS`: one rule in
words per check) and the architecture it cites (Intel SDM vol. 3C §27.2–§27.4, summarised in the
project's fact sheet §3–§5). It is the oracle the gateware tests compare against and deliberately
shares nothing with the gateware except the catalogue, the capability configuration and the one
configuration table :data:`hwvirt.hdl.entry_checks.MSR_LOADABLE` (which MSRs the model lets the
VM-entry MSR-load list write, and their reserved bits).

Every catalogue check is one small function below, named after its ID, taking ``(caps, v)`` where
``v`` is a :class:`View` of the VMCS fields and the environment, and returning ``True`` when the
check FAILS.

Conventions (shared with the gateware's specification)
-----------------------------------------------------
* Fields the configuration does not have read as 0 (the VMCS unit drives them 0); every field is
  truncated to its VMCS width.
* Secondary controls read as 0 when primary bit 31 is 0, tertiary controls when primary bit 17 is
  0, secondary VM-exit controls when exit bit 31 is 0, the VM-function controls when
  'enable VM functions' is 0 (after the secondary gate).
* A control the capability MSRs do not allow to be 1 is reserved, and only the check of its word
  against the MSR reports it: CTL_PIN_RSVD, CTL_PROC1_RSVD, CTL_PROC2_RSVD, CTL_PROC3_RSVD,
  CTL_VMFUNC_RSVD, CTL_EXIT_RSVD, CTL_EXIT2_RSVD, CTL_ENTRY_RSVD read the words as written
  (:func:`written_controls`). Every other check fails when its rule fails both on the words as
  written and on the words in effect (:func:`effective_controls`: each word ANDed with its
  allowed-1 settings as RDMSR reports them — the TRUE MSR when IA32_VMX_BASIC[55] = 1 — gated by
  the gate bits in effect). A control the processor does not allow thus makes a check fail neither
  by being 1 nor by reading as 0: with 'enable VPID' not allowed, secondary bit 5 with VPID 0 fails
  CTL_PROC2_RSVD and nothing else (not CTL_VPID_ZERO); without 'host address-space size', a 64-bit
  host fails CTL_EXIT_RSVD and not HOST_ADDRSZ_LMA.
* canonical(a): bits 63:47 of *a* are equal; the guest RIP uses bits 63:56 when guest CR4.LA57
  (bit 12) is 1. phys-valid(a): bits 63:MAXPHYADDR of *a* are 0. 4K(a): bits 11:0 of *a* are 0.
* A segment is usable when access-rights bit 16 is 0; virtual-8086 = guest RFLAGS bit 17.
* The modelled processor is never in SMM.

Interpretations where the catalogue's words leave room (see also the notes on the functions)
------------------------------------------------------------------------------------------
* The VMCS-link-pointer checks, GUEST_LINK_SELF included, apply only when the pointer is not all
  ones (SDM §27.3.1.5 opens the whole list with that condition).
* CTL_INJ_TYPE_RSVD's "without monitor-trap-flag support" is the capability (allowed-1 bit 27 of
  the primary processor-based controls), not the current MTF control (SDM §27.2.1.3).
* CTL_INJ_ERRCODE_HI, like every injection check, applies only when the injection is valid.
* GUEST_ACT_INJ restricts only activity states 1–3; an out-of-range state is GUEST_ACT_RANGE's
  business alone.
* CTL_EPTP_WALKLEN: 3 is accepted only with EPT_VPID_CAP bit 6, 4 only with bit 7.
* GUEST_PDPTE_RSVD takes the PDPTEs from the VMCS fields GUEST_PDPTR0-3 when 'enable EPT' is 1 and
  from the ``pdptes`` input otherwise (the input is "the PDPTEs in effect"; the tests keep it equal
  to the fields whenever EPT is on, so a checker that always reads the input agrees).
* The CR0/CR4 fixed checks use the full 64-bit FIXED MSR values, so bits 63:32 must be 0.
* MSRLD_WRMSR_GP is "WRMSR would raise #GP": besides an index outside ``MSR_LOADABLE`` and a value
  with a bit of the table's reserved mask set, a non-canonical value in an address MSR and a
  reserved PAT memory type (SDM vol. 2 WRMSR; vol. 3A §13.12.2).
"""

from hwvirt.hdl.capabilities import MSR
from hwvirt.hdl.entry_check_catalogue import BY_ID, CHECKS, CheckGroup
from hwvirt.hdl.vmcs_fields import BY_NAME


__all__ = [
    "View", "NON_MSR_CHECKS", "MSR_CHECKS", "reference_failures", "reference_msr_entry",
    "first_failure", "canonical", "phys_valid", "effective_controls", "written_controls",
    "control_settings", "WORD_CHECKS",
]

MASK64 = (1 << 64) - 1
LINK_NONE = MASK64

NON_MSR_CHECKS = tuple(c for c in CHECKS if c.group != CheckGroup.MSR_LOAD)
MSR_CHECKS = tuple(c for c in CHECKS if c.group == CheckGroup.MSR_LOAD)

PIN, PROC, PROC2, PROC3 = ("PIN_BASED_VM_EXEC_CONTROL", "CPU_BASED_VM_EXEC_CONTROL",
                           "SECONDARY_VM_EXEC_CONTROL", "TERTIARY_VM_EXEC_CONTROL")
EXITC, EXITC2, ENTRYC = "VM_EXIT_CONTROLS", "SECONDARY_VM_EXIT_CONTROLS", "VM_ENTRY_CONTROLS"
VMFUNC, INJ = "VM_FUNCTION_CONTROL", "VM_ENTRY_INTR_INFO_FIELD"

DATA_SEGS = ("DS", "ES", "FS", "GS")
V86_SEGS = ("CS", "SS", "DS", "ES", "FS", "GS")
AR_RSVD = 0xFFFE_0F00          # access-rights bits 31:17 and 11:8

# Model-specific register layouts the catalogue fixes.
DEBUGCTL_IMPLEMENTED = 0x3 | (0x3FF << 6)                    # bits 0-1, 6-15
EFER_DEFINED = (1 << 0) | (1 << 8) | (1 << 10) | (1 << 11)   # SCE, LME, LMA, NXE
PERF_GLOBAL_CTRL_VALID = 0xF | (0x7 << 32)                   # 4 general + 3 fixed counters
PDE_DEFINED = 0xF | (1 << 12) | (1 << 14)                    # B3-B0, enabled bp, BS (no RTM)
RFLAGS_RSVD = 0xFFFF_FFFF_FFC0_8028                          # 63:22, 15, 5, 3
ERRCODE_VECTORS = frozenset({8, 10, 11, 12, 13, 14, 17})


# -- helpers --------------------------------------------------------------------------------------

def bit(value, n):
    return (value >> n) & 1


def canonical(address, width=48):
    """Bits 63:width-1 of ``address`` all equal (48: 4-level paging, 57: 5-level paging)."""
    top = (address & MASK64) >> (width - 1)
    return top == 0 or top == (1 << (65 - width)) - 1


def phys_valid(caps, address):
    return (address & MASK64) >> caps.maxphyaddr == 0


def page_ok(caps, address):
    """4K-aligned and phys-valid."""
    return address & 0xFFF == 0 and phys_valid(caps, address)


def violates(value, masks):
    must1, may1 = masks
    return (value & must1) != must1 or (value & ~may1 & MASK64) != 0


def pat_bad(value):
    return any(((value >> (8 * i)) & 0xFF) not in (0, 1, 4, 5, 6, 7) for i in range(8))


def list_area_bad(caps, count, address):
    """An MSR list area (16-byte entries): address bits 3:0, the address or its last byte not phys-valid."""
    if count == 0:
        return False
    return address & 0xF != 0 or not phys_valid(caps, address) \
        or not phys_valid(caps, address + 16 * count - 1)


#: Control word → (capability MSR, its TRUE counterpart or None) (SDM vol. 3D A.3–A.5, A.11).
_CONTROL_MSRS = {
    PIN: (MSR.IA32_VMX_PINBASED_CTLS, MSR.IA32_VMX_TRUE_PINBASED_CTLS),
    PROC: (MSR.IA32_VMX_PROCBASED_CTLS, MSR.IA32_VMX_TRUE_PROCBASED_CTLS),
    PROC2: (MSR.IA32_VMX_PROCBASED_CTLS2, None),
    PROC3: (MSR.IA32_VMX_PROCBASED_CTLS3, None),
    EXITC: (MSR.IA32_VMX_EXIT_CTLS, MSR.IA32_VMX_TRUE_EXIT_CTLS),
    EXITC2: (MSR.IA32_VMX_EXIT_CTLS2, None),
    ENTRYC: (MSR.IA32_VMX_ENTRY_CTLS, MSR.IA32_VMX_TRUE_ENTRY_CTLS),
    VMFUNC: (MSR.IA32_VMX_VMFUNC, None),
}
#: The 64-bit capability MSRs that report allowed-1 settings only (every bit of the MSR).
_ALLOWED1_ONLY = (MSR.IA32_VMX_PROCBASED_CTLS3, MSR.IA32_VMX_EXIT_CTLS2, MSR.IA32_VMX_VMFUNC)


def control_settings(caps, word):
    """(must-be-1, may-be-1) masks of control word ``word`` (a field name), read as a VMM reads them:
    RDMSR of the capability MSR — the TRUE one when IA32_VMX_BASIC[55] = 1 — with allowed-0 settings
    in bits 31:0 and allowed-1 settings in bits 63:32, or allowed-1 settings only for 0x491–0x493. An
    MSR the processor does not implement allows nothing."""
    msr, true_msr = _CONTROL_MSRS[word]
    if true_msr is not None and bit(caps.rdmsr(MSR.IA32_VMX_BASIC), 55):
        msr = true_msr
    value = caps.rdmsr(msr) or 0
    if msr in _ALLOWED1_ONLY:
        return 0, value
    return value & 0xFFFF_FFFF, value >> 32


def written_controls(caps, fields):
    """The control words as written, after the architectural gates: {name: value}."""
    get = lambda n: _field(caps, fields, n)
    proc = get(PROC)
    proc2 = get(PROC2) if bit(proc, 31) else 0
    proc3 = get(PROC3) if bit(proc, 17) else 0
    exitc = get(EXITC)
    exitc2 = get(EXITC2) if bit(exitc, 31) else 0
    vmfunc = get(VMFUNC) if bit(proc2, 13) else 0
    return {PIN: get(PIN), PROC: proc, PROC2: proc2, PROC3: proc3, EXITC: exitc, EXITC2: exitc2,
            ENTRYC: get(ENTRYC), VMFUNC: vmfunc}


def effective_controls(caps, fields):
    """The control words in effect: {name: value}. Each word keeps only the controls its capability
    MSR allows to be 1; a gated word reads as 0 unless its gate is in effect."""
    def get(name):
        return _field(caps, fields, name) & control_settings(caps, name)[1]

    proc = get(PROC)
    proc2 = get(PROC2) if bit(proc, 31) else 0
    proc3 = get(PROC3) if bit(proc, 17) else 0
    exitc = get(EXITC)
    exitc2 = get(EXITC2) if bit(exitc, 31) else 0
    vmfunc = get(VMFUNC) if bit(proc2, 13) else 0
    return {PIN: get(PIN), PROC: proc, PROC2: proc2, PROC3: proc3, EXITC: exitc, EXITC2: exitc2,
            ENTRYC: get(ENTRYC), VMFUNC: vmfunc}


def _field(caps, fields, name):
    field = BY_NAME[name]
    if not caps.field_supported(field):
        return 0
    return fields.get(name, 0) & ((1 << field.bits) - 1)


class Segment:
    """One guest segment register: selector, base, limit, access rights."""

    def __init__(self, view, name):
        self.sel = view[f"GUEST_{name}_SELECTOR"]
        self.base = view[f"GUEST_{name}_BASE"]
        self.limit = view[f"GUEST_{name}_LIMIT"]
        self.ar = view[f"GUEST_{name}_AR_BYTES"]

    rpl = property(lambda self: self.sel & 3)
    ti = property(lambda self: bit(self.sel, 2))
    type = property(lambda self: self.ar & 0xF)
    s = property(lambda self: bit(self.ar, 4))
    dpl = property(lambda self: (self.ar >> 5) & 3)
    p = property(lambda self: bit(self.ar, 7))
    l = property(lambda self: bit(self.ar, 13))
    db = property(lambda self: bit(self.ar, 14))
    g = property(lambda self: bit(self.ar, 15))
    usable = property(lambda self: not bit(self.ar, 16))

    @property
    def limit_g_bad(self):
        """G = 1 with limit[11:0] not all ones, or G = 0 with limit[31:20] not 0."""
        if self.g:
            return self.limit & 0xFFF != 0xFFF
        return self.limit >> 20 != 0


class View:
    """The checker's inputs as a mapping: fields (absent → 0, truncated), the control words as
    written or in effect (``controls``: "written" or "effective"; gates applied)."""

    def __init__(self, caps, fields, *, controls, host_lma, current_vmcs, link_revision, vtpr, pdptes):
        self.caps = caps
        self.fields = fields
        self.ctl = {"written": written_controls, "effective": effective_controls}[controls](caps, fields)
        self.host_lma = host_lma & 1
        self.current_vmcs = current_vmcs & MASK64
        self.link_revision = link_revision & 0xFFFF_FFFF
        self.vtpr = vtpr & 0xFF
        self.pdptes = [p & MASK64 for p in pdptes]
        assert len(self.pdptes) == 4
        self._memo, self._segs = {}, {}

    def __getitem__(self, name):
        if name in self.ctl:
            return self.ctl[name]
        value = self._memo.get(name)
        if value is None:
            value = self._memo[name] = _field(self.caps, self.fields, name)
        return value

    def seg(self, name):
        segment = self._segs.get(name)
        if segment is None:
            segment = self._segs[name] = Segment(self, name)
        return segment

    # -- named control bits ------------------------------------------------------------------
    pin = property(lambda self: self.ctl[PIN])
    proc = property(lambda self: self.ctl[PROC])
    proc2 = property(lambda self: self.ctl[PROC2])
    exitc = property(lambda self: self.ctl[EXITC])
    entry = property(lambda self: self.ctl[ENTRYC])
    ug = property(lambda self: bit(self.ctl[PROC2], 7))
    ept = property(lambda self: bit(self.ctl[PROC2], 1))
    ia32e_guest = property(lambda self: bit(self.ctl[ENTRYC], 9))
    host64 = property(lambda self: bit(self.ctl[EXITC], 9))
    rflags = property(lambda self: self["GUEST_RFLAGS"])
    v86 = property(lambda self: bit(self["GUEST_RFLAGS"], 17))
    cr0 = property(lambda self: self["GUEST_CR0"])
    cr4 = property(lambda self: self["GUEST_CR4"])
    intr = property(lambda self: self["GUEST_INTERRUPTIBILITY_INFO"])
    activity = property(lambda self: self["GUEST_ACTIVITY_STATE"])
    link = property(lambda self: self["VMCS_LINK_POINTER"])

    @property
    def inj(self):
        """(vector, type, deliver-error-code) of a valid injection, else None."""
        info = self[INJ]
        if not bit(info, 31):
            return None
        return info & 0xFF, (info >> 8) & 7, bit(info, 11)


# == VM-execution control fields (SDM §27.2.1.1) ===================================================

# The checks of a control word against its capability MSR (WORD_CHECKS) see the words as written.

def _word_violates(caps, v, word):
    return violates(v.ctl[word], control_settings(caps, word))


def CTL_PIN_RSVD(caps, v):
    return _word_violates(caps, v, PIN)


def CTL_PROC1_RSVD(caps, v):
    return _word_violates(caps, v, PROC)


def CTL_PROC2_RSVD(caps, v):
    return bit(v.proc, 31) and _word_violates(caps, v, PROC2)


def CTL_PROC3_RSVD(caps, v):
    return bit(v.proc, 17) and _word_violates(caps, v, PROC3)


def CTL_CR3_TARGET_CNT(caps, v):
    return v["CR3_TARGET_COUNT"] > caps.cr3_target_count


def CTL_IOBMP_ADDR(caps, v):
    return bit(v.proc, 25) and not (page_ok(caps, v["IO_BITMAP_A"]) and page_ok(caps, v["IO_BITMAP_B"]))


def CTL_MSRBMP_ADDR(caps, v):
    return bit(v.proc, 28) and not page_ok(caps, v["MSR_BITMAP"])


def CTL_VAPIC_ADDR(caps, v):
    return bit(v.proc, 21) and not page_ok(caps, v["VIRTUAL_APIC_PAGE_ADDR"])


def CTL_TPR_THRESH_RSVD(caps, v):
    return bit(v.proc, 21) and not bit(v.proc2, 9) and v["TPR_THRESHOLD"] >> 4 != 0


def CTL_TPR_THRESH_VTPR(caps, v):
    return (bit(v.proc, 21) and not bit(v.proc2, 9) and not bit(v.proc2, 0)
            and (v["TPR_THRESHOLD"] & 0xF) > (v.vtpr >> 4))


def CTL_APICV_NEEDS_TPR(caps, v):
    return not bit(v.proc, 21) and (bit(v.proc2, 4) or bit(v.proc2, 8) or bit(v.proc2, 9))


def CTL_X2APIC_VS_APICACC(caps, v):
    return bit(v.proc2, 4) and bit(v.proc2, 0)


def CTL_APICACC_ADDR(caps, v):
    return bit(v.proc2, 0) and not page_ok(caps, v["APIC_ACCESS_ADDR"])


def CTL_VID_NEEDS_EXTINT(caps, v):
    return bit(v.proc2, 9) and not bit(v.pin, 0)


def CTL_PI_NEEDS_VID(caps, v):
    return bit(v.pin, 7) and not bit(v.proc2, 9)


def CTL_PI_NEEDS_ACK(caps, v):
    return bit(v.pin, 7) and not bit(v.exitc, 15)


def CTL_PI_VECTOR(caps, v):
    return bit(v.pin, 7) and (v["POSTED_INTR_NV"] >> 8) & 0xFF != 0


def CTL_PI_DESC_ADDR(caps, v):
    address = v["POSTED_INTR_DESC_ADDR"]
    return bit(v.pin, 7) and (address & 0x3F != 0 or not phys_valid(caps, address))


def CTL_VNMI_NEEDS_NMIEXIT(caps, v):
    return not bit(v.pin, 3) and bit(v.pin, 5)


def CTL_NMIWIN_NEEDS_VNMI(caps, v):
    return not bit(v.pin, 5) and bit(v.proc, 22)


def CTL_VPID_ZERO(caps, v):
    return bit(v.proc2, 5) and v["VIRTUAL_PROCESSOR_ID"] == 0


def CTL_EPTP_MEMTYPE(caps, v):
    memtype = v["EPT_POINTER"] & 7
    allowed = (memtype == 0 and bit(caps.ept_vpid_cap, 8)) or (memtype == 6 and bit(caps.ept_vpid_cap, 14))
    return v.ept and not allowed


def CTL_EPTP_WALKLEN(caps, v):
    walk = (v["EPT_POINTER"] >> 3) & 7
    allowed = (walk == 3 and bit(caps.ept_vpid_cap, 6)) or (walk == 4 and bit(caps.ept_vpid_cap, 7))
    return v.ept and not allowed


def CTL_EPTP_AD(caps, v):
    return v.ept and bit(v["EPT_POINTER"], 6) and not bit(caps.ept_vpid_cap, 21)


def CTL_EPTP_RSVD(caps, v):
    eptp = v["EPT_POINTER"]
    return v.ept and ((eptp >> 8) & 0xF != 0
                      or (bit(eptp, 7) and not bit(caps.ept_vpid_cap, 23))
                      or not phys_valid(caps, eptp))


def CTL_UG_NEEDS_EPT(caps, v):
    return v.ug and not v.ept


def CTL_MBEC_NEEDS_EPT(caps, v):
    return bit(v.proc2, 22) and not v.ept


def CTL_PML_NEEDS_EPT(caps, v):
    return bit(v.proc2, 17) and not v.ept


def CTL_PML_ADDR(caps, v):
    return bit(v.proc2, 17) and not page_ok(caps, v["PML_ADDRESS"])


def CTL_SPP(caps, v):
    return bit(v.proc2, 23) and (not v.ept or not page_ok(caps, v["SPPT_POINTER"]))


def CTL_SHADOW_BMP(caps, v):
    return bit(v.proc2, 14) and not (page_ok(caps, v["VMREAD_BITMAP"]) and page_ok(caps, v["VMWRITE_BITMAP"]))


def CTL_VE_INFO_ADDR(caps, v):
    return bit(v.proc2, 18) and not page_ok(caps, v["VE_INFORMATION_ADDRESS"])


def CTL_VMFUNC_RSVD(caps, v):
    return bit(v.proc2, 13) and _word_violates(caps, v, VMFUNC)


def CTL_EPTP_SWITCH(caps, v):
    return bit(v[VMFUNC], 0) and (not v.ept or not page_ok(caps, v["EPTP_LIST_ADDRESS"]))


def CTL_TSC_MULT_ZERO(caps, v):
    return bit(v.proc2, 25) and v["TSC_MULTIPLIER"] == 0


# == VM-exit control fields (SDM §27.2.1.2) ========================================================

def CTL_EXIT_RSVD(caps, v):
    return _word_violates(caps, v, EXITC)


def CTL_EXIT2_RSVD(caps, v):
    return bit(v.exitc, 31) and _word_violates(caps, v, EXITC2)


def CTL_SAVE_PT_NEEDS_PT(caps, v):
    return bit(v.exitc, 22) and not bit(v.pin, 6)


def CTL_EXIT_MSRST_ADDR(caps, v):
    return list_area_bad(caps, v["VM_EXIT_MSR_STORE_COUNT"], v["VM_EXIT_MSR_STORE_ADDR"])


def CTL_EXIT_MSRLD_ADDR(caps, v):
    return list_area_bad(caps, v["VM_EXIT_MSR_LOAD_COUNT"], v["VM_EXIT_MSR_LOAD_ADDR"])


# == VM-entry control fields (SDM §27.2.1.3) =======================================================

def CTL_ENTRY_RSVD(caps, v):
    return _word_violates(caps, v, ENTRYC)


def CTL_ENTRY_SMM(caps, v):
    return bit(v.entry, 10) or bit(v.entry, 11)      # never in SMM


def CTL_ENTRY_MSRLD_ADDR(caps, v):
    return list_area_bad(caps, v["VM_ENTRY_MSR_LOAD_COUNT"], v["VM_ENTRY_MSR_LOAD_ADDR"])


def CTL_INJ_TYPE_RSVD(caps, v):
    if v.inj is None:
        return False
    _, kind, _ = v.inj
    return kind == 1 or (kind == 7 and not caps.supports("monitor_trap_flag"))


def CTL_INJ_NMI_VEC(caps, v):
    return v.inj is not None and v.inj[1] == 2 and v.inj[0] != 2


def CTL_INJ_HWEXC_VEC(caps, v):
    return v.inj is not None and v.inj[1] == 3 and v.inj[0] > 31


def CTL_INJ_OTHER_VEC(caps, v):
    return v.inj is not None and v.inj[1] == 7 and v.inj[0] != 0


def CTL_INJ_ERRCODE(caps, v):
    if v.inj is None:
        return False
    vector, kind, deliver = v.inj
    if caps.basic_bit(56):
        return bool(deliver) and kind != 3
    expected = kind == 3 and vector in ERRCODE_VECTORS and (not v.ug or bit(v.cr0, 0))
    return bool(deliver) != expected


def CTL_INJ_RSVD(caps, v):
    return v.inj is not None and (v[INJ] >> 12) & 0x7FFFF != 0


def CTL_INJ_ERRCODE_HI(caps, v):
    return v.inj is not None and v.inj[2] and v["VM_ENTRY_EXCEPTION_ERROR_CODE"] >> 16 != 0


def CTL_INJ_ILEN(caps, v):
    if v.inj is None or v.inj[1] not in (4, 5, 6):
        return False
    length = v["VM_ENTRY_INSTRUCTION_LEN"]
    return length > 15 or (length == 0 and not bit(caps.misc, 30))


# == host state (SDM §27.2.2 – §27.2.4) ============================================================

def HOST_ADDRSZ_LMA(caps, v):
    return v.host_lma and not v.host64


def HOST_ADDRSZ_LEGACY(caps, v):
    return not v.host_lma and (v.host64 or v.ia32e_guest)


def HOST_CR0_FIXED(caps, v):
    return violates(v["HOST_CR0"], caps.cr0_fixed)


def HOST_CR4_FIXED(caps, v):
    return violates(v["HOST_CR4"], caps.cr4_fixed)


def HOST_CR3_WIDTH(caps, v):
    return not phys_valid(caps, v["HOST_CR3"])


def HOST_CET_WP(caps, v):
    return bit(v.exitc, 28) and bit(v["HOST_CR4"], 23) and not bit(v["HOST_CR0"], 16)


def cet_fields_bad(s_cet, ssp, isst):
    return ((s_cet >> 6) & 0xF != 0 or not canonical(s_cet)
            or not canonical(ssp) or ssp & 3 != 0
            or not canonical(isst))


def HOST_CET_FIELDS(caps, v):
    return bit(v.exitc, 28) and cet_fields_bad(v["HOST_S_CET"], v["HOST_SSP"], v["HOST_INTR_SSP_TABLE"])


def HOST_SYSENTER_CANON(caps, v):
    return not (canonical(v["HOST_IA32_SYSENTER_ESP"]) and canonical(v["HOST_IA32_SYSENTER_EIP"]))


def HOST_PERFGC_RSVD(caps, v):
    return bit(v.exitc, 12) and v["HOST_IA32_PERF_GLOBAL_CTRL"] & ~PERF_GLOBAL_CTRL_VALID != 0


def HOST_PAT(caps, v):
    return bit(v.exitc, 19) and pat_bad(v["HOST_IA32_PAT"])


def HOST_EFER(caps, v):
    efer = v["HOST_IA32_EFER"]
    return bit(v.exitc, 21) and (efer & ~EFER_DEFINED != 0
                                 or bit(efer, 10) != v.host64 or bit(efer, 8) != v.host64)


def HOST_PKRS(caps, v):
    return bit(v.exitc, 29) and v["HOST_IA32_PKRS"] >> 32 != 0


def HOST_SEL_RPL_TI(caps, v):
    return any(v[f"HOST_{s}_SELECTOR"] & 7 for s in ("ES", "CS", "SS", "DS", "FS", "GS", "TR"))


def HOST_CS_NULL(caps, v):
    return v["HOST_CS_SELECTOR"] == 0


def HOST_TR_NULL(caps, v):
    return v["HOST_TR_SELECTOR"] == 0


def HOST_SS_NULL(caps, v):
    return v["HOST_SS_SELECTOR"] == 0 and not v.host64


def HOST_BASE_CANON(caps, v):
    return not all(canonical(v[f"HOST_{r}_BASE"]) for r in ("FS", "GS", "TR", "GDTR", "IDTR"))


def HOST64_PAE(caps, v):
    return v.host64 and not bit(v["HOST_CR4"], 5)


def HOST64_RIP(caps, v):
    return v.host64 and not canonical(v["HOST_RIP"])


def HOST32_GUEST64(caps, v):
    return not v.host64 and v.ia32e_guest


def HOST32_PCIDE(caps, v):
    return not v.host64 and bit(v["HOST_CR4"], 17)


def HOST32_RIP(caps, v):
    return not v.host64 and v["HOST_RIP"] >> 32 != 0


# == guest control registers, debug registers and MSRs (SDM §27.3.1.1) ============================

def GUEST_CR0_FIXED(caps, v):
    must1, may1 = caps.cr0_fixed
    if v.ug:
        must1 &= ~((1 << 0) | (1 << 31))
    return violates(v.cr0, (must1, may1))


def GUEST_CR0_PG_NO_PE(caps, v):
    return bit(v.cr0, 31) and not bit(v.cr0, 0)


def GUEST_CR4_FIXED(caps, v):
    return violates(v.cr4, caps.cr4_fixed)


def GUEST_CET_WP(caps, v):
    return bit(v.cr4, 23) and not bit(v.cr0, 16)


def GUEST_DR7_HI(caps, v):
    return bit(v.entry, 2) and v["GUEST_DR7"] >> 32 != 0


def GUEST_DEBUGCTL_RSVD(caps, v):
    return bit(v.entry, 2) and v["GUEST_IA32_DEBUGCTL"] & ~DEBUGCTL_IMPLEMENTED != 0


def GUEST_CR3_WIDTH(caps, v):
    return not phys_valid(caps, v["GUEST_CR3"])


def GUEST_SYSENTER_CANON(caps, v):
    return not (canonical(v["GUEST_SYSENTER_ESP"]) and canonical(v["GUEST_SYSENTER_EIP"]))


def GUEST_PERFGC_RSVD(caps, v):
    return bit(v.entry, 13) and v["GUEST_IA32_PERF_GLOBAL_CTRL"] & ~PERF_GLOBAL_CTRL_VALID != 0


def GUEST_PAT(caps, v):
    return bit(v.entry, 14) and pat_bad(v["GUEST_IA32_PAT"])


def GUEST_EFER_RSVD(caps, v):
    return bit(v.entry, 15) and v["GUEST_IA32_EFER"] & ~EFER_DEFINED != 0


def GUEST_EFER_LMA(caps, v):
    return bit(v.entry, 15) and bit(v["GUEST_IA32_EFER"], 10) != v.ia32e_guest


def GUEST_EFER_LME(caps, v):
    return bit(v.entry, 15) and bit(v.cr0, 31) and bit(v["GUEST_IA32_EFER"], 8) != v.ia32e_guest


def GUEST_BNDCFGS(caps, v):
    value = v["GUEST_BNDCFGS"]
    return bit(v.entry, 16) and ((value >> 2) & 7 != 0 or not canonical(value))


def GUEST_CET_FIELDS(caps, v):
    return bit(v.entry, 20) and cet_fields_bad(v["GUEST_S_CET"], v["GUEST_SSP"], v["GUEST_INTR_SSP_TABLE"])


def GUEST_PKRS(caps, v):
    return bit(v.entry, 22) and v["GUEST_IA32_PKRS"] >> 32 != 0


def GUEST_IA32E_PG_PAE(caps, v):
    return v.ia32e_guest and not (bit(v.cr0, 31) and bit(v.cr4, 5))


def GUEST_32_PCIDE(caps, v):
    return not v.ia32e_guest and bit(v.cr4, 17)


# == guest segment registers (SDM §27.3.1.2) =======================================================

def _usable_data(v):
    return [s for s in (v.seg(n) for n in DATA_SEGS) if s.usable]


def _cs_and_usable(v):
    """CS (always) and the usable ones of SS, DS, ES, FS, GS."""
    return [v.seg("CS")] + [s for s in (v.seg(n) for n in ("SS",) + DATA_SEGS) if s.usable]


def GUEST_TR_TI(caps, v):
    return bool(v.seg("TR").ti)


def GUEST_LDTR_TI(caps, v):
    ldtr = v.seg("LDTR")
    return ldtr.usable and bool(ldtr.ti)


def GUEST_SS_RPL(caps, v):
    return not v.v86 and not v.ug and v.seg("SS").rpl != v.seg("CS").rpl


def GUEST_V86_BASE(caps, v):
    return v.v86 and any(s.base != s.sel << 4 for s in map(v.seg, V86_SEGS))


def GUEST_V86_LIMIT(caps, v):
    return v.v86 and any(s.limit != 0xFFFF for s in map(v.seg, V86_SEGS))


def GUEST_V86_AR(caps, v):
    return v.v86 and any(s.ar != 0xF3 for s in map(v.seg, V86_SEGS))


def GUEST_BASE_CANON(caps, v):
    ldtr = v.seg("LDTR")
    return (not all(canonical(v.seg(n).base) for n in ("TR", "FS", "GS"))
            or (ldtr.usable and not canonical(ldtr.base)))


def GUEST_BASE_HI(caps, v):
    return (v.seg("CS").base >> 32 != 0
            or any(s.usable and s.base >> 32 != 0 for s in map(v.seg, ("SS", "DS", "ES"))))


def GUEST_CS_TYPE(caps, v):
    kind = v.seg("CS").type
    return not v.v86 and not (kind in (9, 11, 13, 15) or (kind == 3 and v.ug))


def GUEST_SS_TYPE(caps, v):
    ss = v.seg("SS")
    return not v.v86 and ss.usable and ss.type not in (3, 7)


def GUEST_DSEG_ACCESSED(caps, v):
    return not v.v86 and any(not bit(s.type, 0) for s in _usable_data(v))


def GUEST_DSEG_CODE_READ(caps, v):
    return not v.v86 and any(bit(s.type, 3) and not bit(s.type, 1) for s in _usable_data(v))


def GUEST_SEG_S(caps, v):
    return not v.v86 and any(not s.s for s in _cs_and_usable(v))


def GUEST_CS_DPL_UG(caps, v):
    cs = v.seg("CS")
    return not v.v86 and cs.type == 3 and cs.dpl != 0


def GUEST_CS_DPL_NONCONF(caps, v):
    cs = v.seg("CS")
    return not v.v86 and cs.type in (9, 11) and cs.dpl != v.seg("SS").dpl


def GUEST_CS_DPL_CONF(caps, v):
    cs = v.seg("CS")
    return not v.v86 and cs.type in (13, 15) and cs.dpl > v.seg("SS").dpl


def GUEST_SS_DPL_RPL(caps, v):
    ss = v.seg("SS")
    return not v.v86 and not v.ug and ss.dpl != ss.rpl


def GUEST_SS_DPL_REAL(caps, v):
    return (not v.v86 and (v.seg("CS").type == 3 or not bit(v.cr0, 0))
            and v.seg("SS").dpl != 0)


def GUEST_DSEG_DPL(caps, v):
    return not v.v86 and not v.ug and any(s.type <= 11 and s.dpl < s.rpl for s in _usable_data(v))


def GUEST_SEG_P(caps, v):
    return not v.v86 and any(not s.p for s in _cs_and_usable(v))


def GUEST_SEG_AR_RSVD(caps, v):
    return not v.v86 and any(s.ar & AR_RSVD for s in _cs_and_usable(v))


def GUEST_CS_L_D(caps, v):
    cs = v.seg("CS")
    return v.ia32e_guest and cs.l and cs.db


def GUEST_SEG_G(caps, v):
    return not v.v86 and any(s.limit_g_bad for s in _cs_and_usable(v))


def GUEST_TR_UNUSABLE(caps, v):
    return not v.seg("TR").usable


def GUEST_TR_TYPE(caps, v):
    kind = v.seg("TR").type
    return not (kind == 11 or (kind == 3 and not v.ia32e_guest))


def GUEST_TR_S_P_AR_G(caps, v):
    tr = v.seg("TR")
    return tr.s or not tr.p or tr.ar & AR_RSVD != 0 or tr.limit_g_bad


def GUEST_LDTR_AR(caps, v):
    ldtr = v.seg("LDTR")
    return ldtr.usable and (ldtr.type != 2 or ldtr.s or not ldtr.p or ldtr.ar & AR_RSVD != 0
                            or ldtr.limit_g_bad)


# == guest descriptor-table registers (SDM §27.3.1.3) ==============================================

def GUEST_GDTR_IDTR_CANON(caps, v):
    return not (canonical(v["GUEST_GDTR_BASE"]) and canonical(v["GUEST_IDTR_BASE"]))


def GUEST_GDTR_IDTR_LIMIT(caps, v):
    return v["GUEST_GDTR_LIMIT"] >> 16 != 0 or v["GUEST_IDTR_LIMIT"] >> 16 != 0


# == guest RIP and RFLAGS (SDM §27.3.1.4) ==========================================================

def GUEST_RIP_HI(caps, v):
    return (not v.ia32e_guest or not v.seg("CS").l) and v["GUEST_RIP"] >> 32 != 0


def GUEST_RIP_CANON(caps, v):
    width = 57 if bit(v.cr4, 12) else 48
    return v.ia32e_guest and v.seg("CS").l and not canonical(v["GUEST_RIP"], width)


def GUEST_RFLAGS_RSVD(caps, v):
    return v.rflags & RFLAGS_RSVD != 0


def GUEST_RFLAGS_BIT1(caps, v):
    return not bit(v.rflags, 1)


def GUEST_RFLAGS_VM(caps, v):
    return v.v86 and (v.ia32e_guest or not bit(v.cr0, 0))


def GUEST_RFLAGS_IF_INJ(caps, v):
    return v.inj is not None and v.inj[1] == 0 and not bit(v.rflags, 9)


# == guest non-register state (SDM §27.3.1.5) ======================================================

ACTIVE, HLT, SHUTDOWN, WAIT_FOR_SIPI = 0, 1, 2, 3


def GUEST_ACT_RANGE(caps, v):
    state = v.activity
    return state > 3 or (state != ACTIVE and not bit(caps.misc, 5 + state))


def GUEST_ACT_HLT_DPL(caps, v):
    return v.activity == HLT and v.seg("SS").dpl != 0


def GUEST_ACT_BLOCKING(caps, v):
    return v.intr & 3 != 0 and v.activity != ACTIVE


def _injectable(state, vector, kind):
    """Whether an event may be injected into a guest in activity ``state`` (SDM §27.3.1.5)."""
    if state == HLT:
        return kind in (0, 2) or (kind == 3 and vector in (1, 18)) or (kind == 7 and vector == 0)
    if state == SHUTDOWN:
        return kind == 2 or (kind == 3 and vector == 18)
    if state == WAIT_FOR_SIPI:
        return False
    return True


def GUEST_ACT_INJ(caps, v):
    return v.inj is not None and not _injectable(v.activity, v.inj[0], v.inj[1])


def GUEST_ACT_WFS_SMM(caps, v):
    return bit(v.entry, 10) and v.activity == WAIT_FOR_SIPI


def GUEST_INTR_RSVD(caps, v):
    return v.intr >> 5 != 0


def GUEST_INTR_STI_MOVSS(caps, v):
    return v.intr & 3 == 3


def GUEST_INTR_STI_IF(caps, v):
    return bit(v.intr, 0) and not bit(v.rflags, 9)


def GUEST_INTR_EXTINT(caps, v):
    return v.inj is not None and v.inj[1] == 0 and v.intr & 3 != 0


def GUEST_INTR_NMI_MOVSS(caps, v):
    return v.inj is not None and v.inj[1] == 2 and bit(v.intr, 1)


def GUEST_INTR_NMI_STI(caps, v):
    return v.inj is not None and v.inj[1] == 2 and bit(v.intr, 0)


def GUEST_INTR_SMI_NOT_SMM(caps, v):
    return bool(bit(v.intr, 2))                # never in SMM


def GUEST_INTR_SMI_ENTRY(caps, v):
    return bit(v.entry, 10) and not bit(v.intr, 2)


def GUEST_INTR_VNMI_BLOCK(caps, v):
    return bit(v.pin, 5) and v.inj is not None and v.inj[1] == 2 and bit(v.intr, 3)


def GUEST_INTR_ENCLAVE(caps, v):
    return bool(bit(v.intr, 4))                # no SGX


def GUEST_PDE_RSVD(caps, v):
    return v["GUEST_PENDING_DBG_EXCEPTIONS"] & ~PDE_DEFINED != 0


def _pde_bs_applies(v):
    return v.intr & 3 != 0 or v.activity == HLT


def _pde_bs_required(v):
    return bit(v.rflags, 8) and not bit(v["GUEST_IA32_DEBUGCTL"], 1)


def GUEST_PDE_BS_SET(caps, v):
    return (_pde_bs_applies(v) and _pde_bs_required(v)
            and not bit(v["GUEST_PENDING_DBG_EXCEPTIONS"], 14))


def GUEST_PDE_BS_CLR(caps, v):
    return (_pde_bs_applies(v) and not _pde_bs_required(v)
            and bit(v["GUEST_PENDING_DBG_EXCEPTIONS"], 14))


def GUEST_LINK_ALIGN(caps, v):
    return v.link != LINK_NONE and not page_ok(caps, v.link)


def GUEST_LINK_REV(caps, v):
    return v.link != LINK_NONE and v.link_revision & 0x7FFF_FFFF != caps.revision_id


def GUEST_LINK_SHADOW(caps, v):
    return v.link != LINK_NONE and bit(v.link_revision, 31) != bit(v.proc2, 14)


def GUEST_LINK_SELF(caps, v):
    return v.link != LINK_NONE and v.link == v.current_vmcs


# == guest PDPTEs (SDM §27.3.1.6) ==================================================================

def pdpte_reserved_mask(caps):
    return 0x6 | 0x1E0 | (MASK64 & ~((1 << caps.maxphyaddr) - 1))


def pdptes_in_effect(caps, v):
    if v.ept:
        return [v[f"GUEST_PDPTR{i}"] for i in range(4)]
    return v.pdptes


def GUEST_PDPTE_RSVD(caps, v):
    if not (bit(v.cr0, 31) and bit(v.cr4, 5) and not v.ia32e_guest):
        return False
    mask = pdpte_reserved_mask(caps)
    return any(bit(p, 0) and p & mask != 0 for p in pdptes_in_effect(caps, v))


# == VM-entry MSR-load list (SDM §27.4) ============================================================

def MSRLD_RSVD(caps, e):
    return e["reserved"] != 0


def MSRLD_FSGS(caps, e):
    return e["msr"] in (0xC000_0100, 0xC000_0101)


def MSRLD_X2APIC(caps, e):
    return 0x800 <= e["msr"] <= 0x8FF


def MSRLD_SMM_MON(caps, e):
    return e["msr"] == 0x9B


def MSRLD_UCODE(caps, e):
    return e["msr"] in (0x79, 0x8B)


#: MSRs whose WRMSR raises #GP(0) for a non-canonical value (SDM vol. 2 WRMSR, "Protected Mode
#: Exceptions": IA32_SYSENTER_ESP/EIP, IA32_LSTAR, IA32_KERNEL_GS_BASE, plus IA32_DS_AREA, FS/GS base
#: which the model does not load) and IA32_CSTAR (as KVM; the SDM's list does not name it).
WRMSR_CANONICAL = frozenset({0x175, 0x176, 0xC000_0082, 0xC000_0083, 0xC000_0102})
IA32_PAT = 0x277


def MSRLD_WRMSR_GP(caps, e):
    """WRMSR #GP: an MSR outside the model's table, a reserved bit set (the table's mask), a
    non-canonical address in an address MSR, or a PAT entry with a reserved memory type (2, 3)."""
    from hwvirt.hdl.entry_checks import MSR_LOADABLE
    if e["msr"] not in MSR_LOADABLE:
        return True
    _, reserved = MSR_LOADABLE[e["msr"]]
    return (e["value"] & reserved != 0
            or (e["msr"] in WRMSR_CANONICAL and not canonical(e["value"]))
            or (e["msr"] == IA32_PAT and pat_bad(e["value"])))


def MSRLD_TOO_MANY(caps, e):
    return e["number"] > 512 * (((caps.misc >> 25) & 7) + 1)


# == entry points ==================================================================================

_RULES = {c.id: globals()[c.id] for c in CHECKS if c.id in globals()}
_missing = [c.id for c in CHECKS if c.id not in _RULES]
assert not _missing, f"checks without a reference rule: {_missing}"
del _missing


#: The checks of a control word against its capability MSR: they see the words as written only.
WORD_CHECKS = frozenset({"CTL_PIN_RSVD", "CTL_PROC1_RSVD", "CTL_PROC2_RSVD", "CTL_PROC3_RSVD",
                         "CTL_VMFUNC_RSVD", "CTL_EXIT_RSVD", "CTL_EXIT2_RSVD", "CTL_ENTRY_RSVD"})


def reference_failures(caps, fields, *, host_lma, current_vmcs, link_revision, vtpr, pdptes):
    """IDs of every failing non-MSR-load check, in catalogue order.

    The checks of :data:`WORD_CHECKS` are evaluated on the control words as written; every other
    check fails when it fails on the words as written and on the words in effect."""
    unknown = set(fields) - set(BY_NAME)
    if unknown:
        raise KeyError(f"unknown VMCS fields: {sorted(unknown)}")
    written, effective = (View(caps, fields, controls=controls, host_lma=host_lma,
                               current_vmcs=current_vmcs, link_revision=link_revision, vtpr=vtpr,
                               pdptes=pdptes)
                          for controls in ("written", "effective"))

    def fails(check_id):
        rule = _RULES[check_id]
        if check_id in WORD_CHECKS:
            return rule(caps, written)
        return rule(caps, written) and rule(caps, effective)

    return [c.id for c in NON_MSR_CHECKS if fails(c.id)]


def reference_msr_entry(caps, number, msr, reserved, value):
    """IDs of every failing MSR-load check for entry ``number`` (1-based), in catalogue order."""
    entry = {"number": number & 0xFFFF_FFFF, "msr": msr & 0xFFFF_FFFF,
             "reserved": reserved & 0xFFFF_FFFF, "value": value & MASK64}
    return [c.id for c in MSR_CHECKS if _RULES[c.id](caps, entry)]


def first_failure(caps, ids, *, msr_index=None):
    """The architectural outcome of a set of failing checks: ``(outcome, id)``.

    The outcome is a dict: ``{"outcome": "fail_valid", "error": 7 | 8}`` for control and host-state
    checks, ``{"outcome": "exit", "exit_reason": 0x80000021, "qualification": q}`` for guest-state
    checks and ``{"outcome": "exit", "exit_reason": 0x80000022, "qualification": msr_index}`` for
    the MSR-load list. Groups are taken in the order of SDM §27.1 (controls, host, guest, MSR
    load), checks within a group in catalogue order. ``(None, None)`` when ``ids`` is empty.
    """
    ids = set(ids)
    unknown = ids - set(BY_ID)
    if unknown:
        raise KeyError(f"unknown check IDs: {sorted(unknown)}")
    for group in (CheckGroup.CONTROLS, CheckGroup.HOST, CheckGroup.GUEST, CheckGroup.MSR_LOAD):
        for check in CHECKS:
            if check.group != group or check.id not in ids:
                continue
            if group in (CheckGroup.CONTROLS, CheckGroup.HOST):
                return {"outcome": "fail_valid", "error": group.value}, check.id
            if group == CheckGroup.GUEST:
                return ({"outcome": "exit", "exit_reason": 0x8000_0000 | group.value,
                         "qualification": check.qualification}, check.id)
            return ({"outcome": "exit", "exit_reason": 0x8000_0000 | group.value,
                     "qualification": msr_index}, check.id)
    return None, None
