"""``hwvirt check``: the VMCS linter over scenarios and VMCS images."""

from pathlib import Path

from hwvirt.hdl.capabilities import VMXCapabilities
from hwvirt.hdl.vmcs_fields import BY_NAME
from hwvirt.sim.cli import main

from entry_baseline import baseline


EXAMPLES = Path(__file__).parent.parent / "examples"


def image(tmp_path, fields, extra=""):
    lines = [f"{name} = {value:#x}" for name, value in fields.items()]
    path = tmp_path / "image.toml"
    path.write_text(extra + "[fields]\n" + "\n".join(lines) + "\n")
    return path


def valid_fields():
    caps = VMXCapabilities()
    fields, _ = baseline(caps)
    return {name: value for name, value in fields.items() if caps.field_supported(BY_NAME[name])}


def test_valid_image_passes(tmp_path, capsys):
    assert main(["check", str(image(tmp_path, valid_fields()))]) == 0
    out = capsys.readouterr().out
    assert "step 5 (vmlaunch): entered" in out and "every consistency check passes" in out
    assert out.rstrip().endswith("0 failing checks")


def test_image_lists_every_failing_check_with_fields_and_rules(tmp_path, capsys):
    fields = valid_fields()
    fields["HOST_CR4"] &= ~0x2000                  # VMXE clear: HOST_CR4_FIXED
    fields["GUEST_RFLAGS"] = 0x0                   # bit 1 clear: GUEST_RFLAGS_BIT1
    assert main(["check", str(image(tmp_path, fields))]) == 1
    out = capsys.readouterr().out
    assert "fail_valid error 8" in out
    assert "* HOST_CR4_FIXED" in out                # the one that decided the outcome
    assert f"HOST_CR4 = {fields['HOST_CR4']:#x}" in out
    assert "GUEST_RFLAGS_BIT1" in out and "GUEST_RFLAGS = 0x0" in out
    assert "[SDM vol. 3C §27.2.2]" in out
    assert out.rstrip().endswith("2 failing checks; * marks the one that decided the outcome")


def test_scenario_with_the_linux_first_run(capsys):
    assert main(["check", str(EXAMPLES / "linux_nmiexits_first_run.toml")]) == 1
    out = capsys.readouterr().out
    assert "* HOST_CR4_FIXED" in out and "HOST_CR4 = 0x6f0" in out


def test_bad_image_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text("[fields]\nGUEST_CRO = 1\n")
    assert main(["check", str(path)]) == 2
    assert "GUEST_CRO" in capsys.readouterr().err
    path.write_text("[fields]\nGUEST_CR0 = 1\n[guest]\nx = 1\n")
    assert main(["check", str(path)]) == 2
    assert "unknown top-level key 'guest'" in capsys.readouterr().err


def test_image_with_config_tables(tmp_path, capsys):
    """[config] of an image is the scenario's [config], booleans and nested tables included."""
    fields = valid_fields()
    fields["CPU_BASED_VM_EXEC_CONTROL"] |= 1 << 31    # activate secondary controls …
    fields["SECONDARY_VM_EXEC_CONTROL"] = 1 << 5      # … and enable VPID on a core configured without it
    extra = "[config]\nfeatures = { vpid = false }\nmsr = { 0x485 = 0x600401e5 }\n"
    assert main(["check", str(image(tmp_path, {k: v for k, v in fields.items()
                                               if k != "VIRTUAL_PROCESSOR_ID"}, extra))]) == 1
    out = capsys.readouterr().out
    assert "fail_valid error 7" in out and "* CTL_PROC2_RSVD" in out
