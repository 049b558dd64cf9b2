"""Valid VMCS images for the VM-entry check tests, and one mutation per check that breaks it.

* :data:`PRESETS`: the capability configurations the tests run (name → ``VMXCapabilities``).
* :func:`baseline`: a VMCS that passes every check on a configuration: a 64-bit host and a flat
  64-bit guest, the controls at their must-be-1 settings plus "host address-space size" and
  "IA-32e mode guest", the link pointer all ones. Returns ``(fields, env)``; ``env`` holds the
  checker's non-VMCS inputs (``host_lma``, ``current_vmcs``, ``link_revision``, ``vtpr``,
  ``pdptes``).
* Variants built from it (:func:`variants`): a virtual-8086 guest, a 32-bit PAE guest, a 32-bit
  host, and a "rich" VMCS with every offered feature switched on in a valid way.
* :data:`MUTATIONS`: check ID → ``fn(caps, fields, env)`` that edits a baseline in place so that the
  check fails, and returns the IDs that necessarily fail with it (usually none: the mutation sets
  up whatever else is needed so that only its check fails). It raises :class:`NotApplicable` with
  a reason when the configuration does not offer the VMX feature the check is about (the
  control cannot be set on this processor, or the field does not exist).
* :data:`EXTRA_CASES`: name → ``fn(caps, fields, env)`` returning the exact set of IDs expected to
  fail: boundary values (phys-valid and canonical limits, LA57, allowed injections in HLT, ...).
* :data:`DISALLOWED_CONTROL_CASES`: name → ``(configuration, fn(caps, fields, env))`` returning the
  exact list of IDs expected to fail when the VMCS sets a control the configuration does not allow
  (a feature configured off): only the ``*_RSVD`` check of its control word, because every other
  check must fail both on the controls as written and on the controls in effect (where the control
  reads as 0). The configurations are those of :data:`CONFIGS` (:data:`PRESETS` and a few more).

The checks of "entry to SMM" (VM-entry control 10) and "deactivate dual-monitor treatment" (11) —
CTL_ENTRY_SMM, GUEST_ACT_WFS_SMM, GUEST_INTR_SMI_ENTRY — are part of the architecture, but no
feature of the model offers those controls, so on every preset setting one fails CTL_ENTRY_RSVD
alone and their mutations raise :class:`NotApplicable` (:data:`UNREACHABLE_IN_PRESETS`). They are
reached on ``CONFIGS["smm_controls"]``, whose ``msr_overrides`` allow the two controls (the model is
still never in SMM, so setting either fails CTL_ENTRY_SMM).
"""

import copy

from hwvirt.hdl.capabilities import DEFAULT_FEATURES, FEATURES, MSR, VMXCapabilities
from hwvirt.hdl.entry_check_catalogue import CHECKS, CheckGroup
from hwvirt.hdl.vmcs_fields import BY_NAME

from entry_model import (
    ENTRYC, EXITC, EXITC2, INJ, PIN, PROC, PROC2, PROC3, VMFUNC, effective_controls, written_controls,
)


__all__ = [
    "PRESETS", "CONFIGS", "NotApplicable", "baseline", "variants", "v86_variant", "pae32_variant",
    "host32_variant", "rich_variant", "MUTATIONS", "EXTRA_CASES", "CHECKED_FIELDS",
    "UNREACHABLE_IN_PRESETS", "DISALLOWED_CONTROL_CASES", "apply_contract", "fresh",
]

MASK64 = (1 << 64) - 1
LINK_NONE = MASK64


class NotApplicable(Exception):
    """The mutation cannot be made on this configuration; the message says why."""


# -- configurations ------------------------------------------------------------------------------

_ALL_FEATURES = frozenset(name for name, spec in FEATURES.items() if spec is not None)
_NO_SECONDARY = (DEFAULT_FEATURES
                 - {name for name, spec in FEATURES.items()
                    if spec is not None and spec.msr == MSR.IA32_VMX_PROCBASED_CTLS2}
                 - {"secondary_controls", "eptp_switching", "vmfunc"})
_NO_EPT = DEFAULT_FEATURES - {"ept", "unrestricted_guest", "pml", "mode_based_execute",
                              "ept_violation_ve", "eptp_switching"}


def _quirks():
    """Capability values off the beaten track: BASIC[56], sparse MISC and EPT_VPID_CAP, LA57/CET in CR4."""
    features = DEFAULT_FEATURES | {"cet"}
    base = VMXCapabilities(features=features, maxphyaddr=36, revision_id=0x1234_5678,
                           cr3_target_count=0)
    misc = base.msrs[MSR.IA32_VMX_MISC]
    misc &= ~((1 << 30) | (1 << 7))          # no zero-length software injection, no shutdown state
    misc |= 1 << 25                          # MSR lists: 1024 entries recommended
    ept_cap = base.msrs[MSR.IA32_VMX_EPT_VPID_CAP]
    ept_cap &= ~((1 << 6) | (1 << 14) | (1 << 21))   # no 4-level walk, no WB, no A/D flags
    ept_cap |= (1 << 7) | (1 << 23)                  # 5-level walk, supervisor shadow stacks
    overrides = {
        MSR.IA32_VMX_BASIC: base.msrs[MSR.IA32_VMX_BASIC] | (1 << 56),
        MSR.IA32_VMX_MISC: misc,
        MSR.IA32_VMX_EPT_VPID_CAP: ept_cap,
        MSR.IA32_VMX_CR4_FIXED1: base.msrs[MSR.IA32_VMX_CR4_FIXED1] | (1 << 12) | (1 << 23),
    }
    return VMXCapabilities(features=features, maxphyaddr=36, revision_id=0x1234_5678,
                           cr3_target_count=0, msr_overrides=overrides)


#: The configurations under test. The first five are the ones the brief asks for; ``all_features``
#: (every feature the model knows: tertiary controls, secondary exit controls, CET, PKS, MPX, SPP)
#: and ``quirks`` (unusual capability MSR values) add the checks the others cannot reach.
PRESETS = {
    "default": VMXCapabilities(),
    "no_true_controls": VMXCapabilities(features=DEFAULT_FEATURES - {"true_controls"}),
    "no_secondary": VMXCapabilities(features=_NO_SECONDARY),
    "no_ept": VMXCapabilities(features=_NO_EPT),
    "maxphy46": VMXCapabilities(maxphyaddr=46),
    "all_features": VMXCapabilities(features=_ALL_FEATURES),
    "quirks": _quirks(),
}


def _smm_controls():
    """The default processor, with dual-monitor treatment (IA32_VMX_BASIC[49]) and IA32_VMX_(TRUE_)
    ENTRY_CTLS allowing 'entry to SMM' and 'deactivate dual-monitor treatment' (bits 10, 11), as cores
    with SMM dual-monitor support report them. No feature name offers those controls."""
    base = VMXCapabilities(features=DEFAULT_FEATURES | {"dual_monitor"})
    smm = ((1 << 10) | (1 << 11)) << 32
    return VMXCapabilities(features=DEFAULT_FEATURES | {"dual_monitor"}, msr_overrides={
        MSR.IA32_VMX_ENTRY_CTLS: base.msrs[MSR.IA32_VMX_ENTRY_CTLS] | smm,
        MSR.IA32_VMX_TRUE_ENTRY_CTLS: base.msrs[MSR.IA32_VMX_TRUE_ENTRY_CTLS] | smm,
    })


#: Configurations for targeted tests, besides :data:`PRESETS` (which they include): features
#: configured off, and the SMM controls allowed.
CONFIGS = dict(PRESETS, **{
    "no_vpid": VMXCapabilities(features=DEFAULT_FEATURES - {"vpid"}),
    "no_preemption_timer": VMXCapabilities(
        features=DEFAULT_FEATURES - {"preemption_timer", "save_preemption_timer"}),
    "timer_save_only": VMXCapabilities(features=DEFAULT_FEATURES - {"preemption_timer"}),
    "no_64bit": VMXCapabilities(
        features=DEFAULT_FEATURES - {"host_address_space_size", "ia32e_mode_guest"}),
    "smm_controls": _smm_controls(),
})

#: Every VMCS field a non-MSR-load check reads (the checker's field inputs).
CHECKED_FIELDS = tuple(sorted({name for c in CHECKS if c.group != CheckGroup.MSR_LOAD
                               for name in c.fields}, key=lambda n: BY_NAME[n].encoding))


# -- helpers -------------------------------------------------------------------------------------

def need(caps, *features):
    for name in features:
        if not caps.supports(name):
            raise NotApplicable(f"the configuration does not offer {name!r}")


def need_field(caps, name):
    if not caps.field_supported(BY_NAME[name]):
        raise NotApplicable(f"the configuration has no field {name}")


_CONTROL_FIELD = {
    MSR.IA32_VMX_PINBASED_CTLS: PIN, MSR.IA32_VMX_PROCBASED_CTLS: PROC,
    MSR.IA32_VMX_PROCBASED_CTLS2: PROC2, MSR.IA32_VMX_PROCBASED_CTLS3: PROC3,
    MSR.IA32_VMX_EXIT_CTLS: EXITC, MSR.IA32_VMX_EXIT_CTLS2: EXITC2,
    MSR.IA32_VMX_ENTRY_CTLS: ENTRYC, MSR.IA32_VMX_VMFUNC: VMFUNC,
}


def set_control(caps, f, feature):
    """Set the control bit behind ``feature`` and the gate it needs; nothing else."""
    need(caps, feature)
    spec = FEATURES[feature]
    if spec.msr == MSR.IA32_VMX_PROCBASED_CTLS2:
        f[PROC] |= 1 << 31
    elif spec.msr == MSR.IA32_VMX_PROCBASED_CTLS3:
        f[PROC] |= 1 << 17
    elif spec.msr == MSR.IA32_VMX_EXIT_CTLS2:
        f[EXITC] |= 1 << 31
    elif spec.msr == MSR.IA32_VMX_VMFUNC:
        set_control(caps, f, "vmfunc")
    f.setdefault(_CONTROL_FIELD[spec.msr], 0)
    f[_CONTROL_FIELD[spec.msr]] |= 1 << spec.bit


def clear_bits(f, name, *bits):
    for b in bits:
        f[name] &= ~(1 << b)


def set_bits(f, name, *bits):
    for b in bits:
        f[name] |= 1 << b


def valid_eptp(caps, address=0x7000, ad=False):
    cap = caps.ept_vpid_cap
    if (cap >> 14) & 1:
        memtype = 6
    elif (cap >> 8) & 1:
        memtype = 0
    else:
        raise NotApplicable("EPT_VPID_CAP allows no paging-structure memory type")
    if (cap >> 6) & 1:
        walk = 3
    elif (cap >> 7) & 1:
        walk = 4
    else:
        raise NotApplicable("EPT_VPID_CAP allows no page-walk length")
    return address | memtype | (walk << 3) | ((1 << 6) if ad and (cap >> 21) & 1 else 0)


