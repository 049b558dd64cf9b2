"""Where a placed ECP5 design's wire goes: half-perimeter wirelength per block.

A design that does not route is short of wire somewhere. nextpnr's router2 heat maps say *where on
the die* the overuse is, not *whose nets* cause it. This reads the placed netlist nextpnr writes
(``--write``; ``python -m hwvirt.fpga.build --place-only`` keeps it as ``<name>_placed.json``) and
gives every net its half-perimeter wirelength (HPWL: the width plus the height, in tiles, of the box
around its driver and sinks), summed per block: the net's name up to ``depth`` dotted components,
with the cell suffixes synthesis adds (``_LUT4_Z…``, ``_TRELLIS_FF_Q…``, ``$…``) and a bit index
(``[3]``) removed. Nets that
reach only clock pins (the global clock network, not general routing) are left out.

Usage::

    python -m hwvirt.fpga.wirelength build/fpga/ulx3s-85f-unit/hwvirt_unit_placed.json [--depth 2]
                                     [--top 30]
"""

import argparse
import json
import re
import sys
from collections import namedtuple

from .logic_depth import net_names


__all__ = ["Group", "net_boxes", "wirelength_by_group", "main"]

#: Cell pins on the dedicated clock network.
CLOCK_PINS = {"CLK", "CLKA", "CLKB", "WCK", "CLKI", "CLKO"}

Group = namedtuple("Group", "name hpwl nets")

_BEL = re.compile(r"X(\d+)/Y(\d+)/")
_BIT_INDEX = re.compile(r"\[\d+\]$")
_CELL_SUFFIX = re.compile(r"_(LUT4|TRELLIS|PFUMX|L6MUX|CCU2C|DP16KD|DPR16X4|CCU2)\w*$")


def _top_module(netlist):
    modules = netlist["modules"]
    for module in modules.values():
        if module.get("attributes", {}).get("top"):
            return module
    if len(modules) == 1:
        return next(iter(modules.values()))
    raise ValueError("the netlist has several modules and none is marked top")


def net_boxes(netlist):
    """{net bit: (HPWL in tiles, number of pins)} of every placed net with two pins or more."""
    module = _top_module(netlist)
    pins = {}
    clock_only = {}
    for name, cell in module["cells"].items():
        bel = cell.get("attributes", {}).get("NEXTPNR_BEL")
        if not bel:
            continue
        match = _BEL.match(bel)
        if match is None:
            raise ValueError(f"cell {name!r}: cannot read a location from NEXTPNR_BEL {bel!r}")
        xy = (int(match.group(1)), int(match.group(2)))
        for port, bits in cell["connections"].items():
            for bit in bits:
                if isinstance(bit, int):
                    pins.setdefault(bit, []).append(xy)
                    clock_only[bit] = clock_only.get(bit, True) and port in CLOCK_PINS
    boxes = {}
    for bit, points in pins.items():
        if len(points) < 2 or clock_only[bit]:
            continue
        xs = [x for x, _ in points]
        ys = [y for _, y in points]
        boxes[bit] = (max(xs) - min(xs) + max(ys) - min(ys), len(points))
    return boxes


def _block(name, depth):
    name = _CELL_SUFFIX.sub("", _BIT_INDEX.sub("", name.split("$")[0]))
    return ".".join(name.split(".")[:depth])


def wirelength_by_group(netlist, *, depth=2):
    """:class:`Group` per block, the most wirelength first (see the module docstring)."""
    names = net_names(_top_module(netlist))
    totals = {}
    for bit, (hpwl, _) in net_boxes(netlist).items():
        group = _block(names.get(bit, "?"), depth)
        total, count = totals.get(group, (0, 0))
        totals[group] = (total + hpwl, count + 1)
    groups = [Group(name, hpwl, nets) for name, (hpwl, nets) in totals.items()]
    return sorted(groups, key=lambda g: (-g.hpwl, g.name))


def main(argv=None):
    parser = argparse.ArgumentParser(description="Half-perimeter wirelength per block of a placed "
                                                 "nextpnr ECP5 netlist.")
    parser.add_argument("placed", help="the JSON netlist nextpnr wrote with --write")
    parser.add_argument("--depth", type=int, default=2, help="dotted name components per block")
    parser.add_argument("--top", type=int, default=30, help="blocks to list")
    args = parser.parse_args(argv)
    with open(args.placed) as f:
        netlist = json.load(f)
    groups = wirelength_by_group(netlist, depth=args.depth)
    total = sum(g.hpwl for g in groups)
    print(f"total HPWL {total} tiles over {sum(g.nets for g in groups)} nets")
    for g in groups[:args.top]:
        share = 100 * g.hpwl / total if total else 0
        print(f"{g.hpwl:9d} {share:5.1f} % {g.nets:7d} nets {g.hpwl / g.nets:6.1f} avg  {g.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
