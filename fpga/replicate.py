"""Split a pinned ECP5 netlist's high-fanout register outputs: a copy of the flip-flop per group of
nearby loads.

One flip-flop cannot reach hundreds of loads spread over the die in a clock cycle: the unit's
strobes that load whole areas of architectural state drive 1000–1800 pins, and on a spread placement
such a net takes 10–16 ns to its last load (``fpga/README.md``). Register duplication, as commercial
FPGA tools do it: the net's loads are split into groups of at most ``max_fanout`` pins that lie
close together (by the placement :mod:`.spread` pinned), the group in the flip-flop's tile (or
nearest to it) keeps it, and each other group gets a copy — a ``TRELLIS_FF`` with the same D, clock,
enable, set/reset and parameters, with a copy of the LUT that drives its D (so that the pair shares
a slice, as nextpnr expects) — pinned to the nearest free slice. A copy computes what the original
does in every cycle (same inputs, same initial state), so the design's behaviour does not change.

What keeps the pinned placement legal for nextpnr:

* loads in one tile stay together (the flip-flops of a tile share their clock and set/reset nets,
  those of a slice their enable);
* a flip-flop's D input is never moved to a copy (it comes from the LUT of its slice);
* a copy goes into an empty logic tile (:class:`_FreeSlices`), beside other copies with its
  control set only.

The copies load their own inputs: the D net (through the LUT copy, that LUT's inputs) gains a pin
per copy. The pass runs again on what the copies add (``rounds``): a register that now drives many
copies is split too, a fan-out tree of registers.

Only flip-flop outputs are split, and only those of flip-flops whose D comes from registers directly
or through one LUT: a copy sits among its loads, far from where its D is computed, so a deep D would
gain the distance the split takes off the output (measured: the unit's host-state strobe, D behind
six LUTs, had copies whose D arrived over a 16.2 ns route; 40.3 MHz instead of 42.8 MHz on the same
placement). Nets that leave the top module (ports) or reach clock pins are not split.
LUT outputs are not: a first version copied LUTs too, and its builds stopped in router2 ("Failed
to route arc 0.0 of net ..._DI ... to DI1_SLICE") — which turned out to be the LUT/flip-flop
pairing that :func:`hwvirt.fpga.spread.unpin_shared_d` now takes care of, not the copies; LUT
copies were not tried again.

The build runs this on the pinned netlist, after the global buffers are inserted (:mod:`.globals`
has moved the widest enables' CE/LSR pins off their nets by then), for the flip-flops the HDL marks
(:data:`MARK`, ``--marked-fanout N``, on by default) or, with ``--max-fanout N``, for every
flip-flop. Every flip-flop is off by default: on the unit's seed-1 placement (f43d0bf's HDL) it made
86 copies of 25 registers and the routed clock fell from 45.2 to 36.4 MHz. Most loads of those
registers are LUT inputs (data-mux selects), so a copy sits among LUTs whose outputs go on
elsewhere, and the path through them grew (a copy of ``arch_load_next`` → 10.7 ns → a CE decode →
8.5 ns); the SoC's path did not involve them (43.2 → 44.2 MHz). The marked ones are registers the
HDL made for copying: a D that is another register, set early enough (the unit's state-load
selects, its gather rows' capture enables).

Usage::

    python -m hwvirt.fpga.replicate pinned.json replicated.json [--max-fanout 48] [--marked-only]
"""

import argparse
import json
import math
import re
import sys
from collections import namedtuple

from ..hdl.vmcs_unit import FANOUT_COPIES
from .logic_depth import net_names
from .spread import FIRST_COLUMN, LAST_COLUMN, parse_slice_bel
from .wirelength import _top_module


__all__ = ["DEFAULT_MAX_FANOUT", "MARK", "Replication", "replicate_drivers", "marked_bits", "group_loads",
           "main"]

#: Loads a net keeps at most, by default (the build's ``--max-fanout`` and ``--marked-fanout``).
DEFAULT_MAX_FANOUT = 48
#: The attribute with which the HDL marks a register to be copied per group of loads (an Amaranth
#: ``Signal(attrs={MARK: 1})``; Yosys keeps it on the register's output net). Such a register's D is
#: another register, so that a copy far from where D is made costs no logic. Defined with the HDL
#: that uses it (:data:`hwvirt.hdl.vmcs_unit.FANOUT_COPIES`).
MARK = FANOUT_COPIES

