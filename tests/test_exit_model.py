"""Tests of the plain-Python VM-exit decision model (``exit_model.py``).

Every expectation is written out as a literal number taken from the architecture (Intel SDM vol.
3C §26.1–§26.2 and §27.2, summarised in the fact sheet §6–§7), never computed with the model's own
helpers: exit reasons from the basic-exit-reason table, qualification and event-information
layouts from the field formats. A case lists only what differs from "no exit, every field 0,
guest state unchanged".
"""

import copy

import pytest
from hypothesis import given, settings, strategies as st

from exit_model import DEFAULT_LENGTH, REASONS, Decision, boundary, decide


PIN = "PIN_BASED_VM_EXEC_CONTROL"
PROC = "CPU_BASED_VM_EXEC_CONTROL"
PROC2 = "SECONDARY_VM_EXEC_CONTROL"
EXIT = "VM_EXIT_CONTROLS"
EXC = "EXCEPTION_BITMAP"
PFM = "PAGE_FAULT_ERROR_CODE_MASK"
PFV = "PAGE_FAULT_ERROR_CODE_MATCH"
SEC = 1 << 31           # primary control: activate secondary controls
MTF = 1 << 27           # primary control: monitor trap flag

BASE_GUEST = dict(
    cr0=0x80000031, cr3=0x1000, cr4=0x2020, dr7=0x400, rip=0x1000, rflags=0x2, efer=0x500,
    pat=0x0007040600070406, debugctl=0x1, sysenter_cs=0x10, sysenter_esp=0x8000,
    sysenter_eip=0x9000, interruptibility=0, activity=0, tpr=5, tsc=0x123456789,
)

MSRB = {"MSR_BITMAP": 0x7000, PROC: 1 << 28}
IOB = {"IO_BITMAP_A": 0xA000, "IO_BITMAP_B": 0xB000, PROC: 1 << 25}
CR0MS = {"CR0_GUEST_HOST_MASK": 0x80000001, "CR0_READ_SHADOW": 0x80000001}
CR4MS = {"CR4_GUEST_HOST_MASK": 0x2000, "CR4_READ_SHADOW": 0}
CR3T = {PROC: 1 << 15, "CR3_TARGET_COUNT": 2, "CR3_TARGET_VALUE0": 0x5000,
        "CR3_TARGET_VALUE1": 0x6000, "CR3_TARGET_VALUE2": 0x7000, "CR3_TARGET_VALUE3": 0x8000}


def C(id, event, *, vmcs=None, guest=None, mem=None, **expect):
    """A case: the event, the VMCS fields, the guest (differences from BASE_GUEST), memory bytes
    (address → byte) and the expected Decision fields; ``after`` = the guest keys the event
    changes."""
    return pytest.param(event, vmcs or {}, {**BASE_GUEST, **(guest or {})}, mem or {}, expect,
                        id=id)


def done(n, **changes):
    """Expected guest changes of a completed instruction of length n from RIP 0x1000."""
    return {"rip": 0x1000 + n, **changes}


