"""Guest events in scenarios: ``op = "guest"`` steps and their encoding for the guest-event port.

One table, :data:`EVENTS`, says which operands each event takes (required ones first), and
:func:`encode` turns a parsed event into the fields of :class:`~hwvirt.hdl.exit_logic.GuestEvent`.
Every event also takes ``len`` (the instruction length; default
:data:`~hwvirt.hdl.exit_logic.DEFAULT_LENGTH`) and ``cycles`` (guest clock cycles that pass before the
event, default 0).
"""

from typing import NamedTuple

from hwvirt.hdl.exit_logic import DEFAULT_LENGTH, GuestEventKind, InterruptionType, TaskSwitchSource
from hwvirt.hdl.vmcs_unit import VMXOp


__all__ = ["EVENTS", "READING_EVENTS", "MEMORY_ACCESSES", "EXCEPTION_TYPES", "DESCRIPTOR_INSTRUCTIONS", "VMX_INSTRUCTIONS",
           "EventSpec", "encode"]


class EventSpec(NamedTuple):
    kind: GuestEventKind
    required: tuple = ()
    optional: tuple = ()


#: Event name → the port's event kind and the operands it takes.
EVENTS = {
    "cpuid":        EventSpec(GuestEventKind.CPUID, (), ("eax", "ecx")),
    "getsec":       EventSpec(GuestEventKind.GETSEC),
    "invd":         EventSpec(GuestEventKind.INVD),
    "xsetbv":       EventSpec(GuestEventKind.XSETBV, (), ("ecx", "value")),
    "vmcall":       EventSpec(GuestEventKind.VMCALL),
    "hlt":          EventSpec(GuestEventKind.HLT),
    "invlpg":       EventSpec(GuestEventKind.INVLPG, ("addr",)),
    "invpcid":      EventSpec(GuestEventKind.INVPCID),
    "mwait":        EventSpec(GuestEventKind.MWAIT),
    "monitor":      EventSpec(GuestEventKind.MONITOR),
    "pause":        EventSpec(GuestEventKind.PAUSE),
    "rdpmc":        EventSpec(GuestEventKind.RDPMC, (), ("ecx",)),
    "rdtsc":        EventSpec(GuestEventKind.RDTSC),
    "rdtscp":       EventSpec(GuestEventKind.RDTSCP),
    "wbinvd":       EventSpec(GuestEventKind.WBINVD),
    "rdrand":       EventSpec(GuestEventKind.RDRAND),
    "rdseed":       EventSpec(GuestEventKind.RDSEED),
    "descriptor":   EventSpec(GuestEventKind.GDTR_IDTR_ACCESS, ("instr",)),
    "rdmsr":        EventSpec(GuestEventKind.RDMSR, ("msr",)),
    "wrmsr":        EventSpec(GuestEventKind.WRMSR, ("msr", "value")),
    "io":           EventSpec(GuestEventKind.IO, ("port",), ("size", "dir", "string", "rep", "imm", "addr")),
    "cr_write":     EventSpec(GuestEventKind.CR_WRITE, ("cr", "value"), ("gpr",)),
    "cr_read":      EventSpec(GuestEventKind.CR_READ, ("cr",), ("gpr",)),
    "clts":         EventSpec(GuestEventKind.CLTS),
    "lmsw":         EventSpec(GuestEventKind.LMSW, ("value",)),
    "dr_write":     EventSpec(GuestEventKind.DR_WRITE, ("dr", "value"), ("gpr",)),
    "dr_read":      EventSpec(GuestEventKind.DR_READ, ("dr",), ("gpr",)),
    "vminstr":      EventSpec(GuestEventKind.VMX_INSTRUCTION, ("name",)),
    "task_switch":  EventSpec(GuestEventKind.TASK_SWITCH, ("selector",), ("source",)),
    "exception":    EventSpec(GuestEventKind.EXCEPTION, ("vector",), ("error_code", "type", "addr", "during")),
    "nmi":          EventSpec(GuestEventKind.NMI),
    "extint":       EventSpec(GuestEventKind.EXTERNAL_INTERRUPT, ("vector",)),
    "init":         EventSpec(GuestEventKind.INIT),
    "smi":          EventSpec(GuestEventKind.SMI),
    "sipi":         EventSpec(GuestEventKind.SIPI, ("vector",)),
    "triple_fault": EventSpec(GuestEventKind.TRIPLE_FAULT),
    "run":          EventSpec(GuestEventKind.RUN),
    "mem":          EventSpec(GuestEventKind.MEMORY, (), ("gpa", "gva", "access", "user")),
}

