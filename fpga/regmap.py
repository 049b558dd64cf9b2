"""The MMIO register map of the VMX unit, derived from its signature — and the C headers made from it.

One source of truth: the map is computed from the unit's ports and their ``data`` layouts
(:class:`~hwvirt.hdl.vmcs_unit.Command`, :class:`~hwvirt.hdl.vmcs_unit.Result`,
:class:`~hwvirt.hdl.vmcs_unit.ProcessorState`, …). The gateware (:class:`fpga.soc.UnitMMIO`) decodes
it and :func:`c_header` writes it out for the firmware, so neither side carries hand-written offsets.
A new port of the unit — a stream such as the coming ``guest`` event port, or a plain input or
output — gets a block of its own without a change here.

Every port is one *block* of :data:`BLOCK_SIZE` bytes in the unit's window. All registers are 32
bits wide and must be accessed with 32-bit loads and stores.

==============  =====================================================================================
block offset    contents
==============  =====================================================================================
0x000 + 4i      raw word *i* of the port's bits (bits 32i+31 … 32i of the payload, LSB first)
0x200 + 4j      named register *j*: one field of the layout (a field wider than 32 bits takes two
                registers, ``_LO``/``_HI``, or more, ``_W0`` …); writing one changes only its bits
0x3F0           control: in-streams — write: GO (present the payload, ``valid`` until accepted),
                read: bit 0 PENDING; out-streams — read: bit 0 VALID (a result is held), bits 15:8
                the number of results received (mod 256), write: POP (release the held result)
==============  =====================================================================================

Kinds of block: an *in-stream* (``cmd``, later ``guest``) holds a payload register that firmware
writes and hands over with GO; an *out-stream* (``resp``) captures one payload (``ready`` is high
while nothing is held) and keeps it until POP; a plain *input* (``cpu``) is a register that drives
the port, readable back; a plain *output* (``status``, ``current_vmcs``, ``entry_failures``) is
read-only. Block 0 is the identification block: ``ID`` (0x000) reads :data:`UNIT_ID`, ``BLOCKS``
(0x004) the number of blocks.
"""

from dataclasses import dataclass, field

from amaranth.hdl import Shape
from amaranth.lib import data, wiring


__all__ = ["BLOCK_SIZE", "NAMED_OFFSET", "CONTROL_OFFSET", "UNIT_ID", "Register", "Block", "RegisterMap",
           "unit_register_map", "c_header", "c_names_header"]

#: Bytes per block.
BLOCK_SIZE = 0x400
#: Offset of the first named register in a block.
NAMED_OFFSET = 0x200
#: Offset of the control register (GO / PENDING, POP / VALID).
CONTROL_OFFSET = 0x3F0
#: Value of the ID register: "HVMX".
UNIT_ID = 0x48564D58
_MAX_RAW_WORDS = NAMED_OFFSET // 4
_MAX_NAMED = (CONTROL_OFFSET - NAMED_OFFSET) // 4

#: Block numbers of the ports we know, so that their offsets do not move when a port is added.
#: A port not listed here gets the next free block after these.
KNOWN_BLOCKS = {"cmd": 1, "guest": 2, "resp": 3, "cpu": 4, "status": 5, "current_vmcs": 6,
                "entry_failures": 7, "arch_state": 8}
#: Output ports left out of the map by default (wide, and no firmware needs them yet).
DEFAULT_HIDDEN = ("arch_state",)


@dataclass(frozen=True)
class Register:
    """A named register: bits ``lo`` … ``lo + width - 1`` of its block's vector."""
    name: str
    offset: int       # byte offset within the block
    lo: int
    width: int
    doc: str = ""


@dataclass
class Block:
    """One port of the unit in the register map.

    ``kind`` is ``"in_stream"``, ``"out_stream"``, ``"in"`` or ``"out"``; ``width`` the number of bits
    of the payload (streams) or port; ``layout`` its :class:`data.Layout` (``None`` for a plain
    value); ``fields`` the ``(name, offset, width)`` of each top-level field, for the C header.
    """
    name: str
    kind: str
    index: int
    width: int
    layout: object = None
    fields: list = field(default_factory=list)
    registers: list = field(default_factory=list)

    @property
    def base(self):
        return self.index * BLOCK_SIZE

    @property
    def words(self):
        return (self.width + 31) // 32

    @property
    def writable(self):
        return self.kind in ("in_stream", "in")


