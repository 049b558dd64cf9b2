/* Start-up of the hwvirt SoC firmware (PicoRV32, RV32I): stack, TLS pointer, zeroed .bss and
   .tbss, main(), then the HALT register with main's return value as exit code. */
#include "hwvirt_regs.h"

    .section .text.start, "ax"
    .global _start
_start:
    la      sp, __stack_top
    la      tp, __tls_base
    la      a0, __tbss_start        /* .tbss and .bss follow each other: clear both */
    la      a1, __bss_end
1:  bgeu    a0, a1, 2f
    sw      zero, 0(a0)
    addi    a0, a0, 4
    j       1b
2:  call    main
    li      t0, HV_SYS_HALT
    sw      a0, 0(t0)
3:  j       3b
