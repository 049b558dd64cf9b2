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
        "ram":   _cell("DP16KD", "X13/Y22/EBR0", DIA0=[11]),
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
    assert bels["io"] == "X0/Y47/PIOA"
    # the block RAM's column 13 would go to 2 + 11×3 = 35, which is the site EBR2 of the group at 31
    assert bels["ram"] == "X35/Y22/EBR2"
    assert (report.tiles, report.runs, report.columns_before, report.columns_after) == (4, 0, (2, 7), (2, 17))
    assert report.block_rams == 1


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


def test_block_rams_go_to_the_free_site_nearest_their_spread_column():
    from hwvirt.fpga.spread import BLOCK_RAM_SITES
    # The LFE5U-85F's 208 DP16KD: 52 in each of the four block-RAM rows less the two clock
    # multiplexer tiles of rows 22 and 70.
    assert sorted((y, len(s)) for y, s in BLOCK_RAM_SITES.items()) == [(22, 51), (46, 52), (70, 51), (82, 52)]
    assert BLOCK_RAM_SITES[46][:5] == [(4, "EBR0"), (6, "EBR1"), (8, "EBR2"), (10, "EBR3"), (13, "EBR0")]
    assert (69, "EBR0") in BLOCK_RAM_SITES[46] and (69, "EBR0") not in BLOCK_RAM_SITES[22]
    cells = {
        "t": _cell("TRELLIS_COMB", "X2/Y5/SLICEA.K0", F=[1]),
        # column 13 → 2 + 11×2 = 24 (EBR1 of the group at 22); 15 → 28 (EBR3 of that group)
        "r13": _cell("DP16KD", "X13/Y46/EBR0"), "r15": _cell("DP16KD", "X15/Y46/EBR1"),
        # row 82: 14 → 26 (a site); 16 → 30 (no site; 31 is nearest); 17 → 32, whose nearest
        # free site is then 33
        "s14": _cell("DP16KD", "X14/Y82/EBR0"), "s16": _cell("DP16KD", "X16/Y82/EBR0"),
        "s17": _cell("DP16KD", "X17/Y82/EBR0"),
        # row 70: 17 → 32 with 31 and 33 both free and as near: the lower is taken
        "u17": _cell("DP16KD", "X17/Y70/EBR2"),
    }
    spread, report = spread_placement(_netlist(cells), factor=2)
    bels = _bels(spread)
    assert bels["r13"] == "X24/Y46/EBR1" and bels["r15"] == "X28/Y46/EBR3"
    assert (bels["s14"], bels["s16"], bels["s17"]) == ("X26/Y82/EBR2", "X31/Y82/EBR0", "X33/Y82/EBR1")
    assert bels["u17"] == "X31/Y70/EBR0"
    assert report.block_rams == 6
    # With factor 1 every block RAM on a site keeps it.
    on_sites = {name: cells[name] for name in ("t", "r13", "r15", "u17")}
    assert _bels(spread_placement(_netlist(on_sites), factor=1)[0]) == _bels(_netlist(on_sites))


def test_block_rams_without_room_are_refused():
    logic = {"t": _cell("TRELLIS_COMB", "X2/Y5/SLICEA.K0", F=[1])}
    with pytest.raises(SpreadError, match="block RAM in row Y23, which has no block-RAM sites"):
        spread_placement(_netlist({**logic, "r": _cell("DP16KD", "X13/Y23/EBR0")}), factor=2)
    rams = {f"r{i}": _cell("DP16KD", f"X{4 + 2 * i}/Y46/EBR{i}") for i in range(3)}
    with pytest.raises(SpreadError, match="row Y46: 3 block RAMs for 2 sites"):
        spread_placement(_netlist({**logic, **rams}), factor=2,
                         block_ram_sites={46: [(4, "EBR0"), (6, "EBR1")]})