# Addresses of the structures a VMCS points at (all 4K pages well below 2**32).
VAPIC, APIC_ACCESS, EPT_ROOT, PI_DESC, PML_PAGE = 0x6000, 0xFEE0_0000, 0x7000, 0x8040, 0x9000
VMREAD_BMP, VMWRITE_BMP, VE_INFO, EPTP_LIST = 0xA000, 0xB000, 0xC000, 0xD000
IO_A, IO_B, MSR_BMP, MSR_AREA, SPPT, LINK_VMCS = 0xE000, 0xF000, 0x10000, 0x11000, 0x13000, 0x14000


def enable(caps, f, env, feature):
    """Switch ``feature`` on together with everything it needs to pass the checks."""
    deps = {
        "virtual_nmis": ("nmi_exiting",),
        "posted_interrupts": ("virtual_interrupt_delivery", "ack_interrupt_on_exit"),
        "virtual_interrupt_delivery": ("tpr_shadow", "external_interrupt_exiting"),
        "x2apic_mode": ("tpr_shadow",),
        "apic_register_virtualization": ("tpr_shadow",),
        "unrestricted_guest": ("ept",),
        "pml": ("ept",),
        "mode_based_execute": ("ept",),
        "spp": ("ept",),
        "eptp_switching": ("ept", "vmfunc"),
        "save_preemption_timer": ("preemption_timer",),
    }
    for dep in deps.get(feature, ()):
        enable(caps, f, env, dep)
    set_control(caps, f, feature)
    setup = {
        "posted_interrupts": {"POSTED_INTR_NV": 0xF2, "POSTED_INTR_DESC_ADDR": PI_DESC},
        "tpr_shadow": {"VIRTUAL_APIC_PAGE_ADDR": VAPIC, "TPR_THRESHOLD": 0},
        "io_bitmaps": {"IO_BITMAP_A": IO_A, "IO_BITMAP_B": IO_B},
        "msr_bitmaps": {"MSR_BITMAP": MSR_BMP},
        "apic_access": {"APIC_ACCESS_ADDR": APIC_ACCESS},
        "ept": {"EPT_POINTER": valid_eptp(caps)} if feature == "ept" else {},
        "vpid": {"VIRTUAL_PROCESSOR_ID": 1},
        "vmcs_shadowing": {"VMREAD_BITMAP": VMREAD_BMP, "VMWRITE_BITMAP": VMWRITE_BMP},
        "pml": {"PML_ADDRESS": PML_PAGE},
        "ept_violation_ve": {"VE_INFORMATION_ADDRESS": VE_INFO},
        "spp": {"SPPT_POINTER": SPPT},
        "eptp_switching": {"EPTP_LIST_ADDRESS": EPTP_LIST},
        "tsc_scaling": {"TSC_MULTIPLIER": 1 << 48},
    }.get(feature, {})
    f.update(setup)


def enable_entry_load(caps, f, what):
    """Switch on a guest-state load control (``"perf"``, ``"pat"``, ``"efer"``, ``"bndcfgs"``,
    ``"cet"``, ``"pkrs"``) with a valid value for the guest."""
    feature, bit, values = {
        "perf": ("load_perf_global_ctrl", 13, {"GUEST_IA32_PERF_GLOBAL_CTRL": 0x7_0000_000F}),
        "pat": ("load_pat", 14, {"GUEST_IA32_PAT": 0x0007_0406_0007_0406}),
        "efer": ("load_efer", 15, {"GUEST_IA32_EFER": 0xD01 if (f[ENTRYC] >> 9) & 1 else 0x801}),
        "bndcfgs": ("mpx", 16, {"GUEST_BNDCFGS": 0xFFFF_8000_0000_1001}),
        "cet": ("cet", 20, {"GUEST_S_CET": 0x4, "GUEST_SSP": 0xFFFF_8000_0000_0FF8,
                            "GUEST_INTR_SSP_TABLE": 0xFFFF_8000_0000_2000}),
        "pkrs": ("pks", 22, {"GUEST_IA32_PKRS": 0x5555_5554}),
    }[what]
    need(caps, feature)
    f[ENTRYC] |= 1 << bit
    f.update(values)


def enable_exit_load(caps, f, what):
    """Switch on a host-state load control with a valid value for the host."""
    host64 = (f[EXITC] >> 9) & 1
    feature, bit, values = {
        "perf": ("load_perf_global_ctrl", 12, {"HOST_IA32_PERF_GLOBAL_CTRL": 0x3_0000_0003}),
        "pat": ("load_pat", 19, {"HOST_IA32_PAT": 0x0007_0406_0007_0406}),
        "efer": ("load_efer", 21, {"HOST_IA32_EFER": 0xD01 if host64 else 0x801}),
        "cet": ("cet", 28, {"HOST_S_CET": 0, "HOST_SSP": 0xFFFF_8000_0000_3FF8,
                            "HOST_INTR_SSP_TABLE": 0xFFFF_8000_0000_4000}),
        "pkrs": ("pks", 29, {"HOST_IA32_PKRS": 0}),
    }[what]
    need(caps, feature)
    f[EXITC] |= 1 << bit
    f.update(values)


def unallowed_bit(caps, msr, candidates):
    """The first bit of ``candidates`` a control word may not set, or NotApplicable."""
    _, may1 = caps.control_masks(msr)
    for b in candidates:
        if not (may1 >> b) & 1:
            return b
    raise NotApplicable(f"every candidate bit of MSR {msr:#x} may be 1")


def apply_contract(caps, fields, env):
    """Make ``env`` consistent with the VMCS: with 'enable EPT' = 1 the PDPTEs in effect are the
    VMCS fields GUEST_PDPTR0-3 (SDM §27.3.1.6), so the ``pdptes`` input carries them. The bit as
    written decides: the reference's evaluation on the controls as written reads the fields whenever
    it is 1, also where the configuration does not allow it."""
    controls = written_controls(caps, fields)
    if (controls[PROC2] >> 1) & 1:
        env["pdptes"] = [fields.get(f"GUEST_PDPTR{i}", 0) & MASK64 for i in range(4)]
    return fields, env


def fresh(caps, variant="flat64"):
    """A copy of a variant's ``(fields, env)``."""
    return variants(caps)[variant]


# -- the baseline --------------------------------------------------------------------------------

FLAT_DATA_AR, FLAT_CODE64_AR, FLAT_CODE32_AR, TSS_BUSY_AR = 0xC093, 0xA09B, 0xC09B, 0x8B
CR0_PROT_PAGING = 0x8005_0033      # PG, WP, NE, ET, MP, PE
CR4_PAE_VMXE = 0x2020


def baseline(caps):
    """A valid 64-bit host + flat 64-bit guest VMCS for ``caps``: ``(fields, env)``."""
    from hwvirt.hdl.capabilities import MSR as M
    f = {name: 0 for name in CHECKED_FIELDS if caps.field_supported(BY_NAME[name])}
    f[PIN] = caps.control_masks(M.IA32_VMX_PINBASED_CTLS)[0]
    f[PROC] = caps.control_masks(M.IA32_VMX_PROCBASED_CTLS)[0]
    f[EXITC] = caps.control_masks(M.IA32_VMX_EXIT_CTLS)[0] | (1 << 9)
    f[ENTRYC] = caps.control_masks(M.IA32_VMX_ENTRY_CTLS)[0] | (1 << 9)
    f.update({
        # host: 64-bit, flat
        "HOST_CR0": CR0_PROT_PAGING, "HOST_CR3": 0x1000, "HOST_CR4": CR4_PAE_VMXE,
        "HOST_CS_SELECTOR": 0x08, "HOST_SS_SELECTOR": 0x10, "HOST_DS_SELECTOR": 0x10,
        "HOST_ES_SELECTOR": 0x10, "HOST_FS_SELECTOR": 0x00, "HOST_GS_SELECTOR": 0x00,
        "HOST_TR_SELECTOR": 0x40,
        "HOST_FS_BASE": 0, "HOST_GS_BASE": 0xFFFF_8880_0000_0000,
        "HOST_TR_BASE": 0xFFFF_FE00_0000_3000, "HOST_GDTR_BASE": 0xFFFF_FE00_0000_1000,
        "HOST_IDTR_BASE": 0xFFFF_FE00_0000_0000,
        "HOST_IA32_SYSENTER_ESP": 0xFFFF_FE00_0000_5000, "HOST_IA32_SYSENTER_EIP": 0,
        "HOST_RIP": 0xFFFF_FFFF_8100_0000,
        # guest: flat 64-bit, CPL 0
        "GUEST_CR0": CR0_PROT_PAGING, "GUEST_CR3": 0x2000, "GUEST_CR4": CR4_PAE_VMXE,
        "GUEST_DR7": 0x400, "GUEST_IA32_DEBUGCTL": 0,
        "GUEST_RIP": 0xFFFF_FFFF_8000_0000, "GUEST_RFLAGS": 0x2,
        "GUEST_CS_SELECTOR": 0x08, "GUEST_CS_BASE": 0, "GUEST_CS_LIMIT": 0xFFFF_FFFF,
        "GUEST_CS_AR_BYTES": FLAT_CODE64_AR,
        "GUEST_TR_SELECTOR": 0x40, "GUEST_TR_BASE": 0xFFFF_FE00_0000_3000, "GUEST_TR_LIMIT": 0x67,
        "GUEST_TR_AR_BYTES": TSS_BUSY_AR,
        "GUEST_LDTR_SELECTOR": 0, "GUEST_LDTR_BASE": 0, "GUEST_LDTR_LIMIT": 0,
        "GUEST_LDTR_AR_BYTES": 0x1_0000,
        "GUEST_GDTR_BASE": 0xFFFF_FE00_0000_1000, "GUEST_GDTR_LIMIT": 0x7F,
        "GUEST_IDTR_BASE": 0xFFFF_FE00_0000_0000, "GUEST_IDTR_LIMIT": 0xFFF,
        "GUEST_SYSENTER_ESP": 0, "GUEST_SYSENTER_EIP": 0,
        "GUEST_ACTIVITY_STATE": 0, "GUEST_INTERRUPTIBILITY_INFO": 0,
        "GUEST_PENDING_DBG_EXCEPTIONS": 0, "VMCS_LINK_POINTER": LINK_NONE,
    })
    for seg in ("SS", "DS", "ES", "FS", "GS"):
        f.update({f"GUEST_{seg}_SELECTOR": 0x10, f"GUEST_{seg}_BASE": 0,
                  f"GUEST_{seg}_LIMIT": 0xFFFF_FFFF, f"GUEST_{seg}_AR_BYTES": FLAT_DATA_AR})
    f["GUEST_GS_BASE"] = 0xFFFF_8880_0000_0000
    # Values checked only under a load control (valid in case a mutation turns the control on).
    for name, value in {"GUEST_IA32_PAT": 0x0007_0406_0007_0406, "GUEST_IA32_EFER": 0xD01,
                        "HOST_IA32_PAT": 0x0007_0406_0007_0406, "HOST_IA32_EFER": 0xD01}.items():
        if name in f:
            f[name] = value
    env = {"host_lma": 1, "current_vmcs": 0x5000, "link_revision": 0, "vtpr": 0, "pdptes": [0] * 4}
    return f, env


