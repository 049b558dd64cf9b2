"""Scenario files: hypervisor-like instruction sequences to replay against the VMX hardware.

A scenario is a TOML file. The loader (:func:`load_scenario`, :func:`parse_scenario`) checks it
completely before anything runs and turns it into plain dataclasses (:class:`Scenario`,
:class:`Config`, :class:`Step`); the runner executes the steps one after another against a
freshly reset processor and compares each result with the step's ``expect`` table. Every mistake in
a file (an unknown key, a misspelled op or field name, a value out of range) is reported as a
:class:`ScenarioError` whose message names the file and the place, for example::

    examples/x.toml: step 3 (vmwrite): unknown key 'feild' (did you mean 'field'?)

This docstring is the reference for the format.

Top level
---------
::

    name = "vmxon-basics"     # optional; defaults to the file name without extension
    arch = "vmx"              # "vmx" (default) or "svm" (accepted here; the VMX runner refuses it)
    description = "..."       # optional free text

followed by the optional tables ``[config]`` and ``[cpu]``, any number of ``[[memory]]`` entries and
at least one ``[[step]]``. No other top-level key is allowed.

Integers
--------
Every numeric value is a TOML integer or a string holding one (``"0x1f"``, ``"0b101"``,
``"0xffff_ffff_ffff_ffff"``; Python ``int(s, 0)`` syntax). Strings are handy for values at or above
2**63, which the TOML standard does not promise to support. Booleans are not integers. Unless said
otherwise a value must lie in 0 … 2**64-1.

``[config]`` — the hardware configuration (fixed at elaboration time)
---------------------------------------------------------------------
===================  =========  =====================================================================
key                  default    meaning
===================  =========  =====================================================================
revision_id          4          VMCS revision identifier, IA32_VMX_BASIC[30:0]; 1 … 0x7fffffff
maxphyaddr           39         physical-address width; 32 … 52
vmcs_cache_slots     2          VMCS cache entries held on chip; at least 1
memory_latency       0          extra wait cycles per bus access; 0 … 64
cr3_target_count     4          CR3-target values offered, IA32_VMX_MISC[24:16]; 0 … 256
features             {}         ``{ name = true|false, ... }``: turn a feature of
                                ``hwvirt.hdl.capabilities.FEATURES`` on or off relative to
                                ``DEFAULT_FEATURES``
msr                  {}         ``{ "0x482" = value, ... }``: replace a whole capability MSR
                                (0x480 … 0x493); keys are MSR indices written as strings (a bare
                                ``0x482`` key is fine in TOML), decimal or ``0x`` hex
===================  =========  =====================================================================

Everything the hardware answers (which fields exist, which INVEPT types work, what RDMSR returns)
is derived from the resulting capability MSRs, see ``hwvirt.hdl.capabilities``.

``[cpu]`` — processor state before the first step
-------------------------------------------------
===================  ==============  ============================================================
key                  default         meaning
===================  ==============  ============================================================
cr0                  0x80050033      CR0 (PE, MP, ET, NE, WP, AM, PG)
cr4                  0x2020          CR4 (PAE, VMXE)
efer                 0xd01           IA32_EFER (SCE, LME, LMA, NXE)
cpl                  0               current privilege level, 0 … 3
feature_control      0x5             IA32_FEATURE_CONTROL (lock + VMXON outside SMX)
rflags               0x2             RFLAGS (bit 17 = virtual-8086 mode)
cs_l                 1               CS.L, 0 or 1 (with EFER.LMA: 1 = 64-bit mode, 0 = compatibility)
mov_ss_blocking      0               1 = events blocked by MOV SS (the previous instruction loaded SS)
===================  ==============  ============================================================

``[[memory]]`` — initial physical memory
----------------------------------------
::

    [[memory]]
    addr = 0x1000
    u32 = [4]            # exactly one of u8 / u16 / u32 / u64 (little-endian elements) …
    # hex = "04000000"   # … or hex: bytes in address order; spaces and '_' are ignored

Memory not written anywhere reads as zero.

``[[step]]`` — one instruction or test-bench action each, executed in file order
--------------------------------------------------------------------------------
Every step has ``op``, optionally ``comment`` (free text) and ``expect`` (below), and exactly the
operands of its op; anything else is an error.

============  ======================================  =================================================
op            operands (optional ones in brackets)    meaning
============  ======================================  =================================================
vmxon         addr                                    VMXON with the VMXON-region physical address
vmxoff                                                VMXOFF
vmclear       addr                                    VMCLEAR of the VMCS region at addr
vmptrld       addr                                    VMPTRLD
vmptrst                                               VMPTRST; the stored pointer is the result value
vmread        field                                   VMREAD; the value read is the result value
vmwrite       field + value, or fields                VMWRITE, once per field; ``fields = { NAME = v,
                                                      ... }`` writes several in the given order
vmlaunch                                              VMLAUNCH
vmresume                                              VMRESUME
vmcall                                                VMCALL
invept        type, eptp                              INVEPT; descriptor bits 127:64 are zero
invvpid       type, vpid, [addr],                     INVVPID; vpid = descriptor bits 15:0 (16 bit),
              [descriptor_reserved]                   addr = linear address (bits 127:64, default 0),
                                                      descriptor_reserved = bits 63:16 (48 bit,
                                                      default 0)
rdmsr         msr                                     RDMSR (32-bit index); the MSR value is the result
set_cpu       any ``[cpu]`` key (at least one)        change processor state between instructions
mem_write     addr, one of u8/u16/u32/u64/hex         store bytes as in ``[[memory]]``
mem_read      addr, width                             load width (8, 16, 32 or 64) bits, little-endian;
                                                      the result value
guest         event, and that event's operands        something the guest does in VMX non-root
                                                      operation (below); exit or no_exit
ept_map       pml4, tables, map                       build EPT tables from Plan 9 devvmx map lines
                                                      (``hwvirt.sim.ept_map``) under the PML4 at
                                                      pml4, new tables from tables upwards
============  ======================================  =================================================

``op = "guest"`` — guest events (``hwvirt.sim.guest_events.EVENTS``)
---------------------------------------------------------------------
=============  ===================================================================================
event          operands (all events also take ``len``, the instruction length 1 … 15, and
               ``cycles``, guest clock cycles that pass before the event)
=============  ===================================================================================
cpuid          [eax, ecx]
getsec, invd, vmcall, hlt, invpcid, mwait, monitor, pause, rdtsc, rdtscp, wbinvd, rdrand, rdseed,
clts, nmi, init, triple_fault, run (time passes; no instruction retires)
xsetbv         [ecx, value]
rdpmc          [ecx]
invlpg         addr (the linear address)
descriptor     instr: sgdt, sidt, lgdt, lidt, sldt, str, lldt or ltr
rdmsr          msr;  wrmsr: msr, value
io             port, [size 1/2/4 = 1, dir "in"/"out" = "out", string, rep, imm (port in the
               instruction, not DX), addr (a string instruction's linear address)]
cr_write       cr (0, 3, 4, 8), value, [gpr 0 … 15 = 0];  cr_read: cr, [gpr]
lmsw           value (the 16-bit source)
dr_write       dr (0 … 7), value, [gpr];  dr_read: dr, [gpr]
vminstr        name: a VMX instruction (vmclear, vmlaunch, …, invept, invvpid, vmcall)
task_switch    selector, [source: call, iret, jmp, gate]
exception      vector (0 … 31), [error_code, type: hardware/software/privileged, addr (#PF
               linear address), during = { vector, type, error_code } (the event being delivered
               when the exception happened: hardware/software/privileged/extint/nmi/soft_int)]
extint         vector;  sipi: vector
mem            gpa or gva (exactly one), [access "r"/"w"/"x" = "r", user]: a data access or fetch,
               translated by the EPT walker (through the guest's own page tables first for a gva
               with guest CR0.PG = 1); no_exit with the host-physical address as ``value``, or exit
               48 (EPT violation) / 49 (EPT misconfiguration), or a guest #PF (exit 0 if the
               exception bitmap says so). The step's JSON adds ``walk = {refs, tlb_hit, pwc_hits}``.
=============  ===================================================================================

The result is ``exit`` (with ``exit_reason`` and ``qualification``; the other exit-information
fields are read with ``vmread``) or ``no_exit`` (with ``value`` for rdtsc, rdtscp, rdmsr, cr_read
and dr_read). An exit due before the first guest instruction after a VM entry (interrupt or NMI
window open, preemption timer loaded with 0, pending MTF) is the result of the ``vmlaunch`` /
``vmresume`` step itself.

A ``field`` (and each key of ``fields``) is a VMCS field name as in ``hwvirt.hdl.vmcs_fields``
(case-insensitive; ``NAME_HIGH`` selects the high half of a 64-bit field) or an encoding, as an
integer or a numeric string. Encodings the processor does not know are allowed: the hardware answers
them with VM-instruction error 12, which is something a scenario may want to show.

``expect`` — what the step must produce (all keys optional)
-----------------------------------------------------------
=============  ===============================================================================
key            meaning
=============  ===============================================================================
outcome        succeed, fail_invalid, fail_valid, fault, entered, entry_failed, exit, no_exit
error          VM-instruction error number; only with fail_valid (fail_invalid has none)
fault          "UD" or "GP", the exception raised; only with fault
value          the step's result value (vmread, vmptrst, rdmsr, mem_read; what a guest event
               reads); only with succeed or no_exit
exit_reason    exit reason of a VM exit or a failed VM entry; only with exit or entry_failed
qualification  exit qualification; only with exit or entry_failed
check          ID of the VM-entry check that decided a failed entry (``hwvirt.hdl.entry_check_catalogue``)
checks         the list of every failing VM-entry check ID, in catalogue order ([] for a clean entry)
injected       ``{ vector, type, error_code }`` of the event a VM entry injected (keys optional)
walk           ``{ refs, tlb_hit, pwc_hits }`` of a guest ``mem`` access's translation (keys optional)
delivered      ``{ vector, error_code }`` of the #PF a ``mem`` access's guest paging raised and the
               guest received (no exit); only with no_exit
cycles         clock cycles the step takes
=============  ===============================================================================

A key that the given ``outcome`` never reports (``error`` next to fail_invalid, say) is an error.
Without ``outcome`` the keys are checked on their own.

Data model
----------
Steps are numbered from 1. Operands are normalized: numbers become ``int``; ``field`` becomes its
``int`` encoding; a vmwrite always has ``args["fields"]``, a list of ``(encoding, value)`` pairs (one
pair for the ``field`` + ``value`` form); memory data become ``args["data"]`` (``bytes``); set_cpu's
keys are collected in ``args["cpu"]``; invvpid's optional operands are filled with their defaults.
``expect`` keeps its keys with normalized values (``fault`` upper-case).
"""

