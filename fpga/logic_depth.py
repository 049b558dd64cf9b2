"""The deepest register-to-register paths of a synthesized ECP5 netlist, without placing or routing.

nextpnr reports a critical path only after routing, and the unit does not route yet; Yosys's
``sta`` has no timing arcs for the ECP5 cells. This reads the JSON netlist that ``synth_ecp5``
writes (``build/fpga/<board>-<block>/<name>.json``) and gives every flip-flop and block-RAM input a
modelled arrival time: the cell delays of the ECP5 speed-grade-6 timing model for LUT4, PFUMX,
L6MUX21 and the CCU2C carry cells, plus a flat :data:`NET_DELAY` per net. Only the relative order is
meaningful (a routed design on this die adds roughly twice as much again in routing); it names the
logic cones to cut.

Usage::

    python -m hwvirt.fpga.logic_depth build/fpga/ulx3s-85f-unit/hwvirt_unit.json [--top hwvirt_unit]
                                      [--paths 15] [--trace 2]

One line per source group (a register's name up to its bit index), the worst path from it first.
"""

import argparse
import json
import re
import sys
from collections import namedtuple


__all__ = ["NET_DELAY", "Path", "deepest_paths", "net_arrivals", "net_names", "register_group", "main"]

#: Modelled delay of one net, in ns (placement-dependent; a constant keeps the comparison simple).
NET_DELAY = 0.3

# Input pin → output delays, ns (nextpnr's ECP5 speed grade 6 cell timings, rounded).
_LUT4 = {"A": .141, "B": .275, "C": .379, "D": .379}
_CCU2C = {
    ("A0", "S0"): .379, ("B0", "S0"): .379, ("C0", "S0"): .275, ("D0", "S0"): .141, ("CIN", "S0"): .257,
    ("A0", "S1"): .630, ("B0", "S1"): .630, ("C0", "S1"): .526, ("D0", "S1"): .392,
    ("A1", "S1"): .379, ("B1", "S1"): .379, ("C1", "S1"): .275, ("D1", "S1"): .141, ("CIN", "S1"): .273,
    ("A0", "COUT"): .516, ("B0", "COUT"): .516, ("C0", "COUT"): .412, ("D0", "COUT"): .278,
    ("A1", "COUT"): .516, ("B1", "COUT"): .516, ("C1", "COUT"): .412, ("D1", "COUT"): .278,
    ("CIN", "COUT"): .043,
}
# (input pin, delay, whether the input is a routed net) per combinational cell type.
_ARCS = {
    "LUT4":    lambda port: [(pin, delay, True) for pin, delay in _LUT4.items()],
    "PFUMX":   lambda port: [("ALUT", .25, False), ("BLUT", .25, False), ("C0", .3, True)],
    "L6MUX21": lambda port: [("D0", .15, False), ("D1", .15, False), ("SD", .3, True)],
    "CCU2C":   lambda port: [(pin, delay, pin != "CIN") for (pin, out), delay in _CCU2C.items()
                             if out == port],
    "TRELLIS_DPR16X4": lambda port: [(f"RAD[{i}]", .4, True) for i in range(4)],
}
_SEQUENTIAL = ("TRELLIS_FF", "DP16KD")
_CLOCK_PINS = {"CLK", "CLKA", "CLKB", "WCK"}

Path = namedtuple("Path", "arrival_ns levels source sink sink_pin nets")


def net_names(module):
    """{net bit: its name} of a JSON netlist's module: the shortest of its names, which is the
    designer's rather than one derived from a cell."""
    names = {}
    for name, info in module["netnames"].items():
        for bit in info["bits"]:
            if isinstance(bit, int) and (bit not in names or len(name) < len(names[bit])):
                names[bit] = name
    return names