def pae32_variant(caps, f, env):
    """A 32-bit protected-mode guest with PAE paging (PDPTEs from guest memory, or the VMCS with EPT)."""
    f[ENTRYC] &= ~(1 << 9)
    f["GUEST_CS_AR_BYTES"] = FLAT_CODE32_AR
    f["GUEST_RIP"] = 0x0010_0000
    f["GUEST_CR4"] = (f["GUEST_CR4"] | (1 << 5)) & ~(1 << 17)
    f["GUEST_CR3"] = 0x2000
    f["GUEST_GS_BASE"] = 0
    pdptes = [0x3001, 0x4001, 0x5001, 0]
    env["pdptes"] = list(pdptes)
    for i, value in enumerate(pdptes):
        if f"GUEST_PDPTR{i}" in f:
            f[f"GUEST_PDPTR{i}"] = value
    if "GUEST_IA32_EFER" in f:
        f["GUEST_IA32_EFER"] = 0x801


def v86_variant(caps, f, env):
    """A virtual-8086 guest (RFLAGS.VM = 1) under 32-bit paging."""
    pae32_variant(caps, f, env)
    f["GUEST_CR4"] &= ~(1 << 5)
    f["GUEST_RFLAGS"] |= 1 << 17
    f["GUEST_RIP"] = 0x100
    for seg, sel in (("CS", 0x1000), ("SS", 0x2000), ("DS", 0x3000), ("ES", 0x3000),
                     ("FS", 0x0), ("GS", 0xFFFF)):
        f.update({f"GUEST_{seg}_SELECTOR": sel, f"GUEST_{seg}_BASE": sel << 4,
                  f"GUEST_{seg}_LIMIT": 0xFFFF, f"GUEST_{seg}_AR_BYTES": 0xF3})


def host32_variant(caps, f, env):
    """A 32-bit host (processor outside IA-32e mode, 'host address-space size' = 0), PAE guest."""
    pae32_variant(caps, f, env)
    f[EXITC] &= ~(1 << 9)
    env["host_lma"] = 0
    f["HOST_RIP"] = 0x8100_0000
    f["HOST_CR4"] &= ~(1 << 17)
    if "HOST_IA32_EFER" in f:
        f["HOST_IA32_EFER"] = 0x801


def rich_variant(caps, f, env):
    """Every feature with a consistency check that the configuration offers, switched on validly;
    a valid shadow VMCS behind the link pointer, MSR lists, an injected #PF with error code."""
    def maybe(fn, *args):
        try:
            fn(caps, f, *args)
        except NotApplicable:
            pass

    for feature in ("io_bitmaps", "msr_bitmaps", "tsc_offsetting", "virtual_nmis",
                    "preemption_timer", "save_preemption_timer", "ept", "vpid", "unrestricted_guest",
                    "posted_interrupts", "apic_register_virtualization", "pml", "vmcs_shadowing",
                    "ept_violation_ve", "eptp_switching", "mode_based_execute", "tsc_scaling", "spp",
                    "hlat", "ipi_virtualization", "secondary_exit_controls", "monitor_trap_flag"):
        maybe(lambda caps, f: enable(caps, f, env, feature))
    if caps.supports("x2apic_mode"):
        enable(caps, f, env, "x2apic_mode")
    elif caps.supports("apic_access"):
        enable(caps, f, env, "apic_access")
    if caps.supports("ept") and (caps.ept_vpid_cap >> 21) & 1:
        f["EPT_POINTER"] = valid_eptp(caps, ad=True)
    for what in ("perf", "pat", "efer", "bndcfgs", "cet", "pkrs"):
        maybe(enable_entry_load, what)
    for what in ("perf", "pat", "efer", "cet", "pkrs"):
        maybe(enable_exit_load, what)
    if caps.control_masks(MSR.IA32_VMX_ENTRY_CTLS)[1] >> 2 & 1:
        f[ENTRYC] |= 1 << 2                  # load debug controls
        f["GUEST_IA32_DEBUGCTL"] = 0x1
    f["CR3_TARGET_COUNT"] = caps.cr3_target_count
    f.update({"VM_ENTRY_MSR_LOAD_COUNT": 2, "VM_ENTRY_MSR_LOAD_ADDR": MSR_AREA,
              "VM_EXIT_MSR_STORE_COUNT": 1, "VM_EXIT_MSR_STORE_ADDR": MSR_AREA + 0x100,
              "VM_EXIT_MSR_LOAD_COUNT": 3, "VM_EXIT_MSR_LOAD_ADDR": MSR_AREA + 0x200})
    f[INJ] = 0x8000_0B0E                    # #PF, hardware exception, with error code
    f["VM_ENTRY_EXCEPTION_ERROR_CODE"] = 0x2
    f["VMCS_LINK_POINTER"] = LINK_VMCS
    shadowing = (effective_controls(caps, f)[PROC2] >> 14) & 1
    env["link_revision"] = caps.revision_id | (shadowing << 31)
    for i, value in enumerate([0x3001, 0x4001, 0x5001, 0]):
        if f"GUEST_PDPTR{i}" in f:
            f[f"GUEST_PDPTR{i}"] = value


_VARIANTS = {}


def variants(caps):
    """name → valid ``(fields, env)`` for ``caps``: flat64, v86, pae32, host32, rich64, rich_pae32.

    The result is a fresh copy (callers may edit it)."""
    key = id(caps)
    if key not in _VARIANTS:
        _VARIANTS[key] = (caps, _build_variants(caps))    # keep caps alive: id() stays unique
    return copy.deepcopy(_VARIANTS[key][1])


def _build_variants(caps):
    out = {"flat64": baseline(caps)}
    for name, builders in (("v86", (v86_variant,)), ("pae32", (pae32_variant,)),
                           ("host32", (host32_variant,)), ("rich64", (rich_variant,)),
                           ("rich_pae32", (rich_variant, pae32_variant))):
        f, env = baseline(caps)
        for build in builders:
            build(caps, f, env)
        out[name] = apply_contract(caps, f, env)
    return out


# -- mutations -----------------------------------------------------------------------------------

MUTATIONS = {}


def mutation(check_id):
    def register(fn):
        assert check_id not in MUTATIONS, check_id
        MUTATIONS[check_id] = fn
        return fn
    return register


def _none(*ids):
    return frozenset(ids)


# Secondary-control bits no check reads: setting one that is not allowed fails CTL_PROC2_RSVD alone.
_QUIET_SECONDARY_BITS = (29, 30, 24, 26, 19, 21, 27, 28, 31, 15, 16, 20, 2, 3, 6, 10, 11, 12)


@mutation("CTL_PIN_RSVD")
def _(caps, f, env):
    clear_bits(f, PIN, 1)                    # reserved, default 1
    return _none()


@mutation("CTL_PROC1_RSVD")
def _(caps, f, env):
    clear_bits(f, PROC, 1)
    return _none()


@mutation("CTL_PROC2_RSVD")
def _(caps, f, env):
    need(caps, "secondary_controls")
    b = unallowed_bit(caps, MSR.IA32_VMX_PROCBASED_CTLS2, _QUIET_SECONDARY_BITS)
    set_bits(f, PROC, 31)
    set_bits(f, PROC2, b)
    return _none()


@mutation("CTL_PROC3_RSVD")
def _(caps, f, env):
    need(caps, "tertiary_controls")
    b = unallowed_bit(caps, MSR.IA32_VMX_PROCBASED_CTLS3, range(64))
    set_bits(f, PROC, 17)
    f[PROC3] = 1 << b
    return _none()


@mutation("CTL_CR3_TARGET_CNT")
def _(caps, f, env):
    f["CR3_TARGET_COUNT"] = caps.cr3_target_count + 1
    return _none()


@mutation("CTL_IOBMP_ADDR")
def _(caps, f, env):
    enable(caps, f, env, "io_bitmaps")
    f["IO_BITMAP_B"] = IO_B | 0x800
    return _none()


@mutation("CTL_MSRBMP_ADDR")
def _(caps, f, env):
    enable(caps, f, env, "msr_bitmaps")
    f["MSR_BITMAP"] = 1 << caps.maxphyaddr
    return _none()


@mutation("CTL_VAPIC_ADDR")
def _(caps, f, env):
    enable(caps, f, env, "tpr_shadow")
    f["VIRTUAL_APIC_PAGE_ADDR"] = VAPIC | 0x80
    return _none()


@mutation("CTL_TPR_THRESH_RSVD")
def _(caps, f, env):
    enable(caps, f, env, "tpr_shadow")
    f["TPR_THRESHOLD"] = 0x10
    return _none()


@mutation("CTL_TPR_THRESH_VTPR")
def _(caps, f, env):
    enable(caps, f, env, "tpr_shadow")
    f["TPR_THRESHOLD"] = 5
    env["vtpr"] = 0x4F
    return _none()


@mutation("CTL_APICV_NEEDS_TPR")
def _(caps, f, env):
    for feature in ("apic_register_virtualization", "x2apic_mode", "virtual_interrupt_delivery"):
        if caps.supports(feature):
            set_control(caps, f, feature)
            if feature == "virtual_interrupt_delivery":
                enable(caps, f, env, "external_interrupt_exiting")
            return _none()
    raise NotApplicable("the configuration offers no APIC-virtualization control")


@mutation("CTL_X2APIC_VS_APICACC")
def _(caps, f, env):
    enable(caps, f, env, "x2apic_mode")
    enable(caps, f, env, "apic_access")
    return _none()


@mutation("CTL_APICACC_ADDR")
def _(caps, f, env):
    enable(caps, f, env, "apic_access")
    f["APIC_ACCESS_ADDR"] = 1 << caps.maxphyaddr | APIC_ACCESS
    return _none()


@mutation("CTL_VID_NEEDS_EXTINT")
def _(caps, f, env):
    enable(caps, f, env, "virtual_interrupt_delivery")
    clear_bits(f, PIN, 0)
    return _none()


@mutation("CTL_PI_NEEDS_VID")
def _(caps, f, env):
    enable(caps, f, env, "posted_interrupts")
    clear_bits(f, PROC2, 9)
    return _none()


@mutation("CTL_PI_NEEDS_ACK")
def _(caps, f, env):
    enable(caps, f, env, "posted_interrupts")
    clear_bits(f, EXITC, 15)
    return _none()


@mutation("CTL_PI_VECTOR")
def _(caps, f, env):
    enable(caps, f, env, "posted_interrupts")
    f["POSTED_INTR_NV"] = 0x1F2
    return _none()


@mutation("CTL_PI_DESC_ADDR")
def _(caps, f, env):
    enable(caps, f, env, "posted_interrupts")
    f["POSTED_INTR_DESC_ADDR"] = PI_DESC | 0x20
    return _none()


@mutation("CTL_VNMI_NEEDS_NMIEXIT")
def _(caps, f, env):
    set_control(caps, f, "virtual_nmis")
    return _none()


