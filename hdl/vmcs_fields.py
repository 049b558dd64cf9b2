"""The VMCS field catalogue: every VMCS field encoding the model knows, in one table.

Each entry is the 32-bit *encoding* software passes to VMREAD/VMWRITE (Intel SDM vol. 3C appendix B,
"Field encoding in VMCS", and the encoding format of §24.11.2), the field's upper-case name, a short
description and the processor features the field depends on. An encoding is made of:

======  =============================================================================
Bits    Meaning
======  =============================================================================
0       access type: 0 = full, 1 = high half (bits 63:32) of a 64-bit field
9:1     index, distinguishing fields of the same width and type
11:10   type: 0 control, 1 VM-exit information (read-only data), 2 guest, 3 host
12      reserved (0)
14:13   width: 0 16-bit, 1 64-bit, 2 32-bit, 3 natural width
31:15   reserved (0)
======  =============================================================================

Names follow Linux KVM's ``enum vmcs_field`` (``arch/x86/include/asm/vmx.h``); fields KVM does not
name carry a name invented in the same style. Only full encodings are listed; the high half of a
64-bit field is ``encoding + 1`` and is named ``<NAME>_HIGH`` by :func:`field_name`.

A field exists on the modelled processor only when all the features in its ``requires`` are
supported (see :meth:`hwvirt.hdl.capabilities.VMXCapabilities.field_supported`); VMREAD/VMWRITE of
any other encoding, listed here or not, fails with VM-instruction error 12.

This table is the single source of truth for field encodings: it is read by the gateware generator
(field storage and the VMREAD/VMWRITE decoder), the scenario parser (:func:`lookup_encoding`), the
reports (:func:`field_name`) and the tests.
"""

import difflib
import enum
from dataclasses import dataclass


__all__ = ["FieldWidth", "FieldType", "VMCSField", "VMCS_FIELDS", "BY_NAME", "BY_ENCODING",
           "RESERVED_ENCODING_BITS", "decode_encoding", "lookup_encoding", "field_name"]


class FieldWidth(enum.IntEnum):
    """Encoding bits 14:13."""
    BITS16 = 0
    BITS64 = 1
    BITS32 = 2
    NATURAL = 3


class FieldType(enum.IntEnum):
    """Encoding bits 11:10."""
    CONTROL = 0
    EXIT_INFORMATION = 1
    GUEST_STATE = 2
    HOST_STATE = 3


#: Bits of a 32-bit encoding that must be 0: 31:15 and 12 (SDM §24.11.2).
RESERVED_ENCODING_BITS = 0xFFFF_9000

_WIDTH_NAMES = {FieldWidth.BITS16: "16-bit", FieldWidth.BITS64: "64-bit", FieldWidth.BITS32: "32-bit",
                FieldWidth.NATURAL: "natural-width"}
_BITS = {FieldWidth.BITS16: 16, FieldWidth.BITS64: 64, FieldWidth.BITS32: 32, FieldWidth.NATURAL: 64}


def decode_encoding(encoding):
    """Split bits 14:0 of ``encoding`` into ``(width, type, index, high)``; nothing is validated."""
    return (FieldWidth((encoding >> 13) & 3), FieldType((encoding >> 10) & 3),
            (encoding >> 1) & 0x1FF, bool(encoding & 1))


