"""Verilog export of the unit, and the rewrite Icarus Verilog needs to simulate it."""

import re

from amaranth.back import verilog

from .toolchain import VERILOG_TOP, use_builtin_yosys


__all__ = ["convert_unit", "icarus_safe", "PORT_DOCUMENTATION"]

#: The exported module's ports (the Amaranth signature flattened with ``__``).
PORT_DOCUMENTATION = """\
clk, rst                 clock; synchronous active-high reset
cmd__valid/ready         command stream handshake (ready only while the sequencer is idle)
cmd__payload[195:0]      Command: op[3:0], reg[67:4], operand[195:68]
resp__valid/ready        result stream handshake
resp__payload[169:0]     Result: outcome[2:0], fault[4:3], error[9:5], value[73:10],
                         exit_reason[105:74], qualification[169:106]
cpu[323:0]               ProcessorState: cr0[63:0], cr4[127:64], efer[191:128], rflags[255:192],
                         feature_control[319:256], cpl[321:320], cs_l[322], mov_ss_blocking[323]
status[1:0]              in_vmx[0], non_root[1]
current_vmcs[63:0]       current-VMCS pointer (all ones: none)
bus__*                   Wishbone B4 classic initiator: cyc, stb, we, adr (word address),
                         dat_w[63:0], sel[7:0], dat_r[63:0], ack
"""


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
