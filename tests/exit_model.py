"""A plain-Python reference model of the VMX exit decision (no Amaranth).

This is the oracle the exit-decision gateware is checked against. It was written from the exit
specification agreed for the project and from the architecture it summarises: Intel SDM vol. 3C
§26.1–§26.2 (instructions and events that cause VM exits in VMX non-root operation) and §27.2
(the exit-information fields), as digested in the project's fact sheet §6 (exit reasons,
qualifications, event-information layout) and §7 (exit decision rules). It shares nothing with
the gateware; only VMCS field *names* (KVM spelling, as in :mod:`hwvirt.hdl.vmcs_fields`) are
used, as plain dictionary keys.

Model
-----
:func:`decide` takes one scenario event (a dict: ``"event"`` = name, plus operands), the VMCS as a
dict of field name → int (missing fields read 0), the guest state and a byte reader for guest
physical memory (the I/O and MSR bitmaps live there). It returns a :class:`Decision`: whether the
event exits, the exit-information fields, the value the guest reads when it does not exit, and
the guest state after the event. :func:`boundary` evaluates the exits that happen *between*
events (pending MTF right after VM entry, preemption timer, NMI window, interrupt window).

Conventions
-----------
* Controls: ``pin`` = PIN_BASED_VM_EXEC_CONTROL, ``proc`` = CPU_BASED_VM_EXEC_CONTROL, ``proc2`` =
  SECONDARY_VM_EXEC_CONTROL when ``proc`` bit 31 is 1 and 0 otherwise, ``exit_ctls`` =
  VM_EXIT_CONTROLS.
* Events marked *instruction* are guest instructions ([I] in the specification). When such an
  event exits the exit is fault-like: the guest state is returned unchanged and the VM-exit
  instruction length is the instruction's length. When it does not exit the instruction
  completes: RIP advances by the length (mod 2^64), STI and MOV-SS blocking (interruptibility
  bits 0 and 1) are cleared and the activity state becomes active (0) — HLT makes it 1.
* The one trap-like exit modelled is TPR below threshold (43, SDM §26.1.3 / fact sheet §6.2):
  it follows a completed MOV to CR8 and returns the completed guest state.
* Monitor trap flag (SDM §26.5.2, fact sheet §7.2): when an event did not exit but completed an
  instruction or delivered an exception, NMI or external interrupt to the guest, and
  ``proc`` bit 27 is 1, the result becomes exit 37 with the completed guest state and the value
  the instruction produced, all other exit-information fields 0.

Interpretations where the specification leaves room
---------------------------------------------------
* Default lengths are the specification's "precise" table (INVPCID 5, INVLPG 3). ``exception``
  defaults to 1 because only the software / privileged software types report a length.
* An instruction disabled by a secondary control (INVPCID, RDTSCP) raises #UD exactly like the
  ``exception`` event with vector 6, type hardware: when delivered, the guest only leaves any
  inactive activity state (activity := 0) and RIP is not advanced; no instruction length.
* ``during.error_code`` present (even 0) sets the IDT-vectoring error-code-valid bit.
* The MTF exit carries instruction length 0. It follows HLT (activity stays 1), a delivered #UD,
  NMI or external interrupt, but not ``run``, an ignored SIPI, or any event that already exited
  (a TPR-below-threshold exit wins over MTF).
* The guest reads nothing (``value`` None) from IN/INS, RDRAND, RDSEED, RDPMC, SGDT/SIDT/SLDT/STR.
* WRMSR of a kept MSR stores the value truncated to 64 bits (IA32_SYSENTER_CS to 32 bits); MOV to
  CR8 sets ``tpr`` (value bits 3:0) with or without the TPR shadow; LMSW uses the value's low 16
  bits everywhere (qualification and rules).
* task_switch ``source`` defaults to "call" (an int 0–3 is accepted too); unknown events, CR
  numbers, VMX-instruction and descriptor names raise ``ValueError`` / ``KeyError``.
"""

from dataclasses import dataclass, field


__all__ = ["Decision", "decide", "boundary", "REASONS", "DEFAULT_LENGTH", "VMINSTR_REASONS",
           "DESCRIPTOR_INSTRUCTIONS", "INTERRUPTION_TYPES", "ERROR_CODE_VECTORS"]