Replication = namedtuple("Replication", "net driver loads copies")

#: Cells whose output settles after their inputs within the cycle (a D behind one is deep).
_COMBINATIONAL = {"LUT4", "CCU2C", "PFUMX", "L6MUX21", "TRELLIS_DPR16X4"}
_LOCATION = re.compile(r"^X(\d+)/Y(\d+)/")
#: Pins of the dedicated clock network: a net that reaches one is not split.
_CLOCK_PINS = {"CLK", "CLKA", "CLKB", "WCK", "CLKI"}


def _location(cell):
    match = _LOCATION.match(cell.get("attributes", {}).get("BEL", ""))
    return None if match is None else (int(match[1]), int(match[2]))


def group_loads(loads, max_fanout):
    """Split ``loads`` — a list of ``(location, load)``, ``location`` an ``(x, y)`` tile or ``None``
    — into groups of at most ``max_fanout``: the located loads by recursive bisection of their
    bounding box (across its longer side, the halves weighted in proportion to the groups each gets),
    the unlocated ones in their given order after them. Loads in the same tile stay in one group
    (the flip-flops of a slice share their CE and LSR nets), so a tile with more than
    ``max_fanout`` loads of the net makes a larger group."""
    if max_fanout < 1:
        raise ValueError(f"max_fanout must be at least 1, not {max_fanout!r}")
    tiles = {}
    for location, load in loads:
        if location is not None:
            tiles.setdefault(location, []).append(load)
    unlocated = [item for item in loads if item[0] is None]
    groups = []
    work = [list(tiles.items())] if tiles else []
    while work:
        items = work.pop()
        total = sum(len(group) for _, group in items)
        if total <= max_fanout or len(items) == 1:
            groups.append([(location, load) for location, group in items for load in group])
            continue
        xs = [location[0] for location, _ in items]
        ys = [location[1] for location, _ in items]
        axis = 0 if max(xs) - min(xs) >= max(ys) - min(ys) else 1
        items.sort(key=lambda item: (item[0][axis], item[0][1 - axis]))
        count = math.ceil(total / max_fanout)
        target = total * (count // 2) / count
        cut, weight = 0, 0
        while cut < len(items) - 1 and weight + len(items[cut][1]) - target <= target - weight:
            weight += len(items[cut][1])           # the next tile takes the weight nearer the target
            cut += 1
        cut = max(cut, 1)
        work += [items[cut:], items[:cut]]
    groups += [unlocated[i:i + max_fanout] for i in range(0, len(unlocated), max_fanout)]
    return groups




def _control_set(cell):
    """What the flip-flops of one ECP5 logic tile must share (nextpnr's ``slicesCompatible``): the
    clock and set/reset nets and their multiplexer and mode settings."""
    connections, parameters = cell["connections"], cell.get("parameters", {})
    return (tuple(connections.get("CLK", ())), tuple(connections.get("LSR", ())),
            parameters.get("CLKMUX", "CLK"), parameters.get("LSRMUX", "LSR"),
            parameters.get("SRMODE", "LSR_OVER_CE"), parameters.get("GSR", "ENABLED"))


class _FreeSlices:
    """The slices of the empty logic tiles of a pinned netlist's rows, nearest first.

    The copies go into tiles of their own, not beside pinned cells, and share a tile only with copies
    of their control set (:func:`_control_set`). Logic rows are those with a pinned slice; their
    columns :data:`~hwvirt.fpga.spread.FIRST_COLUMN`–:data:`~hwvirt.fpga.spread.LAST_COLUMN` are
    logic tiles (the spread placement moves tiles anywhere along them)."""

    def __init__(self, cells, first_column, last_column):
        occupied = set()
        for cell in cells.values():
            slice_bel = parse_slice_bel(cell.get("attributes", {}).get("BEL", ""))
            if slice_bel is not None:
                occupied.add(slice_bel[:2])
        self._control = {}
        self._free = {}
        for y in sorted({y for _, y in occupied}):
            for x in range(first_column, last_column + 1):
                if (x, y) not in occupied:
                    self._free[(x, y)] = list("ABCD")

    def take(self, x, y, control):
        """The free slice nearest to tile ``(x, y)`` (Manhattan distance), as ``"X../Y../SLICEn"``,
        in a tile whose flip-flops have the control set ``control`` or that has none yet, marked
        used; ``None`` when there is none."""
        x, y = round(x), round(y)
        for radius in range(0, 400):
            for dy in range(-radius, radius + 1):
                dx = radius - abs(dy)
                for tile in {(x + dx, y + dy), (x - dx, y + dy)}:
                    slices = self._free.get(tile)
                    if not slices or self._control.get(tile, control) != control:
                        continue
                    slice_ = slices.pop(0)
                    if not slices:
                        del self._free[tile]
                    self._control[tile] = control
                    return f"X{tile[0]}/Y{tile[1]}/SLICE{slice_}"
        return None


def _pins(module):
    """{net bit: [(cell name, port, index)]} of every cell input, and {net bit: (cell, port)} of the
    outputs."""
    loads, drivers = {}, {}
    for name, cell in module["cells"].items():
        directions = cell.get("port_directions", {})
        for port, bits in cell["connections"].items():
            for index, bit in enumerate(bits):
                if not isinstance(bit, int):
                    continue
                if directions.get(port) == "output":
                    drivers[bit] = (name, port)
                else:
                    loads.setdefault(bit, []).append((name, port, index))
    return loads, drivers


def marked_bits(module):
    """The net bits of a Yosys JSON ``module`` that have a name carrying the :data:`MARK` attribute
    (set to a non-zero value)."""
    bits = set()
    for info in module["netnames"].values():
        value = info.get("attributes", {}).get(MARK)
        if value is not None and str(value).strip("0 ") != "":
            bits.update(bit for bit in info["bits"] if isinstance(bit, int))
    return bits


def replicate_drivers(netlist, *, max_fanout=DEFAULT_MAX_FANOUT, rounds=3, first_column=FIRST_COLUMN,
                      last_column=LAST_COLUMN, marked_only=False):
    """A copy of ``netlist`` (Yosys JSON, a dict, as pinned by :mod:`.spread`) in which every net of
    more than ``max_fanout`` loads driven by a flip-flop (with ``marked_only``, only the nets the HDL
    marked with :data:`MARK`, see :func:`marked_bits`) is split by :func:`group_loads` (its loads
    other than flip-flop D inputs, which stay), each group after the first (the one in the
    flip-flop's tile or nearest to it) driven by a new copy of the flip-flop (with a copy of the LUT
    that drives its D), pinned to the free slice nearest its group (:class:`_FreeSlices`, in the
    rows the netlist uses between ``first_column`` and ``last_column``); and
    the list of :class:`Replication` (net name, driver cell, loads, copies made). Repeated up to
    ``rounds`` times on the nets the copies load. ``netlist`` is not changed."""
    if max_fanout < 1:
        raise ValueError(f"max_fanout must be at least 1, not {max_fanout!r}")
    netlist = json.loads(json.dumps(netlist))
    module = _top_module(netlist)
    cells = module["cells"]
    port_bits = {bit for port in module.get("ports", {}).values() for bit in port["bits"]
                 if isinstance(bit, int)}
    used = [bit for cell in cells.values() for bits in cell["connections"].values() for bit in bits]
    used += [bit for info in module["netnames"].values() for bit in info["bits"]]
    used += list(port_bits)
    next_bit = 1 + max((bit for bit in used if isinstance(bit, int)), default=1)
    names = net_names(module)
    marked = marked_bits(module) if marked_only else None
    replications = []
    copies_of = {}                     # driver cell: copies made so far (for unique names)
    free = _FreeSlices(cells, first_column, last_column)

    def new_net(name):
        nonlocal next_bit
        bit, next_bit = next_bit, next_bit + 1
        module["netnames"][name] = {"hide_name": 0, "bits": [bit], "attributes": {}}
        return bit

    def copy_cell(name, output):
        """A new copy of cell ``name``, not pinned yet, driving a new net from ``output``: (its name,
        the net)."""
        number = copies_of[name] = copies_of.get(name, 0) + 1
        copy_name = f"{name}$copy{number}"
        if copy_name in cells:
            raise ValueError(f"the netlist already has a cell named {copy_name!r}")
        copy = json.loads(json.dumps(cells[name]))
        copy.get("attributes", {}).pop("BEL", None)
        bit = new_net(f"{names.get(cells[name]['connections'][output][0], name)}$copy{number}")
        copy["connections"][output] = [bit]
        cells[copy_name] = copy
        return copy_name, bit

    def shallow(ff):
        """Whether flip-flop ``ff``'s D comes from a register (or a constant or input) directly or
        through one LUT: a copy sits among its loads, far from where D is computed, and a deeper D
        would add that distance to a path that already has its logic."""
        d = cells[ff]["connections"]["DI"][0]
        if d not in drivers or cells[drivers[d][0]]["type"] != "LUT4":
            return True
        lut = cells[drivers[d][0]]
        return all(cells[drivers[b][0]]["type"] not in _COMBINATIONAL
                   for pin in "ABCD" for b in lut["connections"].get(pin, []) if b in drivers)

    for _ in range(rounds):
        loads, drivers = _pins(module)
        made = 0
        for bit in sorted(loads):
            pins = loads[bit]
            if len(pins) <= max_fanout or bit in port_bits or bit not in drivers:
                continue
            if marked is not None and bit not in marked:
                continue
            driver, port = drivers[bit]
            if cells[driver]["type"] != "TRELLIS_FF" or port != "Q" or not shallow(driver):
                continue
            if any(pin in _CLOCK_PINS for _, pin, _ in pins):
                continue
            # A flip-flop's D input stays on the original: nextpnr ties it to the LUT of its slice.
            movable = [load for load in pins if not (cells[load[0]]["type"] == "TRELLIS_FF" and load[1] == "DI")]
            groups = group_loads([(_location(cells[load[0]]), load) for load in movable], max_fanout)
            if len(groups) < 2:
                continue
            home = _location(cells[driver])
            if home is not None:
                def distance(group):
                    # the group in the driver's own tile keeps it, else the nearest
                    located = [loc for loc, _ in group if loc is not None]
                    if not located:
                        return math.inf
                    if home in located:
                        return -1
                    cx = sum(x for x, _ in located) / len(located)
                    cy = sum(y for _, y in located) / len(located)
                    return abs(cx - home[0]) + abs(cy - home[1])
                groups.sort(key=distance)
            # where a group of unlocated loads goes: the middle of all located loads, else the driver
            everywhere = [loc for group in groups for loc, _ in group if loc is not None] or [home]
            for group in groups[1:]:
                copy, copy_bit = copy_cell(driver, port)
                lut = None
                d = cells[copy]["connections"]["DI"][0]
                if d in drivers and cells[drivers[d][0]]["type"] == "LUT4":
                    # the flip-flop's LUT is copied with it, so that the pair can share a slice
                    lut, lut_bit = copy_cell(drivers[d][0], "Z")
                    cells[copy]["connections"]["DI"] = [lut_bit]
                located = [loc for loc, _ in group if loc is not None] or everywhere
                if located[0] is not None:
                    site = free.take(sum(x for x, _ in located) / len(located),
                                     sum(y for _, y in located) / len(located), _control_set(cells[copy]))
                    if site is not None:
                        cells[copy]["attributes"]["BEL"] = f"{site}.FF0"
                        if lut is not None:
                            cells[lut]["attributes"]["BEL"] = f"{site}.K0"
                for _, (load, pin, index) in group:
                    cells[load]["connections"][pin][index] = copy_bit
            made += len(groups) - 1
            replications.append(Replication(names.get(bit, f"net{bit}"), driver, len(pins), len(groups) - 1))
        if not made:
            break
    return netlist, replications


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("netlist", help="Yosys JSON netlist, pinned (hwvirt.fpga.spread --pin)")
    parser.add_argument("output", help="where to write the netlist with the copies")
    parser.add_argument("--max-fanout", type=int, default=DEFAULT_MAX_FANOUT, help="loads a net keeps at most")
    parser.add_argument("--marked-only", action="store_true",
                        help=f"split only the registers the HDL marked (the {MARK!r} attribute)")
    args = parser.parse_args(argv)
    if args.max_fanout < 1:
        parser.error(f"--max-fanout must be at least 1, not {args.max_fanout}")
    with open(args.netlist) as f:
        netlist = json.load(f)
    replicated, replications = replicate_drivers(netlist, max_fanout=args.max_fanout,
                                                 marked_only=args.marked_only)
    with open(args.output, "w") as f:
        json.dump(replicated, f)
    for r in replications:
        print(f"{r.loads:6d} loads  {r.copies:3d} copies  {r.driver}  ({r.net})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
