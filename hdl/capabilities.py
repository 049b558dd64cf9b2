"""VMX capability configuration: the single source of truth for what the modelled processor supports.

The configuration is fixed at elaboration time. It produces the values of the VMX capability MSRs
(IA32_VMX_BASIC 0x480 … IA32_VMX_EXIT_CTLS2 0x493, Intel SDM vol. 3D appendix A) and answers every
question the hardware asks about the processor: which VMCS fields exist, which control bits are
reserved, which CR0/CR4 bits are fixed in VMX operation, which INVEPT/INVVPID types exist.

Everything is *derived from the final MSR values*: a feature list builds default MSR values, then
``msr_overrides`` replace whole MSRs, and only then are field existence and the other answers
computed. So overriding, say, IA32_VMX_PROCBASED_CTLS2 to clear the "enable VPID" allowed-1 bit
removes the VPID field from the hardware, not only from what RDMSR returns.
"""

from dataclasses import dataclass


__all__ = [
    "MSR", "FEATURES", "DEFAULT_FEATURES", "DEFAULT_REVISION_ID", "VMXCapabilities",
    "DEFAULT1_PINBASED", "DEFAULT1_PROCBASED", "DEFAULT1_EXIT", "DEFAULT1_ENTRY",
]


class MSR:
    """Indices of the MSRs the model implements (SDM vol. 3D A.1–A.11, vol. 4 table 2-2)."""
    IA32_FEATURE_CONTROL         = 0x03A
    IA32_VMX_BASIC               = 0x480
    IA32_VMX_PINBASED_CTLS       = 0x481
    IA32_VMX_PROCBASED_CTLS      = 0x482
    IA32_VMX_EXIT_CTLS           = 0x483
    IA32_VMX_ENTRY_CTLS          = 0x484
    IA32_VMX_MISC                = 0x485
    IA32_VMX_CR0_FIXED0          = 0x486
    IA32_VMX_CR0_FIXED1          = 0x487
    IA32_VMX_CR4_FIXED0          = 0x488
    IA32_VMX_CR4_FIXED1          = 0x489
    IA32_VMX_VMCS_ENUM           = 0x48A
    IA32_VMX_PROCBASED_CTLS2     = 0x48B
    IA32_VMX_EPT_VPID_CAP        = 0x48C
    IA32_VMX_TRUE_PINBASED_CTLS  = 0x48D
    IA32_VMX_TRUE_PROCBASED_CTLS = 0x48E
    IA32_VMX_TRUE_EXIT_CTLS      = 0x48F
    IA32_VMX_TRUE_ENTRY_CTLS     = 0x490
    IA32_VMX_VMFUNC              = 0x491
    IA32_VMX_PROCBASED_CTLS3     = 0x492
    IA32_VMX_EXIT_CTLS2          = 0x493

    @classmethod
    def name(cls, index):
        for key, value in vars(cls).items():
            if key.startswith("IA32_") and value == index:
                return key
        return None


# Reserved-and-default-to-1 control bits (SDM vol. 3D A.2); the non-TRUE MSRs report them as fixed 1.
DEFAULT1_PINBASED  = 0x0000_0016
DEFAULT1_PROCBASED = 0x0401_E172
DEFAULT1_EXIT      = 0x0003_6DFF
DEFAULT1_ENTRY     = 0x0000_11FF

# Default-1 bits that the TRUE MSRs allow to be 0 on the modelled core (SDM vol. 3D A.3.1/A.4/A.5):
# CR3-load/-store exiting, "save debug controls", "load debug controls".
_TRUE_CLEARABLE = {
    MSR.IA32_VMX_TRUE_PINBASED_CTLS:  0,
    MSR.IA32_VMX_TRUE_PROCBASED_CTLS: (1 << 15) | (1 << 16),
    MSR.IA32_VMX_TRUE_EXIT_CTLS:      1 << 2,
    MSR.IA32_VMX_TRUE_ENTRY_CTLS:     1 << 2,
}

