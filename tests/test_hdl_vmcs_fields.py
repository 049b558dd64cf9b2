"""The VMCS field catalogue (hwvirt.hdl.vmcs_fields) against the SDM's field-encoding tables."""

import pytest

from hwvirt.hdl.capabilities import DEFAULT_FEATURES, FEATURES, MSR, VMXCapabilities
from hwvirt.hdl.vmcs_fields import (
    BY_ENCODING, BY_NAME, RESERVED_ENCODING_BITS, VMCS_FIELDS, FieldType, FieldWidth, VMCSField,
    decode_encoding, field_name, lookup_encoding,
)

W16, W64, W32, WN = FieldWidth.BITS16, FieldWidth.BITS64, FieldWidth.BITS32, FieldWidth.NATURAL
CTL, RO, GST, HST = (FieldType.CONTROL, FieldType.EXIT_INFORMATION, FieldType.GUEST_STATE,
                     FieldType.HOST_STATE)

# (encoding, name, width, type, readonly): at least one per (width, type) group of SDM appendix B.
SPOT_CHECKS = [
    (0x0000, "VIRTUAL_PROCESSOR_ID", W16, CTL, False),
    (0x0002, "POSTED_INTR_NV", W16, CTL, False),
    (0x0004, "EPTP_INDEX", W16, CTL, False),
    (0x0800, "GUEST_ES_SELECTOR", W16, GST, False),
    (0x080E, "GUEST_TR_SELECTOR", W16, GST, False),
    (0x0810, "GUEST_INTR_STATUS", W16, GST, False),
    (0x0812, "GUEST_PML_INDEX", W16, GST, False),
    (0x0C00, "HOST_ES_SELECTOR", W16, HST, False),
    (0x0C0C, "HOST_TR_SELECTOR", W16, HST, False),
    (0x2000, "IO_BITMAP_A", W64, CTL, False),
    (0x2004, "MSR_BITMAP", W64, CTL, False),
    (0x200A, "VM_ENTRY_MSR_LOAD_ADDR", W64, CTL, False),
    (0x2010, "TSC_OFFSET", W64, CTL, False),
    (0x201A, "EPT_POINTER", W64, CTL, False),
    (0x2022, "EOI_EXIT_BITMAP3", W64, CTL, False),
    (0x2034, "TERTIARY_VM_EXEC_CONTROL", W64, CTL, False),
    (0x2042, "PID_POINTER_TABLE", W64, CTL, False),
    (0x2400, "GUEST_PHYSICAL_ADDRESS", W64, RO, True),
    (0x2800, "VMCS_LINK_POINTER", W64, GST, False),
    (0x2806, "GUEST_IA32_EFER", W64, GST, False),
    (0x2810, "GUEST_PDPTR3", W64, GST, False),
    (0x2812, "GUEST_BNDCFGS", W64, GST, False),
    (0x2C00, "HOST_IA32_PAT", W64, HST, False),
    (0x2C04, "HOST_IA32_PERF_GLOBAL_CTRL", W64, HST, False),
    (0x4000, "PIN_BASED_VM_EXEC_CONTROL", W32, CTL, False),
    (0x4002, "CPU_BASED_VM_EXEC_CONTROL", W32, CTL, False),
    (0x400A, "CR3_TARGET_COUNT", W32, CTL, False),
    (0x401E, "SECONDARY_VM_EXEC_CONTROL", W32, CTL, False),
    (0x4024, "NOTIFY_WINDOW", W32, CTL, False),
    (0x4400, "VM_INSTRUCTION_ERROR", W32, RO, True),
    (0x4402, "VM_EXIT_REASON", W32, RO, True),
    (0x440E, "VMX_INSTRUCTION_INFO", W32, RO, True),
    (0x4800, "GUEST_ES_LIMIT", W32, GST, False),
    (0x4814, "GUEST_ES_AR_BYTES", W32, GST, False),
    (0x4824, "GUEST_INTERRUPTIBILITY_INFO", W32, GST, False),
    (0x4826, "GUEST_ACTIVITY_STATE", W32, GST, False),
    (0x482A, "GUEST_SYSENTER_CS", W32, GST, False),
    (0x482E, "VMX_PREEMPTION_TIMER_VALUE", W32, GST, False),
    (0x4C00, "HOST_IA32_SYSENTER_CS", W32, HST, False),
    (0x6000, "CR0_GUEST_HOST_MASK", WN, CTL, False),
    (0x600E, "CR3_TARGET_VALUE3", WN, CTL, False),
    (0x6400, "EXIT_QUALIFICATION", WN, RO, True),
    (0x6402, "IO_RCX", WN, RO, True),
    (0x640A, "GUEST_LINEAR_ADDRESS", WN, RO, True),
    (0x6800, "GUEST_CR0", WN, GST, False),
    (0x681E, "GUEST_RIP", WN, GST, False),
    (0x6820, "GUEST_RFLAGS", WN, GST, False),
    (0x6822, "GUEST_PENDING_DBG_EXCEPTIONS", WN, GST, False),
    (0x682C, "GUEST_INTR_SSP_TABLE", WN, GST, False),
    (0x6C00, "HOST_CR0", WN, HST, False),
    (0x6C16, "HOST_RIP", WN, HST, False),
    (0x6C1C, "HOST_INTR_SSP_TABLE", WN, HST, False),
]