@mutation("CTL_NMIWIN_NEEDS_VNMI")
def _(caps, f, env):
    set_bits(f, PROC, 22)                    # NMI-window exiting: offered by every core
    return _none()


@mutation("CTL_VPID_ZERO")
def _(caps, f, env):
    enable(caps, f, env, "vpid")
    f["VIRTUAL_PROCESSOR_ID"] = 0
    return _none()


@mutation("CTL_EPTP_MEMTYPE")
def _(caps, f, env):
    enable(caps, f, env, "ept")
    f["EPT_POINTER"] = (f["EPT_POINTER"] & ~7) | 1          # WC: never a paging-structure type
    return _none()


@mutation("CTL_EPTP_WALKLEN")
def _(caps, f, env):
    enable(caps, f, env, "ept")
    f["EPT_POINTER"] = (f["EPT_POINTER"] & ~0x38) | (2 << 3)  # 3-level walk: never supported
    return _none()


@mutation("CTL_EPTP_AD")
def _(caps, f, env):
    enable(caps, f, env, "ept")
    if (caps.ept_vpid_cap >> 21) & 1:
        raise NotApplicable("EPT accessed/dirty flags are supported (EPT_VPID_CAP[21] = 1)")
    f["EPT_POINTER"] |= 1 << 6
    return _none()


@mutation("CTL_EPTP_RSVD")
def _(caps, f, env):
    enable(caps, f, env, "ept")
    f["EPT_POINTER"] |= 1 << 9
    return _none()


@mutation("CTL_UG_NEEDS_EPT")
def _(caps, f, env):
    set_control(caps, f, "unrestricted_guest")
    return _none()


@mutation("CTL_MBEC_NEEDS_EPT")
def _(caps, f, env):
    set_control(caps, f, "mode_based_execute")
    return _none()


@mutation("CTL_PML_NEEDS_EPT")
def _(caps, f, env):
    set_control(caps, f, "pml")
    f["PML_ADDRESS"] = PML_PAGE
    return _none()


@mutation("CTL_PML_ADDR")
def _(caps, f, env):
    enable(caps, f, env, "pml")
    f["PML_ADDRESS"] = PML_PAGE | 1
    return _none()


@mutation("CTL_SPP")
def _(caps, f, env):
    enable(caps, f, env, "spp")
    f["SPPT_POINTER"] = SPPT | 0x100
    return _none()


@mutation("CTL_SHADOW_BMP")
def _(caps, f, env):
    enable(caps, f, env, "vmcs_shadowing")
    f["VMWRITE_BITMAP"] = 1 << caps.maxphyaddr
    return _none()


@mutation("CTL_VE_INFO_ADDR")
def _(caps, f, env):
    enable(caps, f, env, "ept_violation_ve")
    f["VE_INFORMATION_ADDRESS"] = VE_INFO | 0x8
    return _none()


@mutation("CTL_VMFUNC_RSVD")
def _(caps, f, env):
    enable(caps, f, env, "vmfunc")
    f[VMFUNC] = 1 << unallowed_bit(caps, MSR.IA32_VMX_VMFUNC, range(1, 64))
    return _none()


@mutation("CTL_EPTP_SWITCH")
def _(caps, f, env):
    enable(caps, f, env, "eptp_switching")
    f["EPTP_LIST_ADDRESS"] = EPTP_LIST | 0x10
    return _none()


@mutation("CTL_TSC_MULT_ZERO")
def _(caps, f, env):
    enable(caps, f, env, "tsc_scaling")
    f["TSC_MULTIPLIER"] = 0
    return _none()


@mutation("CTL_EXIT_RSVD")
def _(caps, f, env):
    clear_bits(f, EXITC, 0)
    return _none()


@mutation("CTL_EXIT2_RSVD")
def _(caps, f, env):
    enable(caps, f, env, "secondary_exit_controls")
    f[EXITC2] = 1 << unallowed_bit(caps, MSR.IA32_VMX_EXIT_CTLS2, range(64))
    return _none()


@mutation("CTL_SAVE_PT_NEEDS_PT")
def _(caps, f, env):
    set_control(caps, f, "save_preemption_timer")
    return _none()


@mutation("CTL_EXIT_MSRST_ADDR")
def _(caps, f, env):
    f["VM_EXIT_MSR_STORE_COUNT"] = 1
    f["VM_EXIT_MSR_STORE_ADDR"] = MSR_AREA | 0x8
    return _none()


@mutation("CTL_EXIT_MSRLD_ADDR")
def _(caps, f, env):
    f["VM_EXIT_MSR_LOAD_COUNT"] = 2          # the area's last byte is just past MAXPHYADDR
    f["VM_EXIT_MSR_LOAD_ADDR"] = (1 << caps.maxphyaddr) - 16
    return _none()


@mutation("CTL_ENTRY_RSVD")
def _(caps, f, env):
    clear_bits(f, ENTRYC, 0)
    return _none()


def _smm_control(caps, f, b):
    """Set VM-entry control ``b`` (10: entry to SMM, 11: deactivate dual-monitor treatment), or
    NotApplicable where the configuration does not allow it."""
    if not (caps.control_masks(MSR.IA32_VMX_ENTRY_CTLS)[1] >> b) & 1:
        name = {10: "entry to SMM", 11: "deactivate dual-monitor treatment"}[b]
        raise NotApplicable(f"the configuration does not allow '{name}' (VM-entry control {b}): "
                            f"no feature of the model offers it")
    set_bits(f, ENTRYC, b)


@mutation("CTL_ENTRY_SMM")
def _(caps, f, env):
    _smm_control(caps, f, 11)                # deactivate dual-monitor treatment, outside SMM
    return _none()


@mutation("CTL_ENTRY_MSRLD_ADDR")
def _(caps, f, env):
    f["VM_ENTRY_MSR_LOAD_COUNT"] = 1
    f["VM_ENTRY_MSR_LOAD_ADDR"] = (1 << caps.maxphyaddr) | MSR_AREA
    return _none()


@mutation("CTL_INJ_TYPE_RSVD")
def _(caps, f, env):
    f[INJ] = 0x8000_0100                     # type 1: reserved
    return _none()


@mutation("CTL_INJ_NMI_VEC")
def _(caps, f, env):
    f[INJ] = 0x8000_0203
    return _none()


@mutation("CTL_INJ_HWEXC_VEC")
def _(caps, f, env):
    f[INJ] = 0x8000_0320
    return _none()


@mutation("CTL_INJ_OTHER_VEC")
def _(caps, f, env):
    need(caps, "monitor_trap_flag")
    f[INJ] = 0x8000_0701
    return _none()


@mutation("CTL_INJ_ERRCODE")
def _(caps, f, env):
    if caps.basic_bit(56):                   # only "error code with a type other than 3" fails
        f[INJ] = 0x8000_0C80                 # software interrupt 0x80 with an error code
        f["VM_ENTRY_INSTRUCTION_LEN"] = 2
    else:
        f[INJ] = 0x8000_030D                 # #GP without its error code
    return _none()


@mutation("CTL_INJ_RSVD")
def _(caps, f, env):
    f[INJ] = 0x8000_1306
    return _none()


@mutation("CTL_INJ_ERRCODE_HI")
def _(caps, f, env):
    f[INJ] = 0x8000_0B0D
    f["VM_ENTRY_EXCEPTION_ERROR_CODE"] = 0x1_0000
    return _none()


@mutation("CTL_INJ_ILEN")
def _(caps, f, env):
    f[INJ] = 0x8000_0480
    f["VM_ENTRY_INSTRUCTION_LEN"] = 16
    return _none()


# host state

@mutation("HOST_ADDRSZ_LMA")
def _(caps, f, env):
    host32_variant(caps, f, env)
    env["host_lma"] = 1
    return _none()


@mutation("HOST_ADDRSZ_LEGACY")
def _(caps, f, env):
    env["host_lma"] = 0
    return _none()


@mutation("HOST_CR0_FIXED")
def _(caps, f, env):
    clear_bits(f, "HOST_CR0", 5)             # NE
    return _none()


@mutation("HOST_CR4_FIXED")
def _(caps, f, env):
    clear_bits(f, "HOST_CR4", 13)            # VMXE
    return _none()


@mutation("HOST_CR3_WIDTH")
def _(caps, f, env):
    f["HOST_CR3"] |= 1 << caps.maxphyaddr
    return _none()


@mutation("HOST_CET_WP")
def _(caps, f, env):
    enable_exit_load(caps, f, "cet")
    set_bits(f, "HOST_CR4", 23)
    clear_bits(f, "HOST_CR0", 16)
    return _none() if (caps.cr4_fixed[1] >> 23) & 1 else _none("HOST_CR4_FIXED")


@mutation("HOST_CET_FIELDS")
def _(caps, f, env):
    enable_exit_load(caps, f, "cet")
    f["HOST_SSP"] |= 1
    return _none()


@mutation("HOST_SYSENTER_CANON")
def _(caps, f, env):
    f["HOST_IA32_SYSENTER_ESP"] = 1 << 47
    return _none()


@mutation("HOST_PERFGC_RSVD")
def _(caps, f, env):
    enable_exit_load(caps, f, "perf")
    f["HOST_IA32_PERF_GLOBAL_CTRL"] |= 1 << 4
    return _none()


@mutation("HOST_PAT")
def _(caps, f, env):
    enable_exit_load(caps, f, "pat")
    f["HOST_IA32_PAT"] = 0x0007_0406_0007_0402
    return _none()


@mutation("HOST_EFER")
def _(caps, f, env):
    enable_exit_load(caps, f, "efer")
    f["HOST_IA32_EFER"] = 0xC01               # LMA without LME
    return _none()


@mutation("HOST_PKRS")
def _(caps, f, env):
    enable_exit_load(caps, f, "pkrs")
    f["HOST_IA32_PKRS"] = 1 << 32
    return _none()


@mutation("HOST_SEL_RPL_TI")
def _(caps, f, env):
    f["HOST_DS_SELECTOR"] = 0x13
    return _none()


@mutation("HOST_CS_NULL")
def _(caps, f, env):
    f["HOST_CS_SELECTOR"] = 0
    return _none()


@mutation("HOST_TR_NULL")
def _(caps, f, env):
    f["HOST_TR_SELECTOR"] = 0
    return _none()


@mutation("HOST_SS_NULL")
def _(caps, f, env):
    host32_variant(caps, f, env)
    f["HOST_SS_SELECTOR"] = 0
    return _none()


@mutation("HOST_BASE_CANON")
def _(caps, f, env):
    f["HOST_GDTR_BASE"] = 0x0000_8000_0000_0000
    return _none()


@mutation("HOST64_PAE")
def _(caps, f, env):
    clear_bits(f, "HOST_CR4", 5)
    return _none()


@mutation("HOST64_RIP")
def _(caps, f, env):
    f["HOST_RIP"] = 0x0000_8000_0000_0000
    return _none()


