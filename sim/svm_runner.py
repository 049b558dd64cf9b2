"""SVM scenarios (``arch = "svm"``): parse, and run against :class:`~hwvirt.hdl.svm_unit.SVMUnit` on
Amaranth's simulator or on Icarus Verilog (cocotb), with identical JSON rows on both.

:func:`run_svm_scenario` takes a path, TOML text, a decoded document (dict) or a parsed
:class:`SVMScenario`. The format follows :mod:`hwvirt.sim.scenario` (same top-level keys, integers,
``[[memory]]`` data, ``expect`` tables); what differs:

``[config]``: ``maxphyaddr`` (36 … 52, default 39), ``memory_latency`` (0 … 64), ``nested_paging``,
``nrip_save``, ``clean_bits``, ``long_mode`` (booleans, default true), ``tlb_entries`` (default 4).

``[cpu]`` (the host state VMRUN saves): ``cr0`` (0x80050033), ``cr3`` (0x1000), ``cr4`` (0x20),
``efer`` (0xd01; written with WRMSR before the first step), ``rflags`` (0x2), ``rip``, ``rsp``, ``rax``
(0), ``pat`` (0x0007040600070406), ``cpl`` (0).

Steps (``op``):

============  ====================================  ===============================================
op            operands                              meaning
============  ====================================  ===============================================
vmrun         addr                                  VMRUN with rAX = addr (the VMCB)
vmload        addr;  vmsave: addr                   VMLOAD / VMSAVE with rAX = addr
stgi, clgi, vmmcall                                 the instruction
invlpga       addr, asid                            INVLPGA (rAX = linear address, ECX = ASID)
wrmsr         msr, value;  rdmsr: msr               host MSR access (EFER, VM_CR, VM_HSAVE_PA)
vmcb_write    addr, fields = { NAME_OR_OFFSET = v }  store each field at addr + its offset, with its
                                                    size (an offset that starts no field: 8 bytes)
mem_write     addr, one of u8/u16/u32/u64/hex       store bytes
mem_read      addr, width                           load width bits; the result value
mem_fill      addr, length, byte                    store ``length`` copies of ``byte`` (permission maps)
set_cpu       any ``[cpu]`` key except efer         change the host state
guest         event + its operands                  a guest event (the events of
                                                    :data:`hwvirt.sim.guest_events.EVENTS`, cr 0 … 15,
                                                    plus ``svminstr`` name = vmrun/vmmcall/vmload/
                                                    vmsave/stgi/clgi/skinit/invlpga/rdpru, ``smi``)
mem           gpa or linear, [access read/write/    a guest memory access, translated through the
              fetch]                                nested page tables (``linear``: two-dimensional)
============  ====================================  ===============================================

Rows: ``index, op, outcome, fault, value, exit_code`` (signed: −1 is INVALID), ``exitinfo1,
exitinfo2, exitintinfo, check`` (ID), ``checks`` (every failing VMRUN check), ``injected``
(``{vector, type, error_code}`` of an EVENTINJ VMRUN delivered), ``tlb_control``, ``cycles``,
``expect_ok``. ``expect`` may hold any of those keys except ``index``, ``op`` and ``expect_ok``.
"""

import difflib
import hashlib
import json
import os
import pickle
import tempfile
import tomllib
from dataclasses import dataclass, field as _dc_field
from pathlib import Path

from amaranth.lib import data
from amaranth.sim import Simulator

from hwvirt.hdl.ept_walker import Access
from hwvirt.hdl.exit_logic import GuestEvent, GuestEventKind
from hwvirt.hdl.svm_check_catalogue import (BY_ID, CHECKS, MSR_EFER, SVM_INSTRUCTIONS, VMCB_BY_NAME, VMCB_FIELDS)
from hwvirt.hdl.svm_unit import (Fault, GuestAccess, HostState, Outcome, SVMCommand, SVMOp, SVMResult,
                                 SVMUnit)

from . import guest_events
from .driver import PhysicalMemory, PortIO, StreamBusDriver, pack, unpack
from .fresh_stack import run_simulation
from .scenario import ScenarioError, _Where, parse_guest_event


__all__ = ["check_vmcb_image", "format_vmcb_check", "SVMConfig", "SVMStep", "SVMScenario", "parse_svm_document", "load_svm_scenario",
           "SVMDriver", "execute_svm_steps", "run_svm_scenario", "build_svm_unit", "ROW_KEYS",
           "CPU_DEFAULTS", "SVM_EVENTS", "encode_event", "vmcb_field_writes"]

