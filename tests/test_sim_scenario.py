"""Tests of the scenario file parser (hwvirt.sim.scenario) and of the shipped examples."""

import textwrap
from pathlib import Path

import pytest

from hwvirt.hdl.capabilities import DEFAULT_FEATURES, DEFAULT_REVISION_ID, VMXCapabilities
from hwvirt.sim.scenario import (
    CPU_DEFAULTS, OPS, Config, Scenario, ScenarioError, Step, load_scenario, parse_scenario, read_toml,
)


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.toml"))
#: The VMX examples (the SVM ones, ``arch = "svm"``, have their own format: tests/test_hdl_svm_unit.py).
VMX_EXAMPLE_FILES = [p for p in EXAMPLE_FILES if read_toml(p).get("arch", "vmx") == "vmx"]

MINIMAL = '[[step]]\nop = "vmxoff"\n'


def parse(text, source="<string>"):
    return parse_scenario(textwrap.dedent(text), source=source)


def parse_steps(text):
    """Parse a scenario made of the given [[step]] text."""
    return parse(text).steps


# -- valid files ---------------------------------------------------------------------------------

def test_minimal_defaults():
    s = parse_scenario('[[step]]\nop = "vmxoff"\n')
    assert isinstance(s, Scenario)
    assert (s.name, s.arch, s.description, s.source) == ("scenario", "vmx", "", "<string>")
    assert s.config == Config()
    assert (s.config.revision_id, s.config.maxphyaddr, s.config.vmcs_cache_slots,
            s.config.memory_latency, s.config.cr3_target_count) == (DEFAULT_REVISION_ID, 39, 2, 0, 4)
    assert s.config.features == {} and s.config.msr == {}
    assert s.cpu == CPU_DEFAULTS
    assert s.cpu == {"cr0": 0x80050033, "cr4": 0x2020, "efer": 0xD01, "cpl": 0,
                     "feature_control": 0x5, "rflags": 0x2, "cs_l": 1, "mov_ss_blocking": 0}
    assert s.memory == []
    assert s.steps == [Step(index=1, op="vmxoff", args={}, expect={}, comment="")]
    assert s.steps[0].label == "step 1 (vmxoff)"


def test_cpu_defaults_not_shared():
    s = parse_scenario(MINIMAL)
    s.cpu["cr0"] = 0
    assert CPU_DEFAULTS["cr0"] == 0x80050033


def test_load_scenario_names_from_file(tmp_path):
    path = tmp_path / "my_case.toml"
    path.write_text('description = "d"\n[[step]]\nop = "vmcall"\ncomment = "c"\n')
    s = load_scenario(path)
    assert (s.name, s.description, s.source) == ("my_case", "d", str(path))
    assert s.steps[0].comment == "c"


def test_top_level_and_config():
    s = parse("""
        name = "n"
        arch = "vmx"
        [config]
        revision_id = 0x12
        maxphyaddr = "46"
        vmcs_cache_slots = 3
        memory_latency = 64
        cr3_target_count = 2
        features = { vpid = false, cet = true }
        msr = { 0x485 = "0x400401e5", 1154 = 0xfff9fffe0401e172 }
        [cpu]
        cr4 = 0x20
        cpl = "3"
        [[step]]
        op = "vmxoff"
    """)
    assert s.arch == "vmx"
    assert s.config == Config(revision_id=0x12, maxphyaddr=46, vmcs_cache_slots=3, memory_latency=64,
                              cr3_target_count=2, features={"vpid": False, "cet": True},
                              msr={0x485: 0x400401E5, 0x482: 0xFFF9FFFE0401E172})
    assert s.cpu == {**CPU_DEFAULTS, "cr4": 0x20, "cpl": 3}


def test_svm_arch_goes_to_the_svm_format():
    s = parse("""
        arch = "svm"
        [[step]]
        op = "stgi"
    """)
    assert type(s).__name__ == "SVMScenario" and s.steps[0].op == "stgi"
    with pytest.raises(ScenarioError, match="unknown op 'vmxoff'"):
        parse("""
            arch = "svm"
            [[step]]
            op = "vmxoff"
        """)