# (encoding, requires) for fields whose existence depends on a feature.
REQUIRES_CHECKS = [
    (0x0000, ("vpid",)), (0x0002, ("posted_interrupts",)), (0x0004, ("ept_violation_ve",)),
    (0x0006, ("hlat",)), (0x0008, ("ipi_virtualization",)), (0x000A, ("apic_timer_virtualization",)),
    (0x0810, ("virtual_interrupt_delivery",)), (0x0812, ("pml",)), (0x0814, ("uintr",)),
    (0x2004, ("msr_bitmaps",)), (0x200C, ("dual_monitor",)), (0x200E, ("pml",)),
    (0x2012, ("tpr_shadow",)), (0x2014, ("apic_access",)), (0x2018, ("vmfunc",)),
    (0x201A, ("ept",)), (0x2024, ("eptp_switching",)), (0x2028, ("vmcs_shadowing",)),
    (0x202A, ("ept_violation_ve",)), (0x2030, ("spp",)), (0x2032, ("tsc_scaling",)),
    (0x203C, ("seam",)), (0x2044, ("secondary_exit_controls",)),
    (0x204A, ("spec_ctrl_virtualization",)), (0x2052, ("fred",)), (0x2402, ("msrlist",)),
    (0x2404, ("fred",)), (0x2804, ("load_pat",)), (0x2C02, ("load_efer",)),
    (0x2C04, ("load_perf_global_ctrl",)), (0x2816, ("arch_lbr",)), (0x2C06, ("pks",)),
    (0x2828, ("fred", "cet")), (0x2C1A, ("load_spec_ctrl",)), (0x4026, ("seam",)),
    (0x401C, ("tpr_shadow",)), (0x4020, ("ple",)), (0x482E, ("preemption_timer",)),
    (0x600C, ("cr3_target_value_2",)), (0x6C18, ("cet",)),
    (0x2000, ()), (0x2800, ()), (0x4828, ()), (0x6402, ()), (0x6C16, ()),
]

# SDM "minimum core set": fields every VMX implementation has, as ranges of full encodings.
CORE_RANGES = [
    (0x0800, 0x080E), (0x0C00, 0x0C0C), (0x2000, 0x200A), (0x2010, 0x2010), (0x2400, 0x2400),
    (0x2800, 0x2806), (0x2C00, 0x2C02), (0x4000, 0x401E), (0x4400, 0x440E), (0x4800, 0x482A),
    (0x4C00, 0x4C00), (0x6000, 0x600E), (0x6400, 0x640A), (0x6800, 0x6826), (0x6C00, 0x6C16),
]


def _core_encodings():
    return [e for lo, hi in CORE_RANGES for e in range(lo, hi + 1, 2)]


# -- the table ---------------------------------------------------------------------------------