import difflib
import tomllib
from dataclasses import dataclass, field as _dc_field
from pathlib import Path
from typing import Callable, NamedTuple

from . import ept_map, guest_events


__all__ = [
    "load_config", "read_toml", "parse_document", "parse_guest_event",
    "ScenarioError", "Scenario", "Config", "Step", "load_scenario", "parse_scenario",
    "OPS", "OUTCOMES", "FAULTS", "CPU_DEFAULTS", "ARCHES",
]


class ScenarioError(Exception):
    """A scenario file that cannot be loaded; the message names the file and the place."""


ARCHES = ("vmx", "svm")
OUTCOMES = ("succeed", "fail_invalid", "fail_valid", "fault", "entered", "entry_failed", "exit",
            "no_exit")
FAULTS = ("UD", "GP")

#: Processor state before the first step, unless ``[cpu]`` says otherwise.
CPU_DEFAULTS = {
    "cr0": 0x8005_0033,
    "cr4": 0x2020,
    "efer": 0xD01,
    "cpl": 0,
    "feature_control": 0x5,
    "rflags": 0x2,
    "cs_l": 1,
    "mov_ss_blocking": 0,
}

_MASK64 = (1 << 64) - 1


# -- locations and errors -------------------------------------------------------------------------

class _Where:
    """A place in a scenario file, used to build error messages."""

    def __init__(self, source, label):
        self.source = source
        self.label = label

    def error(self, message):
        prefix = f"{self.label}: " if self.label else ""
        return ScenarioError(f"{self.source}: {prefix}{message}")

    def unknown(self, what, name, known):
        hint = difflib.get_close_matches(str(name), list(known), n=1, cutoff=0.6)
        suffix = f" (did you mean {hint[0]!r}?)" if hint else ""
        return self.error(f"unknown {what} {name!r}{suffix}")