@dataclass(frozen=True)
class VMCSField:
    """One VMCS field.

    ``encoding`` is the full (even) encoding; ``requires`` lists feature names (keys of
    :data:`hwvirt.hdl.capabilities.FEATURES`, or ``cr3_target_value_N``) that must *all* be
    supported for the field to exist.
    """
    encoding: int
    name: str
    description: str
    requires: tuple = ()

    def __post_init__(self):
        if not isinstance(self.encoding, int) or self.encoding < 0 or self.encoding & 1 \
                or self.encoding & RESERVED_ENCODING_BITS:
            raise ValueError(f"{self.name}: {self.encoding!r} is not a full VMCS field encoding")
        if not self.name.isupper() or self.name.endswith("_HIGH"):
            raise ValueError(f"{self.name!r}: field names are upper case and do not end in _HIGH")
        if not isinstance(self.requires, tuple) or not all(isinstance(r, str) for r in self.requires):
            raise ValueError(f"{self.name}: requires must be a tuple of feature names")

    @property
    def width(self):
        return FieldWidth((self.encoding >> 13) & 3)

    @property
    def type(self):
        return FieldType((self.encoding >> 10) & 3)

    @property
    def index(self):
        return (self.encoding >> 1) & 0x1FF

    @property
    def readonly(self):
        """VM-exit information fields: VMWRITE fails (error 13) unless IA32_VMX_MISC[29] is set."""
        return self.type == FieldType.EXIT_INFORMATION

    @property
    def bits(self):
        """Storage width: 16, 32 or 64 (natural-width fields are 64 bits on Intel 64)."""
        return _BITS[self.width]

    @property
    def has_high(self):
        """Whether the field has a high-half encoding (``encoding + 1``)."""
        return self.width == FieldWidth.BITS64


_F = VMCSField
_VPID, _PI, _VE = ("vpid",), ("posted_interrupts",), ("ept_violation_ve",)
_HLAT, _IPIV, _TIMER = ("hlat",), ("ipi_virtualization",), ("apic_timer_virtualization",)
_VID, _PML, _EPT = ("virtual_interrupt_delivery",), ("pml",), ("ept",)
_SHADOW, _PASID, _SEAM = ("vmcs_shadowing",), ("pasid_translation",), ("seam",)
_SPEC_VIRT, _SPEC_LOAD = ("spec_ctrl_virtualization",), ("load_spec_ctrl",)
_FRED, _FRED_CET, _CET, _PKS = ("fred",), ("fred", "cet"), ("cet",), ("pks",)
_PAT, _EFER, _PERF = ("load_pat",), ("load_efer",), ("load_perf_global_ctrl",)
_PLE = ("ple",)