MASK64 = (1 << 64) - 1

#: Default instruction length (the ``len`` operand) per event. Events that are not instructions
#: have 0, except ``exception``: its length only matters for the software and privileged software
#: exception types (INT3/INTO, INT1), whose default instruction length is 1.
DEFAULT_LENGTH = {
    "cpuid": 2, "getsec": 2, "invd": 2, "wbinvd": 2, "pause": 2, "rdtsc": 2, "rdpmc": 2,
    "rdmsr": 2, "wrmsr": 2, "clts": 2, "hlt": 1, "io": 1,
    "xsetbv": 3, "mwait": 3, "monitor": 3, "vmcall": 3, "rdtscp": 3, "cr_write": 3, "cr_read": 3,
    "dr_write": 3, "dr_read": 3, "rdrand": 3, "rdseed": 3, "lmsw": 3, "descriptor": 3,
    "vminstr": 3, "task_switch": 2, "invpcid": 5, "invlpg": 3,
    "exception": 1,
    "nmi": 0, "extint": 0, "init": 0, "sipi": 0, "triple_fault": 0, "run": 0,
    "smi": 0, "mem": 0,
}

#: Basic exit reason (SDM vol. 3C appendix C, fact sheet §6.2) per event name, for the events
#: with a single reason. ``descriptor`` and ``vminstr`` depend on the instruction operand: see
#: :data:`DESCRIPTOR_INSTRUCTIONS` and :data:`VMINSTR_REASONS`.
REASONS = {
    "exception": 0, "nmi": 0, "extint": 1, "triple_fault": 2, "init": 3, "sipi": 4,
    "task_switch": 9, "cpuid": 10, "getsec": 11, "hlt": 12, "invd": 13, "invlpg": 14,
    "rdpmc": 15, "rdtsc": 16, "vmcall": 18, "cr_write": 28, "cr_read": 28, "clts": 28,
    "lmsw": 28, "dr_write": 29, "dr_read": 29, "io": 30, "rdmsr": 31, "wrmsr": 32, "mwait": 36,
    "monitor": 39, "pause": 40, "rdtscp": 51, "wbinvd": 54, "xsetbv": 55, "rdrand": 57,
    "invpcid": 58, "rdseed": 61,
}

#: ``vminstr`` operand ``name`` → basic exit reason (VMX instructions always exit in non-root).
VMINSTR_REASONS = {
    "vmclear": 19, "vmlaunch": 20, "vmptrld": 21, "vmptrst": 22, "vmread": 23, "vmresume": 24,
    "vmwrite": 25, "vmxoff": 26, "vmxon": 27, "invept": 50, "invvpid": 53, "vmcall": 18,
}

#: ``descriptor`` operand ``instr`` → (basic exit reason, instruction identity for bits 29:28 of
#: the VMX instruction-information field).
DESCRIPTOR_INSTRUCTIONS = {
    "sgdt": (46, 0), "sidt": (46, 1), "lgdt": (46, 2), "lidt": (46, 3),
    "sldt": (47, 0), "str": (47, 1), "lldt": (47, 2), "ltr": (47, 3),
}

#: Event-type names → interruption type (bits 10:8 of the event-information fields, §6.4).
INTERRUPTION_TYPES = {
    "extint": 0, "nmi": 2, "hardware": 3, "soft_int": 4, "privileged": 5, "software": 6,
}

#: Hardware exceptions that push an error code: #DF, #TS, #NP, #SS, #GP, #PF, #AC.
ERROR_CODE_VECTORS = frozenset({8, 10, 11, 12, 13, 14, 17})

_TASK_SOURCES = {"call": 0, "iret": 1, "jmp": 2, "gate": 3}

#: MSR index → guest-state key for the MSRs the model keeps.
_MSR_KEYS = {0xC0000080: "efer", 0x277: "pat", 0x1D9: "debugctl", 0x174: "sysenter_cs",
             0x175: "sysenter_esp", 0x176: "sysenter_eip"}


def _bit(value, n):
    return (value >> n) & 1