_SECONDARY_GATE = (MSR.IA32_VMX_PROCBASED_CTLS, 31)  # "activate secondary controls"
_TERTIARY_GATE  = (MSR.IA32_VMX_PROCBASED_CTLS, 17)  # "activate tertiary controls"
_EXIT2_GATE     = (MSR.IA32_VMX_EXIT_CTLS, 31)       # "activate secondary VM-exit controls"
_VMFUNC_GATE    = (MSR.IA32_VMX_PROCBASED_CTLS2, 13) # "enable VM functions"


@dataclass(frozen=True)
class Feature:
    """A processor feature, present when the allowed-1 bit ``bit`` of ``msr`` is set.

    For the 32-bit control MSRs the allowed-1 settings are the high half, so ``bit`` is the control bit
    and the MSR bit tested is ``32 + bit``; for the 64-bit allowed-1-only MSRs (0x491–0x493) and the
    non-control MSRs ``bit`` is the MSR bit itself. ``gate`` is another control the feature's control
    word depends on (a secondary control needs "activate secondary controls").
    """
    msr: int
    bit: int
    description: str

    @property
    def msr_bit(self):
        if MSR.IA32_VMX_PINBASED_CTLS <= self.msr <= MSR.IA32_VMX_ENTRY_CTLS or \
                self.msr == MSR.IA32_VMX_PROCBASED_CTLS2:
            return 32 + self.bit
        return self.bit

    @property
    def gate(self):
        return {
            MSR.IA32_VMX_PROCBASED_CTLS2: _SECONDARY_GATE,
            MSR.IA32_VMX_PROCBASED_CTLS3: _TERTIARY_GATE,
            MSR.IA32_VMX_EXIT_CTLS2:      _EXIT2_GATE,
            MSR.IA32_VMX_VMFUNC:          _VMFUNC_GATE,
        }.get(self.msr)


_P, _C1, _C2, _C3 = (MSR.IA32_VMX_PINBASED_CTLS, MSR.IA32_VMX_PROCBASED_CTLS,
                     MSR.IA32_VMX_PROCBASED_CTLS2, MSR.IA32_VMX_PROCBASED_CTLS3)
_EX, _EN = MSR.IA32_VMX_EXIT_CTLS, MSR.IA32_VMX_ENTRY_CTLS

