"""Put a synthesized ECP5 netlist's widest, latest flip-flop enables on the global clock network.

nextpnr-ecp5 promotes only clock nets to the global network (``promote_globals``). An enable or a
set/reset that reaches hundreds of flip-flops all over the die then goes through general routing,
and on a spread placement such a net takes 7–19 ns to its last flip-flop: the unit's and the SoC's
critical paths ended in one (``fpga/README.md``). A ``DCCA`` (the global buffer) can drive fabric
too: nextpnr routes a DCCA's output on one of the first eight global networks and reaches any
flip-flop's CE or LSR pin from it (``route_logic_tile_global``), in about 2.5 ns anywhere on the die
(measured: 3248 CE pins of a test design, 2.94 ns from the driving flip-flop's clock edge, all
equal).

This inserts a DCCA into ``limit`` of the nets that drive at least ``min_fanout`` CE and LSR pins —
those whose enable would arrive last, by their logic and their width, see :func:`promote_enables` —
in the JSON netlist that ``synth_ecp5`` writes, or in one whose cells :mod:`hwvirt.fpga.spread` has
pinned (the build does that on a spread placement: the buffers' sites are at the die's edges and
would pull their drivers there if placed with them): the CE and LSR pins move to the buffer's
output, every other user keeps the original net. Each buffer is pinned to one of :data:`SITES`.

Usage::

    python -m hwvirt.fpga.globals synthesized.json promoted.json [--limit 7] [--min-fanout 128]
"""

import argparse
import json
import math
import sys
from collections import Counter, namedtuple

from .logic_depth import net_arrivals, net_names
from .wirelength import _top_module


__all__ = ["ENABLE_PINS", "SITES", "GLOBAL_LIMIT", "PIN_WEIGHT_NS", "Promotion", "promote_enables", "main"]

#: The flip-flop pins a global network reaches besides the clock: clock enable and set/reset.
ENABLE_PINS = ("CE", "LSR")
#: The global-buffer sites of the LFE5U-85F the buffers are pinned to, at the top of the die's middle
#: column. nextpnr-ecp5 routes fabric (CE/LSR) loads from the first eight global networks only, and
#: the clock takes one, so seven enables fit: an eighth buffer's net goes through general routing
#: (measured on a test design with eight buffers). Left to itself nextpnr places a DCCA on any free
#: site, and the YoWASP build of ecppack fails ("thrown Wasm exception") on a configuration that uses
#: the bottom sites DCC_B1–B3 (the SoC's configuration packs once their lines are removed); a test
#: design with buffers pinned to TDCC0–TDCC7 routes, packs and reaches every CE pin over its global
#: network. The clock's own buffer goes to the left edge, next to its input pin.
SITES = tuple(f"X67/Y0/TDCC{index}" for index in range(7))
#: How many enables can go on global buffers: one per site.
GLOBAL_LIMIT = len(SITES)
#: What a doubling of a net's CE/LSR pins counts for against the logic before it, in ns of modelled
#: arrival, when nets are ranked for the buffers. On the spread placements, general routing took an
#: enable of 136–300 pins about 7–10 ns to its last flip-flop and one of 500–1500 pins 15–20 ns
#: (``fpga/README.md``), while the logic in front of the candidates is at most ~5 ns: without the
#: width, a 1472-pin enable straight from a flip-flop lost its buffer to 136-pin nets decoded a few
#: LUTs deep and became the critical path (19.4 ns).
PIN_WEIGHT_NS = 2.5

Promotion = namedtuple("Promotion", "net buffer pins")