def test_config_capabilities():
    caps = Config(revision_id=7, features={"vpid": False, "cet": True},
                  msr={0x485: 0x400401E5}).capabilities()
    assert isinstance(caps, VMXCapabilities)
    assert caps.revision_id == 7
    assert not caps.supports("vpid") and caps.supports("cet") and caps.supports("ept")
    assert not caps.vmwrite_exit_info
    assert Config().capabilities().msrs == VMXCapabilities(features=DEFAULT_FEATURES).msrs


def test_config_capabilities_error():
    with pytest.raises(ScenarioError, match=r"^\[config\]: .*0x4a0"):
        Config(msr={0x4A0: 1}).capabilities()


@pytest.mark.parametrize("entry, data", [
    ("u8 = [1, 2, 0xff]", b"\x01\x02\xff"),
    ("u16 = [0x1234, 5]", b"\x34\x12\x05\x00"),
    ("u32 = [4]", b"\x04\x00\x00\x00"),
    ("u32 = [\"0x80000004\"]", b"\x04\x00\x00\x80"),
    ("u64 = [\"0xffffffffffffffff\", 1]", b"\xff" * 8 + b"\x01" + b"\x00" * 7),
    ("hex = \"04000000\"", b"\x04\x00\x00\x00"),
    ("hex = \"de ad_BE EF\"", b"\xde\xad\xbe\xef"),
])
def test_memory_formats(entry, data):
    s = parse(f"""
        [[memory]]
        addr = 0x1000
        {entry}
        [[memory]]
        addr = "0x2000"
        u8 = [7]
        [[step]]
        op = "mem_write"
        addr = 0x3000
        {entry}
    """)
    assert s.memory == [(0x1000, data), (0x2000, b"\x07")]
    assert s.steps[0].args == {"addr": 0x3000, "data": data}


def test_vmwrite_fields_keep_order_and_resolve():
    (step,) = parse_steps("""
        [[step]]
        op = "vmwrite"
        fields = { GUEST_RIP = 1, tsc_offset_high = "0x2", "0x6830" = 3, 26624 = 4, GUEST_CR3 = 5 }
        expect = { outcome = "succeed" }
    """)
    assert step.args == {"fields": [(0x681E, 1), (0x2011, 2), (0x6830, 3), (0x6800, 4), (0x6802, 5)]}
    assert step.expect == {"outcome": "succeed"}


def test_vmwrite_single_field_becomes_fields():
    steps = parse_steps("""
        [[step]]
        op = "vmwrite"
        field = "GUEST_RIP"
        value = "0xffff_ffff_ffff_ffff"
        [[step]]
        op = "vmwrite"
        field = 0x16800
        value = 0
    """)
    assert steps[0].args == {"fields": [(0x681E, (1 << 64) - 1)]}
    assert steps[1].args == {"fields": [(0x16800, 0)]}


def test_operands_normalized():
    steps = parse_steps("""
        [[step]]
        op = "vmxon"
        addr = "0x1000"
        [[step]]
        op = "vmread"
        field = "vm_instruction_error"
        [[step]]
        op = "vmread"
        field = 0x4801
        [[step]]
        op = "invept"
        type = 2
        eptp = 0x601e
        [[step]]
        op = "invvpid"
        type = 1
        vpid = 0xffff
        [[step]]
        op = "invvpid"
        type = 0
        vpid = 1
        addr = 0x1000
        descriptor_reserved = 0xffff_ffff_ffff
        [[step]]
        op = "rdmsr"
        msr = 0x480
        [[step]]
        op = "set_cpu"
        mov_ss_blocking = 1
        cr0 = 0x80050013
        [[step]]
        op = "mem_read"
        addr = 0x1000
        width = 64
        [[step]]
        op = "vmptrst"
        [[step]]
        op = "vmlaunch"
        [[step]]
        op = "vmresume"
    """)
    assert [s.index for s in steps] == list(range(1, 13))
    assert [s.args for s in steps] == [
        {"addr": 0x1000},
        {"field": 0x4400},
        {"field": 0x4801},
        {"type": 2, "eptp": 0x601E},
        {"type": 1, "vpid": 0xFFFF, "addr": 0, "descriptor_reserved": 0},
        {"type": 0, "vpid": 1, "addr": 0x1000, "descriptor_reserved": 0xFFFF_FFFF_FFFF},
        {"msr": 0x480},
        {"cpu": {"cr0": 0x80050013, "mov_ss_blocking": 1}},
        {"addr": 0x1000, "width": 64},
        {}, {}, {},
    ]


