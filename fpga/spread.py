"""Spread a placed ECP5 netlist across the die, tile by tile, before routing.

nextpnr's HeAP placer packs a design into as small a region as legalisation allows (the unit and the
SoC fill about 40 % of the LFE5U-85F's columns at ~75 % local use), and ``--placer-heap-beta`` does
not loosen it (see ``fpga/README.md``). Such a placement of the VMX unit needs more wire than that
region has, and router2 does not converge. This module moves whole logic tiles (PLC: four slices,
their LUTs and flip-flops) further apart along each row, so the same relative placement covers more
of the die and each tile's neighbourhood offers more routing.

What a move keeps legal: a tile's contents move together, so everything that must share a tile
(a slice's control set, LUT/flip-flop pairs) stays shared; rows
do not change, so block RAM, DSP and I/O sites (not moved) keep their places; tiles joined by a carry
chain (``FCO`` → ``FCI`` into the next tile to the right) move as one run and stay adjacent.

The spread placement is handed back to nextpnr as placement constraints: :func:`pin_cells` puts
a ``BEL`` attribute on each logic LUT and flip-flop of the *synthesized* netlist, and nextpnr's
placer binds them there and places the rest (carry chains, LUT RAM, block RAM, I/O) around them.
(Loading nextpnr's own placed netlist back with ``--json`` would skip the placer, but nextpnr 0.11
cannot route such a reloaded design: its carry chains' and wide muxes' in-slice nets clash,
"Wire ... FCI..._SLICE is used as source and sink in different nets".)

Usage::

    python -m hwvirt.fpga.spread placed.json pinned.json --factor 2.2 --pin synthesized.json
"""

import json
import math
import re
from dataclasses import dataclass

from .wirelength import _top_module

__all__ = ["SpreadError", "SpreadReport", "parse_slice_bel", "spread_placement", "pin_cells"]

_SLICE_BEL = re.compile(r"^X(\d+)/Y(\d+)/(SLICE[A-D]\..+)$")

#: The first and last logic column of the LFE5U-85F (126 × 95 tiles; columns 0 and 125 hold I/O).
FIRST_COLUMN, LAST_COLUMN = 2, 123


class SpreadError(Exception):
    """The placement cannot be spread as asked (a broken carry chain, or no room in a row)."""


@dataclass
class SpreadReport:
    tiles: int            # logic tiles moved
    runs: int             # carry-chain runs kept together (of two tiles or more)
    columns_before: tuple # (first, last) logic column used
    columns_after: tuple


def parse_slice_bel(name):
    """``"X12/Y34/SLICEB.K1"`` → ``(12, 34, "SLICEB.K1")``; ``None`` for other BELs."""
    match = _SLICE_BEL.match(name)
    if match is None:
        return None
    return int(match[1]), int(match[2]), match[3]


def _tile_of_cells(module):
    tiles = {}
    for name, cell in module["cells"].items():
        parsed = parse_slice_bel(cell.get("attributes", {}).get("NEXTPNR_BEL", ""))
        if parsed is not None:
            tiles[name] = parsed[:2]
    return tiles


def _carry_links(module, tile_of):
    """Pairs of tiles joined by a carry chain: ``{(x, y): x + 1}``; raises for any other cross-tile
    carry connection."""
    drivers, sinks = {}, {}
    for name, cell in module["cells"].items():
        for port, bits in cell["connections"].items():
            if port.startswith("FCO"):
                for bit in bits:
                    drivers[bit] = name
            elif port.startswith("FCI"):
                for bit in bits:
                    sinks.setdefault(bit, []).append(name)
    links = {}
    for bit, driver in drivers.items():
        for sink in sinks.get(bit, ()):
            if driver not in tile_of or sink not in tile_of:
                continue
            (x0, y0), (x1, y1) = tile_of[driver], tile_of[sink]
            if (x0, y0) == (x1, y1):
                continue
            if y1 != y0 or x1 != x0 + 1:
                raise SpreadError(f"carry chain from tile X{x0}/Y{y0} to X{x1}/Y{y1}: "
                                  f"not the next tile to the right")
            links[(x0, y0)] = x1
    return links


