"""Verilog export of the unit, and the rewrite Icarus Verilog needs to simulate it."""

import re

from amaranth.back import verilog

from .toolchain import VERILOG_TOP, use_builtin_yosys


__all__ = ["convert_unit", "icarus_safe", "port_documentation"]

def port_documentation(unit):
    """The exported module's ports, one line each, with the fields of every packed struct port.

    Generated from the unit's signature and the ``data`` layouts, so it cannot drift from the design.
    """
    from amaranth.hdl import Value
    from amaranth.lib import data, wiring

    lines = ["clk, rst: clock; synchronous active-high reset"]
    for path, member, value in unit.signature.flatten(unit):
        name = "__".join(str(p) for p in path)
        direction = "input " if member.flow == wiring.In else "output"
        width = len(Value.cast(value))
        line = f"{direction} [{width - 1}:0] {name}" if width > 1 else f"{direction} {name}"
        if isinstance(value, data.View):
            fields = [f"{field}[{f.offset + f.width - 1}:{f.offset}]" for field, f in data.Layout.cast(value.shape())]
            line += ": " + ", ".join(fields)
        lines.append(line)
    return "\n".join(lines) + "\n"


def convert_unit(unit, *, name=VERILOG_TOP):
    """Verilog text of a unit, reproducible for a given configuration (pinned Yosys, no src attributes)."""
    use_builtin_yosys()
    return verilog.convert(unit, name=name, emit_src=False)


_REG_DECLARATION = re.compile(r"^(\s*reg\s+(?:signed\s+)?(?:\[[^\]]+\]\s*)?[\w$\\]+)\s*;", re.MULTILINE)


_TRIGGER = re.compile(r"^\s*reg\s+(\\\$auto\$verilog_backend\S+)\s*=\s*0;", re.MULTILINE)


def icarus_safe(text):
    """Make the exported Verilog start up correctly under Icarus Verilog.

    Icarus does not evaluate ``always @*`` blocks at time 0 and, generating SystemVerilog, applies
    declaration initialisers without an update event, so combinational outputs stay at X — or, with
    the usual "``reg x = 0``" workaround alone, at a wrong 0 (a ``ready`` that should be 1) until some
    input changes (amaranth-lang/amaranth issues 594 and 1629). Two rewrites fix both:

    * every plain ``reg`` gets an initial value of 0 (memories, with an unpacked dimension, are left
      alone), so nothing is X;
    * Yosys's dummy trigger registers, which every ``always @*`` block lists, are toggled once at
      time 0, so every combinational block is evaluated before the first clock edge.
    """
    text = _REG_DECLARATION.sub(r"\1 = 0;", text)
    modules = text.split("endmodule")
    for i, module in enumerate(modules[:-1]):
        kick = "".join(f"  initial #0 {name} = 1'h1;\n" for name in _TRIGGER.findall(module))
        modules[i] = module + kick
    return "endmodule".join(modules)