def test_every_op_has_a_spec():
    assert set(OPS) == {"vmxon", "vmxoff", "vmclear", "vmptrld", "vmptrst", "vmread", "vmwrite",
                        "vmlaunch", "vmresume", "vmcall", "invept", "invvpid", "rdmsr", "set_cpu",
                        "mem_write", "mem_read", "guest", "ept_map"}


def test_expect_normalized():
    steps = parse_steps("""
        [[step]]
        op = "vmxon"
        addr = 0
        expect = { outcome = "fault", fault = "gp" }
        [[step]]
        op = "vmlaunch"
        expect = { outcome = "entry_failed", exit_reason = 0x80000021, qualification = "4", check = "GUEST_RFLAGS_BIT1", cycles = 12 }
        [[step]]
        op = "vmread"
        field = "GUEST_RIP"
        expect = { outcome = "succeed", value = "0xffffffffffffffff" }
        [[step]]
        op = "vmclear"
        addr = 3
        expect = { outcome = "fail_valid", error = 2 }
        [[step]]
        op = "vmxoff"
        expect = { fault = "UD" }
        [[step]]
        op = "vmxoff"
        expect = { outcome = "exit", exit_reason = 26, qualification = 0 }
    """)
    assert [s.expect for s in steps] == [
        {"outcome": "fault", "fault": "GP"},
        {"outcome": "entry_failed", "exit_reason": 0x80000021, "qualification": 4,
         "check": "GUEST_RFLAGS_BIT1", "cycles": 12},
        {"outcome": "succeed", "value": (1 << 64) - 1},
        {"outcome": "fail_valid", "error": 2},
        {"fault": "UD"},
        {"outcome": "exit", "exit_reason": 26, "qualification": 0},
    ]


def test_integer_bounds_accepted():
    (step,) = parse_steps("""
        [[step]]
        op = "vmwrite"
        field = 0
        value = 0xffff_ffff_ffff_ffff
    """)
    assert step.args["fields"] == [(0, (1 << 64) - 1)]


# -- errors --------------------------------------------------------------------------------------

