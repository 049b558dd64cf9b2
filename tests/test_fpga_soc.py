"""The whole SoC — PicoRV32, RAM, UART, the VMX unit — on Icarus Verilog through cocotb, running the
firmware of ``fpga/firmware`` and checking the log it prints on the UART.

The quick test runs only the banner (program selection 3: no program), which still needs the core,
the RAM image, the UART and the unit's ID register (~15k cycles, under a minute with the build). The
two programs take about 1.07 million cycles together; Icarus runs this SoC at 2000-8000 cycles/s, so
they are marked slow (about 2-6 minutes). Amaranth's own simulator cannot run the SoC: PicoRV32 is a
Verilog black box, and the rest alone runs at ~1800 cycles/s (see fpga/README.md).

``HWVIRT_WAVES=1`` writes an FST waveform with a GTKWave save file to ``build/fpga/waves/``.
"""

import os
import re

import pytest


from hwvirt.fpga.build_firmware import toolchain_available
from hwvirt.sim.icarus import icarus_available


pytestmark = [
    pytest.mark.icarus,
    pytest.mark.skipif(not icarus_available(), reason="Icarus Verilog is not installed"),
    pytest.mark.skipif(not toolchain_available(), reason="riscv64-unknown-elf-gcc / picolibc not installed"),
]


def _has_picorv32():
    import importlib.util
    return importlib.util.find_spec("pythondata_cpu_picorv32") is not None


pytestmark.append(pytest.mark.skipif(not _has_picorv32(), reason="pythondata-cpu-picorv32 not installed"))


def _run(boot_sel, max_cycles, name):
    from hwvirt.fpga.sim_icarus import run_soc
    from hwvirt.sim.toolchain import build_root
    waveform = None
    if os.environ.get("HWVIRT_WAVES"):
        waveform = build_root() / "fpga" / "waves" / f"{name}.fst"
    run = run_soc(boot_sel=boot_sel, max_cycles=max_cycles, waveform=waveform)
    print(run.uart)
    print(f"[{run.how}, exit code {run.exit_code}, {run.cycles} cycles, {run.wall_s:.1f} s, "
          f"{run.cycles_per_second:.0f} cycles/s]")
    return run


def _lines(text):
    return [line.rstrip("\r") for line in text.split("\n")]


def test_banner():
    run = _run(3, 200_000, "banner")
    assert run.how == "halted" and run.exit_code == 0, run.uart
    lines = _lines(run.uart)
    assert re.fullmatch(r"hwvirt SoC: unit HVMX, \d+ register blocks, clock 25000000 Hz", lines[1])
    assert lines[2].startswith("done: 0 unexpected outcome(s)")


def _expect_in_order(log, patterns):
    """Every pattern matches a line, in order (other lines may come between)."""
    lines = _lines(log)
    i = 0
    for pattern in patterns:
        while i < len(lines) and not re.search(pattern, lines[i]):
            i += 1
        assert i < len(lines), f"no line matching {pattern!r} (in order) in:\n{log}"
        i += 1


LINUX_LOG = [
    r"^== Linux nmiexits module, first run",
    r"^linux: vmxon -> succeed \[\d+ cycles\]$",
    r"^linux: vmclear -> succeed",
    r"^linux: vmptrld -> succeed",
    r"^linux: 76 vmwrites, 0 failed$",
    r"^linux: vmread HOST_CR4 = 0x6f0$",
    r"^linux: vmlaunch -> fail_valid error 8 \(VM entry with invalid host-state field\(s\)\) "
    r"check HOST_CR4_FIXED \(SDM 27\.2\.2\) \[\d+ cycles\]$",
    r"^linux: VM-instruction error 8, decided by check #\d+ HOST_CR4_FIXED$",
    r"^  failing check: HOST_CR4_FIXED$",
    r"^  1 failing check\(s\)$",
    r"^linux: vmread VM_INSTRUCTION_ERROR = 8$",
    r"^linux: vmxoff -> succeed",
]

PLAN9_LOG = [
    r"^== Plan 9 devvmx",
    r"^plan9: rdmsr\(VMX_BASIC_MSR\) = 0x00d8100000000004$",
    r"^plan9: vmxon -> succeed",
    r"^plan9: vmclear -> succeed",
    r"^plan9: vmptrld -> succeed",
    # the control words of examples/plan9_vmxstart.toml, computed from the unit's capability MSRs
    r"^plan9: controls pin 0x1f procb 0xe58065f2 procb2 0xa2 exit 0x36fff entry 0x13ff$",
    r"^plan9: vmread GUEST_CS_LIMIT = 0xffffffff, EPT_POINTER = 0x[0-9a-f]+018, vmptrst = 0x[0-9a-f]+000$",
    r"^plan9: vmlaunch \(as written by the 64-bit kernel\) -> entry_failed reason 0x80000021 qual 0x0 "
    r"check GUEST_IA32E_PG_PAE",
    r"^  failing check: GUEST_IA32E_PG_PAE$",
    r"^plan9: vmwrite VM_ENTRY_CONTROLS without IA-32e mode guest -> succeed",
    r"^plan9: vmlaunch -> entered \[\d+ cycles\]$",
    r"^plan9: status in_vmx 1 non_root 1$",
]


@pytest.mark.slow
def test_both_programs():
    """The Linux module's failing first run (error 8, HOST_CR4_FIXED), then Plan 9's set-up, whose
    64-bit values fail the guest-state checks and whose corrected entry controls enter the guest."""
    run = _run(0, 3_000_000, "both")
    assert run.how == "halted", run.uart
    _expect_in_order(run.uart, LINUX_LOG + PLAN9_LOG + [r"^done: 0 unexpected outcome\(s\)"])
    assert "UNEXPECTED" not in run.uart
    assert run.exit_code == 0


@pytest.mark.slow
def test_entry_failure_program_alone():
    run = _run(2, 2_000_000, "linux")
    assert run.how == "halted" and run.exit_code == 0, run.uart
    _expect_in_order(run.uart, LINUX_LOG)
    assert "Plan 9" not in run.uart