def _type_code(t):
    return t if isinstance(t, int) else INTERRUPTION_TYPES[t]


@dataclass
class Decision:
    """The outcome of an event: the exit-information fields (SDM §27.2) and the guest state."""
    exit: bool
    reason: int = 0          # basic exit reason
    qualification: int = 0
    intr_info: int = 0       # VM-exit interruption information (0x4404)
    intr_error: int = 0      # VM-exit interruption error code (0x4406)
    idt_info: int = 0        # IDT-vectoring information (0x4408)
    idt_error: int = 0       # IDT-vectoring error code (0x440A)
    instr_len: int = 0       # VM-exit instruction length (0x440C)
    instr_info: int = 0      # VMX instruction information (0x440E)
    guest_linear: int = 0    # guest-linear address (0x640A)
    value: int | None = None  # no exit: what the guest reads (None when it reads nothing)
    guest: dict = field(default_factory=dict)  # guest state after the event


class _Ctx:
    """One evaluation: the event, the effective controls, the guest state and memory."""

    def __init__(self, event, vmcs, guest, read_memory):
        self.event = event
        self.name = event["event"]
        self.vmcs = vmcs
        self.guest = guest
        self.read_memory = read_memory
        self.pin = self.field("PIN_BASED_VM_EXEC_CONTROL")
        self.proc = self.field("CPU_BASED_VM_EXEC_CONTROL")
        self.proc2 = self.field("SECONDARY_VM_EXEC_CONTROL") if _bit(self.proc, 31) else 0
        self.exit_ctls = self.field("VM_EXIT_CONTROLS")
        self.length = event.get("len", DEFAULT_LENGTH.get(self.name, 0))

    def field(self, name):
        return self.vmcs.get(name, 0)

    def op(self, name, default=0):
        return self.event.get(name, default)

    # -- outcomes --------------------------------------------------------------------------

    def exit(self, reason, qualification=0, *, instruction=True, **info):
        """A fault-like exit: the guest state is returned unchanged."""
        return Decision(True, reason, qualification, instr_len=self.length if instruction else 0,
                        guest=dict(self.guest), **info)

    def complete(self, value=None, **updates):
        """The instruction completes in the guest (SDM §26.1: no exit)."""
        g = dict(self.guest)
        g["rip"] = (g["rip"] + self.length) & MASK64
        g["interruptibility"] = g["interruptibility"] & ~0b11
        g["activity"] = 0
        g.update(updates)
        return Decision(False, value=value, guest=g)

    def deliver(self):
        """An event is delivered to the guest through its IDT: it leaves any inactive state."""
        g = dict(self.guest)
        g["activity"] = 0
        return Decision(False, guest=g)


# --- events (SDM §26.1.1–§26.1.3, §26.2; fact sheet §7) ---------------------------------------

def _exception(c, vector, type_name="hardware", error_code=0, addr=0, during=None):
    """Exception (reason 0): exception bitmap, with the #PF error-code mask/match rule (§7.1)."""
    bitmap_bit = _bit(c.field("EXCEPTION_BITMAP"), vector)
    if vector == 14:
        matched = (error_code & c.field("PAGE_FAULT_ERROR_CODE_MASK")) == \
            c.field("PAGE_FAULT_ERROR_CODE_MATCH")
        exits = int(matched) == bitmap_bit
    else:
        exits = bitmap_bit == 1
    if not exits:
        return c.deliver()
    itype = _type_code(type_name)
    has_error = itype == 3 and vector in ERROR_CODE_VECTORS
    idt_info = idt_error = 0
    if during is not None:
        given = "error_code" in during
        idt_info = (during["vector"] | _type_code(during["type"]) << 8 | int(given) << 11
                    | 1 << 31)
        idt_error = during.get("error_code", 0) if given else 0
    return c.exit(0, addr if vector == 14 else 0, instruction=itype in (5, 6),
                  intr_info=vector | itype << 8 | int(has_error) << 11 | 1 << 31,
                  intr_error=error_code if has_error else 0,
                  idt_info=idt_info, idt_error=idt_error)