def promote_enables(netlist, *, limit=GLOBAL_LIMIT, min_fanout=128, exclude=()):
    """A copy of ``netlist`` (Yosys JSON, a dict) with a DCCA in ``limit`` of the nets that drive at
    least ``min_fanout`` flip-flop CE/LSR pins (other than the net bits in ``exclude``: nets that
    are split another way, :mod:`.replicate`), and the list of :class:`Promotion` (net name, buffer
    cell name, number of pins moved) in the order chosen. ``netlist`` is not changed.

    The nets chosen are those whose enable would arrive last over general routing: the modelled
    arrival time of their logic (:func:`hwvirt.fpga.logic_depth.net_arrivals`) plus
    :data:`PIN_WEIGHT_NS` per doubling of their pins; then the widest."""
    if not 0 <= limit <= GLOBAL_LIMIT:
        raise ValueError(f"limit must be 0 to {GLOBAL_LIMIT} (the buffer sites), not {limit!r}")
    if min_fanout < 1:
        raise ValueError(f"min_fanout must be at least 1, not {min_fanout!r}")
    netlist = json.loads(json.dumps(netlist))
    module = _top_module(netlist)
    cells = module["cells"]
    enable_pins = Counter()
    clock_nets = set()
    for cell in cells.values():
        if cell["type"] != "TRELLIS_FF":
            continue
        for pin, bits in cell["connections"].items():
            for bit in bits:
                if not isinstance(bit, int):
                    continue
                if pin in ENABLE_PINS:
                    enable_pins[bit] += 1
                elif pin == "CLK":
                    clock_nets.add(bit)
    names = net_names(module)
    arrival = net_arrivals(module)
    exclude = set(exclude)
    candidates = [bit for bit, count in enable_pins.items()
                  if count >= min_fanout and bit not in clock_nets and bit not in exclude]
    candidates.sort(key=lambda bit: (-round(arrival(bit)[0] + PIN_WEIGHT_NS * math.log2(enable_pins[bit]), 6),
                                     -enable_pins[bit], bit))
    chosen = candidates[:limit]
    used = [bit for cell in cells.values() for bits in cell["connections"].values() for bit in bits]
    used += [bit for info in module["netnames"].values() for bit in info["bits"]]
    used += [bit for port in module.get("ports", {}).values() for bit in port["bits"]]
    next_bit = 1 + max((bit for bit in used if isinstance(bit, int)), default=1)
    promotions = []
    for bit in chosen:
        net = names.get(bit, f"net{bit}")
        global_bit, next_bit = next_bit, next_bit + 1
        buffer = f"$global${net}"
        if buffer in cells:
            raise ValueError(f"the netlist already has a cell named {buffer!r}")
        moved = 0
        for cell in cells.values():
            if cell["type"] != "TRELLIS_FF":
                continue
            for pin in ENABLE_PINS:
                if cell["connections"].get(pin) == [bit]:
                    cell["connections"][pin] = [global_bit]
                    moved += 1
        cells[buffer] = {
            "hide_name": 0, "type": "DCCA", "parameters": {}, "attributes": {"BEL": SITES[len(promotions)]},
            "port_directions": {"CLKI": "input", "CE": "input", "CLKO": "output"},
            "connections": {"CLKI": [bit], "CE": ["1"], "CLKO": [global_bit]},
        }
        module["netnames"][f"{net}$global"] = {"hide_name": 0, "bits": [global_bit], "attributes": {}}
        promotions.append(Promotion(net, buffer, moved))
    return netlist, promotions


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("netlist", help="Yosys JSON netlist (synth_ecp5 output)")
    parser.add_argument("output", help="where to write the netlist with the global buffers")
    parser.add_argument("--limit", type=int, default=GLOBAL_LIMIT, help="nets to promote at most")
    parser.add_argument("--min-fanout", type=int, default=128, help="CE/LSR pins a promoted net drives at least")
    args = parser.parse_args(argv)
    with open(args.netlist) as f:
        netlist = json.load(f)
    try:
        promoted, promotions = promote_enables(netlist, limit=args.limit, min_fanout=args.min_fanout)
    except ValueError as error:
        parser.error(str(error))
    with open(args.output, "w") as f:
        json.dump(promoted, f)
    for promotion in promotions:
        print(f"{promotion.pins:6d} CE/LSR pins  {promotion.net}  -> {promotion.buffer}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