ERRORS = [
    # unknown keys, everywhere
    ('stpe = 1\n' + MINIMAL, ["unknown top-level key 'stpe'", "did you mean 'step'"]),
    ('[config]\nrevison_id = 5\n' + MINIMAL, ["[config]: unknown key 'revison_id'",
                                             "did you mean 'revision_id'"]),
    ('[cpu]\ncr3 = 5\n' + MINIMAL, ["[cpu]: unknown key 'cr3'"]),
    ('[[memory]]\naddr = 0\nu32 = [1]\nsize = 4\n' + MINIMAL, ["[[memory]] 1: unknown key 'size'"]),
    ('[[step]]\nop = "vmxoff"\n[[step]]\nop = "vmwrite"\nfeild = "GUEST_RIP"\nvalue = 1\n',
     ["step 2 (vmwrite): unknown key 'feild'", "did you mean 'field'"]),
    ('[[step]]\nop = "vmxon"\naddr = 0\nvalue = 1\n', ["step 1 (vmxon): unknown key 'value'"]),
    ('[[step]]\nop = "vmptrst"\naddr = 0\n', ["step 1 (vmptrst): unknown key 'addr'"]),
    ('[[step]]\nop = "vmread"\nfield = 0\nexpect = { vale = 1 }\n',
     ["step 1 (vmread): expect: unknown key 'vale'", "did you mean 'value'"]),
    ('[config]\nfeatures = { vpdi = false }\n' + MINIMAL,
     ["[config]: unknown feature 'vpdi'", "did you mean 'vpid'"]),
    # ops
    ('[[step]]\nop = "vmxoff"\n' * 4 + '[[step]]\nop = "vmlanch"\n',
     ["step 5: unknown op 'vmlanch' (did you mean 'vmlaunch'?)"]),
    ('[[step]]\nop = "frobnicate"\n', ["step 1: unknown op 'frobnicate'"]),
    ('[[step]]\naddr = 0\n', ["step 1: missing required key 'op'"]),
    ('[[step]]\nop = 3\n', ["step 1: 'op': expected a string"]),
    # fields
    ('[[step]]\nop = "vmxoff"\n[[step]]\nop = "vmwrite"\nfield = "GUEST_CRO"\nvalue = 1\n',
     ["step 2 (vmwrite): field 'GUEST_CRO': unknown VMCS field", "GUEST_CR0"]),
    ('[[step]]\nop = "vmwrite"\nfields = { GUEST_RIP = 1, GUEST_RPI = 2 }\n',
     ["step 1 (vmwrite): field 'GUEST_RPI'"]),
    ('[[step]]\nop = "vmread"\nfield = "GUEST_CS_LIMIT_HIGH"\n',
     ["step 1 (vmread): field 'GUEST_CS_LIMIT_HIGH'", "high half"]),
    ('[[step]]\nop = "vmread"\nfield = true\n', ["step 1 (vmread): 'field': expected a field name"]),
    ('[[step]]\nop = "vmread"\nfield = 0x1_0000_0000_0000_0000\n',
     ["step 1 (vmread)", "wider than 64 bits"]),
    # integers
    ('[[step]]\nop = "vmwrite"\nfield = "GUEST_RIP"\nvalue = 0x1_0000_0000_0000_0000\n',
     ["step 1 (vmwrite): 'value'", "wider than 64 bits"]),
    ('[[step]]\nop = "vmwrite"\nfield = "GUEST_RIP"\nvalue = "0x10000000000000000"\n',
     ["step 1 (vmwrite): 'value'", "wider than 64 bits"]),
    ('[[step]]\nop = "vmwrite"\nfields = { GUEST_RIP = 0x1_0000_0000_0000_0000 }\n',
     ["step 1 (vmwrite): 'fields.GUEST_RIP'", "wider than 64 bits"]),
    ('[[step]]\nop = "vmxon"\naddr = -1\n', ["step 1 (vmxon): 'addr'", "negative"]),
    ('[[step]]\nop = "vmxon"\naddr = true\n', ["step 1 (vmxon): 'addr': expected an integer"]),
    ('[[step]]\nop = "vmxon"\naddr = "0x1g"\n', ["step 1 (vmxon): 'addr': expected an integer"]),
    ('[[step]]\nop = "vmxon"\naddr = 1.5\n', ["step 1 (vmxon): 'addr': expected an integer"]),
    ('[[step]]\nop = "rdmsr"\nmsr = 0x1_0000_0000\n', ["step 1 (rdmsr): 'msr'", "wider than 32 bits"]),
    ('[[step]]\nop = "invvpid"\ntype = 1\nvpid = 0x10000\n', ["step 1 (invvpid): 'vpid'", "16 bits"]),
    ('[[step]]\nop = "invvpid"\ntype = 1\nvpid = 1\ndescriptor_reserved = 0x1_0000_0000_0000\n',
     ["step 1 (invvpid): 'descriptor_reserved'", "48 bits"]),
    ('[[step]]\nop = "set_cpu"\ncpl = 4\n', ["step 1 (set_cpu): 'cpl'", "0 … 3"]),
    ('[cpu]\ncs_l = 2\n' + MINIMAL, ["[cpu]: 'cs_l'"]),
    ('[cpu]\ncr0 = false\n' + MINIMAL, ["[cpu]: 'cr0': expected an integer"]),
    # missing operands and shapes
    ('[[step]]\nop = "vmxoff"\n[[step]]\nop = "vmxon"\n', ["step 2 (vmxon): missing required key 'addr'"]),
    ('[[step]]\nop = "invept"\ntype = 1\n', ["step 1 (invept): missing required key 'eptp'"]),
    ('[[step]]\nop = "vmread"\n', ["step 1 (vmread): missing required key 'field'"]),
    ('[[step]]\nop = "mem_read"\naddr = 0\n', ["step 1 (mem_read): missing required key 'width'"]),
    ('[[step]]\nop = "vmwrite"\nfield = "GUEST_RIP"\n', ["step 1 (vmwrite): missing required key 'value'"]),
    ('[[step]]\nop = "vmwrite"\nvalue = 1\n', ["step 1 (vmwrite): missing required key 'field'"]),
    ('[[step]]\nop = "vmwrite"\n', ["step 1 (vmwrite): missing required key"]),
    ('[[step]]\nop = "vmwrite"\nfield = "GUEST_RIP"\nvalue = 1\nfields = { GUEST_RSP = 2 }\n',
     ["step 1 (vmwrite): give either 'field' + 'value' or 'fields', not both"]),
    ('[[step]]\nop = "vmwrite"\nfields = {}\n', ["step 1 (vmwrite): 'fields'"]),
    ('[[step]]\nop = "set_cpu"\n', ["step 1 (set_cpu): needs at least one of"]),
    ('[[step]]\nop = "mem_write"\naddr = 0\n', ["step 1 (mem_write): needs exactly one of", "got none"]),
    ('[[step]]\nop = "mem_write"\naddr = 0\nu8 = [1]\nhex = "01"\n',
     ["step 1 (mem_write): needs exactly one of", "'u8' and 'hex'"]),
    ('[[step]]\nop = "mem_write"\naddr = 0xffff_ffff_ffff_ffff\nu16 = [1]\n',
     ["step 1 (mem_write): 'u16'", "64-bit address space"]),
    ('[[step]]\nop = "mem_read"\naddr = 0\nwidth = 12\n', ["step 1 (mem_read): 'width'", "8, 16, 32, 64"]),
    ('[[memory]]\naddr = 0\nu8 = [256]\n' + MINIMAL, ["[[memory]] 1: 'u8[0]'", "8 bits"]),
    ('[[memory]]\naddr = 0\nu32 = []\n' + MINIMAL, ["[[memory]] 1: 'u32'", "non-empty"]),
    ('[[memory]]\naddr = 0\nhex = "123"\n' + MINIMAL, ["[[memory]] 1: 'hex'", "hex digits"]),
    ('[[memory]]\nu8 = [1]\n' + MINIMAL, ["[[memory]] 1: missing required key 'addr'"]),
    # expect
    ('[[step]]\nop = "vmxoff"\nexpect = { outcome = "sucess" }\n',
     ["step 1 (vmxoff): expect: 'outcome'", "did you mean 'succeed'"]),
    ('[[step]]\nop = "vmxoff"\nexpect = { fault = "PF" }\n', ["step 1 (vmxoff): expect: 'fault'"]),
    ('[[step]]\nop = "vmxoff"\nexpect = { outcome = "succeed", fault = "UD" }\n',
     ["step 1 (vmxoff): expect: 'fault' contradicts outcome 'succeed'", "only fault reports it"]),
    ('[[step]]\nop = "vmxoff"\nexpect = { outcome = "fail_invalid", error = 15 }\n',
     ["step 1 (vmxoff): expect: 'error' contradicts outcome 'fail_invalid'", "only fail_valid"]),
    ('[[step]]\nop = "vmxoff"\nexpect = { outcome = "fail_invalid", error = 0 }\n',
     ["step 1 (vmxoff): expect: 'error' contradicts outcome 'fail_invalid'"]),
    ('[[step]]\nop = "vmread"\nfield = 0\nexpect = { outcome = "fail_valid", error = 12, value = 0 }\n',
     ["step 1 (vmread): expect: 'value' contradicts outcome 'fail_valid'"]),
    ('[[step]]\nop = "vmlaunch"\nexpect = { outcome = "entered", exit_reason = 33 }\n',
     ["expect: 'exit_reason' contradicts outcome 'entered'", "only exit or entry_failed"]),
    ('[[step]]\nop = "vmxoff"\nexpect = { error = 0x1_0000_0000 }\n', ["expect: 'error'", "32 bits"]),
    ('[[step]]\nop = "vmxoff"\nexpect = { check = 3 }\n', ["expect: 'check': expected a string"]),
    ('[[step]]\nop = "vmxoff"\nexpect = "succeed"\n', ["step 1 (vmxoff): 'expect' must be a table"]),
    ('[[step]]\nop = "vmxoff"\ncomment = 3\n', ["step 1 (vmxoff): 'comment': expected a string"]),
    # config values
    ('[config]\nmemory_latency = 65\n' + MINIMAL, ["[config]: 'memory_latency'", "0 … 64"]),
    ('[config]\nvmcs_cache_slots = 0\n' + MINIMAL, ["[config]: 'vmcs_cache_slots'"]),
    ('[config]\nmaxphyaddr = 60\n' + MINIMAL, ["[config]: 'maxphyaddr'", "32 … 52"]),
    ('[config]\nrevision_id = 0\n' + MINIMAL, ["[config]: 'revision_id'"]),
    ('[config]\nfeatures = { vpid = 0 }\n' + MINIMAL, ["[config]: feature 'vpid': expected true or false"]),
    ('[config]\nfeatures = { seam = true }\n' + MINIMAL, ["[config]: ", "seam"]),
    ('[config]\nmsr = { x482 = 0 }\n' + MINIMAL, ["[config]: msr key 'x482'"]),
    ('[config]\nmsr = { 0x482 = 0x1_0000_0000_0000_0000 }\n' + MINIMAL,
     ["[config]: 'msr.0x482'", "wider than 64 bits"]),
    ('[config]\nmsr = { 0x4a0 = 0 }\n' + MINIMAL, ["[config]: ", "0x4a0", "not a VMX capability MSR"]),
    ('[config]\nmsr = { 0x480 = 0 }\n' + MINIMAL, ["[config]: ", "revision identifier"]),
    ('config = 1\n' + MINIMAL, ["'config' must be a table"]),
    # top level
    ('arch = "arm"\n' + MINIMAL, ["'arch': must be one of vmx, svm"]),
    ('name = 1\n' + MINIMAL, ["'name': expected a string"]),
    ('name = "x"\n', ["no [[step]] entries"]),
    ('[step]\nop = "vmxoff"\n', ["'step' must be an array of tables ([[step]])"]),
    ('memory = [1]\n' + MINIMAL, ["'memory' must be an array of tables"]),
]


