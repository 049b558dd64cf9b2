"""Half-perimeter wirelength per block of a placed netlist (fpga/wirelength.py), on placed netlists
written by hand in nextpnr's JSON format."""

import json

import pytest

from hwvirt.fpga.wirelength import Group, main, net_boxes, wirelength_by_group


def _cell(bel, connections):
    return {"type": "TRELLIS_COMB", "attributes": {"NEXTPNR_BEL": bel}, "connections": connections}


# Nets: 1 the clock, 2 "unit.store.w_data" (3 pins), 3 "unit.decider.plan" (2 pins),
# 4 "fold0" (2 pins, same tile), 5 a net of one pin.
CELLS = {
    "ff_a": _cell("X1/Y1/SLICEA", {"CLK": [1], "Q": [2]}),
    "lut_b": _cell("X4/Y2/SLICEB", {"A": [2], "F": [3]}),
    "lut_c": _cell("X2/Y6/SLICEC", {"B": [2], "C": [3], "F": [4], "D": [5]}),
    "ff_d": _cell("X2/Y6/SLICED", {"CLK": [1], "DI": [4]}),
    "unplaced": {"type": "GSR", "attributes": {}, "connections": {"GSR": [1]}},
}
NAMES = {"clk": [1], "unit.store.w_data": [2], "unit.store.w_data_TRELLIS_FF_Q_DI": [2],
         "unit.decider.plan_LUT4_Z_D[1]": [3], "unit.decider.plan_LUT4_Z_D_LUT4_Z_B[1]": [3],
         "fold0": [4], "x": [5]}


def _placed(cells=CELLS, names=NAMES):
    return {"modules": {"top": {"attributes": {"top": "1"}, "cells": cells,
                                "netnames": {n: {"bits": b} for n, b in names.items()}}}}


def test_net_boxes_are_half_perimeters_without_clock_or_single_pin_nets():
    assert net_boxes(_placed()) == {2: ((4 - 1) + (6 - 1), 3), 3: ((4 - 2) + (6 - 2), 2), 4: (0, 2)}


def test_groups_strip_cell_suffixes_and_sort_by_wirelength():
    assert wirelength_by_group(_placed(), depth=2) == [
        Group("unit.store", 8, 1), Group("unit.decider", 6, 1), Group("fold0", 0, 1)]
    assert wirelength_by_group(_placed(), depth=1) == [Group("unit", 14, 2), Group("fold0", 0, 1)]


def test_unreadable_location_is_an_error_naming_the_cell():
    cells = dict(CELLS, lut_b=_cell("somewhere", {"A": [2]}))
    with pytest.raises(ValueError, match="lut_b"):
        net_boxes(_placed(cells))


def test_cli_prints_the_blocks(tmp_path, capsys):
    path = tmp_path / "placed.json"
    path.write_text(json.dumps(_placed()))
    assert main([str(path), "--top", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "total HPWL 14 tiles over 3 nets"
    assert lines[1].split()[0] == "8" and lines[1].endswith("unit.store")
    assert len(lines) == 3
