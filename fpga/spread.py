"""Spread a placed ECP5 netlist across the die, tile by tile, before routing.

nextpnr's HeAP placer packs a design into as small a region as legalisation allows (the unit and the
SoC fill about 40 % of the LFE5U-85F's columns at ~75 % local use), and ``--placer-heap-beta`` does
not loosen it (see ``fpga/README.md``). Such a placement of the VMX unit needs more wire than that
region has, and router2 does not converge. This module moves whole logic tiles (PLC: four slices,
their LUTs and flip-flops) further apart along each row, so the same relative placement covers more
of the die and each tile's neighbourhood offers more routing.

What a move keeps legal: a tile's contents move together, so everything that must share a tile
(a slice's control set, LUT/flip-flop pairs) stays shared; rows do not change; tiles joined by a carry
chain (``FCO`` → ``FCI`` into the next tile to the right) move as one run and stay adjacent. Block
RAMs move along their row too, to the free block-RAM site nearest their spread column (so that
they stay beside the logic they feed); DSP and I/O sites keep their places.

The spread placement is handed back to nextpnr as placement constraints: :func:`pin_cells` puts
a ``BEL`` attribute on each logic LUT, flip-flop and block RAM of the *synthesized* netlist, and
nextpnr's placer binds them there and places the rest (carry chains, LUT RAM, I/O) around them.
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

__all__ = ["SpreadError", "SpreadReport", "parse_slice_bel", "spread_placement", "pin_cells", "unpin_shared_d",
           "spread_and_pin", "widest_spread", "spread_factor"]

_SLICE_BEL = re.compile(r"^X(\d+)/Y(\d+)/(SLICE[A-D]\..+)$")
_EBR_BEL = re.compile(r"^X(\d+)/Y(\d+)/EBR([0-3])$")

#: The first and last logic column of the LFE5U-85F (126 × 95 tiles; columns 0 and 125 hold I/O).
FIRST_COLUMN, LAST_COLUMN = 2, 123


def _lfe5u_85f_block_ram_sites():
    """The LFE5U-85F's DP16KD sites, ``{row: [(column, "EBRn"), ...]}`` in column order.

    From Project Trellis's tile grid of the device (the ``MIB_EBR*`` tiles): four block-RAM rows
    (Y 22, 46, 70, 82), each with 13 groups of four sites; a group starting at column *g* has EBR0 at
    *g*, EBR1 at *g* + 2, EBR2 at *g* + 4 and EBR3 at *g* + 6, and the groups start every nine columns
    from 4 to 58 and from 69 to 114 (the clock spine sits between). In rows 22 and 70 the tile at
    column 69 is a clock multiplexer (``EBR_CMUX``) instead of ``MIB_EBR0``, so that site is left out.
    """
    starts = list(range(4, 59, 9)) + list(range(69, 115, 9))
    sites = {}
    for row in (22, 46, 70, 82):
        sites[row] = [(g + 2 * i, f"EBR{i}") for g in starts for i in range(4)
                      if not (row in (22, 70) and g == 69 and i == 0)]
    return sites


#: Block-RAM sites of the LFE5U-85F by row (see :func:`_lfe5u_85f_block_ram_sites`).
BLOCK_RAM_SITES = _lfe5u_85f_block_ram_sites()


class SpreadError(Exception):
    """The placement cannot be spread as asked (a broken carry chain, or no room in a row)."""


@dataclass
class SpreadReport:
    tiles: int            # logic tiles moved
    runs: int             # carry-chain runs kept together (of two tiles or more)
    columns_before: tuple # (first, last) logic column used
    columns_after: tuple
    block_rams: int = 0   # block RAMs moved to the site nearest their spread column


def parse_slice_bel(name):
    """``"X12/Y34/SLICEB.K1"`` → ``(12, 34, "SLICEB.K1")``; ``None`` for other BELs."""
    match = _SLICE_BEL.match(name)
    if match is None:
        return None
    return int(match[1]), int(match[2]), match[3]


def _spread_column(x, factor, first_column):
    """Where column ``x`` goes: ``first + round((x - first) × factor)``, rounded half up."""
    return first_column + math.floor((x - first_column) * factor + 0.5)


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


def spread_placement(netlist, *, factor, first_column=FIRST_COLUMN, last_column=LAST_COLUMN,
                     block_ram_sites=BLOCK_RAM_SITES):
    """Spread the logic tiles of a placed netlist (nextpnr JSON, as a dict) along their rows.

    Each row's tiles keep their order; a tile at column *x* goes to ``first + round((x - first) ×
    factor)`` (rounded half up) or the first free column after the tile before it, carry-chain runs as one block.
    Block RAMs go to the free site of their row (``block_ram_sites``) nearest to where the same rule
    puts their column, so that they stay beside the logic they connect to.
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
            start = max(_spread_column(x, factor, first_column), next_free)
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
    block_rams = _spread_block_rams(module, factor, first_column, block_ram_sites)
    xs_before = [x for x, _ in used]
    xs_after = list(new_x.values())
    return netlist, SpreadReport(len(used), runs, (min(xs_before), max(xs_before)),
                                 (min(xs_after), max(xs_after)), block_rams)