def test_field_count_and_sorted():
    assert len(VMCS_FIELDS) == 206
    encodings = [f.encoding for f in VMCS_FIELDS]
    assert encodings == sorted(encodings)
    assert len(BY_ENCODING) == len(BY_NAME) == len(VMCS_FIELDS)


@pytest.mark.parametrize("encoding, name, width, type_, readonly", SPOT_CHECKS,
                         ids=[c[1] for c in SPOT_CHECKS])
def test_spot_check(encoding, name, width, type_, readonly):
    field = BY_NAME[name]
    assert field is BY_ENCODING[encoding]
    assert field.encoding == encoding
    assert field.width is width and field.type is type_
    assert field.readonly is readonly
    assert field.has_high is (width is W64)
    assert field.bits == {W16: 16, W32: 32, W64: 64, WN: 64}[width]
    assert field.description


def test_every_width_type_group_spot_checked():
    groups = {(f.width, f.type) for f in VMCS_FIELDS}
    assert groups == {(w, t) for _, _, w, t, _ in SPOT_CHECKS}
    # 16-bit read-only data is the only (width, type) group the SDM leaves empty.
    assert (W16, RO) not in groups and len(groups) == 15


def test_encodings_well_formed():
    for f in VMCS_FIELDS:
        assert f.encoding & 1 == 0, f.name
        assert f.encoding & RESERVED_ENCODING_BITS == 0, f.name
        assert f.encoding < 0x8000, f.name


def test_decode_encoding_round_trip():
    for f in VMCS_FIELDS:
        width, type_, index, high = decode_encoding(f.encoding)
        assert (width, type_, index, high) == (f.width, f.type, f.index, False)
        assert (width << 13) | (type_ << 10) | (index << 1) == f.encoding
        if f.has_high:
            assert decode_encoding(f.encoding + 1) == (width, type_, index, True)
    assert decode_encoding(0x6C17) == (WN, HST, 0x0B, True)
    # Bits above 14 and bit 12 are ignored, not validated.
    assert decode_encoding(0xFFFF_9000 | 0x2011) == decode_encoding(0x2011)


def test_readonly_is_exit_information_type():
    for f in VMCS_FIELDS:
        assert f.readonly == (f.type is RO), f.name
    assert sum(f.readonly for f in VMCS_FIELDS) == 3 + 8 + 6


def test_names_unique_upper_case_no_high_suffix():
    names = [f.name for f in VMCS_FIELDS]
    assert len(set(names)) == len(names)
    for name in names:
        assert name == name.upper() and name.isidentifier(), name
        assert not name.endswith("_HIGH"), name


@pytest.mark.parametrize("encoding, requires", REQUIRES_CHECKS,
                         ids=[f"{c[0]:#06x}" for c in REQUIRES_CHECKS])
def test_requires_spot_check(encoding, requires):
    assert BY_ENCODING[encoding].requires == requires


def test_requires_are_known_features():
    for f in VMCS_FIELDS:
        assert isinstance(f.requires, tuple)
        for feature in f.requires:
            if feature.startswith("cr3_target_value_"):
                assert 0 <= int(feature.rsplit("_", 1)[1]) < 4, f.name
            else:
                assert feature in FEATURES, (f.name, feature)


def test_cr3_target_values_require_their_index():
    for n in range(4):
        assert BY_NAME[f"CR3_TARGET_VALUE{n}"].requires == (f"cr3_target_value_{n}",)


@pytest.mark.parametrize("kwargs", [
    dict(encoding=0x6801, name="ODD", description="x"),
    dict(encoding=0x1000, name="RESERVED_BIT12", description="x"),
    dict(encoding=0x16800, name="RESERVED_BIT16", description="x"),
    dict(encoding=0x6800, name="lower_case", description="x"),
    dict(encoding=0x6800, name="THING_HIGH", description="x"),
    dict(encoding=0x6800, name="LIST_REQUIRES", description="x", requires=["ept"]),
])
def test_vmcsfield_rejects_malformed(kwargs):
    with pytest.raises(ValueError):
        VMCSField(**kwargs)


# -- lookup_encoding / field_name --------------------------------------------------------------

