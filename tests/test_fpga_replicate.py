"""fpga/replicate.py: a high-fanout flip-flop is copied per group of nearby loads, and the netlist
computes what it did."""

import json
import random

import pytest
from hypothesis import given, settings, strategies as st

from hwvirt.fpga.replicate import MARK, group_loads, main, marked_bits, replicate_drivers


def _ff(*, di, q, ce=None, clk=2, bel=None):
    connections = {"CLK": [clk], "DI": [di], "Q": [q]}
    if ce is not None:
        connections["CE"] = [ce]
    return {"type": "TRELLIS_FF", "parameters": {"REGSET": "RESET", "GSR": "DISABLED"},
            "attributes": {"BEL": bel} if bel else {},
            "port_directions": {p: ("output" if p == "Q" else "input") for p in connections},
            "connections": connections}


def _lut(*inputs, z, init=0x8000, bel=None):
    connections = {pin: [bit] for pin, bit in zip("ABCD", inputs)}
    connections["Z"] = [z]
    return {"type": "LUT4", "parameters": {"INIT": format(init, "016b")},
            "attributes": {"BEL": bel} if bel else {},
            "port_directions": {p: ("output" if p == "Z" else "input") for p in connections},
            "connections": connections}


def _module(cells, ports=None):
    return {"modules": {"top": {"attributes": {"top": "00000000000000000000000000000001"},
                                "ports": ports or {}, "cells": cells,
                                "netnames": {"clk": {"hide_name": 0, "bits": [2]},
                                             "strobe": {"hide_name": 0, "bits": [10]}}}}}


def _cells(netlist):
    return netlist["modules"]["top"]["cells"]


def _strobe_netlist():
    """A flip-flop at X10/Y10 (net 10) enables 40 flip-flops around X10 and 40 around X100, and a LUT
    reads it too."""
    cells = {"strobe": _ff(di=3, q=10, bel="X10/Y10/SLICEA.FF0")}
    for i in range(40):
        cells[f"near{i}"] = _ff(di=4, q=100 + i, ce=10, bel=f"X{10 + i % 4}/Y{10 + i // 4}/SLICEA.FF0")
        cells[f"far{i}"] = _ff(di=4, q=200 + i, ce=10, bel=f"X{100 + i % 4}/Y{10 + i // 4}/SLICEA.FF0")
    cells["reader"] = _lut(10, 4, z=300, bel="X11/Y11/SLICEB.K0")
    return _module(cells)


def test_a_strobe_gets_one_copy_per_group_of_nearby_loads():
    netlist = _strobe_netlist()
    before = json.dumps(netlist)
    replicated, replications = replicate_drivers(netlist, max_fanout=48)
    assert json.dumps(netlist) == before                       # the input is left alone
    assert [(r.net, r.driver, r.loads, r.copies) for r in replications] == [("strobe", "strobe", 81, 1)]
    cells = _cells(replicated)
    copy = cells["strobe$copy1"]
    copy_bit = copy["connections"]["Q"][0]
    assert copy_bit not in range(0, 301)                       # a new net
    # the same flip-flop, unpinned, on its own output
    assert {k: v for k, v in copy["connections"].items() if k != "Q"} == \
        {k: v for k, v in cells["strobe"]["connections"].items() if k != "Q"}
    assert copy["parameters"] == cells["strobe"]["parameters"]
    # pinned to the empty tile nearest the middle of its group (X100-103, Y10-19 are used)
    assert copy["attributes"]["BEL"] == "X104/Y14/SLICEA.FF0"
    # the group near the original keeps it; the far group gets the copy
    assert all(cells[f"near{i}"]["connections"]["CE"] == [10] for i in range(40))
    assert all(cells[f"far{i}"]["connections"]["CE"] == [copy_bit] for i in range(40))
    assert cells["reader"]["connections"]["A"] == [10]
    assert replicated["modules"]["top"]["netnames"]["strobe$copy1"]["bits"] == [copy_bit]


def test_a_flip_flop_is_copied_with_its_lut_and_d_inputs_stay():
    """The strobe's D comes from a LUT: each copy gets its own copy of that LUT. Flip-flops that take
    the strobe on D stay on the original."""
    netlist = _strobe_netlist()
    cells = _cells(netlist)
    cells["strobe"]["connections"]["DI"] = [5]
    cells["strobe_logic"] = _lut(6, 7, z=5, init=0x6, bel="X10/Y10/SLICEA.K0")
    for i in range(60):
        cells[f"follower{i}"] = _ff(di=10, q=400 + i, bel=f"X{60 + i % 4}/Y{10 + i // 4}/SLICEC.FF0")
    replicated, replications = replicate_drivers(netlist, max_fanout=48)
    assert [(r.driver, r.loads, r.copies) for r in replications] == [("strobe", 141, 1)]
    after = _cells(replicated)
    logic_copy = after["strobe_logic$copy1"]
    assert logic_copy["connections"]["A"] == [6] and logic_copy["connections"]["B"] == [7]
    assert logic_copy["parameters"] == cells["strobe_logic"]["parameters"]
    assert after["strobe$copy1"]["connections"]["DI"] == logic_copy["connections"]["Z"]
    site = after["strobe$copy1"]["attributes"]["BEL"].removesuffix(".FF0")     # the pair shares a slice
    assert logic_copy["attributes"]["BEL"] == site + ".K0"
    assert after["strobe"]["connections"]["DI"] == [5]
    assert all(after[f"follower{i}"]["connections"]["DI"] == [10] for i in range(60))
    copy_bit = after["strobe$copy1"]["connections"]["Q"][0]
    assert all(after[f"far{i}"]["connections"]["CE"] == [copy_bit] for i in range(40))