@mutation("HOST32_GUEST64")
def _(caps, f, env):
    # 'host address-space size' = 0 with an IA-32e guest: outside IA-32e mode that is also
    # HOST_ADDRSZ_LEGACY, inside it HOST_ADDRSZ_LMA; one of them always fails first.
    clear_bits(f, EXITC, 9)
    env["host_lma"] = 0
    f["HOST_RIP"] = 0x8100_0000
    return _none("HOST_ADDRSZ_LEGACY")


@mutation("HOST32_PCIDE")
def _(caps, f, env):
    host32_variant(caps, f, env)
    set_bits(f, "HOST_CR4", 17)
    return _none()


@mutation("HOST32_RIP")
def _(caps, f, env):
    host32_variant(caps, f, env)
    f["HOST_RIP"] = 1 << 32
    return _none()


# guest control registers, debug registers, MSRs

@mutation("GUEST_CR0_FIXED")
def _(caps, f, env):
    clear_bits(f, "GUEST_CR0", 5)            # NE
    return _none()


@mutation("GUEST_CR0_PG_NO_PE")
def _(caps, f, env):
    if caps.supports("unrestricted_guest"):
        enable(caps, f, env, "unrestricted_guest")
        companions = _none()
    else:
        companions = _none("GUEST_CR0_FIXED")  # PE = 0 needs 'unrestricted guest'
    clear_bits(f, "GUEST_CR0", 0)
    return companions


@mutation("GUEST_CR4_FIXED")
def _(caps, f, env):
    clear_bits(f, "GUEST_CR4", 13)
    return _none()


@mutation("GUEST_CET_WP")
def _(caps, f, env):
    set_bits(f, "GUEST_CR4", 23)
    clear_bits(f, "GUEST_CR0", 16)
    return _none() if (caps.cr4_fixed[1] >> 23) & 1 else _none("GUEST_CR4_FIXED")


def _load_debug_controls(caps, f):
    if not (caps.control_masks(MSR.IA32_VMX_ENTRY_CTLS)[1] >> 2) & 1:
        raise NotApplicable("'load debug controls' may not be 1")
    f[ENTRYC] |= 1 << 2


@mutation("GUEST_DR7_HI")
def _(caps, f, env):
    _load_debug_controls(caps, f)
    f["GUEST_DR7"] |= 1 << 32
    return _none()


@mutation("GUEST_DEBUGCTL_RSVD")
def _(caps, f, env):
    _load_debug_controls(caps, f)
    f["GUEST_IA32_DEBUGCTL"] = 1 << 2
    return _none()


@mutation("GUEST_CR3_WIDTH")
def _(caps, f, env):
    f["GUEST_CR3"] |= 1 << caps.maxphyaddr
    return _none()


@mutation("GUEST_SYSENTER_CANON")
def _(caps, f, env):
    f["GUEST_SYSENTER_EIP"] = 0xFFFF_0000_0000_0000
    return _none()


@mutation("GUEST_PERFGC_RSVD")
def _(caps, f, env):
    enable_entry_load(caps, f, "perf")
    f["GUEST_IA32_PERF_GLOBAL_CTRL"] |= 1 << 35
    return _none()


@mutation("GUEST_PAT")
def _(caps, f, env):
    enable_entry_load(caps, f, "pat")
    f["GUEST_IA32_PAT"] = 0x0807_0406_0007_0406
    return _none()


@mutation("GUEST_EFER_RSVD")
def _(caps, f, env):
    enable_entry_load(caps, f, "efer")
    f["GUEST_IA32_EFER"] |= 1 << 1
    return _none()


@mutation("GUEST_EFER_LMA")
def _(caps, f, env):
    enable_entry_load(caps, f, "efer")
    f["GUEST_IA32_EFER"] = 0x901              # LME without LMA in an IA-32e guest
    return _none()


@mutation("GUEST_EFER_LME")
def _(caps, f, env):
    enable_entry_load(caps, f, "efer")
    f["GUEST_IA32_EFER"] = 0x401              # LMA without LME
    return _none()


@mutation("GUEST_BNDCFGS")
def _(caps, f, env):
    enable_entry_load(caps, f, "bndcfgs")
    f["GUEST_BNDCFGS"] |= 1 << 3
    return _none()


@mutation("GUEST_CET_FIELDS")
def _(caps, f, env):
    enable_entry_load(caps, f, "cet")
    f["GUEST_S_CET"] |= 1 << 7
    return _none()


@mutation("GUEST_PKRS")
def _(caps, f, env):
    enable_entry_load(caps, f, "pkrs")
    f["GUEST_IA32_PKRS"] |= 1 << 40
    return _none()


@mutation("GUEST_IA32E_PG_PAE")
def _(caps, f, env):
    clear_bits(f, "GUEST_CR4", 5)
    return _none()


@mutation("GUEST_32_PCIDE")
def _(caps, f, env):
    pae32_variant(caps, f, env)
    set_bits(f, "GUEST_CR4", 17)
    return _none()


# guest segment registers

@mutation("GUEST_TR_TI")
def _(caps, f, env):
    f["GUEST_TR_SELECTOR"] = 0x44
    return _none()


def _usable_ldtr(f, ar=0x82):
    f.update({"GUEST_LDTR_SELECTOR": 0x50, "GUEST_LDTR_BASE": 0xFFFF_FE00_0000_8000,
              "GUEST_LDTR_LIMIT": 0xFFFF, "GUEST_LDTR_AR_BYTES": ar})


@mutation("GUEST_LDTR_TI")
def _(caps, f, env):
    _usable_ldtr(f)
    f["GUEST_LDTR_SELECTOR"] = 0x54
    return _none()


@mutation("GUEST_SS_RPL")
def _(caps, f, env):
    f["GUEST_CS_SELECTOR"] = 0x0B            # CS.RPL 3, SS.RPL 0
    return _none()


@mutation("GUEST_V86_BASE")
def _(caps, f, env):
    v86_variant(caps, f, env)
    f["GUEST_DS_BASE"] += 0x10
    return _none()


@mutation("GUEST_V86_LIMIT")
def _(caps, f, env):
    v86_variant(caps, f, env)
    f["GUEST_SS_LIMIT"] = 0xF_FFFF
    return _none()


@mutation("GUEST_V86_AR")
def _(caps, f, env):
    v86_variant(caps, f, env)
    f["GUEST_ES_AR_BYTES"] = 0xF2
    return _none()


@mutation("GUEST_BASE_CANON")
def _(caps, f, env):
    f["GUEST_FS_BASE"] = 1 << 47
    return _none()


@mutation("GUEST_BASE_HI")
def _(caps, f, env):
    f["GUEST_DS_BASE"] = 1 << 32
    return _none()


@mutation("GUEST_CS_TYPE")
def _(caps, f, env):
    f["GUEST_CS_AR_BYTES"] = 0xA09A          # type 10: code, not accessed
    return _none()


@mutation("GUEST_SS_TYPE")
def _(caps, f, env):
    f["GUEST_SS_AR_BYTES"] = 0xC091          # type 1: read-only data
    return _none()


@mutation("GUEST_DSEG_ACCESSED")
def _(caps, f, env):
    f["GUEST_DS_AR_BYTES"] = 0xC092
    return _none()


@mutation("GUEST_DSEG_CODE_READ")
def _(caps, f, env):
    f["GUEST_ES_AR_BYTES"] = 0xC099          # type 9: execute-only code
    return _none()


@mutation("GUEST_SEG_S")
def _(caps, f, env):
    f["GUEST_FS_AR_BYTES"] = 0xC083
    return _none()


def _ug_or_cs_type(caps, f, env):
    """'Unrestricted guest' on when offered (CS type 3 allowed), else GUEST_CS_TYPE fails too."""
    if caps.supports("unrestricted_guest"):
        enable(caps, f, env, "unrestricted_guest")
        return _none()
    return _none("GUEST_CS_TYPE")


@mutation("GUEST_CS_DPL_UG")
def _(caps, f, env):
    companions = _ug_or_cs_type(caps, f, env)
    f["GUEST_CS_AR_BYTES"] = 0xA0B3          # type 3, DPL 1
    return companions


@mutation("GUEST_CS_DPL_NONCONF")
def _(caps, f, env):
    f["GUEST_CS_AR_BYTES"] = 0xA0FB          # type 11, DPL 3 (SS.DPL 0)
    return _none()


@mutation("GUEST_CS_DPL_CONF")
def _(caps, f, env):
    f["GUEST_CS_AR_BYTES"] = 0xA0FF          # type 15 conforming, DPL 3 > SS.DPL 0
    return _none()


@mutation("GUEST_SS_DPL_RPL")
def _(caps, f, env):
    f["GUEST_CS_SELECTOR"] = 0x0B
    f["GUEST_SS_SELECTOR"] = 0x13            # RPL 3, DPL 0
    return _none()


@mutation("GUEST_SS_DPL_REAL")
def _(caps, f, env):
    companions = _ug_or_cs_type(caps, f, env)
    f["GUEST_CS_AR_BYTES"] = 0xA093          # type 3, DPL 0
    f["GUEST_CS_SELECTOR"] = 0x0B
    f["GUEST_SS_SELECTOR"] = 0x13
    f["GUEST_SS_AR_BYTES"] = 0xC0F3          # DPL 3 = RPL 3
    return companions


@mutation("GUEST_DSEG_DPL")
def _(caps, f, env):
    f["GUEST_DS_SELECTOR"] = 0x13            # RPL 3 > DPL 0
    return _none()


@mutation("GUEST_SEG_P")
def _(caps, f, env):
    f["GUEST_GS_AR_BYTES"] = 0xC013
    return _none()


@mutation("GUEST_SEG_AR_RSVD")
def _(caps, f, env):
    f["GUEST_DS_AR_BYTES"] |= 1 << 9
    return _none()


@mutation("GUEST_CS_L_D")
def _(caps, f, env):
    f["GUEST_CS_AR_BYTES"] = 0xE09B
    return _none()


@mutation("GUEST_SEG_G")
def _(caps, f, env):
    f["GUEST_ES_LIMIT"] = 0xFFFF_F000
    return _none()


@mutation("GUEST_TR_UNUSABLE")
def _(caps, f, env):
    f["GUEST_TR_AR_BYTES"] |= 1 << 16
    return _none()


@mutation("GUEST_TR_TYPE")
def _(caps, f, env):
    f["GUEST_TR_AR_BYTES"] = 0x83            # busy 16-bit TSS in an IA-32e guest
    return _none()


@mutation("GUEST_TR_S_P_AR_G")
def _(caps, f, env):
    f["GUEST_TR_AR_BYTES"] = 0x0B            # not present
    return _none()


@mutation("GUEST_LDTR_AR")
def _(caps, f, env):
    _usable_ldtr(f, ar=0x8082)               # G = 1 with limit[11:0] not all ones
    f["GUEST_LDTR_LIMIT"] = 0x1000
    return _none()


@mutation("GUEST_GDTR_IDTR_CANON")
def _(caps, f, env):
    f["GUEST_IDTR_BASE"] = 1 << 47
    return _none()


@mutation("GUEST_GDTR_IDTR_LIMIT")
def _(caps, f, env):
    f["GUEST_GDTR_LIMIT"] = 0x1_0000
    return _none()