@pytest.mark.parametrize("spec, expected", [
    ("GUEST_CR0", 0x6800), ("guest_cr0", 0x6800), ("Guest_Cr0", 0x6800), ("  guest_rip ", 0x681E),
    ("TSC_OFFSET_HIGH", 0x2011), ("tsc_offset_high", 0x2011), ("vmcs_link_pointer_high", 0x2801),
    ("GUEST_PHYSICAL_ADDRESS_HIGH", 0x2401),
    ("0x6800", 0x6800), ("0X6800", 0x6800), ("26624", 0x6800), ("026624", 0x6800), ("0x2011", 0x2011),
    ("0xffffffffffffffff", (1 << 64) - 1),
    (0x6800, 0x6800), (0, 0), (0x2011, 0x2011), (0x6801, 0x6801), (0x1234_5678, 0x1234_5678),
    (0x482C, 0x482C), ((1 << 64) - 1, (1 << 64) - 1),
])
def test_lookup_encoding(spec, expected):
    assert lookup_encoding(spec) == expected


def test_lookup_every_name():
    for f in VMCS_FIELDS:
        assert lookup_encoding(f.name) == f.encoding
        assert lookup_encoding(f.name.lower()) == f.encoding
        if f.has_high:
            assert lookup_encoding(f.name + "_HIGH") == f.encoding + 1
        else:
            with pytest.raises(ValueError, match="no high half"):
                lookup_encoding(f.name + "_HIGH")


def test_lookup_unknown_name_suggests():
    with pytest.raises(ValueError) as info:
        lookup_encoding("GUEST_CR1")
    message = str(info.value)
    assert "'GUEST_CR1'" in message
    assert "GUEST_CR0" in message or "GUEST_CR3" in message
    with pytest.raises(ValueError) as info:
        lookup_encoding("tsc_ofset")
    assert "'tsc_ofset'" in str(info.value) and "TSC_OFFSET" in str(info.value)
    with pytest.raises(ValueError) as info:
        lookup_encoding("TSC_OFSET_HIGH")
    assert "TSC_OFFSET_HIGH" in str(info.value)
    with pytest.raises(ValueError, match="'qqq'"):
        lookup_encoding("qqq")


@pytest.mark.parametrize("name", ["GUEST_CR0_HIGH", "guest_es_selector_high", "VM_EXIT_REASON_HIGH",
                                  "EXIT_QUALIFICATION_HIGH"])
def test_lookup_high_of_non_64_bit_rejected(name):
    with pytest.raises(ValueError, match="no high half") as info:
        lookup_encoding(name)
    assert repr(name) in str(info.value)


@pytest.mark.parametrize("spec", [True, False, -1, 1 << 64, 1 << 70, "-1", "0x10000000000000000",
                                  "18446744073709551616", None, 1.0, b"GUEST_CR0", ""])
def test_lookup_bad_spec(spec):
    with pytest.raises(ValueError):
        lookup_encoding(spec)


@pytest.mark.parametrize("encoding, name", [
    (0x6800, "GUEST_CR0"), (0x2010, "TSC_OFFSET"), (0x2011, "TSC_OFFSET_HIGH"),
    (0x2401, "GUEST_PHYSICAL_ADDRESS_HIGH"), (0x0000, "VIRTUAL_PROCESSOR_ID"),
    (0x6801, "0x6801"), (0x0001, "0x0001"), (0x482C, "0x482c"), (0x1_6800, "0x16800"),
])
def test_field_name(encoding, name):
    assert field_name(encoding) == name


def test_field_name_round_trips_with_lookup():
    for f in VMCS_FIELDS:
        assert lookup_encoding(field_name(f.encoding)) == f.encoding
        if f.has_high:
            assert lookup_encoding(field_name(f.encoding + 1)) == f.encoding + 1


# -- field existence through VMXCapabilities ---------------------------------------------------

def _supported_names(caps):
    return {f.name for f in caps.supported_fields}