# -- value converters: (where, key, raw value) -> normalized value ------------------------------

def _to_int(where, key, value):
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise where.error(f"{key!r}: expected an integer, not {value!r}")
    if isinstance(value, str):
        try:
            value = int(value.strip(), 0)
        except ValueError:
            raise where.error(f"{key!r}: expected an integer, not {value!r}") from None
    if value < 0:
        raise where.error(f"{key!r}: value {value} is negative")
    if value > _MASK64:
        raise where.error(f"{key!r}: value {value:#x} is wider than 64 bits")
    return value


def _uint(bits=64):
    def convert(where, key, value):
        value = _to_int(where, key, value)
        if value >> bits:
            raise where.error(f"{key!r}: value {value:#x} is wider than {bits} bits")
        return value
    return convert


def _int_range(low, high=None):
    def convert(where, key, value):
        value = _to_int(where, key, value)
        if high is None and value < low:
            raise where.error(f"{key!r}: value {value} is less than {low}")
        if high is not None and not low <= value <= high:
            raise where.error(f"{key!r}: value {value} is outside {low} … {high}")
        return value
    return convert


def _int_choice(*choices):
    def convert(where, key, value):
        value = _to_int(where, key, value)
        if value not in choices:
            raise where.error(f"{key!r}: must be one of {', '.join(map(str, choices))}, not {value}")
        return value
    return convert