@mutation("GUEST_RIP_HI")
def _(caps, f, env):
    f["GUEST_CS_AR_BYTES"] = FLAT_CODE32_AR  # compatibility mode with a 64-bit RIP
    return _none()


@mutation("GUEST_RIP_CANON")
def _(caps, f, env):
    f["GUEST_RIP"] = 0x0000_8000_0000_0000
    return _none()


@mutation("GUEST_RFLAGS_RSVD")
def _(caps, f, env):
    f["GUEST_RFLAGS"] |= 1 << 3
    return _none()


@mutation("GUEST_RFLAGS_BIT1")
def _(caps, f, env):
    f["GUEST_RFLAGS"] = 0
    return _none()


@mutation("GUEST_RFLAGS_VM")
def _(caps, f, env):
    v86_variant(caps, f, env)                # virtual-8086 state in an IA-32e guest
    set_bits(f, ENTRYC, 9)
    set_bits(f, "GUEST_CR4", 5)
    return _none()


@mutation("GUEST_RFLAGS_IF_INJ")
def _(caps, f, env):
    f[INJ] = 0x8000_0020
    return _none()


# guest non-register state

@mutation("GUEST_ACT_RANGE")
def _(caps, f, env):
    f["GUEST_ACTIVITY_STATE"] = 4
    return _none()


def _cpl3(f):
    f["GUEST_CS_SELECTOR"], f["GUEST_SS_SELECTOR"] = 0x0B, 0x13
    f["GUEST_CS_AR_BYTES"], f["GUEST_SS_AR_BYTES"] = 0xA0FB, 0xC0F3


def _need_activity(caps, state):
    if not (caps.misc >> (5 + state)) & 1:
        raise NotApplicable(f"activity state {state} is not supported (IA32_VMX_MISC[{5 + state}] = 0)")


@mutation("GUEST_ACT_HLT_DPL")
def _(caps, f, env):
    _need_activity(caps, 1)
    _cpl3(f)
    f["GUEST_ACTIVITY_STATE"] = 1
    return _none()


@mutation("GUEST_ACT_BLOCKING")
def _(caps, f, env):
    _need_activity(caps, 1)
    f["GUEST_ACTIVITY_STATE"] = 1
    f["GUEST_INTERRUPTIBILITY_INFO"] = 1
    f["GUEST_RFLAGS"] |= 1 << 9
    return _none()


@mutation("GUEST_ACT_INJ")
def _(caps, f, env):
    _need_activity(caps, 1)
    f["GUEST_ACTIVITY_STATE"] = 1
    f[INJ] = 0x8000_0303                     # #BP as a hardware exception: not allowed in HLT
    return _none()


@mutation("GUEST_ACT_WFS_SMM")
def _(caps, f, env):
    _need_activity(caps, 3)
    _smm_control(caps, f, 10)                # entry to SMM: outside SMM also CTL_ENTRY_SMM, and
    f["GUEST_ACTIVITY_STATE"] = 3            # without blocking by SMI GUEST_INTR_SMI_ENTRY
    return _none("CTL_ENTRY_SMM", "GUEST_INTR_SMI_ENTRY")


@mutation("GUEST_INTR_RSVD")
def _(caps, f, env):
    f["GUEST_INTERRUPTIBILITY_INFO"] = 1 << 5
    return _none()


@mutation("GUEST_INTR_STI_MOVSS")
def _(caps, f, env):
    f["GUEST_INTERRUPTIBILITY_INFO"] = 3
    f["GUEST_RFLAGS"] |= 1 << 9
    return _none()


@mutation("GUEST_INTR_STI_IF")
def _(caps, f, env):
    f["GUEST_INTERRUPTIBILITY_INFO"] = 1
    return _none()


@mutation("GUEST_INTR_EXTINT")
def _(caps, f, env):
    f[INJ] = 0x8000_0020
    f["GUEST_RFLAGS"] |= 1 << 9
    f["GUEST_INTERRUPTIBILITY_INFO"] = 2
    return _none()


@mutation("GUEST_INTR_NMI_MOVSS")
def _(caps, f, env):
    f[INJ] = 0x8000_0202
    f["GUEST_INTERRUPTIBILITY_INFO"] = 2
    return _none()


@mutation("GUEST_INTR_NMI_STI")
def _(caps, f, env):
    f[INJ] = 0x8000_0202
    f["GUEST_INTERRUPTIBILITY_INFO"] = 1
    f["GUEST_RFLAGS"] |= 1 << 9
    return _none()


@mutation("GUEST_INTR_SMI_NOT_SMM")
def _(caps, f, env):
    f["GUEST_INTERRUPTIBILITY_INFO"] = 4
    return _none()


@mutation("GUEST_INTR_SMI_ENTRY")
def _(caps, f, env):
    _smm_control(caps, f, 10)                # entry to SMM: outside SMM also CTL_ENTRY_SMM
    return _none("CTL_ENTRY_SMM")


@mutation("GUEST_INTR_VNMI_BLOCK")
def _(caps, f, env):
    enable(caps, f, env, "virtual_nmis")
    f[INJ] = 0x8000_0202
    f["GUEST_INTERRUPTIBILITY_INFO"] = 8
    return _none()


@mutation("GUEST_INTR_ENCLAVE")
def _(caps, f, env):
    f["GUEST_INTERRUPTIBILITY_INFO"] = 0x10
    return _none()


@mutation("GUEST_PDE_RSVD")
def _(caps, f, env):
    f["GUEST_PENDING_DBG_EXCEPTIONS"] = 1 << 16   # RTM: reserved without RTM
    return _none()


@mutation("GUEST_PDE_BS_SET")
def _(caps, f, env):
    f["GUEST_INTERRUPTIBILITY_INFO"] = 1
    f["GUEST_RFLAGS"] |= (1 << 9) | (1 << 8)      # IF, TF
    return _none()


@mutation("GUEST_PDE_BS_CLR")
def _(caps, f, env):
    f["GUEST_INTERRUPTIBILITY_INFO"] = 2
    f["GUEST_PENDING_DBG_EXCEPTIONS"] = 1 << 14
    return _none()


def _link(caps, f, env, pointer=LINK_VMCS):
    f["VMCS_LINK_POINTER"] = pointer
    env["link_revision"] = caps.revision_id


@mutation("GUEST_LINK_ALIGN")
def _(caps, f, env):
    _link(caps, f, env, LINK_VMCS | 0x8)
    return _none()


@mutation("GUEST_LINK_REV")
def _(caps, f, env):
    _link(caps, f, env)
    env["link_revision"] = caps.revision_id ^ 1
    return _none()


@mutation("GUEST_LINK_SHADOW")
def _(caps, f, env):
    _link(caps, f, env)
    env["link_revision"] |= 1 << 31          # a shadow VMCS, without 'VMCS shadowing'
    return _none()


@mutation("GUEST_LINK_SELF")
def _(caps, f, env):
    _link(caps, f, env, env["current_vmcs"])
    return _none()


@mutation("GUEST_PDPTE_RSVD")
def _(caps, f, env):
    pae32_variant(caps, f, env)
    env["pdptes"][1] |= 1 << 5
    return _none()


_unmutated = [c.id for c in CHECKS if c.group != CheckGroup.MSR_LOAD and c.id not in MUTATIONS]
assert not _unmutated, f"checks without a mutation: {_unmutated}"
del _unmutated

#: Checks whose mutation raises NotApplicable on every preset: architecturally present, but the
#: controls they are about — 'entry to SMM', 'deactivate dual-monitor treatment' — are offered by
#: no feature of the model, so on the modelled processor (any feature set) setting them fails
#: CTL_ENTRY_RSVD alone. ``CONFIGS["smm_controls"]`` (msr_overrides) reaches them.
UNREACHABLE_IN_PRESETS = frozenset({"CTL_ENTRY_SMM", "GUEST_ACT_WFS_SMM", "GUEST_INTR_SMI_ENTRY"})


# -- boundary cases ------------------------------------------------------------------------------

EXTRA_CASES = {}


def extra(name):
    def register(fn):
        assert name not in EXTRA_CASES, name
        EXTRA_CASES[name] = fn
        return fn
    return register


def _fixed_cr4(caps, *bits):
    """GUEST_CR4_FIXED if any of CR4 ``bits`` is not allowed by CR4_FIXED1."""
    return {"GUEST_CR4_FIXED"} if any(not (caps.cr4_fixed[1] >> b) & 1 for b in bits) else set()


@extra("msr_area_last_byte_phys_valid")
def _(caps, f, env):
    f["VM_EXIT_MSR_STORE_COUNT"] = 1
    f["VM_EXIT_MSR_STORE_ADDR"] = (1 << caps.maxphyaddr) - 16
    f["VM_ENTRY_MSR_LOAD_COUNT"] = 0
    f["VM_ENTRY_MSR_LOAD_ADDR"] = MASK64     # count 0: the address is not checked
    return set()


@extra("msr_area_huge_count")
def _(caps, f, env):
    f["VM_ENTRY_MSR_LOAD_COUNT"] = 0xFFFF_FFFF
    f["VM_ENTRY_MSR_LOAD_ADDR"] = MSR_AREA
    return {"CTL_ENTRY_MSRLD_ADDR"} if caps.maxphyaddr < 36 + 1 else set()


@extra("bitmap_top_page")
def _(caps, f, env):
    enable(caps, f, env, "msr_bitmaps")
    f["MSR_BITMAP"] = (1 << caps.maxphyaddr) - 0x1000
    return set()


@extra("la57_rip_canonical_57")
def _(caps, f, env):
    set_bits(f, "GUEST_CR4", 12)
    f["GUEST_RIP"] = 0x0080_0000_0000_0000   # canonical with 5-level paging only
    return _fixed_cr4(caps, 12)


@extra("la57_rip_noncanonical_57")
def _(caps, f, env):
    set_bits(f, "GUEST_CR4", 12)
    f["GUEST_RIP"] = 0x0100_0000_0000_0000
    return _fixed_cr4(caps, 12) | {"GUEST_RIP_CANON"}


@extra("rip_canonical_high")
def _(caps, f, env):
    f["GUEST_RIP"] = 0xFFFF_8000_0000_0000
    f["HOST_RIP"] = 0x0000_7FFF_FFFF_FFFF
    return set()


@extra("compat_mode_rip_32bit")
def _(caps, f, env):
    f["GUEST_CS_AR_BYTES"] = FLAT_CODE32_AR
    f["GUEST_RIP"] = 0xFFFF_FFFF
    return set()


@extra("cs_usable_bit_ignored")
def _(caps, f, env):
    f["GUEST_CS_AR_BYTES"] |= 1 << 16
    return set()


@extra("unusable_data_segments_unchecked")
def _(caps, f, env):
    f["GUEST_DS_AR_BYTES"] = 0x1_0000 | 0x0F00 | 0x10  # reserved bits, S, not present, type 0
    f["GUEST_DS_BASE"] = 1 << 40
    f["GUEST_ES_AR_BYTES"] = 0x1_0001
    f["GUEST_ES_LIMIT"] = 0xFFF0_0000
    f["GUEST_SS_AR_BYTES"] = 0x1_0000
    f["GUEST_SS_BASE"] = 1 << 33
    return set()


