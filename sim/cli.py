"""The ``hwvirt`` command line.

::

    hwvirt run SCENARIO.toml [--sim pysim|icarus] [--json OUT] [--vcd OUT.vcd]
    hwvirt check SCENARIO_OR_VMCS_IMAGE.toml [--sim pysim|icarus]
    hwvirt fields [--config FILE] [--all]
    hwvirt caps [--config FILE]
    hwvirt generate [-o unit.v] [--config FILE]

Exit status of ``run``: 0 when every ``expect`` holds, 1 when one does not, 2 for a bad scenario
file (the message names the step and the key) or a bad command line. ``check``: 0 when every VM entry
passes every consistency check, 1 when a check fails, 2 for bad input.
"""

import argparse
import json
import sys
from pathlib import Path

from hwvirt.hdl.capabilities import MSR
from hwvirt.hdl.exit_logic import ENTRY_FAILURE_BIT, ExitReason
from hwvirt.hdl.vmcs_fields import VMCS_FIELDS
from hwvirt.hdl.vmcs_unit import ERROR_DESCRIPTIONS, VMInstructionError

from .runner import BACKENDS, expect_mismatches, run_scenario
from .scenario import ScenarioError, load_config, load_scenario, read_toml


__all__ = ["main"]

EXIT_OK, EXIT_EXPECTATION_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _detail(row):
    """The error, fault, value or exit reason of a step, in words."""
    if row.get("error") is not None:
        try:
            meaning = ERROR_DESCRIPTIONS[VMInstructionError(row["error"])]
        except ValueError:
            meaning = "reserved"
        return f"error {row['error']} ({meaning})"
    if row.get("fault") is not None:
        return {"UD": "#UD", "GP": "#GP(0)"}.get(row["fault"], f"#{row['fault']}")
    if row.get("exit_code") is not None:
        return (f"exit code {row['exit_code']:#x}, exitinfo1 {row.get('exitinfo1') or 0:#x}, "
                f"exitinfo2 {row.get('exitinfo2') or 0:#x}")
    if row.get("exit_reason") is not None:
        basic = row["exit_reason"] & 0xFFFF
        try:
            name = ExitReason(basic).name
        except ValueError:
            name = "?"
        failure = " | entry failure" if row["exit_reason"] & ENTRY_FAILURE_BIT else ""
        return f"exit reason {basic} ({name}{failure}), qualification {row['qualification']:#x}"
    if row.get("value") is not None:
        return f"value {row['value']:#x}"
    return ""


def format_report(scenario, report):
    """The human report: a header, one line per step, and a summary."""
    lines = [f"scenario {report['scenario']} on {report['backend']} ({scenario.source})"]
    lines.append(f"{'step':>4}  {'op':<9} {'outcome':<13} {'cycles':>6}  {'check':<20} detail")
    for step, row in zip(scenario.steps, report["steps"]):
        cycles = "" if row["cycles"] is None else str(row["cycles"])
        check = row["check"] or "-"
        lines.append(f"{row['index']:>4}  {row['op']:<9} {row['outcome']:<13} {cycles:>6}  {check:<20} "
                     f"{_detail(row)}".rstrip())
        for mismatch in expect_mismatches(step, row):
            lines.append(f"{'':>6}EXPECTATION FAILED: {mismatch}")
    met = sum(row["expect_ok"] for row in report["steps"])
    total = len(report["steps"])
    verdict = "PASS" if report["passed"] else "FAIL"
    lines.append(f"{verdict}: {met}/{total} steps met their expectations; "
                 f"{report['total_cycles']} clock cycles in all")
    return "\n".join(lines)