def _invalid_opcode(c):
    """An instruction the controls disable raises #UD: a hardware exception, vector 6 (no
    instruction length, no error code); delivered to the guest when it does not exit."""
    return _exception(c, 6, "hardware")


def _ev_exception(c):
    return _exception(c, c.op("vector"), c.op("type", "hardware"), c.op("error_code"),
                      c.op("addr"), c.op("during", None))


def _ev_nmi(c):
    if _bit(c.pin, 3):
        return c.exit(0, instruction=False, intr_info=2 | 2 << 8 | 1 << 31)
    return c.deliver()


def _ev_extint(c):
    if _bit(c.pin, 0):
        info = c.op("vector") | 1 << 31 if _bit(c.exit_ctls, 15) else 0
        return c.exit(1, instruction=False, intr_info=info)
    return c.deliver()


def _ev_sipi(c):
    if c.guest["activity"] == 3:
        return c.exit(4, c.op("vector"), instruction=False)
    return Decision(False, guest=dict(c.guest))


def _ev_run(c):
    return Decision(False, guest=dict(c.guest))


def _ev_task_switch(c):
    source = c.op("source", "call")
    source = source if isinstance(source, int) else _TASK_SOURCES[source]
    return c.exit(9, c.op("selector") | source << 30, instruction=source in (0, 2))


def _unconditional(reason):
    def handler(c):
        return c.exit(reason, instruction=reason not in (2, 3))
    return handler


def _controlled(reason, control, bit):
    """An instruction that exits iff bit ``bit`` of control ``control`` ('proc'/'proc2') is 1."""
    def handler(c):
        return c.exit(reason) if _bit(getattr(c, control), bit) else c.complete()
    return handler


def _ev_hlt(c):
    return c.exit(12) if _bit(c.proc, 7) else c.complete(activity=1)


def _ev_invlpg(c):
    return c.exit(14, c.op("addr")) if _bit(c.proc, 9) else c.complete()


def _ev_invpcid(c):
    if not _bit(c.proc2, 12):
        return _invalid_opcode(c)
    return c.exit(58) if _bit(c.proc, 9) else c.complete()


def _tsc_value(c):
    offset = c.field("TSC_OFFSET") if _bit(c.proc, 3) else 0
    return (c.guest["tsc"] + offset) & MASK64


def _ev_rdtsc(c):
    return c.exit(16) if _bit(c.proc, 12) else c.complete(_tsc_value(c))


def _ev_rdtscp(c):
    if not _bit(c.proc2, 3):
        return _invalid_opcode(c)
    return c.exit(51) if _bit(c.proc, 12) else c.complete(_tsc_value(c))


def _ev_descriptor(c):
    reason, identity = DESCRIPTOR_INSTRUCTIONS[c.op("instr")]
    return c.exit(reason, instr_info=identity << 28) if _bit(c.proc2, 2) else c.complete()


def _ev_vminstr(c):
    return c.exit(VMINSTR_REASONS[c.op("name")])


# --- RDMSR / WRMSR (SDM §26.1.3, fact sheet §7.5) ----------------------------------------------

def _msr_exits(c, msr, write):
    if not _bit(c.proc, 28):
        return True
    if 0 <= msr <= 0x1FFF:
        base = 0x800 if write else 0x000
    elif 0xC0000000 <= msr <= 0xC0001FFF:
        base = 0xC00 if write else 0x400
    else:
        return True
    n = msr & 0x1FFF
    return _bit(c.read_memory(c.field("MSR_BITMAP") + base + (n >> 3)), n & 7) == 1


def _ev_rdmsr(c):
    msr = c.op("msr")
    if _msr_exits(c, msr, write=False):
        return c.exit(31)
    key = _MSR_KEYS.get(msr)
    return c.complete(c.guest[key] if key else 0)


def _ev_wrmsr(c):
    msr, value = c.op("msr"), c.op("value")
    if _msr_exits(c, msr, write=True):
        return c.exit(32)
    key = _MSR_KEYS.get(msr)
    if key is None:
        return c.complete()
    return c.complete(**{key: value & (0xFFFFFFFF if key == "sysenter_cs" else MASK64)})


