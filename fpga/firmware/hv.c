/* The hypervisor library: see hv.h. Commands go out as raw bits of the unit's Command struct,
 * placed with the generated HV_CMD_*_OFFSET/_WIDTH; results are read from the named registers. */
#define HV_DEFINE_NAMES
#include <stddef.h>
#include "hv.h"

struct hv_result hv_last;
struct hv_cpu hv_cpu;

void hv_bits_set(uint32_t *words, unsigned offset, unsigned width, uint64_t value)
{
    unsigned done = 0;
    while (done < width) {
        unsigned bit = offset + done, shift = bit & 31, n = 32 - shift;
        if (n > width - done)
            n = width - done;
        uint32_t mask = n == 32 ? 0xffffffffu : (1u << n) - 1;
        uint32_t part = (uint32_t)(value >> done) & mask;
        words[bit >> 5] = (words[bit >> 5] & ~(mask << shift)) | (part << shift);
        done += n;
    }
}

uint64_t cycles(void)
{
    uint32_t lo = HV_REG(HV_SYS_CYCLES_LO);      /* latches the high half */
    return (uint64_t)HV_REG(HV_SYS_CYCLES_HI) << 32 | lo;
}

static uint64_t read64(uint32_t lo_addr, uint32_t hi_addr)
{
    return (uint64_t)HV_REG(hi_addr) << 32 | HV_REG(lo_addr);
}

void hv_cpu_load(void)
{
    uint32_t w[HV_CPU_WORDS] = {0};
    hv_bits_set(w, HV_CPU_CR0_OFFSET, HV_CPU_CR0_WIDTH, hv_cpu.cr0);
    hv_bits_set(w, HV_CPU_CR4_OFFSET, HV_CPU_CR4_WIDTH, hv_cpu.cr4);
    hv_bits_set(w, HV_CPU_EFER_OFFSET, HV_CPU_EFER_WIDTH, hv_cpu.efer);
    hv_bits_set(w, HV_CPU_RFLAGS_OFFSET, HV_CPU_RFLAGS_WIDTH, hv_cpu.rflags);
    hv_bits_set(w, HV_CPU_FEATURE_CONTROL_OFFSET, HV_CPU_FEATURE_CONTROL_WIDTH, hv_cpu.feature_control);
    hv_bits_set(w, HV_CPU_CPL_OFFSET, HV_CPU_CPL_WIDTH, hv_cpu.cpl);
    hv_bits_set(w, HV_CPU_CS_L_OFFSET, HV_CPU_CS_L_WIDTH, hv_cpu.cs_l);
    hv_bits_set(w, HV_CPU_MOV_SS_BLOCKING_OFFSET, HV_CPU_MOV_SS_BLOCKING_WIDTH, hv_cpu.mov_ss_blocking);
    for (unsigned i = 0; i < HV_CPU_WORDS; i++)
        HV_REG(HV_CPU_RAW(i)) = w[i];
}

int hv_exec(uint32_t op, uint64_t reg, uint64_t operand_lo, uint64_t operand_hi)
{
    uint32_t w[HV_CMD_WORDS] = {0};
    hv_bits_set(w, HV_CMD_OP_OFFSET, HV_CMD_OP_WIDTH, op);
    hv_bits_set(w, HV_CMD_REG_OFFSET, HV_CMD_REG_WIDTH, reg);
    hv_bits_set(w, HV_CMD_OPERAND_OFFSET, 64, operand_lo);
    hv_bits_set(w, HV_CMD_OPERAND_OFFSET + 64, HV_CMD_OPERAND_WIDTH - 64, operand_hi);
    for (unsigned i = 0; i < HV_CMD_WORDS; i++)
        HV_REG(HV_CMD_RAW(i)) = w[i];
    uint32_t start = HV_REG(HV_SYS_CYCLES_LO);
    HV_REG(HV_CMD_CTRL) = 1;                                    /* GO */
    while (!(HV_REG(HV_RESP_CTRL) & HV_CTRL_VALID))
        ;
    hv_last.cycles = HV_REG(HV_SYS_CYCLES_LO) - start;
    hv_last.outcome = HV_REG(HV_RESP_OUTCOME);
    hv_last.fault = HV_REG(HV_RESP_FAULT);
    hv_last.error = HV_REG(HV_RESP_ERROR);
    hv_last.check = HV_REG(HV_RESP_CHECK);
    hv_last.value = read64(HV_RESP_VALUE_LO, HV_RESP_VALUE_HI);
    hv_last.exit_reason = HV_REG(HV_RESP_EXIT_REASON);
    hv_last.qualification = read64(HV_RESP_QUALIFICATION_LO, HV_RESP_QUALIFICATION_HI);
    hv_last.event = HV_REG(HV_RESP_EVENT);
    hv_last.event_error = HV_REG(HV_RESP_EVENT_ERROR);
    HV_REG(HV_RESP_CTRL) = 1;                                   /* POP */
    return (int)hv_last.outcome;
}

int vmxon(uint64_t pa)                  { return hv_exec(HV_OP_VMXON, 0, pa, 0); }
int vmxoff(void)                        { return hv_exec(HV_OP_VMXOFF, 0, 0, 0); }
int vmclear(uint64_t pa)                { return hv_exec(HV_OP_VMCLEAR, 0, pa, 0); }
int vmptrld(uint64_t pa)                { return hv_exec(HV_OP_VMPTRLD, 0, pa, 0); }
int vmwrite(uint32_t field, uint64_t v) { return hv_exec(HV_OP_VMWRITE, field, v, 0); }
int vmlaunch(void)                      { return hv_exec(HV_OP_VMLAUNCH, 0, 0, 0); }
int vmresume(void)                      { return hv_exec(HV_OP_VMRESUME, 0, 0, 0); }
int invept(uint64_t type, uint64_t eptp) { return hv_exec(HV_OP_INVEPT, type, eptp, 0); }