def spread_placement(netlist, *, factor, first_column=FIRST_COLUMN, last_column=LAST_COLUMN):
    """Spread the logic tiles of a placed netlist (nextpnr JSON, as a dict) along their rows.

    Each row's tiles keep their order; a tile at column *x* goes to ``first + round((x - first) ×
    factor)`` (rounded half up) or the first free column after the tile before it, carry-chain runs as one block.
    Returns ``(netlist, SpreadReport)``; the input is not changed.
    """
    if factor < 1:
        raise ValueError(f"factor must be at least 1, not {factor!r}")
    netlist = json.loads(json.dumps(netlist))
    module = _top_module(netlist)
    tile_of = _tile_of_cells(module)
    if not tile_of:
        raise SpreadError("the netlist has no placed logic cells (is it nextpnr's placed JSON?)")
    links = _carry_links(module, tile_of)
    used = sorted(set(tile_of.values()))
    linked_to = {(x1, y) for (x0, y), x1 in links.items()}      # tiles a run continues into

    rows = {}
    for x, y in used:
        rows.setdefault(y, []).append(x)
    new_x = {}
    runs = 0
    for y, xs in rows.items():
        xs.sort()
        next_free = first_column
        for x in xs:
            if (x, y) in linked_to:
                continue                           # placed with the start of its run
            run = [x]
            while (run[-1], y) in links:
                run.append(links[(run[-1], y)])
            if len(run) > 1:
                runs += 1
            start = max(first_column + math.floor((x - first_column) * factor + 0.5), next_free)
            if start + len(run) - 1 > last_column:
                raise SpreadError(f"row Y{y}: no room for the tile of column {x} at factor {factor} "
                                  f"(it would end at column {start + len(run) - 1} > {last_column})")
            for offset, old in enumerate(run):
                new_x[(old, y)] = start + offset
            next_free = start + len(run)
    for name, (x, y) in tile_of.items():
        attrs = module["cells"][name]["attributes"]
        _, _, site = parse_slice_bel(attrs["NEXTPNR_BEL"])
        attrs["NEXTPNR_BEL"] = f"X{new_x[(x, y)]}/Y{y}/{site}"
    xs_before = [x for x, _ in used]
    xs_after = list(new_x.values())
    return netlist, SpreadReport(len(used), runs, (min(xs_before), max(xs_before)),
                                 (min(xs_after), max(xs_after)))


def pin_cells(synthesized, placed):
    """Copy the placement of ``placed`` (nextpnr JSON) onto ``synthesized`` (Yosys's JSON, which
    nextpnr reads) as ``BEL`` attributes: every logic LUT (a ``LUT4`` placed as a ``TRELLIS_COMB`` in
    ``LOGIC`` mode) and every flip-flop, matched by cell name. Carry, LUT-RAM and other cells are not
    pinned. Returns ``(netlist, pinned count)``; the input is not changed."""
    synthesized = json.loads(json.dumps(synthesized))
    cells = _top_module(synthesized)["cells"]
    pinned = 0
    for name, cell in _top_module(placed)["cells"].items():
        logic = (cell["type"] == "TRELLIS_FF" or
                 cell["type"] == "TRELLIS_COMB" and cell["parameters"].get("MODE", "LOGIC") == "LOGIC")
        target = cells.get(name)
        if not logic or target is None or target["type"] not in ("LUT4", "TRELLIS_FF"):
            continue
        target.setdefault("attributes", {})["BEL"] = cell["attributes"]["NEXTPNR_BEL"]
        pinned += 1
    return synthesized, pinned


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(description="Spread a placed ECP5 netlist's logic tiles along their rows.")
    parser.add_argument("placed")
    parser.add_argument("output")
    parser.add_argument("--factor", type=float, required=True)
    parser.add_argument("--first-column", type=int, default=FIRST_COLUMN)
    parser.add_argument("--last-column", type=int, default=LAST_COLUMN)
    parser.add_argument("--pin", metavar="SYNTHESIZED",
                        help="write SYNTHESIZED (Yosys's JSON) with BEL attributes from the spread "
                             "placement to OUTPUT instead of the spread placement itself")
    args = parser.parse_args(argv)
    with open(args.placed) as f:
        netlist = json.load(f)
    spread, report = spread_placement(netlist, factor=args.factor, first_column=args.first_column,
                                      last_column=args.last_column)
    print(f"{report.tiles} logic tiles, {report.runs} carry runs; columns {report.columns_before} → "
          f"{report.columns_after}")
    if args.pin:
        with open(args.pin) as f:
            spread, pinned = pin_cells(json.load(f), spread)
        print(f"{pinned} cells pinned")
    with open(args.output, "w") as f:
        json.dump(spread, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