@dataclass
class RegisterMap:
    blocks: list

    def __getitem__(self, name):
        for block in self.blocks:
            if block.name == name:
                return block
        raise KeyError(name)

    def __contains__(self, name):
        return any(block.name == name for block in self.blocks)

    @property
    def size(self):
        """Bytes the unit's window needs (a power of two)."""
        end = (max(b.index for b in self.blocks) + 1) * BLOCK_SIZE
        return 1 << (end - 1).bit_length()


def _is_stream(member):
    return member.is_signature and set(member.signature.members) >= {"payload", "valid", "ready"}


def _castable_layout(shape):
    try:
        data.Layout.cast(shape)
    except TypeError:
        return False
    return True


def _named_registers(block_name, fields):
    regs = []
    for fname, offset, width in fields:
        base = fname.upper()
        parts = (width + 31) // 32
        for k in range(parts):
            if parts == 1:
                name = base
            elif parts == 2:
                name = base + ("_LO", "_HI")[k]
            else:
                name = f"{base}_W{k}"
            regs.append((name, offset + 32 * k, min(32, width - 32 * k)))
    if len(regs) > _MAX_NAMED:
        raise ValueError(f"port {block_name!r} has {len(regs)} named registers; a block holds {_MAX_NAMED}")
    return [Register(name, NAMED_OFFSET + 4 * j, lo, width) for j, (name, lo, width) in enumerate(regs)]


def unit_register_map(unit, *, hidden=DEFAULT_HIDDEN):
    """The register map of a unit (any :class:`wiring.Component` with stream and plain ports).

    The ``bus`` port (the unit's memory master) is not part of the map; ports named in ``hidden``
    are left out.
    """
    blocks = []
    used = set(KNOWN_BLOCKS.values())
    next_free = max(used) + 1
    for name, member in unit.signature.members.items():
        if name == "bus" or name in hidden:
            continue
        if _is_stream(member):
            kind = "in_stream" if member.flow == wiring.In else "out_stream"
            shape = member.signature.members["payload"].shape
        elif member.is_port:
            kind = "in" if member.flow == wiring.In else "out"
            shape = member.shape
        else:
            raise TypeError(f"port {name!r} is neither a stream nor a plain port; the register map "
                            f"does not know how to expose it")
        layout, fields = (data.Layout.cast(shape), [(f, fl.offset, Shape.cast(fl.shape).width)
                                                   for f, fl in data.Layout.cast(shape)]) \
            if _castable_layout(shape) else (None, [(name, 0, Shape.cast(shape).width)])
        width = Shape.cast(shape).width
        if (width + 31) // 32 > _MAX_RAW_WORDS:
            raise ValueError(f"port {name!r} is {width} bits wide; a block holds {32 * _MAX_RAW_WORDS}")
        if name in KNOWN_BLOCKS:
            index = KNOWN_BLOCKS[name]
        else:
            index = next_free
            next_free += 1
        blocks.append(Block(name=name, kind=kind, index=index, width=width, layout=layout,
                            fields=fields, registers=_named_registers(name, fields)))
    blocks.sort(key=lambda b: b.index)
    return RegisterMap(blocks)


# -- C headers ------------------------------------------------------------------------------------

def _c_ident(text):
    return "".join(c if c.isalnum() else "_" for c in text).upper()


def _u(value, digits=0):
    return f"HV_U(0x{value:0{digits}x})"