def _spread_block_rams(module, factor, first_column, sites):
    """Move each placed block RAM to the free site of its row nearest to its spread column
    (``first + round((x - first) × factor)``), block RAMs taken in column order. Returns how many
    were moved."""
    rams = {}
    for name, cell in module["cells"].items():
        match = _EBR_BEL.match(cell.get("attributes", {}).get("NEXTPNR_BEL", ""))
        if match is not None:
            rams.setdefault(int(match[2]), []).append((int(match[1]), int(match[3]), name))
    for y, placed in rams.items():
        if y not in sites:
            raise SpreadError(f"a block RAM in row Y{y}, which has no block-RAM sites")
        free = list(sites[y])
        if len(placed) > len(free):
            raise SpreadError(f"row Y{y}: {len(placed)} block RAMs for {len(free)} sites")
        for x, _, name in sorted(placed):
            target = _spread_column(x, factor, first_column)
            site = min(free, key=lambda s: (abs(s[0] - target), s[0]))
            free.remove(site)
            module["cells"][name]["attributes"]["NEXTPNR_BEL"] = f"X{site[0]}/Y{y}/{site[1]}"
    return sum(len(placed) for placed in rams.values())


def pin_cells(synthesized, placed):
    """Copy the placement of ``placed`` (nextpnr JSON) onto ``synthesized`` (Yosys's JSON, which
    nextpnr reads) as ``BEL`` attributes: every logic LUT (a ``LUT4`` placed as a ``TRELLIS_COMB`` in
    ``LOGIC`` mode), every flip-flop and every block RAM, matched by cell name. Carry, LUT-RAM and
    other cells are not pinned. Returns ``(netlist, pinned count)``; the input is not changed.

    Flip-flops whose D comes from a LUT shared with other flip-flops are left unpinned
    (:func:`unpin_shared_d`)."""
    synthesized = json.loads(json.dumps(synthesized))
    cells = _top_module(synthesized)["cells"]
    pinned = 0
    for name, cell in _top_module(placed)["cells"].items():
        logic = (cell["type"] in ("TRELLIS_FF", "DP16KD") or
                 cell["type"] == "TRELLIS_COMB" and cell["parameters"].get("MODE", "LOGIC") == "LOGIC")
        target = cells.get(name)
        if not logic or target is None or target["type"] not in ("LUT4", "TRELLIS_FF", "DP16KD"):
            continue
        target.setdefault("attributes", {})["BEL"] = cell["attributes"]["NEXTPNR_BEL"]
        pinned += 1
    pinned -= unpin_shared_d(_top_module(synthesized))
    return synthesized, pinned


def unpin_shared_d(module):
    """Take the ``BEL`` off (in place) every LUT that drives the D of several flip-flops, and off
    those flip-flops; return how many cells that unpins.

    nextpnr's ECP5 packer pairs a flip-flop with the LUT that drives its D, and of several such
    flip-flops it pairs the first it visits; that pair must share a slice, the others take D over
    general routing. Which one it visits first depends on its internal cell order, which is not the
    same on the pinned netlist as on the one it placed: a pinned pair that nextpnr did not make ends
    in a route that cannot exist ("Failed to route arc ... from X119/Y13/F1_SLICE to
    X119/Y11/DI3_SLICE", the SoC at f43d0bf, seed 1). Left unpinned, the LUT and its flip-flops
    are placed by nextpnr around the pinned cells, with the pair it makes. (With the LUT pinned and
    the flip-flops not, nextpnr 0.11 stops with a WebAssembly exception after placing the pinned
    cells.)"""
    cells = module["cells"]
    users = {}
    for name, cell in cells.items():
        if cell["type"] == "TRELLIS_FF":
            for bit in cell["connections"].get("DI", []):
                users.setdefault(bit, []).append(name)
    luts = {bit: name for name, cell in cells.items() if cell["type"] == "LUT4"
            for bit in cell["connections"].get("Z", [])}
    unpinned = 0
    for bit, names in users.items():
        if bit in luts and len(names) > 1:
            for name in [luts[bit], *names]:
                if cells[name].get("attributes", {}).pop("BEL", None) is not None:
                    unpinned += 1
    return unpinned