def test_a_flip_flop_with_a_deep_d_is_not_copied():
    """A copy would take D's last LUT among its loads, far from the logic before it."""
    netlist = _strobe_netlist()
    cells = _cells(netlist)
    cells["strobe"]["connections"]["DI"] = [5]
    cells["strobe_logic"] = _lut(6, 7, z=5, bel="X10/Y10/SLICEA.K0")
    cells["before"] = _lut(8, z=6, bel="X9/Y10/SLICEA.K0")
    replicated, replications = replicate_drivers(netlist, max_fanout=48)
    assert replications == [] and replicated == netlist


def test_marked_only_splits_the_marked_flip_flops():
    """With ``marked_only`` a flip-flop is split only if a name of its output net carries the HDL's
    mark (a Yosys attribute, written as a bit string); the same netlist is split without it."""
    netlist = _strobe_netlist()
    names = netlist["modules"]["top"]["netnames"]
    assert replicate_drivers(netlist, max_fanout=48, marked_only=True) == (netlist, [])
    names["strobe"]["attributes"] = {MARK: "00000000000000000000000000000000"}
    assert marked_bits(netlist["modules"]["top"]) == set()
    assert replicate_drivers(netlist, max_fanout=48, marked_only=True)[1] == []
    names["strobe_alias"] = {"hide_name": 0, "bits": [10], "attributes": {MARK: "00000000000000000000000000000001"}}
    assert marked_bits(netlist["modules"]["top"]) == {10}
    _, replications = replicate_drivers(netlist, max_fanout=48, marked_only=True)
    assert [(r.driver, r.loads, r.copies) for r in replications] == [("strobe", 81, 1)]


def test_nets_that_are_not_split():
    cells = {"strobe": _ff(di=3, q=10), "out": _ff(di=4, q=11)}
    for i in range(10):
        cells[f"load{i}"] = _ff(di=4, q=100 + i, ce=10)        # 10 loads: at the limit
        cells[f"port_load{i}"] = _ff(di=11, q=120 + i)         # net 11 is also a port
        cells[f"clocked{i}"] = _ff(di=3, q=140 + i, clk=12)    # net 12: a clock
    cells["clock_source"] = _lut(3, z=12)
    cells["decode"] = _lut(3, 4, z=14)
    for i in range(12):
        cells[f"decoded{i}"] = _ff(di=4, q=180 + i, ce=14)          # net 14: driven by a LUT
    cells["carry"] = {"type": "CCU2C", "parameters": {}, "attributes": {},
                      "port_directions": {"S0": "output"}, "connections": {"S0": [13]}}
    for i in range(12):
        cells[f"sum_load{i}"] = _ff(di=13, q=160 + i)          # net 13: driven by a carry cell
    netlist = _module(cells, ports={"o": {"direction": "output", "bits": [11]}})
    replicated, replications = replicate_drivers(netlist, max_fanout=10)
    assert replications == []
    assert replicated == netlist


def test_group_loads():
    loads = [((x, y), (x, y)) for x in range(20) for y in range(5)] + [(None, "a"), (None, "b")]
    groups = group_loads(loads, 16)
    assert sorted(map(str, (item for group in groups for _, item in group))) == sorted(str(item) for _, item in loads)
    assert all(len(group) <= 16 for group in groups)
    assert len(groups) == 7 + 1                                 # ceil(100 / 16) located, then the rest
    assert groups[-1] == [(None, "a"), (None, "b")]
    for group in groups[:-1]:                                   # split across x (the longer side)
        xs = [x for (x, _), _ in group]
        assert max(xs) - min(xs) <= 3
    with pytest.raises(ValueError, match="max_fanout"):
        group_loads(loads, 0)