MASK64 = (1 << 64) - 1
ROW_KEYS = ("index", "op", "outcome", "fault", "value", "exit_code", "exitinfo1", "exitinfo2", "exitintinfo",
            "check", "checks", "injected", "tlb_control", "cycles", "expect_ok")

#: Host state before the first step unless ``[cpu]`` says otherwise.
CPU_DEFAULTS = {"cr0": 0x8005_0033, "cr3": 0x1000, "cr4": 0x20, "efer": 0xD01, "rflags": 0x2, "rip": 0,
                "rsp": 0, "rax": 0, "pat": 0x0007_0406_0007_0406, "cpl": 0}
#: Host segments (VMCB format) the bench drives: flat 64-bit code, flat data.
_HOST_SEGMENTS = {
    "cs": {"selector": 0x08, "attrib": 0x029B, "limit": 0xFFFF_FFFF, "base": 0},
    "ss": {"selector": 0x10, "attrib": 0x0C93, "limit": 0xFFFF_FFFF, "base": 0},
    "ds": {"selector": 0x10, "attrib": 0x0C93, "limit": 0xFFFF_FFFF, "base": 0},
    "es": {"selector": 0x10, "attrib": 0x0C93, "limit": 0xFFFF_FFFF, "base": 0},
    "gdtr": {"limit": 0x7F, "base": 0x2000},
    "idtr": {"limit": 0xFFF, "base": 0x3000},
}

#: Guest events beyond :data:`hwvirt.sim.guest_events.EVENTS`: name → (required, optional operands).
SVM_EVENTS = {"svminstr": (("name",), ())}

OUTCOMES = tuple(o.name.lower() for o in Outcome)


# -- data model --------------------------------------------------------------------------------------

@dataclass
class SVMConfig:
    maxphyaddr: int = 39
    memory_latency: int = 0
    nested_paging: bool = True
    nrip_save: bool = True
    clean_bits: bool = True
    long_mode: bool = True
    tlb_entries: int = 4


@dataclass
class SVMStep:
    index: int
    op: str
    args: dict
    expect: dict = _dc_field(default_factory=dict)
    comment: str = ""

    @property
    def label(self):
        return f"step {self.index} ({self.op})"


@dataclass
class SVMScenario:
    name: str
    description: str
    config: SVMConfig
    cpu: dict
    memory: list
    steps: list
    source: str = "<document>"
    arch: str = "svm"


# -- parsing -----------------------------------------------------------------------------------------

def _err(where, message):
    return ScenarioError(f"{where}: {message}")


