"""The AMD SVM unit: VMRUN, VMLOAD, VMSAVE, STGI, CLGI, VMMCALL, INVLPGA, the SVM host MSRs, the
VMRUN consistency checks, intercepts and #VMEXIT over a VMCB in memory, with nested paging through
the shared walker.

Architecture (AMD APM vol. 2 chapter 15, "Secure Virtual Machine"):

* Host MSRs (§15.30): EFER (SVME, bit 12), VM_CR (0xC001_0114; SVMDIS bit 4, LOCK bit 3) and
  VM_HSAVE_PA (0xC001_0117), written and read with the WRMSR / RDMSR commands.
* VMRUN (§15.5): #UD when EFER.SVME = 0, #GP(0) when CPL ≠ 0 or rAX is not 4 KiB aligned or sets a
  bit at or above MAXPHYADDR. Otherwise: the host state is saved to the host save area at
  VM_HSAVE_PA, the VMCB (control area and state-save area, :data:`LOAD_WORDS`) is read, every
  consistency check of :data:`~hwvirt.hdl.svm_check_catalogue.CHECKS` (§15.5.1) is evaluated at once;
  any failure → #VMEXIT(INVALID): EXITCODE = −1, ``check`` = 1 + index of the first failing check.
  Otherwise EFER.LMA := LME & CR0.PG, TLB_CONTROL is applied (§15.16.1), GIF := 1, the guest runs and
  EVENTINJ (§15.20) is delivered (reported in the result's ``event``).
* Guest events (the :class:`~hwvirt.hdl.exit_logic.GuestEvent` port shared with VMX) are decided
  against the intercept vectors (§15.9–15.13): CR/DR reads and writes (with decode-assist EXITINFO1,
  §15.33), exceptions 0x40–0x5F, INTR, NMI, SMI, INIT, VINTR, CPUID, HLT, INVLPG, IOIO through the
  IOPM in memory (§15.10.1, EXITINFO1 of §15.10.2), MSR through the MSRPM in memory (§15.11), SHUTDOWN,
  the SVM instructions, RDTSC(P), RDPMC, PAUSE (with the pause filter count), MONITOR, MWAIT
  (armed / unconditional), XSETBV, WBINVD, INVD, INVPCID, task switches, descriptor-table accesses.
* #VMEXIT (§15.6): EXITCODE, EXITINFO1/2, EXITINTINFO (an event whose delivery was interrupted,
  §15.7.2), nRIP (§15.7.1, when ``nrip_save``) and the guest state are written to the VMCB, EVENTINJ.V
  is cleared, the host state is read back from the host save area, GIF := 0.
* VMLOAD / VMSAVE (§15.5.2): FS, GS, TR, LDTR (with hidden parts), KernelGsBase, STAR, LSTAR, CSTAR,
  SFMASK, SYSENTER_CS/ESP/EIP between the VMCB at rAX and on-chip registers.
* Guest memory accesses (the ``mem`` port): with NP_ENABLE, translated by
  :class:`~hwvirt.hdl.ept_walker.EPTWalker` in its nested-paging mode (§15.25); a nested fault is
  #VMEXIT(NPF, 0x400) with the walker's EXITINFO1 and the GPA in EXITINFO2.
* ASIDs and TLB control (§15.16): walker entries are tagged by the guest ASID (as VPID) and N_CR3.
  TLB_CONTROL 1 invalidates every entry, 3 the entries of this guest (its ASID's combined entries and
  the nested entries of its N_CR3), 7 this ASID's non-global combined entries. INVLPGA removes one
  page of an ASID.
* VMCB clean bits (§15.15.3): the unit keeps an on-chip copy of every VMCB word VMRUN reads. When
  VMRUN runs the same VMCB as the previous VMRUN (that entered the guest), words of a clean group
  whose bit is set in VMCB_CLEAN are taken from the copy and not read again.

Model choices (not pinned down by the APM, or simplifications):

* Host save area format: the state-save-area offsets of a VMCB (:data:`HOST_WORDS`); #VMEXIT reads
  the host state back from memory (not from an on-chip copy), so it costs :data:`HOST_WORDS` reads.
* The words VMRUN reads are 64-bit words; a word holding fields of several clean groups, or a field
  no clean bit covers (TLB_CONTROL shares its word with the ASID; EVENTINJ, interrupt state, RFLAGS,
  RIP, RSP, RAX), is always read.
* VMCALL (the Intel instruction) reported by the guest port is treated as VMMCALL. SVM instructions
  in the guest are ``VMX_INSTRUCTION`` events whose ``index`` is an
  :class:`~hwvirt.hdl.svm_check_catalogue.SVMInstruction`; SMI is the event kind value
  :data:`KIND_SMI` (:attr:`~hwvirt.hdl.exit_logic.GuestEventKind.SMI`).
  A host command (``cmd``) offered while the guest runs is executed *by the guest*: it becomes the
  equivalent guest event (SVM instruction, RDMSR / WRMSR of ECX).
* Not intercepted: the instruction completes (RIP advances by ``length``); VMLOAD, VMSAVE, STGI,
  CLGI, SKINIT and INVLPGA in the guest have no effect (no nested virtualisation); an exception, NMI,
  interrupt, INIT or SMI is taken by the guest (``no_exit``; a #UD or #PF the guest takes is reported
  as ``fault``). A triple fault without the SHUTDOWN intercept is reported as ``no_exit``.
* IOIO EXITINFO1 bits 12:10 (effective segment): 3 (DS) for a string OUT, else 0. The address size is
  64 bits in 64-bit mode, else 32 or 16 by CS.D.
* VINTR: checked on a ``run`` event: V_IRQ = 1, VINTR intercepted, guest RFLAGS.IF = 1, no interrupt
  shadow and (V_IGN_TPR or V_INTR_PRIO > V_TPR) → #VMEXIT(VINTR).
* PAUSE filter: the count (PAUSE_FILTER_COUNT) is loaded at VMRUN; an intercepted PAUSE with a
  non-zero count decrements it instead of exiting; the threshold is not modelled.
* RDTSC reads a free-running cycle counter plus TSC_OFFSET.
* Nested tables are always in the long-mode 4-level format (the host is taken to be in long mode).
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, enum, wiring
from amaranth.lib.wiring import In, Out

from .bus import WishboneSignature
from .ept_walker import Access, EPTWalker, InvalidationKind, Outcome as WalkOutcome
from .exit_logic import EXCEPTIONS_WITH_ERROR_CODE, GuestEvent, GuestEventKind, InterruptionType
from .svm_check_catalogue import (CHECKS, CR4_RESERVED, EFER_RESERVED, MSR_EFER, MSR_VM_CR, MSR_VM_HSAVE_PA,
                                  PAT_TYPES, SVMInstruction, CleanBit, ExitCode)


__all__ = ["SVMOp", "Outcome", "Fault", "SVMCommand", "SVMResult", "Segment", "HostState", "SVMStatus",
           "GuestAccess", "SVMUnit", "LOAD_WORDS", "HOST_WORDS", "EXIT_WORDS", "VMLOAD_WORDS", "KIND_SMI",
           "HOST_EFER_VALID", "CHECK_RULES"]

#: The guest-event kind value that reports an SMI (until GuestEventKind names one).
KIND_SMI = GuestEventKind.SMI.value
#: EFER bits the host may set: SCE, LME, LMA, NXE, SVME, LMSLE, FFXSR, TCE (APM vol. 2 §3.1.7).
HOST_EFER_VALID = 0xFD01


class SVMOp(enum.Enum, shape=4):
    """Commands: the host's SVM instructions and its MSR accesses."""
    VMRUN   = 0
    VMLOAD  = 1
    VMSAVE  = 2
    STGI    = 3
    CLGI    = 4
    VMMCALL = 5
    WRMSR   = 6
    RDMSR   = 7
    INVLPGA = 8