# --- I/O instructions (SDM §26.1.3, fact sheet §7.4) -------------------------------------------

def _io_port_set(c, p):
    if p > 0xFFFF:                      # the access wraps past the top of the I/O space
        return True
    base = c.field("IO_BITMAP_B" if p & 0x8000 else "IO_BITMAP_A")
    n = p & 0x7FFF
    return _bit(c.read_memory(base + (n >> 3)), n & 7) == 1


def _ev_io(c):
    port, size = c.op("port"), c.op("size", 1)
    if _bit(c.proc, 25):
        exits = any(_io_port_set(c, p) for p in range(port, port + size))
    else:
        exits = _bit(c.proc, 24) == 1
    if not exits:
        return c.complete()
    string = bool(c.op("string", False))
    qual = ((size - 1) | int(c.op("dir", "out") == "in") << 3 | int(string) << 4
            | int(bool(c.op("rep", False))) << 5 | int(bool(c.op("imm", False))) << 6 | port << 16)
    return c.exit(30, qual, guest_linear=c.op("addr") if string else 0)


# --- control registers (SDM §26.1.3, fact sheet §7.6) ------------------------------------------

def _cr_mask_shadow(c, cr):
    return c.field(f"CR{cr}_GUEST_HOST_MASK"), c.field(f"CR{cr}_READ_SHADOW")


def _ev_cr_write(c):
    cr, value = c.op("cr"), c.op("value")
    qual = cr | 0 << 4 | c.op("gpr") << 8
    if cr in (0, 4):
        mask, shadow = _cr_mask_shadow(c, cr)
        if (value & mask) != (shadow & mask):
            return c.exit(28, qual)
        key = f"cr{cr}"
        return c.complete(**{key: (c.guest[key] & mask) | (value & ~mask & MASK64)})
    if cr == 3:
        count = min(c.field("CR3_TARGET_COUNT"), 4)
        targets = [c.field(f"CR3_TARGET_VALUE{i}") for i in range(count)]
        if _bit(c.proc, 15) and value not in targets:
            return c.exit(28, qual)
        return c.complete(cr3=value)
    if cr == 8:
        if _bit(c.proc, 19):
            return c.exit(28, qual)
        done = c.complete(tpr=value & 0xF)
        if (_bit(c.proc, 21) and not _bit(c.proc2, 9)
                and (value & 0xF) < (c.field("TPR_THRESHOLD") & 0xF)):
            # TPR below threshold: trap-like, reported after the instruction completed.
            return Decision(True, 43, instr_len=c.length, guest=done.guest)
        return done
    raise ValueError(f"MOV to CR{cr} is not modelled")


def _ev_cr_read(c):
    cr = c.op("cr")
    qual = cr | 1 << 4 | c.op("gpr") << 8
    if cr in (0, 4):
        mask, shadow = _cr_mask_shadow(c, cr)
        return c.complete((c.guest[f"cr{cr}"] & ~mask & MASK64) | (shadow & mask))
    if cr == 3:
        return c.exit(28, qual) if _bit(c.proc, 16) else c.complete(c.guest["cr3"])
    if cr == 8:
        return c.exit(28, qual) if _bit(c.proc, 20) else c.complete(c.guest["tpr"])
    raise ValueError(f"MOV from CR{cr} is not modelled")


def _ev_clts(c):
    mask, shadow = _cr_mask_shadow(c, 0)
    if _bit(mask, 3) and _bit(shadow, 3):
        return c.exit(28, 2 << 4)
    if _bit(mask, 3):
        return c.complete()
    return c.complete(cr0=c.guest["cr0"] & ~0x8 & MASK64)


def _ev_lmsw(c):
    w = c.op("value") & 0xFFFF
    mask, shadow = _cr_mask_shadow(c, 0)
    if ((_bit(mask, 0) and _bit(w, 0) and not _bit(shadow, 0))
            or (mask & w & 0xE) != (mask & shadow & 0xE)):
        return c.exit(28, 3 << 4 | w << 16)
    cr0 = c.guest["cr0"]
    low = ((cr0 & mask) | (w & ~mask)) & 0xE            # bits 3:1
    pe = _bit(cr0, 0) | (_bit(w, 0) & (1 - _bit(mask, 0)))  # LMSW can set PE, never clear it
    return c.complete(cr0=(cr0 & ~0xF & MASK64) | low | pe)