int invvpid(uint64_t type, uint16_t vpid, uint64_t linear_address)
{
    return hv_exec(HV_OP_INVVPID, type, vpid, linear_address);
}

static int with_value(int outcome, uint64_t *value)
{
    if (outcome == HV_OUTCOME_SUCCEED && value)
        *value = hv_last.value;
    return outcome;
}

int vmptrst(uint64_t *pa)                   { return with_value(hv_exec(HV_OP_VMPTRST, 0, 0, 0), pa); }
int vmread(uint32_t field, uint64_t *value) { return with_value(hv_exec(HV_OP_VMREAD, field, 0, 0), value); }
int rdmsr(uint32_t msr, uint64_t *value)    { return with_value(hv_exec(HV_OP_RDMSR, msr, 0, 0), value); }

/* -- console ------------------------------------------------------------------------------------ */

void con_putc(char c)
{
    if (c == '\n')
        HV_REG(HV_SYS_UART_TX) = '\r';      /* the write waits while the transmitter is busy */
    HV_REG(HV_SYS_UART_TX) = (uint8_t)c;
}

void con_puts(const char *s)
{
    while (*s)
        con_putc(*s++);
}

void con_hex(uint64_t value, int digits)
{
    char buf[16];
    int n = 0;
    do {
        buf[n++] = "0123456789abcdef"[value & 15];
        value >>= 4;
    } while (value || n < digits);
    con_puts("0x");
    while (n)
        con_putc(buf[--n]);
}

void con_dec(uint32_t value)
{
    /* by repeated subtraction: RV32I has no divider, and __udivsi3 per digit is slow */
    static const uint32_t powers[] = {1000000000, 100000000, 10000000, 1000000, 100000, 10000, 1000, 100, 10, 1};
    int started = 0;
    for (unsigned i = 0; i < sizeof powers / sizeof powers[0]; i++) {
        char digit = '0';
        while (value >= powers[i]) {
            value -= powers[i];
            digit++;
        }
        if (digit != '0' || started || i == 9) {
            con_putc(digit);
            started = 1;
        }
    }
}

void hv_report(const char *what)
{
    con_puts(what);
    con_puts(" -> ");
    con_puts(hv_last.outcome < 8 ? hv_outcome_names[hv_last.outcome] : "?");
    if (hv_last.outcome == HV_OUTCOME_FAIL_VALID) {
        con_puts(" error ");
        con_dec(hv_last.error);
        if (hv_last.error < HV_N_ERRORS && hv_error_names[hv_last.error]) {
            con_puts(" (");
            con_puts(hv_error_names[hv_last.error]);
            con_putc(')');
        }
    }
    if (hv_last.outcome == HV_OUTCOME_FAULT)
        con_puts(hv_last.fault == HV_FAULT_UD ? " #UD" : " #GP(0)");
    if (hv_last.outcome == HV_OUTCOME_ENTRY_FAILED || hv_last.outcome == HV_OUTCOME_EXIT) {
        con_puts(" reason ");
        con_hex(hv_last.exit_reason, 1);
        con_puts(" qual ");
        con_hex(hv_last.qualification, 1);
    }
    if (hv_last.check && hv_last.check <= HV_N_CHECKS) {
        con_puts(" check ");
        con_puts(hv_check_names[hv_last.check]);
        con_puts(" (SDM ");
        con_puts(hv_check_sdm[hv_last.check]);
        con_putc(')');
    }
    con_puts(" [");
    con_dec(hv_last.cycles);
    con_puts(" cycles]\n");
}

void hv_report_failures(void)
{
    unsigned n = 0;
    for (unsigned i = 0; i < HV_ENTRY_FAILURES_WORDS; i++) {
        uint32_t w = HV_REG(HV_ENTRY_FAILURES_RAW(i));
        for (unsigned b = 0; b < 32; b++)
            if (w >> b & 1) {
                con_puts("  failing check: ");
                con_puts(hv_check_names[1 + 32 * i + b]);
                con_putc('\n');
                n++;
            }
    }
    con_puts("  ");
    con_dec(n);
    con_puts(" failing check(s)\n");
}

/* picolibc's memset for RV32I at -Os stores one byte per iteration; the programs clear 20 KiB of
 * VMX pages, so a word-at-a-time version (which the linker takes instead of libc's) saves ~300k
 * cycles of simulation. */
__attribute__((optimize("no-tree-loop-distribute-patterns")))
void *memset(void *dest, int c, size_t n)
{
    uint8_t *d = dest;
    uint32_t word = (uint8_t)c * 0x01010101u;
    while (n && ((uintptr_t)d & 3)) {
        *d++ = (uint8_t)c;
        n--;
    }
    for (; n >= 16; n -= 16, d += 16) {
        ((uint32_t *)d)[0] = word;
        ((uint32_t *)d)[1] = word;
        ((uint32_t *)d)[2] = word;
        ((uint32_t *)d)[3] = word;
    }
    while (n--)
        *d++ = (uint8_t)c;
    return dest;
}