def net_arrivals(module):
    """The modelled arrival time of every net of a JSON netlist's ``module``: a function of a net bit
    giving (arrival in ns at its driver's output, the input net the latest arrival came through, or
    ``None`` at a register, block RAM, constant or input), computed on demand and remembered."""
    cells = module["cells"]
    driver = _drivers(module)
    arrival = {}          # net → (arrival at the driver's output, the input net it came through)

    def arrive(net):
        # Iterative depth-first evaluation: the cones are deep enough to exhaust Python's stack.
        stack = [net]
        while stack:
            bit = stack[-1]
            if bit in arrival:
                stack.pop()
                continue
            cell_name, port = driver.get(bit, (None, None))
            cell = cells.get(cell_name)
            if cell is None or cell["type"] not in _ARCS:
                arrival[bit] = (0.0, None)          # a register, a RAM, a constant or an input
                stack.pop()
                continue
            inputs = [(b, delay, routed) for pin, delay, routed in _ARCS[cell["type"]](port)
                      for b in cell["connections"].get(pin, []) if isinstance(b, int)]
            pending = [b for b, _, _ in inputs if b not in arrival]
            if pending:
                stack.extend(pending)
                continue
            best = (0.0, None)
            for b, delay, routed in inputs:
                t = arrival[b][0] + (NET_DELAY if routed else 0.0) + delay
                if t > best[0]:
                    best = (t, b)
            arrival[bit] = best
            stack.pop()
        return arrival[net]

    return arrive


def _drivers(module):
    """{net bit: (cell name, output port)} of a JSON netlist's module."""
    driver = {}
    for cell_name, cell in module["cells"].items():
        for port, bits in cell["connections"].items():
            if cell["port_directions"].get(port) == "output":
                for bit in bits:
                    if isinstance(bit, int):
                        driver[bit] = (cell_name, port)
    return driver


def deepest_paths(netlist, top):
    """Every sequential input's worst path, deepest first: a list of :class:`Path`.

    ``netlist`` is Yosys's JSON (a dict), ``top`` the module name. A path starts at a flip-flop or
    block-RAM output, or at a module input, and ``nets`` names the nets along it, source first.
    """
    try:
        module = netlist["modules"][top]
    except KeyError:
        raise ValueError(f"module {top!r} is not in the netlist; it has "
                         f"{', '.join(sorted(netlist.get('modules', {})))}") from None
    cells = module["cells"]
    net_name = net_names(module)
    driver = _drivers(module)
    arrive = net_arrivals(module)

    paths = []
    for cell_name, cell in cells.items():
        if not cell["type"].startswith(_SEQUENTIAL):
            continue
        for pin, bits in cell["connections"].items():
            if cell["port_directions"].get(pin) != "input" or pin in _CLOCK_PINS:
                continue
            for bit in bits:
                if not isinstance(bit, int):
                    continue
                nets = [bit]
                while arrive(nets[-1])[1] is not None:
                    nets.append(arrive(nets[-1])[1])
                nets.reverse()
                source = driver.get(nets[0], ("(input)", None))[0]
                paths.append(Path(arrive(bit)[0] + NET_DELAY, len(nets) - 1, source, cell_name, pin,
                                  [net_name.get(n, str(n)) for n in nets]))
    paths.sort(key=lambda p: (-p.arrival_ns, p.sink, p.sink_pin))
    return paths


def _top_module(netlist):
    """The module Yosys marks as the top (attribute ``top``), else the one with the most cells."""
    modules = netlist["modules"]
    marked = [name for name, module in modules.items()
              if int(str(module.get("attributes", {}).get("top", "0")), 2)]
    return marked[0] if marked else max(modules, key=lambda name: len(modules[name].get("cells", {})))


def register_group(cell_name):
    """A register's name without Yosys's mapping suffixes and bit index."""
    return re.sub(r"(_TRELLIS_FF|_LUT4|_DP16KD|\$).*|\[.*", "", cell_name)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("netlist", help="Yosys JSON netlist (synth_ecp5 output)")
    parser.add_argument("--top", help="top module (default: the one Yosys marks as top)")
    parser.add_argument("--paths", type=int, default=15, help="source groups to list")
    parser.add_argument("--trace", type=int, default=0, help="list the nets of the first N paths")
    args = parser.parse_args(argv)
    with open(args.netlist) as f:
        netlist = json.load(f)
    top = args.top or _top_module(netlist)
    seen = set()
    for path in deepest_paths(netlist, top):
        group = register_group(path.source)
        if group in seen:
            continue
        seen.add(group)
        print(f"{path.arrival_ns:6.2f} ns {path.levels:3d} levels  {group} -> {path.sink}.{path.sink_pin}")
        if len(seen) <= args.trace:
            for net in path.nets:
                print(f"{'':24}{net}")
        if len(seen) >= args.paths:
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