CASES = [
    # --- reason 0: exceptions (exception bitmap, #PF mask/match) -------------------------------
    C("gp-exit", {"event": "exception", "vector": 13, "error_code": 0x18}, vmcs={EXC: 1 << 13},
      exit=True, reason=0, intr_info=0x80000B0D, intr_error=0x18),
    C("gp-delivered", {"event": "exception", "vector": 13, "error_code": 0x18},
      vmcs={EXC: ~(1 << 13) & 0xFFFFFFFF}, guest={"activity": 1}, after={"activity": 0}),
    C("pf-bit1-match-exits", {"event": "exception", "vector": 14, "error_code": 6,
                              "addr": 0xDEAD000}, vmcs={EXC: 1 << 14, PFM: 4, PFV: 4},
      exit=True, reason=0, qualification=0xDEAD000, intr_info=0x80000B0E, intr_error=6),
    C("pf-bit1-nomatch-delivered", {"event": "exception", "vector": 14, "error_code": 2,
                                    "addr": 0xDEAD000}, vmcs={EXC: 1 << 14, PFM: 4, PFV: 4}),
    C("pf-bit0-match-delivered", {"event": "exception", "vector": 14, "error_code": 6,
                                  "addr": 0xDEAD000}, vmcs={EXC: 0, PFM: 4, PFV: 4}),
    C("pf-bit0-nomatch-exits", {"event": "exception", "vector": 14, "error_code": 2,
                                "addr": 0xDEAD000}, vmcs={EXC: 0, PFM: 4, PFV: 4},
      exit=True, reason=0, qualification=0xDEAD000, intr_info=0x80000B0E, intr_error=2),
    C("pf-mask0-match0-always", {"event": "exception", "vector": 14, "error_code": 0x1F,
                                 "addr": 0x1234}, vmcs={EXC: 1 << 14},
      exit=True, reason=0, qualification=0x1234, intr_info=0x80000B0E, intr_error=0x1F),
    C("ud-no-error-code", {"event": "exception", "vector": 6, "error_code": 5}, vmcs={EXC: 1 << 6},
      exit=True, reason=0, intr_info=0x80000306),
    C("df-error-code-0", {"event": "exception", "vector": 8}, vmcs={EXC: 1 << 8},
      exit=True, reason=0, intr_info=0x80000B08),
    C("ac-error-code", {"event": "exception", "vector": 17, "error_code": 0}, vmcs={EXC: 1 << 17},
      exit=True, reason=0, intr_info=0x80000B11),
    C("hw-exception-len-ignored", {"event": "exception", "vector": 0, "len": 3}, vmcs={EXC: 1},
      exit=True, reason=0, intr_info=0x80000300),
    C("int3-software", {"event": "exception", "vector": 3, "type": "software"},
      vmcs={EXC: 1 << 3}, exit=True, reason=0, intr_info=0x80000603, instr_len=1),
    C("int3-software-len2", {"event": "exception", "vector": 3, "type": "software", "len": 2},
      vmcs={EXC: 1 << 3}, exit=True, reason=0, intr_info=0x80000603, instr_len=2),
    C("int1-privileged", {"event": "exception", "vector": 1, "type": "privileged"},
      vmcs={EXC: 1 << 1}, exit=True, reason=0, intr_info=0x80000501, instr_len=1),
    C("int3-delivered", {"event": "exception", "vector": 3, "type": "software"},
      vmcs={EXC: 1 << 4}),
    C("during-pf-with-ec", {"event": "exception", "vector": 13, "error_code": 0,
                            "during": {"vector": 14, "type": "hardware", "error_code": 2}},
      vmcs={EXC: 1 << 13}, exit=True, reason=0, intr_info=0x80000B0D,
      idt_info=0x80000B0E, idt_error=2),
    C("during-extint", {"event": "exception", "vector": 14, "error_code": 0, "addr": 0x10,
                        "during": {"vector": 0x20, "type": "extint"}},
      vmcs={EXC: 1 << 14}, exit=True, reason=0, qualification=0x10, intr_info=0x80000B0E,
      idt_info=0x80000020),
    C("during-nmi", {"event": "exception", "vector": 11, "error_code": 0x10,
                     "during": {"vector": 2, "type": "nmi"}},
      vmcs={EXC: 1 << 11}, exit=True, reason=0, intr_info=0x80000B0B, intr_error=0x10,
      idt_info=0x80000202),
    C("during-soft-int", {"event": "exception", "vector": 13, "error_code": 0x402,
                          "during": {"vector": 0x80, "type": "soft_int"}},
      vmcs={EXC: 1 << 13}, exit=True, reason=0, intr_info=0x80000B0D, intr_error=0x402,
      idt_info=0x80000480),
    C("during-ec-0-given", {"event": "exception", "vector": 14, "error_code": 0,
                            "during": {"vector": 13, "type": "hardware", "error_code": 0}},
      vmcs={EXC: 1 << 14}, exit=True, reason=0, intr_info=0x80000B0E, idt_info=0x80000B0D),
    C("during-privileged", {"event": "exception", "vector": 14, "error_code": 0,
                            "during": {"vector": 1, "type": "privileged"}},
      vmcs={EXC: 1 << 14}, exit=True, reason=0, intr_info=0x80000B0E, idt_info=0x80000501),
    C("nmi-exit", {"event": "nmi"}, vmcs={PIN: 1 << 3},
      exit=True, reason=0, intr_info=0x80000202),
    C("nmi-delivered", {"event": "nmi"}, vmcs={PIN: 1}, guest={"activity": 1},
      after={"activity": 0}),
    # --- reason 1: external interrupts ---------------------------------------------------------
    C("extint-ack", {"event": "extint", "vector": 0x30}, vmcs={PIN: 1, EXIT: 1 << 15},
      exit=True, reason=1, intr_info=0x80000030),
    C("extint-no-ack", {"event": "extint", "vector": 0x30}, vmcs={PIN: 1},
      exit=True, reason=1),
    C("extint-delivered", {"event": "extint", "vector": 0x30}, vmcs={PIN: 1 << 3},
      guest={"activity": 1}, after={"activity": 0}),
    # --- reasons 2, 3, 4 ----------------------------------------------------------------------
    C("triple-fault", {"event": "triple_fault"}, exit=True, reason=2),
    C("init", {"event": "init"}, exit=True, reason=3),
    C("sipi-wait", {"event": "sipi", "vector": 0x9A}, guest={"activity": 3},
      exit=True, reason=4, qualification=0x9A),
    C("sipi-ignored-active", {"event": "sipi", "vector": 0x9A}),
    C("sipi-ignored-hlt", {"event": "sipi", "vector": 0x9A}, guest={"activity": 1}),
    # --- reason 9: task switch -----------------------------------------------------------------
    C("ts-call", {"event": "task_switch", "selector": 0x28, "source": "call"},
      exit=True, reason=9, qualification=0x28, instr_len=2),
    C("ts-jmp", {"event": "task_switch", "selector": 0x28, "source": "jmp", "len": 5},
      exit=True, reason=9, qualification=0x80000028, instr_len=5),
    C("ts-iret", {"event": "task_switch", "selector": 0x28, "source": "iret"},
      exit=True, reason=9, qualification=0x40000028),
    C("ts-gate", {"event": "task_switch", "selector": 0xFFF8, "source": "gate"},
      exit=True, reason=9, qualification=0xC000FFF8),
    # --- unconditional instructions ------------------------------------------------------------
    C("cpuid", {"event": "cpuid", "eax": 1, "ecx": 0}, exit=True, reason=10, instr_len=2),
    C("getsec", {"event": "getsec"}, exit=True, reason=11, instr_len=2),
    C("invd", {"event": "invd"}, exit=True, reason=13, instr_len=2),
    C("xsetbv", {"event": "xsetbv", "ecx": 0, "value": 7}, exit=True, reason=55, instr_len=3),
    C("vmcall", {"event": "vmcall"}, exit=True, reason=18, instr_len=3),
    C("cpuid-len", {"event": "cpuid", "len": 4}, exit=True, reason=10, instr_len=4),
    # --- HLT, INVLPG, INVPCID ------------------------------------------------------------------
    C("hlt-exit", {"event": "hlt"}, vmcs={PROC: 1 << 7}, exit=True, reason=12, instr_len=1),
    C("hlt-complete", {"event": "hlt"}, guest={"interruptibility": 1},
      after=done(1, activity=1, interruptibility=0)),
    C("invlpg-exit", {"event": "invlpg", "addr": 0xFFFF800000001000}, vmcs={PROC: 1 << 9},
      exit=True, reason=14, qualification=0xFFFF800000001000, instr_len=3),
    C("invlpg-complete", {"event": "invlpg", "addr": 0x1000}, after=done(3)),
    C("invpcid-ud-exit", {"event": "invpcid"}, vmcs={PROC: SEC | 1 << 9, PROC2: 0, EXC: 1 << 6},
      exit=True, reason=0, intr_info=0x80000306),
    C("invpcid-ud-delivered", {"event": "invpcid"}, vmcs={PROC: SEC | 1 << 9}),
    C("invpcid-secondary-inactive", {"event": "invpcid"},
      vmcs={PROC: 1 << 9, PROC2: 1 << 12, EXC: 1 << 6}, exit=True, reason=0,
      intr_info=0x80000306),
    C("invpcid-exit", {"event": "invpcid"}, vmcs={PROC: SEC | 1 << 9, PROC2: 1 << 12},
      exit=True, reason=58, instr_len=5),
    C("invpcid-complete", {"event": "invpcid"}, vmcs={PROC: SEC, PROC2: 1 << 12},
      after=done(5)),
    # --- primary-control instructions ----------------------------------------------------------
    C("mwait-exit", {"event": "mwait"}, vmcs={PROC: 1 << 10}, exit=True, reason=36, instr_len=3),
    C("mwait-complete", {"event": "mwait"}, vmcs={PROC: 1 << 29}, after=done(3)),
    C("monitor-exit", {"event": "monitor"}, vmcs={PROC: 1 << 29},
      exit=True, reason=39, instr_len=3),
    C("monitor-complete", {"event": "monitor"}, vmcs={PROC: 1 << 10}, after=done(3)),
    C("pause-exit", {"event": "pause"}, vmcs={PROC: 1 << 30}, exit=True, reason=40, instr_len=2),
    C("pause-complete", {"event": "pause"}, guest={"interruptibility": 0b1011, "activity": 0},
      after=done(2, interruptibility=0b1000)),
    C("rdpmc-exit", {"event": "rdpmc"}, vmcs={PROC: 1 << 11}, exit=True, reason=15, instr_len=2),
    C("rdpmc-complete", {"event": "rdpmc"}, after=done(2)),
    C("rdtsc-exit", {"event": "rdtsc"}, vmcs={PROC: 1 << 12, "TSC_OFFSET": 5},
      exit=True, reason=16, instr_len=2),
    C("rdtsc-plain", {"event": "rdtsc"}, vmcs={"TSC_OFFSET": 0x1000},
      value=0x123456789, after=done(2)),
    C("rdtsc-offset", {"event": "rdtsc"}, vmcs={PROC: 1 << 3, "TSC_OFFSET": 0x1000},
      value=0x123457789, after=done(2)),
    C("rdtsc-offset-negative", {"event": "rdtsc"},
      vmcs={PROC: 1 << 3, "TSC_OFFSET": 0xFFFFFFFFFFFFF000}, value=0x123455789, after=done(2)),
    C("rdtsc-wraps", {"event": "rdtsc"}, vmcs={PROC: 1 << 3, "TSC_OFFSET": 0xFFFFFFFFFFFFFFFF},
      guest={"tsc": 0}, value=0xFFFFFFFFFFFFFFFF, after=done(2)),
    C("rip-wraps", {"event": "rdpmc"}, guest={"rip": 0xFFFFFFFFFFFFFFFF}, after={"rip": 1}),
    # --- RDTSCP --------------------------------------------------------------------------------
    C("rdtscp-ud-delivered", {"event": "rdtscp"}, vmcs={PROC: SEC | 1 << 12}),
    C("rdtscp-ud-exit", {"event": "rdtscp"}, vmcs={PROC: 1 << 12, PROC2: 1 << 3, EXC: 1 << 6},
      exit=True, reason=0, intr_info=0x80000306),
    C("rdtscp-exit", {"event": "rdtscp"}, vmcs={PROC: SEC | 1 << 12, PROC2: 1 << 3},
      exit=True, reason=51, instr_len=3),
    C("rdtscp-complete", {"event": "rdtscp"},
      vmcs={PROC: SEC | 1 << 3, PROC2: 1 << 3, "TSC_OFFSET": 0x10},
      value=0x123456799, after=done(3)),
    # --- secondary-control instructions --------------------------------------------------------
    C("wbinvd-exit", {"event": "wbinvd"}, vmcs={PROC: SEC, PROC2: 1 << 6},
      exit=True, reason=54, instr_len=2),
    C("wbinvd-secondary-inactive", {"event": "wbinvd"}, vmcs={PROC2: 1 << 6}, after=done(2)),
    C("rdrand-exit", {"event": "rdrand"}, vmcs={PROC: SEC, PROC2: 1 << 11},
      exit=True, reason=57, instr_len=3),
    C("rdrand-complete", {"event": "rdrand"}, vmcs={PROC: SEC, PROC2: 1 << 16}, after=done(3)),
    C("rdseed-exit", {"event": "rdseed"}, vmcs={PROC: SEC, PROC2: 1 << 16},
      exit=True, reason=61, instr_len=3),
    C("rdseed-complete", {"event": "rdseed"}, vmcs={PROC: SEC, PROC2: 1 << 11}, after=done(3)),
    # --- descriptor-table exiting --------------------------------------------------------------
    *[C(f"desc-{name}", {"event": "descriptor", "instr": name}, vmcs={PROC: SEC, PROC2: 1 << 2},
        exit=True, reason=reason, instr_len=3, instr_info=info)
      for name, reason, info in [
          ("sgdt", 46, 0x00000000), ("sidt", 46, 0x10000000), ("lgdt", 46, 0x20000000),
          ("lidt", 46, 0x30000000), ("sldt", 47, 0x00000000), ("str", 47, 0x10000000),
          ("lldt", 47, 0x20000000), ("ltr", 47, 0x30000000)]],
    C("desc-complete", {"event": "descriptor", "instr": "lgdt"}, vmcs={PROC: SEC},
      after=done(3)),
    # --- VMX instructions ----------------------------------------------------------------------
    *[C(f"vminstr-{name}", {"event": "vminstr", "name": name}, exit=True, reason=reason,
        instr_len=3)
      for name, reason in [
          ("vmclear", 19), ("vmlaunch", 20), ("vmptrld", 21), ("vmptrst", 22), ("vmread", 23),
          ("vmresume", 24), ("vmwrite", 25), ("vmxoff", 26), ("vmxon", 27), ("invept", 50),
          ("invvpid", 53), ("vmcall", 18)]],
    C("vminstr-len", {"event": "vminstr", "name": "vmxon", "len": 8},
      exit=True, reason=27, instr_len=8),
    # --- RDMSR / WRMSR -------------------------------------------------------------------------
    C("rdmsr-no-bitmaps", {"event": "rdmsr", "msr": 0x277}, exit=True, reason=31, instr_len=2),
    C("wrmsr-no-bitmaps", {"event": "wrmsr", "msr": 0x277, "value": 6},
      exit=True, reason=32, instr_len=2),
    C("rdmsr-low-read-set", {"event": "rdmsr", "msr": 0x277}, vmcs=MSRB, mem={0x704E: 0x80},
      exit=True, reason=31, instr_len=2),
    C("rdmsr-low-other-bits", {"event": "rdmsr", "msr": 0x277}, vmcs=MSRB, mem={0x704E: 0x7F},
      value=0x0007040600070406, after=done(2)),
    C("rdmsr-low-write-bit-only", {"event": "rdmsr", "msr": 0x277}, vmcs=MSRB,
      mem={0x784E: 0x80}, value=0x0007040600070406, after=done(2)),
    C("wrmsr-low-write-set", {"event": "wrmsr", "msr": 0x277, "value": 6}, vmcs=MSRB,
      mem={0x784E: 0x80}, exit=True, reason=32, instr_len=2),
    C("wrmsr-low-read-bit-only", {"event": "wrmsr", "msr": 0x277, "value": 6}, vmcs=MSRB,
      mem={0x704E: 0x80}, after=done(2, pat=6)),
    C("rdmsr-low-last", {"event": "rdmsr", "msr": 0x1FFF}, vmcs=MSRB, mem={0x73FF: 0x80},
      exit=True, reason=31, instr_len=2),
    C("rdmsr-high-read-set", {"event": "rdmsr", "msr": 0xC0000080}, vmcs=MSRB,
      mem={0x7410: 0x01}, exit=True, reason=31, instr_len=2),
    C("rdmsr-high-clear", {"event": "rdmsr", "msr": 0xC0000080}, vmcs=MSRB,
      mem={0x7010: 0x01, 0x7C10: 0x01}, value=0x500, after=done(2)),
    C("rdmsr-high-last", {"event": "rdmsr", "msr": 0xC0001FFF}, vmcs=MSRB, mem={0x77FF: 0x80},
      exit=True, reason=31, instr_len=2),
    C("wrmsr-high-write-set", {"event": "wrmsr", "msr": 0xC0000080, "value": 0xD01},
      vmcs=MSRB, mem={0x7C10: 0x01}, exit=True, reason=32, instr_len=2),
    C("wrmsr-high-clear", {"event": "wrmsr", "msr": 0xC0000080, "value": 0xD01},
      vmcs=MSRB, mem={0x7810: 0x01, 0x7410: 0x01}, after=done(2, efer=0xD01)),
    C("rdmsr-out-of-range-low", {"event": "rdmsr", "msr": 0x2000}, vmcs=MSRB,
      exit=True, reason=31, instr_len=2),
    C("rdmsr-out-of-range-hv", {"event": "rdmsr", "msr": 0x40000000}, vmcs=MSRB,
      exit=True, reason=31, instr_len=2),
    C("wrmsr-out-of-range-high", {"event": "wrmsr", "msr": 0xC0002000, "value": 1}, vmcs=MSRB,
      exit=True, reason=32, instr_len=2),
    *[C(f"rdmsr-value-{msr:x}", {"event": "rdmsr", "msr": msr}, vmcs=MSRB, value=value,
        after=done(2))
      for msr, value in [(0x1D9, 0x1), (0x174, 0x10), (0x175, 0x8000), (0x176, 0x9000),
                         (0x10, 0), (0xC0000081, 0)]],
    C("wrmsr-sysenter-cs-32bit", {"event": "wrmsr", "msr": 0x174, "value": 0x1234567890},
      vmcs=MSRB, after=done(2, sysenter_cs=0x34567890)),
    C("wrmsr-sysenter-esp", {"event": "wrmsr", "msr": 0x175, "value": 0xFFFF800000000000},
      vmcs=MSRB, after=done(2, sysenter_esp=0xFFFF800000000000)),
    C("wrmsr-sysenter-eip", {"event": "wrmsr", "msr": 0x176, "value": 0xFFFF800000001000},
      vmcs=MSRB, after=done(2, sysenter_eip=0xFFFF800000001000)),
    C("wrmsr-debugctl", {"event": "wrmsr", "msr": 0x1D9, "value": 3}, vmcs=MSRB,
      after=done(2, debugctl=3)),
    C("wrmsr-ignored", {"event": "wrmsr", "msr": 0x10, "value": 3}, vmcs=MSRB, after=done(2)),
    # --- I/O -----------------------------------------------------------------------------------
    C("io-a-set", {"event": "io", "port": 0x60}, vmcs=IOB, mem={0xA00C: 0x01},
      exit=True, reason=30, qualification=0x00600000, instr_len=1),
    C("io-a-clear", {"event": "io", "port": 0x60}, vmcs=IOB, mem={0xA00C: 0xFE},
      after=done(1)),
    C("io-straddle-b-first", {"event": "io", "port": 0x7FFF, "size": 2, "dir": "in"}, vmcs=IOB,
      mem={0xB000: 0x01}, exit=True, reason=30, qualification=0x7FFF0009, instr_len=1),
    C("io-straddle-a-last", {"event": "io", "port": 0x7FFF, "size": 2}, vmcs=IOB,
      mem={0xAFFF: 0x80}, exit=True, reason=30, qualification=0x7FFF0001, instr_len=1),
    C("io-straddle-clear", {"event": "io", "port": 0x7FFF, "size": 2}, vmcs=IOB,
      mem={0xB000: 0x02, 0xAFFF: 0x7F}, after=done(1)),
    C("io-b-high", {"event": "io", "port": 0xFFFF}, vmcs=IOB, mem={0xBFFF: 0x80},
      exit=True, reason=30, qualification=0xFFFF0000, instr_len=1),
    C("io-wrap-2", {"event": "io", "port": 0xFFFF, "size": 2}, vmcs=IOB,
      exit=True, reason=30, qualification=0xFFFF0001, instr_len=1),
    C("io-wrap-4", {"event": "io", "port": 0xFFFD, "size": 4}, vmcs=IOB,
      exit=True, reason=30, qualification=0xFFFD0003, instr_len=1),
    C("io-top-no-wrap", {"event": "io", "port": 0xFFFC, "size": 4}, vmcs=IOB, after=done(1)),
    C("io-4byte-last-set", {"event": "io", "port": 0x100, "size": 4}, vmcs=IOB,
      mem={0xA020: 0x08}, exit=True, reason=30, qualification=0x01000003, instr_len=1),
    C("io-4byte-next-set", {"event": "io", "port": 0x100, "size": 4}, vmcs=IOB,
      mem={0xA020: 0xF0, 0xA01F: 0x80}, after=done(1)),
    C("io-bitmaps-override-unconditional", {"event": "io", "port": 0x60},
      vmcs={**IOB, PROC: 1 << 25 | 1 << 24}, after=done(1)),
    C("io-unconditional-ins-rep", {"event": "io", "port": 0x3F8, "dir": "in", "string": True,
                                   "rep": True, "addr": 0x2000, "len": 2},
      vmcs={PROC: 1 << 24}, exit=True, reason=30, qualification=0x03F80038, instr_len=2,
      guest_linear=0x2000),
    C("io-unconditional-outs", {"event": "io", "port": 0x1F0, "size": 2, "string": True,
                                "addr": 0x3000}, vmcs={PROC: 1 << 24}, exit=True, reason=30,
      qualification=0x01F00011, instr_len=1, guest_linear=0x3000),
    C("io-unconditional-imm", {"event": "io", "port": 0x80, "imm": True, "addr": 0x5000,
                               "len": 2}, vmcs={PROC: 1 << 24}, exit=True, reason=30,
      qualification=0x00800040, instr_len=2),
    C("io-no-exiting", {"event": "io", "port": 0x80, "imm": True, "len": 2}, after=done(2)),
    # --- MOV to CR0 / CR4 (reason 28) ----------------------------------------------------------
    C("cr0-write-shadow-equal", {"event": "cr_write", "cr": 0, "value": 0x80000011}, vmcs=CR0MS,
      after=done(3, cr0=0x80000011)),
    C("cr0-write-shadow-differs", {"event": "cr_write", "cr": 0, "value": 0x00000011, "gpr": 5},
      vmcs=CR0MS, exit=True, reason=28, qualification=0x500, instr_len=3),
    C("cr0-write-host-bit-kept", {"event": "cr_write", "cr": 0, "value": 0x80000031},
      vmcs={"CR0_GUEST_HOST_MASK": 0x20, "CR0_READ_SHADOW": 0x20},
      guest={"cr0": 0x80000011}, after=done(3, cr0=0x80000011)),
    C("cr4-write-no-exit", {"event": "cr_write", "cr": 4, "value": 0x6A0, "gpr": 1}, vmcs=CR4MS,
      after=done(3, cr4=0x26A0)),
    C("cr4-write-exit", {"event": "cr_write", "cr": 4, "value": 0x2020, "gpr": 1}, vmcs=CR4MS,
      exit=True, reason=28, qualification=0x104, instr_len=3),
    # --- MOV to CR3 ----------------------------------------------------------------------------
    C("cr3-target-hit", {"event": "cr_write", "cr": 3, "value": 0x6000}, vmcs=CR3T,
      after=done(3, cr3=0x6000)),
    C("cr3-target-beyond-count", {"event": "cr_write", "cr": 3, "value": 0x7000, "gpr": 3},
      vmcs=CR3T, exit=True, reason=28, qualification=0x303, instr_len=3),
    C("cr3-count-0", {"event": "cr_write", "cr": 3, "value": 0x5000},
      vmcs={**CR3T, "CR3_TARGET_COUNT": 0}, exit=True, reason=28, qualification=0x3,
      instr_len=3),
    C("cr3-count-5-as-4", {"event": "cr_write", "cr": 3, "value": 0x8000},
      vmcs={**CR3T, "CR3_TARGET_COUNT": 5}, after=done(3, cr3=0x8000)),
    C("cr3-count-5-no-fifth-target", {"event": "cr_write", "cr": 3, "value": 0},
      vmcs={**CR3T, "CR3_TARGET_COUNT": 5}, exit=True, reason=28, qualification=0x3,
      instr_len=3),
    C("cr3-no-load-exiting", {"event": "cr_write", "cr": 3, "value": 0x9000},
      vmcs={**CR3T, PROC: 1 << 16}, after=done(3, cr3=0x9000)),
    # --- MOV to CR8, TPR below threshold (43) --------------------------------------------------
    C("cr8-write-exit", {"event": "cr_write", "cr": 8, "value": 1, "gpr": 2},
      vmcs={PROC: 1 << 19 | 1 << 21, "TPR_THRESHOLD": 4}, exit=True, reason=28,
      qualification=0x208, instr_len=3),
    C("cr8-write-plain", {"event": "cr_write", "cr": 8, "value": 0x13}, vmcs={"TPR_THRESHOLD": 4},
      after=done(3, tpr=3)),
    C("tpr-below-threshold", {"event": "cr_write", "cr": 8, "value": 3},
      vmcs={PROC: 1 << 21, "TPR_THRESHOLD": 0x14}, guest={"interruptibility": 2},
      exit=True, reason=43, instr_len=3, after=done(3, tpr=3, interruptibility=0)),
    C("tpr-at-threshold", {"event": "cr_write", "cr": 8, "value": 4},
      vmcs={PROC: 1 << 21, "TPR_THRESHOLD": 4}, after=done(3, tpr=4)),
    C("tpr-vid-no-exit", {"event": "cr_write", "cr": 8, "value": 3},
      vmcs={PROC: SEC | 1 << 21, PROC2: 1 << 9, "TPR_THRESHOLD": 4}, after=done(3, tpr=3)),
    C("tpr-vid-secondary-inactive", {"event": "cr_write", "cr": 8, "value": 3, "len": 4},
      vmcs={PROC: 1 << 21, PROC2: 1 << 9, "TPR_THRESHOLD": 4},
      exit=True, reason=43, instr_len=4, after=done(4, tpr=3)),
    # --- MOV from CR ---------------------------------------------------------------------------
    C("cr0-read-never-exits-then-mtf", {"event": "cr_read", "cr": 0},
      vmcs={PROC: 0xFFFFFFFF, "CR0_GUEST_HOST_MASK": 0x80000001, "CR0_READ_SHADOW": 0x1},
      exit=True, reason=37, value=0x31, after=done(3)),
    C("cr0-read-no-mtf", {"event": "cr_read", "cr": 0, "gpr": 7},
      vmcs={PROC: 1 << 15 | 1 << 16, "CR0_GUEST_HOST_MASK": 0x80000001,
            "CR0_READ_SHADOW": 0x1}, value=0x31, after=done(3)),
    C("cr4-read-shadowed", {"event": "cr_read", "cr": 4}, vmcs=CR4MS, value=0x20,
      after=done(3)),
    C("cr3-read-exit", {"event": "cr_read", "cr": 3, "gpr": 1}, vmcs={PROC: 1 << 16},
      exit=True, reason=28, qualification=0x113, instr_len=3),
    C("cr3-read-value", {"event": "cr_read", "cr": 3}, vmcs={PROC: 1 << 15}, value=0x1000,
      after=done(3)),
    C("cr8-read-exit", {"event": "cr_read", "cr": 8, "gpr": 0}, vmcs={PROC: 1 << 20},
      exit=True, reason=28, qualification=0x18, instr_len=3),
    C("cr8-read-value", {"event": "cr_read", "cr": 8, "gpr": 0}, vmcs={PROC: 1 << 19},
      value=5, after=done(3)),
    # --- CLTS ----------------------------------------------------------------------------------
    C("clts-exit", {"event": "clts"}, vmcs={"CR0_GUEST_HOST_MASK": 8, "CR0_READ_SHADOW": 8},
      guest={"cr0": 0x80000039}, exit=True, reason=28, qualification=0x20, instr_len=2),
    C("clts-host-owned-shadow-clear", {"event": "clts"},
      vmcs={"CR0_GUEST_HOST_MASK": 8, "CR0_READ_SHADOW": 0}, guest={"cr0": 0x80000039},
      after=done(2)),
    C("clts-guest-owned", {"event": "clts"}, vmcs={"CR0_READ_SHADOW": 8},
      guest={"cr0": 0x80000039}, after=done(2, cr0=0x80000031)),
    # --- LMSW ----------------------------------------------------------------------------------
    C("lmsw-set-pe-exit", {"event": "lmsw", "value": 1},
      vmcs={"CR0_GUEST_HOST_MASK": 1, "CR0_READ_SHADOW": 0}, guest={"cr0": 0x30},
      exit=True, reason=28, qualification=0x00010030, instr_len=3),
    C("lmsw-pe-owned-no-set", {"event": "lmsw", "value": 0},
      vmcs={"CR0_GUEST_HOST_MASK": 1, "CR0_READ_SHADOW": 0}, guest={"cr0": 0x30},
      after=done(3)),
    C("lmsw-pe-owned-shadow-set", {"event": "lmsw", "value": 1},
      vmcs={"CR0_GUEST_HOST_MASK": 1, "CR0_READ_SHADOW": 1}, guest={"cr0": 0x30},
      after=done(3)),
    C("lmsw-ts-differs-exit", {"event": "lmsw", "value": 0xFFF1},
      vmcs={"CR0_GUEST_HOST_MASK": 8, "CR0_READ_SHADOW": 8},
      exit=True, reason=28, qualification=0xFFF10030, instr_len=3),
    C("lmsw-ts-matches", {"event": "lmsw", "value": 0xA},
      vmcs={"CR0_GUEST_HOST_MASK": 8, "CR0_READ_SHADOW": 8}, after=done(3, cr0=0x80000033)),
    C("lmsw-cannot-clear-pe", {"event": "lmsw", "value": 0}, guest={"cr0": 0x8000003F},
      after=done(3, cr0=0x80000031)),
    C("lmsw-sets-low-bits", {"event": "lmsw", "value": 0xE}, guest={"cr0": 0x80000030},
      after=done(3, cr0=0x8000003E)),
    C("lmsw-sets-pe", {"event": "lmsw", "value": 0xF}, guest={"cr0": 0x30},
      after=done(3, cr0=0x3F)),
    # --- MOV DR (29) ---------------------------------------------------------------------------
    C("dr-write-exit", {"event": "dr_write", "dr": 7, "value": 0x401, "gpr": 4},
      vmcs={PROC: 1 << 23}, exit=True, reason=29, qualification=0x407, instr_len=3),
    C("dr-read-exit", {"event": "dr_read", "dr": 6, "gpr": 15}, vmcs={PROC: 1 << 23},
      exit=True, reason=29, qualification=0xF16, instr_len=3),
    C("dr7-write", {"event": "dr_write", "dr": 7, "value": 0x401}, after=done(3, dr7=0x401)),
    C("dr0-write", {"event": "dr_write", "dr": 0, "value": 0x5}, after=done(3)),
    C("dr7-read", {"event": "dr_read", "dr": 7}, value=0x400, after=done(3)),
    C("dr3-read", {"event": "dr_read", "dr": 3}, value=0, after=done(3)),
    # --- run ------------------------------------------------------------------------------------
    C("run", {"event": "run", "cycles": 100}, vmcs={PROC: 0xFFFFFFFF}),
    # --- monitor trap flag (37) ----------------------------------------------------------------
    C("mtf-rdtsc-value-kept", {"event": "rdtsc"}, vmcs={PROC: MTF},
      exit=True, reason=37, value=0x123456789, after=done(2)),
    C("mtf-rdmsr-value-kept", {"event": "rdmsr", "msr": 0x176}, vmcs={PROC: MTF | 1 << 28,
                                                                      "MSR_BITMAP": 0x7000},
      exit=True, reason=37, value=0x9000, after=done(2)),
    C("mtf-wrmsr", {"event": "wrmsr", "msr": 0x277, "value": 6},
      vmcs={PROC: MTF | 1 << 28, "MSR_BITMAP": 0x7000}, exit=True, reason=37,
      after=done(2, pat=6)),
    C("mtf-hlt", {"event": "hlt"}, vmcs={PROC: MTF}, exit=True, reason=37,
      after=done(1, activity=1)),
    C("mtf-exiting-instruction", {"event": "cpuid"}, vmcs={PROC: MTF},
      exit=True, reason=10, instr_len=2),
    C("mtf-exception-delivered", {"event": "exception", "vector": 13, "error_code": 0},
      vmcs={PROC: MTF}, guest={"activity": 1}, exit=True, reason=37, after={"activity": 0}),
    C("mtf-ud-delivered", {"event": "rdtscp"}, vmcs={PROC: MTF | SEC}, exit=True, reason=37),
    C("mtf-nmi-delivered", {"event": "nmi"}, vmcs={PROC: MTF}, exit=True, reason=37),
    C("mtf-extint-delivered", {"event": "extint", "vector": 0x40}, vmcs={PROC: MTF},
      exit=True, reason=37),
    C("mtf-sipi-ignored", {"event": "sipi", "vector": 1}, vmcs={PROC: MTF}),
    C("mtf-tpr-below-threshold", {"event": "cr_write", "cr": 8, "value": 0},
      vmcs={PROC: MTF | 1 << 21, "TPR_THRESHOLD": 1}, exit=True, reason=43, instr_len=3,
      after=done(3, tpr=0)),
]