def _string(where, key, value):
    if not isinstance(value, str):
        raise where.error(f"{key!r}: expected a string, not {value!r}")
    return value


def _word_choice(choices, normalize=str):
    def convert(where, key, value):
        if not isinstance(value, str) or normalize(value) not in choices:
            hint = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.6)
            suffix = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise where.error(f"{key!r}: must be one of {', '.join(choices)}, not {value!r}{suffix}")
        return normalize(value)
    return convert


def _encoding(where, key, spec):
    """A VMCS field name or encoding -> int encoding (``key`` is what the user wrote it under)."""
    from hwvirt.hdl.vmcs_fields import lookup_encoding
    shown = f"{spec:#x}" if isinstance(spec, int) and not isinstance(spec, bool) else repr(spec)
    if isinstance(spec, bool) or not isinstance(spec, (int, str)):
        raise where.error(f"{key!r}: expected a field name or encoding, not {spec!r}")
    if isinstance(spec, int):
        spec = _to_int(where, key, spec)
    try:
        return lookup_encoding(spec)
    except ValueError as exc:
        raise where.error(f"{key} {shown}: {exc}") from None


def _field(where, key, value):
    return _encoding(where, "field", value)


def _fields(where, key, value):
    if not isinstance(value, dict) or not value:
        raise where.error(f"{key!r}: expected a non-empty table {{ FIELD = value, ... }}, not {value!r}")
    return [(_encoding(where, "field", name), _to_int(where, f"fields.{name}", v))
            for name, v in value.items()]