@extra("unusable_fs_base_still_canonical")
def _(caps, f, env):
    f["GUEST_FS_AR_BYTES"] = 0x1_0000
    f["GUEST_FS_BASE"] = 1 << 50
    return {"GUEST_BASE_CANON"}


@extra("ldtr_usable_valid")
def _(caps, f, env):
    _usable_ldtr(f)
    return set()


@extra("ldtr_unusable_garbage")
def _(caps, f, env):
    f["GUEST_LDTR_SELECTOR"] = 0xFFFF
    f["GUEST_LDTR_BASE"] = 1 << 60
    f["GUEST_LDTR_AR_BYTES"] = 0xFFFF_FFFF
    return set()


@extra("tr_busy16_in_32bit_guest")
def _(caps, f, env):
    pae32_variant(caps, f, env)
    f["GUEST_TR_AR_BYTES"] = 0x83
    return set()


@extra("tr_limit_g")
def _(caps, f, env):
    f["GUEST_TR_AR_BYTES"] = 0x808B
    f["GUEST_TR_LIMIT"] = 0xFFFF_FFFF
    return set()


@extra("cs_conforming_dpl_below_ss")
def _(caps, f, env):
    _cpl3(f)
    f["GUEST_CS_AR_BYTES"] = 0xA09F          # conforming, DPL 0 ≤ SS.DPL 3
    return set()


@extra("data_segment_conforming_code_dpl_below_rpl")
def _(caps, f, env):
    f["GUEST_DS_AR_BYTES"] = 0xC09F          # conforming readable code (type 15): no DPL rule
    f["GUEST_DS_SELECTOR"] = 0x13
    return set()


@extra("inject_pf_with_error_code")
def _(caps, f, env):
    f[INJ] = 0x8000_0B0E
    return set()


@extra("inject_pf_without_error_code")
def _(caps, f, env):
    f[INJ] = 0x8000_030E
    return set() if caps.basic_bit(56) else {"CTL_INJ_ERRCODE"}


@extra("inject_ud_with_error_code")
def _(caps, f, env):
    f[INJ] = 0x8000_0B06
    return set() if caps.basic_bit(56) else {"CTL_INJ_ERRCODE"}


@extra("inject_gp_real_mode_ug")
def _(caps, f, env):
    enable(caps, f, env, "unrestricted_guest")
    pae32_variant(caps, f, env)
    f["GUEST_CR0"] &= ~((1 << 0) | (1 << 31))    # real mode
    f[INJ] = 0x8000_030D                         # #GP without error code: right in real mode
    return set()


@extra("inject_invalid_not_checked")
def _(caps, f, env):
    f[INJ] = 0x7FFF_FFFF
    f["VM_ENTRY_EXCEPTION_ERROR_CODE"] = 0xFFFF_FFFF
    f["VM_ENTRY_INSTRUCTION_LEN"] = 0xFFFF_FFFF
    return set()


@extra("inject_swint_ilen_0")
def _(caps, f, env):
    f[INJ] = 0x8000_0680
    f["VM_ENTRY_INSTRUCTION_LEN"] = 0
    return set() if (caps.misc >> 30) & 1 else {"CTL_INJ_ILEN"}


@extra("inject_swint_ilen_15")
def _(caps, f, env):
    f[INJ] = 0x8000_0580
    f["VM_ENTRY_INSTRUCTION_LEN"] = 15
    return set()


@extra("inject_other_event_mtf")
def _(caps, f, env):
    f[INJ] = 0x8000_0700
    return set()


@extra("hlt_inject_db_mc_mtf_extint_nmi")
def _(caps, f, env):
    _need_activity(caps, 1)
    f["GUEST_ACTIVITY_STATE"] = 1
    f[INJ] = 0x8000_0312                     # #MC
    return set()


@extra("hlt_inject_nmi")
def _(caps, f, env):
    _need_activity(caps, 1)
    f["GUEST_ACTIVITY_STATE"] = 1
    f[INJ] = 0x8000_0202
    return set()


@extra("shutdown_inject_extint")
def _(caps, f, env):
    f["GUEST_ACTIVITY_STATE"] = 2
    f[INJ] = 0x8000_0030
    f["GUEST_RFLAGS"] |= 1 << 9
    return {"GUEST_ACT_INJ"} | ({"GUEST_ACT_RANGE"} if not (caps.misc >> 7) & 1 else set())


@extra("wait_for_sipi_inject_nmi")
def _(caps, f, env):
    f["GUEST_ACTIVITY_STATE"] = 3
    f[INJ] = 0x8000_0202
    return {"GUEST_ACT_INJ"} | ({"GUEST_ACT_RANGE"} if not (caps.misc >> 8) & 1 else set())


@extra("hlt_tf_with_bs")
def _(caps, f, env):
    _need_activity(caps, 1)
    f["GUEST_ACTIVITY_STATE"] = 1
    f["GUEST_RFLAGS"] |= 1 << 8
    f["GUEST_PENDING_DBG_EXCEPTIONS"] = 1 << 14
    return set()


@extra("tf_btf_without_bs")
def _(caps, f, env):
    f["GUEST_INTERRUPTIBILITY_INFO"] = 2
    f["GUEST_RFLAGS"] |= 1 << 8
    f["GUEST_IA32_DEBUGCTL"] = 1 << 1        # BTF: BS must be 0
    return set()


@extra("tpr_threshold_equals_vtpr")
def _(caps, f, env):
    enable(caps, f, env, "tpr_shadow")
    f["TPR_THRESHOLD"] = 4
    env["vtpr"] = 0x40
    return set()


@extra("tpr_vtpr_ignored_with_apic_access")
def _(caps, f, env):
    enable(caps, f, env, "tpr_shadow")
    enable(caps, f, env, "apic_access")
    f["TPR_THRESHOLD"] = 0xF
    return set()


@extra("tpr_threshold_ignored_with_vid")
def _(caps, f, env):
    enable(caps, f, env, "virtual_interrupt_delivery")
    f["TPR_THRESHOLD"] = 0xFFFF_FFFF
    return set()


@extra("secondary_ignored_without_gate")
def _(caps, f, env):
    need_field(caps, PROC2)
    f[PROC2] = 0xFFFF_FFFF
    return set()


@extra("vmfunc_ignored_without_enable")
def _(caps, f, env):
    need_field(caps, VMFUNC)
    enable(caps, f, env, "ept")
    f[VMFUNC] = MASK64
    f["EPTP_LIST_ADDRESS"] = 1
    return set()


@extra("eptp_5level")
def _(caps, f, env):
    enable(caps, f, env, "ept")
    f["EPT_POINTER"] = (f["EPT_POINTER"] & ~0x38) | (4 << 3)
    return set() if (caps.ept_vpid_cap >> 7) & 1 else {"CTL_EPTP_WALKLEN"}


@extra("eptp_4level")
def _(caps, f, env):
    enable(caps, f, env, "ept")
    f["EPT_POINTER"] = (f["EPT_POINTER"] & ~0x38) | (3 << 3)
    return set() if (caps.ept_vpid_cap >> 6) & 1 else {"CTL_EPTP_WALKLEN"}


@extra("eptp_uc_and_sss_bit")
def _(caps, f, env):
    enable(caps, f, env, "ept")
    f["EPT_POINTER"] = (f["EPT_POINTER"] & ~7) | (1 << 7)
    out = set()
    if not (caps.ept_vpid_cap >> 8) & 1:
        out.add("CTL_EPTP_MEMTYPE")
    if not (caps.ept_vpid_cap >> 23) & 1:
        out.add("CTL_EPTP_RSVD")
    return out


@extra("eptp_top_of_physical_memory")
def _(caps, f, env):
    enable(caps, f, env, "ept")
    f["EPT_POINTER"] = ((1 << caps.maxphyaddr) - 0x1000) | (f["EPT_POINTER"] & 0xFF)
    return set()


@extra("pdpte_not_present_garbage")
def _(caps, f, env):
    pae32_variant(caps, f, env)
    env["pdptes"][3] = MASK64 & ~1
    return set()


@extra("pdpte_top_of_physical_memory")
def _(caps, f, env):
    pae32_variant(caps, f, env)
    env["pdptes"][0] = ((1 << caps.maxphyaddr) - 0x1000) | 1
    env["pdptes"][2] = (1 << 63) | 1         # XD is reserved in a PDPTE
    return {"GUEST_PDPTE_RSVD"}


@extra("pdpte_ignored_in_ia32e_guest")
def _(caps, f, env):
    env["pdptes"] = [MASK64] * 4
    return set()


@extra("pdpte_from_vmcs_with_ept")
def _(caps, f, env):
    enable(caps, f, env, "ept")
    pae32_variant(caps, f, env)
    f["GUEST_PDPTR2"] = 0x5001 | (1 << 8)
    apply_contract(caps, f, env)
    return {"GUEST_PDPTE_RSVD"}


@extra("link_pointer_valid_shadow")
def _(caps, f, env):
    enable(caps, f, env, "vmcs_shadowing")
    _link(caps, f, env)
    env["link_revision"] |= 1 << 31
    return set()


@extra("link_pointer_top_of_memory")
def _(caps, f, env):
    _link(caps, f, env, (1 << caps.maxphyaddr) - 0x1000)
    return set()


@extra("host_efer_32bit_host")
def _(caps, f, env):
    host32_variant(caps, f, env)
    enable_exit_load(caps, f, "efer")
    return set()


@extra("guest_efer_lme_ignored_without_paging")
def _(caps, f, env):
    enable(caps, f, env, "unrestricted_guest")
    pae32_variant(caps, f, env)
    f["GUEST_CR0"] &= ~((1 << 0) | (1 << 31))
    enable_entry_load(caps, f, "efer")
    f["GUEST_IA32_EFER"] = 0x100             # LME with paging off, not an IA-32e guest
    return set()


@extra("v86_guest_ss_dpl3_ok")
def _(caps, f, env):
    v86_variant(caps, f, env)
    f["GUEST_SS_SELECTOR"] = 0x2003          # RPL 3 = DPL 3 anyway, base follows
    f["GUEST_SS_BASE"] = 0x20030
    return set()


@extra("v86_guest_cs_type_not_checked")
def _(caps, f, env):
    v86_variant(caps, f, env)
    f["GUEST_TR_AR_BYTES"] = 0x83            # 16-bit busy TSS: fine outside IA-32e
    return set()


@extra("perf_global_ctrl_all_counters")
def _(caps, f, env):
    enable_entry_load(caps, f, "perf")
    enable_exit_load(caps, f, "perf")
    f["GUEST_IA32_PERF_GLOBAL_CTRL"] = 0x7_0000_000F
    f["HOST_IA32_PERF_GLOBAL_CTRL"] = 0x7_0000_000F
    return set()


@extra("pat_all_valid_types")
def _(caps, f, env):
    enable_entry_load(caps, f, "pat")
    f["GUEST_IA32_PAT"] = 0x0706_0504_0100_0706
    return set()