def memory(mem):
    return lambda address: mem.get(address, 0)


@pytest.mark.parametrize("event,vmcs,guest,mem,expect", CASES)
def test_case(event, vmcs, guest, mem, expect):
    expect = dict(expect)
    after = {**guest, **expect.pop("after", {})}
    expected = Decision(exit=expect.pop("exit", False), **expect, guest=after)
    args = (copy.deepcopy(event), copy.deepcopy(vmcs), copy.deepcopy(guest))
    got = decide(event, vmcs, guest, memory(mem))
    assert got == expected
    assert (event, vmcs, guest) == args, "decide() modified its arguments"


def test_every_reason_covered():
    produced = {p.values[4].get("reason", 0) for p in CASES if p.values[4].get("exit")}
    assert produced | {7, 8, 52} >= {0, 1, 2, 3, 4, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                     *range(18, 33), 36, 37, 39, 40, 43, 46, 47, 50, 51, 52,
                                     53, 54, 55, 57, 58, 61}


def test_default_length():
    assert DEFAULT_LENGTH == {
        "cpuid": 2, "getsec": 2, "invd": 2, "wbinvd": 2, "pause": 2, "rdtsc": 2, "rdpmc": 2,
        "rdmsr": 2, "wrmsr": 2, "clts": 2, "hlt": 1, "io": 1, "xsetbv": 3, "mwait": 3,
        "monitor": 3, "vmcall": 3, "rdtscp": 3, "cr_write": 3, "cr_read": 3, "dr_write": 3,
        "dr_read": 3, "rdrand": 3, "rdseed": 3, "lmsw": 3, "descriptor": 3, "vminstr": 3,
        "task_switch": 2, "invpcid": 5, "invlpg": 3, "exception": 1,
        "nmi": 0, "extint": 0, "init": 0, "sipi": 0, "triple_fault": 0, "run": 0, "smi": 0, "mem": 0,
    }


