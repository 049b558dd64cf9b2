"""The catalogue of VM-entry consistency checks: one row per check, in priority order.

Every check has an ID (the diagnostic name reports use), the group that decides the architectural
outcome, the VMCS fields it reads, the rule in words (the condition that *fails*), the section of the
Intel SDM (vol. 3C, edition of 2023 and later: chapter 27 "VM Entries") and, for guest-state checks,
the exit qualification of the VM-entry failure.

The groups are evaluated in the order of SDM §27.1: controls (VMfailValid 7), host state
(VMfailValid 8), guest state (VM-entry failure, exit reason 33 with bit 31 set) and the VM-entry
MSR-load list (exit reason 34 with bit 31 set). Within a group the first failing check in catalogue
order is the one reported; every failing check is reported as well.

This table is read by the gateware (:mod:`hwvirt.hdl.entry_checks`), the reports, ``hwvirt check`` and
the tests. "phys-valid(a)": bits 63:MAXPHYADDR of *a* are 0. "4K(a)": bits 11:0 of *a* are 0.
"canonical": bits 63:47 equal (bits 63:56 with 5-level paging).
"""

from dataclasses import dataclass

from amaranth.lib import enum


__all__ = ["CheckGroup", "Check", "CHECKS", "BY_ID", "checks_in"]


class CheckGroup(enum.Enum, shape=6):
    """What a failing check of the group does; the value is the error number or basic exit reason."""
    CONTROLS  = 7    # VMfailValid(7): VM entry with invalid control field(s)
    HOST      = 8    # VMfailValid(8): VM entry with invalid host-state field(s)
    GUEST     = 33   # VM-entry failure, exit reason 33 | 0x80000000
    MSR_LOAD  = 34   # VM-entry failure, exit reason 34 | 0x80000000, qualification = entry index


@dataclass(frozen=True)
class Check:
    id: str
    group: CheckGroup
    fields: tuple
    rule: str
    sdm: str
    qualification: int = 0


_EXEC, _EXITC, _ENTRYC = "27.2.1.1", "27.2.1.2", "27.2.1.3"
_HOSTCR, _HOSTSEG, _HOSTSIZE = "27.2.2", "27.2.3", "27.2.4"
_GCR, _GSEG, _GDT, _GRIP, _GNR, _GPDPTE = "27.3.1.1", "27.3.1.2", "27.3.1.3", "27.3.1.4", "27.3.1.5", "27.3.1.6"
_MSR = "27.4"

PIN, PROC, PROC2, PROC3 = ("PIN_BASED_VM_EXEC_CONTROL", "CPU_BASED_VM_EXEC_CONTROL",
                           "SECONDARY_VM_EXEC_CONTROL", "TERTIARY_VM_EXEC_CONTROL")
EXITC, ENTRYC, INJ = "VM_EXIT_CONTROLS", "VM_ENTRY_CONTROLS", "VM_ENTRY_INTR_INFO_FIELD"
_SEGS = ("ES", "CS", "SS", "DS", "FS", "GS", "LDTR", "TR")


def _seg(*names, parts=("SELECTOR", "BASE", "LIMIT", "AR_BYTES")):
    return tuple(f"GUEST_{s}_{p}" for s in names for p in parts)


def _c(group, id, fields, rule, sdm, qualification=0):
    return Check(id, group, tuple(fields), rule, sdm, qualification)


_C, _H, _G, _M = CheckGroup.CONTROLS, CheckGroup.HOST, CheckGroup.GUEST, CheckGroup.MSR_LOAD