def _unknown(where, what, name, known):
    hint = difflib.get_close_matches(str(name), list(known), n=1, cutoff=0.6)
    return _err(where, f"unknown {what} {name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else ""))


def _int(where, key, value, low=0, high=MASK64):
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise _err(where, f"{key!r}: expected an integer, not {value!r}")
    if isinstance(value, str):
        try:
            value = int(value.strip(), 0)
        except ValueError:
            raise _err(where, f"{key!r}: expected an integer, not {value!r}") from None
    if not low <= value <= high:
        raise _err(where, f"{key!r}: value {value:#x} is outside {low:#x} … {high:#x}")
    return value


def _bool(where, key, value):
    if not isinstance(value, bool):
        raise _err(where, f"{key!r}: expected true or false, not {value!r}")
    return value


def _choice(where, key, value, choices):
    if not isinstance(value, str) or value.lower() not in choices:
        raise _err(where, f"{key!r}: must be one of {', '.join(choices)}, not {value!r}")
    return value.lower()


def _data(where, table):
    given = [k for k in ("u8", "u16", "u32", "u64", "hex") if k in table]
    if len(given) != 1:
        raise _err(where, "needs exactly one of u8, u16, u32, u64, hex")
    key = given[0]
    if key == "hex":
        if not isinstance(table[key], str):
            raise _err(where, "'hex': expected a string of hex digits")
        try:
            return bytes.fromhex("".join(table[key].split()).replace("_", ""))
        except ValueError:
            raise _err(where, f"'hex': not hex digits: {table[key]!r}") from None
    bits = int(key[1:])
    if not isinstance(table[key], list) or not table[key]:
        raise _err(where, f"{key!r}: expected a non-empty list of integers")
    return b"".join(_int(where, f"{key}[{i}]", v, 0, (1 << bits) - 1).to_bytes(bits // 8, "little")
                    for i, v in enumerate(table[key]))


def vmcb_field_writes(where, fields):
    """``{NAME_OR_OFFSET: value}`` → list of (offset, size, value)."""
    if not isinstance(fields, dict) or not fields:
        raise _err(where, "'fields': expected a non-empty table { NAME_OR_OFFSET = value, ... }")
    starts = {f.offset: f.size for f in VMCB_FIELDS}
    out = []
    for name, value in fields.items():
        if name.upper() in VMCB_BY_NAME:
            f = VMCB_BY_NAME[name.upper()]
            offset, size = f.offset, f.size
        else:
            try:
                offset = int(name.strip(), 0)
            except ValueError:
                raise _unknown(where, "VMCB field", name, VMCB_BY_NAME) from None
            if not 0 <= offset < 0x1000:
                raise _err(where, f"VMCB offset {offset:#x} is outside the 4 KiB VMCB")
            size = starts.get(offset, 8)
        out.append((offset, size, _int(where, f"fields.{name}", value, 0, (1 << (8 * size)) - 1)))
    return out


_CPU_KEYS = tuple(CPU_DEFAULTS)

_OPS = {
    # op: (required, optional)
    "vmrun": (("addr",), ()), "vmload": (("addr",), ()), "vmsave": (("addr",), ()),
    "stgi": ((), ()), "clgi": ((), ()), "vmmcall": ((), ()), "invlpga": (("addr", "asid"), ()),
    "wrmsr": (("msr", "value"), ()), "rdmsr": (("msr",), ()),
    "vmcb_write": (("addr", "fields"), ()),
    "mem_write": (("addr",), ("u8", "u16", "u32", "u64", "hex")),
    "mem_read": (("addr", "width"), ()),
    "mem_fill": (("addr", "length", "byte"), ()),
    "set_cpu": ((), tuple(k for k in _CPU_KEYS if k != "efer")),
    "guest": (("event",), None),
    "mem": ((), ("gpa", "linear", "access")),
}

def _guest_args(where, table):
    """A ``guest`` step's event: the VMX scenario format's events (:func:`~hwvirt.sim.scenario.parse_guest_event`)
    plus :data:`SVM_EVENTS`; memory accesses are the separate ``mem`` op here."""
    name = table.get("event")
    if name == "svminstr":
        allowed = ("name", "len", "cycles")
        for key in table:
            if key not in (*allowed, "op", "comment", "expect", "event"):
                raise _unknown(where, "key for event 'svminstr'", key, allowed)
        if "name" not in table:
            raise _err(where, "event 'svminstr': missing required key 'name'")
        args = {"event": name, "name": _choice(where, "name", table["name"], tuple(SVM_INSTRUCTIONS))}
        for key, low, high in (("len", 1, 15), ("cycles", 0, (1 << 32) - 1)):
            if key in table:
                args[key] = _int(where, key, table[key], low, high)
        return args
    if name == "mem":
        raise _err(where, "a guest memory access is the op 'mem' in an SVM scenario, not a guest event")
    return parse_guest_event(_Where(where, ""), table, control_registers=tuple(range(16)))


_EXPECT_KEYS = ("outcome", "fault", "value", "exit_code", "exitinfo1", "exitinfo2", "exitintinfo", "check",
                "checks", "injected", "tlb_control", "cycles")


def _expect(where, table):
    if not isinstance(table, dict):
        raise _err(where, "'expect' must be a table")
    out = {}
    for key, value in table.items():
        if key not in _EXPECT_KEYS:
            raise _unknown(where, "expect key", key, _EXPECT_KEYS)
        if key == "outcome":
            out[key] = _choice(where, key, value, OUTCOMES)
        elif key == "fault":
            out[key] = _choice(where, key, value, ("ud", "gp", "pf")).upper()
        elif key == "exit_code":
            out[key] = _int(where, key, value, -(1 << 63), MASK64)
            if out[key] >= 1 << 63:
                out[key] -= 1 << 64
        elif key == "check":
            if value not in BY_ID:
                raise _unknown(where, "check", value, BY_ID)
            out[key] = value
        elif key == "checks":
            if not isinstance(value, list) or any(v not in BY_ID for v in value):
                raise _err(where, "'checks': expected a list of SVM check IDs")
            out[key] = list(value)
        elif key == "injected":
            if not isinstance(value, dict):
                raise _err(where, "'injected': expected a table")
            out[key] = {k: _int(where, f"injected.{k}", v) for k, v in value.items()}
        else:
            out[key] = _int(where, key, value)
    return out


def _parse_step(source, index, table):
    where = f"{source}: step {index}"
    if not isinstance(table, dict) or "op" not in table:
        raise _err(where, "missing required key 'op'")
    op = table["op"]
    if op not in _OPS:
        raise _unknown(where, "op", op, _OPS)
    where = f"{source}: step {index} ({op})"
    required, optional = _OPS[op]
    if op == "guest":
        if "event" not in table:
            raise _err(where, "missing required key 'event'")
        args = _guest_args(where, table)
    else:
        args = {}
        for key, value in table.items():
            if key in ("op", "comment", "expect"):
                continue
            if key not in (*required, *optional):
                raise _unknown(where, "key", key, (*required, *optional))
            if key == "fields":
                args[key] = vmcb_field_writes(where, value)
            elif key == "width":
                args[key] = _int(where, key, value, 8, 64)
                if args[key] not in (8, 16, 32, 64):
                    raise _err(where, "'width': must be 8, 16, 32 or 64")
            elif key == "access":
                args[key] = _choice(where, key, value, ("read", "write", "fetch"))
            elif key in ("u8", "u16", "u32", "u64", "hex"):
                continue
            elif key == "cpl":
                args[key] = _int(where, key, value, 0, 3)
            else:
                args[key] = _int(where, key, value)
        for key in required:
            if key not in args:
                raise _err(where, f"missing required key {key!r}")
        if op == "mem_write":
            args["data"] = _data(where, table)
        if op == "set_cpu" and not args:
            raise _err(where, "needs at least one host-state key")
        if op == "mem" and ("gpa" in args) == ("linear" in args):
            raise _err(where, "needs exactly one of 'gpa' and 'linear'")
    comment = table.get("comment", "")
    return SVMStep(index, op, args, _expect(where, table.get("expect", {})), comment)


def parse_svm_document(doc, source="<document>"):
    """Check a decoded SVM scenario document (see the module docstring); raises ScenarioError."""
    for key in doc:
        if key not in ("name", "arch", "description", "config", "cpu", "memory", "step"):
            raise _unknown(source, "top-level key", key, ("name", "arch", "description", "config", "cpu",
                                                          "memory", "step"))
    if doc.get("arch", "svm") != "svm":
        raise _err(source, f"arch {doc.get('arch')!r}: this runner runs arch = \"svm\" only")
    config = SVMConfig()
    for key, value in doc.get("config", {}).items():
        where = f"{source}: [config]"
        if key == "maxphyaddr":
            config.maxphyaddr = _int(where, key, value, 36, 52)
        elif key == "memory_latency":
            config.memory_latency = _int(where, key, value, 0, 64)
        elif key == "tlb_entries":
            config.tlb_entries = _int(where, key, value, 1, 64)
        elif key in ("nested_paging", "nrip_save", "clean_bits", "long_mode"):
            setattr(config, key, _bool(where, key, value))
        else:
            raise _unknown(where, "key", key, ("maxphyaddr", "memory_latency", "tlb_entries", "nested_paging",
                                               "nrip_save", "clean_bits", "long_mode"))
    cpu = dict(CPU_DEFAULTS)
    for key, value in doc.get("cpu", {}).items():
        if key not in CPU_DEFAULTS:
            raise _unknown(f"{source}: [cpu]", "key", key, CPU_DEFAULTS)
        cpu[key] = _int(f"{source}: [cpu]", key, value, 0, 3 if key == "cpl" else MASK64)
    memory = []
    for i, entry in enumerate(doc.get("memory", []), 1):
        where = f"{source}: [[memory]] {i}"
        memory.append((_int(where, "addr", entry.get("addr")), _data(where, entry)))
    steps = [_parse_step(source, i, t) for i, t in enumerate(doc.get("step", []), 1)]
    if not steps:
        raise _err(source, "no [[step]] entries")
    default_name = Path(source).stem if not source.startswith("<") else "scenario"
    return SVMScenario(name=doc.get("name", default_name), description=doc.get("description", ""),
                       config=config, cpu=cpu, memory=memory, steps=steps, source=source)


def load_svm_scenario(path):
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: TOML syntax error: {exc}") from None
    return parse_svm_document(doc, str(path))


# -- event encoding ------------------------------------------------------------------------------------

def encode_event(args):
    """The :class:`~hwvirt.hdl.exit_logic.GuestEvent` fields of a parsed guest event."""
    name = args["event"]
    if name == "svminstr":
        return {"kind": GuestEventKind.VMX_INSTRUCTION.value, "index": SVM_INSTRUCTIONS[args["name"]].value,
                "length": args.get("len", 3), "cycles": args.get("cycles", 0)}
    return guest_events.encode(args)


# -- the driver --------------------------------------------------------------------------------------

class SVMDriver(StreamBusDriver):
    """Drives an :class:`~hwvirt.hdl.svm_unit.SVMUnit` (see :class:`~hwvirt.sim.driver.StreamBusDriver`)."""

    INPUTS = ("cmd__valid", "guest__valid", "mem__valid", "resp__ready", "bus__ack", "bus__dat_r", "cmd__payload",
              "guest__payload", "mem__payload", "cpu")

    async def start(self, cpu):
        for name in self.INPUTS:
            self.io.set(name, 0)
        self.io.set("resp__ready", 1)
        self.set_cpu(cpu)
        await self._tick()

    def set_cpu(self, cpu):
        state = {k: cpu[k] for k in ("cr0", "cr3", "cr4", "rflags", "rip", "rsp", "rax", "pat", "cpl")}
        word = pack(HostState, state)
        layout = data.Layout.cast(HostState)
        for seg, values in _HOST_SEGMENTS.items():
            f = layout[seg]
            word |= pack(f.shape, values) << f.offset
        self.io.set("cpu", word)

    async def execute(self, op, *, rax=0, ecx=0, value=0, limit=100_000):
        return await self._transact("cmd", pack(SVMCommand, {"op": op, "rax": rax, "ecx": ecx, "value": value}),
                                    limit)

    async def guest_event(self, fields, *, limit=1_000_000):
        return await self._transact("guest", pack(GuestEvent, fields), limit)

    async def mem_access(self, fields, *, limit=100_000):
        return await self._transact("mem", pack(GuestAccess, fields), limit)

    async def _transact(self, port, payload, limit):
        payload, failures, cycles = await self._handshake(port, payload, what=port, limit=limit,
                                                          sample="vmrun_failures")
        result = unpack(SVMResult, payload)
        result["outcome"] = Outcome(result["outcome"])
        result["fault"] = Fault(result["fault"])
        result["failures"] = failures
        result["cycles"] = cycles
        return result


# -- executing steps -----------------------------------------------------------------------------------

_COMMANDS = {
    "vmrun": (SVMOp.VMRUN, lambda a: {"rax": a["addr"]}),
    "vmload": (SVMOp.VMLOAD, lambda a: {"rax": a["addr"]}),
    "vmsave": (SVMOp.VMSAVE, lambda a: {"rax": a["addr"]}),
    "stgi": (SVMOp.STGI, lambda a: {}), "clgi": (SVMOp.CLGI, lambda a: {}),
    "vmmcall": (SVMOp.VMMCALL, lambda a: {}),
    "invlpga": (SVMOp.INVLPGA, lambda a: {"rax": a["addr"], "ecx": a["asid"]}),
    "wrmsr": (SVMOp.WRMSR, lambda a: {"ecx": a["msr"], "value": a["value"]}),
    "rdmsr": (SVMOp.RDMSR, lambda a: {"ecx": a["msr"]}),
}
_ACCESS = {"read": Access.READ.value, "write": Access.WRITE.value, "fetch": Access.FETCH.value}
_READING_EVENTS = (*guest_events.READING_EVENTS,)


def _signed(value):
    return value - (1 << 64) if value >> 63 else value


def _row(step, result, cycles):
    row = dict.fromkeys(ROW_KEYS)
    row.update(index=step.index, op=step.op, cycles=cycles)
    if result is None:
        row["outcome"] = "succeed"
        return row
    outcome = result["outcome"]
    row["outcome"] = outcome.name.lower()
    if result["fault"] != Fault.NONE:
        row["fault"] = result["fault"].name
    if outcome == Outcome.EXIT:
        row.update(exit_code=_signed(result["exit_code"]), exitinfo1=result["exitinfo1"],
                   exitinfo2=result["exitinfo2"], exitintinfo=result["exitintinfo"])
    if result["check"]:
        row["check"] = CHECKS[result["check"] - 1].id
    if step.op == "vmrun" and outcome in (Outcome.ENTERED, Outcome.EXIT) and result["exit_code"] in (0, MASK64):
        row["checks"] = [c.id for i, c in enumerate(CHECKS) if result["failures"] >> i & 1]
    if step.op == "vmrun" and outcome == Outcome.ENTERED:
        row["tlb_control"] = result["tlb_control"]
        event = result["event"]
        if event >> 31 & 1:
            row["injected"] = {"vector": event & 0xFF, "type": event >> 8 & 7,
                               "error_code": event >> 32 if event >> 11 & 1 else None}
    if outcome == Outcome.SUCCEED and step.op in ("rdmsr", "mem_read"):
        row["value"] = result["value"]
    if outcome == Outcome.NO_EXIT and (step.op == "mem" or step.args.get("event") in _READING_EVENTS):
        row["value"] = result["value"]
    return row


def _mismatches(step, row):
    bad = []
    for key, wanted in step.expect.items():
        got = row.get(key)
        if key == "injected":
            same = got is not None and all(got.get(k) == v for k, v in wanted.items())
        elif isinstance(wanted, str) and isinstance(got, str):
            same = wanted.lower() == got.lower()
        else:
            same = wanted == got
        if not same:
            bad.append(f"{key}: expected {wanted!r}, got {got!r}")
    return bad


async def execute_svm_steps(driver, scenario):
    """Replay every step of an :class:`SVMScenario` through an :class:`SVMDriver`; return the rows."""
    memory = driver.memory
    for address, payload in scenario.memory:
        memory.write(address, payload)
    cpu = dict(scenario.cpu)
    await driver.start(cpu)
    setup = await driver.execute(SVMOp.WRMSR, ecx=MSR_EFER, value=cpu["efer"])
    if setup["outcome"] != Outcome.SUCCEED:
        raise ScenarioError(f"{scenario.source}: [cpu] efer {cpu['efer']:#x}: WRMSR faults")
    rows = []
    for step in scenario.steps:
        args = step.args
        if step.op == "set_cpu":
            cpu.update(args)
            driver.set_cpu(cpu)
            row = _row(step, None, 0)
        elif step.op == "mem_write":
            memory.write(args["addr"], args["data"])
            row = _row(step, None, 0)
        elif step.op == "vmcb_write":
            for offset, size, value in args["fields"]:
                memory.write_int(args["addr"] + offset, value, size)
            row = _row(step, None, 0)
        elif step.op == "mem_fill":
            memory.write(args["addr"], bytes([args["byte"] & 0xFF]) * args["length"])
            row = _row(step, None, 0)
        elif step.op == "mem_read":
            row = _row(step, None, 0)
            row["value"] = memory.read_int(args["addr"], args["width"] // 8)
        elif step.op == "guest":
            result = await driver.guest_event(encode_event(args))
            row = _row(step, result, result["cycles"])
        elif step.op == "mem":
            fields = {"access": _ACCESS[args.get("access", "read")]}
            if "linear" in args:
                fields.update(linear=args["linear"], paging=1)
            else:
                fields.update(gpa=args["gpa"])
            result = await driver.mem_access(fields)
            row = _row(step, result, result["cycles"])
        else:
            op, operands = _COMMANDS[step.op]
            result = await driver.execute(op, **operands(args))
            row = _row(step, result, result["cycles"])
        row["expect_ok"] = not _mismatches(step, row)
        rows.append(row)
    return rows


# -- backends ------------------------------------------------------------------------------------------

def build_svm_unit(config):
    """The :class:`SVMUnit` an :class:`SVMConfig` describes."""
    return SVMUnit(maxphyaddr=config.maxphyaddr, nested_paging=config.nested_paging, nrip_save=config.nrip_save,
                   clean_bits=config.clean_bits, long_mode=config.long_mode, tlb_entries=config.tlb_entries, pwc_entries=config.tlb_entries)


_PORTS = ("cmd__valid", "cmd__ready", "cmd__payload", "guest__valid", "guest__ready", "guest__payload",
          "mem__valid", "mem__ready", "mem__payload", "resp__valid", "resp__ready", "resp__payload",
          "vmrun_failures", "cpu", "bus__cyc", "bus__stb", "bus__we", "bus__adr", "bus__dat_w", "bus__sel",
          "bus__dat_r", "bus__ack")


class _AmaranthIO(PortIO):
    def __init__(self, ctx, unit):
        self._ctx = ctx
        self._ports = {}
        for name in _PORTS:
            obj = unit
            for part in name.split("__"):
                obj = getattr(obj, part)
            self._ports[name] = obj.as_value() if hasattr(obj, "as_value") else obj

    async def tick(self):
        await self._ctx.tick()

    def get(self, name):
        return self._ctx.get(self._ports[name])

    def set(self, name, value):
        self._ctx.set(self._ports[name], value)


def _run_pysim(scenario, waveform=None):
    unit = build_svm_unit(scenario.config)
    sim = Simulator(unit)
    sim.add_clock(1e-8)
    rows = []

    async def bench(ctx):
        driver = SVMDriver(_AmaranthIO(ctx, unit), PhysicalMemory(), latency=scenario.config.memory_latency)
        rows.extend(await execute_svm_steps(driver, scenario))

    sim.add_testbench(bench)
    if waveform is None:
        run_simulation(sim)
    else:
        waveform = Path(waveform)
        waveform.parent.mkdir(parents=True, exist_ok=True)
        with sim.write_vcd(str(waveform), str(waveform.with_suffix(".gtkw")),
                           traces=[unit.cmd.valid, unit.cmd.payload, unit.debug_signals["state"],
                                   unit.resp.valid, unit.resp.payload, unit.bus.cyc, unit.bus.we, unit.bus.adr,
                                   unit.bus.dat_w, unit.bus.dat_r, unit.bus.ack]):
            run_simulation(sim)
    return rows


def _build_icarus(config):
    from cocotb_tools.runner import get_runner
    from .icarus import _gateware_digest, _locked
    from .toolchain import VERILOG_TOP, build_root
    from .verilog import convert_unit, icarus_safe

    key = hashlib.sha256(repr((sorted(vars(config).items()), _gateware_digest())).encode()).hexdigest()[:16]
    build_dir = build_root() / "icarus-svm" / key
    with _locked(build_dir.with_suffix(".lock")):
        source = build_dir / f"{VERILOG_TOP}.v"
        if not source.exists():
            build_dir.mkdir(parents=True, exist_ok=True)
            text = icarus_safe(convert_unit(build_svm_unit(config)))
            source.with_suffix(".tmp").write_text(text)
            source.with_suffix(".tmp").rename(source)
        get_runner("icarus").build(sources=[source], hdl_toplevel=VERILOG_TOP, build_dir=build_dir,
                                   timescale=("1ns", "1ps"), waves=False, always=False,
                                   log_file=build_dir / "build.log")
    return build_dir


def _run_icarus(scenario):
    from cocotb_tools.runner import get_runner
    from .icarus import icarus_available
    from .toolchain import VERILOG_TOP

    if not icarus_available():
        raise RuntimeError("Icarus Verilog (iverilog, vvp) is not installed")
    build_dir = _build_icarus(scenario.config)
    with tempfile.TemporaryDirectory(prefix="hwvirt-svm-") as tmp:
        tmp = Path(tmp)
        (tmp / "scenario.pickle").write_bytes(pickle.dumps(scenario))
        job = {"scenario": str(tmp / "scenario.pickle"), "result": str(tmp / "rows.json")}
        (tmp / "job.json").write_text(json.dumps(job))
        log = tmp / "test.log"
        try:
            get_runner("icarus").test(hdl_toplevel=VERILOG_TOP, hdl_toplevel_lang="verilog",
                                      test_module="hwvirt.sim.svm_runner", build_dir=build_dir, test_dir=tmp,
                                      extra_env={"HWVIRT_SVM_JOB": str(tmp / "job.json")}, log_file=log)
        except SystemExit:
            pass
        if not (tmp / "rows.json").exists():
            tail = log.read_text()[-3000:] if log.exists() else "(no log)"
            raise RuntimeError(f"the cocotb run of {scenario.source} failed:\n{tail}")
        return json.loads((tmp / "rows.json").read_text())


def _as_scenario(doc_or_path):
    if isinstance(doc_or_path, SVMScenario):
        return doc_or_path
    if isinstance(doc_or_path, dict):
        return parse_svm_document(doc_or_path)
    if isinstance(doc_or_path, Path) or (isinstance(doc_or_path, str) and "\n" not in doc_or_path
                                         and doc_or_path.endswith(".toml")):
        return load_svm_scenario(doc_or_path)
    if isinstance(doc_or_path, str):
        try:
            return parse_svm_document(tomllib.loads(doc_or_path), "<string>")
        except tomllib.TOMLDecodeError as exc:
            raise ScenarioError(f"<string>: TOML syntax error: {exc}") from None
    raise TypeError(f"expected a path, TOML text, a document or an SVMScenario, not {doc_or_path!r}")


def run_svm_scenario(doc_or_path, *, backend="pysim", waveform=None):
    """Run an SVM scenario; return the report (``scenario, backend, passed, total_cycles, steps``)."""
    scenario = _as_scenario(doc_or_path)
    if backend == "pysim":
        rows = _run_pysim(scenario, waveform)
    elif backend == "icarus":
        rows = _run_icarus(scenario)
    else:
        raise ValueError(f"unknown backend {backend!r}; choose pysim or icarus")
    return {"scenario": scenario.name, "backend": backend, "passed": all(r["expect_ok"] for r in rows),
            "total_cycles": sum(r["cycles"] or 0 for r in rows), "steps": rows}


# -- ``hwvirt check`` for VMCB images ---------------------------------------------------------------------

_IMAGE_VMCB = 0x10000


def check_vmcb_image(doc_or_path, *, backend="pysim"):
    """Run VMRUN on a VMCB image and return ``(row, values)``: the VMRUN result row (``checks`` lists
    every failing consistency check) and, per failing check, the values of the fields it reads.

    A VMCB image is a TOML file (or decoded dict) with ``arch = "svm"``, a ``[fields]`` table
    (``NAME_OR_OFFSET = value``; unnamed fields are 0) and optionally ``[config]`` and ``[cpu]``.
    """
    if not isinstance(doc_or_path, dict):
        path = Path(doc_or_path)
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ScenarioError(f"{path}: TOML syntax error: {exc}") from None
        source = str(path)
    else:
        doc, source = doc_or_path, "<image>"
    unknown = set(doc) - {"name", "arch", "description", "config", "cpu", "fields"}
    if unknown:
        raise ScenarioError(f"{source}: unknown top-level key {sorted(unknown)[0]!r} in a VMCB image")
    if "fields" not in doc:
        raise ScenarioError(f"{source}: a VMCB image needs a [fields] table")
    scenario_doc = {k: doc[k] for k in ("name", "arch", "description", "config", "cpu") if k in doc}
    scenario_doc["cpu"] = {"efer": 0x1D01, **doc.get("cpu", {})}
    scenario_doc["step"] = [
        {"op": "wrmsr", "msr": 0xC001_0117, "value": 0x9000},
        {"op": "vmcb_write", "addr": _IMAGE_VMCB, "fields": doc["fields"]},
        {"op": "vmrun", "addr": _IMAGE_VMCB},
    ]
    scenario = parse_svm_document(scenario_doc, source)
    row = run_svm_scenario(scenario, backend=backend)["steps"][-1]
    writes = {f.name: None for f in VMCB_FIELDS}
    for offset, size, value in scenario.steps[1].args["fields"]:
        for f in VMCB_FIELDS:
            if f.offset == offset and f.size == size:
                writes[f.name] = value
    values = {check_id: {name: writes.get(name) or 0 for name in BY_ID[check_id].fields}
              for check_id in row["checks"] or []}
    return row, values


def format_vmcb_check(row, values):
    """A readable report of :func:`check_vmcb_image`'s result."""
    lines = [f"VMRUN: {row['outcome']}" + (f", EXITCODE {row['exit_code']}" if row["exit_code"] is not None else "")]
    for check_id in row["checks"] or []:
        check = BY_ID[check_id]
        shown = ", ".join(f"{name} = {value:#x}" for name, value in values[check_id].items())
        lines.append(f"  {check_id} (APM vol. 2 §{check.apm}): {check.rule}\n      {shown}")
    return "\n".join(lines) + "\n"


# -- the cocotb test (only defined inside the cocotb run started by _run_icarus) --------------------------

if os.environ.get("HWVIRT_SVM_JOB"):
    import cocotb
    from cocotb.clock import Clock
    from cocotb.triggers import FallingEdge

    from .cocotb_bench import CocotbIO
    from .toolchain import CLOCK_PERIOD_NS

    @cocotb.test()
    async def run_svm_job(dut):
        job = json.loads(Path(os.environ["HWVIRT_SVM_JOB"]).read_text())
        scenario = pickle.loads(Path(job["scenario"]).read_bytes())
        Clock(dut.clk, CLOCK_PERIOD_NS, unit="ns").start()
        io = CocotbIO(dut)
        dut.rst.value = 1
        for name in SVMDriver.INPUTS:
            io.set(name, 0)
        await FallingEdge(dut.clk)
        await FallingEdge(dut.clk)
        dut.rst.value = 0
        for name in ("cmd__ready", "guest__ready", "mem__ready", "resp__valid", "bus__cyc"):
            io.get(name)
        driver = SVMDriver(io, PhysicalMemory(), latency=scenario.config.memory_latency)
        rows = await execute_svm_steps(driver, scenario)
        Path(job["result"]).write_text(json.dumps(rows))