def _element_list(bits):
    def convert(where, key, value):
        if not isinstance(value, list) or not value:
            raise where.error(f"{key!r}: expected a non-empty list of integers, not {value!r}")
        out = bytearray()
        for i, element in enumerate(value):
            element = _to_int(where, f"{key}[{i}]", element)
            if element >> bits:
                raise where.error(f"'{key}[{i}]': value {element:#x} does not fit in {bits} bits")
            out += element.to_bytes(bits // 8, "little")
        return bytes(out)
    return convert


def _hex_bytes(where, key, value):
    if not isinstance(value, str):
        raise where.error(f"{key!r}: expected a string of hex digits, not {value!r}")
    digits = "".join(value.split()).replace("_", "")
    try:
        data = bytes.fromhex(digits)
    except ValueError:
        raise where.error(f"{key!r}: not an even number of hex digits: {value!r}") from None
    if not data:
        raise where.error(f"{key!r}: empty")
    return data


_DATA_KEYS = {"u8": _element_list(8), "u16": _element_list(16), "u32": _element_list(32),
              "u64": _element_list(64), "hex": _hex_bytes}

_CPU_KEYS = {
    "cr0": _uint(), "cr4": _uint(), "efer": _uint(), "cpl": _int_range(0, 3),
    "feature_control": _uint(), "rflags": _uint(), "cs_l": _int_range(0, 1),
    "mov_ss_blocking": _int_range(0, 1),
}
assert _CPU_KEYS.keys() == CPU_DEFAULTS.keys()

def _check_id(where, key, value):
    from hwvirt.hdl.entry_check_catalogue import BY_ID
    value = _string(where, key, value)
    if value not in BY_ID:
        raise where.unknown("check", value, BY_ID)
    return value


def _check_ids(where, key, value):
    if not isinstance(value, list):
        raise where.error(f"{key!r}: expected a list of check IDs, not {value!r}")
    return [_check_id(where, key, item) for item in value]


def _map_lines(where, key, value):
    if not isinstance(value, list) or not all(isinstance(line, str) for line in value):
        raise where.error(f"{key!r}: expected a list of Plan 9 map lines (strings)")
    for number, line in enumerate(value, 1):
        try:
            ept_map.parse_map_line(line)
        except ept_map.MapError as error:
            raise where.error(f"{key!r} line {number}: {error}") from None
    return list(value)


def _injected(where, key, value):
    if not isinstance(value, dict):
        raise where.error(f"{key!r}: expected a table {{ vector = …, type = …, error_code = … }}")
    known = {"vector": _int_range(0, 255), "type": _int_range(0, 7), "error_code": _uint(32)}
    out = {}
    for name, item in value.items():
        if name not in known:
            raise where.unknown(f"key of {key!r}", name, known)
        out[name] = known[name](where, f"{key}.{name}", item)
    return out


def _walk(where, key, value):
    if not isinstance(value, dict):
        raise where.error(f"{key!r}: expected a table {{ refs = …, tlb_hit = …, pwc_hits = … }}")
    known = {"refs": _uint(8), "tlb_hit": _bool, "pwc_hits": _uint(5)}
    out = {}
    for name, item in value.items():
        if name not in known:
            raise where.unknown(f"key of {key!r}", name, known)
        out[name] = known[name](where, f"{key}.{name}", item)
    return out


_EXPECT_KEYS = {
    "outcome": _word_choice(OUTCOMES),
    "error": _uint(32),
    "fault": _word_choice(FAULTS, normalize=str.upper),
    "value": _uint(),
    "exit_reason": _uint(32),
    "qualification": _uint(),
    "check": _check_id,
    "checks": _check_ids,
    "injected": _injected,
    "walk": _walk,
    "delivered": _injected,
    "cycles": _uint(),
}


#: The outcomes that report an expect key; any other outcome next to that key is a contradiction.
_EXPECT_OUTCOMES = {
    "error": ("fail_valid",),
    "fault": ("fault",),
    "value": ("succeed", "no_exit"),
    "exit_reason": ("exit", "entry_failed"),
    "qualification": ("exit", "entry_failed"),
    "injected": ("entered",),
    "delivered": ("no_exit",),
}

#: Every operand any op takes, with its converter.
_OPERANDS = {
    "addr": _uint(), "value": _uint(), "type": _uint(), "eptp": _uint(),
    "vpid": _uint(16), "descriptor_reserved": _uint(48), "msr": _uint(32),
    "width": _int_choice(8, 16, 32, 64),
    "pml4": _uint(52), "tables": _uint(52), "map": _map_lines,
    "field": _field, "fields": _fields,
    **_DATA_KEYS, **_CPU_KEYS,
}


# -- per-op shape rules: (where, args) -> args ----------------------------------------------------

def _exactly_one_data(where, args):
    given = [k for k in _DATA_KEYS if k in args]
    if len(given) != 1:
        which = "none" if not given else " and ".join(repr(k) for k in given)
        raise where.error(f"needs exactly one of {', '.join(_DATA_KEYS)} (got {which})")
    if args["addr"] + len(args[given[0]]) > 1 << 64:
        raise where.error(f"{given[0]!r}: data run past the end of the 64-bit address space")
    return {**{k: v for k, v in args.items() if k not in _DATA_KEYS}, "data": args[given[0]]}


def _vmwrite_shape(where, args):
    if "fields" in args:
        if "field" in args or "value" in args:
            raise where.error("give either 'field' + 'value' or 'fields', not both")
        return {"fields": args["fields"]}
    for key in ("field", "value"):
        if key not in args:
            raise where.error(f"missing required key {key!r} (or use 'fields')")
    return {"fields": [(args["field"], args["value"])]}


def _set_cpu_shape(where, args):
    if not args:
        raise where.error(f"needs at least one of {', '.join(_CPU_KEYS)}")
    return {"cpu": dict(args)}


class _OpSpec(NamedTuple):
    required: tuple = ()
    optional: dict = {}            # key -> default (None: stays absent when not given)
    shape: Callable = None         # final cross-key rule and normalization


#: The ops a step may use: required operands, optional operands (with defaults) and shape rule.
OPS = {
    "vmxon":     _OpSpec(("addr",)),
    "vmxoff":    _OpSpec(),
    "vmclear":   _OpSpec(("addr",)),
    "vmptrld":   _OpSpec(("addr",)),
    "vmptrst":   _OpSpec(),
    "vmread":    _OpSpec(("field",)),
    "vmwrite":   _OpSpec((), dict.fromkeys(("field", "value", "fields")), _vmwrite_shape),
    "vmlaunch":  _OpSpec(),
    "vmresume":  _OpSpec(),
    "vmcall":    _OpSpec(),
    "invept":    _OpSpec(("type", "eptp")),
    "invvpid":   _OpSpec(("type", "vpid"), {"addr": 0, "descriptor_reserved": 0}),
    "rdmsr":     _OpSpec(("msr",)),
    "set_cpu":   _OpSpec((), dict.fromkeys(_CPU_KEYS), _set_cpu_shape),
    "mem_write": _OpSpec(("addr",), dict.fromkeys(_DATA_KEYS), _exactly_one_data),
    "mem_read":  _OpSpec(("addr", "width")),
    "guest":     _OpSpec(("event",)),      # operands per event: parse_guest_event
    "ept_map":   _OpSpec(("pml4", "tables", "map")),
}

_STEP_COMMON = ("op", "comment", "expect")


# -- guest events (op = "guest") -------------------------------------------------------------------

def _bool(where, key, value):
    if not isinstance(value, bool):
        raise where.error(f"{key!r}: expected true or false, not {value!r}")
    return value


def _during(where, key, value):
    if not isinstance(value, dict):
        raise where.error(f"{key!r}: expected a table {{ vector = …, type = …, error_code = … }}")
    known = {"vector": _int_range(0, 255), "type": _word_choice(tuple(guest_events.DURING_TYPES)),
             "error_code": _uint(32)}
    out = {}
    for name, item in value.items():
        if name not in known:
            raise where.unknown(f"key of {key!r}", name, known)
        out[name] = known[name](where, f"{key}.{name}", item)
    if "vector" not in out:
        raise where.error(f"{key!r}: missing required key 'vector'")
    return out


#: Every operand a guest event takes, with its converter (which events take which:
#: :data:`hwvirt.sim.guest_events.EVENTS`).
_GUEST_OPERANDS = {
    "eax": _uint(32), "ecx": _uint(32), "addr": _uint(), "msr": _uint(32), "value": _uint(),
    "port": _uint(16), "size": _int_choice(1, 2, 4), "dir": _word_choice(("in", "out")),
    "string": _bool, "rep": _bool, "imm": _bool, "cr": _int_choice(0, 3, 4, 8), "gpr": _int_range(0, 15),
    "dr": _int_range(0, 7), "instr": _word_choice(tuple(guest_events.DESCRIPTOR_INSTRUCTIONS)),
    "name": _word_choice(tuple(guest_events.VMX_INSTRUCTIONS)), "selector": _uint(16),
    "source": _word_choice(tuple(guest_events.TASK_SOURCES)), "vector": _int_range(0, 255),
    "error_code": _uint(32), "type": _word_choice(tuple(guest_events.EXCEPTION_TYPES)), "during": _during,
    "len": _int_range(1, 15), "cycles": _uint(32),
    "gpa": _uint(), "gva": _uint(), "access": _word_choice(tuple(guest_events.MEMORY_ACCESSES)), "user": _bool,
}


def parse_guest_event(where, table, *, control_registers=(0, 3, 4, 8)):
    """The operands of an ``op = "guest"`` step: ``event`` and the operands that event takes.

    ``control_registers``: the CR numbers a ``cr_write`` / ``cr_read`` may name (VMX: the ones MOV
    CR can exit on; SVM intercepts all sixteen)."""
    if "event" not in table:
        raise where.error(f"missing required key 'event' (one of {', '.join(guest_events.EVENTS)})")
    name = _word_choice(tuple(guest_events.EVENTS))(where, "event", table["event"])
    spec = guest_events.EVENTS[name]
    allowed = (*spec.required, *spec.optional, "len", "cycles")
    args = {"event": name}
    for key, value in table.items():
        if key in _STEP_COMMON or key == "event":
            continue
        if key not in allowed:
            raise where.unknown(f"key for event {name!r}", key, allowed)
        convert = _int_choice(*control_registers) if key == "cr" else _GUEST_OPERANDS[key]
        args[key] = convert(where, key, value)
    for key in spec.required:
        if key not in args:
            raise where.error(f"event {name!r}: missing required key {key!r}")
    if name == "mem" and ("gpa" in args) == ("gva" in args):
        raise where.error("event 'mem': give exactly one of 'gpa' (guest-physical) and 'gva' (guest-linear)")
    if name == "exception" and args["vector"] > 31:
        raise where.error(f"'vector': exceptions are vectors 0 … 31, not {args['vector']}")
    return args
_MEMORY_SPEC = _OpSpec(("addr",), dict.fromkeys(_DATA_KEYS), _exactly_one_data)


def _operands(where, table, spec, ignore=()):
    """Check ``table`` against ``spec`` and convert every operand; returns the shaped args."""
    allowed = (*spec.required, *spec.optional)
    for key in table:
        if key not in allowed and key not in ignore:
            raise where.unknown("key", key, (*allowed, *ignore))
    args = {}
    for key in allowed:
        if key in table:
            args[key] = _OPERANDS[key](where, key, table[key])
        elif key in spec.required:
            raise where.error(f"missing required key {key!r}")
        elif spec.optional[key] is not None:
            args[key] = spec.optional[key]
    return spec.shape(where, args) if spec.shape else args


# -- data model ------------------------------------------------------------------------------------

@dataclass
class Config:
    """Hardware configuration of a scenario (``[config]``)."""
    revision_id: int = 4
    maxphyaddr: int = 39
    vmcs_cache_slots: int = 2
    memory_latency: int = 0
    cr3_target_count: int = 4
    features: dict = _dc_field(default_factory=dict)   # name -> on/off relative to the defaults
    msr: dict = _dc_field(default_factory=dict)        # MSR index -> whole-MSR override

    def capabilities(self):
        """The :class:`hwvirt.hdl.capabilities.VMXCapabilities` this configuration describes.

        Raises
        ------
        ScenarioError
            If the capability model refuses the configuration.
        """
        from hwvirt.hdl.capabilities import DEFAULT_FEATURES, VMXCapabilities
        on = {name for name, enabled in self.features.items() if enabled}
        off = {name for name, enabled in self.features.items() if not enabled}
        try:
            return VMXCapabilities(revision_id=self.revision_id, maxphyaddr=self.maxphyaddr,
                                   features=(DEFAULT_FEATURES | on) - off,
                                   msr_overrides=dict(self.msr),
                                   cr3_target_count=self.cr3_target_count)
        except ValueError as exc:
            raise ScenarioError(f"[config]: {exc}") from None


@dataclass
class Step:
    """One ``[[step]]``: ``index`` counts from 1; ``args`` are the normalized operands."""
    index: int
    op: str
    args: dict
    expect: dict = _dc_field(default_factory=dict)
    comment: str = ""

    @property
    def label(self):
        """``"step 3 (vmwrite)"``, the way error messages and reports name the step."""
        return f"step {self.index} ({self.op})"


@dataclass
class Scenario:
    """A whole scenario file."""
    name: str
    arch: str
    description: str
    config: Config
    cpu: dict            # complete processor state before the first step (defaults filled in)
    memory: list         # (address, bytes) pairs, in file order
    steps: list
    source: str = "<string>"


# -- parsing ---------------------------------------------------------------------------------------

def _config_keys():
    return {
        "revision_id": _int_range(1, 0x7FFF_FFFF),
        "maxphyaddr": _int_range(32, 52),
        "vmcs_cache_slots": _int_range(1),
        "memory_latency": _int_range(0, 64),
        "cr3_target_count": _int_range(0, 256),
        "features": _features,
        "msr": _msr_overrides,
    }


def _features(where, key, value):
    from hwvirt.hdl.capabilities import FEATURES
    if not isinstance(value, dict):
        raise where.error(f"{key!r}: expected a table {{ name = true|false, ... }}, not {value!r}")
    for name, enabled in value.items():
        if name not in FEATURES:
            raise where.unknown("feature", name, FEATURES)
        if not isinstance(enabled, bool):
            raise where.error(f"feature {name!r}: expected true or false, not {enabled!r}")
    return dict(value)


def _msr_overrides(where, key, value):
    if not isinstance(value, dict):
        raise where.error(f"{key!r}: expected a table {{ \"0x482\" = value, ... }}, not {value!r}")
    out = {}
    for index, msr_value in value.items():
        try:
            number = int(index.strip(), 0)
        except ValueError:
            raise where.error(f"msr key {index!r}: not an MSR index (decimal or 0x hex)") from None
        if not 0 <= number <= 0xFFFF_FFFF:
            raise where.error(f"msr key {index!r}: MSR index outside 0 … 0xffffffff")
        out[number] = _to_int(where, f"msr.{index}", msr_value)
    return out


def _table(where, key, value, form=None):
    if not isinstance(value, dict):
        form = form or f"[{key}]"
        raise where.error(f"{key!r} must be a table ({form}), not {value!r}")
    return value


def _array_of_tables(where, key, value):
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise where.error(f"{key!r} must be an array of tables ([[{key}]])")
    return value


def _parse_step(source, index, table):
    where = _Where(source, f"step {index}")
    if "op" not in table:
        raise where.error("missing required key 'op'")
    op = table["op"]
    if not isinstance(op, str):
        raise where.error(f"'op': expected a string, not {op!r}")
    if op not in OPS:
        raise where.unknown("op", op, OPS)
    where = _Where(source, f"step {index} ({op})")
    if op == "guest":
        args = parse_guest_event(where, table)
    else:
        args = _operands(where, table, OPS[op], ignore=_STEP_COMMON)
    expect = {}
    raw_expect = _table(where, "expect", table.get("expect", {}), "expect = { outcome = ... }")
    expect_where = _Where(source, f"{where.label}: expect")
    for key, value in raw_expect.items():
        if key not in _EXPECT_KEYS:
            raise expect_where.unknown("key", key, _EXPECT_KEYS)
        expect[key] = _EXPECT_KEYS[key](expect_where, key, value)
    outcome = expect.get("outcome")
    for key, outcomes in _EXPECT_OUTCOMES.items():
        if key in expect and outcome is not None and outcome not in outcomes:
            raise expect_where.error(f"{key!r} contradicts outcome {outcome!r} "
                                     f"(only {' or '.join(outcomes)} report{'s' * (len(outcomes) == 1)} it)")
    comment = _string(where, "comment", table.get("comment", ""))
    return Step(index=index, op=op, args=args, expect=expect, comment=comment)


_TOP_KEYS = ("name", "arch", "description", "config", "cpu", "memory", "step")


def _parse_config(source, top, doc):
    where = _Where(source, "[config]")
    config_keys = _config_keys()
    config_args = {}
    for key, value in _table(top, "config", doc.get("config", {})).items():
        if key not in config_keys:
            raise where.unknown("key", key, config_keys)
        config_args[key] = config_keys[key](where, key, value)
    config = Config(**config_args)
    try:
        config.capabilities()
    except ScenarioError as exc:
        raise ScenarioError(f"{source}: {exc}") from None
    return config


def parse_scenario(text, source="<string>"):
    """Parse and check the text of a scenario file.

    Parameters
    ----------
    text : str
        TOML text in the format described in this module's docstring.
    source : str
        Name used in error messages and kept as :attr:`Scenario.source` (normally the path).

    Raises
    ------
    ScenarioError
        For a TOML syntax error or anything the format does not allow.
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{source}: TOML syntax error: {exc}") from None
    return parse_document(doc, source)


def parse_document(doc, source="<document>"):
    """Check an already-decoded scenario document (the dict TOML gives) — see :func:`parse_scenario`."""
    top = _Where(source, "")
    for key in doc:
        if key not in _TOP_KEYS:
            raise top.unknown("top-level key", key, _TOP_KEYS)

    default_name = Path(source).stem if not source.startswith("<") else "scenario"
    name = _string(top, "name", doc.get("name", default_name))
    description = _string(top, "description", doc.get("description", ""))
    arch = _word_choice(ARCHES)(top, "arch", doc.get("arch", "vmx"))
    if arch == "svm":
        # SVM scenarios have their own ops and configuration (hwvirt.sim.svm_runner).
        from .svm_runner import parse_svm_document
        return parse_svm_document(doc, source)

    config = _parse_config(source, top, doc)

    where = _Where(source, "[cpu]")
    cpu = dict(CPU_DEFAULTS)
    cpu.update(_operands(where, _table(top, "cpu", doc.get("cpu", {})),
                         _OpSpec((), dict.fromkeys(_CPU_KEYS))))

    memory = []
    for i, entry in enumerate(_array_of_tables(top, "memory", doc.get("memory", [])), 1):
        args = _operands(_Where(source, f"[[memory]] {i}"), entry, _MEMORY_SPEC)
        memory.append((args["addr"], args["data"]))

    raw_steps = _array_of_tables(top, "step", doc.get("step", []))
    if not raw_steps:
        raise top.error("no [[step]] entries")
    steps = [_parse_step(source, i, table) for i, table in enumerate(raw_steps, 1)]

    return Scenario(name=name, arch=arch, description=description, config=config, cpu=cpu,
                    memory=memory, steps=steps, source=source)


def load_scenario(path):
    """Read and check a scenario file (see :func:`parse_scenario`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: cannot read: {exc}") from None
    return parse_scenario(text, source=str(path))


def load_config(path):
    """The ``[config]`` table of a TOML file (a scenario, or a file holding only ``[config]``).

    ``None`` gives the default configuration. Other top-level keys of the file are not checked here.
    """
    if path is None:
        return Config()
    return _parse_config(str(path), _Where(str(path), ""), read_toml(path))


def read_toml(path):
    """The TOML document in a file, or a :class:`ScenarioError` naming the file."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: TOML syntax error: {exc}") from None