def test_reasons():
    assert REASONS == {
        "exception": 0, "nmi": 0, "extint": 1, "triple_fault": 2, "init": 3, "sipi": 4,
        "task_switch": 9, "cpuid": 10, "getsec": 11, "hlt": 12, "invd": 13, "invlpg": 14,
        "rdpmc": 15, "rdtsc": 16, "vmcall": 18, "cr_write": 28, "cr_read": 28, "clts": 28,
        "lmsw": 28, "dr_write": 29, "dr_read": 29, "io": 30, "rdmsr": 31, "wrmsr": 32,
        "mwait": 36, "monitor": 39, "pause": 40, "rdtscp": 51, "wbinvd": 54, "xsetbv": 55,
        "rdrand": 57, "invpcid": 58, "rdseed": 61,
    }


def test_unknown_event():
    with pytest.raises(ValueError):
        decide({"event": "rsm"}, {}, dict(BASE_GUEST), memory({}))


# --- boundary() ------------------------------------------------------------------------------

B = [
    # (id, vmcs, guest changes, at_entry, mtf_pending, timer_expired, expected reason or None)
    ("mtf-at-entry", {PROC: 1 << 22 | 1 << 2}, {"rflags": 0x202}, True, True, True, 37),
    ("mtf-not-at-entry", {}, {}, False, True, False, None),
    ("mtf-entry-not-pending", {}, {}, True, False, False, None),
    ("timer", {PIN: 1 << 6, PROC: 1 << 22 | 1 << 2}, {"rflags": 0x202}, False, False, True, 52),
    ("timer-at-entry", {PIN: 1 << 6}, {}, True, False, True, 52),
    ("nmi-window", {PROC: 1 << 22 | 1 << 2}, {"rflags": 0x202}, False, False, False, 8),
    ("nmi-window-sti-ok", {PROC: 1 << 22}, {"interruptibility": 1}, False, False, False, 8),
    ("nmi-window-blocked-nmi", {PROC: 1 << 22}, {"interruptibility": 8}, False, False, False,
     None),
    ("nmi-window-blocked-movss", {PROC: 1 << 22}, {"interruptibility": 2}, False, False, False,
     None),
    ("nmi-blocked-falls-to-intr", {PROC: 1 << 22 | 1 << 2},
     {"interruptibility": 8, "rflags": 0x202}, False, False, False, 7),
    ("intr-window", {PROC: 1 << 2}, {"rflags": 0x202}, True, False, False, 7),
    ("intr-window-if0", {PROC: 1 << 2}, {"rflags": 0x2}, False, False, False, None),
    ("intr-window-sti", {PROC: 1 << 2}, {"rflags": 0x202, "interruptibility": 1},
     False, False, False, None),
    ("intr-window-movss", {PROC: 1 << 2}, {"rflags": 0x202, "interruptibility": 2},
     False, False, False, None),
    ("intr-window-nmi-blocking-ok", {PROC: 1 << 2}, {"rflags": 0x202, "interruptibility": 8},
     False, False, False, 7),
    ("nothing", {PROC: 0x7FFFFFFF & ~(1 << 22 | 1 << 2)}, {"rflags": 0x202}, True, False,
     False, None),
]