#: Every feature the configuration knows, by name. Names are used by the VMCS field catalogue
#: (``VMCSField.requires``) and by ``[config] features`` in scenarios.
FEATURES = {
    # pin-based controls (SDM 24.6.1)
    "external_interrupt_exiting": Feature(_P, 0, "external-interrupt exiting"),
    "nmi_exiting":                Feature(_P, 3, "NMI exiting"),
    "virtual_nmis":               Feature(_P, 5, "virtual NMIs"),
    "preemption_timer":           Feature(_P, 6, "activate VMX-preemption timer"),
    "posted_interrupts":          Feature(_P, 7, "process posted interrupts"),
    # primary processor-based controls (SDM 24.6.2)
    "tsc_offsetting":             Feature(_C1, 3, "use TSC offsetting"),
    "tertiary_controls":          Feature(_C1, 17, "activate tertiary controls"),
    "tpr_shadow":                 Feature(_C1, 21, "use TPR shadow"),
    "io_bitmaps":                 Feature(_C1, 25, "use I/O bitmaps"),
    "monitor_trap_flag":          Feature(_C1, 27, "monitor trap flag"),
    "msr_bitmaps":                Feature(_C1, 28, "use MSR bitmaps"),
    "secondary_controls":         Feature(_C1, 31, "activate secondary controls"),
    # secondary processor-based controls (SDM 24.6.2)
    "apic_access":                Feature(_C2, 0, "virtualize APIC accesses"),
    "ept":                        Feature(_C2, 1, "enable EPT"),
    "descriptor_table_exiting":   Feature(_C2, 2, "descriptor-table exiting"),
    "rdtscp":                     Feature(_C2, 3, "enable RDTSCP"),
    "x2apic_mode":                Feature(_C2, 4, "virtualize x2APIC mode"),
    "vpid":                       Feature(_C2, 5, "enable VPID"),
    "wbinvd_exiting":             Feature(_C2, 6, "WBINVD exiting"),
    "unrestricted_guest":         Feature(_C2, 7, "unrestricted guest"),
    "apic_register_virtualization": Feature(_C2, 8, "APIC-register virtualization"),
    "virtual_interrupt_delivery": Feature(_C2, 9, "virtual-interrupt delivery"),
    "ple":                        Feature(_C2, 10, "PAUSE-loop exiting"),
    "rdrand_exiting":             Feature(_C2, 11, "RDRAND exiting"),
    "invpcid":                    Feature(_C2, 12, "enable INVPCID"),
    "vmfunc":                     Feature(_C2, 13, "enable VM functions"),
    "vmcs_shadowing":             Feature(_C2, 14, "VMCS shadowing"),
    "encls_exiting":              Feature(_C2, 15, "enable ENCLS exiting"),
    "rdseed_exiting":             Feature(_C2, 16, "RDSEED exiting"),
    "pml":                        Feature(_C2, 17, "enable PML"),
    "ept_violation_ve":           Feature(_C2, 18, "EPT-violation #VE"),
    "xsaves":                     Feature(_C2, 20, "enable XSAVES/XRSTORS"),
    "pasid_translation":          Feature(_C2, 21, "PASID translation (bit position unconfirmed)"),
    "mode_based_execute":         Feature(_C2, 22, "mode-based execute control for EPT"),
    "spp":                        Feature(_C2, 23, "sub-page write permissions for EPT"),
    "tsc_scaling":                Feature(_C2, 25, "use TSC scaling"),
    "pconfig":                    Feature(_C2, 27, "enable PCONFIG"),
    "enclv_exiting":              Feature(_C2, 28, "enable ENCLV exiting"),
    "notify_vm_exiting":          Feature(_C2, 31, "notify VM exiting"),
    # tertiary processor-based controls (SDM 24.6.2)
    "hlat":                       Feature(_C3, 1, "enable HLAT"),
    "ipi_virtualization":         Feature(_C3, 4, "IPI virtualization"),
    "msrlist":                    Feature(_C3, 6, "enable MSRLIST instructions"),
    "spec_ctrl_virtualization":   Feature(_C3, 7, "virtualize IA32_SPEC_CTRL"),
    "apic_timer_virtualization":  Feature(_C3, 8, "APIC-timer virtualization"),
    # VM-exit controls (SDM 24.7.1)
    "host_address_space_size":    Feature(_EX, 9, "host address-space size"),
    "ack_interrupt_on_exit":      Feature(_EX, 15, "acknowledge interrupt on exit"),
    "save_preemption_timer":      Feature(_EX, 22, "save VMX-preemption timer value"),
    "secondary_exit_controls":    Feature(_EX, 31, "activate secondary VM-exit controls"),
    # VM-entry controls (SDM 24.8.1)
    "ia32e_mode_guest":           Feature(_EN, 9, "IA-32e mode guest"),
    "load_perf_global_ctrl":      Feature(_EN, 13, "load IA32_PERF_GLOBAL_CTRL"),
    "load_pat":                   Feature(_EN, 14, "load IA32_PAT"),
    "load_efer":                  Feature(_EN, 15, "load IA32_EFER"),
    "mpx":                        Feature(_EN, 16, "load IA32_BNDCFGS"),
    "intel_pt":                   Feature(_EN, 18, "load IA32_RTIT_CTL"),
    "uintr":                      Feature(_EN, 19, "load UINV"),
    "cet":                        Feature(_EN, 20, "load CET state"),
    "arch_lbr":                   Feature(_EN, 21, "load guest IA32_LBR_CTL"),
    "pks":                        Feature(_EN, 22, "load PKRS"),
    "fred":                       Feature(_EN, 23, "load FRED state"),
    "load_spec_ctrl":             Feature(_EN, 24, "load IA32_SPEC_CTRL"),
    # others
    "dual_monitor":               Feature(MSR.IA32_VMX_BASIC, 49, "dual-monitor treatment of SMIs and SMM"),
    "true_controls":              Feature(MSR.IA32_VMX_BASIC, 55, "TRUE capability MSRs 0x48D-0x490"),
    "eptp_switching":             Feature(MSR.IA32_VMX_VMFUNC, 0, "EPTP switching VM function"),
    # Features this model never offers; their fields exist in the catalogue but not in the hardware.
    "seam":                       None,
}