_TABLE = (
    # -- 16-bit control fields (0x00xx) -----------------------------------------------------------
    _F(0x0000, "VIRTUAL_PROCESSOR_ID", "Virtual-processor identifier (VPID)", _VPID),
    _F(0x0002, "POSTED_INTR_NV", "Posted-interrupt notification vector", _PI),
    _F(0x0004, "EPTP_INDEX", "EPTP index", _VE),
    _F(0x0006, "HLAT_PREFIX_SIZE", "HLAT prefix size", _HLAT),
    _F(0x0008, "LAST_PID_POINTER_INDEX", "Last PID-pointer index", _IPIV),
    _F(0x000A, "VIRTUAL_TIMER_VECTOR", "Virtual timer vector", _TIMER),
    # -- 16-bit guest-state fields (0x08xx) -------------------------------------------------------
    _F(0x0800, "GUEST_ES_SELECTOR", "Guest ES selector"),
    _F(0x0802, "GUEST_CS_SELECTOR", "Guest CS selector"),
    _F(0x0804, "GUEST_SS_SELECTOR", "Guest SS selector"),
    _F(0x0806, "GUEST_DS_SELECTOR", "Guest DS selector"),
    _F(0x0808, "GUEST_FS_SELECTOR", "Guest FS selector"),
    _F(0x080A, "GUEST_GS_SELECTOR", "Guest GS selector"),
    _F(0x080C, "GUEST_LDTR_SELECTOR", "Guest LDTR selector"),
    _F(0x080E, "GUEST_TR_SELECTOR", "Guest TR selector"),
    _F(0x0810, "GUEST_INTR_STATUS", "Guest interrupt status (RVI 7:0, SVI 15:8)", _VID),
    _F(0x0812, "GUEST_PML_INDEX", "PML index", _PML),
    _F(0x0814, "GUEST_UINV", "Guest user-interrupt notification vector", ("uintr",)),
    # -- 16-bit host-state fields (0x0Cxx) --------------------------------------------------------
    _F(0x0C00, "HOST_ES_SELECTOR", "Host ES selector"),
    _F(0x0C02, "HOST_CS_SELECTOR", "Host CS selector"),
    _F(0x0C04, "HOST_SS_SELECTOR", "Host SS selector"),
    _F(0x0C06, "HOST_DS_SELECTOR", "Host DS selector"),
    _F(0x0C08, "HOST_FS_SELECTOR", "Host FS selector"),
    _F(0x0C0A, "HOST_GS_SELECTOR", "Host GS selector"),
    _F(0x0C0C, "HOST_TR_SELECTOR", "Host TR selector"),
    # -- 64-bit control fields (0x20xx) -----------------------------------------------------------
    _F(0x2000, "IO_BITMAP_A", "I/O bitmap A address"),
    _F(0x2002, "IO_BITMAP_B", "I/O bitmap B address"),
    _F(0x2004, "MSR_BITMAP", "MSR bitmaps address", ("msr_bitmaps",)),
    _F(0x2006, "VM_EXIT_MSR_STORE_ADDR", "VM-exit MSR-store area address"),
    _F(0x2008, "VM_EXIT_MSR_LOAD_ADDR", "VM-exit MSR-load area address"),
    _F(0x200A, "VM_ENTRY_MSR_LOAD_ADDR", "VM-entry MSR-load area address"),
    _F(0x200C, "EXECUTIVE_VMCS_POINTER", "Executive-VMCS pointer", ("dual_monitor",)),
    _F(0x200E, "PML_ADDRESS", "Page-modification log address", _PML),
    _F(0x2010, "TSC_OFFSET", "TSC offset"),
    _F(0x2012, "VIRTUAL_APIC_PAGE_ADDR", "Virtual-APIC page address", ("tpr_shadow",)),
    _F(0x2014, "APIC_ACCESS_ADDR", "APIC-access page address", ("apic_access",)),
    _F(0x2016, "POSTED_INTR_DESC_ADDR", "Posted-interrupt descriptor address", _PI),
    _F(0x2018, "VM_FUNCTION_CONTROL", "VM-function controls", ("vmfunc",)),
    _F(0x201A, "EPT_POINTER", "EPT pointer (EPTP)", _EPT),
    _F(0x201C, "EOI_EXIT_BITMAP0", "EOI-exit bitmap, vectors 0-63", _VID),
    _F(0x201E, "EOI_EXIT_BITMAP1", "EOI-exit bitmap, vectors 64-127", _VID),
    _F(0x2020, "EOI_EXIT_BITMAP2", "EOI-exit bitmap, vectors 128-191", _VID),
    _F(0x2022, "EOI_EXIT_BITMAP3", "EOI-exit bitmap, vectors 192-255", _VID),
    _F(0x2024, "EPTP_LIST_ADDRESS", "EPTP-list address", ("eptp_switching",)),
    _F(0x2026, "VMREAD_BITMAP", "VMREAD-bitmap address", _SHADOW),
    _F(0x2028, "VMWRITE_BITMAP", "VMWRITE-bitmap address", _SHADOW),
    _F(0x202A, "VE_INFORMATION_ADDRESS", "Virtualization-exception information address", _VE),
    _F(0x202C, "XSS_EXIT_BITMAP", "XSS-exiting bitmap", ("xsaves",)),
    _F(0x202E, "ENCLS_EXITING_BITMAP", "ENCLS-exiting bitmap", ("encls_exiting",)),
    _F(0x2030, "SPPT_POINTER", "Sub-page-permission-table pointer", ("spp",)),
    _F(0x2032, "TSC_MULTIPLIER", "TSC multiplier", ("tsc_scaling",)),
    _F(0x2034, "TERTIARY_VM_EXEC_CONTROL", "Tertiary processor-based VM-execution controls",
       ("tertiary_controls",)),
    _F(0x2036, "ENCLV_EXITING_BITMAP", "ENCLV-exiting bitmap", ("enclv_exiting",)),
    _F(0x2038, "LOW_PASID_DIR_ADDRESS", "Low PASID directory address", _PASID),
    _F(0x203A, "HIGH_PASID_DIR_ADDRESS", "High PASID directory address", _PASID),
    _F(0x203C, "SHARED_EPT_POINTER", "Shared EPT pointer (SEAM)", _SEAM),
    _F(0x203E, "PCONFIG_EXITING_BITMAP", "PCONFIG-exiting bitmap", ("pconfig",)),
    _F(0x2040, "HLAT_POINTER", "HLAT pointer (HLATP)", _HLAT),
    _F(0x2042, "PID_POINTER_TABLE", "PID-pointer table address", _IPIV),
    _F(0x2044, "SECONDARY_VM_EXIT_CONTROLS", "Secondary VM-exit controls",
       ("secondary_exit_controls",)),
    _F(0x204A, "IA32_SPEC_CTRL_MASK", "IA32_SPEC_CTRL mask", _SPEC_VIRT),
    _F(0x204C, "IA32_SPEC_CTRL_SHADOW", "IA32_SPEC_CTRL shadow", _SPEC_VIRT),
    _F(0x204E, "GUEST_DEADLINE_SHADOW", "Guest deadline shadow (APIC-timer virtualization)", _TIMER),
    _F(0x2052, "INJECTED_EVENT_DATA", "Injected-event data", _FRED),
    # -- 64-bit read-only data fields (0x24xx) ----------------------------------------------------
    _F(0x2400, "GUEST_PHYSICAL_ADDRESS", "Guest-physical address"),
    _F(0x2402, "MSR_DATA", "MSR data (MSRLIST instructions)", ("msrlist",)),
    _F(0x2404, "ORIGINAL_EVENT_DATA", "Original-event data", _FRED),
    # -- 64-bit guest-state fields (0x28xx) -------------------------------------------------------
    _F(0x2800, "VMCS_LINK_POINTER", "VMCS link pointer"),
    _F(0x2802, "GUEST_IA32_DEBUGCTL", "Guest IA32_DEBUGCTL"),
    _F(0x2804, "GUEST_IA32_PAT", "Guest IA32_PAT", _PAT),
    _F(0x2806, "GUEST_IA32_EFER", "Guest IA32_EFER", _EFER),
    _F(0x2808, "GUEST_IA32_PERF_GLOBAL_CTRL", "Guest IA32_PERF_GLOBAL_CTRL", _PERF),
    _F(0x280A, "GUEST_PDPTR0", "Guest PDPTE 0", _EPT),
    _F(0x280C, "GUEST_PDPTR1", "Guest PDPTE 1", _EPT),
    _F(0x280E, "GUEST_PDPTR2", "Guest PDPTE 2", _EPT),
    _F(0x2810, "GUEST_PDPTR3", "Guest PDPTE 3", _EPT),
    _F(0x2812, "GUEST_BNDCFGS", "Guest IA32_BNDCFGS", ("mpx",)),
    _F(0x2814, "GUEST_IA32_RTIT_CTL", "Guest IA32_RTIT_CTL", ("intel_pt",)),
    _F(0x2816, "GUEST_IA32_LBR_CTL", "Guest IA32_LBR_CTL", ("arch_lbr",)),
    _F(0x2818, "GUEST_IA32_PKRS", "Guest IA32_PKRS", _PKS),
    _F(0x281A, "GUEST_IA32_FRED_CONFIG", "Guest IA32_FRED_CONFIG", _FRED),
    _F(0x281C, "GUEST_IA32_FRED_RSP1", "Guest IA32_FRED_RSP1", _FRED),
    _F(0x281E, "GUEST_IA32_FRED_RSP2", "Guest IA32_FRED_RSP2", _FRED),
    _F(0x2820, "GUEST_IA32_FRED_RSP3", "Guest IA32_FRED_RSP3", _FRED),
    _F(0x2822, "GUEST_IA32_FRED_STKLVLS", "Guest IA32_FRED_STKLVLS", _FRED),
    _F(0x2824, "GUEST_IA32_FRED_SSP1", "Guest IA32_FRED_SSP1", _FRED_CET),
    _F(0x2826, "GUEST_IA32_FRED_SSP2", "Guest IA32_FRED_SSP2", _FRED_CET),
    _F(0x2828, "GUEST_IA32_FRED_SSP3", "Guest IA32_FRED_SSP3", _FRED_CET),
    _F(0x282E, "GUEST_IA32_SPEC_CTRL", "Guest IA32_SPEC_CTRL", _SPEC_LOAD),
    _F(0x2830, "GUEST_DEADLINE", "Guest deadline (APIC-timer virtualization)", _TIMER),
    # -- 64-bit host-state fields (0x2Cxx) --------------------------------------------------------
    _F(0x2C00, "HOST_IA32_PAT", "Host IA32_PAT", _PAT),
    _F(0x2C02, "HOST_IA32_EFER", "Host IA32_EFER", _EFER),
    _F(0x2C04, "HOST_IA32_PERF_GLOBAL_CTRL", "Host IA32_PERF_GLOBAL_CTRL", _PERF),
    _F(0x2C06, "HOST_IA32_PKRS", "Host IA32_PKRS", _PKS),
    _F(0x2C08, "HOST_IA32_FRED_CONFIG", "Host IA32_FRED_CONFIG", _FRED),
    _F(0x2C0A, "HOST_IA32_FRED_RSP1", "Host IA32_FRED_RSP1", _FRED),
    _F(0x2C0C, "HOST_IA32_FRED_RSP2", "Host IA32_FRED_RSP2", _FRED),
    _F(0x2C0E, "HOST_IA32_FRED_RSP3", "Host IA32_FRED_RSP3", _FRED),
    _F(0x2C10, "HOST_IA32_FRED_STKLVLS", "Host IA32_FRED_STKLVLS", _FRED),
    _F(0x2C12, "HOST_IA32_FRED_SSP1", "Host IA32_FRED_SSP1", _FRED_CET),
    _F(0x2C14, "HOST_IA32_FRED_SSP2", "Host IA32_FRED_SSP2", _FRED_CET),
    _F(0x2C16, "HOST_IA32_FRED_SSP3", "Host IA32_FRED_SSP3", _FRED_CET),
    _F(0x2C1A, "HOST_IA32_SPEC_CTRL", "Host IA32_SPEC_CTRL", _SPEC_LOAD),
    # -- 32-bit control fields (0x40xx) -----------------------------------------------------------
    _F(0x4000, "PIN_BASED_VM_EXEC_CONTROL", "Pin-based VM-execution controls"),
    _F(0x4002, "CPU_BASED_VM_EXEC_CONTROL", "Primary processor-based VM-execution controls"),
    _F(0x4004, "EXCEPTION_BITMAP", "Exception bitmap"),
    _F(0x4006, "PAGE_FAULT_ERROR_CODE_MASK", "Page-fault error-code mask"),
    _F(0x4008, "PAGE_FAULT_ERROR_CODE_MATCH", "Page-fault error-code match"),
    _F(0x400A, "CR3_TARGET_COUNT", "CR3-target count"),
    _F(0x400C, "VM_EXIT_CONTROLS", "Primary VM-exit controls"),
    _F(0x400E, "VM_EXIT_MSR_STORE_COUNT", "VM-exit MSR-store count"),
    _F(0x4010, "VM_EXIT_MSR_LOAD_COUNT", "VM-exit MSR-load count"),
    _F(0x4012, "VM_ENTRY_CONTROLS", "VM-entry controls"),
    _F(0x4014, "VM_ENTRY_MSR_LOAD_COUNT", "VM-entry MSR-load count"),
    _F(0x4016, "VM_ENTRY_INTR_INFO_FIELD", "VM-entry interruption information"),
    _F(0x4018, "VM_ENTRY_EXCEPTION_ERROR_CODE", "VM-entry exception error code"),
    _F(0x401A, "VM_ENTRY_INSTRUCTION_LEN", "VM-entry instruction length"),
    _F(0x401C, "TPR_THRESHOLD", "TPR threshold", ("tpr_shadow",)),
    _F(0x401E, "SECONDARY_VM_EXEC_CONTROL", "Secondary processor-based VM-execution controls",
       ("secondary_controls",)),
    _F(0x4020, "PLE_GAP", "PAUSE-loop exiting gap", _PLE),
    _F(0x4022, "PLE_WINDOW", "PAUSE-loop exiting window", _PLE),
    _F(0x4024, "NOTIFY_WINDOW", "Notify window (instruction-timeout control)", ("notify_vm_exiting",)),
    _F(0x4026, "SEAM_GUEST_KEYID", "SEAM guest KeyID", _SEAM),
    # -- 32-bit read-only data fields (0x44xx) ----------------------------------------------------
    _F(0x4400, "VM_INSTRUCTION_ERROR", "VM-instruction error number"),
    _F(0x4402, "VM_EXIT_REASON", "Exit reason"),
    _F(0x4404, "VM_EXIT_INTR_INFO", "VM-exit interruption information"),
    _F(0x4406, "VM_EXIT_INTR_ERROR_CODE", "VM-exit interruption error code"),
    _F(0x4408, "IDT_VECTORING_INFO_FIELD", "IDT-vectoring information"),
    _F(0x440A, "IDT_VECTORING_ERROR_CODE", "IDT-vectoring error code"),
    _F(0x440C, "VM_EXIT_INSTRUCTION_LEN", "VM-exit instruction length"),
    _F(0x440E, "VMX_INSTRUCTION_INFO", "VM-exit instruction information"),
    # -- 32-bit guest-state fields (0x48xx) -------------------------------------------------------
    _F(0x4800, "GUEST_ES_LIMIT", "Guest ES limit"),
    _F(0x4802, "GUEST_CS_LIMIT", "Guest CS limit"),
    _F(0x4804, "GUEST_SS_LIMIT", "Guest SS limit"),
    _F(0x4806, "GUEST_DS_LIMIT", "Guest DS limit"),
    _F(0x4808, "GUEST_FS_LIMIT", "Guest FS limit"),
    _F(0x480A, "GUEST_GS_LIMIT", "Guest GS limit"),
    _F(0x480C, "GUEST_LDTR_LIMIT", "Guest LDTR limit"),
    _F(0x480E, "GUEST_TR_LIMIT", "Guest TR limit"),
    _F(0x4810, "GUEST_GDTR_LIMIT", "Guest GDTR limit"),
    _F(0x4812, "GUEST_IDTR_LIMIT", "Guest IDTR limit"),
    _F(0x4814, "GUEST_ES_AR_BYTES", "Guest ES access rights"),
    _F(0x4816, "GUEST_CS_AR_BYTES", "Guest CS access rights"),
    _F(0x4818, "GUEST_SS_AR_BYTES", "Guest SS access rights"),
    _F(0x481A, "GUEST_DS_AR_BYTES", "Guest DS access rights"),
    _F(0x481C, "GUEST_FS_AR_BYTES", "Guest FS access rights"),
    _F(0x481E, "GUEST_GS_AR_BYTES", "Guest GS access rights"),
    _F(0x4820, "GUEST_LDTR_AR_BYTES", "Guest LDTR access rights"),
    _F(0x4822, "GUEST_TR_AR_BYTES", "Guest TR access rights"),
    _F(0x4824, "GUEST_INTERRUPTIBILITY_INFO", "Guest interruptibility state"),
    _F(0x4826, "GUEST_ACTIVITY_STATE", "Guest activity state"),
    _F(0x4828, "GUEST_SMBASE", "Guest SMBASE"),
    _F(0x482A, "GUEST_SYSENTER_CS", "Guest IA32_SYSENTER_CS"),
    _F(0x482E, "VMX_PREEMPTION_TIMER_VALUE", "VMX-preemption timer value", ("preemption_timer",)),
    # -- 32-bit host-state field (0x4Cxx) ---------------------------------------------------------
    _F(0x4C00, "HOST_IA32_SYSENTER_CS", "Host IA32_SYSENTER_CS"),
    # -- natural-width control fields (0x60xx) ----------------------------------------------------
    _F(0x6000, "CR0_GUEST_HOST_MASK", "CR0 guest/host mask"),
    _F(0x6002, "CR4_GUEST_HOST_MASK", "CR4 guest/host mask"),
    _F(0x6004, "CR0_READ_SHADOW", "CR0 read shadow"),
    _F(0x6006, "CR4_READ_SHADOW", "CR4 read shadow"),
    _F(0x6008, "CR3_TARGET_VALUE0", "CR3-target value 0", ("cr3_target_value_0",)),
    _F(0x600A, "CR3_TARGET_VALUE1", "CR3-target value 1", ("cr3_target_value_1",)),
    _F(0x600C, "CR3_TARGET_VALUE2", "CR3-target value 2", ("cr3_target_value_2",)),
    _F(0x600E, "CR3_TARGET_VALUE3", "CR3-target value 3", ("cr3_target_value_3",)),
    # -- natural-width read-only data fields (0x64xx) ---------------------------------------------
    _F(0x6400, "EXIT_QUALIFICATION", "Exit qualification"),
    _F(0x6402, "IO_RCX", "I/O RCX (SMI after I/O instruction)"),
    _F(0x6404, "IO_RSI", "I/O RSI (SMI after I/O instruction)"),
    _F(0x6406, "IO_RDI", "I/O RDI (SMI after I/O instruction)"),
    _F(0x6408, "IO_RIP", "I/O RIP (SMI after I/O instruction)"),
    _F(0x640A, "GUEST_LINEAR_ADDRESS", "Guest-linear address"),
    # -- natural-width guest-state fields (0x68xx) ------------------------------------------------
    _F(0x6800, "GUEST_CR0", "Guest CR0"),
    _F(0x6802, "GUEST_CR3", "Guest CR3"),
    _F(0x6804, "GUEST_CR4", "Guest CR4"),
    _F(0x6806, "GUEST_ES_BASE", "Guest ES base"),
    _F(0x6808, "GUEST_CS_BASE", "Guest CS base"),
    _F(0x680A, "GUEST_SS_BASE", "Guest SS base"),
    _F(0x680C, "GUEST_DS_BASE", "Guest DS base"),
    _F(0x680E, "GUEST_FS_BASE", "Guest FS base"),
    _F(0x6810, "GUEST_GS_BASE", "Guest GS base"),
    _F(0x6812, "GUEST_LDTR_BASE", "Guest LDTR base"),
    _F(0x6814, "GUEST_TR_BASE", "Guest TR base"),
    _F(0x6816, "GUEST_GDTR_BASE", "Guest GDTR base"),
    _F(0x6818, "GUEST_IDTR_BASE", "Guest IDTR base"),
    _F(0x681A, "GUEST_DR7", "Guest DR7"),
    _F(0x681C, "GUEST_RSP", "Guest RSP"),
    _F(0x681E, "GUEST_RIP", "Guest RIP"),
    _F(0x6820, "GUEST_RFLAGS", "Guest RFLAGS"),
    _F(0x6822, "GUEST_PENDING_DBG_EXCEPTIONS", "Guest pending debug exceptions"),
    _F(0x6824, "GUEST_SYSENTER_ESP", "Guest IA32_SYSENTER_ESP"),
    _F(0x6826, "GUEST_SYSENTER_EIP", "Guest IA32_SYSENTER_EIP"),
    _F(0x6828, "GUEST_S_CET", "Guest IA32_S_CET", _CET),
    _F(0x682A, "GUEST_SSP", "Guest shadow-stack pointer", _CET),
    _F(0x682C, "GUEST_INTR_SSP_TABLE", "Guest IA32_INTERRUPT_SSP_TABLE_ADDR", _CET),
    # -- natural-width host-state fields (0x6Cxx) -------------------------------------------------
    _F(0x6C00, "HOST_CR0", "Host CR0"),
    _F(0x6C02, "HOST_CR3", "Host CR3"),
    _F(0x6C04, "HOST_CR4", "Host CR4"),
    _F(0x6C06, "HOST_FS_BASE", "Host FS base"),
    _F(0x6C08, "HOST_GS_BASE", "Host GS base"),
    _F(0x6C0A, "HOST_TR_BASE", "Host TR base"),
    _F(0x6C0C, "HOST_GDTR_BASE", "Host GDTR base"),
    _F(0x6C0E, "HOST_IDTR_BASE", "Host IDTR base"),
    _F(0x6C10, "HOST_IA32_SYSENTER_ESP", "Host IA32_SYSENTER_ESP"),
    _F(0x6C12, "HOST_IA32_SYSENTER_EIP", "Host IA32_SYSENTER_EIP"),
    _F(0x6C14, "HOST_RSP", "Host RSP"),
    _F(0x6C16, "HOST_RIP", "Host RIP"),
    _F(0x6C18, "HOST_S_CET", "Host IA32_S_CET", _CET),
    _F(0x6C1A, "HOST_SSP", "Host shadow-stack pointer", _CET),
    _F(0x6C1C, "HOST_INTR_SSP_TABLE", "Host IA32_INTERRUPT_SSP_TABLE_ADDR", _CET),
)

