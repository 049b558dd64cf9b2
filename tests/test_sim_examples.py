"""Every example scenario meets its expectations, and both simulators report identical JSON."""

from pathlib import Path

import pytest

from hwvirt.sim.icarus import icarus_available
from hwvirt.sim.runner import run_scenario
from hwvirt.sim.scenario import load_scenario


EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.toml"))


def test_there_are_examples():
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_passes_on_pysim(path):
    report = run_scenario(load_scenario(path), backend="pysim")
    failed = [row for row in report["steps"] if not row["expect_ok"]]
    assert report["passed"], failed


@pytest.mark.icarus
@pytest.mark.skipif(not icarus_available(), reason="Icarus Verilog not installed")
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_identical_on_both_simulators(path):
    scenario = load_scenario(path)
    pysim = run_scenario(scenario, backend="pysim")
    icarus = run_scenario(scenario, backend="icarus")
    assert icarus["backend"] == "icarus"
    for a, b in zip(pysim["steps"], icarus["steps"]):
        assert a == b, f"step {a['index']} differs"
    assert {**pysim, "backend": None} == {**icarus, "backend": None}
    assert icarus["passed"]