#: A recent Intel core (Skylake/Ice Lake class) as seen by a VMM: TRUE controls, EPT with A/D bits,
#: VPID, unrestricted guest, the preemption timer, VMCS shadowing, PML, posted interrupts.
DEFAULT_FEATURES = frozenset({
    "external_interrupt_exiting", "nmi_exiting", "virtual_nmis", "preemption_timer", "posted_interrupts",
    "tsc_offsetting", "tpr_shadow", "io_bitmaps", "monitor_trap_flag", "msr_bitmaps", "secondary_controls",
    "apic_access", "ept", "descriptor_table_exiting", "rdtscp", "x2apic_mode", "vpid", "wbinvd_exiting",
    "unrestricted_guest", "apic_register_virtualization", "virtual_interrupt_delivery", "ple",
    "rdrand_exiting", "invpcid", "vmfunc", "vmcs_shadowing", "rdseed_exiting", "pml", "ept_violation_ve",
    "xsaves", "mode_based_execute", "tsc_scaling",
    "host_address_space_size", "ack_interrupt_on_exit", "save_preemption_timer",
    "ia32e_mode_guest", "load_perf_global_ctrl", "load_pat", "load_efer",
    "true_controls", "eptp_switching",
})

DEFAULT_REVISION_ID = 0x4

# Primary processor-based controls every core since VMX's introduction offers (SDM 24.6.2):
# interrupt-window, HLT, INVLPG, MWAIT, RDPMC, RDTSC, CR3-load/-store, CR8-load/-store, NMI-window,
# MOV-DR, unconditional I/O, MONITOR and PAUSE exiting.
_BASE_PROCBASED = sum(1 << b for b in (2, 7, 9, 10, 11, 12, 15, 16, 19, 20, 22, 23, 24, 29, 30))
# Exit controls always offered: save debug controls (2), load IA32_PERF_GLOBAL_CTRL (12),
# save/load PAT (18/19), save/load EFER (20/21) follow the entry-side features below.
_EXIT_FOLLOW_ENTRY = {"load_perf_global_ctrl": (12,), "load_pat": (18, 19), "load_efer": (20, 21),
                      "mpx": (23,), "intel_pt": (25,), "arch_lbr": (26,), "uintr": (27,),
                      "cet": (28,), "pks": (29,)}

_EPT_VPID_DEFAULT = sum(1 << b for b in (
    0,        # execute-only translations
    6,        # 4-level walk
    8, 14,    # UC and WB paging-structure memory types
    16, 17,   # 2 MiB and 1 GiB pages
    20, 21, 22,  # INVEPT, accessed/dirty flags, advanced EPT-violation information
    25, 26,   # single-context and all-context INVEPT
))
_VPID_CAP_DEFAULT = sum(1 << b for b in (32, 40, 41, 42, 43))  # INVVPID and its four types

# CR4 bits the modelled core implements: VME … OSXMMEXCPT (10:0), VMXE, SMXE, FSGSBASE, PCIDE,
# OSXSAVE, SMEP, SMAP.
_CR4_FIXED1_DEFAULT = 0x0037_27FF


