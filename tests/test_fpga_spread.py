"""fpga/spread.py: logic tiles of a placed ECP5 netlist moved apart along their rows, legally."""

import json

import pytest

from hwvirt.fpga.spread import SpreadError, parse_slice_bel, spread_placement


def _cell(kind, bel, **connections):
    directions = {port: ("output" if port in ("F", "Q", "FCO", "OFX") else "input") for port in connections}
    return {"type": kind, "attributes": {"NEXTPNR_BEL": bel, "BEL_STRENGTH": "1"}, "parameters": {},
            "port_directions": directions, "connections": {p: list(bits) for p, bits in connections.items()}}


def _netlist(cells):
    return {"modules": {"top": {"attributes": {"top": "1"}, "settings": {"place": "1"}, "ports": {},
                                "cells": cells, "netnames": {}}}}


def _bels(netlist):
    return {name: c["attributes"]["NEXTPNR_BEL"] for name, c in netlist["modules"]["top"]["cells"].items()}


def test_parse_slice_bel():
    assert parse_slice_bel("X12/Y34/SLICEB.K1") == (12, 34, "SLICEB.K1")
    assert parse_slice_bel("X3/Y9/SLICED.FF0") == (3, 9, "SLICED.FF0")
    assert parse_slice_bel("X4/Y22/DP16KD") is None
    assert parse_slice_bel("X0/Y47/PIOA") is None


def test_tiles_move_whole_in_row_order_and_other_cells_stay():
    cells = {
        "a_lut": _cell("TRELLIS_COMB", "X2/Y5/SLICEA.K0", F=[10]),
        "a_ff":  _cell("TRELLIS_FF", "X2/Y5/SLICEA.FF0", DI=[10]),
        "b_lut": _cell("TRELLIS_COMB", "X3/Y5/SLICEC.K1", F=[11]),
        "c_lut": _cell("TRELLIS_COMB", "X7/Y5/SLICEB.K0", F=[12]),
        "d_lut": _cell("TRELLIS_COMB", "X3/Y6/SLICEA.K0", F=[13]),
        "ram":   _cell("DP16KD", "X4/Y22/DP16KD", DIA0=[11]),
        "io":    _cell("TRELLIS_IO", "X0/Y47/PIOA", I=[12]),
    }
    placed = _netlist(cells)
    before = json.dumps(placed)
    spread, report = spread_placement(placed, factor=3)
    assert json.dumps(placed) == before                     # the input is left alone
    bels = _bels(spread)
    # column 2 stays (the first column), 3 → 2 + 1×3 = 5, 7 → 2 + 5×3 = 17; row 6's tile 3 → 5
    assert bels["a_lut"] == "X2/Y5/SLICEA.K0" and bels["a_ff"] == "X2/Y5/SLICEA.FF0"
    assert bels["b_lut"] == "X5/Y5/SLICEC.K1"
    assert bels["c_lut"] == "X17/Y5/SLICEB.K0"
    assert bels["d_lut"] == "X5/Y6/SLICEA.K0"
    assert bels["ram"] == "X4/Y22/DP16KD" and bels["io"] == "X0/Y47/PIOA"
    assert (report.tiles, report.runs, report.columns_before, report.columns_after) == (4, 0, (2, 7), (2, 17))


def test_carry_runs_stay_adjacent_and_push_later_tiles_right():
    cells = {
        # a carry chain over tiles 2, 3, 4 of row 8 (FCO of one tile into FCI of the next)
        "c0": _cell("TRELLIS_COMB", "X2/Y8/SLICED.K1", FCO=[20]),
        "c1": _cell("TRELLIS_COMB", "X3/Y8/SLICEA.K0", FCI=[20]),
        "c2": _cell("TRELLIS_COMB", "X3/Y8/SLICED.K1", FCO=[21]),
        "c3": _cell("TRELLIS_COMB", "X4/Y8/SLICEA.K0", FCI=[21]),
        "other": _cell("TRELLIS_COMB", "X5/Y8/SLICEB.K0", F=[22]),
    }
    spread, report = spread_placement(_netlist(cells), factor=1.5)
    bels = _bels(spread)
    assert [bels[c] for c in ("c0", "c1", "c3")] == ["X2/Y8/SLICED.K1", "X3/Y8/SLICEA.K0", "X4/Y8/SLICEA.K0"]
    # column 5 would go to 2 + round(3 × 1.5) = 7; free, after the run's end at 4
    assert bels["other"] == "X7/Y8/SLICEB.K0"
    assert report.runs == 1

    # A run that ends past where the next tile would go pushes that tile to the next free column.
    cells["c0"]["attributes"]["NEXTPNR_BEL"] = "X5/Y8/SLICED.K1"
    cells["c1"]["attributes"]["NEXTPNR_BEL"] = "X6/Y8/SLICEA.K0"
    cells["c2"]["attributes"]["NEXTPNR_BEL"] = "X6/Y8/SLICED.K1"
    cells["c3"]["attributes"]["NEXTPNR_BEL"] = "X7/Y8/SLICEA.K0"
    cells["other"]["attributes"]["NEXTPNR_BEL"] = "X8/Y8/SLICEB.K0"
    bels = _bels(spread_placement(_netlist(cells), factor=1.1)[0])
    # the run starts at 2 + round(3 × 1.1) = 5 and ends at 7; column 8 would go to 9 (free)
    assert bels["c3"] == "X7/Y8/SLICEA.K0" and bels["other"] == "X9/Y8/SLICEB.K0"
    bels = _bels(spread_placement(_netlist(cells), factor=1.0)[0])
    assert bels == {name: c["attributes"]["NEXTPNR_BEL"] for name, c in cells.items()}


