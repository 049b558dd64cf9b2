"""The SVM unit's generated Verilog under cocotb + Icarus Verilog: a table of exits with memory wait
states gives the same JSON rows (outcomes, exit information, cycle counts) as Amaranth's simulator.
The bhyve examples are compared on both simulators by tests/test_sim_examples.py."""

import pytest

from hwvirt.sim.icarus import icarus_available
from hwvirt.sim.svm_runner import run_svm_scenario

from svm_model import BASELINE


pytestmark = [pytest.mark.icarus,
              pytest.mark.skipif(not icarus_available(), reason="Icarus Verilog not installed")]


def test_exits_with_wait_states_agree_with_pysim():
    """IOPM/MSRPM reads, #VMEXIT write-back, host restore, VMLOAD/VMSAVE and clean bits with a
    memory that answers after two wait cycles."""
    v = {**BASELINE, "INTERCEPT_MISC1": 0xFFFF_FFFF, "INTERCEPT_MISC2": 0xFFFF_FFFF, "INTERCEPT_CR_READ": 0x10,
         "INTERCEPT_EXCEPTIONS": 1 << 14}
    events = [{"event": "io", "port": 0x3F, "size": 4, "dir": "in"}, {"event": "rdmsr", "msr": 0xC000_0081},
              {"event": "cr_read", "cr": 4, "gpr": 5}, {"event": "svminstr", "name": "vmmcall"},
              {"event": "exception", "vector": 14, "error_code": 2, "during": {"vector": 0x30, "type": "extint"}}]
    steps = [{"op": "wrmsr", "msr": 0xC001_0117, "value": 0x9000},
             {"op": "mem_fill", "addr": 0x20000, "length": 0x3000, "byte": 0x0F},
             {"op": "mem_fill", "addr": 0x30000, "length": 0x2000, "byte": 0x55},
             {"op": "vmcb_write", "addr": 0x10000, "fields": v}]
    for i, ev in enumerate(events):
        steps += [{"op": "vmrun", "addr": 0x10000}, {"op": "guest", **ev},
                  {"op": "mem_read", "addr": 0x10078, "width": 64},
                  {"op": "vmcb_write", "addr": 0x10000, "fields": {"VMCB_CLEAN": 0xFFFF_FFFF if i % 2 else 0}}]
    steps += [{"op": "vmsave", "addr": 0x50000}, {"op": "vmload", "addr": 0x50000},
              {"op": "mem_read", "addr": 0x9578, "width": 64}]
    doc = {"arch": "svm", "config": {"memory_latency": 2}, "cpu": {"efer": 0x1D01, "rip": 0x1234}, "step": steps}
    pysim = run_svm_scenario(doc, backend="pysim")
    icarus = run_svm_scenario(doc, backend="icarus")
    assert [r["exit_code"] for r in pysim["steps"] if r["op"] == "guest"] == [0x7B, 0x7C, 0x4, 0x81, 0x4E]
    assert icarus["steps"] == pysim["steps"]
