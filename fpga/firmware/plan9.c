/* Program (a): Plan 9's VMX start-up — vmxstart() and vmcsinit() of devvmx.c (2017, by aiju; see
 * /work/shared/seeds and examples/plan9_vmxstart.toml), in C against the unit, then VMLAUNCH.
 *
 * The control words are computed as Plan 9 computes them, from the capability MSRs the unit reports
 * (RDMSR): start from the allowed-0 half, OR in reserved default-1 bits and the wanted features, AND
 * with the allowed-1 half. Values the seed reads from the running kernel (CR0/CR3/CR4, selectors,
 * the TSS/GDT/IDT addresses, FS/GS base MSRs) are the stand-ins of examples/plan9_vmxstart.toml.
 *
 * The 64-bit kernel asks for an IA-32e mode guest while the guest runs with CR0.PG = 0: the first
 * VMLAUNCH fails its guest-state checks (exit reason 33 | 1 << 31, check GUEST_IA32E_PG_PAE). The one
 * change that makes the entry succeed — no "IA-32e mode guest", as on Plan 9's 32-bit kernel — is
 * made before the second VMLAUNCH, which enters the guest. */
#include <string.h>
#include "hv.h"
#include "programs.h"

enum {
    VMX_BASIC_MSR = 0x480, VMX_PINB_CTLS_MSR = 0x481, VMX_PROCB_CTLS_MSR = 0x482,
    VMX_VMEXIT_CTLS_MSR = 0x483, VMX_VMENTRY_CTLS_MSR = 0x484, VMX_PROCB_CTLS2_MSR = 0x48b,
    VMX_TRUE_PINB_CTLS_MSR = 0x48d, VMX_TRUE_PROCB_CTLS_MSR = 0x48e,
};
#define PINB_EXITIRQ      (1u << 0)
#define PINB_EXITNMI      (1u << 3)
#define PROCB_EXITHLT     (1u << 7)
#define PROCB_EXITMWAIT   (1u << 10)
#define PROCB_EXITMOVDR   (1u << 23)
#define PROCB_EXITIO      (1u << 24)
#define PROCB_EXITMONITOR (1u << 29)
#define PROCB_EXITPAUSE   (1u << 30)
#define PROCB_USECTLS2    (1u << 31)
#define PROCB_EPT         (1u << 1)
#define PROCB_VPID        (1u << 5)
#define PROCB_UNRESTR     (1u << 7)
#define VMEXIT_HOST64     (1u << 9)
#define VMENTRY_GUEST64   (1u << 9)

/* Stand-ins for the running 64-bit kernel (examples/plan9_vmxstart.toml). */
#define KESEL   0x08
#define KDSEL   0x10
#define TSSSEL  0x30
#define M_TSS   0xffffffff80120000ull
#define M_GDT   0xffffffff8011d000ull
#define IDTADDR 0xffffffff80010800ull
static uint64_t getcr0(void) { return hv_cpu.cr0; }
static uint64_t getcr3(void) { return 0x1f0000; }
static uint64_t getcr4(void) { return hv_cpu.cr4; }
static void putcr4(uint64_t v) { hv_cpu.cr4 = v; hv_cpu_load(); }
static uint64_t fsbase_msr = 0, gsbase_msr = 0xffffffff8011c000ull;

/* mallocalign(8192, 4096): the VMCS page, then the VMXON page; and the EPT PML4 page. */
static uint8_t vmcs[8192] HV_PAGES;
static uint8_t pml4[4096] HV_PAGES;

static int failures;
static unsigned writes;

static void vmcswrite(uint32_t field, uint64_t value)
{
    writes++;
    if (vmwrite(field, value) != HV_OUTCOME_SUCCEED) {
        con_puts("plan9: vmcswrite ");
        con_hex(field, 4);
        hv_report("");
        failures++;
    }
}

static int expect(int outcome, int want, const char *what)
{
    con_puts("plan9: ");
    hv_report(what);
    if (outcome != want) {
        con_puts("plan9: UNEXPECTED, wanted ");
        con_puts(hv_outcome_names[want]);
        con_putc('\n');
        failures++;
    }
    return outcome;
}

