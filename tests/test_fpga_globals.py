"""fpga/globals.py: the widest flip-flop enables of a synthesized netlist go through global buffers."""

import json
import math

import pytest

from hwvirt.fpga.globals import PIN_WEIGHT_NS, SITES, main, promote_enables
from hwvirt.fpga.logic_depth import net_arrivals
from hwvirt.fpga.wirelength import _top_module


def _ff(clk, *, ce=None, lsr=None, di=None, q=None):
    connections = {"CLK": [clk], "DI": [di if di is not None else "0"], "Q": [q if q is not None else "x"]}
    if ce is not None:
        connections["CE"] = [ce]
    if lsr is not None:
        connections["LSR"] = [lsr]
    return {"type": "TRELLIS_FF", "parameters": {}, "attributes": {},
            "port_directions": {p: ("output" if p == "Q" else "input") for p in connections},
            "connections": connections}


def _lut(*inputs, z):
    connections = {pin: [bit] for pin, bit in zip("ABCD", inputs)}
    connections["Z"] = [z]
    return {"type": "LUT4", "parameters": {}, "attributes": {},
            "port_directions": {p: ("output" if p == "Z" else "input") for p in connections},
            "connections": connections}


def _netlist():
    """Clock 2; net 10 enables 5 flip-flops and feeds a LUT; net 11 resets 3 and enables 1; net 12
    enables 2; the clock also enables one flip-flop."""
    cells = {}
    for i in range(5):
        cells[f"wide{i}"] = _ff(2, ce=10, q=100 + i)
    for i in range(3):
        cells[f"reset{i}"] = _ff(2, lsr=11, q=110 + i)
    cells["both"] = _ff(2, ce=11, lsr=12, q=120)
    cells["narrow"] = _ff(2, ce=12, q=121)
    cells["odd"] = _ff(2, ce=2, q=122)
    cells["logic"] = _lut(10, 11, 100, z=130)
    netnames = {"clk": {"hide_name": 0, "bits": [2]}, "en_wide": {"hide_name": 0, "bits": [10]},
                "dangling": {"hide_name": 0, "bits": [140]},
                "en_wide_alias_longer": {"hide_name": 0, "bits": [10]},
                "rst": {"hide_name": 0, "bits": [11]}, "en_narrow": {"hide_name": 0, "bits": [12]}}
    ports = {"out": {"direction": "output", "bits": [150]}}
    return {"modules": {"top": {"attributes": {"top": "00000000000000000000000000000001"}, "ports": ports,
                                "cells": cells, "netnames": netnames}}}


def _cells(netlist):
    return netlist["modules"]["top"]["cells"]


def test_widest_enables_move_to_global_buffers_and_other_users_stay():
    netlist = _netlist()
    before = json.dumps(netlist)
    promoted, promotions = promote_enables(netlist, limit=2, min_fanout=2)
    assert json.dumps(netlist) == before                      # the input is left alone
    # net 10: 5 CE pins; net 11: 3 LSR + 1 CE; net 12: 2 — not taken, the limit is 2
    assert [(p.net, p.pins) for p in promotions] == [("en_wide", 5), ("rst", 4)]
    cells = _cells(promoted)
    wide = cells["$global$en_wide"]
    assert wide["type"] == "DCCA"
    assert wide["connections"]["CLKI"] == [10] and wide["connections"]["CE"] == ["1"]
    # each buffer on its own site, in order
    assert wide["attributes"]["BEL"] == SITES[0] and cells["$global$rst"]["attributes"]["BEL"] == SITES[1]
    wide_bit = wide["connections"]["CLKO"][0]
    reset_bit = cells["$global$rst"]["connections"]["CLKO"][0]
    # new nets: no cell, name or port uses them (net 140 is only named, 150 only a port)
    assert wide_bit > 150 and reset_bit > 150 and wide_bit != reset_bit
    assert all(cells[f"wide{i}"]["connections"]["CE"] == [wide_bit] for i in range(5))
    assert all(cells[f"reset{i}"]["connections"]["LSR"] == [reset_bit] for i in range(3))
    assert cells["both"]["connections"]["CE"] == [reset_bit]
    assert cells["both"]["connections"]["LSR"] == [12]          # net 12 is not promoted
    assert cells["narrow"]["connections"]["CE"] == [12]
    assert cells["logic"]["connections"]["A"] == [10] and cells["logic"]["connections"]["B"] == [11]
    assert promoted["modules"]["top"]["netnames"]["en_wide$global"]["bits"] == [wide_bit]


