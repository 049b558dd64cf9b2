"""Build the SoC firmware: generated headers, then riscv64-unknown-elf-gcc with picolibc.

The headers ``hwvirt_regs.h`` (register map and struct bit positions) and ``hwvirt_names.h`` (VMCS
field encodings, check catalogue, error and outcome names) are generated from the Amaranth design
(:mod:`fpga.regmap`) into the build directory, beside the objects, the ELF, the raw image and a
listing. Nothing generated lands in the source tree.

Toolchain (Debian): ``apt-get install gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf``.
The compiler can be overridden with ``$RISCV_PREFIX`` (default ``riscv64-unknown-elf-``).

Usage: ``python -m hwvirt.fpga.build_firmware [--out DIR]`` prints the image path and size.
"""

import hashlib
import os
import shutil
import subprocess
from pathlib import Path


from .regmap import c_header, c_names_header


__all__ = ["FIRMWARE_DIR", "SOURCES", "toolchain_available", "generate_headers", "build_firmware"]

FIRMWARE_DIR = Path(__file__).resolve().parent / "firmware"
SOURCES = ("start.S", "main.c", "hv.c", "plan9.c", "linux_first_run.c")
CFLAGS = ("-march=rv32i", "-mabi=ilp32", "-Os", "-g", "-Wall", "-Wextra", "-Werror", "-std=c11",
          "-ffunction-sections", "-fdata-sections", "--specs=picolibc.specs")


def _prefix():
    return os.environ.get("RISCV_PREFIX", "riscv64-unknown-elf-")


def toolchain_available():
    """Whether the RISC-V compiler and picolibc are installed."""
    gcc = shutil.which(_prefix() + "gcc")
    if gcc is None:
        return False
    specs = subprocess.run([gcc, "-print-file-name=picolibc.specs"], capture_output=True, text=True)
    return specs.returncode == 0 and Path(specs.stdout.strip()).is_absolute()


def _sys_defines():
    from .soc import SYS_BASE, SYS_REGISTERS
    return [("HV_" + name, SYS_BASE + offset, doc) for name, offset, doc in SYS_REGISTERS]


def generate_headers(out_dir, unit=None):
    """Write ``hwvirt_regs.h`` and ``hwvirt_names.h`` for ``unit`` (default: ``VMCSUnit()``)."""
    from hwvirt.hdl.vmcs_unit import VMCSUnit
    from .regmap import unit_register_map
    from .soc import UNIT_BASE

    if unit is None:
        unit = VMCSUnit()
        unit._MustUse__silence = True        # only its signature is needed here
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    regs = c_header(unit_register_map(unit), unit_base=UNIT_BASE, sys_defines=_sys_defines())
    names = c_names_header(unit.capabilities)
    for name, text in (("hwvirt_regs.h", regs), ("hwvirt_names.h", names)):
        path = out_dir / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    return out_dir


def _digest(ram_size, headers_dir):
    h = hashlib.sha256(repr((ram_size, CFLAGS, _prefix())).encode())
    for path in sorted(FIRMWARE_DIR.iterdir()):
        if path.is_file():
            h.update(path.name.encode() + path.read_bytes())
    for name in ("hwvirt_regs.h", "hwvirt_names.h"):
        h.update((Path(headers_dir) / name).read_bytes())
    return h.hexdigest()[:16]


def build_firmware(out_dir=None, *, ram_size=64 * 1024, unit=None):
    """Compile and link the firmware; return the path of the raw RAM image (``firmware.bin``).

    The build is skipped when the sources, the generated headers and the options are unchanged.
    """
    from hwvirt.sim.toolchain import build_root

    if not toolchain_available():
        raise RuntimeError("the firmware needs riscv64-unknown-elf-gcc and picolibc: "
                           "apt-get install gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf")
    out_dir = Path(out_dir) if out_dir is not None else build_root() / "fpga" / "firmware"
    generate_headers(out_dir, unit)
    stamp = out_dir / "firmware.stamp"
    image = out_dir / "firmware.bin"
    digest = _digest(ram_size, out_dir)
    if image.exists() and stamp.exists() and stamp.read_text() == digest:
        return image
    prefix = _prefix()
    elf = out_dir / "firmware.elf"
    cmd = [prefix + "gcc", *CFLAGS, "-nostartfiles", "-I", str(out_dir), "-I", str(FIRMWARE_DIR),
           "-T", str(FIRMWARE_DIR / "link.ld"), f"-Wl,--defsym=RAM_SIZE={ram_size}",
           f"-Wl,-Map={out_dir / 'firmware.map'}", "-o", str(elf),
           *(str(FIRMWARE_DIR / s) for s in SOURCES)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"firmware build failed:\n{' '.join(cmd)}\n{result.stdout}{result.stderr}")
    subprocess.run([prefix + "objcopy", "-O", "binary", str(elf), str(image)], check=True)
    with open(out_dir / "firmware.lst", "w") as listing:
        subprocess.run([prefix + "objdump", "-d", str(elf)], stdout=listing, check=True)
    if image.stat().st_size > ram_size:
        raise RuntimeError(f"the firmware image ({image.stat().st_size} bytes) exceeds the RAM ({ram_size})")
    stamp.write_text(digest)
    return image


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="build directory (default: build/fpga/firmware)")
    parser.add_argument("--ram-size", type=int, default=64 * 1024)
    args = parser.parse_args(argv)
    image = build_firmware(args.out, ram_size=args.ram_size)
    print(f"{image} ({image.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