#: Every field, sorted by encoding.
VMCS_FIELDS = tuple(sorted(_TABLE, key=lambda f: f.encoding))
#: Upper-case field name -> field (full names only; "_HIGH" names are resolved by lookup_encoding).
BY_NAME = {f.name: f for f in VMCS_FIELDS}
#: Full encoding -> field.
BY_ENCODING = {f.encoding: f for f in VMCS_FIELDS}

if len(BY_NAME) != len(VMCS_FIELDS) or len(BY_ENCODING) != len(VMCS_FIELDS):
    raise RuntimeError("VMCS field table has duplicate names or encodings")

del _F, _TABLE


def _suggestions(name):
    candidates = list(BY_NAME) + [f.name + "_HIGH" for f in VMCS_FIELDS if f.has_high]
    return difflib.get_close_matches(name, candidates, n=3)


def lookup_encoding(spec):
    """The encoding named by ``spec``.

    ``spec`` is an ``int`` (any value 0 … 2**64-1 is returned unchanged, even an unknown or
    reserved encoding: the hardware must answer those itself), or a ``str``: a field name in any
    case (``"guest_cr0"``), a 64-bit field's name with the suffix ``_HIGH`` for its high half
    (``encoding + 1``), or a number (``"0x6800"``, ``"26624"``).

    Raises
    ------
    ValueError
        For an unknown name (the message suggests close matches), ``_HIGH`` on a field that is not
        64 bits wide, a number outside 0 … 2**64-1, a ``bool``, or any other type.
    """
    if isinstance(spec, bool) or not isinstance(spec, (int, str)):
        raise ValueError(f"VMCS field must be a name or an encoding, not {spec!r}")
    if isinstance(spec, str):
        text = spec.strip()
        try:
            value = int(text, 0)            # "0x6800", "26624", "0b…"
        except ValueError:
            try:
                value = int(text, 10)       # decimal with leading zeros, "026624"
            except ValueError:
                return _lookup_name(spec)
    else:
        value = spec
    if not 0 <= value < (1 << 64):
        raise ValueError(f"VMCS field encoding {spec!r} is outside 0 … 2**64-1")
    return value


def _lookup_name(spec):
    name = spec.strip().upper()
    field = BY_NAME.get(name)
    if field is not None:
        return field.encoding
    if name.endswith("_HIGH"):
        field = BY_NAME.get(name[:-len("_HIGH")])
        if field is not None:
            if not field.has_high:
                kind = _WIDTH_NAMES[field.width]
                raise ValueError(f"VMCS field {spec!r}: {field.name} is a {kind} field and has no "
                                 f"high half (only 64-bit fields do)")
            return field.encoding + 1
    close = _suggestions(name)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"unknown VMCS field {spec!r}{hint}")


def field_name(encoding):
    """Name of ``encoding``: ``"GUEST_CR0"``, ``"TSC_OFFSET_HIGH"``, or the hex number if unknown."""
    field = BY_ENCODING.get(encoding)
    if field is not None:
        return field.name
    if encoding & 1:
        field = BY_ENCODING.get(encoding - 1)
        if field is not None and field.has_high:
            return field.name + "_HIGH"
    return f"{encoding:#06x}"
