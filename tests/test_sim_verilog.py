"""Verilog export: reproducible text, documented ports, and the Icarus start-up rewrite."""

import re

from hwvirt.hdl.capabilities import VMXCapabilities
from hwvirt.hdl.vmcs_unit import VMCSUnit
from hwvirt.sim.verilog import convert_unit, icarus_safe, port_documentation


def test_export_is_reproducible_and_has_the_documented_ports():
    unit = VMCSUnit()
    first = convert_unit(unit)
    second = convert_unit(VMCSUnit())
    assert first == second
    header = re.search(r"module hwvirt_unit\((.*?)\);", first, re.S).group(1)
    ports = {p.strip() for p in header.split(",")}
    expected = {"clk", "rst", "cmd__valid", "cmd__ready", "cmd__payload", "guest__valid", "guest__ready",
                "guest__payload", "resp__valid", "resp__ready",
                "resp__payload", "cpu", "status", "current_vmcs", "arch_state", "entry_failures",
                "bus__cyc", "bus__stb", "bus__we", "bus__adr", "bus__dat_w", "bus__sel", "bus__dat_r",
                "bus__ack"}
    assert ports == expected
    documentation = port_documentation(unit)
    for port in expected - {"clk", "rst"}:
        width = re.search(rf"(?:input|output)\s+(?:\[(\d+):0\]\s+)?{port}\b", first)
        line = next(l for l in documentation.splitlines() if re.search(rf"\b{port}\b", l))
        assert (width.group(1) or "") in line      # the documented width is the exported one
    assert "cr3[127:64]" in documentation and "check[177:170]" in documentation


def test_address_width_follows_maxphyaddr():
    text = convert_unit(VMCSUnit(VMXCapabilities(maxphyaddr=46)))
    assert re.search(r"output \[42:0\] bus__adr", text)


def test_icarus_rewrite_initialises_regs_but_not_memories():
    text = ("module a(x);\n  reg \\$auto$verilog_backend.cc:1:dump_module$1  = 0;\n  reg [3:0] r;\n"
            "  reg s;\n  reg [63:0] mem [0:7];\nendmodule\n"
            "module b(y);\n  reg \\$auto$verilog_backend.cc:1:dump_module$2  = 0;\nendmodule\n")
    out = icarus_safe(text)
    assert "reg [3:0] r = 0;" in out and "reg s = 0;" in out
    assert "reg [63:0] mem [0:7];" in out
    module_a, module_b = out.split("endmodule")[:2]
    assert "initial #0 \\$auto$verilog_backend.cc:1:dump_module$1 = 1'h1;" in module_a
    assert "dump_module$2 = 1'h1" in module_b and "dump_module$1 = 1'h1" not in module_b