class Outcome(enum.Enum, shape=3):
    SUCCEED = 0     # the instruction completed (host)
    FAULT   = 1     # #UD or #GP(0) instead of the instruction (host)
    ENTERED = 2     # VMRUN entered the guest
    EXIT    = 3     # #VMEXIT (including VMRUN's #VMEXIT(INVALID)); host state restored
    NO_EXIT = 4     # a guest event that did not exit
    NO_GUEST = 5    # a guest event or guest access while no guest runs (ignored)


class Fault(enum.Enum, shape=2):
    NONE = 0
    UD   = 1        # invalid opcode
    GP   = 2        # general protection, error code 0
    PF   = 3        # (no_exit only) a page fault delivered to the guest


class SVMCommand(data.Struct):
    """One host instruction with its register operands: rAX (VMCB address, INVLPGA linear address),
    ECX (MSR index, INVLPGA ASID) and the 64-bit value EDX:EAX for WRMSR."""
    op:    SVMOp
    rax:   64
    ecx:   32
    value: 64


class SVMResult(data.Struct):
    """The answer to a command or a guest event.

    ``exit_code`` is the EXITCODE (all ones for INVALID); ``exitintinfo`` holds EXITINTINFO in bits
    31:0 and its error code in 63:32; ``check`` is 1 + the catalogue index of the VMRUN check that
    failed (0: none); ``value`` the RDMSR value, the value a guest read, or the host-physical address
    of a translated guest access; ``event`` the EVENTINJ (with its error code in 63:32) a VMRUN
    delivered (bit 31 valid); ``tlb_control`` the TLB_CONTROL a VMRUN applied.
    """
    outcome:     Outcome
    fault:       Fault
    exit_code:   64
    exitinfo1:   64
    exitinfo2:   64
    exitintinfo: 64
    check:       8
    value:       64
    event:       64
    tlb_control: 8


class Segment(data.Struct):
    """A segment register in VMCB format (APM vol. 2 appendix B, table B-2): two 64-bit words."""
    selector: 16
    attrib:   16
    limit:    32
    base:     64


class HostState(data.Struct):
    """The host processor state VMRUN saves and #VMEXIT restores (§15.5.1, §15.6). ``rip`` is the
    RIP of the instruction after VMRUN. EFER is the unit's own MSR."""
    es:     Segment
    cs:     Segment
    ss:     Segment
    ds:     Segment
    gdtr:   Segment     # limit and base used
    idtr:   Segment
    cr0:    64
    cr3:    64
    cr4:    64
    rflags: 64
    rip:    64
    rsp:    64
    rax:    64
    pat:    64
    cpl:    2


class SVMStatus(data.Struct):
    gif:   1    # global interrupt flag
    guest: 1    # a guest runs
    svme:  1    # EFER.SVME


class GuestAccess(data.Struct):
    """A guest memory access to translate (the ``mem`` port): the guest-physical address ``gpa``, or
    with ``paging`` = 1 the guest-linear address ``linear`` walked through the guest's tables from
    guest CR3 (two-dimensional walk)."""
    gpa:    64
    linear: 64
    access: Access
    paging: 1


# -- the VMCB words the unit moves (byte offsets) ----------------------------------------------------

_C = CleanBit
#: The 64-bit VMCB words VMRUN reads, in bus order, with the clean bit that covers the whole word
#: (None: always read). VMCB_CLEAN (0x0C0) comes first.
LOAD_WORDS = (
    (0x0C0, None),                                      # VMCB_CLEAN
    (0x000, _C.I), (0x008, _C.I), (0x010, _C.I), (0x038, _C.I),   # intercepts, pause filter
    (0x040, _C.IOPM), (0x048, _C.IOPM),
    (0x050, _C.I),                                      # TSC_OFFSET
    (0x058, None),                                      # ASID + TLB_CONTROL
    (0x060, _C.TPR),                                    # INT_CTL, INT_VECTOR
    (0x068, None),                                      # interrupt state
    (0x090, _C.NP), (0x0A8, None), (0x0B0, _C.NP),      # NP_ENABLE, EVENTINJ, N_CR3
    (0x400, _C.SEG), (0x408, _C.SEG), (0x410, _C.SEG), (0x418, _C.SEG),
    (0x420, _C.SEG), (0x428, _C.SEG), (0x430, _C.SEG), (0x438, _C.SEG),
    (0x460, _C.DT), (0x468, _C.DT), (0x480, _C.DT), (0x488, _C.DT),
    (0x4C8, _C.SEG),                                    # CPL
    (0x4D0, _C.CRX), (0x548, _C.CRX), (0x550, _C.CRX), (0x558, _C.CRX),
    (0x560, _C.DRX), (0x568, _C.DRX),
    (0x570, None), (0x578, None), (0x5D8, None), (0x5F8, None),  # RFLAGS, RIP, RSP, RAX
    (0x640, _C.CR2), (0x668, _C.NP),
)
_LOAD_OFFSETS = tuple(o for o, _ in LOAD_WORDS)

#: The words #VMEXIT writes to the VMCB, in bus order; #VMEXIT(INVALID) writes only the first four.
EXIT_WORDS = (0x070, 0x078, 0x080, 0x088, 0x0C8, 0x060, 0x068, 0x0A8,
              0x400, 0x408, 0x410, 0x418, 0x420, 0x428, 0x430, 0x438, 0x460, 0x468, 0x480, 0x488,
              0x4C8, 0x4D0, 0x548, 0x550, 0x558, 0x560, 0x568, 0x570, 0x578, 0x5D8, 0x5F8, 0x640, 0x668)
_INVALID_EXIT_WORDS = 4

#: Host save area words (VMCB state-save offsets) with the :class:`HostState` member each holds.
HOST_WORDS = (
    (0x400, "es", 0), (0x408, "es", 1), (0x410, "cs", 0), (0x418, "cs", 1),
    (0x420, "ss", 0), (0x428, "ss", 1), (0x430, "ds", 0), (0x438, "ds", 1),
    (0x460, "gdtr", 0), (0x468, "gdtr", 1), (0x480, "idtr", 0), (0x488, "idtr", 1),
    (0x4D0, "efer", None), (0x548, "cr4", None), (0x550, "cr3", None), (0x558, "cr0", None),
    (0x570, "rflags", None), (0x578, "rip", None), (0x5D8, "rsp", None), (0x5F8, "rax", None),
    (0x668, "pat", None),
)

#: The words VMLOAD reads and VMSAVE writes (§15.5.2): FS, GS, LDTR, TR, then the MSRs.
VMLOAD_WORDS = (0x440, 0x448, 0x450, 0x458, 0x470, 0x478, 0x490, 0x498,
                0x600, 0x608, 0x610, 0x618, 0x620, 0x628, 0x630, 0x638)


# -- the consistency checks: one rule per catalogue ID ------------------------------------------------

class _CheckView:
    """What the rules read: VMCB words after loading, host state and the configuration."""

    def __init__(self, w, host_cr0, host_efer, config):
        self.w = w
        self.cfg = config
        self.host_cr0 = host_cr0
        self.host_efer = host_efer
        self.cr0, self.cr3, self.cr4 = w[0x558], w[0x550], w[0x548]
        self.efer, self.dr6, self.dr7 = w[0x4D0], w[0x568], w[0x560]
        self.cs_attrib = w[0x410][16:32]
        self.vec4 = w[0x010][0:32]
        self.iopm, self.msrpm = w[0x040], w[0x048]
        self.asid = w[0x058][0:32]
        self.tlb_control = w[0x058][32:40]
        self.np = w[0x090][0]
        self.eventinj = w[0x0A8][0:32]
        self.n_cr3, self.g_pat = w[0x0B0], w[0x668]
        self.lme_pg = self.efer[8] & self.cr0[31]
        self.long64 = self.lme_pg & self.cs_attrib[9]
        self.inj_type = self.eventinj[8:11]
        self.inj_vector = self.eventinj[0:8]


