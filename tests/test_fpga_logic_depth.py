"""The modelled register-to-register depth of a synth_ecp5 netlist (fpga/logic_depth.py), on
netlists written by hand in Yosys's JSON format."""

import json

import pytest

from hwvirt.fpga.logic_depth import NET_DELAY, deepest_paths, main


def _cell(kind, inputs, outputs):
    connections = {**inputs, **outputs}
    directions = {**{p: "input" for p in inputs}, **{p: "output" for p in outputs}}
    return {"type": kind, "connections": connections, "port_directions": directions}


def _netlist(cells, names):
    return {"modules": {
        "LUT4": {"cells": {}},
        "top": {"attributes": {"top": "00000000000000000000000000000001"}, "cells": cells,
                "netnames": {name: {"bits": bits} for name, bits in names.items()}},
    }}


# Nets: 1 clock, 2 a.q, 3 b.q, 4 lut0 out, 5 lut1 out, 6 c.q, 7 mux out.
CELLS = {
    "a": _cell("TRELLIS_FF", {"CLK": [1], "DI": [6]}, {"Q": [2]}),
    "b": _cell("TRELLIS_FF", {"CLK": [1], "DI": [7]}, {"Q": [3]}),
    "lut0": _cell("LUT4", {"A": [2], "B": [3], "C": ["0"], "D": ["0"]}, {"Z": [4]}),
    "lut1": _cell("LUT4", {"A": [3], "B": ["0"], "C": ["0"], "D": [4]}, {"Z": [5]}),
    "c": _cell("TRELLIS_FF", {"CLK": [1], "DI": [5]}, {"Q": [6]}),
    "mux": _cell("PFUMX", {"ALUT": [4], "BLUT": [5], "C0": [2]}, {"Z": [7]}),
}
NAMES = {"clk": [1], "a_q": [2], "b_q": [3], "t0": [4], "t1": [5], "c_q": [6], "m": [7]}


def test_paths_are_ordered_and_traced():
    paths = deepest_paths(_netlist(CELLS, NAMES), "top")
    by_sink = {(p.sink, p.sink_pin): p for p in paths}
    assert set(by_sink) == {("a", "DI"), ("b", "DI"), ("c", "DI")}      # clock pins are not paths
    # c.DI: b.q → lut0.B (0.275) → lut1.D (0.379), three nets.
    c = by_sink["c", "DI"]
    assert c.arrival_ns == pytest.approx(3 * NET_DELAY + 0.275 + 0.379)
    assert (c.levels, c.source, c.nets) == (2, "b", ["b_q", "t0", "t1"])
    # b.DI: … → lut1 → PFUMX.BLUT (local, 0.25) → b.
    b = by_sink["b", "DI"]
    assert b.arrival_ns == pytest.approx(c.arrival_ns + 0.25)
    assert b.nets == ["b_q", "t0", "t1", "m"]
    # a.DI is c.q directly: one net, no logic.
    assert by_sink["a", "DI"].arrival_ns == pytest.approx(NET_DELAY)
    assert by_sink["a", "DI"].levels == 0
    assert [p.sink for p in paths] == ["b", "c", "a"]


def test_unknown_top_is_named():
    with pytest.raises(ValueError, match="'nope'.*top"):
        deepest_paths(_netlist(CELLS, NAMES), "nope")


def test_cli_picks_the_marked_top(tmp_path, capsys):
    path = tmp_path / "n.json"
    path.write_text(json.dumps(_netlist(CELLS, NAMES)))
    assert main([str(path), "--paths", "1", "--trace", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("levels  b -> b.DI")
    assert [line.strip() for line in out[1:]] == ["b_q", "t0", "t1", "m"]
