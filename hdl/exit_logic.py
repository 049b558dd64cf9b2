"""VM exits: the exit reasons, the guest-event port and the exit decision.

* :class:`ExitReason` is the one table of basic exit reasons (Intel SDM vol. 3C appendix C, "VMX
  basic exit reasons"). The exit-reason VMCS field (0x4402) holds the basic reason in bits 15:0 and
  sets bit 31 for VM-entry failures (reasons 33, 34 and 41).
* :class:`GuestEvent` is what the rest of the processor reports through the guest-event port: an
  instruction with its operands, an exception, an interrupt, NMI, INIT, SIPI, a task switch, a
  triple fault, or time passing.
* :class:`ExitDecider` decides, for every VM-execution control, whether the event exits and encodes
  the exit information (SDM vol. 3C chapter 26, "VMX non-root operation", and §28.2, "Recording VM-exit
  information"), in a two-stage pipeline (see its timing contract). The state switch of §28.3–28.6
  is sequenced by :class:`~hwvirt.hdl.vmcs_unit.VMCSUnit`.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, enum, wiring
from amaranth.lib.wiring import In, Out


__all__ = ["ExitReason", "ENTRY_FAILURE_BIT", "GuestEventKind", "InterruptionType", "TaskSwitchSource",
           "GuestEvent", "GuestRegisters", "ExitControls", "ExitDecision", "ExitDecider",
           "DEFAULT_LENGTH", "EXCEPTIONS_WITH_ERROR_CODE", "VMX_INSTRUCTION_EXIT_REASON", "GUEST_MSRS"]

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


# -- the guest-event port -------------------------------------------------------------------------------

class GuestEventKind(enum.Enum, shape=6):
    """What the guest did, as reported by the rest of the processor through the guest-event port."""
    RUN              = 0    # time passes; no instruction retires
    CPUID            = 1
    GETSEC           = 2
    INVD             = 3
    XSETBV           = 4
    VMCALL           = 5
    HLT              = 6
    INVLPG           = 7
    INVPCID          = 8
    MWAIT            = 9
    MONITOR          = 10
    PAUSE            = 11
    RDPMC            = 12
    RDTSC            = 13
    RDTSCP           = 14
    WBINVD           = 15
    RDRAND           = 16
    RDSEED           = 17
    GDTR_IDTR_ACCESS = 18   # SGDT / SIDT / LGDT / LIDT (``register`` = 0 / 1 / 2 / 3)
    LDTR_TR_ACCESS   = 19   # SLDT / STR / LLDT / LTR (``register`` = 0 / 1 / 2 / 3)
    RDMSR            = 20
    WRMSR            = 21
    IO               = 22
    CR_WRITE         = 23
    CR_READ          = 24
    CLTS             = 25
    LMSW             = 26
    DR_WRITE         = 27
    DR_READ          = 28
    VMX_INSTRUCTION  = 29   # ``index`` = the :class:`~hwvirt.hdl.vmcs_unit.VMXOp`
    TASK_SWITCH      = 30
    EXCEPTION        = 31
    NMI              = 32
    EXTERNAL_INTERRUPT = 33
    INIT             = 34
    SIPI             = 35
    TRIPLE_FAULT     = 36
    MEMORY           = 37   # a data access or fetch: ``value`` = the address, translated by the EPT walker
    SMI              = 38   # a system-management interrupt (SVM: intercept 0x62; VMX without the
                            # dual-monitor treatment: no VM exit, not modelled further)


class InterruptionType(enum.Enum, shape=3):
    """Bits 10:8 of the interruption-information formats (SDM vol. 3C §25.9.2, §25.8.3)."""
    EXTERNAL_INTERRUPT            = 0
    NMI                           = 2
    HARDWARE_EXCEPTION            = 3
    SOFTWARE_INTERRUPT            = 4
    PRIVILEGED_SOFTWARE_EXCEPTION = 5
    SOFTWARE_EXCEPTION            = 6
    OTHER_EVENT                   = 7


class TaskSwitchSource(enum.Enum, shape=2):
    """Bits 31:30 of the task-switch exit qualification (SDM vol. 3C §28.2.1, table 28-2)."""
    CALL = 0
    IRET = 1
    JMP  = 2
    GATE = 3


class GuestEvent(data.Struct):
    """One guest event, with its operands (only those the kind uses are looked at).

    ``length`` is the instruction's length; ``cycles`` the guest cycles that pass before the event.
    ``register`` is the CR or DR number, or which descriptor-table instruction; ``index`` the MSR
    index, the task-switch selector or the VMX instruction; ``value`` the value written to a CR, DR
    or MSR, the INVLPG or #PF linear address, the LMSW source or a string I/O's linear address.
    ``during`` (IDT-vectoring format, bit 31 valid) is the event whose delivery the exception
    interrupted, with ``during_error`` its error code.
    """
    kind:         GuestEventKind
    length:       4
    cycles:       32
    vector:       8
    event_type:   InterruptionType
    error_code:   32
    register:     4
    gpr:          4
    port:         16
    size:         3
    direction_in: 1
    string:       1
    rep:          1
    immediate:    1
    index:        32
    value:        64
    during:       32
    during_error: 32
    access:       2      # MEMORY: 0 read, 1 write, 2 fetch (:class:`~hwvirt.hdl.ept_walker.Access`)
    user:         1      # MEMORY: a user-mode access
    linear:       1      # MEMORY: ``value`` is a guest-linear address (else guest-physical)


class GuestRegisters(data.Struct):
    """The guest state an event reads or changes (kept by the unit while the guest runs)."""
    cr0:              64
    cr3:              64
    cr4:              64
    dr7:              64
    rip:              64
    rflags:           64
    efer:             64
    pat:              64
    debugctl:         64
    sysenter_cs:      32
    sysenter_esp:     64
    sysenter_eip:     64
    interruptibility: 32
    activity:         32
    tpr:              4


class ExitControls(data.Struct):
    """The VM-execution and VM-exit control fields the exit decision reads (SDM vol. 3C §25.6)."""
    pin:              32
    proc:             32
    proc2:            32    # 0 unless "activate secondary controls"
    exit:             32
    exception_bitmap: 32
    pfec_mask:        32
    pfec_match:       32
    cr0_mask:         64
    cr4_mask:         64
    cr0_shadow:       64
    cr4_shadow:       64
    cr3_target_count: 32
    cr3_targets:      data.ArrayLayout(64, 4)
    io_bitmap_a:      64
    io_bitmap_b:      64
    msr_bitmap:       64
    tsc_offset:       64
    tpr_threshold:    32


class ExitDecision(data.Struct):
    """The exit decision for one event and what the encoder writes (SDM vol. 3C §28.2)."""
    exit:          1
    reason:        16
    qualification: 64
    intr_info:     32
    intr_error:    32
    idt_info:      32
    idt_error:     32
    instr_len:     32
    instr_info:    32
    guest_linear:  64
    guest_physical: 64   # EPT violations and misconfigurations (set by the unit, 0 here)
    value:         64    # what the guest reads, when ``value_valid``
    value_valid:   1


#: The instruction length an event has when the scenario gives none (the usual encodings).
DEFAULT_LENGTH = {
    "cpuid": 2, "getsec": 2, "invd": 2, "wbinvd": 2, "pause": 2, "rdtsc": 2, "rdpmc": 2, "rdmsr": 2,
    "wrmsr": 2, "clts": 2, "hlt": 1, "io": 1, "xsetbv": 3, "mwait": 3, "monitor": 3, "vmcall": 3,
    "rdtscp": 3, "cr_write": 3, "cr_read": 3, "dr_write": 3, "dr_read": 3, "rdrand": 3, "rdseed": 3,
    "lmsw": 3, "descriptor": 3, "vminstr": 3, "task_switch": 2, "invpcid": 5, "invlpg": 3,
    "exception": 1,    # only the software and privileged software exception types report it
    "nmi": 0, "extint": 0, "init": 0, "sipi": 0, "triple_fault": 0, "run": 0, "mem": 0, "smi": 0,
}

#: Hardware exceptions that deliver an error code (SDM vol. 3A §6.15; CET's #CP is not modelled).
EXCEPTIONS_WITH_ERROR_CODE = (8, 10, 11, 12, 13, 14, 17)

# Instruction events: the exit reason, the control that makes them exit (None: unconditional).
# ("proc", n) is a primary processor-based control bit, ("proc2", n) a secondary one.
_INSTRUCTION_EXITS = {
    GuestEventKind.CPUID:   (ExitReason.CPUID,   None),
    GuestEventKind.GETSEC:  (ExitReason.GETSEC,  None),
    GuestEventKind.INVD:    (ExitReason.INVD,    None),
    GuestEventKind.XSETBV:  (ExitReason.XSETBV,  None),
    GuestEventKind.VMCALL:  (ExitReason.VMCALL,  None),
    GuestEventKind.HLT:     (ExitReason.HLT,     ("proc", 7)),
    GuestEventKind.INVLPG:  (ExitReason.INVLPG,  ("proc", 9)),
    GuestEventKind.MWAIT:   (ExitReason.MWAIT,   ("proc", 10)),
    GuestEventKind.RDPMC:   (ExitReason.RDPMC,   ("proc", 11)),
    GuestEventKind.MONITOR: (ExitReason.MONITOR, ("proc", 29)),
    GuestEventKind.PAUSE:   (ExitReason.PAUSE,   ("proc", 30)),
    GuestEventKind.WBINVD:  (ExitReason.WBINVD,  ("proc2", 6)),
    GuestEventKind.RDRAND:  (ExitReason.RDRAND,  ("proc2", 11)),
    GuestEventKind.RDSEED:  (ExitReason.RDSEED,  ("proc2", 16)),
    GuestEventKind.GDTR_IDTR_ACCESS: (ExitReason.GDTR_IDTR_ACCESS, ("proc2", 2)),
    GuestEventKind.LDTR_TR_ACCESS:   (ExitReason.LDTR_TR_ACCESS,   ("proc2", 2)),
}

#: The guest events that are instructions: an exit reports their length; without an exit they complete.
_INSTRUCTIONS = (*_INSTRUCTION_EXITS, GuestEventKind.INVPCID, GuestEventKind.RDTSC, GuestEventKind.RDTSCP,
                 GuestEventKind.RDMSR, GuestEventKind.WRMSR, GuestEventKind.IO, GuestEventKind.CR_WRITE,
                 GuestEventKind.CR_READ, GuestEventKind.CLTS, GuestEventKind.LMSW, GuestEventKind.DR_WRITE,
                 GuestEventKind.DR_READ, GuestEventKind.VMX_INSTRUCTION)

#: The exit a VMX instruction causes in VMX non-root operation (SDM vol. 3C §26.1.2), by instruction.
VMX_INSTRUCTION_EXIT_REASON = {
    "VMXON": ExitReason.VMXON, "VMXOFF": ExitReason.VMXOFF, "VMCLEAR": ExitReason.VMCLEAR,
    "VMPTRLD": ExitReason.VMPTRLD, "VMPTRST": ExitReason.VMPTRST, "VMREAD": ExitReason.VMREAD,
    "VMWRITE": ExitReason.VMWRITE, "VMLAUNCH": ExitReason.VMLAUNCH, "VMRESUME": ExitReason.VMRESUME,
    "INVEPT": ExitReason.INVEPT, "INVVPID": ExitReason.INVVPID, "VMCALL": ExitReason.VMCALL,
}

#: MSRs whose guest value the unit keeps (RDMSR/WRMSR that do not exit read and write them).
GUEST_MSRS = {0xC000_0080: "efer", 0x277: "pat", 0x1D9: "debugctl",
              0x174: "sysenter_cs", 0x175: "sysenter_esp", 0x176: "sysenter_eip"}


#: Where the value the guest reads comes from (one at most), and which guest registers the event
#: writes if it does not exit (see :class:`ExitDecider`, stage 2).
_READS = data.StructLayout({"tsc": 1, "cr0": 1, "cr3": 1, "cr4": 1, "tpr": 1, "dr7": 1,
                            "msr": len(GUEST_MSRS)})     # msr: one-hot, in :data:`GUEST_MSRS`
_WRITES = data.StructLayout({"cr0": 1, "clts": 1, "lmsw": 1, "cr3": 1, "cr4": 1, "tpr": 1, "dr7": 1,
                             "msr": len(GUEST_MSRS)})
#: Which format the exit qualification has (stage 3 assembles it, §28.2.1 tables 28-1 … 28-7).
_QUALIFICATIONS = data.StructLayout({"value": 1, "io": 1, "cr": 1, "clts": 1, "lmsw": 1, "dr": 1, "task": 1,
                                     "sipi": 1})


class _Plan(data.Struct):
    """What the rules of :class:`ExitDecider` make of an event in the first stage, before any wide
    comparison or sum: the exit conditions, the exit information, and which data stage 2 moves."""
    instruction:      1     # the event is an instruction (:data:`_INSTRUCTIONS`)
    completes:        1     # ... that completes unless it exits (it does not raise #UD)
    halts:            1     # ... into the HLT state
    ud:               1     # the instruction raises #UD instead: its enabling control is off
    exception:        1     # an exception: the event, or that #UD (it exits as stage 2 works out)
    delivered:        1     # the guest's IDT delivers it unless it exits: exception, NMI, interrupt
    exit:             1     # the event exits (but for the conditions below and the bitmaps)
    exit_on_cr0_change: 1   # ... when the value changes a host-owned CR0 bit from the read shadow
    exit_on_cr4_change: 1   # ... the same for CR4
    exit_on_lmsw_change: 1  # ... the same for LMSW (bits 3:0; it can set PE, never clear it)
    exit_on_cr3_miss: 1     # ... unless the value is one of the CR3-target values in use
    exit_on_wrap:     1     # ... when the I/O access runs past port FFFFh
    exit_unless_bitmap: 1   # ... unless the MSR bitmaps are used and cover the MSR (their bit decides)
    exit_on_sipi_wait: 1    # ... when the guest is in the wait-for-SIPI state
    trap:             1     # the exit is trap-like: the instruction completed (TPR below threshold)
    mtf_armed:        1     # without an exit, the monitor trap flag exit follows (§26.5.2)
    reason:           16
    qualification:    _QUALIFICATIONS   # (one at most; none: 0)
    read:             1     # a MOV from CR or DR (its qualification's direction)
    nmi:              1     # an NMI (its interruption information)
    acknowledged:     1     # an external interrupt acknowledged on exit (its interruption information)
    intr_error_valid: 1     # the VM-exit interruption error code is the event's ``error_code``
    idt_valid:        1     # the IDT-vectoring information is the event's ``during``
    idt_error_valid:  1     # ... and its error code ``during_error``
    instr_len:        4
    instr_info:       2     # bits 29:28 of the VMX instruction information
    linear_is_value:  1     # the guest-linear address is the event's ``value`` (string I/O)
    value_valid:      1
    reads:            _READS
    writes:           _WRITES


class _Prepared(data.Struct):
    """The first stage's sums and wide comparisons, and what it finds about the bitmaps."""
    bitmap_check:     1     # a set bit of ``bitmap_words`` under the masks makes the event exit
    bitmap_mask:      64    # the bits of the first word that belong to the access
    bitmap_mask_next: 3     # the bits of the following word (an I/O access past its first word)
    io_wraps:         1     # the I/O access runs past port FFFFh
    rip_after:        64    # RIP + instruction length (mod 2^64)
    tsc_value:        64    # what RDTSC/RDTSCP read: the TSC, plus the offset when offsetting is on
    cr0_owned_change: 1     # the value changes a host-owned CR0 bit away from the read shadow
    cr4_owned_change: 1     # the same for CR4
    lmsw_owned_change: 1    # the same for LMSW, whose value's bits 3:0 can set PE but not clear it
    cr3_equal:        4     # the value is CR3-target value i
    cr3_counted:      4     # CR3-target value i is among the first CR3-target-count
    wait_for_sipi:    1     # the guest's activity state is wait-for-SIPI (3)
    vmx_reason:       16    # a VMX instruction's exit reason (0: not a VMX instruction, or unknown)
    exception_bit:    1     # the exception bitmap has the event's vector's bit set (vector < 32)
    page_fault:       1     # the event's vector is 14 (#PF)
    pf_match:         1     # the error code matches the page-fault error-code mask and match


