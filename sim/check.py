"""``hwvirt check``: run VM entries through the consistency checker and explain every failing check.

Two kinds of input:

* a scenario (it has ``[[step]]``s): every VMLAUNCH/VMRESUME of it is examined;
* a VMCS image: a TOML file with a ``[fields]`` table (``NAME_OR_ENCODING = value``) and optionally
  ``[config]`` and ``[cpu]``. The image is written into a freshly cleared VMCS (fields it does not
  name are 0, as in a zeroed region — remember ``VMCS_LINK_POINTER = 0xffffffffffffffff``) and
  launched.

For each examined entry the report lists the architectural outcome, then every failing check with its
rule, its SDM section and the current values of the fields it reads (read back with VMREAD right
before the entry, so they are what the hardware saw).
"""

from dataclasses import replace
from pathlib import Path

from hwvirt.hdl.capabilities import DEFAULT_REVISION_ID
from hwvirt.hdl.entry_check_catalogue import BY_ID
from hwvirt.hdl.vmcs_fields import BY_NAME

from .runner import ENTRY_OPS, run_scenario
from .scenario import ScenarioError, Step, load_scenario, parse_document, read_toml


__all__ = ["check_file", "image_scenario", "format_check_report"]

_VMXON_REGION, _VMCS_REGION = 0x1000, 0x2000


def image_scenario(path):
    """The scenario that loads a VMCS image file and launches it."""
    path = Path(path)
    doc = read_toml(path)
    unknown = set(doc) - {"name", "description", "config", "cpu", "fields"}
    if unknown:
        raise ScenarioError(f"{path}: unknown top-level key {sorted(unknown)[0]!r} in a VMCS image "
                            "(allowed: name, description, config, cpu, fields)")
    fields = doc.get("fields")
    if not isinstance(fields, dict) or not fields:
        raise ScenarioError(f"{path}: a VMCS image needs a non-empty [fields] table")
    revision = doc.get("config", {}).get("revision_id", DEFAULT_REVISION_ID)
    succeed = {"outcome": "succeed"}
    scenario = {key: doc[key] for key in ("config", "cpu") if key in doc}
    scenario.update(
        name=doc.get("name", path.stem),
        memory=[{"addr": _VMXON_REGION, "u32": [revision]}, {"addr": _VMCS_REGION, "u32": [revision]}],
        step=[{"op": "vmxon", "addr": _VMXON_REGION, "expect": succeed},
              {"op": "vmclear", "addr": _VMCS_REGION, "expect": succeed},
              {"op": "vmptrld", "addr": _VMCS_REGION, "expect": succeed},
              {"op": "vmwrite", "fields": fields, "expect": succeed},
              {"op": "vmlaunch"}])
    return parse_document(scenario, source=str(path))


def _load(path):
    doc = read_toml(path)
    if "fields" in doc and "step" not in doc:
        return image_scenario(path)
    return load_scenario(path)


def _with_readbacks(scenario, rows):
    """The scenario with VMREADs of every field a failing check reads, right before each entry."""
    steps, readbacks = [], {}
    for step, row in zip(scenario.steps, rows):
        if step.op in ENTRY_OPS and row["checks"]:
            names = sorted({name for check in row["checks"] for name in BY_ID[check].fields
                            if name in BY_NAME}, key=lambda n: BY_NAME[n].encoding)
            readbacks[step.index] = []
            for name in names:
                steps.append(Step(index=len(steps) + 1, op="vmread",
                                  args={"field": BY_NAME[name].encoding}))
                readbacks[step.index].append((name, len(steps) - 1))
        steps.append(replace(step, index=len(steps) + 1, expect={}))
    return replace(scenario, steps=steps), readbacks


def check_file(path, *, backend="pysim"):
    """Run a scenario or VMCS image; return [(step, row, {field: value}), …] for every VM entry."""
    scenario = _load(path)
    first = run_scenario(scenario, backend=backend)
    entries = [(step, row) for step, row in zip(scenario.steps, first["steps"]) if step.op in ENTRY_OPS]
    if not any(row["checks"] for _, row in entries):
        return scenario, [(step, row, {}) for step, row in entries]
    extended, readbacks = _with_readbacks(scenario, first["steps"])
    second = run_scenario(extended, backend=backend)["steps"]
    out = []
    for step, row in entries:
        values = {name: second[i]["value"] for name, i in readbacks.get(step.index, [])}
        out.append((step, row, values))
    return scenario, out


def format_check_report(scenario, entries, describe):
    lines = [f"hwvirt check {scenario.source}"]
    if not entries:
        lines.append("no VMLAUNCH or VMRESUME in this scenario")
    failing = 0
    for step, row, values in entries:
        lines.append(f"{step.label}: {row['outcome']} {describe(row)}".rstrip())
        if row["checks"] is None:
            lines.append("    (stopped by the basic checks before the consistency checks)")
            continue
        if not row["checks"]:
            lines.append("    every consistency check passes")
        for check_id in row["checks"]:
            check = BY_ID[check_id]
            failing += 1
            marker = "*" if check_id == row["check"] else " "
            lines.append(f"  {marker} {check.id:<24} {check.rule}  [SDM vol. 3C §{check.sdm}]")
            for name in check.fields:
                if name in values and values[name] is not None:
                    lines.append(f"{'':>30}{name} = {values[name]:#x}")
    lines.append(f"{failing} failing check{'s' * (failing != 1)}"
                 + ("; * marks the one that decided the outcome" if failing else ""))
    return "\n".join(lines), failing