def _cmd_run(args):
    scenario = load_scenario(args.scenario)
    waveform = args.vcd
    if waveform is not None and args.sim == "icarus":
        waveform = Path(waveform).with_suffix(".fst")   # Icarus writes FST
    report = run_scenario(scenario, backend=args.sim, waveform=waveform)
    print(format_report(scenario, report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"JSON report: {args.json}")
    if waveform is not None:
        print(f"waveform: {waveform} (GTKWave: gtkwave {Path(waveform).with_suffix('.gtkw')})")
    return EXIT_OK if report["passed"] else EXIT_EXPECTATION_FAILED


def _cmd_check(args):
    from .check import check_file, format_check_report
    doc = read_toml(args.file)
    if doc.get("arch") == "svm" and "fields" in doc:
        # A VMCB image: VMRUN it and name every failing consistency check.
        from .svm_runner import check_vmcb_image, format_vmcb_check
        row, values = check_vmcb_image(args.file, backend=args.sim)
        print(format_vmcb_check(row, values), end="")
        return EXIT_EXPECTATION_FAILED if row["checks"] else EXIT_OK
    scenario, entries = check_file(args.file, backend=args.sim)
    text, failing = format_check_report(scenario, entries, _detail)
    print(text)
    return EXIT_EXPECTATION_FAILED if failing else EXIT_OK


def _capabilities(args):
    return load_config(args.config).capabilities()


def _cmd_fields(args):
    caps = _capabilities(args)
    print(f"{'encoding':<10}{'name':<36}{'width':<9}{'type':<18}{'ro':<4}{'present':<9}requires")
    for field in VMCS_FIELDS:
        present = caps.field_supported(field)
        if not present and not args.all:
            continue
        print(f"{field.encoding:#06x}    {field.name:<36}{field.width.name.lower():<9}"
              f"{field.type.name.lower():<18}{'ro' if field.readonly else '':<4}"
              f"{'yes' if present else 'no':<9}{', '.join(field.requires)}")
    shown = len(VMCS_FIELDS) if args.all else len(caps.supported_fields)
    print(f"{shown} fields shown; {len(caps.supported_fields)} of {len(VMCS_FIELDS)} present in this configuration")
    return EXIT_OK


def _cmd_caps(args):
    caps = _capabilities(args)
    for index, value in sorted(caps.msrs.items()):
        print(f"{index:#05x}  {MSR.name(index):<30} {value:#018x}")
    print(f"MAXPHYADDR {caps.maxphyaddr}; VMCS revision {caps.revision_id:#x}; "
          f"{len(caps.supported_fields)} VMCS fields")
    return EXIT_OK


def _cmd_generate(args):
    from .runner import build_unit_from_config
    from .verilog import convert_unit, port_documentation

    config = load_config(args.config)
    unit = build_unit_from_config(config)
    text = convert_unit(unit)
    header = "// hwvirt VMX unit, generated by `hwvirt generate`.\n// Ports:\n" + "".join(
        f"//   {line}\n" for line in port_documentation(unit).splitlines())
    if args.output == "-":
        sys.stdout.write(header + text)
    else:
        Path(args.output).write_text(header + text)
        print(f"wrote {args.output} ({len(unit.fields)} VMCS fields, {unit.cache_slots} cache slots)")
    return EXIT_OK


def _parser():
    parser = argparse.ArgumentParser(prog="hwvirt", description="Cycle-level hardware model of Intel VMX.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a scenario and check its expectations")
    run.add_argument("scenario", help="scenario TOML file")
    run.add_argument("--sim", choices=BACKENDS, default="pysim",
                     help="simulator: Amaranth's (pysim, default) or Icarus Verilog via cocotb")
    run.add_argument("--json", metavar="OUT", help="write the JSON report here")
    run.add_argument("--vcd", metavar="OUT.vcd",
                     help="write a waveform (FST with --sim icarus) and a GTKWave save file beside it")
    run.set_defaults(handler=_cmd_run)

    check = sub.add_parser("check", help="list every failing VM-entry consistency check, with the "
                                         "fields and rules involved (a VMCS linter)")
    check.add_argument("file", help="a scenario, or a VMCS image: TOML with a [fields] table")
    check.add_argument("--sim", choices=BACKENDS, default="pysim")
    check.set_defaults(handler=_cmd_check)

    fields = sub.add_parser("fields", help="print the VMCS field catalogue")
    fields.add_argument("--config", metavar="FILE", help="TOML with a [config] table (a scenario works)")
    fields.add_argument("--all", action="store_true", help="also list fields absent from the configuration")
    fields.set_defaults(handler=_cmd_fields)

    caps = sub.add_parser("caps", help="print the VMX capability MSRs")
    caps.add_argument("--config", metavar="FILE", help="TOML with a [config] table (a scenario works)")
    caps.set_defaults(handler=_cmd_caps)

    gen = sub.add_parser("generate", help="export the unit's Verilog")
    gen.add_argument("-o", "--output", default="hwvirt_unit.v", help="output file, '-' for stdout")
    gen.add_argument("--config", metavar="FILE", help="TOML with a [config] table (a scenario works)")
    gen.set_defaults(handler=_cmd_generate)
    return parser


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        return args.handler(args)
    except ScenarioError as exc:
        print(f"hwvirt: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