#: Events whose no-exit result carries the value the guest reads.
READING_EVENTS = ("rdtsc", "rdtscp", "rdmsr", "cr_read", "dr_read", "mem")

#: ``access`` of a ``mem`` event → :class:`~hwvirt.hdl.ept_walker.Access`.
MEMORY_ACCESSES = {"r": 0, "w": 1, "x": 2}

#: ``type`` of an ``exception`` event (and of its ``during`` event) → interruption type.
EXCEPTION_TYPES = {
    "hardware": InterruptionType.HARDWARE_EXCEPTION, "software": InterruptionType.SOFTWARE_EXCEPTION,
    "privileged": InterruptionType.PRIVILEGED_SOFTWARE_EXCEPTION,
}
DURING_TYPES = {**EXCEPTION_TYPES, "extint": InterruptionType.EXTERNAL_INTERRUPT,
                "nmi": InterruptionType.NMI, "soft_int": InterruptionType.SOFTWARE_INTERRUPT}

#: ``instr`` of a ``descriptor`` event → (kind, identity in instruction-information bits 29:28).
DESCRIPTOR_INSTRUCTIONS = {
    "sgdt": (GuestEventKind.GDTR_IDTR_ACCESS, 0), "sidt": (GuestEventKind.GDTR_IDTR_ACCESS, 1),
    "lgdt": (GuestEventKind.GDTR_IDTR_ACCESS, 2), "lidt": (GuestEventKind.GDTR_IDTR_ACCESS, 3),
    "sldt": (GuestEventKind.LDTR_TR_ACCESS, 0), "str": (GuestEventKind.LDTR_TR_ACCESS, 1),
    "lldt": (GuestEventKind.LDTR_TR_ACCESS, 2), "ltr": (GuestEventKind.LDTR_TR_ACCESS, 3),
}

#: ``name`` of a ``vminstr`` event → the VMX instruction.
VMX_INSTRUCTIONS = {op.name.lower(): op for op in VMXOp if op != VMXOp.RDMSR}

TASK_SOURCES = {source.name.lower(): source for source in TaskSwitchSource}


def encode(event):
    """The :class:`~hwvirt.hdl.exit_logic.GuestEvent` fields of a parsed event (a dict with ``event``
    and its operands; defaults are applied here)."""
    name = event["event"]
    spec = EVENTS[name]
    get = event.get
    fields = {
        "kind": spec.kind,
        "length": get("len", DEFAULT_LENGTH.get(name, 0)),
        "cycles": get("cycles", 0),
        "vector": get("vector", 0),
        "error_code": get("error_code", 0),
        "gpr": get("gpr", 0),
        "port": get("port", 0),
        "size": get("size", 1),
        "direction_in": int(get("dir", "out") == "in"),
        "string": int(get("string", False)),
        "rep": int(get("rep", False)),
        "immediate": int(get("imm", False)),
        "value": get("value", get("addr", 0)),
        "register": get("cr", get("dr", 0)),
        "index": get("msr", get("selector", 0)),
        "event_type": EXCEPTION_TYPES[get("type", "hardware")],
        "during": 0,
        "during_error": 0,
        "access": 0,
        "user": 0,
        "linear": 0,
    }
    if name == "mem":
        fields.update(value=get("gpa", get("gva", 0)), linear=int("gva" in event),
                      access=MEMORY_ACCESSES[get("access", "r")], user=int(get("user", False)))
    if name == "descriptor":
        fields["kind"], fields["register"] = DESCRIPTOR_INSTRUCTIONS[event["instr"]]
    elif name == "vminstr":
        fields["index"] = VMX_INSTRUCTIONS[event["name"]]
    elif name == "task_switch":
        fields["event_type"] = TASK_SOURCES[get("source", "call")].value
    elif name == "exception" and "during" in event:
        during = event["during"]
        error = "error_code" in during
        fields["during"] = (during["vector"] | DURING_TYPES[during.get("type", "hardware")].value << 8
                            | error << 11 | 1 << 31)
        fields["during_error"] = during.get("error_code", 0)
    for key in ("kind", "event_type"):
        if hasattr(fields[key], "value"):
            fields[key] = fields[key].value
    if hasattr(fields["index"], "value"):
        fields["index"] = fields["index"].value
    return fields