static uint64_t msr(uint32_t index)
{
    uint64_t v = 0;
    if (rdmsr(index, &v) != HV_OUTCOME_SUCCEED) {
        con_puts("plan9: rdmsr failed\n");
        failures++;
    }
    return v;
}

static void vmcsinit(void)
{
    uint64_t m, pinb_ctls, procb_ctls;
    uint32_t x;

    m = msr(VMX_BASIC_MSR);
    if (m & 1ull << 55) {
        procb_ctls = msr(VMX_TRUE_PROCB_CTLS_MSR);
        pinb_ctls = msr(VMX_TRUE_PINB_CTLS_MSR);
    } else {
        procb_ctls = msr(VMX_PROCB_CTLS_MSR);
        pinb_ctls = msr(VMX_PINB_CTLS_MSR);
    }

    x = (uint32_t)pinb_ctls | 1 << 1 | 1 << 2 | 1 << 4;   /* currently reserved default1 bits */
    x |= PINB_EXITIRQ | PINB_EXITNMI;
    x &= pinb_ctls >> 32;
    vmcswrite(VMCS_PIN_BASED_VM_EXEC_CONTROL, x);
    con_puts("plan9: controls pin ");
    con_hex(x, 1);

    m = msr(VMX_PROCB_CTLS_MSR);
    x = (uint32_t)procb_ctls | 1 << 1 | 7 << 4 | 1 << 8 | 1 << 13 | 1 << 14 | 1 << 26;
    x |= PROCB_EXITHLT | PROCB_EXITMWAIT;
    x |= PROCB_EXITMOVDR | PROCB_EXITIO | PROCB_EXITMONITOR | PROCB_EXITPAUSE;
    x |= PROCB_USECTLS2;
    x &= m >> 32;
    vmcswrite(VMCS_CPU_BASED_VM_EXEC_CONTROL, x);
    con_puts(" procb ");
    con_hex(x, 1);

    m = msr(VMX_PROCB_CTLS2_MSR);
    x = PROCB_EPT | PROCB_VPID | PROCB_UNRESTR;
    x &= m >> 32;
    vmcswrite(VMCS_SECONDARY_VM_EXEC_CONTROL, x);
    con_puts(" procb2 ");
    con_hex(x, 1);

    m = msr(VMX_VMEXIT_CTLS_MSR);
    x = (uint32_t)m;
    x |= VMEXIT_HOST64;                                   /* sizeof(uintptr) == 8 */
    x &= m >> 32;
    vmcswrite(VMCS_VM_EXIT_CONTROLS, x);
    con_puts(" exit ");
    con_hex(x, 1);

    m = msr(VMX_VMENTRY_CTLS_MSR);
    x = (uint32_t)m;
    x |= VMENTRY_GUEST64;
    x &= m >> 32;
    vmcswrite(VMCS_VM_ENTRY_CONTROLS, x);
    con_puts(" entry ");
    con_hex(x, 1);
    con_putc('\n');

    vmcswrite(VMCS_CR3_TARGET_COUNT, 0);
    vmcswrite(VMCS_VM_EXIT_MSR_LOAD_COUNT, 0);
    vmcswrite(VMCS_VM_EXIT_MSR_STORE_COUNT, 0);
    vmcswrite(VMCS_VM_ENTRY_MSR_LOAD_COUNT, 0);
    vmcswrite(VMCS_VM_ENTRY_INTR_INFO_FIELD, 0);
    vmcswrite(VMCS_VMCS_LINK_POINTER, ~0ull);

    vmcswrite(VMCS_HOST_CS_SELECTOR, KESEL);
    vmcswrite(VMCS_HOST_DS_SELECTOR, KDSEL);
    vmcswrite(VMCS_HOST_ES_SELECTOR, KDSEL);
    vmcswrite(VMCS_HOST_FS_SELECTOR, KDSEL);
    vmcswrite(VMCS_HOST_GS_SELECTOR, KDSEL);
    vmcswrite(VMCS_HOST_SS_SELECTOR, KDSEL);
    vmcswrite(VMCS_HOST_TR_SELECTOR, TSSSEL);
    vmcswrite(VMCS_HOST_CR0, getcr0() & ~0xeull);
    vmcswrite(VMCS_HOST_CR3, getcr3());
    vmcswrite(VMCS_HOST_CR4, getcr4());
    vmcswrite(VMCS_HOST_FS_BASE, fsbase_msr);
    vmcswrite(VMCS_HOST_GS_BASE, gsbase_msr);
    vmcswrite(VMCS_HOST_TR_BASE, M_TSS);
    vmcswrite(VMCS_HOST_GDTR_BASE, M_GDT);
    vmcswrite(VMCS_HOST_IDTR_BASE, IDTADDR);

    vmcswrite(VMCS_EXCEPTION_BITMAP, 1 << 18);
    vmcswrite(VMCS_PAGE_FAULT_ERROR_CODE_MASK, 0);
    vmcswrite(VMCS_PAGE_FAULT_ERROR_CODE_MATCH, 0);

    static const uint32_t bases[] = {VMCS_GUEST_CS_BASE, VMCS_GUEST_DS_BASE, VMCS_GUEST_ES_BASE,
                                     VMCS_GUEST_FS_BASE, VMCS_GUEST_GS_BASE, VMCS_GUEST_SS_BASE};
    static const uint32_t limits[] = {VMCS_GUEST_CS_LIMIT, VMCS_GUEST_DS_LIMIT, VMCS_GUEST_ES_LIMIT,
                                      VMCS_GUEST_FS_LIMIT, VMCS_GUEST_GS_LIMIT, VMCS_GUEST_SS_LIMIT};
    static const uint32_t perms[] = {VMCS_GUEST_CS_AR_BYTES, VMCS_GUEST_DS_AR_BYTES, VMCS_GUEST_ES_AR_BYTES,
                                     VMCS_GUEST_FS_AR_BYTES, VMCS_GUEST_GS_AR_BYTES, VMCS_GUEST_SS_AR_BYTES};
    for (int i = 0; i < 6; i++)
        vmcswrite(bases[i], 0);
    for (int i = 0; i < 6; i++)
        vmcswrite(limits[i], ~0ull);
    /* (SEGG|SEGD|SEGP|SEGPL(0)|SEGEXEC|SEGR) >> 8 | 1, and the data segments' (…|SEGDATA|SEGW) >> 8 | 1 */
    for (int i = 0; i < 6; i++)
        vmcswrite(perms[i], i == 0 ? 0xc09b : 0xc093);
    vmcswrite(VMCS_GUEST_LDTR_AR_BYTES, 1 << 16);

    enum { CR0RSVD = 0x1ffaffc0, CR4RSVD = 0xff889000, CR4VMXE = 1 << 13, CR4SMXE = 1 << 14 };
    vmcswrite(VMCS_CR0_GUEST_HOST_MASK, CR0RSVD | 0xFFFFFFFF00000000ull);
    vmcswrite(VMCS_CR4_GUEST_HOST_MASK, CR4RSVD | CR4VMXE | CR4SMXE | 0xFFFFFFFF00000000ull);
    vmcswrite(VMCS_GUEST_CR0, getcr0() & ~(1ull << 31));
    vmcswrite(VMCS_GUEST_CR3, 0);
    vmcswrite(VMCS_GUEST_CR4, getcr4());
    vmcswrite(VMCS_CR0_READ_SHADOW, getcr0());
    vmcswrite(VMCS_CR4_READ_SHADOW, getcr4() & ~(uint64_t)CR4VMXE);

    vmcswrite(VMCS_GUEST_TR_BASE, M_TSS);
    vmcswrite(VMCS_GUEST_TR_LIMIT, 0xffff);
    vmcswrite(VMCS_GUEST_TR_AR_BYTES, 0x8b);               /* (SEGTSS|SEGPL(0)|SEGP) >> 8 | 2 */

    memset(pml4, 0, sizeof pml4);
    vmcswrite(VMCS_EPT_POINTER, PADDR(pml4) | 3 << 3);
    vmcswrite(VMCS_VIRTUAL_PROCESSOR_ID, 1);

    vmcswrite(VMCS_GUEST_RFLAGS, 2);
}