CHECKS = (
    # -- VM-execution control fields (SDM §27.2.1.1) ------------------------------------------------
    _c(_C, "CTL_PIN_RSVD", [PIN], "pin-based controls violate the allowed-0/allowed-1 settings of "
       "IA32_VMX_(TRUE_)PINBASED_CTLS", _EXEC),
    _c(_C, "CTL_PROC1_RSVD", [PROC], "primary processor-based controls violate "
       "IA32_VMX_(TRUE_)PROCBASED_CTLS", _EXEC),
    _c(_C, "CTL_PROC2_RSVD", [PROC, PROC2], "'activate secondary controls' = 1 and the secondary "
       "controls violate IA32_VMX_PROCBASED_CTLS2", _EXEC),
    _c(_C, "CTL_PROC3_RSVD", [PROC, PROC3], "'activate tertiary controls' = 1 and tertiary controls set "
       "a bit IA32_VMX_PROCBASED_CTLS3 does not allow", _EXEC),
    _c(_C, "CTL_CR3_TARGET_CNT", ["CR3_TARGET_COUNT"], "CR3-target count greater than "
       "IA32_VMX_MISC[24:16]", _EXEC),
    _c(_C, "CTL_IOBMP_ADDR", [PROC, "IO_BITMAP_A", "IO_BITMAP_B"], "'use I/O bitmaps' = 1 and an I/O-bitmap "
       "address is not 4K-aligned or not phys-valid", _EXEC),
    _c(_C, "CTL_MSRBMP_ADDR", [PROC, "MSR_BITMAP"], "'use MSR bitmaps' = 1 and the MSR-bitmap address is "
       "not 4K-aligned or not phys-valid", _EXEC),
    _c(_C, "CTL_VAPIC_ADDR", [PROC, "VIRTUAL_APIC_PAGE_ADDR"], "'use TPR shadow' = 1 and the virtual-APIC "
       "address is not 4K-aligned or not phys-valid", _EXEC),
    _c(_C, "CTL_TPR_THRESH_RSVD", [PROC, PROC2, "TPR_THRESHOLD"], "'use TPR shadow' = 1, "
       "'virtual-interrupt delivery' = 0 and TPR threshold bits 31:4 are not 0", _EXEC),
    _c(_C, "CTL_TPR_THRESH_VTPR", [PROC, PROC2, "TPR_THRESHOLD", "VIRTUAL_APIC_PAGE_ADDR"],
       "'use TPR shadow' = 1, 'virtual-interrupt delivery' = 0, 'virtualize APIC accesses' = 0 and "
       "TPR threshold[3:0] is greater than VTPR[7:4] (byte 0x80 of the virtual-APIC page)", _EXEC),
    _c(_C, "CTL_APICV_NEEDS_TPR", [PROC, PROC2], "'use TPR shadow' = 0 and one of 'virtualize x2APIC "
       "mode', 'APIC-register virtualization', 'virtual-interrupt delivery' = 1", _EXEC),
    _c(_C, "CTL_X2APIC_VS_APICACC", [PROC2], "'virtualize x2APIC mode' = 1 and 'virtualize APIC "
       "accesses' = 1", _EXEC),
    _c(_C, "CTL_APICACC_ADDR", [PROC2, "APIC_ACCESS_ADDR"], "'virtualize APIC accesses' = 1 and the "
       "APIC-access address is not 4K-aligned or not phys-valid", _EXEC),
    _c(_C, "CTL_VID_NEEDS_EXTINT", [PIN, PROC2], "'virtual-interrupt delivery' = 1 and "
       "'external-interrupt exiting' = 0", _EXEC),
    _c(_C, "CTL_PI_NEEDS_VID", [PIN, PROC2], "'process posted interrupts' = 1 and 'virtual-interrupt "
       "delivery' = 0", _EXEC),
    _c(_C, "CTL_PI_NEEDS_ACK", [PIN, EXITC], "'process posted interrupts' = 1 and 'acknowledge "
       "interrupt on exit' = 0", _EXEC),
    _c(_C, "CTL_PI_VECTOR", [PIN, "POSTED_INTR_NV"], "'process posted interrupts' = 1 and notification "
       "vector bits 15:8 are not 0", _EXEC),
    _c(_C, "CTL_PI_DESC_ADDR", [PIN, "POSTED_INTR_DESC_ADDR"], "'process posted interrupts' = 1 and the "
       "descriptor address has bits 5:0 set or is not phys-valid", _EXEC),
    _c(_C, "CTL_VNMI_NEEDS_NMIEXIT", [PIN], "'NMI exiting' = 0 and 'virtual NMIs' = 1", _EXEC),
    _c(_C, "CTL_NMIWIN_NEEDS_VNMI", [PIN, PROC], "'virtual NMIs' = 0 and 'NMI-window exiting' = 1", _EXEC),
    _c(_C, "CTL_VPID_ZERO", [PROC2, "VIRTUAL_PROCESSOR_ID"], "'enable VPID' = 1 and VPID = 0", _EXEC),
    _c(_C, "CTL_EPTP_MEMTYPE", [PROC2, "EPT_POINTER"], "'enable EPT' = 1 and EPTP[2:0] is not a "
       "paging-structure memory type IA32_VMX_EPT_VPID_CAP allows (UC: bit 8, WB: bit 14)", _EXEC),
    _c(_C, "CTL_EPTP_WALKLEN", [PROC2, "EPT_POINTER"], "'enable EPT' = 1 and EPTP[5:3] is not a "
       "supported walk length minus 1 (3: 4-level, bit 6; 4: 5-level, bit 7)", _EXEC),
    _c(_C, "CTL_EPTP_AD", [PROC2, "EPT_POINTER"], "'enable EPT' = 1, EPTP[6] = 1 and accessed/dirty "
       "flags are not supported (IA32_VMX_EPT_VPID_CAP[21])", _EXEC),
    _c(_C, "CTL_EPTP_RSVD", [PROC2, "EPT_POINTER"], "'enable EPT' = 1 and EPTP bits 11:8 are not 0, "
       "bit 7 is set without supervisor-shadow-stack support (CAP bit 23), or EPTP is not phys-valid",
       _EXEC),
    _c(_C, "CTL_UG_NEEDS_EPT", [PROC2], "'unrestricted guest' = 1 and 'enable EPT' = 0", _EXEC),
    _c(_C, "CTL_MBEC_NEEDS_EPT", [PROC2], "'mode-based execute control for EPT' = 1 and "
       "'enable EPT' = 0", _EXEC),
    _c(_C, "CTL_PML_NEEDS_EPT", [PROC2], "'enable PML' = 1 and 'enable EPT' = 0", _EXEC),
    _c(_C, "CTL_PML_ADDR", [PROC2, "PML_ADDRESS"], "'enable PML' = 1 and the PML address is not "
       "4K-aligned or not phys-valid", _EXEC),
    _c(_C, "CTL_SPP", [PROC2, "SPPT_POINTER"], "'sub-page write permissions' = 1 and ('enable EPT' = 0 "
       "or the SPPTP is not 4K-aligned or not phys-valid)", _EXEC),
    _c(_C, "CTL_SHADOW_BMP", [PROC2, "VMREAD_BITMAP", "VMWRITE_BITMAP"], "'VMCS shadowing' = 1 and the "
       "VMREAD- or VMWRITE-bitmap address is not 4K-aligned or not phys-valid", _EXEC),
    _c(_C, "CTL_VE_INFO_ADDR", [PROC2, "VE_INFORMATION_ADDRESS"], "'EPT-violation #VE' = 1 and the #VE "
       "information address is not 4K-aligned or not phys-valid", _EXEC),
    _c(_C, "CTL_VMFUNC_RSVD", [PROC2, "VM_FUNCTION_CONTROL"], "'enable VM functions' = 1 and the "
       "VM-function controls set a bit IA32_VMX_VMFUNC does not allow", _EXEC),
    _c(_C, "CTL_EPTP_SWITCH", [PROC2, "VM_FUNCTION_CONTROL", "EPTP_LIST_ADDRESS"], "EPTP switching "
       "(VM-function bit 0) = 1 and ('enable EPT' = 0 or the EPTP-list address is not 4K-aligned or "
       "not phys-valid)", _EXEC),
    _c(_C, "CTL_TSC_MULT_ZERO", [PROC2, "TSC_MULTIPLIER"], "'use TSC scaling' = 1 and the TSC "
       "multiplier is 0 (as Bochs; not confirmed as architectural)", _EXEC),
    # -- VM-exit control fields (SDM §27.2.1.2) ----------------------------------------------------
    _c(_C, "CTL_EXIT_RSVD", [EXITC], "VM-exit controls violate IA32_VMX_(TRUE_)EXIT_CTLS", _EXITC),
    _c(_C, "CTL_EXIT2_RSVD", [EXITC, "SECONDARY_VM_EXIT_CONTROLS"], "'activate secondary VM-exit "
       "controls' = 1 and the secondary exit controls set a bit IA32_VMX_EXIT_CTLS2 does not allow",
       _EXITC),
    _c(_C, "CTL_SAVE_PT_NEEDS_PT", [PIN, EXITC], "'save VMX-preemption timer value' = 1 and 'activate "
       "VMX-preemption timer' = 0", _EXITC),
    _c(_C, "CTL_EXIT_MSRST_ADDR", ["VM_EXIT_MSR_STORE_COUNT", "VM_EXIT_MSR_STORE_ADDR"], "VM-exit "
       "MSR-store count > 0 and the address has bits 3:0 set, or it or its last byte "
       "(address + 16 × count − 1) is not phys-valid", _EXITC),
    _c(_C, "CTL_EXIT_MSRLD_ADDR", ["VM_EXIT_MSR_LOAD_COUNT", "VM_EXIT_MSR_LOAD_ADDR"], "VM-exit "
       "MSR-load count > 0 and the address has bits 3:0 set, or it or its last byte is not "
       "phys-valid", _EXITC),
    # -- VM-entry control fields (SDM §27.2.1.3) ---------------------------------------------------
    _c(_C, "CTL_ENTRY_RSVD", [ENTRYC], "VM-entry controls violate IA32_VMX_(TRUE_)ENTRY_CTLS", _ENTRYC),
    _c(_C, "CTL_ENTRY_SMM", [ENTRYC], "outside SMM, 'entry to SMM' = 1 or 'deactivate dual-monitor "
       "treatment' = 1", _ENTRYC),
    _c(_C, "CTL_ENTRY_MSRLD_ADDR", ["VM_ENTRY_MSR_LOAD_COUNT", "VM_ENTRY_MSR_LOAD_ADDR"], "VM-entry "
       "MSR-load count > 0 and the address has bits 3:0 set, or it or its last byte is not "
       "phys-valid", _ENTRYC),
    _c(_C, "CTL_INJ_TYPE_RSVD", [INJ, PROC], "injection valid and type 1 (reserved), or type 7 (other "
       "event) without monitor-trap-flag support", _ENTRYC),
    _c(_C, "CTL_INJ_NMI_VEC", [INJ], "injecting an NMI (type 2) with a vector other than 2", _ENTRYC),
    _c(_C, "CTL_INJ_HWEXC_VEC", [INJ], "injecting a hardware exception (type 3) with a vector above 31",
       _ENTRYC),
    _c(_C, "CTL_INJ_OTHER_VEC", [INJ], "injecting an other event (type 7) with a vector other than 0",
       _ENTRYC),
    _c(_C, "CTL_INJ_ERRCODE", [INJ, PROC2, "GUEST_CR0"], "'deliver error code' differs from (type 3 and "
       "vector in {8, 10-14, 17} and (unrestricted guest = 0 or guest CR0.PE = 1)); with "
       "IA32_VMX_BASIC[56] = 1 only 'deliver error code with a type other than 3' fails", _ENTRYC),
    _c(_C, "CTL_INJ_RSVD", [INJ], "injection valid and bits 30:12 of the interruption-information field "
       "are not 0", _ENTRYC),
    _c(_C, "CTL_INJ_ERRCODE_HI", [INJ, "VM_ENTRY_EXCEPTION_ERROR_CODE"], "'deliver error code' = 1 and "
       "error-code bits 31:16 are not 0", _ENTRYC),
    _c(_C, "CTL_INJ_ILEN", [INJ, "VM_ENTRY_INSTRUCTION_LEN"], "injecting a software interrupt or "
       "(privileged) software exception (types 4, 5, 6) with instruction length above 15, or 0 without "
       "IA32_VMX_MISC[30]", _ENTRYC),
    # -- host state (SDM §27.2.2 – §27.2.4) ---------------------------------------------------------
    _c(_H, "HOST_ADDRSZ_LMA", [EXITC], "the processor is in IA-32e mode (IA32_EFER.LMA = 1) and 'host "
       "address-space size' = 0", _HOSTSIZE),
    _c(_H, "HOST_ADDRSZ_LEGACY", [EXITC, ENTRYC], "the processor is not in IA-32e mode and 'host "
       "address-space size' = 1 or 'IA-32e mode guest' = 1", _HOSTSIZE),
    _c(_H, "HOST_CR0_FIXED", ["HOST_CR0"], "host CR0 violates IA32_VMX_CR0_FIXED0/FIXED1", _HOSTCR),
    _c(_H, "HOST_CR4_FIXED", ["HOST_CR4"], "host CR4 violates IA32_VMX_CR4_FIXED0/FIXED1", _HOSTCR),
    _c(_H, "HOST_CR3_WIDTH", ["HOST_CR3"], "host CR3 has bits at or above MAXPHYADDR set", _HOSTCR),
    _c(_H, "HOST_CET_WP", [EXITC, "HOST_CR0", "HOST_CR4"], "'load CET state' = 1, host CR4.CET = 1 and "
       "host CR0.WP = 0", _HOSTCR),
    _c(_H, "HOST_CET_FIELDS", [EXITC, "HOST_S_CET", "HOST_SSP", "HOST_INTR_SSP_TABLE"], "'load CET "
       "state' = 1 and host S_CET has reserved bits 9:6 set or is non-canonical, SSP is non-canonical "
       "or has bits 1:0 set, or the interrupt-SSP-table address is non-canonical", _HOSTCR),
    _c(_H, "HOST_SYSENTER_CANON", ["HOST_IA32_SYSENTER_ESP", "HOST_IA32_SYSENTER_EIP"], "host "
       "IA32_SYSENTER_ESP or IA32_SYSENTER_EIP is non-canonical", _HOSTCR),
    _c(_H, "HOST_PERFGC_RSVD", [EXITC, "HOST_IA32_PERF_GLOBAL_CTRL"], "'load IA32_PERF_GLOBAL_CTRL' = 1 "
       "and reserved bits of IA32_PERF_GLOBAL_CTRL are set", _HOSTCR),
    _c(_H, "HOST_PAT", [EXITC, "HOST_IA32_PAT"], "'load IA32_PAT' = 1 and a PAT entry is not a valid "
       "memory type (0, 1, 4, 5, 6, 7)", _HOSTCR),
    _c(_H, "HOST_EFER", [EXITC, "HOST_IA32_EFER"], "'load IA32_EFER' = 1 and host EFER has reserved "
       "bits set, or LMA or LME differs from 'host address-space size'", _HOSTCR),
    _c(_H, "HOST_PKRS", [EXITC, "HOST_IA32_PKRS"], "'load PKRS' = 1 and host PKRS bits 63:32 are not 0",
       _HOSTCR),
    _c(_H, "HOST_SEL_RPL_TI", [f"HOST_{s}_SELECTOR" for s in ("ES", "CS", "SS", "DS", "FS", "GS", "TR")],
       "a host selector (ES, CS, SS, DS, FS, GS, TR) has RPL or TI (bits 2:0) set", _HOSTSEG),
    _c(_H, "HOST_CS_NULL", ["HOST_CS_SELECTOR"], "host CS selector is 0", _HOSTSEG),
    _c(_H, "HOST_TR_NULL", ["HOST_TR_SELECTOR"], "host TR selector is 0", _HOSTSEG),
    _c(_H, "HOST_SS_NULL", [EXITC, "HOST_SS_SELECTOR"], "host SS selector is 0 and 'host address-space "
       "size' = 0", _HOSTSEG),
    _c(_H, "HOST_BASE_CANON", ["HOST_FS_BASE", "HOST_GS_BASE", "HOST_TR_BASE", "HOST_GDTR_BASE",
                               "HOST_IDTR_BASE"], "a host FS, GS, TR, GDTR or IDTR base is non-canonical",
       _HOSTSEG),
    _c(_H, "HOST64_PAE", [EXITC, "HOST_CR4"], "'host address-space size' = 1 and host CR4.PAE = 0",
       _HOSTSIZE),
    _c(_H, "HOST64_RIP", [EXITC, "HOST_RIP"], "'host address-space size' = 1 and host RIP is "
       "non-canonical", _HOSTSIZE),
    _c(_H, "HOST32_GUEST64", [EXITC, ENTRYC], "'host address-space size' = 0 and 'IA-32e mode guest' = 1",
       _HOSTSIZE),
    _c(_H, "HOST32_PCIDE", [EXITC, "HOST_CR4"], "'host address-space size' = 0 and host CR4.PCIDE = 1",
       _HOSTSIZE),
    _c(_H, "HOST32_RIP", [EXITC, "HOST_RIP"], "'host address-space size' = 0 and host RIP bits 63:32 "
       "are not 0", _HOSTSIZE),
    # -- guest control registers, debug registers and MSRs (SDM §27.3.1.1) -------------------------
    _c(_G, "GUEST_CR0_FIXED", [PROC2, "GUEST_CR0"], "guest CR0 violates IA32_VMX_CR0_FIXED0/FIXED1 "
       "(with 'unrestricted guest' = 1, PE and PG may be 0)", _GCR),
    _c(_G, "GUEST_CR0_PG_NO_PE", ["GUEST_CR0"], "guest CR0.PG = 1 and CR0.PE = 0", _GCR),
    _c(_G, "GUEST_CR4_FIXED", ["GUEST_CR4"], "guest CR4 violates IA32_VMX_CR4_FIXED0/FIXED1", _GCR),
    _c(_G, "GUEST_CET_WP", ["GUEST_CR0", "GUEST_CR4"], "guest CR4.CET = 1 and CR0.WP = 0", _GCR),
    _c(_G, "GUEST_DR7_HI", [ENTRYC, "GUEST_DR7"], "'load debug controls' = 1 and guest DR7 bits 63:32 "
       "are not 0", _GCR),
    _c(_G, "GUEST_DEBUGCTL_RSVD", [ENTRYC, "GUEST_IA32_DEBUGCTL"], "'load debug controls' = 1 and guest "
       "IA32_DEBUGCTL has bits set outside 0-1, 6-15 (the bits this model implements)", _GCR),
    _c(_G, "GUEST_CR3_WIDTH", ["GUEST_CR3"], "guest CR3 has bits at or above MAXPHYADDR set", _GCR),
    _c(_G, "GUEST_SYSENTER_CANON", ["GUEST_SYSENTER_ESP", "GUEST_SYSENTER_EIP"], "guest "
       "IA32_SYSENTER_ESP or IA32_SYSENTER_EIP is non-canonical", _GCR),
    _c(_G, "GUEST_PERFGC_RSVD", [ENTRYC, "GUEST_IA32_PERF_GLOBAL_CTRL"], "'load IA32_PERF_GLOBAL_CTRL' = 1 "
       "and reserved bits of IA32_PERF_GLOBAL_CTRL are set", _GCR),
    _c(_G, "GUEST_PAT", [ENTRYC, "GUEST_IA32_PAT"], "'load IA32_PAT' = 1 and a PAT entry is not a valid "
       "memory type (0, 1, 4, 5, 6, 7)", _GCR),
    _c(_G, "GUEST_EFER_RSVD", [ENTRYC, "GUEST_IA32_EFER"], "'load IA32_EFER' = 1 and guest EFER has "
       "reserved bits set", _GCR),
    _c(_G, "GUEST_EFER_LMA", [ENTRYC, "GUEST_IA32_EFER"], "'load IA32_EFER' = 1 and EFER.LMA differs from "
       "'IA-32e mode guest'", _GCR),
    _c(_G, "GUEST_EFER_LME", [ENTRYC, "GUEST_IA32_EFER", "GUEST_CR0"], "'load IA32_EFER' = 1, guest "
       "CR0.PG = 1 and EFER.LME differs from 'IA-32e mode guest'", _GCR),
    _c(_G, "GUEST_BNDCFGS", [ENTRYC, "GUEST_BNDCFGS"], "'load IA32_BNDCFGS' = 1 and reserved bits 4:2 are "
       "set or bits 63:12 are non-canonical", _GCR),
    _c(_G, "GUEST_CET_FIELDS", [ENTRYC, "GUEST_S_CET", "GUEST_SSP", "GUEST_INTR_SSP_TABLE"], "'load CET "
       "state' = 1 and guest S_CET has reserved bits 9:6 set or is non-canonical, SSP is non-canonical "
       "or has bits 1:0 set, or the interrupt-SSP-table address is non-canonical", _GCR),
    _c(_G, "GUEST_PKRS", [ENTRYC, "GUEST_IA32_PKRS"], "'load PKRS' = 1 and guest PKRS bits 63:32 are not "
       "0", _GCR),
    _c(_G, "GUEST_IA32E_PG_PAE", [ENTRYC, "GUEST_CR0", "GUEST_CR4"], "'IA-32e mode guest' = 1 and guest "
       "CR0.PG = 0 or CR4.PAE = 0", _GCR),
    _c(_G, "GUEST_32_PCIDE", [ENTRYC, "GUEST_CR4"], "'IA-32e mode guest' = 0 and guest CR4.PCIDE = 1",
       _GCR),
    # -- guest segment registers (SDM §27.3.1.2) -----------------------------------------------------
    _c(_G, "GUEST_TR_TI", ["GUEST_TR_SELECTOR"], "TR selector TI flag (bit 2) = 1", _GSEG),
    _c(_G, "GUEST_LDTR_TI", ["GUEST_LDTR_SELECTOR", "GUEST_LDTR_AR_BYTES"], "LDTR usable and its "
       "selector's TI flag = 1", _GSEG),
    _c(_G, "GUEST_SS_RPL", [PROC2, "GUEST_RFLAGS", "GUEST_SS_SELECTOR", "GUEST_CS_SELECTOR"],
       "not virtual-8086, 'unrestricted guest' = 0 and SS.RPL differs from CS.RPL", _GSEG),
    _c(_G, "GUEST_V86_BASE", ["GUEST_RFLAGS", *_seg("CS", "SS", "DS", "ES", "FS", "GS",
                                                    parts=("SELECTOR", "BASE"))],
       "virtual-8086 guest and a CS, SS, DS, ES, FS or GS base is not selector × 16", _GSEG),
    _c(_G, "GUEST_V86_LIMIT", ["GUEST_RFLAGS", *_seg("CS", "SS", "DS", "ES", "FS", "GS", parts=("LIMIT",))],
       "virtual-8086 guest and a CS, SS, DS, ES, FS or GS limit is not 0xFFFF", _GSEG),
    _c(_G, "GUEST_V86_AR", ["GUEST_RFLAGS", *_seg("CS", "SS", "DS", "ES", "FS", "GS", parts=("AR_BYTES",))],
       "virtual-8086 guest and a CS, SS, DS, ES, FS or GS access-rights value is not 0xF3", _GSEG),
    _c(_G, "GUEST_BASE_CANON", _seg("TR", "FS", "GS", "LDTR", parts=("BASE", "AR_BYTES")),
       "TR, FS or GS base non-canonical, or LDTR usable with a non-canonical base", _GSEG),
    _c(_G, "GUEST_BASE_HI", _seg("CS", "SS", "DS", "ES", parts=("BASE", "AR_BYTES")),
       "CS base bits 63:32 not 0, or SS, DS, ES usable with base bits 63:32 not 0", _GSEG),
    _c(_G, "GUEST_CS_TYPE", ["GUEST_RFLAGS", PROC2, "GUEST_CS_AR_BYTES"], "not virtual-8086 and CS type "
       "is not 9, 11, 13 or 15 (3 is allowed with 'unrestricted guest' = 1)", _GSEG),
    _c(_G, "GUEST_SS_TYPE", ["GUEST_RFLAGS", "GUEST_SS_AR_BYTES"], "not virtual-8086, SS usable and its "
       "type is not 3 or 7", _GSEG),
    _c(_G, "GUEST_DSEG_ACCESSED", ["GUEST_RFLAGS", *_seg("DS", "ES", "FS", "GS", parts=("AR_BYTES",))],
       "not virtual-8086 and a usable DS, ES, FS or GS is not accessed (type bit 0 = 0)", _GSEG),
    _c(_G, "GUEST_DSEG_CODE_READ", ["GUEST_RFLAGS", *_seg("DS", "ES", "FS", "GS", parts=("AR_BYTES",))],
       "not virtual-8086 and a usable DS, ES, FS or GS is an execute-only code segment", _GSEG),
    _c(_G, "GUEST_SEG_S", ["GUEST_RFLAGS", *_seg("CS", "SS", "DS", "ES", "FS", "GS", parts=("AR_BYTES",))],
       "not virtual-8086 and CS, or a usable SS, DS, ES, FS or GS, is a system segment (S = 0)", _GSEG),
    _c(_G, "GUEST_CS_DPL_UG", ["GUEST_RFLAGS", "GUEST_CS_AR_BYTES"], "not virtual-8086, CS type 3 and "
       "CS.DPL not 0", _GSEG),
    _c(_G, "GUEST_CS_DPL_NONCONF", ["GUEST_RFLAGS", "GUEST_CS_AR_BYTES", "GUEST_SS_AR_BYTES"],
       "not virtual-8086, CS type 9 or 11 and CS.DPL differs from SS.DPL", _GSEG),
    _c(_G, "GUEST_CS_DPL_CONF", ["GUEST_RFLAGS", "GUEST_CS_AR_BYTES", "GUEST_SS_AR_BYTES"],
       "not virtual-8086, CS type 13 or 15 and CS.DPL greater than SS.DPL", _GSEG),
    _c(_G, "GUEST_SS_DPL_RPL", ["GUEST_RFLAGS", PROC2, "GUEST_SS_SELECTOR", "GUEST_SS_AR_BYTES"],
       "not virtual-8086, 'unrestricted guest' = 0 and SS.DPL differs from SS.RPL", _GSEG),
    _c(_G, "GUEST_SS_DPL_REAL", ["GUEST_RFLAGS", "GUEST_CR0", "GUEST_CS_AR_BYTES", "GUEST_SS_AR_BYTES"],
       "not virtual-8086, CS type 3 or CR0.PE = 0, and SS.DPL not 0", _GSEG),
    _c(_G, "GUEST_DSEG_DPL", ["GUEST_RFLAGS", PROC2, *_seg("DS", "ES", "FS", "GS",
                                                        parts=("SELECTOR", "AR_BYTES"))],
       "not virtual-8086, 'unrestricted guest' = 0 and a usable DS, ES, FS or GS of type 0-11 has "
       "DPL < RPL", _GSEG),
    _c(_G, "GUEST_SEG_P", ["GUEST_RFLAGS", *_seg("CS", "SS", "DS", "ES", "FS", "GS", parts=("AR_BYTES",))],
       "not virtual-8086 and CS, or a usable SS, DS, ES, FS or GS, is not present", _GSEG),
    _c(_G, "GUEST_SEG_AR_RSVD", ["GUEST_RFLAGS", *_seg("CS", "SS", "DS", "ES", "FS", "GS",
                                                       parts=("AR_BYTES",))],
       "not virtual-8086 and CS, or a usable SS, DS, ES, FS or GS, has access-rights bits 11:8 or "
       "31:17 set", _GSEG),
    _c(_G, "GUEST_CS_L_D", [ENTRYC, "GUEST_CS_AR_BYTES"], "'IA-32e mode guest' = 1 and CS.L = 1 and "
       "CS.D = 1", _GSEG),
    _c(_G, "GUEST_SEG_G", ["GUEST_RFLAGS", *_seg("CS", "SS", "DS", "ES", "FS", "GS",
                                                 parts=("LIMIT", "AR_BYTES"))],
       "not virtual-8086 and CS, or a usable SS, DS, ES, FS or GS, has G = 1 with limit[11:0] not "
       "0xFFF, or G = 0 with limit[31:20] not 0", _GSEG),
    _c(_G, "GUEST_TR_UNUSABLE", ["GUEST_TR_AR_BYTES"], "TR is marked unusable", _GSEG),
    _c(_G, "GUEST_TR_TYPE", [ENTRYC, "GUEST_TR_AR_BYTES"], "TR type is not 11 (busy 32/64-bit TSS), or 3 "
       "(busy 16-bit TSS) outside an IA-32e mode guest", _GSEG),
    _c(_G, "GUEST_TR_S_P_AR_G", ["GUEST_TR_LIMIT", "GUEST_TR_AR_BYTES"], "TR has S = 1, P = 0, "
       "access-rights bits 11:8 or 31:17 set, or a limit inconsistent with G", _GSEG),
    _c(_G, "GUEST_LDTR_AR", ["GUEST_LDTR_LIMIT", "GUEST_LDTR_AR_BYTES"], "LDTR usable with type not 2, "
       "S = 1, P = 0, access-rights bits 11:8 or 31:17 set, or a limit inconsistent with G", _GSEG),
    # -- guest descriptor-table registers (SDM §27.3.1.3) -----------------------------------------------
    _c(_G, "GUEST_GDTR_IDTR_CANON", ["GUEST_GDTR_BASE", "GUEST_IDTR_BASE"], "GDTR or IDTR base "
       "non-canonical", _GDT),
    _c(_G, "GUEST_GDTR_IDTR_LIMIT", ["GUEST_GDTR_LIMIT", "GUEST_IDTR_LIMIT"], "GDTR or IDTR limit bits "
       "31:16 not 0", _GDT),
    # -- guest RIP and RFLAGS (SDM §27.3.1.4) -------------------------------------------------------
    _c(_G, "GUEST_RIP_HI", [ENTRYC, "GUEST_CS_AR_BYTES", "GUEST_RIP"], "('IA-32e mode guest' = 0 or "
       "CS.L = 0) and RIP bits 63:32 not 0", _GRIP),
    _c(_G, "GUEST_RIP_CANON", [ENTRYC, "GUEST_CS_AR_BYTES", "GUEST_CR4", "GUEST_RIP"], "'IA-32e mode "
       "guest' = 1, CS.L = 1 and RIP non-canonical (57-bit with guest CR4.LA57)", _GRIP),
    _c(_G, "GUEST_RFLAGS_RSVD", ["GUEST_RFLAGS"], "RFLAGS bits 63:22, 15, 5 or 3 set", _GRIP),
    _c(_G, "GUEST_RFLAGS_BIT1", ["GUEST_RFLAGS"], "RFLAGS bit 1 is 0", _GRIP),
    _c(_G, "GUEST_RFLAGS_VM", [ENTRYC, "GUEST_CR0", "GUEST_RFLAGS"], "RFLAGS.VM = 1 and ('IA-32e mode "
       "guest' = 1 or CR0.PE = 0)", _GRIP),
    _c(_G, "GUEST_RFLAGS_IF_INJ", [INJ, "GUEST_RFLAGS"], "injecting an external interrupt with "
       "RFLAGS.IF = 0", _GRIP),
    # -- guest non-register state (SDM §27.3.1.5) ------------------------------------------------------
    _c(_G, "GUEST_ACT_RANGE", ["GUEST_ACTIVITY_STATE"], "activity state above 3 or not supported "
       "(IA32_VMX_MISC bits 6-8)", _GNR),
    _c(_G, "GUEST_ACT_HLT_DPL", ["GUEST_ACTIVITY_STATE", "GUEST_SS_AR_BYTES"], "activity state HLT and "
       "SS.DPL not 0", _GNR),
    _c(_G, "GUEST_ACT_BLOCKING", ["GUEST_ACTIVITY_STATE", "GUEST_INTERRUPTIBILITY_INFO"], "blocking by "
       "STI or MOV SS with an activity state other than active", _GNR),
    _c(_G, "GUEST_ACT_INJ", [INJ, "GUEST_ACTIVITY_STATE"], "injecting an event the activity state does "
       "not allow (HLT: external interrupt, NMI, #DB, #MC, other event 0; shutdown: NMI, #MC; "
       "wait-for-SIPI: none)", _GNR),
    _c(_G, "GUEST_ACT_WFS_SMM", [ENTRYC, "GUEST_ACTIVITY_STATE"], "'entry to SMM' = 1 and activity "
       "state wait-for-SIPI", _GNR),
    _c(_G, "GUEST_INTR_RSVD", ["GUEST_INTERRUPTIBILITY_INFO"], "interruptibility-state bits 31:5 set",
       _GNR),
    _c(_G, "GUEST_INTR_STI_MOVSS", ["GUEST_INTERRUPTIBILITY_INFO"], "blocking by STI and by MOV SS both "
       "set", _GNR),
    _c(_G, "GUEST_INTR_STI_IF", ["GUEST_INTERRUPTIBILITY_INFO", "GUEST_RFLAGS"], "blocking by STI with "
       "RFLAGS.IF = 0", _GNR),
    _c(_G, "GUEST_INTR_EXTINT", [INJ, "GUEST_INTERRUPTIBILITY_INFO"], "injecting an external interrupt "
       "with blocking by STI or MOV SS", _GNR),
    _c(_G, "GUEST_INTR_NMI_MOVSS", [INJ, "GUEST_INTERRUPTIBILITY_INFO"], "injecting an NMI with blocking "
       "by MOV SS", _GNR),
    _c(_G, "GUEST_INTR_NMI_STI", [INJ, "GUEST_INTERRUPTIBILITY_INFO"], "injecting an NMI with blocking "
       "by STI (model-specific; this model rejects it, with qualification 3)", _GNR, qualification=3),
    _c(_G, "GUEST_INTR_SMI_NOT_SMM", ["GUEST_INTERRUPTIBILITY_INFO"], "blocking by SMI set outside SMM",
       _GNR),
    _c(_G, "GUEST_INTR_SMI_ENTRY", [ENTRYC, "GUEST_INTERRUPTIBILITY_INFO"], "'entry to SMM' = 1 and "
       "blocking by SMI clear", _GNR),
    _c(_G, "GUEST_INTR_VNMI_BLOCK", [PIN, INJ, "GUEST_INTERRUPTIBILITY_INFO"], "'virtual NMIs' = 1, "
       "injecting an NMI, with blocking by NMI set", _GNR),
    _c(_G, "GUEST_INTR_ENCLAVE", ["GUEST_INTERRUPTIBILITY_INFO"], "enclave interruption (bit 4) set "
       "(this model has no SGX)", _GNR),
    _c(_G, "GUEST_PDE_RSVD", ["GUEST_PENDING_DBG_EXCEPTIONS"], "pending debug exceptions bits 11:4, 13, "
       "15 or 63:16 set (bit 16, RTM, is reserved: this model has no RTM)", _GNR),
    _c(_G, "GUEST_PDE_BS_SET", ["GUEST_PENDING_DBG_EXCEPTIONS", "GUEST_INTERRUPTIBILITY_INFO",
                                "GUEST_ACTIVITY_STATE", "GUEST_RFLAGS", "GUEST_IA32_DEBUGCTL"],
       "blocking by STI or MOV SS or activity HLT, RFLAGS.TF = 1, DEBUGCTL.BTF = 0, and BS (bit 14) "
       "clear", _GNR),
    _c(_G, "GUEST_PDE_BS_CLR", ["GUEST_PENDING_DBG_EXCEPTIONS", "GUEST_INTERRUPTIBILITY_INFO",
                                "GUEST_ACTIVITY_STATE", "GUEST_RFLAGS", "GUEST_IA32_DEBUGCTL"],
       "blocking by STI or MOV SS or activity HLT, (RFLAGS.TF = 0 or DEBUGCTL.BTF = 1), and BS set",
       _GNR),
    _c(_G, "GUEST_LINK_ALIGN", ["VMCS_LINK_POINTER"], "VMCS link pointer not all ones and not "
       "4K-aligned or not phys-valid", _GNR, qualification=4),
    _c(_G, "GUEST_LINK_REV", ["VMCS_LINK_POINTER"], "VMCS link pointer not all ones and the revision "
       "identifier (bits 30:0 of the first word at the pointer) wrong", _GNR, qualification=4),
    _c(_G, "GUEST_LINK_SHADOW", [PROC2, "VMCS_LINK_POINTER"], "VMCS link pointer not all ones and the "
       "shadow-VMCS indicator (bit 31 of that word) differs from 'VMCS shadowing'", _GNR,
       qualification=4),
    _c(_G, "GUEST_LINK_SELF", ["VMCS_LINK_POINTER"], "VMCS link pointer equal to the current-VMCS "
       "pointer", _GNR, qualification=4),
    # -- guest PDPTEs (SDM §27.3.1.6) -------------------------------------------------------------------
    _c(_G, "GUEST_PDPTE_RSVD", [ENTRYC, PROC2, "GUEST_CR0", "GUEST_CR4", "GUEST_CR3", "GUEST_PDPTR0",
                                "GUEST_PDPTR1", "GUEST_PDPTR2", "GUEST_PDPTR3"],
       "PAE paging outside IA-32e mode (CR0.PG = 1, CR4.PAE = 1, 'IA-32e mode guest' = 0) and a "
       "present PDPTE (from the VMCS with 'enable EPT' = 1, else from guest memory at CR3[31:5]) has "
       "bits 2:1, 8:5 or 63:MAXPHYADDR set", _GPDPTE, qualification=2),
    # -- VM-entry MSR-load list (SDM §27.4) -----------------------------------------------------------
    _c(_M, "MSRLD_RSVD", ["VM_ENTRY_MSR_LOAD_ADDR"], "an entry has bits 63:32 set", _MSR),
    _c(_M, "MSRLD_FSGS", ["VM_ENTRY_MSR_LOAD_ADDR"], "an entry loads IA32_FS_BASE (0xC0000100) or "
       "IA32_GS_BASE (0xC0000101)", _MSR),
    _c(_M, "MSRLD_X2APIC", ["VM_ENTRY_MSR_LOAD_ADDR"], "an entry loads an x2APIC MSR (0x800-0x8FF)", _MSR),
    _c(_M, "MSRLD_SMM_MON", ["VM_ENTRY_MSR_LOAD_ADDR"], "an entry loads IA32_SMM_MONITOR_CTL (0x9B)", _MSR),
    _c(_M, "MSRLD_UCODE", ["VM_ENTRY_MSR_LOAD_ADDR"], "an entry loads IA32_UCODE_WRITE (0x79) or "
       "IA32_UCODE_REV (0x8B)", _MSR),
    _c(_M, "MSRLD_WRMSR_GP", ["VM_ENTRY_MSR_LOAD_ADDR"], "an entry's WRMSR would raise #GP: an MSR the "
       "model does not implement, or a value with reserved bits set", _MSR),
    _c(_M, "MSRLD_TOO_MANY", ["VM_ENTRY_MSR_LOAD_COUNT"], "the entry's index exceeds the recommended "
       "maximum 512 × (IA32_VMX_MISC[27:25] + 1)", _MSR),
)

BY_ID = {check.id: check for check in CHECKS}
assert len(BY_ID) == len(CHECKS), "duplicate check IDs"


def checks_in(group):
    """The checks of one group, in catalogue (priority) order."""
    return tuple(check for check in CHECKS if check.group == group)