@pytest.mark.parametrize("text, fragments", ERRORS, ids=[f"error{i}" for i in range(len(ERRORS))])
def test_errors(text, fragments):
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, source="case.toml")
    message = str(info.value)
    assert message.startswith("case.toml: ")
    for fragment in fragments:
        assert fragment in message


def test_toml_syntax_error_names_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text('[[step]]\nop = "vmxoff\n')
    with pytest.raises(ScenarioError, match=r"broken\.toml: TOML syntax error"):
        load_scenario(path)


def test_unreadable_file(tmp_path):
    with pytest.raises(ScenarioError, match="missing.toml: cannot read"):
        load_scenario(tmp_path / "missing.toml")


def test_scenario_error_is_exception():
    assert issubclass(ScenarioError, Exception)


# -- the examples --------------------------------------------------------------------------------

def test_examples_exist():
    names = {p.name for p in EXAMPLE_FILES}
    assert {"vmxon_blog.toml", "plan9_vmxstart.toml", "linux_nmiexits.toml",
            "palacios_init_vmcs_bios.toml", "vmcs_cache.toml", "vmwrite_readonly.toml"} <= names


@pytest.mark.parametrize("path", VMX_EXAMPLE_FILES, ids=lambda p: p.name)
def test_example_parses(path):
    s = load_scenario(path)
    assert s.arch == "vmx" and s.description and s.steps
    assert len(s.steps) <= 150          # at most a few seconds to simulate


@pytest.mark.parametrize("path", VMX_EXAMPLE_FILES, ids=lambda p: p.name)
def test_example_vmx_steps_have_expectations(path):
    for step in load_scenario(path).steps:
        if step.op not in ("set_cpu", "mem_write", "ept_map"):
            assert step.expect, f"{path.name}: {step.label} has no expect"


@pytest.mark.parametrize("path", VMX_EXAMPLE_FILES, ids=lambda p: p.name)
def test_example_rdmsr_values_match_capabilities(path):
    """The literal MSR values in the examples are those of the scenario's configuration."""
    s = load_scenario(path)
    caps = s.config.capabilities()
    for step in s.steps:
        if step.op == "rdmsr":
            value = caps.rdmsr(step.args["msr"])
            if value is None:
                assert step.expect == {"outcome": "fault", "fault": "GP"}, step.label
            else:
                assert step.expect.get("value") == value, step.label


def test_examples_readme_covers_every_file():
    readme = (EXAMPLES / "README.md").read_text()
    for path in EXAMPLE_FILES:
        assert f"`{path.name}`" in readme