@pytest.mark.parametrize("vmcs,changes,at_entry,mtf_pending,timer_expired,reason",
                         [pytest.param(*b[1:], id=b[0]) for b in B])
def test_boundary(vmcs, changes, at_entry, mtf_pending, timer_expired, reason):
    guest = {**BASE_GUEST, **changes}
    snapshot = dict(guest)
    got = boundary(vmcs, guest, at_entry=at_entry, mtf_pending=mtf_pending,
                   timer_expired=timer_expired)
    assert guest == snapshot
    if reason is None:
        assert got is None
    else:
        assert got == Decision(exit=True, reason=reason, guest=snapshot)


# --- properties: bitmaps as sets of set bits ----------------------------------------------------

@settings(max_examples=300, deadline=None, database=None)
@given(port=st.integers(0, 0xFFFF), size=st.sampled_from([1, 2, 4]),
       set_ports=st.sets(st.integers(0, 0xFFFF), max_size=6), near=st.integers(-3, 3))
def test_io_bitmap_property(port, size, set_ports, near):
    set_ports = set_ports | {(port + near) & 0xFFFF}
    mem = {}
    for p in set_ports:
        addr = (0xB000 if p >= 0x8000 else 0xA000) + (p % 0x8000) // 8
        mem[addr] = mem.get(addr, 0) | 1 << (p % 8)
    touched = [port + i for i in range(size)]
    expect_exit = any(p > 0xFFFF or p in set_ports for p in touched)
    got = decide({"event": "io", "port": port, "size": size}, IOB, dict(BASE_GUEST), memory(mem))
    assert got.exit == expect_exit
    if expect_exit:
        assert got.reason == 30 and got.qualification == port * 0x10000 + size - 1


