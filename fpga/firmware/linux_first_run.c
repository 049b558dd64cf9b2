/* Program (b): an entry failure with its diagnostic — the Linux module's first run.
 *
 * Allan Cruse's nmiexits.c (seed: linux-nmiexits-module.txt; examples/linux_nmiexits_first_run.toml)
 * captures the host CR4 *before* it sets CR4.VMXE, so on the first ioctl the VMCS holds
 * HOST_CR4 = 0x06f0 without VMXE, which IA32_VMX_CR4_FIXED0 forbids: VMLAUNCH fails with
 * VMfailValid(8), "VM entry with invalid host-state field(s)". A processor says no more; the unit
 * also names the check that decided it (Result.check, here HOST_CR4_FIXED) and every failing check
 * (the entry_failures port). Like the module, the VMWRITEs come from a table of (encoding, value)
 * pairs; the values are the stand-ins of the example scenario. The program ends with VMCLEAR and
 * VMXOFF, so that another program can run after it. */
#include <string.h>
#include "hv.h"
#include "programs.h"

static uint8_t vmxon_region[4096] HV_PAGES;
static uint8_t guest_vmcs[4096] HV_PAGES;

struct vmcs_entry { uint32_t encoding; uint64_t value; };

/* The module's table (machine.h is not in the seed: its variables' values, in its order). */
static const struct vmcs_entry table[] = {
    {VMCS_GUEST_ES_SELECTOR, 0x2000}, {VMCS_GUEST_CS_SELECTOR, 0x2000}, {VMCS_GUEST_SS_SELECTOR, 0x2000},
    {VMCS_GUEST_DS_SELECTOR, 0x2000}, {VMCS_GUEST_FS_SELECTOR, 0}, {VMCS_GUEST_GS_SELECTOR, 0},
    {VMCS_GUEST_RSP, 0xfffe}, {VMCS_GUEST_RIP, 0x0100}, {VMCS_GUEST_RFLAGS, 0x20002},
    {VMCS_GUEST_ES_BASE, 0x20000}, {VMCS_GUEST_CS_BASE, 0x20000}, {VMCS_GUEST_SS_BASE, 0x20000},
    {VMCS_GUEST_DS_BASE, 0x20000}, {VMCS_GUEST_FS_BASE, 0}, {VMCS_GUEST_GS_BASE, 0},
    {VMCS_GUEST_ES_LIMIT, 0xffff}, {VMCS_GUEST_CS_LIMIT, 0xffff}, {VMCS_GUEST_SS_LIMIT, 0xffff},
    {VMCS_GUEST_DS_LIMIT, 0xffff}, {VMCS_GUEST_FS_LIMIT, 0xffff}, {VMCS_GUEST_GS_LIMIT, 0xffff},
    {VMCS_GUEST_ES_AR_BYTES, 0xf3}, {VMCS_GUEST_CS_AR_BYTES, 0xf3}, {VMCS_GUEST_SS_AR_BYTES, 0xf3},
    {VMCS_GUEST_DS_AR_BYTES, 0xf3}, {VMCS_GUEST_FS_AR_BYTES, 0xf3}, {VMCS_GUEST_GS_AR_BYTES, 0xf3},
    {VMCS_GUEST_CR0, 0x80000031}, {VMCS_GUEST_CR4, 0x2011}, {VMCS_GUEST_CR3, 0x22000},
    {VMCS_VMCS_LINK_POINTER, 0xffffffff}, {VMCS_VMCS_LINK_POINTER + 1, 0xffffffff},   /* full, _HIGH */
    {VMCS_GUEST_IDTR_BASE, 0x114000}, {VMCS_GUEST_GDTR_BASE, 0x114800}, {VMCS_GUEST_LDTR_BASE, 0x114a00},
    {VMCS_GUEST_TR_BASE, 0x114c00}, {VMCS_GUEST_IDTR_LIMIT, 0x7ff}, {VMCS_GUEST_GDTR_LIMIT, 0x17},
    {VMCS_GUEST_LDTR_LIMIT, 0x1f}, {VMCS_GUEST_TR_LIMIT, 0x2088},
    {VMCS_GUEST_LDTR_AR_BYTES, 0x82}, {VMCS_GUEST_TR_AR_BYTES, 0x8b},
    {VMCS_GUEST_LDTR_SELECTOR, 0x10}, {VMCS_GUEST_TR_SELECTOR, 0x08},
    /* host_CR4 was read before set_CR4_vmxe(): VMXE is missing */
    {VMCS_HOST_CR0, 0x80050033}, {VMCS_HOST_CR4, 0x06f0}, {VMCS_HOST_CR3, 0x3c2b4000},
    {VMCS_HOST_TR_SELECTOR, 0x40}, {VMCS_HOST_ES_SELECTOR, 0}, {VMCS_HOST_CS_SELECTOR, 0x10},
    {VMCS_HOST_SS_SELECTOR, 0x18}, {VMCS_HOST_DS_SELECTOR, 0}, {VMCS_HOST_FS_SELECTOR, 0},
    {VMCS_HOST_GS_SELECTOR, 0},
    {VMCS_HOST_GDTR_BASE, 0xffff88000180a000ull}, {VMCS_HOST_IDTR_BASE, 0xffffffff81a1b000ull},
    {VMCS_HOST_TR_BASE, 0xffff880001812040ull}, {VMCS_HOST_FS_BASE, 0x7f3a1c5d6700ull},
    {VMCS_HOST_GS_BASE, 0xffff880001800000ull},
    {VMCS_HOST_IA32_SYSENTER_CS, 0x10}, {VMCS_HOST_IA32_SYSENTER_ESP, 0xffff880001812044ull},
    {VMCS_HOST_IA32_SYSENTER_EIP, 0xffffffff8104c2a0ull}, {VMCS_HOST_RIP, 0xffffffffa00021c0ull},
    {VMCS_HOST_RSP, 0xffff88003c9c3d58ull},
    /* the controls: whole 64-bit MSR-derived values, VMWRITE keeps bits 31:0 */
    {VMCS_PIN_BASED_VM_EXEC_CONTROL, 0xff0000001full}, {VMCS_CPU_BASED_VM_EXEC_CONTROL, 0xfff9fffe2401e1f2ull},
    {VMCS_VM_EXIT_CONTROLS, 0x7fffff00036fffull}, {VMCS_VM_ENTRY_CONTROLS, 0xf3ff000011ffull},
    {VMCS_PAGE_FAULT_ERROR_CODE_MATCH, 0xffffffff}, {VMCS_CR0_GUEST_HOST_MASK, 0x80000021},
    {VMCS_CR4_GUEST_HOST_MASK, 0x2000}, {VMCS_CR0_READ_SHADOW, 0x80000021}, {VMCS_CR4_READ_SHADOW, 0x2000},
    {VMCS_CR3_TARGET_COUNT, 2}, {VMCS_CR3_TARGET_VALUE0, 0x22000}, {VMCS_CR3_TARGET_VALUE1, 0x3c2b4000},
};