def c_header(regmap, *, unit_base, sys_defines=()):
    """``hwvirt_regs.h``: the unit's register addresses and the bit positions of every field.

    ``sys_defines`` adds ``(name, address, comment)`` rows (the SoC's other registers). The header
    is usable from C and from assembly (the ``HV_U`` macro adds the ``u`` suffix in C only).
    """
    from hwvirt.hdl.vmcs_unit import Fault, Outcome, VMXOp

    out = ["/* Generated by fpga/regmap.py from the unit's signature; do not edit. */",
           "#ifndef HWVIRT_REGS_H", "#define HWVIRT_REGS_H", "",
           "#ifdef __ASSEMBLER__", "#define HV_U(x) x", "#else", "#define HV_U(x) x##u", "#endif", ""]
    for name, value, comment in sys_defines:
        out.append(f"#define {name:<40} {_u(value, 8)}  /* {comment} */")
    out += ["", f"#define {'HV_UNIT_BASE':<40} {_u(unit_base, 8)}",
            f"#define {'HV_UNIT_ID':<40} {_u(UNIT_ID, 8)}  /* reads \"HVMX\" */",
            f"#define {'HV_ID':<40} (HV_UNIT_BASE + {_u(0)})",
            f"#define {'HV_BLOCKS':<40} (HV_UNIT_BASE + {_u(4)})", ""]
    for block in regmap.blocks:
        p = f"HV_{_c_ident(block.name)}"
        out.append(f"/* block {block.index}: port '{block.name}' ({block.kind}, {block.width} bits) */")
        out.append(f"#define {p + '_BASE':<40} (HV_UNIT_BASE + {_u(block.base, 4)})")
        out.append(f"#define {p + '_WORDS':<40} {block.words}")
        out.append(f"#define {p + '_BITS':<40} {block.width}")
        out.append(f"#define {p + '_RAW(i)':<40} ({p}_BASE + 4 * (i))")
        if block.kind in ("in_stream", "out_stream"):
            out.append(f"#define {p + '_CTRL':<40} ({p}_BASE + {_u(CONTROL_OFFSET, 3)})")
        for reg in block.registers:
            out.append(f"#define {p + '_' + reg.name:<40} ({p}_BASE + {_u(reg.offset, 3)})  "
                       f"/* bits {reg.lo + reg.width - 1}:{reg.lo} */")
        for fname, offset, width in block.fields:
            f = f"{p}_{_c_ident(fname)}"
            out.append(f"#define {f + '_OFFSET':<40} {offset}")
            out.append(f"#define {f + '_WIDTH':<40} {width}")
        out.append("")
    out.append("/* control register bits */")
    out.append(f"#define {'HV_CTRL_PENDING':<40} 1  /* in-stream: payload not yet accepted */")
    out.append(f"#define {'HV_CTRL_VALID':<40} 1  /* out-stream: a result is held */")
    out.append("")
    for enum_cls, prefix in ((VMXOp, "HV_OP_"), (Outcome, "HV_OUTCOME_"), (Fault, "HV_FAULT_")):
        out.append(f"/* {enum_cls.__qualname__} */")
        for member in enum_cls:
            out.append(f"#define {prefix + member.name:<40} {member.value}")
        out.append("")
    out += ["#endif", ""]
    return "\n".join(out)


def _c_string(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def c_names_header(capabilities=None):
    """``hwvirt_names.h``: VMCS field encodings, the check catalogue, error and outcome names.

    The check table is indexed by ``Result.check`` (0: none, *k*: catalogue entry *k* − 1).
    """
    from hwvirt.hdl.entry_check_catalogue import CHECKS
    from hwvirt.hdl.vmcs_fields import VMCS_FIELDS
    from hwvirt.hdl.vmcs_unit import ERROR_DESCRIPTIONS, Outcome, VMInstructionError

    out = ["/* Generated by fpga/regmap.py from the field and check catalogues; do not edit. */",
           "#ifndef HWVIRT_NAMES_H", "#define HWVIRT_NAMES_H", ""]
    out.append("/* VMCS field encodings (hwvirt.hdl.vmcs_fields, Linux KVM names) */")
    for f in VMCS_FIELDS:
        out.append(f"#define {'VMCS_' + f.name:<44} 0x{f.encoding:04x}")
    out.append("")
    out.append(f"#define HV_N_CHECKS {len(CHECKS)}")
    n_err = max(e.value for e in VMInstructionError) + 1
    out.append(f"#define HV_N_ERRORS {n_err}")
    out += ["extern const char *const hv_check_names[];", "extern const char *const hv_check_sdm[];",
            "extern const char *const hv_error_names[];", "extern const char *const hv_outcome_names[];",
            "", "/* The tables: defined in the one file that defines HV_DEFINE_NAMES first. */",
            "#ifdef HV_DEFINE_NAMES"]
    out.append("/* Result.check -> check ID (hwvirt.hdl.entry_check_catalogue) */")
    out.append("const char *const hv_check_names[] = {")
    out.append('    "none",')
    for check in CHECKS:
        out.append(f"    {_c_string(check.id)},")
    out.append("};")
    out.append("/* Result.check -> SDM section of the rule */")
    out.append("const char *const hv_check_sdm[] = {")
    out.append('    "",')
    for check in CHECKS:
        out.append(f"    {_c_string(check.sdm)},")
    out.append("};")
    out.append("")
    out.append("/* VM-instruction error number -> description (SDM vol. 3C §31.4) */")
    out.append(f"const char *const hv_error_names[{n_err}] = {{")
    for e in VMInstructionError:
        out.append(f"    [{e.value}] = {_c_string(ERROR_DESCRIPTIONS[e])},")
    out.append("};")
    out.append("")
    out.append("const char *const hv_outcome_names[] = {")
    for o in Outcome:
        out.append(f"    [{o.value}] = {_c_string(o.name.lower())},")
    out.append("};")
    out += ["#endif  /* HV_DEFINE_NAMES */", "", "#endif", ""]
    return "\n".join(out)
