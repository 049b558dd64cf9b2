"""The FPGA part of hwvirt: the VMX unit beside a PicoRV32 soft core running a mini hypervisor.

* :mod:`.regmap` — the unit's MMIO register map, derived from the unit's signature and ``data``
  layouts, and the C headers generated from it;
* :mod:`.soc` — the SoC (PicoRV32, RAM shared with the unit's bus master, UART, cycle counter);
* :mod:`.build_firmware` — the firmware build (riscv64-unknown-elf-gcc + picolibc);
* :mod:`.build` — bitstreams for ULX3S-85F and iCEBreaker with amaranth-boards and YoWASP.
"""