def test_loads_in_one_tile_stay_together():
    """The flip-flops of a slice share CE and LSR: a copy never takes some of a tile's loads."""
    loads = [((10 + i // 8, 5), f"t{i // 8}_{i % 8}") for i in range(40)]     # 5 tiles of 8 loads
    groups = group_loads(loads, 12)
    for group in groups:
        assert len({location for location, _ in group}) * 8 == len(group)
    assert all(len(group) <= 16 for group in groups)
    assert group_loads([((1, 1), f"l{i}") for i in range(30)], 12) == [[((1, 1), f"l{i}") for i in range(30)]]


def _canonical_equivalent(original, replicated):
    """Every cell of ``replicated`` is a cell of ``original`` or a copy of one (``name$copyN``) with the
    same type and parameters whose inputs are, net by net, those of the original or copies of them:
    so each net of ``replicated`` carries the value of the ``original`` net it stands for."""
    before, after = _cells(original), _cells(replicated)
    out_port = {"TRELLIS_FF": "Q", "LUT4": "Z"}
    stands_for = {}                    # net of ``replicated`` -> net of ``original``
    for name, cell in after.items():
        source = name.split("$copy")[0]
        assert source in before
        port = out_port.get(cell["type"])
        if port is not None:
            stands_for[cell["connections"][port][0]] = before[source]["connections"][port][0]
    for name, cell in after.items():
        source = before[name.split("$copy")[0]]
        assert cell["type"] == source["type"] and cell["parameters"] == source["parameters"]
        for pin, bits in cell["connections"].items():
            if cell["port_directions"][pin] == "output":
                continue
            assert [stands_for.get(bit, bit) for bit in bits] == source["connections"][pin], (name, pin)
    return stands_for


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 12))
def test_random_netlists_keep_their_function_and_fanout_limit(seed, max_fanout):
    rng = random.Random(seed)
    cells, nets = {}, [3, 4]
    for i in range(rng.randint(1, 25)):
        bel = f"X{rng.randint(70, 120)}/Y{rng.randint(2, 90)}/SLICEA.K0" if rng.random() < 0.8 else None
        if rng.random() < 0.5:
            cells[f"ff{i}"] = _ff(di=rng.choice(nets), q=1000 + i, ce=rng.choice(nets), bel=bel)
        else:
            cells[f"lut{i}"] = _lut(*(rng.choice(nets) for _ in range(rng.randint(1, 4))), z=1000 + i,
                                    init=rng.getrandbits(16), bel=bel)
        nets.append(1000 + i)
        for j in range(rng.choice([0, 1, 3, 20, 60])):           # extra loads of this net, a tile each
            load = {"ce": 1000 + i, "di": 4} if rng.random() < 0.8 else {"di": 1000 + i}
            cells[f"load{i}_{j}"] = _ff(**load, q=5000 + 100 * i + j,
                                        bel=f"X{2 + j}/Y{2 + i}/SLICEB.FF0" if rng.random() < 0.9 else None)
    netlist = _module(cells)
    replicated, replications = replicate_drivers(netlist, max_fanout=max_fanout, rounds=50)
    _canonical_equivalent(netlist, replicated)
    # every net a flip-flop or LUT drives now has at most max_fanout loads, or those of one tile,
    # besides flip-flop D inputs; a copied flip-flop's D comes from a copy of its LUT
    loads, in_tile = {}, {}
    for name, cell in _cells(replicated).items():
        tile = cell["attributes"].get("BEL", "").rsplit("/", 1)[0] or None
        if "$copy" in name and cell["type"] == "TRELLIS_FF":
            source = _cells(netlist)[name.split("$copy")[0]]
            d_source = [c for c in cells.values() if c["type"] == "LUT4" and c["connections"]["Z"] == source["connections"]["DI"]]
            d_copy = [n for n, c in _cells(replicated).items() if c["connections"].get("Z") == cell["connections"]["DI"]]
            assert len(d_copy) == (1 if d_source else 0) and all("$copy" in n for n in d_copy)
        for pin, bits in cell["connections"].items():
            if cell["port_directions"][pin] != "output" and not (cell["type"] == "TRELLIS_FF" and pin == "DI"):
                for bit in bits:
                    loads[bit] = loads.get(bit, 0) + 1
                    if tile is not None:
                        in_tile[bit, tile] = in_tile.get((bit, tile), 0) + 1
    largest_tile = {}
    for (bit, _), count in in_tile.items():
        largest_tile[bit] = max(largest_tile.get(bit, 0), count)
    # (flip-flops whose D is a register's output, directly or through one LUT)
    after = _cells(replicated)
    output_of = {c["connections"][p][0]: c for c in after.values() for p in ("Q", "Z") if p in c["connections"]}

    def shallow(ff):
        d = output_of.get(ff["connections"]["DI"][0])
        return (d is None or d["type"] != "LUT4" or
                all(output_of.get(b, {"type": None})["type"] != "LUT4"
                    for pin in "ABCD" for b in d["connections"].get(pin, [])))
    driven = {cell["connections"]["Q"][0] for cell in after.values() if cell["type"] == "TRELLIS_FF" and shallow(cell)}
    assert all(count <= max(max_fanout, largest_tile.get(bit, 0))
               for bit, count in loads.items() if bit in driven)
    copies = sum(r.copies for r in replications)
    assert copies <= len(_cells(replicated)) - len(cells) <= 2 * copies     # a LUT with a flip-flop


def test_command_line(tmp_path, capsys):
    source, target = tmp_path / "pinned.json", tmp_path / "replicated.json"
    source.write_text(json.dumps(_strobe_netlist()))
    assert main([str(source), str(target), "--max-fanout", "48"]) == 0
    assert "strobe$copy1" in _cells(json.loads(target.read_text()))
    assert "81 loads    1 copies  strobe  (strobe)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([str(source), str(target), "--max-fanout", "0"])