static int failures;

static int expect(int outcome, int want, const char *what)
{
    con_puts("linux: ");
    hv_report(what);
    if (outcome != want) {
        con_puts("linux: UNEXPECTED, wanted ");
        con_puts(hv_outcome_names[want]);
        con_putc('\n');
        failures++;
    }
    return outcome;
}

int linux_first_run_main(void)
{
    uint64_t basic, v;
    failures = 0;
    con_puts("== Linux nmiexits module, first run: host CR4 captured before CR4.VMXE ==\n");
    rdmsr(0x480, &basic);
    memset(vmxon_region, 0, sizeof vmxon_region);
    memset(guest_vmcs, 0, sizeof guest_vmcs);
    memcpy(vmxon_region, &basic, 4);
    memcpy(guest_vmcs, &basic, 4);

    hv_cpu.cr4 |= 0x2000;                       /* set_CR4_vmxe(), after host_CR4 was captured */
    hv_cpu_load();
    if (expect(vmxon(PADDR(vmxon_region)), HV_OUTCOME_SUCCEED, "vmxon") != HV_OUTCOME_SUCCEED)
        return failures;
    expect(vmclear(PADDR(guest_vmcs)), HV_OUTCOME_SUCCEED, "vmclear");
    expect(vmptrld(PADDR(guest_vmcs)), HV_OUTCOME_SUCCEED, "vmptrld");

    unsigned bad = 0;
    for (unsigned i = 0; i < sizeof table / sizeof table[0]; i++)
        if (vmwrite(table[i].encoding, table[i].value) != HV_OUTCOME_SUCCEED)
            bad++;
    con_puts("linux: ");
    con_dec(sizeof table / sizeof table[0]);
    con_puts(" vmwrites, ");
    con_dec(bad);
    con_puts(" failed\n");
    failures += bad;

    vmread(VMCS_HOST_CR4, &v);
    con_puts("linux: vmread HOST_CR4 = ");
    con_hex(v, 1);
    con_putc('\n');

    if (expect(vmlaunch(), HV_OUTCOME_FAIL_VALID, "vmlaunch") == HV_OUTCOME_FAIL_VALID) {
        con_puts("linux: VM-instruction error ");
        con_dec(hv_last.error);
        con_puts(", decided by check #");
        con_dec(hv_last.check);
        con_puts(" ");
        con_puts(hv_last.check <= HV_N_CHECKS ? hv_check_names[hv_last.check] : "?");
        con_putc('\n');
        if (hv_last.error != 8)
            failures++;
    }
    hv_report_failures();
    vmread(VMCS_VM_INSTRUCTION_ERROR, &v);
    con_puts("linux: vmread VM_INSTRUCTION_ERROR = ");
    con_dec((uint32_t)v);
    con_putc('\n');

    expect(vmclear(PADDR(guest_vmcs)), HV_OUTCOME_SUCCEED, "vmclear");
    expect(vmxoff(), HV_OUTCOME_SUCCEED, "vmxoff");
    hv_cpu.cr4 &= ~0x2000ull;
    hv_cpu_load();
    return failures;
}