def test_every_tile_lands_on_its_own_column():
    # Tiles at every column of a row with a factor that rounds several onto the same target.
    cells = {f"t{x}": _cell("TRELLIS_COMB", f"X{x}/Y3/SLICEA.K0", F=[100 + x]) for x in range(2, 40)}
    bels = _bels(spread_placement(_netlist(cells), factor=1.3)[0])
    columns = [parse_slice_bel(bels[f"t{x}"])[0] for x in range(2, 40)]
    assert columns == sorted(set(columns))                 # order kept, no two tiles on one column


def test_bad_placements_and_arguments_are_refused():
    wrong_way = {
        "c0": _cell("TRELLIS_COMB", "X5/Y8/SLICED.K1", FCO=[20]),
        "c1": _cell("TRELLIS_COMB", "X5/Y9/SLICEA.K0", FCI=[20]),
    }
    with pytest.raises(SpreadError, match="carry chain from tile X5/Y8 to X5/Y9"):
        spread_placement(_netlist(wrong_way), factor=2)
    wide = {"t": _cell("TRELLIS_COMB", "X60/Y3/SLICEA.K0", F=[1])}
    with pytest.raises(SpreadError, match="row Y3: no room for the tile of column 60"):
        spread_placement(_netlist(wide), factor=3)
    with pytest.raises(SpreadError, match="no placed logic cells"):
        spread_placement(_netlist({"io": _cell("TRELLIS_IO", "X0/Y47/PIOA", I=[1])}), factor=2)
    with pytest.raises(ValueError, match="factor must be at least 1"):
        spread_placement(_netlist(wide), factor=0.5)


def test_pin_cells_copies_logic_placements_onto_the_synthesized_netlist():
    from hwvirt.fpga.spread import pin_cells
    placed = _netlist({
        "lut": _cell("TRELLIS_COMB", "X5/Y5/SLICEA.K0", F=[1]),
        "ff": _cell("TRELLIS_FF", "X5/Y5/SLICEA.FF0", DI=[1]),
        "adder$CCU2_COMB0": _cell("TRELLIS_COMB", "X6/Y5/SLICEA.K0", FCO=[2]),
        "ram": _cell("DP16KD", "X4/Y22/DP16KD"),
        "placer_only": _cell("TRELLIS_COMB", "X7/Y5/SLICEB.K0", F=[3]),
    })
    placed["modules"]["top"]["cells"]["adder$CCU2_COMB0"]["parameters"]["MODE"] = "CCU2"
    synthesized = _netlist({
        "lut": {"type": "LUT4", "attributes": {}, "connections": {}},
        "ff": {"type": "TRELLIS_FF", "attributes": {"src": "x.py:1"}, "connections": {}},
        "adder": {"type": "CCU2C", "attributes": {}, "connections": {}},
        "ram": {"type": "DP16KD", "attributes": {}, "connections": {}},
    })
    before = json.dumps(synthesized)
    pinned, count = pin_cells(synthesized, placed)
    assert json.dumps(synthesized) == before
    cells = pinned["modules"]["top"]["cells"]
    assert count == 2
    assert cells["lut"]["attributes"] == {"BEL": "X5/Y5/SLICEA.K0"}
    assert cells["ff"]["attributes"] == {"src": "x.py:1", "BEL": "X5/Y5/SLICEA.FF0"}
    assert "BEL" not in cells["adder"]["attributes"] and "BEL" not in cells["ram"]["attributes"]