def _table_end(base, size, maxphyaddr):
    """(base & ~0xFFF) + size >= 2^maxphyaddr."""
    return (Cat(Const(0, 12), base[12:64]) + size)[maxphyaddr:65].any()


CHECK_RULES = {
    "SVM_EFER_SVME": lambda v: ~v.efer[12],
    "SVM_CR0_CD_NW": lambda v: ~v.cr0[30] & v.cr0[29],
    "SVM_CR0_HI": lambda v: v.cr0[32:64].any(),
    "SVM_CR3_MBZ": lambda v: Mux(v.lme_pg, v.cr3[52:64].any(), v.cr3[32:64].any()),
    "SVM_CR4_MBZ": lambda v: (v.cr4 & CR4_RESERVED) != 0,
    "SVM_DR6_HI": lambda v: v.dr6[32:64].any(),
    "SVM_DR7_HI": lambda v: v.dr7[32:64].any(),
    "SVM_EFER_MBZ": lambda v: (v.efer & EFER_RESERVED) != 0,
    "SVM_EFER_LM_NOLM": lambda v: Const(0) if v.cfg["long_mode"] else (v.efer[8] | v.efer[10]),
    "SVM_LME_PG_NOPAE": lambda v: v.lme_pg & ~v.cr4[5],
    "SVM_LME_PG_NOPE": lambda v: v.lme_pg & ~v.cr0[0],
    "SVM_LME_CS_LD": lambda v: v.lme_pg & v.cr4[5] & v.cs_attrib[9] & v.cs_attrib[10],
    "SVM_NO_VMRUN_INTERCEPT": lambda v: ~v.vec4[0],
    "SVM_MSRPM_RANGE": lambda v: _table_end(v.msrpm, 0x2000, v.cfg["maxphyaddr"]),
    "SVM_IOPM_RANGE": lambda v: _table_end(v.iopm, 0x2001, v.cfg["maxphyaddr"]),
    "SVM_ASID_ZERO": lambda v: v.asid == 0,
    "SVM_EVENTINJ_TYPE": lambda v: v.eventinj[31] & v.inj_type.matches(1, 5, 6, 7),
    "SVM_EVENTINJ_VECTOR": lambda v: v.eventinj[31] & (v.inj_type == 3) & ((v.inj_vector == 2)
                                                                            | (v.inj_vector > 31)),
    "SVM_EVENTINJ_64BIT": lambda v: v.eventinj[31] & (v.inj_type == 3) & v.inj_vector.matches(4, 5) & v.long64,
    "SVM_NP_UNSUPPORTED": lambda v: v.np if not v.cfg["nested_paging"] else Const(0),
    "SVM_NP_HOST_NOPG": lambda v: v.np & ~v.host_cr0[31],
    "SVM_GPAT": lambda v: v.np & Cat(~v.g_pat[8 * i:8 * i + 8].matches(*PAT_TYPES) for i in range(8)).any(),
    "SVM_NCR3": lambda v: v.np & v.host_efer[10] & v.n_cr3[v.cfg["maxphyaddr"]:64].any(),
    "SVM_TLBCTL": lambda v: ~v.tlb_control.matches(0, 1, 3, 7),
}
assert set(CHECK_RULES) == {c.id for c in CHECKS}


