/* The hwvirt SoC firmware: a banner, then the programs chosen by the BOOT_SEL inputs —
 * 0: both (the Linux module's failing first run, then Plan 9's set-up and launch),
 * 1: Plan 9 only, 2: the Linux first run only. main's return value (the number of unexpected
 * outcomes) becomes the exit code of the HALT register. */
#include "hv.h"
#include "programs.h"

int main(void)
{
    con_puts("\nhwvirt SoC: unit ");
    con_puts(HV_REG(HV_ID) == HV_UNIT_ID ? "HVMX" : "MISSING");
    con_puts(", ");
    con_dec(HV_REG(HV_BLOCKS));
    con_puts(" register blocks, clock ");
    con_dec(HV_REG(HV_SYS_CLOCK_HZ));
    con_puts(" Hz\n");

    /* The x86 state the unit sees: a 64-bit kernel at CPL 0 (the scenario runner's defaults),
       with CR4.VMXE off until a program sets it. */
    hv_cpu.cr0 = 0x80050033;
    hv_cpu.cr4 = 0x06b0;
    hv_cpu.efer = 0xd01;
    hv_cpu.rflags = 0x2;
    hv_cpu.feature_control = 0x5;
    hv_cpu.cpl = 0;
    hv_cpu.cs_l = 1;
    hv_cpu.mov_ss_blocking = 0;
    hv_cpu_load();

    uint32_t sel = HV_REG(HV_SYS_BOOT_SEL) & 3;
    uint64_t start = cycles();
    int failures = 0;
    if (sel == 0 || sel == 2)
        failures += linux_first_run_main();
    if (sel == 0 || sel == 1)
        failures += plan9_main();
    con_puts("done: ");
    con_dec(failures);
    con_puts(" unexpected outcome(s), ");
    con_dec((uint32_t)(cycles() - start));
    con_puts(" cycles\n");
    return failures;
}