/* ======================================================================================
 * GUEST EVENTS — the place for the guest-event port (the unit's `guest` stream, block
 * HV_GUEST_* in hwvirt_regs.h). Once the port is in the unit, this function makes the guest
 * generate events (write the raw GuestEvent bits into HV_GUEST_RAW(i), GO on HV_GUEST_CTRL),
 * reads each answer from the resp block (HV_OUTCOME_EXIT with exit reason and qualification,
 * or HV_OUTCOME_NO_EXIT), handles the exit as devvmx's exit handlers do (read the exit
 * information with vmread, advance GUEST_RIP, VMRESUME) and logs every step.
 * ====================================================================================== */
static void guest_events(void)
{
#ifdef HV_GUEST_BASE
    con_puts("plan9: guest events: port present (");
    con_dec(HV_GUEST_BITS);
    con_puts(" bits), not driven yet\n");
#else
    con_puts("plan9: guest events: the unit has no guest-event port in this build\n");
#endif
}

int plan9_main(void)
{
    uint64_t v;
    failures = 0;
    writes = 0;
    con_puts("== Plan 9 devvmx: vmxstart(), vmcsinit(), vmlaunch ==\n");

    /* vmxstart() */
    putcr4(getcr4() | 0x2000);
    memset(vmcs, 0, sizeof vmcs);
    rdmsr(VMX_BASIC_MSR, &v);
    con_puts("plan9: rdmsr(VMX_BASIC_MSR) = ");
    con_hex(v, 16);
    con_putc('\n');
    *(uint32_t *)vmcs = (uint32_t)v;
    *(uint32_t *)&vmcs[4096] = (uint32_t)v;
    if (expect(vmxon(PADDR(vmcs + 4096)), HV_OUTCOME_SUCCEED, "vmxon") != HV_OUTCOME_SUCCEED)
        return failures;
    expect(vmclear(PADDR(vmcs)), HV_OUTCOME_SUCCEED, "vmclear");
    expect(vmptrld(PADDR(vmcs)), HV_OUTCOME_SUCCEED, "vmptrld");

    vmcsinit();
    con_puts("plan9: vmcsinit: ");
    con_dec(writes);
    con_puts(" vmwrites\n");

    vmread(VMCS_GUEST_CS_LIMIT, &v);
    con_puts("plan9: vmread GUEST_CS_LIMIT = ");
    con_hex(v, 1);
    vmread(VMCS_EPT_POINTER, &v);
    con_puts(", EPT_POINTER = ");
    con_hex(v, 1);
    vmptrst(&v);
    con_puts(", vmptrst = ");
    con_hex(v, 1);
    con_putc('\n');

    /* As the 64-bit kernel wrote it: IA-32e mode guest with CR0.PG = 0. */
    expect(vmlaunch(), HV_OUTCOME_ENTRY_FAILED, "vmlaunch (as written by the 64-bit kernel)");
    hv_report_failures();

    /* The change (not in the seed): no IA-32e mode guest, as on Plan 9's 32-bit kernel. */
    vmread(VMCS_VM_ENTRY_CONTROLS, &v);
    expect(vmwrite(VMCS_VM_ENTRY_CONTROLS, v & ~(uint64_t)VMENTRY_GUEST64), HV_OUTCOME_SUCCEED,
           "vmwrite VM_ENTRY_CONTROLS without IA-32e mode guest");
    expect(vmlaunch(), HV_OUTCOME_ENTERED, "vmlaunch");
    con_puts("plan9: status in_vmx ");
    con_dec(HV_REG(HV_STATUS_IN_VMX));
    con_puts(" non_root ");
    con_dec(HV_REG(HV_STATUS_NON_ROOT));
    con_putc('\n');

    guest_events();
    return failures;
}