def test_min_fanout_and_the_clock():
    promoted, promotions = promote_enables(_netlist(), limit=4, min_fanout=3)
    # net 12 drives 2 pins, below the minimum; the clock (net 2) is never promoted as an enable
    assert [(p.net, p.pins) for p in promotions] == [("en_wide", 5), ("rst", 4)]
    assert _cells(promoted)["odd"]["connections"]["CE"] == [2]
    promoted, promotions = promote_enables(_netlist(), limit=0)
    assert promotions == [] and json.dumps(promoted) == json.dumps(_netlist())


def _late_netlist(late_pins):
    """:func:`_netlist` and net 141, decoded through two LUTs from flip-flop outputs, enabling
    ``late_pins`` flip-flops."""
    netlist = _netlist()
    cells = _cells(netlist)
    cells["decode1"] = _lut(100, 101, z=140)
    cells["decode2"] = _lut(140, 102, z=141)
    for i in range(late_pins):
        cells[f"late{i}"] = _ff(2, ce=141, q=160 + i)
    netlist["modules"]["top"]["netnames"]["late"] = {"hide_name": 0, "bits": [141]}
    return netlist


def test_late_enables_go_first_width_weighed():
    """Nets are ranked by their logic's modelled arrival plus PIN_WEIGHT_NS per doubling of their
    pins: a net decoded through two LUTs goes before one as wide straight from a flip-flop, and
    after one enough wider."""
    arrival = net_arrivals(_top_module(_late_netlist(5)))(141)[0]
    assert arrival > 0
    promoted, promotions = promote_enables(_late_netlist(5), limit=2, min_fanout=3)
    assert [(p.net, p.pins) for p in promotions] == [("late", 5), ("en_wide", 5)]
    # 5 pins straight from a flip-flop against fewer, late ones: as many as the arrival is worth
    worth = 5 / 2 ** (arrival / PIN_WEIGHT_NS)
    enough = math.floor(worth) + 1
    promoted, promotions = promote_enables(_late_netlist(enough), limit=1, min_fanout=3)
    assert [(p.net, p.pins) for p in promotions] == [("late", enough)]
    too_few = math.floor(worth) - (1 if worth == math.floor(worth) else 0)
    assert too_few >= 3
    promoted, promotions = promote_enables(_late_netlist(too_few), limit=1, min_fanout=3)
    assert [(p.net, p.pins) for p in promotions] == [("en_wide", 5)]


def test_excluded_nets_get_no_buffer():
    promoted, promotions = promote_enables(_netlist(), limit=2, min_fanout=2, exclude={10})
    assert [(p.net, p.pins) for p in promotions] == [("rst", 4), ("en_narrow", 2)]
    assert all(_cells(promoted)[f"wide{i}"]["connections"]["CE"] == [10] for i in range(5))


@pytest.mark.parametrize("kwargs, message", [
    ({"limit": -1}, "limit must be 0 to 7"),
    ({"limit": 8}, "limit must be 0 to 7"),
    ({"min_fanout": 0}, "min_fanout must be at least 1"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        promote_enables(_netlist(), **kwargs)


def test_netlist_without_a_top():
    netlist = _netlist()
    module = netlist["modules"]["top"]
    module["attributes"] = {}
    netlist["modules"]["other"] = {"attributes": {}, "cells": {}, "netnames": {}}
    with pytest.raises(ValueError, match="none is marked top"):
        promote_enables(netlist)


def test_cli(tmp_path, capsys):
    source, output = tmp_path / "in.json", tmp_path / "out.json"
    source.write_text(json.dumps(_netlist()))
    assert main([str(source), str(output), "--limit", "1", "--min-fanout", "2"]) == 0
    assert "5 CE/LSR pins  en_wide" in capsys.readouterr().out
    assert "$global$en_wide" in _cells(json.loads(output.read_text()))
    with pytest.raises(SystemExit):
        main([str(source), str(output), "--limit", "-1"])
    assert "limit must be 0 to 7" in capsys.readouterr().err