# --- debug registers (SDM §26.1.3, fact sheet §6.3) --------------------------------------------

def _ev_dr_write(c):
    dr = c.op("dr")
    if _bit(c.proc, 23):
        return c.exit(29, dr | 0 << 4 | c.op("gpr") << 8)
    return c.complete(dr7=c.op("value")) if dr == 7 else c.complete()


def _ev_dr_read(c):
    dr = c.op("dr")
    if _bit(c.proc, 23):
        return c.exit(29, dr | 1 << 4 | c.op("gpr") << 8)
    return c.complete(c.guest["dr7"] if dr == 7 else 0)


_HANDLERS = {
    "cpuid": _unconditional(10), "getsec": _unconditional(11), "invd": _unconditional(13),
    "xsetbv": _unconditional(55), "vmcall": _unconditional(18),
    "init": _unconditional(3), "triple_fault": _unconditional(2),
    "hlt": _ev_hlt, "invlpg": _ev_invlpg, "invpcid": _ev_invpcid,
    "mwait": _controlled(36, "proc", 10), "monitor": _controlled(39, "proc", 29),
    "pause": _controlled(40, "proc", 30), "rdpmc": _controlled(15, "proc", 11),
    "wbinvd": _controlled(54, "proc2", 6), "rdrand": _controlled(57, "proc2", 11),
    "rdseed": _controlled(61, "proc2", 16),
    "rdtsc": _ev_rdtsc, "rdtscp": _ev_rdtscp, "descriptor": _ev_descriptor,
    "vminstr": _ev_vminstr, "rdmsr": _ev_rdmsr, "wrmsr": _ev_wrmsr, "io": _ev_io,
    "cr_write": _ev_cr_write, "cr_read": _ev_cr_read, "clts": _ev_clts, "lmsw": _ev_lmsw,
    "dr_write": _ev_dr_write, "dr_read": _ev_dr_read,
    "task_switch": _ev_task_switch, "exception": _ev_exception, "nmi": _ev_nmi,
    "extint": _ev_extint, "sipi": _ev_sipi, "run": _ev_run, "smi": _ev_run,
}

#: Events after which a monitor-trap-flag exit can never follow: nothing happened in the guest.
# An SMI with the default treatment of SMIs enters SMM, not a VM exit, and is not modelled
# further: like ``run``, nothing retires and nothing changes.
_NO_MTF = frozenset({"run", "sipi", "smi"})


def decide(event, vmcs, guest, read_memory):
    """Decide whether ``event`` causes a VM exit (SDM §26.1–§26.2) and what the exit reports
    (SDM §27.2); fact sheet §6 and §7. The arguments are not modified."""
    c = _Ctx(event, vmcs, guest, read_memory)
    try:
        handler = _HANDLERS[c.name]
    except KeyError:
        raise ValueError(f"unknown event {c.name!r}") from None
    d = handler(c)
    if not d.exit and c.name not in _NO_MTF and _bit(c.proc, 27):
        # Monitor trap flag (SDM §26.5.2): exit after the instruction / event delivery.
        return Decision(True, 37, value=d.value, guest=d.guest)
    return d


def boundary(vmcs, guest, *, at_entry, mtf_pending, timer_expired):
    """The exits taken at an instruction boundary (before an event, or right after VM entry),
    highest priority first (SDM §26.2, fact sheet §7.2); ``None`` when there is none."""
    proc = vmcs.get("CPU_BASED_VM_EXEC_CONTROL", 0)
    intr = guest["interruptibility"]
    if at_entry and mtf_pending:
        reason = 37
    elif timer_expired:
        reason = 52
    elif _bit(proc, 22) and not _bit(intr, 3) and not _bit(intr, 1):
        reason = 8
    elif _bit(proc, 2) and _bit(guest["rflags"], 9) and not intr & 0b11:
        reason = 7
    else:
        return None
    return Decision(True, reason, guest=dict(guest))
