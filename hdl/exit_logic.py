"""VM exits: the exit reasons, the guest-event port and the exit decision.

* :class:`ExitReason` is the one table of basic exit reasons (Intel SDM vol. 3C appendix C, "VMX
  basic exit reasons"). The exit-reason VMCS field (0x4402) holds the basic reason in bits 15:0 and
  sets bit 31 for VM-entry failures (reasons 33, 34 and 41).
* :class:`GuestEvent` is what the rest of the processor reports through the guest-event port: an
  instruction with its operands, an exception, an interrupt, NMI, INIT, SIPI, a task switch, a
  triple fault, or time passing.
* :class:`ExitDecider` decides, for every VM-execution control, whether the event exits and encodes
  the exit information (SDM vol. 3C chapter 26, "VMX non-root operation", and §28.2, "Recording VM-exit
  information"). The state switch of §28.3–28.6 is sequenced by
  :class:`~hwvirt.hdl.vmcs_unit.VMCSUnit`.
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


class ExitDecider(wiring.Component):
    """The exit decision for a guest event in VMX non-root operation (SDM vol. 3C §26.1–26.2, §27.2).

    Combinational. Given the event, the controls and the guest state, it says whether the event
    causes a VM exit, with the basic exit reason (§28.2.1), the exit qualification (§28.2.1 tables
    28-1 … 28-7), the interruption and IDT-vectoring information (§28.2.2–28.2.4), instruction
    length and information (§28.2.5); or, without an exit, what the guest reads (``value``) and its
    state afterwards (``next_guest``). After a fault-like exit ``next_guest`` is the unchanged guest
    state (RIP at the instruction); after a trap-like exit (TPR below threshold, monitor trap flag)
    and without an exit, the state after the instruction.

    Bitmaps in memory: the decider names up to two 8-byte words (``bitmap_reads``, ``bitmap_addr``,
    byte addresses) holding the I/O-bitmap bits of the accessed ports (§26.1.3) or the MSR-bitmap bit
    (§26.1.3, §25.6.9); the caller reads them into ``bitmap_words`` before using ``decision``.

    The boundary exits taken before an instruction (§26.7 priority: pending MTF after a VM entry,
    the VMX-preemption timer, NMI window, interrupt window) are ``boundary_exit``/``boundary_reason``.

    Model choices: CPL-dependent #GP and the 64-bit-mode-only rule for CR8 come before the exit on
    real hardware and are not modelled (the guest is taken to run at CPL 0); PAUSE-loop exiting,
    VMCS shadowing, APIC virtualisation and TSC scaling are not modelled. The guest's TPR is the
    4-bit ``tpr`` (CR8) register.
    """

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
        d, nxt = self.decision, self.next_guest
        K = GuestEventKind
        pin, proc, proc2, exit_ctls = ctl.pin, ctl.proc, ctl.proc2, ctl.exit

        # -- boundary exits (§26.7.1–26.7.6) ------------------------------------------------------------
        nmi_window = proc[22] & ~g.interruptibility[3] & ~g.interruptibility[1]
        interrupt_window = proc[2] & g.rflags[9] & ~g.interruptibility[0:2].any()
        with m.If(self.at_entry & self.mtf_pending):
            m.d.comb += [self.boundary_exit.eq(1), self.boundary_reason.eq(ExitReason.MONITOR_TRAP_FLAG)]
        with m.Elif(self.timer_expired):
            m.d.comb += [self.boundary_exit.eq(1), self.boundary_reason.eq(ExitReason.PREEMPTION_TIMER)]
        with m.Elif(nmi_window):
            m.d.comb += [self.boundary_exit.eq(1), self.boundary_reason.eq(ExitReason.NMI_WINDOW)]
        with m.Elif(interrupt_window):
            m.d.comb += [self.boundary_exit.eq(1), self.boundary_reason.eq(ExitReason.INTERRUPT_WINDOW)]

        # -- the raw decision -------------------------------------------------------------------------
        exit_ = Signal()
        reason = Signal(16)
        qualification = Signal(64)
        instr_len = Signal(32)
        instr_info = Signal(32)
        guest_linear = Signal(64)
        value = Signal(64)
        value_valid = Signal()
        completes = Signal()       # an instruction that does not exit completes (RIP advances)
        delivered = Signal()       # an event delivered to the guest without an exit
        trap = Signal()            # the exit is trap-like: the instruction completed
        ud = Signal()              # the instruction raises #UD instead (a control is off)

        m.d.comb += nxt.eq(g)

        def take(reason_, condition=1, *, qual=0, instruction=True):
            m.d.comb += [exit_.eq(condition), reason.eq(reason_), qualification.eq(qual)]
            if instruction:
                m.d.comb += [instr_len.eq(ev.length), completes.eq(~exit_)]

        control_bit = {"proc": proc, "proc2": proc2}
        with m.Switch(ev.kind):
            for kind, (reason_, control) in _INSTRUCTION_EXITS.items():
                with m.Case(kind):
                    condition = 1 if control is None else control_bit[control[0]][control[1]]
                    take(reason_, condition, qual=ev.value if kind == K.INVLPG else 0)
                    if kind in (K.GDTR_IDTR_ACCESS, K.LDTR_TR_ACCESS):
                        m.d.comb += instr_info.eq(Cat(Const(0, 28), ev.register[0:2]))
                    if kind == K.HLT:
                        with m.If(~exit_):
                            m.d.comb += nxt.activity.eq(1)

            with m.Case(K.INVPCID):
                with m.If(~proc2[12]):
                    m.d.comb += ud.eq(1)
                with m.Else():
                    take(ExitReason.INVPCID, proc[9])

            with m.Case(K.RDTSC, K.RDTSCP):
                tsc_value = (self.tsc + Mux(proc[3], ctl.tsc_offset, 0))[:64]
                with m.If((ev.kind == K.RDTSCP) & ~proc2[3]):
                    m.d.comb += ud.eq(1)
                with m.Else():
                    take(Mux(ev.kind == K.RDTSC, ExitReason.RDTSC.value, ExitReason.RDTSCP.value), proc[12])
                    m.d.comb += [value.eq(tsc_value), value_valid.eq(1)]

            with m.Case(K.RDMSR, K.WRMSR):
                msr = ev.index
                write = ev.kind == K.WRMSR
                low = msr < 0x2000
                high = (msr >= 0xC000_0000) & (msr < 0xC000_2000)
                offset = Cat(msr[3:13], Const(0, 0), high, write)      # byte offset in the page
                m.d.comb += [
                    self.bitmap_reads.eq(Mux(proc[28] & (low | high), 1, 0)),
                    self.bitmap_addr[0].eq(Cat(Const(0, 3), (ctl.msr_bitmap + offset)[3:64])),
                ]
                bit = self.bitmap_words[0].bit_select(msr[0:6], 1)
                take(Mux(write, ExitReason.WRMSR.value, ExitReason.RDMSR.value), ~proc[28] | ~(low | high) | bit)
                with m.Switch(msr):
                    for index, name in GUEST_MSRS.items():
                        with m.Case(index):
                            m.d.comb += value.eq(getattr(g, name))
                            with m.If(write & ~exit_):
                                m.d.comb += getattr(nxt, name).eq(ev.value)
                m.d.comb += value_valid.eq(~write)

            with m.Case(K.IO):
                port = ev.port
                last = (port + ev.size - 1)[:17]
                def word_of(q):
                    base = Mux(q[15], ctl.io_bitmap_b, ctl.io_bitmap_a)
                    return Cat(Const(0, 3), (base + Cat(Const(0, 3), q[6:15]))[3:64])
                first_word, last_word = word_of(port), word_of(last[:16])
                m.d.comb += [
                    self.bitmap_reads.eq(Mux(proc[25], Mux(first_word == last_word, 1, 2), 0)),
                    self.bitmap_addr[0].eq(first_word),
                    self.bitmap_addr[1].eq(last_word),
                ]
                bits = []
                for i in range(4):
                    q = (port + i)[:17]
                    word = Mux(word_of(q[:16]) == first_word, self.bitmap_words[0], self.bitmap_words[1])
                    bits.append((i < ev.size) & (q[16] | word.bit_select(q[0:6], 1)))
                io_exit = Mux(proc[25], Cat(*bits).any(), proc[24])
                take(ExitReason.IO_INSTRUCTION, io_exit,
                     qual=Cat((ev.size - 1)[:3], ev.direction_in, ev.string, ev.rep, ev.immediate,
                              Const(0, 9), port))
                m.d.comb += guest_linear.eq(Mux(ev.string, ev.value, 0))

            with m.Case(K.CR_WRITE, K.CR_READ):
                read = ev.kind == K.CR_READ
                take(ExitReason.CR_ACCESS, 0, qual=Cat(ev.register, read, Const(0, 3), ev.gpr))
                v = ev.value
                with m.Switch(ev.register):
                    for cr, mask, shadow in ((0, ctl.cr0_mask, ctl.cr0_shadow), (4, ctl.cr4_mask, ctl.cr4_shadow)):
                        current = g.cr0 if cr == 0 else g.cr4
                        with m.Case(cr):
                            m.d.comb += value.eq((current & ~mask) | (shadow & mask))
                            with m.If(~read):
                                m.d.comb += exit_.eq((v & mask) != (shadow & mask))
                                with m.If(~exit_):
                                    m.d.comb += getattr(nxt, f"cr{cr}").eq((current & mask) | (v & ~mask))
                    with m.Case(3):
                        m.d.comb += value.eq(g.cr3)
                        count = Mux(ctl.cr3_target_count > 4, 4, ctl.cr3_target_count)
                        hit = Cat((i < count) & (ctl.cr3_targets[i] == v) for i in range(4)).any()
                        m.d.comb += exit_.eq(Mux(read, proc[16], proc[15] & ~hit))
                        with m.If(~read & ~exit_):
                            m.d.comb += nxt.cr3.eq(v)
                    with m.Case(8):
                        m.d.comb += [value.eq(g.tpr), exit_.eq(Mux(read, proc[20], proc[19]))]
                        with m.If(~read & ~proc[19]):
                            m.d.comb += nxt.tpr.eq(v[0:4])
                            # TPR below threshold (§29.1.2): trap-like, after the write completed.
                            with m.If(proc[21] & ~proc2[9] & (v[0:4] < ctl.tpr_threshold[0:4])):
                                m.d.comb += [exit_.eq(1), trap.eq(1), reason.eq(ExitReason.TPR_BELOW_THRESHOLD),
                                             qualification.eq(0)]
                m.d.comb += value_valid.eq(read)

            with m.Case(K.CLTS):
                ts_owned = ctl.cr0_mask[3]
                take(ExitReason.CR_ACCESS, ts_owned & ctl.cr0_shadow[3], qual=2 << 4)
                with m.If(~ts_owned):
                    m.d.comb += nxt.cr0[3].eq(0)

            with m.Case(K.LMSW):
                mask, shadow, w = ctl.cr0_mask, ctl.cr0_shadow, ev.value
                take(ExitReason.CR_ACCESS,
                     (mask[0] & w[0] & ~shadow[0]) | ((mask[1:4] & w[1:4]) != (mask[1:4] & shadow[1:4])),
                     qual=Cat(Const(3 << 4, 16), w[0:16]))
                m.d.comb += [
                    nxt.cr0[1:4].eq((g.cr0[1:4] & mask[1:4]) | (w[1:4] & ~mask[1:4])),
                    nxt.cr0[0].eq(g.cr0[0] | (w[0] & ~mask[0])),
                ]

            with m.Case(K.DR_WRITE, K.DR_READ):
                read = ev.kind == K.DR_READ
                take(ExitReason.DR_ACCESS, proc[23], qual=Cat(ev.register[0:3], Const(0, 1), read,
                                                               Const(0, 3), ev.gpr))
                m.d.comb += [value.eq(Mux(ev.register == 7, g.dr7, 0)), value_valid.eq(read)]
                with m.If(~read & (ev.register == 7)):
                    m.d.comb += nxt.dr7.eq(ev.value)

            with m.Case(K.VMX_INSTRUCTION):
                take(0)
                from .vmcs_unit import VMXOp
                with m.Switch(ev.index):
                    for name, reason_ in VMX_INSTRUCTION_EXIT_REASON.items():
                        with m.Case(VMXOp[name].value):
                            m.d.comb += reason.eq(reason_)

            with m.Case(K.TASK_SWITCH):
                source = ev.event_type.as_value()[0:2]
                take(ExitReason.TASK_SWITCH, qual=Cat(ev.index[0:16], Const(0, 14), source), instruction=False)
                with m.If((source == TaskSwitchSource.CALL.value) | (source == TaskSwitchSource.JMP.value)):
                    m.d.comb += instr_len.eq(ev.length)

            with m.Case(K.NMI):
                take(ExitReason.EXCEPTION_NMI, pin[3], instruction=False)
                m.d.comb += delivered.eq(~pin[3])

            with m.Case(K.EXTERNAL_INTERRUPT):
                take(ExitReason.EXTERNAL_INTERRUPT, pin[0], instruction=False)
                m.d.comb += delivered.eq(~pin[0])

            with m.Case(K.INIT):
                take(ExitReason.INIT_SIGNAL, instruction=False)

            with m.Case(K.SIPI):
                take(ExitReason.SIPI, g.activity == 3, qual=ev.vector, instruction=False)

            with m.Case(K.TRIPLE_FAULT):
                take(ExitReason.TRIPLE_FAULT, instruction=False)

        # -- exceptions, including the #UD of an instruction whose control is off (§26.2, §25.6.3) -------
        exception = (ev.kind == K.EXCEPTION) | ud
        vector = Mux(ud, 6, ev.vector)
        etype = Mux(ud, InterruptionType.HARDWARE_EXCEPTION.value, ev.event_type.as_value())
        hardware = etype == InterruptionType.HARDWARE_EXCEPTION.value
        error_valid = Signal()
        with m.Switch(vector):
            for v in EXCEPTIONS_WITH_ERROR_CODE:
                with m.Case(v):
                    m.d.comb += error_valid.eq(hardware)
        pf_match = (ev.error_code & ctl.pfec_mask) == ctl.pfec_match
        bitmap_bit = ctl.exception_bitmap.bit_select(vector[0:5], 1)
        exception_exits = Mux(vector == 14, pf_match == bitmap_bit, bitmap_bit) & (vector < 32)
        intr_info = Signal(32)
        intr_error = Signal(32)
        idt_info = Signal(32)
        idt_error = Signal(32)
        with m.If(exception):
            m.d.comb += [
                exit_.eq(exception_exits), reason.eq(ExitReason.EXCEPTION_NMI),
                qualification.eq(Mux(vector == 14, ev.value, 0)),
                intr_info.eq(Cat(vector, etype, error_valid, Const(0, 19), Const(1, 1))),
                intr_error.eq(Mux(error_valid, ev.error_code, 0)),
                instr_len.eq(Mux(hardware, 0, ev.length)),
                completes.eq(0), value_valid.eq(0),
                delivered.eq(~exception_exits),
                nxt.eq(g),
            ]
            with m.If(~ud & ev.during[31]):
                m.d.comb += [idt_info.eq(ev.during), idt_error.eq(Mux(ev.during[11], ev.during_error, 0))]
        with m.Elif(ev.kind == K.NMI):
            m.d.comb += intr_info.eq(Cat(Const(2, 8), Const(InterruptionType.NMI.value, 3), Const(0, 20),
                                         Const(1, 1)))
        with m.Elif(ev.kind == K.EXTERNAL_INTERRUPT):
            m.d.comb += intr_info.eq(Mux(exit_ctls[15], Cat(ev.vector, Const(0, 23), Const(1, 1)), 0))

        # -- completion: RIP advances, one-instruction blocking ends, the processor is active ---------
        with m.If(completes):
            m.d.comb += [
                nxt.rip.eq((g.rip + ev.length)[:64]),
                nxt.interruptibility[0:2].eq(0),
            ]
            with m.If(ev.kind != K.HLT):
                m.d.comb += nxt.activity.eq(0)
        with m.If(delivered):
            m.d.comb += nxt.activity.eq(0)
        with m.If(exit_ & ~trap):
            m.d.comb += nxt.eq(g)
        with m.If(trap):
            m.d.comb += [nxt.rip.eq((g.rip + ev.length)[:64]), nxt.interruptibility[0:2].eq(0),
                         nxt.activity.eq(0)]

        # -- monitor trap flag: an exit after an instruction completes or an event is delivered ----------
        mtf = proc[27] & ~exit_ & (completes | delivered)
        with m.If(mtf):
            m.d.comb += [d.exit.eq(1), d.reason.eq(ExitReason.MONITOR_TRAP_FLAG),
                         d.value.eq(value), d.value_valid.eq(value_valid)]
        with m.Else():
            m.d.comb += [
                d.exit.eq(exit_), d.reason.eq(reason), d.qualification.eq(qualification),
                d.intr_info.eq(intr_info), d.intr_error.eq(intr_error),
                d.idt_info.eq(idt_info), d.idt_error.eq(idt_error),
                d.instr_len.eq(Mux(exit_, instr_len, 0)),
                d.instr_info.eq(instr_info), d.guest_linear.eq(guest_linear),
                d.value.eq(value), d.value_valid.eq(value_valid & ~exit_),
            ]
        return m
