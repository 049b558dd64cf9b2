/* A small hypervisor library for the hwvirt SoC: the VMX instructions as C functions, executed by
 * the unit through its register map (hwvirt_regs.h, generated from the unit's signature).
 *
 * Every instruction returns the architectural outcome, like the seeds' assembly helpers return the
 * flags: HV_OUTCOME_SUCCEED (VMsucceed), HV_OUTCOME_FAIL_INVALID (VMfailInvalid),
 * HV_OUTCOME_FAIL_VALID (VMfailValid; the error number is in hv_last.error), HV_OUTCOME_FAULT
 * (#UD/#GP), and for VMLAUNCH/VMRESUME also HV_OUTCOME_ENTERED or HV_OUTCOME_ENTRY_FAILED
 * (exit reason, qualification and the deciding check in hv_last). */
#ifndef HV_H
#define HV_H

#include <stdint.h>
#include "hwvirt_regs.h"
#include "hwvirt_names.h"

#define HV_REG(addr) (*(volatile uint32_t *)(uintptr_t)(addr))

/* The last result of the unit (the Result struct, read from the named registers). */
struct hv_result {
    uint32_t outcome, fault, error, check;
    uint64_t value, qualification;
    uint32_t exit_reason, event, event_error;
    uint32_t cycles;        /* clock cycles from GO until the core saw the result */
};
extern struct hv_result hv_last;

/* The x86 processor state the VMX instructions depend on (the unit's `cpu` port). */
struct hv_cpu {
    uint64_t cr0, cr4, efer, rflags, feature_control;
    uint32_t cpl, cs_l, mov_ss_blocking;
};
extern struct hv_cpu hv_cpu;
void hv_cpu_load(void);                 /* write hv_cpu to the unit */

/* Raw interface: one command, its raw bits written word by word, then GO; wait for the result. */
int hv_exec(uint32_t op, uint64_t reg, uint64_t operand_lo, uint64_t operand_hi);
void hv_bits_set(uint32_t *words, unsigned offset, unsigned width, uint64_t value);

/* The instructions. */
int vmxon(uint64_t pa);
int vmxoff(void);
int vmclear(uint64_t pa);
int vmptrld(uint64_t pa);
int vmptrst(uint64_t *pa);
int vmread(uint32_t field, uint64_t *value);
int vmwrite(uint32_t field, uint64_t value);
int vmlaunch(void);
int vmresume(void);
int invept(uint64_t type, uint64_t eptp);
int invvpid(uint64_t type, uint16_t vpid, uint64_t linear_address);
int rdmsr(uint32_t msr, uint64_t *value);

/* Page-aligned memory the start-up code does not clear (the programs memset it, as the seeds do). */
#define HV_PAGES __attribute__((aligned(4096), section(".noinit")))
#define PADDR(p) ((uint64_t)(uintptr_t)(p))   /* RAM is at physical address 0 for the unit too */

/* Console on the UART, and the cycle counter. */
void con_putc(char c);
void con_puts(const char *s);
void con_hex(uint64_t value, int digits);  /* 0x-prefixed, at least `digits` digits */
void con_dec(uint32_t value);
uint64_t cycles(void);

/* Print "<what> -> <outcome>[ error n (text)][ reason r qual q][ check NAME (SDM §s)]" and a newline. */
void hv_report(const char *what);
/* Print every failing VM-entry check of the last entry (the unit's entry_failures port). */
void hv_report_failures(void);

#endif
