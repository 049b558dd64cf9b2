"""The EPT walker's generated Verilog under cocotb + Icarus agrees with Amaranth's simulator: same
results (outcome, HPA, qualification, refs, cache hits), same cycle counts, same memory after the
accessed/dirty writes, on a fixed set of walks (1D and 2D, EPT and nested paging, faults, cache hits,
invalidations) under fixed and random bus latency."""

import hashlib
import json
import pickle
import tempfile
from pathlib import Path

import pytest

from hwvirt.hdl.ept_walker import EPTWalker, InvalidationKind as K
from hwvirt.sim.ept_bench import EPTSimulation
from hwvirt.sim.icarus import icarus_available
from hwvirt.sim.toolchain import build_root
from hwvirt.sim.verilog import convert_unit, icarus_safe

import test_hdl_ept_walker as base


pytestmark = [pytest.mark.icarus,
              pytest.mark.skipif(not icarus_available(), reason="Icarus Verilog not installed")]

TOP = "ept_walker"


def jobs():
    """(memory, ops, latency, seed) tuples; each job starts from reset."""
    out = []
    req = base.req
    # 1D walks: cold, TLB hit, A/D, a violation, a misconfiguration
    for latency, seed in ((0, None), (3, None), (4, 7)):
        space, eptp, _ = base.ept_case(base.HPA_4K | base.RWX | base.WB)
        gpa = base.GPA
        ops = [("walk", req(eptp=eptp | base.AD, gpa=gpa)), ("walk", req(eptp=eptp | base.AD, gpa=gpa)),
               ("walk", req(eptp=eptp | base.AD, gpa=gpa, access=base.WRITE)),
               ("walk", req(eptp=eptp, gpa=gpa + 0x1000, linear_valid=1, linear=0x4000)),
               ("invalidate", dict(kind=K.INVEPT_SINGLE_CONTEXT, eptp=eptp, vpid=0, linear=0)),
               ("walk", req(eptp=eptp | base.AD, gpa=gpa, access=base.FETCH))]
        out.append((space.mem, ops, latency, seed))
    space, eptp, _ = base.ept_case(base.HPA_4K | base.RWX | 7 << 3)
    out.append((space.mem, [("walk", req(eptp=eptp, gpa=base.GPA))], 1, None))
    # 2D walks, warm and cold, with a guest page fault and INVVPID
    space, eptp, cr3, linears, _ = base.two_d_space(4)
    ops = [("walk", req(eptp=eptp, cr3=cr3, guest_paging=1, linear=lin, vpid=3, access=base.WRITE))
           for lin in linears]
    ops += [("walk", req(eptp=eptp, cr3=cr3, guest_paging=1, linear=linears[0], vpid=3)),
            ("invalidate", dict(kind=K.INVVPID_SINGLE_CONTEXT, eptp=0, vpid=3, linear=0)),
            ("walk", req(eptp=eptp, cr3=cr3, guest_paging=1, linear=linears[0], vpid=3)),
            ("walk", req(eptp=eptp, cr3=cr3, guest_paging=1, linear=linears[0] + 0x40_0000, vpid=3))]
    out.append((space.mem, ops, 2, 11))
    # nested paging: a 1D translation, a fault, a 2D fault on a guest table
    space, root = base.npt_space(0x5)
    out.append((space.mem, [("walk", req(eptp=root, gpa=base.GPA, npt=1)),
                            ("walk", req(eptp=root, gpa=base.GPA, npt=1, access=base.WRITE)),
                            ("walk", req(eptp=root, npt=1, cr3=0x20_0000, guest_paging=1, linear=0x1000))], 0, None))
    return out


def _digest(text):
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build():
    from cocotb_tools.runner import get_runner
    text = icarus_safe(convert_unit(EPTWalker(), name=TOP))
    build_dir = build_root() / "icarus-ept" / _digest(text)
    source = build_dir / f"{TOP}.v"
    if not source.exists():
        build_dir.mkdir(parents=True, exist_ok=True)
        source.with_suffix(".tmp").write_text(text)
        source.with_suffix(".tmp").rename(source)
    get_runner("icarus").build(sources=[source], hdl_toplevel=TOP, build_dir=build_dir,
                               timescale=("1ns", "1ps"), always=False, log_file=build_dir / "build.log")
    return build_dir


def run_icarus(job_list):
    from cocotb_tools.runner import get_runner
    build_dir = build()
    with tempfile.TemporaryDirectory(prefix="hwvirt-ept-") as tmp:
        job = Path(tmp) / "job.pickle"
        job.write_bytes(pickle.dumps(job_list))
        log = Path(tmp) / "test.log"
        try:
            get_runner("icarus").test(hdl_toplevel=TOP, hdl_toplevel_lang="verilog", test_module="hwvirt.sim.ept_bench",
                                      build_dir=build_dir, test_dir=tmp, extra_env={"HWVIRT_EPT_JOB": str(job)},
                                      log_file=log)
        except SystemExit:
            pass
        out = Path(str(job) + ".json")
        if not out.exists():
            raise RuntimeError("the cocotb run failed:\n" + (log.read_text()[-3000:] if log.exists() else ""))
        return json.loads(out.read_text())


def test_verilog_agrees_with_amaranth():
    job_list = jobs()
    icarus = run_icarus([(dict(m), ops, lat, seed) for m, ops, lat, seed in job_list])
    sim = EPTSimulation()
    for (memory, ops, latency, seed), got in zip(job_list, icarus):
        memory = dict(memory)
        want = sim.run(memory, ops, latency=latency, seed=seed)
        assert got["results"] == want
        assert {a: v for a, v in got["memory"]} == memory
    walks = [r for j in icarus for r in j["results"] if r]
    assert len(walks) > 15 and any(r["tlb_hit"] for r in walks) and any(r["outcome"] for r in walks)