class VMXCapabilities:
    """The capability configuration of one modelled processor (SDM vol. 3D appendix A).

    Parameters
    ----------
    revision_id : int
        VMCS revision identifier, IA32_VMX_BASIC[30:0].
    maxphyaddr : int
        Physical-address width (CPUID.80000008H:EAX[7:0]); 32 … 52.
    features : iterable of str
        Names from :data:`FEATURES` the processor offers.
    msr_overrides : dict of int to int
        Whole-MSR replacement values applied after the feature list; every answer the object gives
        is derived from the result.
    cr3_target_count : int
        Number of CR3-target values, IA32_VMX_MISC[24:16].

    Raises
    ------
    ValueError
        For an unknown feature name, an MSR index outside 0x480–0x493, an out-of-range value or a
        MAXPHYADDR outside 32–52.
    """

    def __init__(self, *, revision_id=DEFAULT_REVISION_ID, maxphyaddr=39, features=DEFAULT_FEATURES,
                 msr_overrides=None, cr3_target_count=4):
        if not isinstance(revision_id, int) or not 0 < revision_id < (1 << 31):
            raise ValueError(f"revision_id must be an integer in 1 … 0x7fffffff, not {revision_id!r}")
        if not isinstance(maxphyaddr, int) or not 32 <= maxphyaddr <= 52:
            raise ValueError(f"maxphyaddr must be an integer in 32 … 52, not {maxphyaddr!r}")
        if not isinstance(cr3_target_count, int) or not 0 <= cr3_target_count <= 256:
            raise ValueError(f"cr3_target_count must be an integer in 0 … 256, not {cr3_target_count!r}")
        features = frozenset(features)
        for name in features:
            if name not in FEATURES:
                raise ValueError(f"unknown feature {name!r}; known: {', '.join(sorted(FEATURES))}")
            if FEATURES[name] is None:
                raise ValueError(f"feature {name!r} is not offered by this model")
        self.maxphyaddr = maxphyaddr
        self.msrs = self._default_msrs(revision_id, features, cr3_target_count)
        for index, value in (msr_overrides or {}).items():
            if index not in self.msrs and not MSR.IA32_VMX_BASIC <= index <= MSR.IA32_VMX_EXIT_CTLS2:
                raise ValueError(f"MSR {index:#x} is not a VMX capability MSR (0x480 … 0x493)")
            if not isinstance(value, int) or not 0 <= value < (1 << 64):
                raise ValueError(f"MSR {index:#x} override must be a 64-bit unsigned integer, not {value!r}")
            self.msrs[index] = value
        if self.revision_id == 0:
            raise ValueError("IA32_VMX_BASIC[30:0] (the revision identifier) must not be 0")
        # The MSRs that exist depend on the (overridden) values themselves (SDM vol. 3D A.1).
        if not self.basic_bit(55):
            for index in _TRUE_CLEARABLE:
                self.msrs.pop(index, None)
        self._drop_unless(MSR.IA32_VMX_PROCBASED_CTLS2, self._allowed1(*_SECONDARY_GATE))
        self._drop_unless(MSR.IA32_VMX_EPT_VPID_CAP,
                          self.supports("ept") or self.supports("vpid"))
        self._drop_unless(MSR.IA32_VMX_VMFUNC, self.supports("vmfunc"))
        self._drop_unless(MSR.IA32_VMX_PROCBASED_CTLS3, self._allowed1(*_TERTIARY_GATE))
        self._drop_unless(MSR.IA32_VMX_EXIT_CTLS2, self._allowed1(*_EXIT2_GATE))
        if MSR.IA32_VMX_VMCS_ENUM not in (msr_overrides or {}):
            self.msrs[MSR.IA32_VMX_VMCS_ENUM] = self._vmcs_enum()

    # -- construction ---------------------------------------------------------------------------

    @staticmethod
    def _default_msrs(revision_id, features, cr3_target_count):
        def ctl_allowed1(msr):
            return sum(1 << FEATURES[f].bit for f in features if FEATURES[f].msr == msr)

        pin = DEFAULT1_PINBASED | ctl_allowed1(_P)
        proc = DEFAULT1_PROCBASED | _BASE_PROCBASED | ctl_allowed1(_C1)
        exit_ = DEFAULT1_EXIT | ctl_allowed1(_EX)
        entry = DEFAULT1_ENTRY | ctl_allowed1(_EN)
        for name, bits in _EXIT_FOLLOW_ENTRY.items():
            if name in features:
                exit_ |= sum(1 << b for b in bits)
        # "activate secondary/tertiary controls" are features of their own: switching one off takes
        # every control of its word away (the word's capability MSR then does not exist).
        secondary = ctl_allowed1(_C2)
        tertiary = ctl_allowed1(_C3)

        basic = revision_id | (0x1000 << 32) | (6 << 50) | (1 << 54)
        if "dual_monitor" in features:
            basic |= 1 << 49
        if "true_controls" in features:
            basic |= 1 << 55
        misc = (5                          # preemption timer: TSC >> 5
                | (1 << 5)                 # store EFER.LMA into "IA-32e mode guest" on exit
                | (1 << 6) | (1 << 7) | (1 << 8)  # HLT, shutdown, wait-for-SIPI activity states
                | (cr3_target_count << 16)
                | (1 << 29)                # VMWRITE may write the VM-exit information fields
                | (1 << 30))               # zero-length software-interrupt injection
        ept_vpid = 0
        if "ept" in features:
            ept_vpid |= _EPT_VPID_DEFAULT
        if "vpid" in features:
            ept_vpid |= _VPID_CAP_DEFAULT

        def ctls(allowed0, allowed1):
            return (allowed1 << 32) | allowed0

        msrs = {
            MSR.IA32_VMX_BASIC:           basic,
            MSR.IA32_VMX_PINBASED_CTLS:   ctls(DEFAULT1_PINBASED, pin),
            MSR.IA32_VMX_PROCBASED_CTLS:  ctls(DEFAULT1_PROCBASED, proc),
            MSR.IA32_VMX_EXIT_CTLS:       ctls(DEFAULT1_EXIT, exit_),
            MSR.IA32_VMX_ENTRY_CTLS:      ctls(DEFAULT1_ENTRY, entry),
            MSR.IA32_VMX_MISC:            misc,
            MSR.IA32_VMX_CR0_FIXED0:      0x8000_0021,          # PE, NE, PG
            MSR.IA32_VMX_CR0_FIXED1:      0xFFFF_FFFF,
            MSR.IA32_VMX_CR4_FIXED0:      0x0000_2000,          # VMXE
            MSR.IA32_VMX_CR4_FIXED1:      _CR4_FIXED1_DEFAULT,
            MSR.IA32_VMX_VMCS_ENUM:       0,                    # computed after overrides
            MSR.IA32_VMX_PROCBASED_CTLS2: ctls(0, secondary),
            MSR.IA32_VMX_EPT_VPID_CAP:    ept_vpid,
            MSR.IA32_VMX_TRUE_PINBASED_CTLS:  ctls(DEFAULT1_PINBASED & ~_TRUE_CLEARABLE[0x48D], pin),
            MSR.IA32_VMX_TRUE_PROCBASED_CTLS: ctls(DEFAULT1_PROCBASED & ~_TRUE_CLEARABLE[0x48E], proc),
            MSR.IA32_VMX_TRUE_EXIT_CTLS:      ctls(DEFAULT1_EXIT & ~_TRUE_CLEARABLE[0x48F], exit_),
            MSR.IA32_VMX_TRUE_ENTRY_CTLS:     ctls(DEFAULT1_ENTRY & ~_TRUE_CLEARABLE[0x490], entry),
            MSR.IA32_VMX_VMFUNC:          ctl_allowed1(MSR.IA32_VMX_VMFUNC),
            MSR.IA32_VMX_PROCBASED_CTLS3: tertiary,
            MSR.IA32_VMX_EXIT_CTLS2:      ctl_allowed1(MSR.IA32_VMX_EXIT_CTLS2),
        }
        return msrs

    def _drop_unless(self, index, present):
        if not present:
            self.msrs.pop(index, None)

    def _allowed1(self, msr, bit):
        return bool((self.msrs.get(msr, 0) >> (32 + bit)) & 1)

    def _vmcs_enum(self):
        from .vmcs_fields import VMCS_FIELDS
        highest = max(f.index for f in VMCS_FIELDS if self.field_supported(f))
        return highest << 1

    # -- queries --------------------------------------------------------------------------------

    def basic_bit(self, bit):
        return bool((self.msrs[MSR.IA32_VMX_BASIC] >> bit) & 1)

    @property
    def revision_id(self):
        return self.msrs[MSR.IA32_VMX_BASIC] & 0x7FFF_FFFF

    @property
    def misc(self):
        return self.msrs[MSR.IA32_VMX_MISC]

    @property
    def cr3_target_count(self):
        return (self.misc >> 16) & 0x1FF

    @property
    def vmwrite_exit_info(self):
        """IA32_VMX_MISC[29]: VMWRITE may write the VM-exit information fields."""
        return bool((self.misc >> 29) & 1)

    @property
    def ept_vpid_cap(self):
        return self.msrs.get(MSR.IA32_VMX_EPT_VPID_CAP, 0)

    @property
    def cr0_fixed(self):
        """(must-be-1 mask, may-be-1 mask) for CR0 in VMX operation (SDM vol. 3D A.7)."""
        return self.msrs[MSR.IA32_VMX_CR0_FIXED0], self.msrs[MSR.IA32_VMX_CR0_FIXED1]

    @property
    def cr4_fixed(self):
        """(must-be-1 mask, may-be-1 mask) for CR4 in VMX operation (SDM vol. 3D A.8)."""
        return self.msrs[MSR.IA32_VMX_CR4_FIXED0], self.msrs[MSR.IA32_VMX_CR4_FIXED1]

    def control_masks(self, msr):
        """(must-be-1, may-be-1) masks of a control word; the TRUE MSR is used when BASIC[55]=1.

        ``msr`` is the non-TRUE index (0x481–0x484) or 0x48B, 0x491, 0x492, 0x493.
        """
        true_index = {0x481: 0x48D, 0x482: 0x48E, 0x483: 0x48F, 0x484: 0x490}.get(msr)
        if true_index is not None and self.basic_bit(55):
            msr = true_index
        value = self.msrs.get(msr, 0)
        if msr in (MSR.IA32_VMX_VMFUNC, MSR.IA32_VMX_PROCBASED_CTLS3, MSR.IA32_VMX_EXIT_CTLS2):
            return 0, value
        return value & 0xFFFF_FFFF, value >> 32

    def supports(self, feature):
        """Whether the processor supports the 1-setting of the control behind ``feature``.

        ``cr3_target_value_N`` is true when N < the CR3-target count (IA32_VMX_MISC[24:16]).
        """
        if feature.startswith("cr3_target_value_"):
            return int(feature.rsplit("_", 1)[1]) < self.cr3_target_count
        if feature not in FEATURES:
            raise ValueError(f"unknown feature {feature!r}")
        spec = FEATURES[feature]
        if spec is None:
            return False
        if spec.gate == _VMFUNC_GATE:
            if not self.supports("vmfunc"):
                return False
        elif spec.gate is not None and not self._allowed1(*spec.gate):
            return False
        return bool((self.msrs.get(spec.msr, 0) >> spec.msr_bit) & 1)

    def field_supported(self, field):
        """Whether the VMCS field (a :class:`~hwvirt.hdl.vmcs_fields.VMCSField`) exists."""
        return all(self.supports(name) for name in field.requires)

    @property
    def supported_fields(self):
        from .vmcs_fields import VMCS_FIELDS
        return tuple(f for f in VMCS_FIELDS if self.field_supported(f))

    def invept_supported(self):
        """INVEPT exists: "enable EPT" may be 1 and IA32_VMX_EPT_VPID_CAP[20] (SDM vol. 3C §31.3 INVEPT)."""
        return self.supports("ept") and bool((self.ept_vpid_cap >> 20) & 1)

    def invvpid_supported(self):
        """INVVPID exists: "enable VPID" may be 1 and IA32_VMX_EPT_VPID_CAP[32] (SDM vol. 3C §31.3)."""
        return self.supports("vpid") and bool((self.ept_vpid_cap >> 32) & 1)

    def invept_type_supported(self, kind):
        """INVEPT type 1 ↔ EPT_VPID_CAP bit 25, type 2 ↔ bit 26 (SDM vol. 3D A.10)."""
        return kind in (1, 2) and bool((self.ept_vpid_cap >> (24 + kind)) & 1)

    def invvpid_type_supported(self, kind):
        """INVVPID type t ↔ EPT_VPID_CAP bit 40 + t (SDM vol. 3D A.10)."""
        return 0 <= kind <= 3 and bool((self.ept_vpid_cap >> (40 + kind)) & 1)

    def rdmsr(self, index):
        """Value of an implemented VMX capability MSR, or None (RDMSR of it raises #GP(0))."""
        return self.msrs.get(index)

    def __repr__(self):
        return f"VMXCapabilities(revision_id={self.revision_id:#x}, maxphyaddr={self.maxphyaddr})"