class SVMUnit(wiring.Component):
    """The SVM instruction unit (see the module docstring; AMD APM vol. 2 chapter 15).

    Parameters
    ----------
    maxphyaddr : int
        Physical-address width (36..52).
    nested_paging : bool
        Nested paging (CPUID 8000_000A EDX[0]); instantiates an :class:`EPTWalker` in NPT mode.
    nrip_save : bool
        Save nRIP on #VMEXIT (CPUID 8000_000A EDX[3]).
    long_mode : bool
        The core supports long mode (else SVM_EFER_LM_NOLM applies).
    clean_bits : bool
        Honour VMCB clean bits (CPUID 8000_000A EDX[5]).
    tlb_entries, pwc_entries : int
        Walker cache sizes.

    Members
    -------
    cmd : In(stream of :class:`SVMCommand`)
    guest : In(stream of :class:`~hwvirt.hdl.exit_logic.GuestEvent`)
    mem : In(stream of :class:`GuestAccess`)
    resp : Out(stream of :class:`SVMResult`)
        One result per command, guest event or guest access.
    cpu : In(:class:`HostState`)
    host : Out(:class:`HostState`)
        The host state the last #VMEXIT restored from the host save area.
    status : Out(:class:`SVMStatus`)
    vmrun_failures : Out(len(CHECKS))
        Every failing check of the last VMRUN that reached the checks, by catalogue index.
    bus : Out(:class:`~hwvirt.hdl.bus.WishboneSignature`)
    """

    def __init__(self, *, maxphyaddr=39, nested_paging=True, nrip_save=True, long_mode=True, clean_bits=True,
                 tlb_entries=4, pwc_entries=4):
        if not isinstance(maxphyaddr, int) or not 36 <= maxphyaddr <= 52:
            raise ValueError(f"maxphyaddr must be an integer in 36..52, not {maxphyaddr!r}")
        self.maxphyaddr = maxphyaddr
        self.nested_paging = bool(nested_paging)
        self.nrip_save = bool(nrip_save)
        self.long_mode = bool(long_mode)
        self.clean_bits = bool(clean_bits)
        self.tlb_entries = tlb_entries
        self.pwc_entries = pwc_entries
        stream = lambda shape: wiring.Signature({"payload": Out(shape), "valid": Out(1), "ready": In(1)})
        super().__init__({
            "cmd":            In(stream(SVMCommand)),
            "guest":          In(stream(GuestEvent)),
            "mem":            In(stream(GuestAccess)),
            "resp":           Out(stream(SVMResult)),
            "cpu":            In(HostState),
            "host":           Out(HostState),
            "status":         Out(SVMStatus),
            "vmrun_failures": Out(len(CHECKS)),
            "bus":            Out(WishboneSignature(addr_width=maxphyaddr - 3)),
        })

    @property
    def config(self):
        return {"maxphyaddr": self.maxphyaddr, "nested_paging": self.nested_paging,
                "nrip_save": self.nrip_save, "long_mode": self.long_mode, "clean_bits": self.clean_bits}

    def elaborate(self, platform):
        m = Module()
        N = self.maxphyaddr
        cpu = self.cpu
        K = GuestEventKind

        # -- bus: the sequencer's requests, or the walker's while it walks -----------------------------
        b_cyc, b_we = Signal(), Signal()
        b_adr = Signal(N - 3)
        b_dat_w = Signal(64)
        b_sel = Signal(8)
        walking = Signal()
        if self.nested_paging:
            m.submodules.walker = walker = EPTWalker(maxphyaddr=N, tlb_entries=self.tlb_entries,
                                                     pwc_entries=self.pwc_entries, five_level=False,
                                                     accessed_dirty=True)
            wb = walker.bus
            m.d.comb += [
                self.bus.cyc.eq(Mux(walking, wb.cyc, b_cyc)),
                self.bus.stb.eq(Mux(walking, wb.stb, b_cyc)),
                self.bus.we.eq(Mux(walking, wb.we, b_we)),
                self.bus.adr.eq(Mux(walking, wb.adr, b_adr)),
                self.bus.dat_w.eq(Mux(walking, wb.dat_w, b_dat_w)),
                self.bus.sel.eq(Mux(walking, wb.sel, b_sel)),
                wb.dat_r.eq(self.bus.dat_r),
                wb.ack.eq(self.bus.ack & walking),
            ]
        else:
            walker = None
            m.d.comb += [self.bus.cyc.eq(b_cyc), self.bus.stb.eq(b_cyc), self.bus.we.eq(b_we),
                         self.bus.adr.eq(b_adr), self.bus.dat_w.eq(b_dat_w), self.bus.sel.eq(b_sel)]
        ack = self.bus.ack
        dat_r = self.bus.dat_r

        def bus_access(word_address, *, write=False, data=0):
            m.d.comb += [b_cyc.eq(1), b_we.eq(write), b_adr.eq(word_address), b_dat_w.eq(data),
                         b_sel.eq(0xFF)]

        # -- architectural registers --------------------------------------------------------------
        efer = Signal(64)
        vm_cr = Signal(5)
        hsave = Signal(64)
        gif = Signal(init=1)
        in_guest = Signal()
        tsc = Signal(64)
        m.d.sync += tsc.eq(tsc + 1)
        m.d.comb += [self.status.gif.eq(gif), self.status.guest.eq(in_guest), self.status.svme.eq(efer[12])]

        w = {off: Signal(64, name=f"vmcb_{off:03x}") for off in _LOAD_OFFSETS}
        ld = Array(Signal(64, name=f"vmload_{off:03x}") for off in VMLOAD_WORDS)
        vmcb = Signal(N - 3)                   # word address of the VMCB being run / moved
        last_vmcb = Signal(N - 12)             # VMCB of the last VMRUN that entered the guest
        last_valid = Signal()

        exitcode = Signal(64)
        info1 = Signal(64)
        info2 = Signal(64)
        intinfo = Signal(64)
        nrip = Signal(64)
        pause_count = Signal(16)
        armed = Signal()                       # MONITOR executed, MWAIT not yet
        result = Signal(SVMResult)
        m.d.comb += self.resp.payload.eq(result)

        index = Signal(range(64))              # word counter of the current transfer
        ev = Signal(GuestEvent)
        bm = Array(Signal(64, name=f"bitmap{i}") for i in range(2))
        run_count = Signal(32)

        # -- named parts of the on-chip VMCB copy --------------------------------------------------
        cr_rd, cr_wr = w[0x000][0:16], w[0x000][16:32]
        dr_rd, dr_wr = w[0x000][32:48], w[0x000][48:64]
        exc, v3 = w[0x008][0:32], w[0x008][32:64]
        v4, v5 = w[0x010][0:32], w[0x010][32:64]
        iopm, msrpm, tsc_offset = w[0x040], w[0x048], w[0x050]
        asid, tlb_control = w[0x058][0:32], w[0x058][32:40]
        int_ctl = w[0x060][0:32]
        np_enable, eventinj, n_cr3 = w[0x090][0], w[0x0A8], w[0x0B0]
        g_cr0, g_cr2, g_cr3, g_cr4 = w[0x558], w[0x640], w[0x550], w[0x548]
        g_efer, g_dr6, g_dr7 = w[0x4D0], w[0x568], w[0x560]
        g_rflags, g_rip, g_pat = w[0x570], w[0x578], w[0x668]
        g_cpl = w[0x4C8][24:26]
        cs_attrib = w[0x410][16:32]
        clean_word = w[0x0C0][0:32]

        # -- consistency checks ---------------------------------------------------------------------
        view = _CheckView(w, cpu.cr0, efer, self.config)
        failures = Signal(len(CHECKS))
        m.d.comb += failures.eq(Cat(CHECK_RULES[c.id](view) for c in CHECKS))
        first_check = Signal(8)
        for i in reversed(range(len(CHECKS))):
            with m.If(failures[i]):
                m.d.comb += first_check.eq(i + 1)
        vmrun_failures = Signal(len(CHECKS))
        m.d.comb += self.vmrun_failures.eq(vmrun_failures)

        # -- VMRUN load order: the next word to read after each, skipping clean words ------------------
        same_vmcb = Signal()
        same_vmcb_reg = Signal()
        load_clean = Signal(32)     # the clean bits in force (VMCB_CLEAN, while it is being read: dat_r)
        n_load = len(LOAD_WORDS)
        skip = [Const(0) if group is None or not self.clean_bits else same_vmcb & load_clean[group]
                for _, group in LOAD_WORDS]
        next_after = [Const(n_load, 7)] * n_load
        nxt = Const(n_load, 7)
        for i in reversed(range(n_load)):
            next_after[i] = nxt
            nxt = Mux(skip[i], nxt, Const(i, 7))
        next_load = Array(next_after)[index]

        # -- helpers --------------------------------------------------------------------------------
        def respond(outcome, *, fault=Fault.NONE, value=None):
            m.d.sync += [result.outcome.eq(outcome), result.fault.eq(fault)]
            if value is not None:
                m.d.sync += result.value.eq(value)
            m.next = "Respond"

        def phys_bad(address):
            return address[0:12].any() | address[N:64].any()

        # -- the guest-event decision (combinational, on ``ev``, the VMCB copy and the bitmap words) ----
        d_exit = Signal()
        d_code = Signal(12)
        d_info1 = Signal(64)
        d_info2 = Signal(64)
        d_intinfo = Signal(64)
        d_instr = Signal()          # an instruction intercept: nRIP = RIP + length
        d_ud = Signal()             # the instruction raises #UD
        d_value = Signal(64)
        d_completes = Signal()      # no exit: the instruction completes, RIP advances
        bm_reads = Signal(2)
        bm_addr = Array(Signal(64, name=f"bitmap_addr{i}") for i in range(2))
        next_rip = (g_rip + ev.length)[:64]
        long64 = g_efer[10] & cs_attrib[9]

        def take(code, condition=1, *, i1=0, i2=0, instr=True):
            code = int(code) if isinstance(code, int) else code
            m.d.comb += [d_exit.eq(condition), d_code.eq(code), d_info1.eq(i1), d_info2.eq(i2),
                         d_instr.eq(instr)]
            if instr:
                m.d.comb += d_completes.eq(1)

        cr_values = {0: g_cr0, 2: g_cr2, 3: g_cr3, 4: g_cr4, 8: int_ctl[0:4]}
        svm_instr_exits = {
            SVMInstruction.VMRUN: (ExitCode.VMRUN, v4[0]), SVMInstruction.VMMCALL: (ExitCode.VMMCALL, v4[1]),
            SVMInstruction.VMLOAD: (ExitCode.VMLOAD, v4[2]), SVMInstruction.VMSAVE: (ExitCode.VMSAVE, v4[3]),
            SVMInstruction.STGI: (ExitCode.STGI, v4[4]), SVMInstruction.CLGI: (ExitCode.CLGI, v4[5]),
            SVMInstruction.SKINIT: (ExitCode.SKINIT, v4[6]), SVMInstruction.INVLPGA: (ExitCode.INVLPGA, v3[26]),
            SVMInstruction.RDPRU: (ExitCode.RDPRU, v4[14]),
        }
        simple = {
            K.CPUID: (ExitCode.CPUID, v3[18]), K.INVD: (ExitCode.INVD, v3[22]), K.XSETBV: (ExitCode.XSETBV, v4[13]),
            K.HLT: (ExitCode.HLT, v3[24]), K.RDPMC: (ExitCode.RDPMC, v3[15]), K.WBINVD: (ExitCode.WBINVD, v4[9]),
            K.INVPCID: (ExitCode.INVPCID, v5[2]), K.RDRAND: (0, 0), K.RDSEED: (0, 0),
        }
        kind = ev.kind.as_value()
        with m.Switch(kind):
            for k, (code, cond) in simple.items():
                with m.Case(k):
                    take(code, cond)
            with m.Case(K.INVLPG):
                take(ExitCode.INVLPG, v3[25], i1=ev.value)
            with m.Case(K.RDTSC):
                take(ExitCode.RDTSC, v3[14])
                m.d.comb += d_value.eq(tsc + tsc_offset)
            with m.Case(K.RDTSCP):
                take(ExitCode.RDTSCP, v4[7])
                m.d.comb += d_value.eq(tsc + tsc_offset)
            with m.Case(K.PAUSE):
                take(ExitCode.PAUSE, v3[23] & (pause_count == 0))
            with m.Case(K.MONITOR):
                take(ExitCode.MONITOR, v4[10])
            with m.Case(K.MWAIT):
                with m.If(armed & v4[12]):
                    take(ExitCode.MWAIT_CONDITIONAL)
                with m.Else():
                    take(ExitCode.MWAIT, v4[11])
            with m.Case(K.GETSEC):
                m.d.comb += d_ud.eq(1)
            with m.Case(K.VMCALL):
                take(ExitCode.VMMCALL, v4[1])
                m.d.comb += d_ud.eq(~v4[1])
            with m.Case(K.VMX_INSTRUCTION):
                with m.Switch(ev.index):
                    for instr, (code, cond) in svm_instr_exits.items():
                        with m.Case(instr):
                            take(code, cond)
                            if instr in (SVMInstruction.VMMCALL, SVMInstruction.RDPRU):
                                m.d.comb += d_ud.eq(~cond)
                            else:
                                m.d.comb += d_ud.eq(~cond & ~g_efer[12])
                    with m.Default():
                        m.d.comb += d_ud.eq(1)
            with m.Case(K.GDTR_IDTR_ACCESS, K.LDTR_TR_ACCESS):
                # register: 0 store GDTR/LDTR, 1 store IDTR/TR, 2 load GDTR/LDTR, 3 load IDTR/TR
                dt = kind == K.GDTR_IDTR_ACCESS.value
                codes = [Mux(dt, int(ExitCode.GDTR_READ), int(ExitCode.LDTR_READ)), Mux(dt, int(ExitCode.IDTR_READ), int(ExitCode.TR_READ)),
                         Mux(dt, int(ExitCode.GDTR_WRITE), int(ExitCode.LDTR_WRITE)), Mux(dt, int(ExitCode.IDTR_WRITE), int(ExitCode.TR_WRITE))]
                code = Array(codes)[ev.register[0:2]]
                take(code, v3.bit_select((code - 0x60)[:5], 1))
            with m.Case(K.RDMSR, K.WRMSR):
                msr = ev.index
                write = kind == K.WRMSR.value
                r0 = msr < 0x2000
                r1 = (msr >= 0xC000_0000) & (msr < 0xC000_2000)
                r2 = (msr >= 0xC001_0000) & (msr < 0xC001_2000)
                bit = Cat(write, msr[0:13], Mux(r1, 1, Mux(r2, 2, 0))[:2])     # bit index in the map
                m.d.comb += [bm_reads.eq(Mux(v3[28] & (r0 | r1 | r2), 1, 0)),
                             bm_addr[0].eq((Cat(Const(0, 12), msrpm[12:64]) + Cat(Const(0, 3), bit[6:16]))[:64])]
                hit = bm[0].bit_select(bit[0:6], 1)
                take(ExitCode.MSR, v3[28] & (~(r0 | r1 | r2) | hit), i1=write)
                with m.Switch(msr):
                    with m.Case(MSR_EFER):
                        m.d.comb += d_value.eq(g_efer)
                    with m.Case(0x277):
                        m.d.comb += d_value.eq(g_pat)
            with m.Case(K.IO):
                port = ev.port
                last = (port + ev.size - 1)[:17]
                base = Cat(Const(0, 12), iopm[12:64])
                a0 = (base + Cat(Const(0, 3), port[6:16]))[:64]
                a1 = (base + Cat(Const(0, 3), last[6:17]))[:64]
                m.d.comb += [bm_reads.eq(Mux(v3[27], Mux(a0 == a1, 1, 2), 0)),
                             bm_addr[0].eq(a0), bm_addr[1].eq(a1)]
                bits = []
                for i in range(4):
                    q = (port + i)[:17]
                    wd = Mux(q[6:17] == port[6:16], bm[0], bm[1])
                    bits.append((i < ev.size) & wd.bit_select(q[0:6], 1))
                a64 = long64
                a32 = ~long64 & cs_attrib[10]
                a16 = ~long64 & ~cs_attrib[10]
                seg = Mux(ev.string & ~ev.direction_in, Const(3, 3), Const(0, 3))
                take(ExitCode.IOIO, v3[27] & Cat(*bits).any(),
                     i1=Cat(ev.direction_in, Const(0, 1), ev.string, ev.rep, ev.size == 1, ev.size == 2,
                            ev.size == 4, a16, a32, a64, seg, Const(0, 3), port),
                     i2=next_rip)
            with m.Case(K.CR_READ):
                n = ev.register
                take(int(ExitCode.CR0_READ) + n, cr_rd.bit_select(n, 1), i1=Cat(ev.gpr, Const(0, 59), Const(1, 1)))
                with m.Switch(n):
                    for cr, value in cr_values.items():
                        with m.Case(cr):
                            m.d.comb += d_value.eq(value)
            with m.Case(K.CR_WRITE):
                n = ev.register
                selective = (n == 0) & v3[5] & (((ev.value ^ g_cr0) & ~Const(0xA, 64)) != 0)
                i1 = Cat(ev.gpr, Const(0, 59), Const(1, 1))
                with m.If(cr_wr.bit_select(n, 1)):
                    take(int(ExitCode.CR0_WRITE) + n, i1=i1)
                with m.Else():
                    take(ExitCode.CR0_SEL_WRITE, selective, i1=i1)
            with m.Case(K.CLTS):
                take(ExitCode.CR0_WRITE, cr_wr[0])
            with m.Case(K.LMSW):
                changes = (g_cr0[0] != (g_cr0[0] | ev.value[0])) | (g_cr0[2] != ev.value[2])
                with m.If(cr_wr[0]):
                    take(ExitCode.CR0_WRITE)
                with m.Else():
                    take(ExitCode.CR0_SEL_WRITE, v3[5] & changes)
            with m.Case(K.DR_READ):
                n = ev.register
                take(int(ExitCode.DR0_READ) + n, dr_rd.bit_select(n, 1), i1=ev.gpr)
                m.d.comb += d_value.eq(Mux(n == 7, g_dr7, Mux(n == 6, g_dr6, 0)))
            with m.Case(K.DR_WRITE):
                n = ev.register
                take(int(ExitCode.DR0_WRITE) + n, dr_wr.bit_select(n, 1), i1=ev.gpr)
            with m.Case(K.TASK_SWITCH):
                source = ev.event_type.as_value()[0:2]
                take(ExitCode.TASK_SWITCH, v3[29], i1=ev.index[0:16],
                     i2=Cat(Const(0, 36), source == 1, Const(0, 1), source == 2), instr=False)
            with m.Case(K.NMI):
                take(ExitCode.NMI, v3[1], instr=False)
            with m.Case(K.EXTERNAL_INTERRUPT):
                take(ExitCode.INTR, v3[0], instr=False)
            with m.Case(K.INIT):
                take(ExitCode.INIT, v3[3], instr=False)
            with m.Case(KIND_SMI):
                take(ExitCode.SMI, v3[2], instr=False)
            with m.Case(K.TRIPLE_FAULT):
                take(ExitCode.SHUTDOWN, v3[31], instr=False)
            with m.Case(K.RUN):
                v_irq = int_ctl[8]
                prio_ok = int_ctl[20] | (int_ctl[16:20] > int_ctl[0:4])
                take(ExitCode.VINTR, v3[4] & v_irq & g_rflags[9] & ~w[0x068][0] & prio_ok, instr=False)
            with m.Case(K.SIPI):
                take(0, 0, instr=False)

        # exceptions, and the #UD of an instruction that is not allowed
        exception = (kind == K.EXCEPTION.value) | d_ud
        vector = Mux(d_ud, 6, ev.vector)
        etype = Mux(d_ud, InterruptionType.HARDWARE_EXCEPTION.value, ev.event_type.as_value())
        hardware = etype == InterruptionType.HARDWARE_EXCEPTION.value
        software = etype == InterruptionType.SOFTWARE_EXCEPTION.value
        error_valid = hardware & vector.matches(*EXCEPTIONS_WITH_ERROR_CODE)
        during = ev.during
        during_type = during[8:11]
        svm_type = Mux(during_type.matches(5, 6), 3, during_type)
        f_exit = Signal()
        f_code = Signal(12)
        f_info1 = Signal(64)
        f_info2 = Signal(64)
        f_instr = Signal()
        with m.If(exception):
            m.d.comb += [
                f_exit.eq(exc.bit_select(vector[0:5], 1) & (vector < 32)),
                f_code.eq(int(ExitCode.EXCP_BASE) + vector[0:5]),
                f_info1.eq(Mux(error_valid, ev.error_code, 0)),
                f_info2.eq(Mux(~d_ud & (vector == 14), ev.value, 0)),
                f_instr.eq(~d_ud & software),
            ]
            with m.If(~d_ud & during[31]):
                m.d.comb += d_intinfo.eq(Cat(during[0:8], svm_type, during[11], Const(0, 19), Const(1, 1),
                                             Mux(during[11], ev.during_error, 0)))
        with m.Else():
            m.d.comb += [f_exit.eq(d_exit), f_code.eq(d_code), f_info1.eq(d_info1), f_info2.eq(d_info2),
                         f_instr.eq(d_instr)]

        # -- TLB control / INVLPGA invalidations --------------------------------------------------------
        inv_kind = Signal(InvalidationKind, init=InvalidationKind.INVEPT_ALL_CONTEXT)
        inv_eptp = Signal(64)
        inv_vpid = Signal(16)
        inv_linear = Signal(64)
        inv_second = Signal()        # a second invalidation follows (TLB_CONTROL 3)
        if walker is not None:
            m.d.comb += [walker.invalidate.payload.kind.eq(inv_kind), walker.invalidate.payload.eptp.eq(inv_eptp),
                         walker.invalidate.payload.vpid.eq(inv_vpid), walker.invalidate.payload.linear.eq(inv_linear)]

        # -- host MSRs -------------------------------------------------------------------------------
        op = Signal(SVMOp)
        rax = Signal(64)
        ecx = Signal(32)
        value = Signal(64)

        acc = Signal(GuestAccess)

        host_state = Signal(HostState)
        m.d.comb += self.host.eq(host_state)
        cpu_words = {}
        for off, name, part in HOST_WORDS:
            if name == "efer":
                cpu_words[off] = efer
            elif part is None:
                cpu_words[off] = getattr(cpu, name)
            else:
                cpu_words[off] = cpu[name].as_value()[64 * part:64 * part + 64]

        def start_exit():
            m.d.sync += index.eq(0)
            m.next = "Exit-Save"

        with m.FSM(name="svm") as fsm:
            with m.State("Idle"):
                # ``ready`` never depends on the same port's ``valid`` (a bench may sample it before
                # its own ``valid`` has propagated); priority: cmd, guest, mem.
                m.d.comb += [self.cmd.ready.eq(1), self.guest.ready.eq(~self.cmd.valid),
                             self.mem.ready.eq(~self.cmd.valid & ~self.guest.valid)]
                with m.If(~in_guest):
                    with m.If(self.cmd.valid):
                        p = self.cmd.payload
                        m.d.sync += [op.eq(p.op), rax.eq(p.rax), ecx.eq(p.ecx), value.eq(p.value), result.eq(0)]
                        m.next = "Execute"
                    with m.Elif(self.guest.valid | self.mem.valid):
                        m.d.sync += [result.eq(0), result.outcome.eq(Outcome.NO_GUEST)]
                        m.next = "Respond"
                with m.Else():
                    with m.If(self.cmd.valid):
                        # A host instruction offered while the guest runs: the guest executes it.
                        p = self.cmd.payload
                        m.d.sync += [ev.eq(0), result.eq(0), run_count.eq(0), index.eq(0)]
                        with m.Switch(p.op):
                            for o, instr in ((SVMOp.VMRUN, SVMInstruction.VMRUN),
                                             (SVMOp.VMLOAD, SVMInstruction.VMLOAD),
                                             (SVMOp.VMSAVE, SVMInstruction.VMSAVE),
                                             (SVMOp.STGI, SVMInstruction.STGI), (SVMOp.CLGI, SVMInstruction.CLGI),
                                             (SVMOp.VMMCALL, SVMInstruction.VMMCALL),
                                             (SVMOp.INVLPGA, SVMInstruction.INVLPGA)):
                                with m.Case(o):
                                    m.d.sync += [ev.kind.eq(K.VMX_INSTRUCTION), ev.index.eq(instr),
                                                 ev.length.eq(3)]
                            with m.Case(SVMOp.RDMSR, SVMOp.WRMSR):
                                m.d.sync += [ev.kind.as_value().eq(Mux(p.op == SVMOp.WRMSR, K.WRMSR.value,
                                                                       K.RDMSR.value)),
                                             ev.index.eq(p.ecx), ev.value.eq(p.value), ev.length.eq(2)]
                        m.next = "Guest-Bitmap"
                    with m.Elif(self.guest.valid):
                        m.d.sync += [ev.eq(self.guest.payload), run_count.eq(self.guest.payload.cycles),
                                     result.eq(0)]
                        m.next = "Guest-Run"
                    with m.Elif(self.mem.valid):
                        m.d.sync += [acc.eq(self.mem.payload), result.eq(0)]
                        m.next = "Walk-Request" if walker is not None else "Walk-Identity"

            with m.State("Execute"):
                svm_fault = Signal()
                with m.If(op.as_value().matches(*(o.value for o in (SVMOp.VMRUN, SVMOp.VMLOAD, SVMOp.VMSAVE,
                                                                    SVMOp.STGI, SVMOp.CLGI, SVMOp.INVLPGA)))):
                    with m.If(~efer[12]):
                        m.d.comb += svm_fault.eq(1)
                        respond(Outcome.FAULT, fault=Fault.UD)
                    with m.Elif(cpu.cpl != 0):
                        m.d.comb += svm_fault.eq(1)
                        respond(Outcome.FAULT, fault=Fault.GP)
                    with m.Elif(op.as_value().matches(SVMOp.VMRUN.value, SVMOp.VMLOAD.value, SVMOp.VMSAVE.value)
                                & phys_bad(rax)):
                        m.d.comb += svm_fault.eq(1)
                        respond(Outcome.FAULT, fault=Fault.GP)
                with m.If(~svm_fault):
                    with m.Switch(op):
                        with m.Case(SVMOp.VMRUN):
                            m.d.sync += [vmcb.eq(rax[3:N]), index.eq(0),
                                         same_vmcb_reg.eq(last_valid & (last_vmcb == rax[12:N]))]
                            m.next = "Host-Save"
                        with m.Case(SVMOp.VMLOAD, SVMOp.VMSAVE):
                            m.d.sync += [vmcb.eq(rax[3:N]), index.eq(0)]
                            m.next = "Move"
                        with m.Case(SVMOp.STGI):
                            m.d.sync += gif.eq(1)
                            respond(Outcome.SUCCEED)
                        with m.Case(SVMOp.CLGI):
                            m.d.sync += gif.eq(0)
                            respond(Outcome.SUCCEED)
                        with m.Case(SVMOp.INVLPGA):
                            m.d.sync += [inv_kind.eq(InvalidationKind.INVVPID_INDIVIDUAL_ADDRESS),
                                         inv_vpid.eq(ecx[0:16]), inv_linear.eq(rax), inv_second.eq(0)]
                            m.next = "Invalidate" if walker is not None else "Respond"
                            m.d.sync += result.outcome.eq(Outcome.SUCCEED)
                        with m.Case(SVMOp.VMMCALL):
                            respond(Outcome.FAULT, fault=Fault.UD)
                        with m.Case(SVMOp.RDMSR, SVMOp.WRMSR):
                            write = op == SVMOp.WRMSR
                            with m.If(cpu.cpl != 0):
                                respond(Outcome.FAULT, fault=Fault.GP)
                            with m.Else():
                                with m.Switch(ecx):
                                    with m.Case(MSR_EFER):
                                        with m.If(~write):
                                            respond(Outcome.SUCCEED, value=efer)
                                        with m.Elif(((value & ~Const(HOST_EFER_VALID, 64)) != 0)
                                                    | (value[12] & vm_cr[4])):
                                            respond(Outcome.FAULT, fault=Fault.GP)
                                        with m.Else():
                                            m.d.sync += efer.eq(value)
                                            respond(Outcome.SUCCEED)
                                    with m.Case(MSR_VM_CR):
                                        with m.If(~write):
                                            respond(Outcome.SUCCEED, value=vm_cr)
                                        with m.Elif(value[5:64].any()):
                                            respond(Outcome.FAULT, fault=Fault.GP)
                                        with m.Elif(vm_cr[3]):
                                            m.d.sync += vm_cr[0:3].eq(value[0:3])
                                            respond(Outcome.SUCCEED)
                                        with m.Elif(value[4] & efer[12]):
                                            respond(Outcome.FAULT, fault=Fault.GP)
                                        with m.Else():
                                            m.d.sync += vm_cr.eq(value[0:5])
                                            respond(Outcome.SUCCEED)
                                    with m.Case(MSR_VM_HSAVE_PA):
                                        with m.If(~write):
                                            respond(Outcome.SUCCEED, value=hsave)
                                        with m.Elif(phys_bad(value)):
                                            respond(Outcome.FAULT, fault=Fault.GP)
                                        with m.Else():
                                            m.d.sync += hsave.eq(value)
                                            respond(Outcome.SUCCEED)
                                    with m.Default():
                                        respond(Outcome.FAULT, fault=Fault.GP)

            # -- VMRUN --------------------------------------------------------------------------------
            with m.State("Host-Save"):
                offs = Array(Const(off >> 3, 9) for off, _, _ in HOST_WORDS)
                data_ = Array(cpu_words[off] for off, _, _ in HOST_WORDS)
                bus_access((hsave[3:N] + offs[index])[:N - 3], write=True, data=data_[index])
                with m.If(ack):
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == len(HOST_WORDS) - 1):
                        m.d.sync += index.eq(0)
                        m.next = "Load"

            with m.State("Load"):
                offs = Array(Const(off >> 3, 9) for off in _LOAD_OFFSETS)
                bus_access((vmcb + offs[index])[:N - 3])
                with m.If(ack):
                    with m.Switch(index):
                        for i, off in enumerate(_LOAD_OFFSETS):
                            with m.Case(i):
                                m.d.sync += w[off].eq(dat_r)
                    m.d.sync += index.eq(next_load)
                    with m.If(next_load == n_load):
                        m.next = "Check"

            with m.State("Check"):
                m.d.sync += [vmrun_failures.eq(failures), result.check.eq(first_check)]
                with m.If(failures.any()):
                    m.d.sync += [exitcode.eq(Const(-1, 64)), info1.eq(0), info2.eq(0), intinfo.eq(0),
                                 last_valid.eq(0), result.outcome.eq(Outcome.EXIT)]
                    start_exit()
                with m.Else():
                    m.d.sync += [
                        g_efer[10].eq(g_efer[8] & g_cr0[31]),
                        last_vmcb.eq(vmcb[9:N - 3]), last_valid.eq(1),
                        pause_count.eq(w[0x038][48:64]), armed.eq(0),
                        result.outcome.eq(Outcome.ENTERED),
                        result.event.eq(Mux(eventinj[31], eventinj, 0)),
                        result.tlb_control.eq(tlb_control),
                        inv_vpid.eq(asid[0:16]), inv_eptp.eq(n_cr3), inv_linear.eq(0),
                    ]
                    with m.Switch(tlb_control):
                        with m.Case(1):
                            m.d.sync += [inv_kind.eq(InvalidationKind.INVEPT_ALL_CONTEXT), inv_second.eq(0)]
                        with m.Case(3):
                            m.d.sync += [inv_kind.eq(InvalidationKind.INVVPID_SINGLE_CONTEXT), inv_second.eq(1)]
                        with m.Case(7):
                            m.d.sync += [inv_kind.eq(InvalidationKind.INVVPID_SINGLE_CONTEXT_RETAINING_GLOBALS),
                                         inv_second.eq(0)]
                    m.next = "Enter"

            with m.State("Enter"):
                m.d.sync += [in_guest.eq(1), gif.eq(1)]
                if walker is not None:
                    with m.If(tlb_control != 0):
                        m.next = "Invalidate"
                    with m.Else():
                        m.next = "Respond"
                else:
                    m.next = "Respond"

            if walker is not None:
                with m.State("Invalidate"):
                    m.d.comb += walker.invalidate.valid.eq(1)
                    with m.If(walker.invalidate.ready):
                        with m.If(inv_second):
                            m.d.sync += [inv_second.eq(0), inv_kind.eq(InvalidationKind.INVEPT_SINGLE_CONTEXT)]
                        with m.Else():
                            m.next = "Respond"

            # -- VMLOAD / VMSAVE -------------------------------------------------------------------------
            with m.State("Move"):
                offs = Array(Const(off >> 3, 9) for off in VMLOAD_WORDS)
                bus_access((vmcb + offs[index])[:N - 3], write=op == SVMOp.VMSAVE, data=ld[index])
                with m.If(ack):
                    with m.If(op == SVMOp.VMLOAD):
                        m.d.sync += ld[index].eq(dat_r)
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == len(VMLOAD_WORDS) - 1):
                        respond(Outcome.SUCCEED)

            # -- guest events ----------------------------------------------------------------------------
            with m.State("Guest-Run"):
                with m.If(run_count == 0):
                    m.d.sync += index.eq(0)
                    m.next = "Guest-Bitmap"
                with m.Else():
                    m.d.sync += run_count.eq(run_count - 1)

            with m.State("Guest-Bitmap"):
                with m.If(index >= bm_reads):
                    m.next = "Guest-Decide"
                with m.Else():
                    bus_access(bm_addr[index[0]][3:N])
                    with m.If(ack):
                        m.d.sync += [bm[index[0]].eq(dat_r), index.eq(index + 1)]

            with m.State("Guest-Decide"):
                with m.If(f_exit):
                    m.d.sync += [exitcode.eq(f_code), info1.eq(f_info1), info2.eq(f_info2), intinfo.eq(d_intinfo),
                                 nrip.eq(Mux(f_instr, next_rip, 0)), result.outcome.eq(Outcome.EXIT)]
                    start_exit()
                with m.Else():
                    m.d.sync += [result.outcome.eq(Outcome.NO_EXIT), result.value.eq(d_value)]
                    with m.If(exception):
                        m.d.sync += result.fault.as_value().eq(
                            Mux(vector == 6, Fault.UD.value, Mux(vector == 14, Fault.PF.value, Fault.NONE.value)))
                    with m.Elif(d_completes):
                        m.d.sync += g_rip.eq(next_rip)
                        with m.Switch(kind):
                            with m.Case(K.CR_WRITE):
                                with m.Switch(ev.register):
                                    with m.Case(0):
                                        m.d.sync += g_cr0.eq(ev.value)
                                    with m.Case(2):
                                        m.d.sync += g_cr2.eq(ev.value)
                                    with m.Case(3):
                                        m.d.sync += g_cr3.eq(ev.value)
                                    with m.Case(4):
                                        m.d.sync += g_cr4.eq(ev.value)
                                    with m.Case(8):
                                        m.d.sync += w[0x060][0:4].eq(ev.value[0:4])
                            with m.Case(K.CLTS):
                                m.d.sync += g_cr0[3].eq(0)
                            with m.Case(K.LMSW):
                                m.d.sync += [g_cr0[1:4].eq(ev.value[1:4]), g_cr0[0].eq(g_cr0[0] | ev.value[0])]
                            with m.Case(K.DR_WRITE):
                                with m.If(ev.register == 7):
                                    m.d.sync += g_dr7.eq(ev.value)
                                with m.Elif(ev.register == 6):
                                    m.d.sync += g_dr6.eq(ev.value)
                            with m.Case(K.WRMSR):
                                with m.Switch(ev.index):
                                    with m.Case(MSR_EFER):
                                        m.d.sync += g_efer.eq(ev.value)
                                    with m.Case(0x277):
                                        m.d.sync += g_pat.eq(ev.value)
                            with m.Case(K.PAUSE):
                                with m.If(v3[23]):
                                    m.d.sync += pause_count.eq(pause_count - 1)
                            with m.Case(K.MONITOR):
                                m.d.sync += armed.eq(1)
                            with m.Case(K.MWAIT):
                                m.d.sync += armed.eq(0)
                    m.next = "Respond"

            # -- guest memory accesses -------------------------------------------------------------------
            with m.State("Walk-Identity"):
                respond(Outcome.NO_EXIT, value=acc.gpa)

            if walker is not None:
                req = walker.req.payload
                m.d.comb += [
                    req.eptp.eq(n_cr3), req.gpa.eq(acc.gpa), req.access.eq(acc.access),
                    req.user.eq(acc.paging & (g_cpl == 3)), req.linear.eq(acc.linear),
                    req.linear_valid.eq(acc.paging), req.vpid.eq(asid[0:16]), req.cr3.eq(g_cr3),
                    req.guest_paging.eq(acc.paging), req.npt.eq(1),
                ]
                with m.State("Walk-Request"):
                    with m.If(~np_enable):
                        respond(Outcome.NO_EXIT, value=acc.gpa)
                    with m.Else():
                        m.d.comb += [walker.req.valid.eq(1), walking.eq(1)]
                        with m.If(walker.req.ready):
                            m.next = "Walk"
                with m.State("Walk"):
                    m.d.comb += [walking.eq(1), walker.resp.ready.eq(1)]
                    res = walker.resp.payload
                    with m.If(walker.resp.valid):
                        with m.Switch(res.outcome):
                            with m.Case(WalkOutcome.OK):
                                respond(Outcome.NO_EXIT, value=res.hpa)
                            with m.Case(WalkOutcome.GUEST_PAGE_FAULT):
                                with m.If(exc[14]):
                                    m.d.sync += [exitcode.eq(int(ExitCode.EXCP_BASE) + 14), info1.eq(res.error_code),
                                                 info2.eq(res.qualification), intinfo.eq(0), nrip.eq(0),
                                                 result.outcome.eq(Outcome.EXIT)]
                                    start_exit()
                                with m.Else():
                                    respond(Outcome.NO_EXIT, fault=Fault.PF, value=0)
                            with m.Default():
                                m.d.sync += [exitcode.eq(int(ExitCode.NPF)), info1.eq(res.qualification),
                                             info2.eq(res.gpa), intinfo.eq(0), nrip.eq(0),
                                             result.outcome.eq(Outcome.EXIT)]
                                start_exit()

            # -- #VMEXIT ---------------------------------------------------------------------------------
            with m.State("Exit-Save"):
                n_words = Mux(exitcode == Const(-1, 64), _INVALID_EXIT_WORDS, len(EXIT_WORDS))
                offs = Array(Const(off >> 3, 9) for off in EXIT_WORDS)
                sources = {0x070: exitcode, 0x078: info1, 0x080: info2, 0x088: intinfo, 0x0C8: nrip,
                           0x0A8: Cat(eventinj[0:31], Const(0, 1), eventinj[32:64])}
                data_ = Array(sources.get(off, w.get(off)) for off in EXIT_WORDS)
                skip_nrip = (index == EXIT_WORDS.index(0x0C8)) & (not self.nrip_save)
                with m.If(skip_nrip):
                    m.d.sync += index.eq(index + 1)
                with m.Else():
                    bus_access((vmcb + offs[index])[:N - 3], write=True, data=data_[index])
                    with m.If(ack):
                        m.d.sync += index.eq(index + 1)
                        with m.If(index == n_words - 1):
                            m.d.sync += [index.eq(0), in_guest.eq(0), gif.eq(0),
                                         w[0x0A8][31].eq(0)]
                            m.next = "Host-Restore"

            with m.State("Host-Restore"):
                offs = Array(Const(off >> 3, 9) for off, _, _ in HOST_WORDS)
                bus_access((hsave[3:N] + offs[index])[:N - 3])
                with m.If(ack):
                    with m.Switch(index):
                        for i, (off, name, part) in enumerate(HOST_WORDS):
                            with m.Case(i):
                                if name == "efer":
                                    m.d.sync += efer.eq(dat_r)
                                elif part is None:
                                    m.d.sync += getattr(host_state, name).eq(dat_r)
                                else:
                                    m.d.sync += host_state[name].as_value()[64 * part:64 * part + 64].eq(dat_r)
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == len(HOST_WORDS) - 1):
                        m.d.sync += [
                            result.exit_code.eq(exitcode), result.exitinfo1.eq(info1),
                            result.exitinfo2.eq(info2), result.exitintinfo.eq(intinfo),
                            host_state.cpl.eq(0),
                        ]
                        m.next = "Respond"

            with m.State("Respond"):
                m.d.comb += self.resp.valid.eq(1)
                with m.If(self.resp.ready):
                    m.next = "Idle"

        # the host's CR0.PE is forced to 1 and RFLAGS.VM to 0 on #VMEXIT (§15.6): applied on output
        m.d.comb += [self.host.cr0[0].eq(1), self.host.rflags[17].eq(0)]
        m.d.comb += [same_vmcb.eq(same_vmcb_reg),
                     load_clean.eq(Mux(index == 0, dat_r[0:32], clean_word))]
        self.debug_signals = {"state": fsm.state}
        return m
