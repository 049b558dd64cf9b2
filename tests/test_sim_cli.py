"""The ``hwvirt`` command line: reports, exit statuses, JSON, waveforms, catalogue, export."""

import json
import textwrap

import pytest

from hwvirt.sim.cli import main
from hwvirt.sim.runner import STEP_KEYS


PASSING = textwrap.dedent("""
    name = "cli"
    [[memory]]
    addr = 0x1000
    u32 = [4]
    [[step]]
    op = "vmxon"
    addr = 0x1000
    expect = { outcome = "succeed" }
    [[step]]
    op = "vmptrst"
    expect = { value = 0xffffffffffffffff }
    [[step]]
    op = "vmread"
    field = "GUEST_CR0"
    expect = { outcome = "fail_invalid" }
""")


@pytest.fixture
def scenario_file(tmp_path):
    def write(text, name="s.toml"):
        path = tmp_path / name
        path.write_text(text)
        return path
    return write


def test_run_passes_with_json_and_waveform(scenario_file, tmp_path, capsys):
    path = scenario_file(PASSING)
    out_json, vcd = tmp_path / "r.json", tmp_path / "w" / "r.vcd"
    assert main(["run", str(path), "--json", str(out_json), "--vcd", str(vcd)]) == 0
    text = capsys.readouterr().out
    assert "PASS: 3/3 steps" in text and "value 0xffffffffffffffff" in text
    report = json.loads(out_json.read_text())
    assert set(report) == {"scenario", "backend", "passed", "total_cycles", "steps"}
    assert report["scenario"] == "cli" and report["backend"] == "pysim" and report["passed"]
    assert [list(step) for step in report["steps"]] == [list(STEP_KEYS)] * 3
    assert report["total_cycles"] == sum(step["cycles"] for step in report["steps"]) > 0
    assert vcd.stat().st_size > 0
    gtkw = vcd.with_suffix(".gtkw").read_text()
    assert "sequencer" in gtkw and "bus" in gtkw


def test_failed_expectation_exits_1_and_names_it(scenario_file, capsys):
    path = scenario_file(PASSING.replace('expect = { outcome = "succeed" }',
                                         'expect = { outcome = "fail_invalid" }'))
    assert main(["run", str(path)]) == 1
    out = capsys.readouterr().out
    assert "EXPECTATION FAILED: outcome: expected 'fail_invalid', got 'succeed'" in out
    assert out.splitlines()[-1].startswith("FAIL: 2/3")


@pytest.mark.parametrize("step, message", [
    ('op = "vmlanch"', "step 1: unknown op 'vmlanch'"),
    ('op = "vmread"\nfield = "GUEST_CRO"', "step 1 (vmread): field 'GUEST_CRO'"),
    ('op = "vmxon"\naddr = 0x10000000000000000', "step 1 (vmxon)"),
    ('op = "vmxon"', "step 1 (vmxon): missing"),
    ('op = "vmxoff"\nexpect = { outcom = "succeed" }', "step 1 (vmxoff): expect: unknown key 'outcom'"),
])
def test_bad_scenario_exits_2_naming_step_and_key(scenario_file, capsys, step, message):
    path = scenario_file(f"[[step]]\n{step}\n")
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and str(path) in err


def test_fields_caps_and_config_overrides(scenario_file, capsys):
    assert main(["fields"]) == 0
    out = capsys.readouterr().out
    assert "0x6800    GUEST_CR0" in out and "VIRTUAL_PROCESSOR_ID" in out
    config = scenario_file('[config]\nfeatures = { vpid = false }\nmsr = { 0x485 = 0x401e5 }\n', "c.toml")
    assert main(["fields", "--config", str(config)]) == 0
    assert "VIRTUAL_PROCESSOR_ID" not in capsys.readouterr().out
    assert main(["caps", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "0x485  IA32_VMX_MISC                  0x00000000000401e5" in out
    assert "IA32_VMX_TRUE_PINBASED_CTLS" in out


def test_generate_writes_reproducible_verilog(tmp_path, capsys):
    a, b = tmp_path / "a.v", tmp_path / "b.v"
    assert main(["generate", "-o", str(a)]) == 0
    assert main(["generate", "-o", str(b)]) == 0
    assert a.read_text() == b.read_text()
    assert "module hwvirt_unit(" in a.read_text() and "// Ports:" in a.read_text()