def test_pin_cells_copies_logic_placements_onto_the_synthesized_netlist():
    from hwvirt.fpga.spread import pin_cells
    placed = _netlist({
        "lut": _cell("TRELLIS_COMB", "X5/Y5/SLICEA.K0", F=[1]),
        "ff": _cell("TRELLIS_FF", "X5/Y5/SLICEA.FF0", DI=[1]),
        "adder$CCU2_COMB0": _cell("TRELLIS_COMB", "X6/Y5/SLICEA.K0", FCO=[2]),
        "ram": _cell("DP16KD", "X4/Y22/EBR0"),
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
    assert count == 3
    assert cells["lut"]["attributes"] == {"BEL": "X5/Y5/SLICEA.K0"}
    assert cells["ff"]["attributes"] == {"src": "x.py:1", "BEL": "X5/Y5/SLICEA.FF0"}
    assert cells["ram"]["attributes"] == {"BEL": "X4/Y22/EBR0"}
    assert "BEL" not in cells["adder"]["attributes"]


def test_flip_flops_sharing_a_d_lut_are_left_unpinned():
    """nextpnr may pair another of them with the LUT than the placement did (pinned apart, their
    route from the LUT cannot exist): they and the LUT are placed again."""
    from hwvirt.fpga.spread import pin_cells
    placed = _netlist({
        "lut": _cell("TRELLIS_COMB", "X5/Y5/SLICEA.K0", F=[1]),
        "ff_a": _cell("TRELLIS_FF", "X5/Y5/SLICEA.FF0", DI=[1]),
        "ff_b": _cell("TRELLIS_FF", "X6/Y5/SLICEB.FF1", DI=[1]),
        "own_lut": _cell("TRELLIS_COMB", "X7/Y5/SLICEA.K0", F=[2]),
        "ff_c": _cell("TRELLIS_FF", "X7/Y5/SLICEA.FF0", DI=[2]),
        "ff_d": _cell("TRELLIS_FF", "X8/Y5/SLICEA.FF0", DI=[3]),
        "ff_e": _cell("TRELLIS_FF", "X9/Y5/SLICEA.FF0", DI=[3]),
    })

    def ff(d):
        return {"type": "TRELLIS_FF", "attributes": {}, "connections": {"DI": [d]}}
    synthesized = _netlist({
        "lut": {"type": "LUT4", "attributes": {}, "connections": {"Z": [1]}},
        "own_lut": {"type": "LUT4", "attributes": {}, "connections": {"Z": [2]}},
        "ff_a": ff(1), "ff_b": ff(1), "ff_c": ff(2), "ff_d": ff(3), "ff_e": ff(3),   # net 3: a register's
    })
    pinned, count = pin_cells(synthesized, placed)
    bels = {name: cell["attributes"].get("BEL") for name, cell in pinned["modules"]["top"]["cells"].items()}
    assert bels == {"lut": None, "own_lut": "X7/Y5/SLICEA.K0", "ff_a": None, "ff_b": None,
                    "ff_c": "X7/Y5/SLICEA.FF0", "ff_d": "X8/Y5/SLICEA.FF0", "ff_e": "X9/Y5/SLICEA.FF0"}
    assert count == 4


def test_spread_and_pin_summarizes_both_steps():
    from hwvirt.fpga.spread import spread_and_pin
    placed = _netlist({"lut": _cell("TRELLIS_COMB", "X3/Y5/SLICEA.K0", F=[1]),
                       "ram": _cell("DP16KD", "X13/Y22/EBR0")})
    synthesized = _netlist({"lut": {"type": "LUT4", "attributes": {}, "connections": {}},
                            "ram": {"type": "DP16KD", "attributes": {}, "connections": {}}})
    pinned, summary, factor = spread_and_pin(placed, synthesized, factor=2)
    assert summary == ("spread 1 logic tiles (0 carry runs) from columns 3-3 to 4-4 and 1 block RAMs "
                       "(factor 2); 2 cells pinned")
    assert pinned["modules"]["top"]["cells"]["lut"]["attributes"] == {"BEL": "X4/Y5/SLICEA.K0"}
    assert factor == 2
    spread, summary, _ = spread_and_pin(placed, factor=2)
    assert _bels(spread)["ram"] == "X24/Y22/EBR1" and "pinned" not in summary


def test_fill_takes_the_widest_factor_that_fits():
    from hwvirt.fpga.spread import spread_and_pin, spread_factor, widest_spread
    # row 3: tiles at 2..12, so 12 → 123 needs factor 12.1; row 4: a carry run over 10..12, which
    # ends left of where column 12 would go, so it does not lower the factor
    cells = {f"t{x}": _cell("TRELLIS_COMB", f"X{x}/Y3/SLICEA.K0", F=[x]) for x in range(2, 13)}
    cells.update({
        "c0": _cell("TRELLIS_COMB", "X10/Y4/SLICED.K1", FCO=[50]),
        "c1": _cell("TRELLIS_COMB", "X11/Y4/SLICEA.K0", FCI=[50]),
        "c2": _cell("TRELLIS_COMB", "X11/Y4/SLICED.K1", FCO=[51]),
        "c3": _cell("TRELLIS_COMB", "X12/Y4/SLICEA.K0", FCI=[51]),
    })
    spread, report, factor = widest_spread(_netlist(cells))
    assert factor == 12.1 and report.columns_after == (2, 123)
    bels = _bels(spread)
    assert (bels["c0"], bels["c3"]) == ("X99/Y4/SLICED.K1", "X101/Y4/SLICEA.K0")   # 2 + 8 × 12.1
    with pytest.raises(SpreadError, match="no room"):
        spread_placement(_netlist(cells), factor=12.2)
    assert spread_and_pin(_netlist(cells), factor="fill")[2] == 12.1
    capped, report, factor = widest_spread(_netlist(cells), most=2.0)
    assert factor == 2.0 and report.columns_after == (2, 22)                      # 2 + 10 × 2
    assert spread_and_pin(_netlist(cells), factor="fill", most=50)[2] == 12.1    # fill is less
    with pytest.raises(SpreadError, match="reaches column 124, past 123"):
        widest_spread(_netlist({"t": _cell("TRELLIS_COMB", "X124/Y3/SLICEA.K0", F=[1])}))
    assert spread_factor("fill") == "fill" and spread_factor("2.5") == 2.5
    import argparse
    for bad in ("0.5", "wide", "auto", "none"):     # the last two are the build's, not spread's
        with pytest.raises(argparse.ArgumentTypeError):
            spread_factor(bad)


@pytest.mark.parametrize("factor", ["auto", "none", "0.5", "wide"])
def test_spread_cli_refuses_factors_it_cannot_apply(factor, tmp_path, capsys):
    from hwvirt.fpga.spread import main
    placed = tmp_path / "placed.json"
    placed.write_text(json.dumps(_netlist({"t": _cell("TRELLIS_COMB", "X3/Y5/SLICEA.K0", F=[1])})))
    with pytest.raises(SystemExit) as exit_:
        main([str(placed), str(tmp_path / "out.json"), "--factor", factor])
    assert exit_.value.code == 2 and "--factor" in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()


def test_spread_cli_fill_writes_the_spread_placement(tmp_path, capsys):
    from hwvirt.fpga.spread import main
    placed = tmp_path / "placed.json"
    placed.write_text(json.dumps(_netlist({f"t{x}": _cell("TRELLIS_COMB", f"X{x}/Y5/SLICEA.K0", F=[x])
                                           for x in (2, 12)})))
    assert main([str(placed), str(tmp_path / "out.json"), "--factor", "fill"]) == 0
    assert "(factor 12.1)" in capsys.readouterr().out
    assert _bels(json.loads((tmp_path / "out.json").read_text()))["t12"] == "X123/Y5/SLICEA.K0"