@extra("debugctl_all_implemented")
def _(caps, f, env):
    _load_debug_controls(caps, f)
    f["GUEST_IA32_DEBUGCTL"] = 0xFFC3
    f["GUEST_DR7"] = 0xFFFF_FFFF
    return set()


@extra("cr3_target_count_max")
def _(caps, f, env):
    f["CR3_TARGET_COUNT"] = caps.cr3_target_count
    return set()


# -- boundary grids: one case per value of a small field -----------------------------------------

def _grid(name, fn):
    EXTRA_CASES[name] = fn


def _hwexc_case(vector, deliver):
    def case(caps, f, env):
        f[INJ] = 0x8000_0300 | vector | (deliver << 11)
        if deliver:
            f["VM_ENTRY_EXCEPTION_ERROR_CODE"] = 0xFFFF
        wants_code = vector in (8, 10, 11, 12, 13, 14, 17)
        if caps.basic_bit(56) or bool(deliver) == wants_code:
            return set()
        return {"CTL_INJ_ERRCODE"}
    return case


for _vector in range(32):
    for _deliver in (0, 1):
        _grid(f"inject_hwexc_{_vector}_{'with' if _deliver else 'without'}_code",
              _hwexc_case(_vector, _deliver))


def _segment_type_case(seg, kind):
    def case(caps, f, env):
        base_ar = {"CS": FLAT_CODE64_AR, "SS": FLAT_DATA_AR, "DS": FLAT_DATA_AR}[seg]
        f[f"GUEST_{seg}_AR_BYTES"] = (base_ar & ~0xF) | kind
        expected = set()
        if seg == "CS":
            if kind not in (9, 11, 13, 15):  # the baseline has no 'unrestricted guest'
                expected.add("GUEST_CS_TYPE")
        elif seg == "SS":
            if kind not in (3, 7):
                expected.add("GUEST_SS_TYPE")
        else:                                # DS with RPL 3 > DPL 0
            f["GUEST_DS_SELECTOR"] = 0x13
            if not kind & 1:
                expected.add("GUEST_DSEG_ACCESSED")
            if kind & 8 and not kind & 2:
                expected.add("GUEST_DSEG_CODE_READ")
            if kind <= 11:
                expected.add("GUEST_DSEG_DPL")
        return expected
    return case


for _seg in ("CS", "SS", "DS"):
    for _kind in range(16):
        _grid(f"segment_{_seg.lower()}_type_{_kind}", _segment_type_case(_seg, _kind))


def _system_type_case(seg, kind):
    def case(caps, f, env):
        if seg == "TR":
            f["GUEST_TR_AR_BYTES"] = 0x80 | kind
            return set() if kind == 11 else {"GUEST_TR_TYPE"}
        _usable_ldtr(f, ar=0x80 | kind)
        return set() if kind == 2 else {"GUEST_LDTR_AR"}
    return case


for _seg in ("TR", "LDTR"):
    for _kind in range(16):
        _grid(f"segment_{_seg.lower()}_type_{_kind}", _system_type_case(_seg, _kind))


def _pdpte_bit_case(bit_of):
    def case(caps, f, env):
        pae32_variant(caps, f, env)
        b = bit_of(caps)
        env["pdptes"][2] |= 1 << b
        reserved = b in (1, 2, 5, 6, 7, 8) or b >= caps.maxphyaddr
        return {"GUEST_PDPTE_RSVD"} if reserved else set()
    return case


for _label, _bit_of in [(str(b), (lambda b: lambda caps: b)(b)) for b in range(1, 13)] + [
        ("maxphyaddr-1", lambda caps: caps.maxphyaddr - 1), ("maxphyaddr", lambda caps: caps.maxphyaddr),
        ("51", lambda caps: 51), ("52", lambda caps: 52), ("63", lambda caps: 63)]:
    _grid(f"pdpte_bit_{_label}", _pdpte_bit_case(_bit_of))


#: (interruption type, vector) of injectable events, and the activity states that accept each
#: (SDM §27.3.1.5: HLT — external interrupt, NMI, #DB, #MC, MTF; shutdown — NMI, #MC; wait-for-SIPI —
#: nothing).
_EVENTS = {
    "extint": ((0, 0x20), {0, 1}), "nmi": ((2, 2), {0, 1, 2}), "db": ((3, 1), {0, 1}),
    "mc": ((3, 18), {0, 1, 2}), "bp_hw": ((3, 3), {0}), "mtf": ((7, 0), {0, 1}),
    "swint": ((4, 0x80), {0}), "icebp": ((5, 1), {0}), "int3": ((6, 3), {0}),
}


def _activity_case(state, event):
    def case(caps, f, env):
        (kind, vector), allowed = _EVENTS[event]
        f["GUEST_ACTIVITY_STATE"] = state
        f[INJ] = 0x8000_0000 | (kind << 8) | vector
        f["VM_ENTRY_INSTRUCTION_LEN"] = 2
        f["GUEST_RFLAGS"] |= 1 << 9
        expected = set() if state in allowed else {"GUEST_ACT_INJ"}
        if state and not (caps.misc >> (5 + state)) & 1:
            expected.add("GUEST_ACT_RANGE")
        return expected
    return case


for _state in range(4):
    for _event in _EVENTS:
        _grid(f"activity_{_state}_inject_{_event}", _activity_case(_state, _event))


# -- controls the configuration does not allow ---------------------------------------------------

#: name → (configuration in :data:`CONFIGS`, ``fn(caps, fields, env)`` editing the flat64 baseline
#: and returning the exact list of failing IDs, in catalogue order). A control the configuration
#: does not allow fails the ``*_RSVD`` check of its word, and makes no other check fail: neither
#: those that need it to be 1 (it is not in effect) nor those that need it to be 0 (it is 1 as
#: written). Where the feature is offered, the same VMCS fails the feature's own check instead.
DISALLOWED_CONTROL_CASES = {}


def disallowed(name, config):
    def register(fn):
        assert name not in DISALLOWED_CONTROL_CASES, name
        DISALLOWED_CONTROL_CASES[name] = (config, fn)
        return fn
    return register


def _vpid_zero(caps, f, env):
    set_bits(f, PROC, 31)
    set_bits(f, PROC2, 5)                    # enable VPID
    f["VIRTUAL_PROCESSOR_ID"] = 0            # (without the feature the field does not exist: 0)


@disallowed("vpid_off_enable_vpid_with_vpid_0", "no_vpid")
def _(caps, f, env):
    _vpid_zero(caps, f, env)
    return ["CTL_PROC2_RSVD"]


@disallowed("vpid_on_enable_vpid_with_vpid_0", "default")
def _(caps, f, env):
    _vpid_zero(caps, f, env)
    return ["CTL_VPID_ZERO"]


def _ept_bad_eptp(caps, f, env):
    set_bits(f, PROC, 31)
    set_bits(f, PROC2, 1)                    # enable EPT
    f["EPT_POINTER"] = 0x7000 | 1 | (2 << 3) | (1 << 9)   # WC, 3-level walk, bit 9: all bad


@disallowed("ept_off_enable_ept_with_bad_eptp", "no_ept")
def _(caps, f, env):
    _ept_bad_eptp(caps, f, env)              # EPT_POINTER does not exist here: it reads 0, bad too
    return ["CTL_PROC2_RSVD"]


@disallowed("ept_on_enable_ept_with_bad_eptp", "default")
def _(caps, f, env):
    _ept_bad_eptp(caps, f, env)
    return ["CTL_EPTP_MEMTYPE", "CTL_EPTP_WALKLEN", "CTL_EPTP_RSVD"]


@disallowed("ept_off_unrestricted_guest_pml_mbec", "no_ept")
def _(caps, f, env):
    set_bits(f, PROC, 31)
    set_bits(f, PROC2, 7, 17, 22)            # unrestricted guest, PML, mode-based execute, no EPT
    return ["CTL_PROC2_RSVD"]


@disallowed("ept_off_unrestricted_guest_real_mode", "no_ept")
def _(caps, f, env):
    # 'unrestricted guest' as written lets CR0.PE = PG = 0 pass GUEST_CR0_FIXED; in effect it is 0.
    set_bits(f, PROC, 31)
    set_bits(f, PROC2, 7)
    pae32_variant(caps, f, env)
    clear_bits(f, "GUEST_CR0", 0, 31)
    return ["CTL_PROC2_RSVD"]


@disallowed("ept_on_unrestricted_guest_real_mode", "default")
def _(caps, f, env):
    set_bits(f, PROC, 31)
    set_bits(f, PROC2, 7)                    # without 'enable EPT'
    pae32_variant(caps, f, env)
    clear_bits(f, "GUEST_CR0", 0, 31)
    return ["CTL_UG_NEEDS_EPT"]


@disallowed("timer_off_save_timer_value", "no_preemption_timer")
def _(caps, f, env):
    set_bits(f, EXITC, 22)                   # save VMX-preemption timer value
    return ["CTL_EXIT_RSVD"]


@disallowed("timer_on_save_timer_value_without_timer", "default")
def _(caps, f, env):
    set_bits(f, EXITC, 22)
    return ["CTL_SAVE_PT_NEEDS_PT"]


@disallowed("timer_off_save_offered_both_set", "timer_save_only")
def _(caps, f, env):
    # 'activate VMX-preemption timer' is not allowed (0 in effect, 1 as written); 'save
    # VMX-preemption timer value' is allowed: CTL_SAVE_PT_NEEDS_PT fails in effect only.
    set_bits(f, PIN, 6)
    set_bits(f, EXITC, 22)
    return ["CTL_PIN_RSVD"]


@disallowed("host64_off_64bit_host_and_guest", "no_64bit")
def _(caps, f, env):
    # The baseline's 'host address-space size' and 'IA-32e mode guest', in IA-32e mode: in effect
    # a 32-bit host and guest, which would also fail HOST_ADDRSZ_LMA, HOST32_RIP and GUEST_RIP_HI.
    assert (f[EXITC] >> 9) & 1 and (f[ENTRYC] >> 9) & 1 and env["host_lma"]
    return ["CTL_EXIT_RSVD", "CTL_ENTRY_RSVD"]


@disallowed("smm_off_entry_to_smm_wait_for_sipi", "default")
def _(caps, f, env):
    set_bits(f, ENTRYC, 10)                  # entry to SMM
    f["GUEST_ACTIVITY_STATE"] = 3
    return ["CTL_ENTRY_RSVD"]


@disallowed("smm_off_deactivate_dual_monitor", "default")
def _(caps, f, env):
    set_bits(f, ENTRYC, 11)
    return ["CTL_ENTRY_RSVD"]


@disallowed("smm_allowed_entry_to_smm_wait_for_sipi", "smm_controls")
def _(caps, f, env):
    set_bits(f, ENTRYC, 10)
    f["GUEST_ACTIVITY_STATE"] = 3
    return ["CTL_ENTRY_SMM", "GUEST_ACT_WFS_SMM", "GUEST_INTR_SMI_ENTRY"]
