"""The whole SoC on Icarus Verilog through cocotb: firmware, Verilog, compile, run, UART text back.

:func:`run_soc` builds the firmware (:mod:`fpga.build_firmware`), exports the SoC with the image in
its RAM to Verilog (with the Icarus start-up rewrite of :func:`hwvirt.sim.verilog.icarus_safe`),
compiles it together with ``picorv32.v`` from the PicoRV32 package, and runs the cocotb bench
:mod:`hwvirt.sim.soc_bench`. Builds are kept under ``build/fpga/icarus/<digest>`` and reused while the
gateware, the firmware and the options are unchanged. ``waves=True`` (or ``$HWVIRT_WAVES=1`` in the
tests) writes an FST waveform and a GTKWave save file beside it.

Usage: ``python -m hwvirt.fpga.sim_icarus [--boot-sel N] [--waves]`` prints the firmware's UART output.
"""

import hashlib
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path


__all__ = ["SIM_UART_DIVISOR", "SoCRun", "build_soc_icarus", "run_soc"]

#: UART divisor in simulation (clock cycles per bit): short, so that printing costs little.
SIM_UART_DIVISOR = 4
TOP = "hwvirt_soc"


@dataclass
class SoCRun:
    how: str            # "halted", "trap" or "timeout"
    exit_code: object   # the HALT code, or None
    cycles: int
    wall_s: float
    uart: str

    @property
    def cycles_per_second(self):
        return self.cycles / self.wall_s if self.wall_s else float("inf")


def _digest(image, waves):
    from hwvirt.hdl import SOURCE_DIGEST
    h = hashlib.sha256(image + repr((waves, SIM_UART_DIVISOR, SOURCE_DIGEST)).encode())
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()[:16]


def build_soc_icarus(*, waves=False, ram_size=64 * 1024):
    """Build firmware, Verilog and the Icarus simulation (once per digest); return the build dir."""
    from cocotb_tools.runner import get_runner
    from hwvirt.sim.icarus import _locked
    from hwvirt.sim.toolchain import build_root
    from hwvirt.sim.verilog import icarus_safe
    from .build_firmware import build_firmware
    from .soc import SoC, picorv32_source

    image = build_firmware(ram_size=ram_size).read_bytes()
    build_dir = build_root() / "fpga" / "icarus" / (_digest(image, waves) + ("-waves" if waves else ""))
    with _locked(build_dir.with_suffix(".lock")):
        source = build_dir / f"{TOP}.v"
        if not source.exists():
            from amaranth.back import verilog
            from hwvirt.sim.toolchain import use_builtin_yosys
            use_builtin_yosys()
            build_dir.mkdir(parents=True, exist_ok=True)
            soc = SoC(image, ram_size=ram_size, uart_divisor=SIM_UART_DIVISOR)
            text = icarus_safe(verilog.convert(soc, name=TOP, emit_src=False))
            (build_dir / "picorv32.v").write_text(picorv32_source())
            source.with_suffix(".tmp").write_text(text)
            source.with_suffix(".tmp").rename(source)
        get_runner("icarus").build(
            sources=[source, build_dir / "picorv32.v"], hdl_toplevel=TOP, build_dir=build_dir,
            timescale=("1ns", "1ps"), waves=waves, always=False, log_file=build_dir / "build.log")
    return build_dir


def run_soc(*, boot_sel=0, max_cycles=3_000_000, waveform=None, ram_size=64 * 1024):
    """Run the firmware with the given program selection; return a :class:`SoCRun`."""
    from cocotb_tools.runner import get_runner

    waves = waveform is not None
    build_dir = build_soc_icarus(waves=waves, ram_size=ram_size)
    with tempfile.TemporaryDirectory(prefix="hwvirt-soc-") as tmp:
        tmp = Path(tmp)
        job = {"boot_sel": boot_sel, "uart_divisor": SIM_UART_DIVISOR, "max_cycles": max_cycles,
               "result": str(tmp / "result.json")}
        (tmp / "job.json").write_text(json.dumps(job))
        log = tmp / "test.log"
        try:
            get_runner("icarus").test(
                hdl_toplevel=TOP, hdl_toplevel_lang="verilog", test_module="hwvirt.sim.soc_bench",
                build_dir=build_dir, test_dir=tmp, waves=waves,
                extra_env={"HWVIRT_SOC_JOB": str(tmp / "job.json")}, log_file=log)
        except SystemExit:
            pass  # reported below, with the log
        if not (tmp / "result.json").exists():
            tail = log.read_text()[-3000:] if log.exists() else "(no log)"
            raise RuntimeError(f"the cocotb run of the SoC failed:\n{tail}")
        result = json.loads((tmp / "result.json").read_text())
        if waves:
            waveform = Path(waveform)
            waveform.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(build_dir / f"{TOP}.fst", waveform)
            _write_gtkw(waveform)
    return SoCRun(**result)


_GTKW_SIGNALS = [
    "clk", "rst", "uart_tx", "halted", "trap", "in_vmx", "non_root",
    "cpu.bus__valid", "cpu.bus__addr[31:0]", "cpu.bus__wstrb[3:0]", "cpu.bus__ready",
    "mmio.unit.cmd__valid", "mmio.unit.cmd__ready", "mmio.unit.resp__valid",
    "mmio.unit.bus__cyc", "mmio.unit.bus__adr[35:0]", "mmio.unit.bus__we", "mmio.unit.bus__ack",
]


def _write_gtkw(waveform):
    lines = [f'[dumpfile] "{waveform.resolve()}"', "[timestart] 0"]
    lines += [f"{TOP}.{name}" for name in _GTKW_SIGNALS]
    waveform.with_suffix(".gtkw").write_text("\n".join(lines) + "\n")


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(description="Run the SoC firmware on Icarus Verilog.")
    parser.add_argument("--boot-sel", type=int, default=0, help="0: both programs, 1: Plan 9, 2: Linux")
    parser.add_argument("--max-cycles", type=int, default=3_000_000)
    parser.add_argument("--waves", metavar="FILE.fst", help="write a waveform (and a .gtkw beside it)")
    args = parser.parse_args(argv)
    run = run_soc(boot_sel=args.boot_sel, max_cycles=args.max_cycles, waveform=args.waves)
    sys.stdout.write(run.uart)
    print(f"[{run.how}, exit code {run.exit_code}, {run.cycles} cycles in {run.wall_s:.1f} s: "
          f"{run.cycles_per_second:.0f} cycles/s]")
    return 0 if run.how == "halted" and run.exit_code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