def test_default_config_core_set_supported():
    caps = VMXCapabilities()
    for encoding in _core_encodings():
        field = BY_ENCODING[encoding]
        assert caps.field_supported(field), field.name
    names = _supported_names(caps)
    assert "VMCS_LINK_POINTER" in names
    assert "VIRTUAL_PROCESSOR_ID" in names
    assert "GUEST_BNDCFGS" not in names          # MPX not in the default feature set
    assert "SHARED_EPT_POINTER" not in names     # SEAM is never offered
    assert "SEAM_GUEST_KEYID" not in names


def test_minimal_features_still_have_core_set():
    caps = VMXCapabilities(features=set())
    names = _supported_names(caps)
    for encoding in _core_encodings():
        field = BY_ENCODING[encoding]
        if field.requires and not all(caps.supports(r) for r in field.requires):
            # PAT/EFER and TPR threshold/secondary controls belong to the core set only when the
            # processor has the feature; everything else must exist unconditionally.
            assert field.name in {"GUEST_IA32_PAT", "GUEST_IA32_EFER", "HOST_IA32_PAT",
                                  "HOST_IA32_EFER", "TPR_THRESHOLD", "SECONDARY_VM_EXEC_CONTROL",
                                  "MSR_BITMAP"}, field.name
        else:
            assert field.name in names
    assert "VIRTUAL_PROCESSOR_ID" not in names and "EPT_POINTER" not in names


def test_vpid_dropped_by_feature_list():
    assert "VIRTUAL_PROCESSOR_ID" in _supported_names(VMXCapabilities())
    caps = VMXCapabilities(features=DEFAULT_FEATURES - {"vpid"})
    assert "VIRTUAL_PROCESSOR_ID" not in _supported_names(caps)
    assert not caps.field_supported(BY_NAME["VIRTUAL_PROCESSOR_ID"])


def test_vpid_dropped_by_msr_override():
    default = VMXCapabilities()
    ctls2 = default.msrs[MSR.IA32_VMX_PROCBASED_CTLS2]
    assert ctls2 >> 37 & 1                        # allowed-1 bit of "enable VPID" (control bit 5)
    caps = VMXCapabilities(msr_overrides={MSR.IA32_VMX_PROCBASED_CTLS2: ctls2 & ~(1 << 37)})
    names = _supported_names(caps)
    assert "VIRTUAL_PROCESSOR_ID" not in names
    assert "EPT_POINTER" in names                 # only VPID went away


def test_cr3_target_values_follow_count():
    four = _supported_names(VMXCapabilities(cr3_target_count=4))
    two = _supported_names(VMXCapabilities(cr3_target_count=2))
    assert {"CR3_TARGET_VALUE0", "CR3_TARGET_VALUE1", "CR3_TARGET_VALUE2",
            "CR3_TARGET_VALUE3"} <= four
    assert {"CR3_TARGET_VALUE0", "CR3_TARGET_VALUE1"} <= two
    assert "CR3_TARGET_VALUE2" not in two and "CR3_TARGET_VALUE3" not in two
    assert "CR3_TARGET_COUNT" in two and "CR3_TARGET_COUNT" in _supported_names(
        VMXCapabilities(cr3_target_count=0))


@pytest.mark.parametrize("kwargs", [
    {}, dict(features=DEFAULT_FEATURES - {"vpid"}), dict(features=set()),
    dict(features=DEFAULT_FEATURES | {"tertiary_controls", "ipi_virtualization", "fred", "cet"}),
    dict(features=DEFAULT_FEATURES | {"mpx", "intel_pt", "pks", "arch_lbr", "spp", "pconfig"}),
])
def test_vmcs_enum_is_highest_supported_index(kwargs):
    caps = VMXCapabilities(**kwargs)
    highest = max(f.index for f in caps.supported_fields)
    assert caps.msrs[MSR.IA32_VMX_VMCS_ENUM] == highest << 1
    assert caps.msrs[MSR.IA32_VMX_VMCS_ENUM] & ~0x3FE == 0


def test_vmcs_enum_default_value():
    # Default core: the highest index is TSC_MULTIPLIER (0x2032, index 0x19).
    assert VMXCapabilities().msrs[MSR.IA32_VMX_VMCS_ENUM] == 0x32
