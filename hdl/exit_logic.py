"""VM-exit reasons and (with the VM-exit issue) the exit decision and encoder.

:class:`ExitReason` is the one table of basic exit reasons (Intel SDM vol. 3C §28.9 / appendix C,
"VMX basic exit reasons"). The exit-reason VMCS field (0x4402) holds the basic reason in bits 15:0 and
sets bit 31 for VM-entry failures (reasons 33, 34 and 41).
"""

from amaranth.lib import enum


__all__ = ["ExitReason", "ENTRY_FAILURE_BIT"]

#: Bit 31 of the exit-reason field: the exit is a VM-entry failure (SDM vol. 3C §28.2.1).
ENTRY_FAILURE_BIT = 1 << 31


class ExitReason(enum.Enum, shape=16):
    """Basic exit reasons, bits 15:0 of the exit-reason field (SDM vol. 3C appendix C)."""
    EXCEPTION_NMI                = 0
    EXTERNAL_INTERRUPT           = 1
    TRIPLE_FAULT                 = 2
    INIT_SIGNAL                  = 3
    SIPI                         = 4
    IO_SMI                       = 5
    OTHER_SMI                    = 6
    INTERRUPT_WINDOW             = 7
    NMI_WINDOW                   = 8
    TASK_SWITCH                  = 9
    CPUID                        = 10
    GETSEC                       = 11
    HLT                          = 12
    INVD                         = 13
    INVLPG                       = 14
    RDPMC                        = 15
    RDTSC                        = 16
    RSM                          = 17
    VMCALL                       = 18
    VMCLEAR                      = 19
    VMLAUNCH                     = 20
    VMPTRLD                      = 21
    VMPTRST                      = 22
    VMREAD                       = 23
    VMRESUME                     = 24
    VMWRITE                      = 25
    VMXOFF                       = 26
    VMXON                        = 27
    CR_ACCESS                    = 28
    DR_ACCESS                    = 29
    IO_INSTRUCTION               = 30
    RDMSR                        = 31
    WRMSR                        = 32
    ENTRY_FAIL_GUEST_STATE       = 33
    ENTRY_FAIL_MSR_LOADING       = 34
    MWAIT                        = 36
    MONITOR_TRAP_FLAG            = 37
    MONITOR                      = 39
    PAUSE                        = 40
    ENTRY_FAIL_MACHINE_CHECK     = 41
    TPR_BELOW_THRESHOLD          = 43
    APIC_ACCESS                  = 44
    VIRTUALIZED_EOI              = 45
    GDTR_IDTR_ACCESS             = 46
    LDTR_TR_ACCESS               = 47
    EPT_VIOLATION                = 48
    EPT_MISCONFIG                = 49
    INVEPT                       = 50
    RDTSCP                       = 51
    PREEMPTION_TIMER             = 52
    INVVPID                      = 53
    WBINVD                       = 54
    XSETBV                       = 55
    APIC_WRITE                   = 56
    RDRAND                       = 57
    INVPCID                      = 58
    VMFUNC                       = 59
    ENCLS                        = 60
    RDSEED                       = 61
    PML_FULL                     = 62
    XSAVES                       = 63
    XRSTORS                      = 64
    PCONFIG                      = 65
    SPP_EVENT                    = 66
    UMWAIT                       = 67
    TPAUSE                       = 68
    LOADIWKEY                    = 69
    ENCLV                        = 70
    ENQCMD_PASID_FAIL            = 72
    ENQCMDS_PASID_FAIL           = 73
    BUS_LOCK                     = 74
    NOTIFY                       = 75
    SEAMCALL                     = 76
    TDCALL                       = 77
    RDMSRLIST                    = 78
    WRMSRLIST                    = 79
    URDMSR                       = 80
    UWRMSR                       = 81
    RDMSR_IMM                    = 84
    WRMSRNS_IMM                  = 85
