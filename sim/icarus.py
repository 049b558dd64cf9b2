"""The Icarus Verilog backend: the unit's generated Verilog, driven by cocotb.

The scenario is handed to the cocotb process as a pickle, the rows come back as JSON. One Verilog
build per hardware configuration is kept under ``<build>/icarus/<key>`` and reused.
"""

import fcntl
import hashlib
import json
import pickle
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .toolchain import VERILOG_TOP, build_root
from .verilog import convert_unit, icarus_safe


__all__ = ["run_icarus", "build_icarus", "icarus_available"]


def icarus_available():
    return shutil.which("iverilog") is not None and shutil.which("vvp") is not None


def _gateware_digest():
    """The digest of the gateware sources the design in memory was built from: a changed design is
    never simulated from a stale build (see :data:`hwvirt.hdl.SOURCE_DIGEST`)."""
    from hwvirt.hdl import SOURCE_DIGEST
    return SOURCE_DIGEST


def _config_key(scenario, waves):
    caps = scenario.config.capabilities()
    text = repr((sorted(caps.msrs.items()), caps.maxphyaddr, scenario.config.vmcs_cache_slots, waves,
                 _gateware_digest()))
    return hashlib.sha256(text.encode()).hexdigest()[:16] + ("-waves" if waves else "")


@contextmanager
def _locked(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def build_icarus(scenario, *, waves=False):
    """Generate (once) and compile the Verilog for a scenario's configuration; return the build dir."""
    from cocotb_tools.runner import get_runner
    from .runner import build_unit

    build_dir = build_root() / "icarus" / _config_key(scenario, waves)
    with _locked(build_dir.with_suffix(".lock")):
        source = build_dir / f"{VERILOG_TOP}.v"
        if not source.exists():
            build_dir.mkdir(parents=True, exist_ok=True)
            text = icarus_safe(convert_unit(build_unit(scenario)))
            source.with_suffix(".tmp").write_text(text)
            source.with_suffix(".tmp").rename(source)
        get_runner("icarus").build(
            sources=[source], hdl_toplevel=VERILOG_TOP, build_dir=build_dir,
            timescale=("1ns", "1ps"), waves=waves, always=False, log_file=build_dir / "build.log")
    return build_dir


def run_icarus(scenario, *, waveform=None):
    """Run a scenario on Icarus Verilog; return the report rows (same form as the pysim backend)."""
    from cocotb_tools.runner import get_runner

    if not icarus_available():
        raise RuntimeError("Icarus Verilog (iverilog, vvp) is not installed: apt-get install iverilog")
    waves = waveform is not None
    build_dir = build_icarus(scenario, waves=waves)
    with tempfile.TemporaryDirectory(prefix="hwvirt-icarus-") as tmp:
        tmp = Path(tmp)
        with open(tmp / "scenario.pickle", "wb") as f:
            pickle.dump(scenario, f)
        job = {"scenario": str(tmp / "scenario.pickle"), "result": str(tmp / "rows.json")}
        (tmp / "job.json").write_text(json.dumps(job))
        log = tmp / "test.log"
        try:
            get_runner("icarus").test(
                hdl_toplevel=VERILOG_TOP, hdl_toplevel_lang="verilog",
                test_module="hwvirt.sim.cocotb_bench", build_dir=build_dir,
                test_dir=tmp, waves=waves, extra_env={"HWVIRT_JOB": str(tmp / "job.json")},
                log_file=log)
        except SystemExit:
            pass  # reported below, with the log
        if not (tmp / "rows.json").exists():
            tail = log.read_text()[-3000:] if log.exists() else "(no log)"
            raise RuntimeError(f"the cocotb run of {scenario.source} failed:\n{tail}")
        rows = json.loads((tmp / "rows.json").read_text())
        if waves:
            waveform = Path(waveform)
            waveform.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(build_dir / f"{VERILOG_TOP}.fst", waveform)
            _write_gtkw(waveform)
    return rows


_GTKW_SIGNALS = [
    "cmd__valid", "cmd__ready", "cmd__payload[195:0]", "fsm_state", "resp__valid",
    "resp__payload[169:0]", "status[1:0]", "current_vmcs[63:0]", "bus__cyc", "bus__stb", "bus__we",
    "bus__adr", "bus__dat_w[63:0]", "bus__dat_r[63:0]", "bus__ack",
]


def _write_gtkw(waveform):
    lines = [f'[dumpfile] "{waveform.resolve()}"', "[timestart] 0"]
    lines += [f"{VERILOG_TOP}.{name}" for name in _GTKW_SIGNALS]
    waveform.with_suffix(".gtkw").write_text("\n".join(lines) + "\n")