@settings(max_examples=300, deadline=None, database=None)
@given(msr=st.one_of(st.integers(0, 0x2100), st.integers(0xC0000000 - 0x10, 0xC0002100),
                     st.integers(0, 0xFFFFFFFF)),
       write=st.booleans(), force=st.booleans(),
       set_bits=st.sets(st.tuples(st.booleans(), st.integers(0, 0x3FFF)), max_size=6))
def test_msr_bitmap_property(msr, write, force, set_bits):
    # A set bit is (is_write, index): index bits 12:0 = MSR bits 12:0, index bit 13 = high range.
    high = msr >= 0xC0000000
    key = (write, (msr & 0x1FFF) | (0x2000 if high else 0))
    if force:
        set_bits = set_bits | {key}
    mem = {}
    for is_write, idx in set_bits:
        sub = (0x800 if is_write else 0) + (0x400 if idx & 0x2000 else 0)
        addr = 0x7000 + sub + (idx & 0x1FFF) // 8
        mem[addr] = mem.get(addr, 0) | 1 << (idx % 8)
    in_range = msr <= 0x1FFF or 0xC0000000 <= msr <= 0xC0001FFF
    expect_exit = not in_range or key in set_bits
    event = {"event": "wrmsr" if write else "rdmsr", "msr": msr, "value": 0}
    got = decide(event, MSRB, dict(BASE_GUEST), memory(mem))
    assert got.exit == expect_exit
    assert got.reason == ((32 if write else 31) if expect_exit else 0)