#: The groups of guest registers an event changes (``next_guest``), each kept as it was on a
#: fault-like exit by its own select (stage 2 registers one per group, to keep their fanout small).
_GROUPS = data.StructLayout({"cr0": 1, "cr3": 1, "cr4": 1, "tpr": 1, "dr7": 1, "msr": len(GUEST_MSRS),
                             "completion": 1})    # completion: RIP, blocking by STI/MOV SS, activity


class _Decided(data.Struct):
    """The second stage's registers: whether the event exits."""
    exit:          1     # the event exits, not counting the bitmaps
    bitmap_exit:   1     # a bitmap bit makes it exit (fault-like)
    mtf:           1     # the monitor trap flag exit follows (no other exit)
    unchanged:     _GROUPS           # the event exits fault-like: these registers stay as they were


class ExitDecider(wiring.Component):
    """The exit decision for a guest event in VMX non-root operation (SDM vol. 3C §26.1–26.2, §27.2).

    Given the event, the controls and the guest state, it says whether the event causes a VM exit,
    with the basic exit reason (§28.2.1), the exit qualification (§28.2.1 tables 28-1 … 28-7), the
    interruption and IDT-vectoring information (§28.2.2–28.2.4), instruction length and information
    (§28.2.5); or, without an exit, what the guest reads (``value``) and its state afterwards
    (``next_guest``). After a fault-like exit ``next_guest`` is the unchanged guest state (RIP at the
    instruction); after a trap-like exit (TPR below threshold, monitor trap flag) and without an
    exit, the state after the instruction.

    Bitmaps in memory: the decider names up to two 8-byte words (``bitmap_reads``, and the byte
    addresses ``bitmap_addr[0 … bitmap_reads - 1]``; the others are unspecified) holding the I/O-bitmap
    bits of the accessed ports (§26.1.3) or the MSR-bitmap bit (§26.1.3, §25.6.9); the caller reads
    them into ``bitmap_words``. An I/O access names a second word when its last port,
    ``port + size - 1``, is in the word after its first port's (a ``size`` of 0 names one word), even
    when the I/O bitmaps overlap so that the two are one word in memory (never with 4K-aligned
    bitmaps, which VM entry requires): both addresses are then that word.

    The boundary exits taken before an instruction (§26.7 priority: pending MTF after a VM entry,
    the VMX-preemption timer, NMI window, interrupt window) are ``boundary_exit``/``boundary_reason``.

    Timing. A feed-forward pipeline in the ``sync`` domain (plain registers: no enables, nothing
    kept beyond the pipeline), all outputs registered. Cycle *n* is the clock cycle after the *n*-th
    edge; "the inputs" are ``event``, ``controls``, ``guest``, ``at_entry``, ``mtf_pending`` and
    ``timer_expired``.

    * In cycle *n*, ``bitmap_reads``, ``bitmap_addr``, ``boundary_exit`` and ``boundary_reason``
      are those of the inputs as driven in cycle *n* − :attr:`PREPARE_LATENCY`.
    * In cycle *n*, ``decision`` and ``next_guest`` are those of the inputs, if the inputs are the
      same in every cycle from *n* − :attr:`PREPARE_LATENCY` − :attr:`DECIDE_LATENCY` to *n* − 1, of
      ``bitmap_words`` as driven in cycle *n* − :attr:`DECIDE_LATENCY`, and of ``tsc`` as driven in
      cycle *n* − :attr:`DECIDE_LATENCY` too (the value RDTSC and RDTSCP read).

    So a caller presents the inputs in cycle *c* and holds them, reads the bitmap words named in
    cycle *c* + :attr:`PREPARE_LATENCY` and presents them from cycle *b* on: the decision holds from
    cycle max(*c* + :attr:`PREPARE_LATENCY`, *b*) + :attr:`DECIDE_LATENCY` on (as long as the inputs
    and words are held), and RDTSC reads the ``tsc`` of cycle max(*c* + :attr:`PREPARE_LATENCY`, *b*)
    — the cycle the words are first presented in, when they come as soon as they are named.

    Stage 1 registers those first outputs, what the rules make of the event (what exits when, the
    exit information, which data moves where: :class:`_Plan`) and the sums and wide comparisons;
    stage 2 whether it exits (with the bitmap words) and so which registers keep their values;
    stage 3 moves the data into the outputs, selected by registers only.

    Model choices: CPL-dependent #GP and the 64-bit-mode-only rule for CR8 come before the exit on
    real hardware and are not modelled (the guest is taken to run at CPL 0); PAUSE-loop exiting,
    VMCS shadowing, APIC virtualisation and TSC scaling are not modelled. The guest's TPR is the
    4-bit ``tpr`` (CR8) register.
    """

    #: Clock edges from the inputs to ``bitmap_reads``, ``bitmap_addr`` and the boundary exits.
    PREPARE_LATENCY = 1
    #: Clock edges from ``bitmap_words`` to ``decision`` and ``next_guest`` (the other inputs:
    #: ``PREPARE_LATENCY + DECIDE_LATENCY``).
    DECIDE_LATENCY = 2

    def __init__(self):
        super().__init__({
            "event":           In(GuestEvent),
            "controls":        In(ExitControls),
            "guest":           In(GuestRegisters),
            "tsc":             In(64),
            "bitmap_reads":    Out(2),
            "bitmap_addr":     Out(data.ArrayLayout(64, 2)),
            "bitmap_words":    In(data.ArrayLayout(64, 2)),
            "decision":        Out(ExitDecision),
            "next_guest":      Out(GuestRegisters),
            "at_entry":        In(1),
            "mtf_pending":     In(1),
            "timer_expired":   In(1),
            "boundary_exit":   Out(1),
            "boundary_reason": Out(16),
        })


    def elaborate(self, platform):
        m = Module()
        ev, ctl, g = self.event, self.controls, self.guest
        K = GuestEventKind
        pin, proc, proc2, exit_ctls = ctl.pin, ctl.proc, ctl.proc2, ctl.exit
        v = ev.value

        # == stage 1: the boundary exits, the bitmap words, the rules, sums and wide comparisons ========
        plan = Signal(_Plan)
        prep = Signal(_Prepared)

        # -- boundary exits (§26.7.1–26.7.6) ------------------------------------------------------------
        nmi_window = proc[22] & ~g.interruptibility[3] & ~g.interruptibility[1]
        interrupt_window = proc[2] & g.rflags[9] & ~g.interruptibility[0:2].any()
        m.d.sync += [self.boundary_exit.eq(0), self.boundary_reason.eq(0)]
        with m.If(self.at_entry & self.mtf_pending):
            m.d.sync += [self.boundary_exit.eq(1), self.boundary_reason.eq(ExitReason.MONITOR_TRAP_FLAG)]
        with m.Elif(self.timer_expired):
            m.d.sync += [self.boundary_exit.eq(1), self.boundary_reason.eq(ExitReason.PREEMPTION_TIMER)]
        with m.Elif(nmi_window):
            m.d.sync += [self.boundary_exit.eq(1), self.boundary_reason.eq(ExitReason.NMI_WINDOW)]
        with m.Elif(interrupt_window):
            m.d.sync += [self.boundary_exit.eq(1), self.boundary_reason.eq(ExitReason.INTERRUPT_WINDOW)]

        # -- I/O bitmaps (§26.1.3, §25.6.4): one bit per port, A for ports 0–7FFFh, B for 8000h–FFFFh.
        # Port bits 15:6 are the index of the bit's 8-byte word (bit 15 picks the bitmap), bits 5:0
        # the bit in the word. An access of ``size`` bytes looks at up to 4 ports from ``port`` on: in
        # the port's word and, when its last port is beyond, the following word (after A's last word
        # B's first; after B's last, past FFFFh, A's first, and the access exits anyway).
        # The word addresses are summed for both bitmaps and chosen after (no mux before an adder).
        port = ev.port
        first = port[6:16]
        crosses = port[0:6] + ev.size > 64          # the last port, port + size - 1, is in the next word
        at_end = first[0:9] == 0x1FF

        def word_address(base, plus):
            """The byte address of word ``first + plus`` (``plus`` 0 or 1) of the bitmap at ``base``."""
            return Cat(Const(0, 3), (Cat(Const(plus, 1), base[3:64]) + Cat(Const(plus, 1), first[0:9]))[1:62])
        a, b = ctl.io_bitmap_a, ctl.io_bitmap_b
        first_word = Mux(first[9], word_address(b, 0), word_address(a, 0))
        following_word = Mux(at_end, Cat(Const(0, 3), Mux(first[9], a, b)[3:64]),
                             Mux(first[9], word_address(b, 1), word_address(a, 1)))

        accessed = Cat(*(ev.size > i for i in range(4)))    # the ports port … port + 3 accessed
        bits = accessed << port[0:6]                # 0–63: in the first word, 64–66: the following

        # -- MSR bitmaps (§26.1.3, §25.6.9): read-low, read-high, write-low and write-high 1K quarters.
        # Within the ranges the bitmaps cover, bit 31 of the MSR tells high from low, and bit 0 of the
        # kind WRMSR from RDMSR: the adder's operands come straight from the inputs.
        assert K.WRMSR.value == K.RDMSR.value | 1
        msr = ev.index
        msr_write = ev.kind == K.WRMSR
        low = msr[13:32] == 0                       # 0–1FFFh
        high = msr[13:32] == 0xC000_0000 >> 13      # C0000000h–C0001FFFh
        msr_offset = Cat(msr[3:13], msr[31], ev.kind.as_value()[0])    # byte offset in the page
        msr_word = Cat(Const(0, 3), (ctl.msr_bitmap + msr_offset)[3:64])
        msr_check = proc[28] & (low | high)

        # Of the events that read bitmaps, bit 1 of the kind tells I/O from RDMSR and WRMSR; the
        # masks and addresses of other events do not matter (``bitmap_check`` and ``bitmap_reads``
        # are 0 for them).
        assert [kind.value >> 1 & 1 for kind in (K.IO, K.RDMSR, K.WRMSR)] == [1, 0, 0]
        io = ev.kind.as_value()[1]
        m.d.sync += [
            self.bitmap_addr[0].eq(Mux(io, first_word, msr_word)),
            self.bitmap_addr[1].eq(following_word),
            prep.bitmap_mask.eq(Mux(io, bits[0:64], Const(1, 1) << msr[0:6])),
            prep.bitmap_mask_next.eq(Mux(io, bits[64:67], 0)),
            self.bitmap_reads.eq(0), prep.bitmap_check.eq(0),
        ]
        with m.Switch(ev.kind):
            with m.Case(K.IO):
                m.d.sync += [self.bitmap_reads.eq(Mux(proc[25], Mux(crosses, 2, 1), 0)),
                             prep.bitmap_check.eq(proc[25])]
            with m.Case(K.RDMSR, K.WRMSR):
                m.d.sync += [self.bitmap_reads.eq(msr_check), prep.bitmap_check.eq(msr_check)]
        m.d.sync += prep.io_wraps.eq((first == 0x3FF) & bits[64:67].any())

        # -- sums and wide comparisons ----------------------------------------------------------------------
        count = ctl.cr3_target_count
        vector = ev.vector
        vmx_reason = Signal(16)
        from .vmcs_unit import VMXOp
        with m.Switch(ev.index[0:4]):               # the VMX operations are numbered below 16
            for name, reason_ in VMX_INSTRUCTION_EXIT_REASON.items():
                assert VMXOp[name].value < 16
                with m.Case(VMXOp[name].value):
                    m.d.comb += vmx_reason.eq(reason_)
        m.d.sync += [
            prep.vmx_reason.eq(Mux((ev.kind == K.VMX_INSTRUCTION) & (ev.index[4:32] == 0), vmx_reason, 0)),
            prep.rip_after.eq(g.rip + ev.length),
            prep.tsc_value.eq(self.tsc + Mux(proc[3], ctl.tsc_offset, 0)),
            prep.cr0_owned_change.eq((v & ctl.cr0_mask) != (ctl.cr0_shadow & ctl.cr0_mask)),
            prep.cr4_owned_change.eq((v & ctl.cr4_mask) != (ctl.cr4_shadow & ctl.cr4_mask)),
            prep.lmsw_owned_change.eq((ctl.cr0_mask[0] & v[0] & ~ctl.cr0_shadow[0]) |
                                      ((ctl.cr0_mask[1:4] & v[1:4]) != (ctl.cr0_mask[1:4] & ctl.cr0_shadow[1:4]))),
            prep.cr3_equal.eq(Cat(ctl.cr3_targets[i] == v for i in range(4))),
            prep.cr3_counted.eq(Cat(count[2:32].any() | (count[0:2] > i) for i in range(4))),
            prep.wait_for_sipi.eq(g.activity == 3),
            prep.exception_bit.eq(ctl.exception_bitmap.bit_select(vector[0:5], 1) & (vector[5:8] == 0)),
            prep.page_fault.eq(vector == 14),
            prep.pf_match.eq((ev.error_code & ctl.pfec_mask) == ctl.pfec_match),
        ]

        # -- the rules: what the event does, and when it exits (§26.1–26.2, §28.2) -------------------------
        # An instruction whose enabling control is off raises #UD (§25.6.2: "enable INVPCID", "enable
        # RDTSCP"), which is an exception like those the event reports (§26.2).
        instruction = ev.kind.as_value().matches(*_INSTRUCTIONS)
        ud = ((ev.kind == K.INVPCID) & ~proc2[12]) | ((ev.kind == K.RDTSCP) & ~proc2[3])
        exception = (ev.kind == K.EXCEPTION) | ud
        m.d.comb += [
            plan.instruction.eq(instruction),
            plan.completes.eq(instruction & ~ud),
            plan.halts.eq(ev.kind == K.HLT),
            plan.ud.eq(ud),
            plan.exception.eq(exception),
            plan.delivered.eq(ev.kind.as_value().matches(K.NMI, K.EXTERNAL_INTERRUPT) | exception),
            plan.instr_len.eq(Mux(instruction, ev.length, 0)),
            # monitor trap flag (§26.5.2): an exit after an instruction completes or an event is delivered
            plan.mtf_armed.eq(proc[27] & (plan.completes | plan.delivered)),
        ]

        def take(reason_, condition=1, *, qual=None):
            m.d.comb += [plan.exit.eq(condition), plan.reason.eq(reason_)]
            if qual is not None:
                m.d.comb += getattr(plan.qualification, qual).eq(1)

        control_bit = {"proc": proc, "proc2": proc2}
        with m.Switch(ev.kind):
            for kind, (reason_, control) in _INSTRUCTION_EXITS.items():
                with m.Case(kind):
                    take(reason_, 1 if control is None else control_bit[control[0]][control[1]],
                         qual="value" if kind == K.INVLPG else None)
                    if kind in (K.GDTR_IDTR_ACCESS, K.LDTR_TR_ACCESS):
                        m.d.comb += plan.instr_info.eq(ev.register[0:2])

            # (With #UD instead, these are exceptions: their reason and exit are an exception's.)
            with m.Case(K.INVPCID):
                take(ExitReason.INVPCID, proc[9])

            with m.Case(K.RDTSC, K.RDTSCP):
                take(Mux(ev.kind == K.RDTSC, ExitReason.RDTSC.value, ExitReason.RDTSCP.value), proc[12])
                with m.If(~ud):
                    m.d.comb += [plan.reads.tsc.eq(1), plan.value_valid.eq(1)]

            with m.Case(K.RDMSR, K.WRMSR):
                # Without the MSR bitmaps, or outside their ranges, it exits; else the bitmap bit does.
                take(Mux(msr_write, ExitReason.WRMSR.value, ExitReason.RDMSR.value), 0)
                guest_msr = Cat(msr == index for index in GUEST_MSRS)
                m.d.comb += [plan.exit_unless_bitmap.eq(1), plan.value_valid.eq(~msr_write),
                             plan.reads.msr.eq(guest_msr), plan.writes.msr.eq(Mux(msr_write, guest_msr, 0))]

            with m.Case(K.IO):
                # With the I/O bitmaps an access past FFFFh exits, else the bitmap bits do; without
                # them, "unconditional I/O exiting" decides.
                take(ExitReason.IO_INSTRUCTION, ~proc[25] & proc[24], qual="io")
                m.d.comb += [plan.exit_on_wrap.eq(proc[25]), plan.linear_is_value.eq(ev.string)]

            with m.Case(K.CR_WRITE, K.CR_READ):
                read = ev.kind == K.CR_READ
                take(ExitReason.CR_ACCESS, 0, qual="cr")
                m.d.comb += plan.read.eq(read)
                with m.Switch(ev.register):
                    with m.Case(0):
                        m.d.comb += plan.reads.cr0.eq(1)
                        with m.If(~read):
                            m.d.comb += [plan.exit_on_cr0_change.eq(1), plan.writes.cr0.eq(1)]
                    with m.Case(4):
                        m.d.comb += plan.reads.cr4.eq(1)
                        with m.If(~read):
                            m.d.comb += [plan.exit_on_cr4_change.eq(1), plan.writes.cr4.eq(1)]
                    with m.Case(3):
                        m.d.comb += [plan.reads.cr3.eq(1), plan.exit.eq(read & proc[16])]
                        with m.If(~read):
                            m.d.comb += [plan.exit_on_cr3_miss.eq(proc[15]), plan.writes.cr3.eq(1)]
                    with m.Case(8):
                        m.d.comb += [plan.reads.tpr.eq(1), plan.exit.eq(Mux(read, proc[20], proc[19]))]
                        with m.If(~read & ~proc[19]):
                            m.d.comb += plan.writes.tpr.eq(1)      # (and TPR below threshold: below)
                m.d.comb += plan.value_valid.eq(read)

            with m.Case(K.CLTS):
                ts_owned = ctl.cr0_mask[3]
                take(ExitReason.CR_ACCESS, ts_owned & ctl.cr0_shadow[3], qual="clts")
                m.d.comb += plan.writes.clts.eq(~ts_owned)

            with m.Case(K.LMSW):
                take(ExitReason.CR_ACCESS, 0, qual="lmsw")
                m.d.comb += [plan.exit_on_lmsw_change.eq(1), plan.writes.lmsw.eq(1)]

            with m.Case(K.DR_WRITE, K.DR_READ):
                read = ev.kind == K.DR_READ
                take(ExitReason.DR_ACCESS, proc[23], qual="dr")
                m.d.comb += [plan.read.eq(read), plan.reads.dr7.eq(ev.register == 7), plan.value_valid.eq(read),
                             plan.writes.dr7.eq(~read & (ev.register == 7))]

            with m.Case(K.VMX_INSTRUCTION):
                take(0)                             # the reason: ``prep.vmx_reason``

            with m.Case(K.TASK_SWITCH):
                source = ev.event_type.as_value()[0:2]
                take(ExitReason.TASK_SWITCH, qual="task")
                with m.If((source == TaskSwitchSource.CALL.value) | (source == TaskSwitchSource.JMP.value)):
                    m.d.comb += plan.instr_len.eq(ev.length)

            with m.Case(K.NMI):
                take(ExitReason.EXCEPTION_NMI, pin[3])
                m.d.comb += plan.nmi.eq(1)

            with m.Case(K.EXTERNAL_INTERRUPT):
                take(ExitReason.EXTERNAL_INTERRUPT, pin[0])
                m.d.comb += plan.acknowledged.eq(exit_ctls[15])       # "acknowledge interrupt on exit"

            with m.Case(K.INIT):
                take(ExitReason.INIT_SIGNAL)

            with m.Case(K.SIPI):
                take(ExitReason.SIPI, 0, qual="sipi")
                m.d.comb += plan.exit_on_sipi_wait.eq(1)

            with m.Case(K.TRIPLE_FAULT):
                take(ExitReason.TRIPLE_FAULT)

        # TPR below threshold (§29.1.2): a trap-like exit after a MOV to CR8 that does not exit
        # completed (stage 2 makes it an exit, stage 3 gives it its reason; no qualification).
        m.d.comb += plan.trap.eq((ev.kind == K.CR_WRITE) & (ev.register == 8) & ~proc[19] & proc[21] &
                                 ~proc2[9] & (v[0:4] < ctl.tpr_threshold[0:4]))

        # -- exceptions, including the #UD of an instruction whose control is off (§26.2, §25.6.3) -------
        # #UD is vector 6, a hardware exception without error code. Whether it exits, stage 2 works
        # out, and stage 3 gives it reason 0 (exception or NMI) and its interruption information. The
        # switch above planned nothing else for an exception: no qualification but for #PF, and the
        # guest state alone but for the activity state when it is delivered.
        assert ExitReason.EXCEPTION_NMI.value == 0
        hardware_type = ev.event_type == InterruptionType.HARDWARE_EXCEPTION
        error_valid = ~ud & hardware_type & Cat(ev.vector == n for n in EXCEPTIONS_WITH_ERROR_CODE).any()
        with m.If(exception):
            m.d.comb += [
                plan.qualification.value.eq(~ud & (ev.vector == 14)),   # #PF: the linear address
                plan.intr_error_valid.eq(error_valid),
                plan.instr_len.eq(Mux(ud | hardware_type, 0, ev.length)),
            ]
            with m.If(~ud & ev.during[31]):
                m.d.comb += [plan.idt_valid.eq(1), plan.idt_error_valid.eq(ev.during[11])]

        planned = Signal(_Plan)
        m.d.sync += planned.eq(plan)

        # == stage 2: the exit, from stage 1, the held inputs and the bitmap words =======================
        # The #PF error-code rule (§26.2): with a match the bit says whether #PF exits, else its inverse;
        # #UD looks at bit 6 of the exception bitmap.
        exception_exits = Mux(planned.ud, ctl.exception_bitmap[6],
                              Mux(prep.page_fault, prep.pf_match == prep.exception_bit, prep.exception_bit))
        exit_ = Mux(planned.exception, exception_exits,
                    planned.exit | planned.trap |
                    (planned.exit_on_cr0_change & prep.cr0_owned_change) |
                    (planned.exit_on_cr4_change & prep.cr4_owned_change) |
                    (planned.exit_on_lmsw_change & prep.lmsw_owned_change) |
                    (planned.exit_on_cr3_miss & ~(prep.cr3_equal & prep.cr3_counted).any()) |
                    (planned.exit_on_wrap & prep.io_wraps) |
                    (planned.exit_unless_bitmap & ~prep.bitmap_check) |
                    (planned.exit_on_sipi_wait & prep.wait_for_sipi))

        # -- the bitmap bits: any set bit of the words under the masks ----------------------------------
        words = self.bitmap_words
        bitmap_hit = (words[0] & prep.bitmap_mask).any() | (words[1][0:3] & prep.bitmap_mask_next).any()
        bitmap_exit = prep.bitmap_check & bitmap_hit

        # -- a fault-like exit leaves the guest state as it was: each group the event changes ---------------
        fault = (exit_ & ~planned.trap) | bitmap_exit
        writes = planned.writes
        changes = {"cr0": writes.cr0 | writes.clts | writes.lmsw, "cr3": writes.cr3, "cr4": writes.cr4,
                   "tpr": writes.tpr, "dr7": writes.dr7, "completion": planned.completes | planned.delivered}
        dec = Signal(_Decided)
        m.d.sync += [
            dec.exit.eq(exit_), dec.bitmap_exit.eq(bitmap_exit),
            dec.mtf.eq(planned.mtf_armed & ~exit_ & ~bitmap_exit),
            *(getattr(dec.unchanged, group).eq(fault & change) for group, change in changes.items()),
            dec.unchanged.msr.eq(Mux(fault, writes.msr, 0)),
        ]

        # == stage 3: the outputs, from the registers of stages 1 and 2 and the held inputs ===============
        # (Stage 1's registers hold while the inputs are held.)

        # -- what the guest reads: CR0 and CR4 show the read shadow in the bits the host owns -------------
        sources = [
            (planned.reads.tsc, prep.tsc_value),
            (planned.reads.cr0, (g.cr0 & ~ctl.cr0_mask) | (ctl.cr0_shadow & ctl.cr0_mask)),
            (planned.reads.cr4, (g.cr4 & ~ctl.cr4_mask) | (ctl.cr4_shadow & ctl.cr4_mask)),
            (planned.reads.cr3, g.cr3),
            (planned.reads.tpr, g.tpr),
            (planned.reads.dr7, g.dr7),
            *((planned.reads.msr[i], getattr(g, name)) for i, name in enumerate(GUEST_MSRS.values())),
        ]
        value = Const(0, 64)
        for select, source in sources:
            value = value | Mux(select, source, 0)

        # -- the guest state afterwards: the writes, and completion: RIP advances, blocking by STI and by
        # MOV SS ends, the processor is active (or in the HLT state); delivery through the IDT also
        # makes it active. It is also the state a trap-like exit reports; a fault-like exit leaves the
        # state as it was. ------------------------------------------------------------------------------------
        nxt = Signal(GuestRegisters)
        mask0, mask4 = ctl.cr0_mask, ctl.cr4_mask
        m.d.comb += nxt.eq(g)
        with m.If(planned.writes.cr0):               # MOV to CR0: the guest sets the bits it owns
            m.d.comb += nxt.cr0.eq((g.cr0 & mask0) | (v & ~mask0))
        with m.If(planned.writes.clts):              # CLTS, TS not host-owned
            m.d.comb += nxt.cr0[3].eq(0)
        with m.If(planned.writes.lmsw):              # LMSW: bits 3:1 it owns; it can set PE, never clear it
            m.d.comb += [nxt.cr0[1:4].eq((g.cr0[1:4] & mask0[1:4]) | (v[1:4] & ~mask0[1:4])),
                         nxt.cr0[0].eq(g.cr0[0] | (v[0] & ~mask0[0]))]
        with m.If(planned.writes.cr4):
            m.d.comb += nxt.cr4.eq((g.cr4 & mask4) | (v & ~mask4))
        with m.If(planned.writes.cr3):
            m.d.comb += nxt.cr3.eq(v)
        with m.If(planned.writes.tpr):
            m.d.comb += nxt.tpr.eq(v[0:4])
        with m.If(planned.writes.dr7):
            m.d.comb += nxt.dr7.eq(v)
        for i, name in enumerate(GUEST_MSRS.values()):
            with m.If(planned.writes.msr[i]):
                m.d.comb += getattr(nxt, name).eq(v)
        with m.If(planned.completes):
            m.d.comb += [nxt.rip.eq(prep.rip_after), nxt.interruptibility[0:2].eq(0),
                         nxt.activity.eq(Mux(planned.halts, 1, 0))]
        with m.If(planned.delivered):
            m.d.comb += nxt.activity.eq(0)
        for group in ("cr0", "cr3", "cr4", "tpr", "dr7"):
            with m.If(getattr(dec.unchanged, group)):
                m.d.comb += getattr(nxt, group).eq(getattr(g, group))
        for i, name in enumerate(GUEST_MSRS.values()):
            with m.If(dec.unchanged.msr[i]):
                m.d.comb += getattr(nxt, name).eq(getattr(g, name))
        with m.If(dec.unchanged.completion):
            m.d.comb += [nxt.rip.eq(g.rip), nxt.interruptibility[0:2].eq(g.interruptibility[0:2]),
                         nxt.activity.eq(g.activity)]
        m.d.sync += self.next_guest.eq(nxt)

        # -- the exit qualification (§28.2.1, tables 28-1 … 28-7) and the interruption information
        # (§28.2.2: vector, type, error code valid, valid) -----------------------------------------------------
        qualifications = {
            "value": v,
            "io":    Cat((ev.size - 1)[:3], ev.direction_in, ev.string, ev.rep, ev.immediate, Const(0, 9), port),
            "cr":    Cat(ev.register, planned.read, Const(0, 3), ev.gpr),
            "clts":  Const(2 << 4, 6),
            "lmsw":  Cat(Const(3 << 4, 16), v[0:16]),
            "dr":    Cat(ev.register[0:3], Const(0, 1), planned.read, Const(0, 3), ev.gpr),
            "task":  Cat(ev.index[0:16], Const(0, 14), ev.event_type.as_value()[0:2]),
            "sipi":  ev.vector,
        }
        qualification = Const(0, 64)
        for name, format in qualifications.items():
            qualification = qualification | Mux(getattr(planned.qualification, name), format, 0)
        ud, hardware = planned.ud, InterruptionType.HARDWARE_EXCEPTION.value
        exception_info = Cat(Mux(ud, 6, ev.vector), Mux(ud, hardware, ev.event_type.as_value()),
                             planned.intr_error_valid, Const(0, 19), Const(1, 1))
        nmi_info = Cat(Const(2, 8), Const(InterruptionType.NMI.value, 3), Const(0, 20), Const(1, 1))
        interrupt_info = Cat(ev.vector, Const(0, 23), Const(1, 1))
        intr_info = (Mux(planned.exception, exception_info, 0) | Mux(planned.nmi, nmi_info, 0) |
                     Mux(planned.acknowledged, interrupt_info, 0))

        # -- the decision: the monitor trap flag exit, or the exit (or none) ------------------------------
        d = self.decision
        exits = dec.exit | dec.bitmap_exit
        m.d.sync += d.eq(0)
        with m.If(dec.mtf):
            m.d.sync += [d.exit.eq(1), d.reason.eq(ExitReason.MONITOR_TRAP_FLAG),
                         d.value.eq(value), d.value_valid.eq(planned.value_valid)]
        with m.Else():
            m.d.sync += [
                d.exit.eq(exits),
                d.reason.eq(Mux(planned.trap, ExitReason.TPR_BELOW_THRESHOLD,
                                Mux(planned.exception, ExitReason.EXCEPTION_NMI,
                                    planned.reason | prep.vmx_reason))),
                d.qualification.eq(Mux(planned.trap, 0, qualification)),
                d.intr_info.eq(intr_info),
                d.intr_error.eq(Mux(planned.intr_error_valid, ev.error_code, 0)),
                d.idt_info.eq(Mux(planned.idt_valid, ev.during, 0)),
                d.idt_error.eq(Mux(planned.idt_error_valid, ev.during_error, 0)),
                d.instr_len.eq(Mux(exits, planned.instr_len, 0)),
                d.instr_info.eq(Cat(Const(0, 28), planned.instr_info)),
                d.guest_linear.eq(Mux(planned.linear_is_value, v, 0)),
                d.value.eq(value), d.value_valid.eq(planned.value_valid & ~exits),
            ]
        return m