def widest_spread(placed, *, most=None, first_column=FIRST_COLUMN, last_column=LAST_COLUMN, **kwargs):
    """:func:`spread_placement` with the largest factor (to 0.01) that fits the die: the one that
    takes the rightmost used column to ``last_column`` at most. (With a factor of 1 or more, tiles
    never push each other and a carry run ends left of where its last column would go, so the
    rightmost column decides.) ``most``, if given, caps the factor. Returns
    ``(netlist, report, factor)``."""
    tiles = _tile_of_cells(_top_module(placed)).values()
    rightmost = max((x for x, _ in tiles), default=first_column)
    if rightmost <= first_column:
        raise SpreadError("the netlist has no placed logic cells right of the first column")
    factor = math.floor(100 * (last_column - first_column) / (rightmost - first_column)) / 100
    if factor < 1:
        raise SpreadError(f"the placement reaches column {rightmost}, past {last_column}")
    if most is not None:
        factor = min(factor, most)
    spread, report = spread_placement(placed, factor=factor, first_column=first_column,
                                      last_column=last_column, **kwargs)
    return spread, report, factor


def spread_and_pin(placed, synthesized=None, *, factor, most=None, **limits):
    """:func:`spread_placement` (or :func:`widest_spread` for ``factor="fill"``, at most ``most``),
    then (if ``synthesized`` is given) :func:`pin_cells` onto it. Returns ``(netlist, one-line
    summary, factor)``: the pinned synthesized netlist (or the spread placement when there is
    nothing to pin onto), and the factor used."""
    if factor == "fill":
        spread, report, factor = widest_spread(placed, most=most, **limits)
    else:
        spread, report = spread_placement(placed, factor=factor, **limits)
    summary = (f"spread {report.tiles} logic tiles ({report.runs} carry runs) from columns "
               f"{report.columns_before[0]}-{report.columns_before[1]} to "
               f"{report.columns_after[0]}-{report.columns_after[1]} and {report.block_rams} block "
               f"RAMs (factor {factor})")
    if synthesized is None:
        return spread, summary, factor
    pinned, count = pin_cells(synthesized, spread)
    return pinned, f"{summary}; {count} cells pinned", factor


def spread_factor(text):
    """A spread factor from the command line: a number of at least 1, or ``"fill"``."""
    import argparse
    if text == "fill":
        return text
    try:
        factor = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'not a number or "fill": {text!r}') from None
    if factor < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text}")
    return factor


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(description="Spread a placed ECP5 netlist's logic tiles along their rows.")
    parser.add_argument("placed")
    parser.add_argument("output")
    parser.add_argument("--factor", type=spread_factor, required=True,
                        help='how far apart (≥ 1), or "fill": the widest that fits the die')
    parser.add_argument("--first-column", type=int, default=FIRST_COLUMN)
    parser.add_argument("--last-column", type=int, default=LAST_COLUMN)
    parser.add_argument("--pin", metavar="SYNTHESIZED",
                        help="write SYNTHESIZED (Yosys's JSON) with BEL attributes from the spread "
                             "placement to OUTPUT instead of the spread placement itself")
    args = parser.parse_args(argv)
    with open(args.placed) as f:
        netlist = json.load(f)
    synthesized = None
    if args.pin:
        with open(args.pin) as f:
            synthesized = json.load(f)
    output, summary, _ = spread_and_pin(netlist, synthesized, factor=args.factor,
                                        first_column=args.first_column, last_column=args.last_column)
    print(summary)
    with open(args.output, "w") as f:
        json.dump(output, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
