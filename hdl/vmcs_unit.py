"""The VMCS store and the VMX instruction unit.

Blocks (all :class:`amaranth.lib.wiring.Component`):

* :class:`FieldDecoder` — combinational decode of a VMREAD/VMWRITE encoding register into "supported
  field at dense index *i*" or "unsupported" (Intel SDM vol. 3C §24.11.2, appendix B).
* :class:`VMCSStore` — the on-chip VMCS cache data: ``slots`` × (supported fields) 64-bit words in one
  block RAM, with a synchronous read port and a half-word-masked write port.
* :class:`VMCSUnit` — the VMX instruction sequencer (SDM vol. 3C chapter 31, "VMX instruction
  reference"): VMXON, VMXOFF, VMCLEAR, VMPTRLD, VMPTRST, VMREAD, VMWRITE, VMLAUNCH, VMRESUME, INVEPT,
  INVVPID, VMCALL and RDMSR of the capability MSRs, with the #UD/#GP faults, VMfailInvalid and
  VMfailValid(n) outcomes, VMCS regions in memory behind a Wishbone bus, and the slot cache.

VMCS region layout in memory (ours; SDM §25.2 leaves everything after offset 8 to the implementation):

=========  ====  ==================================================================================
offset     size  contents
=========  ====  ==================================================================================
0x000      4     revision identifier (bits 30:0) and shadow-VMCS indicator (bit 31) — written by software
0x004      4     VMX-abort indicator
0x008      4     launch-state word: bit 0 launched, bit 1 "held by a processor" (set while the VMCS is
                 in the on-chip cache; a region loaded with bit 1 set was dropped by VMXOFF without
                 VMCLEAR, and is *corrupted*: VMRESUME fails with error 6, VMLAUNCH with error 4)
0x010+8k   8     field *k* of :data:`~hwvirt.hdl.vmcs_fields.VMCS_FIELDS` (catalogue order, zero-extended)
=========  ====  ==================================================================================

Cache policy: the current VMCS is always resident. VMPTRLD of a resident VMCS touches no memory.
VMPTRLD of another VMCS reads its revision word, evicts a victim if no slot is free (first free slot,
else round-robin skipping the current VMCS), writing the victim's fields back only if a VMWRITE or
instruction-error update dirtied it, then loads every supported field. VMCLEAR writes a resident
VMCS back (if dirty) and frees its slot. VMXOFF drops the cache without writing back. The revision
word of a resident VMCS is the one read when it was loaded.
"""

from collections import namedtuple

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, enum, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .arch_state import SEGMENTS, ArchState, host_segment_access_rights
from .bus import WishboneSignature
from .capabilities import MSR, VMXCapabilities
from .entry_check_catalogue import CHECKS, CheckGroup
from .ept_walker import EPTWalker, Outcome as WalkOutcome
from .entry_checks import ENTRY_CHECKS, MSR_LOAD_CHECKS, EntryChecker, MSRLoadChecker, entry_fields_layout
from .exit_logic import (ENTRY_FAILURE_BIT, GUEST_MSRS, VMX_INSTRUCTION_EXIT_REASON, ExitDecider, ExitDecision,
                         ExitReason, GuestEvent, GuestEventKind, GuestRegisters, InterruptionType)
from .vmcs_fields import BY_NAME, VMCS_FIELDS, FieldType, FieldWidth


__all__ = [
    "VMXOp", "Outcome", "Fault", "VMInstructionError", "ERROR_DESCRIPTIONS", "Command", "Result", "ProcessorState", "VMXStatus",
    "FieldDecoder", "VMCSStore", "VMCSUnit", "INVALID_POINTER", "REGION_FIELD_BASE", "FANOUT_COPIES",
]

#: The current-VMCS pointer when there is no current VMCS (SDM vol. 3C §25.1).
INVALID_POINTER = (1 << 64) - 1
#: Byte offset of the first field in a VMCS region (our layout).
REGION_FIELD_BASE = 0x10
#: The signal attribute that marks a register whose D is another register, for the FPGA build to
#: copy per group of nearby loads (``hwvirt.fpga.replicate``): ``Signal(attrs={FANOUT_COPIES: 1})``.
FANOUT_COPIES = "fanout_copies"
_LAUNCH_WORD_OFFSET = 0x8

#: Control fields the exit decision reads: gathered at VM entry with the fields the checks read.
EXIT_CONTROL_FIELDS = (
    "PIN_BASED_VM_EXEC_CONTROL", "CPU_BASED_VM_EXEC_CONTROL", "SECONDARY_VM_EXEC_CONTROL", "VM_EXIT_CONTROLS",
    "EXCEPTION_BITMAP", "PAGE_FAULT_ERROR_CODE_MASK", "PAGE_FAULT_ERROR_CODE_MATCH",
    "CR0_GUEST_HOST_MASK", "CR4_GUEST_HOST_MASK", "CR0_READ_SHADOW", "CR4_READ_SHADOW",
    "CR3_TARGET_COUNT", "CR3_TARGET_VALUE0", "CR3_TARGET_VALUE1", "CR3_TARGET_VALUE2", "CR3_TARGET_VALUE3",
    "IO_BITMAP_A", "IO_BITMAP_B", "MSR_BITMAP", "TSC_OFFSET", "TPR_THRESHOLD",
    "VM_EXIT_MSR_STORE_COUNT", "VM_EXIT_MSR_STORE_ADDR", "VM_EXIT_MSR_LOAD_COUNT", "VM_EXIT_MSR_LOAD_ADDR",
)
#: The VM-exit information fields a VM exit writes (SDM vol. 3C §28.2), with the
#: :class:`~hwvirt.hdl.exit_logic.ExitDecision` member each comes from.
EXIT_INFO_FIELDS = {
    "VM_EXIT_REASON": "reason", "EXIT_QUALIFICATION": "qualification", "VM_EXIT_INTR_INFO": "intr_info",
    "VM_EXIT_INTR_ERROR_CODE": "intr_error", "IDT_VECTORING_INFO_FIELD": "idt_info",
    "IDT_VECTORING_ERROR_CODE": "idt_error", "VM_EXIT_INSTRUCTION_LEN": "instr_len",
    "VMX_INSTRUCTION_INFO": "instr_info", "GUEST_LINEAR_ADDRESS": "guest_linear",
    "GUEST_PHYSICAL_ADDRESS": "guest_physical",
}


class VMInstructionError(enum.Enum, shape=5):
    """VM-instruction error numbers, written to VM_INSTRUCTION_ERROR (SDM vol. 3C §31.4, table 31-1)."""
    VMCALL_IN_ROOT                 = 1
    VMCLEAR_INVALID_ADDRESS        = 2
    VMCLEAR_VMXON_POINTER          = 3
    VMLAUNCH_NONCLEAR_VMCS         = 4
    VMRESUME_NONLAUNCHED_VMCS      = 5
    VMRESUME_AFTER_VMXOFF          = 6
    ENTRY_INVALID_CONTROL_FIELD    = 7
    ENTRY_INVALID_HOST_STATE_FIELD = 8
    VMPTRLD_INVALID_ADDRESS        = 9
    VMPTRLD_VMXON_POINTER          = 10
    VMPTRLD_INCORRECT_REVISION     = 11
    UNSUPPORTED_VMCS_COMPONENT     = 12
    VMWRITE_READ_ONLY_COMPONENT    = 13
    VMXON_IN_ROOT                  = 15
    ENTRY_INVALID_EXECUTIVE_VMCS   = 16
    ENTRY_NONLAUNCHED_EXECUTIVE_VMCS = 17
    ENTRY_EXECUTIVE_VMCS_NOT_VMXON = 18
    VMCALL_NONCLEAR_VMCS           = 19
    VMCALL_INVALID_EXIT_CONTROLS   = 20
    VMCALL_INCORRECT_MSEG_REVISION = 22
    VMXOFF_DUAL_MONITOR            = 23
    VMCALL_INVALID_SMM_FEATURES    = 24
    ENTRY_INVALID_EXECUTIVE_CONTROLS = 25
    ENTRY_EVENTS_BLOCKED_BY_MOV_SS = 26
    INVALID_INVEPT_INVVPID_OPERAND = 28


#: Readable meaning of each VM-instruction error, for reports.
ERROR_DESCRIPTIONS = {
    VMInstructionError.VMCALL_IN_ROOT: "VMCALL executed in VMX root operation",
    VMInstructionError.VMCLEAR_INVALID_ADDRESS: "VMCLEAR with invalid physical address",
    VMInstructionError.VMCLEAR_VMXON_POINTER: "VMCLEAR with VMXON pointer",
    VMInstructionError.VMLAUNCH_NONCLEAR_VMCS: "VMLAUNCH with non-clear VMCS",
    VMInstructionError.VMRESUME_NONLAUNCHED_VMCS: "VMRESUME with non-launched VMCS",
    VMInstructionError.VMRESUME_AFTER_VMXOFF: "VMRESUME after VMXOFF (VMCS corrupted)",
    VMInstructionError.ENTRY_INVALID_CONTROL_FIELD: "VM entry with invalid control field(s)",
    VMInstructionError.ENTRY_INVALID_HOST_STATE_FIELD: "VM entry with invalid host-state field(s)",
    VMInstructionError.VMPTRLD_INVALID_ADDRESS: "VMPTRLD with invalid physical address",
    VMInstructionError.VMPTRLD_VMXON_POINTER: "VMPTRLD with VMXON pointer",
    VMInstructionError.VMPTRLD_INCORRECT_REVISION: "VMPTRLD with incorrect VMCS revision identifier",
    VMInstructionError.UNSUPPORTED_VMCS_COMPONENT: "VMREAD/VMWRITE from/to unsupported VMCS component",
    VMInstructionError.VMWRITE_READ_ONLY_COMPONENT: "VMWRITE to read-only VMCS component",
    VMInstructionError.VMXON_IN_ROOT: "VMXON executed in VMX root operation",
    VMInstructionError.ENTRY_INVALID_EXECUTIVE_VMCS: "VM entry with invalid executive-VMCS pointer",
    VMInstructionError.ENTRY_NONLAUNCHED_EXECUTIVE_VMCS: "VM entry with non-launched executive VMCS",
    VMInstructionError.ENTRY_EXECUTIVE_VMCS_NOT_VMXON: "VM entry with executive-VMCS pointer not VMXON pointer",
    VMInstructionError.VMCALL_NONCLEAR_VMCS: "VMCALL with non-clear VMCS",
    VMInstructionError.VMCALL_INVALID_EXIT_CONTROLS: "VMCALL with invalid VM-exit control fields",
    VMInstructionError.VMCALL_INCORRECT_MSEG_REVISION: "VMCALL with incorrect MSEG revision identifier",
    VMInstructionError.VMXOFF_DUAL_MONITOR: "VMXOFF under dual-monitor treatment of SMIs and SMM",
    VMInstructionError.VMCALL_INVALID_SMM_FEATURES: "VMCALL with invalid SMM-monitor features",
    VMInstructionError.ENTRY_INVALID_EXECUTIVE_CONTROLS: "VM entry with invalid VM-execution control fields in executive VMCS",
    VMInstructionError.ENTRY_EVENTS_BLOCKED_BY_MOV_SS: "VM entry with events blocked by MOV SS",
    VMInstructionError.INVALID_INVEPT_INVVPID_OPERAND: "invalid operand to INVEPT/INVVPID",
}


class VMXOp(enum.Enum, shape=4):
    """Instructions the unit executes."""
    VMXON    = 0
    VMXOFF   = 1
    VMCLEAR  = 2
    VMPTRLD  = 3
    VMPTRST  = 4
    VMREAD   = 5
    VMWRITE  = 6
    VMLAUNCH = 7
    VMRESUME = 8
    INVEPT   = 9
    INVVPID  = 10
    VMCALL   = 11
    RDMSR    = 12


class Outcome(enum.Enum, shape=3):
    """Architectural outcome of a command (SDM vol. 3C §31.2 and chapter 27/28)."""
    SUCCEED      = 0  # VMsucceed: CF = ZF = 0
    FAIL_INVALID = 1  # VMfailInvalid: CF = 1
    FAIL_VALID   = 2  # VMfailValid(n): ZF = 1, n in VM_INSTRUCTION_ERROR
    FAULT        = 3  # an exception (#UD or #GP(0)) instead of the instruction
    ENTERED      = 4  # VM entry completed, now in VMX non-root operation
    ENTRY_FAILED = 5  # VM-entry failure (exit reason 33/34 with bit 31)
    EXIT         = 6  # VM exit
    NO_EXIT      = 7  # a guest event that did not exit


class Fault(enum.Enum, shape=2):
    NONE = 0
    UD   = 1  # invalid opcode
    GP   = 2  # general protection, error code 0


class Command(data.Struct):
    """One instruction for the unit, with its operands already fetched by the core.

    ``reg`` is the register operand: the field encoding (VMREAD/VMWRITE), the INVEPT/INVVPID type, or
    the MSR index in bits 31:0 (RDMSR). ``operand`` is the memory (or r/m) operand: the 64-bit region
    pointer (VMXON, VMCLEAR, VMPTRLD), the value to write (VMWRITE), or the 128-bit INVEPT/INVVPID
    descriptor.
    """
    op:      VMXOp
    reg:     64
    operand: 128


class Result(data.Struct):
    """The unit's answer to a :class:`Command`.

    ``value`` holds VMREAD data, the VMPTRST pointer or the RDMSR value; ``error`` the VM-instruction
    error number of a VMfailValid; ``exit_reason`` and ``qualification`` describe a VM exit or a
    VM-entry failure; ``check`` names the VM-entry check that decided a failed entry; ``event`` and
    ``event_error`` describe the event a successful VM entry injected.
    """
    outcome:       Outcome
    fault:         Fault
    error:         5
    value:         64
    exit_reason:   32
    qualification: 64
    check:         8     # 1 + catalogue index of the reported VM-entry check, 0 for none
    event:         32    # VM-entry interruption information of an injected event (bit 31: valid)
    event_error:   32    # its error code
    walk_refs:     8     # a guest memory access: memory references of the translation
    walk_tlb_hit:  1     # … answered by the TLB
    walk_pwc_hits: 5     # … levels skipped by the paging-structure caches


class ProcessorState(data.Struct):
    """The processor state the VMX instructions depend on (SDM vol. 3C §31.1, §31.3)."""
    cr0:             64
    cr4:             64
    efer:            64
    rflags:          64
    feature_control: 64
    cpl:             2
    cs_l:            1
    mov_ss_blocking: 1


class VMXStatus(data.Struct):
    """VMX operating state, for the rest of the processor and for waveforms."""
    in_vmx:   1   # in VMX operation (after VMXON)
    non_root: 1   # in VMX non-root operation (a guest runs)


class FieldDecoder(wiring.Component):
    """Decode a VMREAD/VMWRITE encoding register (SDM vol. 3C §24.11.2, §31.3 VMREAD).

    The encoding is *unsupported* (VMfailValid(12)) when bits 31:15 or bit 12 are set, when bits
    63:32 are set in 64-bit mode, when it names no field the configuration supports, or when it is the
    "high" access (bit 0) of a field that is not 64 bits wide.

    Parameters
    ----------
    fields : sequence of VMCSField
        The supported fields in store order: a field's position is its dense index.

    Members
    -------
    encoding : In(64)
    long_mode : In(1)
        64-bit mode: the register operand is 64 bits wide.
    supported : Out(1)
    index : Out(range(n_fields))
        Dense index among the supported fields (the store's word index).
    width : Out(FieldWidth-shaped 2 bits)
    readonly : Out(1)
        A VM-exit information field (type 1).
    high : Out(1)

    ``index``, ``width`` and ``readonly`` are meaningful only when ``supported`` is 1.
    """

    def __init__(self, fields):
        self._fields = tuple(fields)
        super().__init__({
            "encoding":  In(64),
            "long_mode": In(1),
            "supported": Out(1),
            "index":     Out(range(max(1, len(self._fields)))),
            "width":     Out(2),
            "readonly":  Out(1),
            "high":      Out(1),
        })

    @property
    def fields(self):
        return self._fields

    def elaborate(self, platform):
        m = Module()
        enc = self.encoding
        reserved = (enc[12] | enc[15:32].any() | (self.long_mode & enc[32:64].any()))
        # The encoding's parts (SDM vol. 3C §24.11.2, appendix B): access type (bit 0), index (9:1),
        # type (11:10), width (14:13). Width and type are the field's own; the field is looked up by
        # its width, type and the low bits of its index (every group's indexes are small), a few
        # LUTs deep (timing: a switch over every full encoding was nine LUTs deep).
        index_bits = max(1, max(((f.encoding >> 1) & 0x1FF for f in self._fields), default=0).bit_length())
        if index_bits > 9:
            raise ValueError("a field encoding's index has at most 9 bits")
        key = Cat(enc[1:1 + index_bits], enc[10:12], enc[13:15])
        rows = {}
        for i, field in enumerate(self._fields):
            e = field.encoding
            if e & 1:
                raise ValueError(f"{field.name}: encoding {e:#x} has access type 1 (high); a field is "
                                 f"named by its full encoding")
            rows[((e >> 1) & ((1 << index_bits) - 1)) | ((e >> 10) & 3) << index_bits
                 | ((e >> 13) & 3) << (index_bits + 2)] = i

        def table(bit_of):
            return Const(sum(1 << k for k, i in rows.items() if bit_of(i)), 1 << len(key)).bit_select(key, 1)

        known = table(lambda i: True) & ~enc[1 + index_bits:10].any()
        high_ok = ~enc[0] | (enc[13:15] == FieldWidth.BITS64)
        m.d.comb += [
            self.index.eq(Cat(table(lambda i, b=b: i >> b & 1) for b in range(len(self.index)))),
            self.width.eq(enc[13:15]),
            self.readonly.eq(enc[10:12] == FieldType.EXIT_INFORMATION),
            self.high.eq(enc[0]),
            self.supported.eq(known & high_ok & ~reserved),
        ]
        return m


class VMCSStore(wiring.Component):
    """On-chip storage of the cached VMCSs, banked for wide reads.

    Field *i* of a slot lives in bank ``i mod banks`` at row ``i div banks``; each bank is its own RAM
    of ``slots`` × 2^ceil(log2(rows)) 64-bit words. Two kinds of read share the banks' read ports:

    * a single field (``r_slot``, ``r_index``, ``r_en`` → ``r_data``), for VMREAD and write-back;
    * a whole row of every bank (``g_slot``, ``g_row``, ``g_en`` → ``g_data``), ``banks`` fields a cycle,
      for the VM-entry checker's gather. ``g_en`` has priority.

    Reads take two cycles: the data is there in the second cycle after the enable and held while no
    other read is made. Each bank's block-RAM output goes through a register beside it before the
    bank select and the readers (timing: a block RAM's clock-to-out is 5.8 ns on the ECP5, and the
    eight banks are spread over the die; with one cycle, block RAM → bank select → the bus's write
    data was the unit's critical path at 63814b0). Writes of a
    single field take effect at the clock edge, per 32-bit half (``w_en[0]`` bits 31:0, ``w_en[1]``
    bits 63:32). A row write (``s_slot``, ``s_row``, ``s_data``, one enable per bank in ``s_en``) stores
    up to ``banks`` fields at once, for the guest-state save of a VM exit; a bank it enables ignores
    the single-field write that cycle.
    """

    def __init__(self, *, slots, n_fields, banks=8):
        if banks < 1 or banks & (banks - 1):
            raise ValueError(f"banks must be a power of two, not {banks!r}")
        self._slots, self._n_fields, self._banks = slots, n_fields, banks
        self._rows = max(1, -(-n_fields // banks))
        self._bank_bits = ceil_log2(banks)
        self._row_bits = max(1, ceil_log2(self._rows))
        super().__init__({
            "r_slot":  In(range(slots)),
            "r_index": In(range(max(2, n_fields))),
            "r_en":    In(1),
            "r_data":  Out(64),
            "g_slot":  In(range(slots)),
            "g_row":   In(range(max(2, self._rows))),
            "g_en":    In(1),
            "g_data":  Out(data.ArrayLayout(64, banks)),
            "w_slot":  In(range(slots)),
            "w_index": In(range(max(2, n_fields))),
            "w_data":  In(64),
            "w_en":    In(2),
            "s_slot":  In(range(slots)),
            "s_row":   In(range(max(2, self._rows))),
            "s_data":  In(data.ArrayLayout(64, banks)),
            "s_en":    In(banks),
        })

    @property
    def banks(self):
        return self._banks

    @property
    def rows(self):
        return self._rows

    def elaborate(self, platform):
        m = Module()
        bank_bits, row_bits = self._bank_bits, self._row_bits
        depth = self._slots << row_bits

        def split(index):
            index = index.as_unsigned()
            return index[:bank_bits], index[bank_bits:bank_bits + row_bits]

        def address(slot, row):
            row = row.as_unsigned()[:row_bits]
            return row if self._slots == 1 else Cat(row, slot)

        r_bank, r_row = split(self.r_index)
        w_bank, w_row = split(self.w_index)
        r_bank_q = Signal.like(r_bank) if bank_bits else Const(0, 1)
        r_bank_qq = Signal.like(r_bank) if bank_bits else Const(0, 1)     # with the bank registers
        if bank_bits:
            with m.If(self.r_en & ~self.g_en):
                m.d.sync += r_bank_q.eq(r_bank)
            m.d.sync += r_bank_qq.eq(r_bank_q)
        read_data = []
        for bank in range(self._banks):
            memory = Memory(shape=64, depth=depth, init=[])
            m.submodules[f"bank{bank}"] = memory
            rd = memory.read_port()
            wr = memory.write_port(granularity=32)
            m.d.comb += [
                rd.addr.eq(Mux(self.g_en, address(self.g_slot, self.g_row),
                               address(self.r_slot, r_row))),
                rd.en.eq(self.g_en | self.r_en),
                wr.addr.eq(Mux(self.s_en[bank], address(self.s_slot, self.s_row), address(self.w_slot, w_row))),
                wr.data.eq(Mux(self.s_en[bank], self.s_data[bank], self.w_data)),
                wr.en.eq(Mux(self.s_en[bank], 0b11,
                             Mux(w_bank == bank, self.w_en, 0) if bank_bits else self.w_en)),
            ]
            bank_data = Signal(64, name=f"bank{bank}_data")
            m.d.sync += bank_data.eq(rd.data)
            m.d.comb += self.g_data[bank].eq(bank_data)
            read_data.append(bank_data)
        m.d.comb += self.r_data.eq(Array(read_data)[r_bank_qq] if bank_bits else read_data[0])
        return m


StoreOrder = namedtuple("StoreOrder", "entry_fields exit_info_fields fields first_saved")


def store_order(capabilities):
    """The order of the supported fields in the banked store (:class:`StoreOrder`).

    The fields a VM entry reads come first, so the gather reads as few rows as possible — controls
    and host state (``first_saved`` of them), then guest state; then the VM-exit information fields,
    so that a VM exit saves guest state and exit information in consecutive rows; then the others.
    The VMCS region's memory layout does not depend on it (catalogue order).
    """
    supported = capabilities.supported_fields
    gathered = set(entry_fields_layout().members) | set(EXIT_CONTROL_FIELDS) | {
        f.name for f in supported if f.type in (FieldType.GUEST_STATE, FieldType.HOST_STATE)}
    front = tuple(f for f in supported if f.name in gathered and f.type != FieldType.GUEST_STATE)
    guest = tuple(f for f in supported if f.type == FieldType.GUEST_STATE)
    exit_info = tuple(f for f in supported if f.name in EXIT_INFO_FIELDS)
    entry = front + guest
    rest = tuple(f for f in supported if f not in entry and f not in exit_info)
    return StoreOrder(entry, exit_info, entry + exit_info + rest, len(front))


class VMCSUnit(wiring.Component):
    """The VMX instruction unit with its VMCS cache (SDM vol. 3C chapter 31 and §25.11).

    Parameters
    ----------
    capabilities : VMXCapabilities
        The processor configuration (fields, MSR values, INVEPT/INVVPID types, CR fixed bits).
    cache_slots : int
        Number of VMCSs held on chip (≥ 1).
    banks : int
        Banks of the VMCS store (a power of two): a VM entry reads this many fields a cycle.
    tlb_entries, pwc_entries : int
        Entries of the EPT walker's TLBs and paging-structure caches
        (:class:`~hwvirt.hdl.ept_walker.EPTWalker`).

    Members
    -------
    cmd : In(stream of :class:`Command`)
        Accepted (``ready``) only while the unit is idle, and not in the first clock cycle (the
        sequencer's state is set then; see ``powered``).
    resp : Out(stream of :class:`Result`)
        One result per command, held until ``ready``.
    cpu : In(:class:`ProcessorState`)
    status : Out(:class:`VMXStatus`)
    current_vmcs : Out(64)
        The current-VMCS pointer (all ones when there is none).
    arch_state : Out(:class:`~hwvirt.hdl.arch_state.ArchState`)
        The state the processor runs with: the guest state after a VM entry, the host state after a
        VM-entry failure.
    entry_failures : Out(len(CHECKS))
        Every failing check of the last VM entry that reached the checker, by catalogue index.
    bus : Out(:class:`~hwvirt.hdl.bus.WishboneSignature`)
    """

    def __init__(self, capabilities=None, *, cache_slots=2, banks=8, tlb_entries=8, pwc_entries=8):
        if capabilities is None:
            capabilities = VMXCapabilities()
        if not isinstance(capabilities, VMXCapabilities):
            raise TypeError(f"capabilities must be a VMXCapabilities, not {capabilities!r}")
        if not isinstance(cache_slots, int) or cache_slots < 1:
            raise ValueError(f"cache_slots must be a positive integer, not {cache_slots!r}")
        self.capabilities = capabilities
        self.cache_slots = cache_slots
        self.banks = banks
        self.tlb_entries = tlb_entries
        self.pwc_entries = pwc_entries
        order = store_order(capabilities)
        self.entry_fields, self.exit_info_fields, self.fields = (
            order.entry_fields, order.exit_info_fields, order.fields)
        self._first_saved = order.first_saved
        super().__init__({
            "cmd":            In(wiring.Signature({
                "payload": Out(Command), "valid": Out(1), "ready": In(1)})),
            "guest":          In(wiring.Signature({
                "payload": Out(GuestEvent), "valid": Out(1), "ready": In(1)})),
            "resp":           Out(wiring.Signature({
                "payload": Out(Result), "valid": Out(1), "ready": In(1)})),
            "cpu":            In(ProcessorState),
            "status":         Out(VMXStatus),
            "current_vmcs":   Out(64),
            "arch_state":     Out(ArchState),
            "entry_failures": Out(len(CHECKS)),
            "bus":            Out(WishboneSignature(addr_width=capabilities.maxphyaddr - 3)),
        })

    @property
    def entry_gather_cycles(self):
        """Rows of the banked store a VM entry reads: one per cycle."""
        return max(1, -(-len(self.entry_fields) // self.banks))

    @property
    def exit_save_rows(self):
        """The rows of the banked store a VM exit writes (guest state and exit information)."""
        first = self._first_saved // self.banks
        last = (len(self.entry_fields) + len(self.exit_info_fields) - 1) // self.banks
        return tuple(range(first, last + 1))

    def elaborate(self, platform):
        m = Module()
        caps = self.capabilities
        n_slots = self.cache_slots
        n_fields = len(self.fields)
        maxphy = caps.maxphyaddr

        m.submodules.decoder = decoder = FieldDecoder(self.fields)
        m.submodules.store = store = VMCSStore(slots=n_slots, n_fields=n_fields, banks=self.banks)
        # The store's write ports are driven from registers: what a state writes (``staged``) reaches
        # the store at the end of the next cycle (timing: the decision that picks a write and the
        # RAMs' write ports do not fit one clock cycle). No state reads a field in the cycle after
        # writing it: a command's writes land while it responds, before the next command reads.
        staged = store.signature.flip().create()
        for name in ("w_slot", "w_index", "w_data", "w_en", "s_slot", "s_row", "s_data", "s_en"):
            m.d.sync += getattr(store, name).eq(getattr(staged, name))
        m.submodules.entry_checker = checker = EntryChecker(caps)
        m.submodules.msr_checker = msr_checker = MSRLoadChecker(caps)

        cpu = self.cpu
        long_mode = cpu.efer[10] & cpu.cs_l           # IA32_EFER.LMA = 1 and CS.L = 1
        compat_mode = cpu.efer[10] & ~cpu.cs_l

        # -- architectural state ----------------------------------------------------------------
        in_vmx = Signal()
        non_root = Signal()
        vmxon_ptr = Signal(64)
        current_valid = Signal()
        current_slot = Signal(range(n_slots))
        current_ptr = Signal(64, init=INVALID_POINTER)

        # -- cache metadata, one entry per slot -----------------------------------------------------
        tag_width = maxphy - 12
        slot_valid = Array(Signal(name=f"slot{i}_valid") for i in range(n_slots))
        slot_tag = Array(Signal(tag_width, name=f"slot{i}_tag") for i in range(n_slots))
        slot_dirty = Array(Signal(name=f"slot{i}_dirty") for i in range(n_slots))
        slot_launched = Array(Signal(name=f"slot{i}_launched") for i in range(n_slots))
        slot_corrupt = Array(Signal(name=f"slot{i}_corrupt") for i in range(n_slots))
        slot_shadow = Array(Signal(name=f"slot{i}_shadow") for i in range(n_slots))
        victim_next = Signal(range(n_slots))

        # -- the command being executed ---------------------------------------------------------------
        op = Signal(VMXOp)
        reg = Signal(64)
        operand = Signal(128)
        field_ok = Signal()
        field_index = Signal.like(decoder.index)
        field_width = Signal(2)
        field_ro = Signal()
        field_high = Signal()
        result = Signal(Result)

        m.d.comb += [
            self.status.in_vmx.eq(in_vmx),
            self.status.non_root.eq(non_root),
            self.current_vmcs.eq(current_ptr),
            self.resp.payload.eq(result),
            decoder.encoding.eq(reg),
            decoder.long_mode.eq(long_mode),
        ]

        # -- derived operands -------------------------------------------------------------------------
        pointer = operand[0:64]
        pointer_tag = pointer[12:maxphy]
        reg_value = Mux(long_mode, reg, reg[0:32])       # register operands are 32 bits outside 64-bit mode
        src_value = Mux(long_mode, operand[0:64], operand[0:32])

        # What the pointer operand selects, computed as the command is accepted and registered with it
        # (timing: the cache's tag compares and the priority pick, then the outcome they decide, do not
        # fit one clock cycle). The cache's slots and the VMXON pointer do not change between a
        # command's acceptance and the end of its execution.
        pointer_invalid = Signal()        # not 4-KiB aligned, or beyond the physical-address width
        pointer_is_vmxon = Signal()
        hits = Signal(n_slots)            # the resident slots holding the pointer's VMCS
        hit_slot = Signal(range(n_slots))
        with m.If(self.cmd.valid & self.cmd.ready):
            accepted = self.cmd.payload.operand[0:64]
            matches = [slot_valid[i] & (slot_tag[i] == accepted[12:maxphy]) for i in range(n_slots)]
            m.d.sync += [
                pointer_invalid.eq(accepted[0:12].any() | accepted[maxphy:64].any()),
                pointer_is_vmxon.eq(accepted == vmxon_ptr),
                hits.eq(Cat(matches)),
            ]
            for i in reversed(range(n_slots)):
                with m.If(matches[i]):
                    m.d.sync += hit_slot.eq(i)

        free_any = Signal()
        free_slot = Signal(range(n_slots))
        for i in reversed(range(n_slots)):
            with m.If(~slot_valid[i]):
                m.d.comb += [free_any.eq(1), free_slot.eq(i)]
        victim = Signal(range(n_slots))
        with m.If(free_any):
            m.d.comb += victim.eq(free_slot)
        with m.Elif((n_slots > 1) & current_valid & (victim_next == current_slot)):
            m.d.comb += victim.eq(Mux(victim_next == n_slots - 1, 0, victim_next + 1))
        with m.Else():
            m.d.comb += victim.eq(victim_next)

        # The slot being moved to or from memory, its region base (word address) and the field counter.
        xfer_slot = Signal(range(n_slots))
        xfer_base = Signal(maxphy - 3)        # word address of the region
        xfer_index = Signal(range(max(2, n_fields)))
        xfer_evicting = Signal()              # a write-back for an eviction (else for VMCLEAR)
        last_index = n_fields - 1
        # Word offset of each supported field in the region, by dense index.
        words = [(REGION_FIELD_BASE >> 3) + VMCS_FIELDS.index(f) for f in self.fields]
        assert max(words) < 1 << 9, "the fields must lie in the region's 4 KiB"
        field_word = Array(Const(word, 9) for word in words)
        field_mask = Array(Const((1 << f.bits) - 1, 64) for f in self.fields)
        # The word offset and mask of field ``xfer_index``, registered with it (timing: the look-up
        # and the bus address do not fit one clock cycle). The region is 4 KiB-aligned, so its word
        # address is the base with the offset in its low 9 bits.
        xfer_word = Signal(9)
        xfer_mask = Signal(64)
        xfer_address = Cat(xfer_word, xfer_base[9:])
        launch_address = Cat(Const(_LAUNCH_WORD_OFFSET >> 3, 9), xfer_base[9:])

        # The next field's index, word and mask, and the index after it, registered a step ahead
        # (timing: the tables' look-up from the index just counted did not fit the cycle).
        xfer_next = Signal.like(xfer_index)         # xfer_index + 1
        xfer_next_word = Signal(9)
        xfer_next_mask = Signal(64)
        xfer_after = Signal(len(xfer_index) + 1)    # xfer_index + 2

        def xfer_from_start():
            """Start the transfer at field 0."""
            m.d.sync += [xfer_index.eq(0), xfer_word.eq(words[0]), xfer_mask.eq(field_mask[0].value),
                         xfer_next.eq(1), xfer_after.eq(2)]
            if n_fields > 1:
                m.d.sync += [xfer_next_word.eq(words[1]), xfer_next_mask.eq(field_mask[1].value)]

        def xfer_advance():
            """Go on to field ``xfer_next``."""
            m.d.sync += [xfer_index.eq(xfer_next), xfer_word.eq(xfer_next_word), xfer_mask.eq(xfer_next_mask),
                         xfer_next.eq(xfer_after), xfer_after.eq(xfer_after + 1),
                         xfer_next_word.eq(field_word[xfer_after]), xfer_next_mask.eq(field_mask[xfer_after])]

        # -- capability constants ----------------------------------------------------------------------
        cr0_fixed0, cr0_fixed1 = caps.cr0_fixed
        cr4_fixed0, cr4_fixed1 = caps.cr4_fixed
        cr0 = cpu.cr0
        cr4 = cpu.cr4
        cr0_valid = ((cr0 & cr0_fixed0) == cr0_fixed0) & ((cr0 & ~Const(cr0_fixed1, 64)) == 0)
        cr4_valid = ((cr4 & cr4_fixed0) == cr4_fixed0) & ((cr4 & ~Const(cr4_fixed1, 64)) == 0)
        shadowing = caps.supports("vmcs_shadowing")
        error_index = self.fields.index(BY_NAME["VM_INSTRUCTION_ERROR"])
        exit_reason_index = self.fields.index(BY_NAME["VM_EXIT_REASON"])
        qualification_index = self.fields.index(BY_NAME["EXIT_QUALIFICATION"])

        # What the command's operands and the processor state decide is computed as the command is
        # accepted and registered with it (timing: a table look-up and the decision it feeds do not
        # fit one clock cycle). RDMSR's value comes from the capability table; it is the response's
        # value only if RDMSR succeeds (CPL 0, root operation, a known MSR), else 0, decided here so
        # that Execute writes it whatever its verdict (timing: the verdict stays out of the result
        # value's enable).
        # The table is looked up in blocks of 64 MSRs (the capability MSRs all lie in 0x480-0x4BF): a
        # 6-bit look-up in each block and a compare of the index's upper bits, side by side (timing:
        # a 32-bit compare per MSR and the select after them were nine LUTs deep).
        msr_value = Signal(64)
        msr_known = Signal()
        index = self.cmd.payload.reg[0:32]
        blocks = {}
        for number, value in caps.msrs.items():
            blocks.setdefault(number >> 6, {})[number & 63] = value
        found_value, found = Const(0, 64), Const(0, 1)
        for block, table in sorted(blocks.items()):
            in_block = index[6:32] == block
            known = Const(sum(1 << low for low in table), 64).bit_select(index[0:6], 1)
            value = Array(Const(table.get(low, 0), 64) for low in range(64))[index[0:6]]
            found_value = found_value | Mux(in_block, value, 0)
            found = found | (in_block & known)
        is_feature_control = index == MSR.IA32_FEATURE_CONTROL
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += [msr_value.eq(Mux((cpu.cpl == 0) & ~non_root & (is_feature_control | found),
                                          Mux(is_feature_control, cpu.feature_control, found_value), 0)),
                         msr_known.eq(is_feature_control | found)]
        # The processor-state conditions of the VMX instructions' checks (SDM vol. 3C §31.2, §31.3),
        # as the processor was when the command was accepted.
        cpl0 = Signal()
        mode_ud = Signal()            # real mode, virtual-8086 mode or compatibility mode: #UD
        v86_or_compat = Signal()
        vmxon_gp = Signal()           # VMXON outside VMX operation: the #GP conditions
        cr4_vmxe = Signal()
        m.d.sync += [
            cpl0.eq(cpu.cpl == 0),
            mode_ud.eq(~cpu.cr0[0] | cpu.rflags[17] | compat_mode),
            v86_or_compat.eq(cpu.rflags[17] | compat_mode),
            vmxon_gp.eq((cpu.cpl != 0) | ~cr0_valid | ~cr4_valid |
                        ~cpu.feature_control[0] | ~cpu.feature_control[2]),
            cr4_vmxe.eq(cpu.cr4[13]),
        ]

        # INVEPT / INVVPID operand checks (SDM vol. 3C §31.3, INVEPT and INVVPID), on the operands
        # as the command is accepted.
        ept_vpid_cap = caps.ept_vpid_cap
        inv_type = reg_value

        def invept_operand_bad(kind, descriptor):
            """The INVEPT type is not supported, or a single-context INVEPT's EPTP is not valid."""
            type_ok = Cat(kind == k for k in (1, 2) if caps.invept_type_supported(k)).any()
            eptp = descriptor[0:64]
            memtype, walk = eptp[0:3], eptp[3:6]
            eptp_ok = (
                (((memtype == 0) & bool(ept_vpid_cap >> 8 & 1)) | ((memtype == 6) & bool(ept_vpid_cap >> 14 & 1)))
                & ((walk == 3) & bool(ept_vpid_cap >> 6 & 1) | (walk == 4) & bool(ept_vpid_cap >> 7 & 1))
                & (~eptp[6] | bool(ept_vpid_cap >> 21 & 1))
                & (~eptp[7] | bool(ept_vpid_cap >> 23 & 1))
                & ~eptp[8:12].any()
                & ~eptp[maxphy:64].any()
            )
            return ~type_ok | ((kind == 1) & ~eptp_ok)

        def invvpid_operand_bad(kind, descriptor):
            """The INVVPID type is not supported, descriptor bits 63:16 are set, the VPID is 0 for a
            type other than all-context, or an individual-address INVVPID's address is not canonical."""
            type_ok = Cat(kind == k for k in range(4) if caps.invvpid_type_supported(k)).any()
            vpid, linear = descriptor[0:16], descriptor[64:128]
            canonical = Mux(cpu.cr4[12], (linear[56:64] == 0) | (linear[56:64] == 0xFF),
                            (linear[47:64] == 0) | (linear[47:64] == 0x1FFFF))
            return (~type_ok | descriptor[16:64].any() | ((kind != 2) & (vpid == 0)) |
                    ((kind == 0) & ~canonical))

        invept_bad = Signal()
        invvpid_bad = Signal()
        with m.If(self.cmd.valid & self.cmd.ready):
            accepted_type = Mux(long_mode, self.cmd.payload.reg, self.cmd.payload.reg[0:32])
            m.d.sync += [invept_bad.eq(invept_operand_bad(accepted_type, self.cmd.payload.operand)),
                         invvpid_bad.eq(invvpid_operand_bad(accepted_type, self.cmd.payload.operand))]

        # -- helpers that emit the statements ending a command -----------------------------------------
        def respond(outcome, *, error=None, fault=None, value=None):
            """End the command with ``outcome``. The result is cleared as the command (or guest
            event) is accepted and each path writes ``error``, ``fault`` and ``value`` at most
            once, so only the ones given are written (timing: each of them has a few writers, not
            every response's condition in its enable)."""
            m.d.sync += result.outcome.eq(outcome)
            if error is not None:
                m.d.sync += result.error.eq(error)
            if fault is not None:
                m.d.sync += result.fault.eq(fault)
            if value is not None:
                m.d.sync += result.value.eq(value)
            m.next = "Respond"

        def fault(kind):
            respond(Outcome.FAULT, fault=kind)

        # VMfailValid's error number reaches the VMCS in the first cycle of Respond, from registers
        # (``error_write``, the result's error, the current slot, which no VMfail changes; timing:
        # the many conditions that end in a VMfail and the store's write port did not fit one
        # cycle). It lands before the next command can read it (the staged write's note above).
        error_write = Signal()
        m.d.sync += error_write.eq(0)
        # A VMWRITE that writes: every check it passes but the field's, evaluated in Decode-Field on
        # registers and registered, so that Execute's write is selected by three flip-flops
        # (``vmwrite_go`` and the field's ``field_ok``, ``field_ro``; timing: the decoder and the
        # instruction checks did not fit the cycle before, nor Execute's check tree the write's).
        vmwrite_go = Signal()                     # 1 only in the cycle after Decode-Field
        m.d.sync += vmwrite_go.eq(0)

        def vmfail(number):
            """VMfail(n): VMfailValid(n) with n written to the current VMCS, else VMfailInvalid."""
            with m.If(current_valid):
                respond(Outcome.FAIL_VALID, error=number.value)
                m.d.sync += [slot_dirty[current_slot].eq(1), error_write.eq(1)]
            with m.Else():
                respond(Outcome.FAIL_INVALID)

        # What the VM exit in progress records. A basic exit (the reason only, every other field 0)
        # sets ``exit_basic`` and its reason and leaves ``exit_info`` alone; ``exit_info`` is loaded
        # in two places only, whether or not the decision exits: with the exit decider's decision in
        # Guest-Decide's last cycle, and with the EPT walker's answer. So its ~500 flip-flops take
        # an enable decoded from the sequencer state, not from the decision's verdict (timing).
        exit_info = Signal(ExitDecision)
        exit_basic = Signal()
        exit_basic_reason = Signal.like(exit_info.reason)
        save_row = Signal(range(max(2, store.rows)))
        save_rows = self.exit_save_rows
        # One-hot over save_rows: the row Exit-Save writes this cycle, a register per row (it selects
        # ~500 data bits; timing, like the gather's capture enables).
        save_select = Signal(len(save_rows))

        def start_save():
            m.d.sync += [save_row.eq(save_rows[0]), save_select.eq(1), arch_source_next.eq(0)]
            m.next = "Exit-Save"

        def take_exit(reason):
            """Start a VM exit with the basic ``reason`` only (SDM vol. 3C §28.1; the exits with more
            information are the exit decider's and the EPT walker's): save guest state, then load
            host state."""
            # (The result's qualification is still 0, as cleared when the command or event was
            # accepted: no path writes it before a basic exit.)
            m.d.sync += [exit_basic.eq(1), exit_basic_reason.eq(reason),
                         result.outcome.eq(Outcome.EXIT), result.exit_reason.eq(reason)]
            start_save()

        def vm_exit(reason):
            take_exit(reason.value)

        # The revision identifier of a VMXON region or VMCS just read, compared as it arrives and
        # registered in every cycle; VMXON and VMPTRLD act on it a cycle after the read's ack
        # (timing: the 31-bit compare and the writes and next state it decides did not fit one cycle).
        revision_match = Signal()     # bits 30:0 are this processor's VMCS revision identifier
        revision_shadow = Signal()    # bit 31, the shadow-VMCS indicator
        m.d.sync += [revision_match.eq(self.bus.dat_r[0:31] == caps.revision_id),
                     revision_shadow.eq(self.bus.dat_r[31])]

        def bus_access(address, *, write=False, data=0, sel=0xFF):
            m.d.comb += [
                self.bus.cyc.eq(1),
                self.bus.stb.eq(1),
                self.bus.we.eq(write),
                self.bus.adr.eq(address),
                self.bus.dat_w.eq(data),
                self.bus.sel.eq(sel),
            ]

        exit_reason_of = {VMXOp[name]: reason for name, reason in VMX_INSTRUCTION_EXIT_REASON.items()}

        # -- VM entry (SDM vol. 3C chapter 27) ------------------------------------------------------
        # The fields a VM entry reads are gathered from the banked store, a row (``banks`` fields) a
        # cycle, into registers; the checker evaluates every check on them at once.
        gathered = {f.name: Signal(f.bits, name=f"entry_{f.name.lower()}") for f in self.entry_fields}
        gather_row = Signal(range(max(2, store.rows)))
        gather_last_row = self.entry_gather_cycles - 1
        # Each row's registers take the store's data when it comes, two cycles after the row is read,
        # enabled by a register of their own: a row is ~500 flip-flops, too many for one enable
        # decoded in the same cycle (timing). ``gather_reading`` is one-hot over the rows, the row
        # Entry-Gather reads this cycle (all zero outside Entry-Gather), so each enable is a plain
        # copy of a register, two cycles late, which the build copies per group of nearby loads
        # (``FANOUT_COPIES``, as the state loads' selects below).
        gather_reading = Signal(self.entry_gather_cycles)
        for row in range(self.entry_gather_cycles):
            reading = Signal(name=f"gather_read_row{row}")
            capture = Signal(name=f"gather_capture_row{row}", attrs={FANOUT_COPIES: 1})
            m.d.sync += [reading.eq(gather_reading[row]), capture.eq(reading)]
            with m.If(capture):
                for bank in range(self.banks):
                    index = row * self.banks + bank
                    if index < len(self.entry_fields):
                        target = gathered[self.entry_fields[index].name]
                        m.d.sync += target.eq(store.g_data[bank][:len(target)])

        def field(name):
            return gathered[name] if name in gathered else Const(0, BY_NAME[name].bits)

        layout = entry_fields_layout()
        m.d.comb += [checker.fields[name].eq(field(name)) for name in layout.members]
        link_revision = Signal(32)
        vtpr = Signal(8)
        memory_pdptes = Array(Signal(64, name=f"memory_pdpte{i}") for i in range(4))
        proc, exit_ctls, entry_ctls = (field("CPU_BASED_VM_EXEC_CONTROL"), field("VM_EXIT_CONTROLS"),
                                       field("VM_ENTRY_CONTROLS"))
        proc2 = Mux(proc[31], field("SECONDARY_VM_EXEC_CONTROL"), 0)
        ept_on = proc2[1]
        # The same, registered for the guest's events (the controls do not change after the gather;
        # timing: Guest-Prepare's branches reach the result register).
        ept_on_guest = Signal()
        m.d.sync += ept_on_guest.eq(ept_on)
        ia32e_guest = entry_ctls[9]
        host64 = exit_ctls[9]
        guest_cr0, guest_cr4 = field("GUEST_CR0"), field("GUEST_CR4")
        link = field("VMCS_LINK_POINTER")
        vapic = field("VIRTUAL_APIC_PAGE_ADDR")
        need_link = (link != INVALID_POINTER) & ~link[0:12].any() & ~link[maxphy:64].any()
        need_vtpr = (proc[21] & ~proc2[9] & ~proc2[0] & ~vapic[0:12].any() & ~vapic[maxphy:64].any())
        pae_guest = guest_cr0[31] & guest_cr4[5] & ~ia32e_guest
        need_pdptes = pae_guest & ~ept_on
        pdpte_base = field("GUEST_CR3")[5:32]           # the PDPT is 32-byte aligned below 4 GiB
        pdpte_index = Signal(2)
        m.d.comb += [
            checker.host_lma.eq(cpu.efer[10]),
            checker.current_vmcs.eq(current_ptr),
            checker.link_revision.eq(link_revision),
            checker.vtpr.eq(vtpr),
        ]
        for i in range(4):
            m.d.comb += checker.pdptes[i].eq(Mux(ept_on, field(f"GUEST_PDPTR{i}"), memory_pdptes[i]))

        msr_count = field("VM_ENTRY_MSR_LOAD_COUNT")
        msr_list = field("VM_ENTRY_MSR_LOAD_ADDR")
        msr_number = Signal(32)                        # 1-based entry being processed
        # Its address in 16-byte units, a register of its own (set with the list, counted with
        # ``msr_number``) rather than list + number − 1 (timing: the adder was on the bus request).
        msr_entry = Signal(maxphy - 4)
        # The list's count, and whether this is its last entry: ``msr_number == msr_list_count`` a
        # cycle late, good in an entry's later states (never its first; timing: the 32-bit compare
        # was on the way to the next state).
        msr_list_count = Signal(32)
        msr_last = Signal()
        m.d.sync += msr_last.eq(msr_number == msr_list_count)
        msr_word0 = Signal(64)
        msr_word1 = Signal(64)

        def first_msr_entry(list_address, count):
            m.d.sync += [msr_number.eq(1), msr_entry.eq(list_address[4:maxphy]), msr_list_count.eq(count)]

        def next_msr_entry():
            m.d.sync += [msr_number.eq(msr_number + 1), msr_entry.eq(msr_entry + 1)]

        # The MSR-load checker sees registered words, and its verdicts are registered before the
        # first failure is picked (timing: entry words → checks → first failure → the next state
        # do not fit one clock cycle).
        msr_entry_failures = Signal(len(MSR_LOAD_CHECKS))
        m.d.comb += [
            msr_checker.number.eq(msr_number),
            msr_checker.msr.eq(msr_word0[0:32]),
            msr_checker.reserved.eq(msr_word0[32:64]),
            msr_checker.value.eq(msr_word1),
        ]

        def first_of(candidates, *, name):
            """(any, check, qualification) of the first of ``candidates``, (failed, check number,
            qualification) triples in catalogue order, that failed."""
            any_ = Signal(name=f"{name}_failed")
            index = Signal(8, name=f"{name}_check")
            qualification = Signal(3, name=f"{name}_qualification")
            for failed, number, qual in reversed(candidates):
                with m.If(failed):
                    m.d.comb += [any_.eq(1), index.eq(number), qualification.eq(qual)]
            return any_, index, qualification

        def first_failing(failures, checks, *, group):
            """(any, 1 + catalogue index of the first failing check of ``group``, its qualification)."""
            return first_of([(failures[bit], CHECKS.index(check) + 1, check.qualification)
                             for bit, check in enumerate(checks) if check.group == group],
                            name=group.name.lower())

        entry_positions = [CHECKS.index(c) for c in ENTRY_CHECKS]
        # The first failing entry check of each group is picked in two registered steps (timing: a
        # priority pick over the ~70 checks of a group does not fit one clock cycle): the first of
        # each part of ``PICK_PART`` checks, then the first part with a failure.
        PICK_PART = 16
        entry_groups = (CheckGroup.CONTROLS, CheckGroup.HOST, CheckGroup.GUEST)
        entry_parts = []                  # per group: (group, [(bits of the part's checks), ...])
        for group in entry_groups:
            bits = [bit for bit, check in enumerate(ENTRY_CHECKS) if check.group == group]
            entry_parts.append((group, [bits[i:i + PICK_PART] for i in range(0, len(bits), PICK_PART)]))
        # (failed, check, qualification) of the first failing check of each part, registered.
        part_picks = [[(Signal(name=f"{group.name.lower()}{i}_failed_q"),
                        Signal(8, name=f"{group.name.lower()}{i}_check_q"),
                        Signal(3, name=f"{group.name.lower()}{i}_qualification_q"))
                       for i in range(len(parts))] for group, parts in entry_parts]
        # ... and of each group.
        entry_picks = tuple((Signal(name=f"{name}_failed_q"), Signal(8, name=f"{name}_check_q"),
                             Signal(3, name=f"{name}_qualification_q"))
                            for name in (group.name.lower() for group in entry_groups))
        msr_positions = [CHECKS.index(c) for c in MSR_LOAD_CHECKS]

        # The writes of a whole state area into the architectural state are strobed by registers set
        # the cycle before (timing: the ~2000 flip-flops' input muxes select on a register, not on the
        # sequencer's state and the decisions it acts on). Each strobe is one cycle long. An MSR-load
        # list entry's write is registered too (target and value) and lands a cycle after the entry.
        msr_write = Signal(len(GUEST_MSRS))
        msr_write_value = Signal(64)
        m.d.sync += msr_write.eq(0)
        arch_load_guest = Signal()        # the guest-state area (VM entry; with Entry-Act)
        arch_load_host = Signal()         # the host-state area (VM exit, VM-entry failure)
        arch_load_next = Signal()         # the exit decider's next guest state (with decide())
        # Their ORs, registered with them: the enables of the registers the loads write, so that each
        # register's enable is a flip-flop, not a decode of the three strobes (timing: that decode
        # was a chain of LUTs in front of ~2000 enable pins; the global buffers take the widest).
        arch_load_area = Signal()         # the guest-state or the host-state area
        arch_load_any = Signal()          # either area, or the next guest state
        m.d.sync += [arch_load_guest.eq(0), arch_load_host.eq(0), arch_load_next.eq(0),
                     arch_load_area.eq(0), arch_load_any.eq(0)]

        # Which source the next load takes, a mode held between loads and set at least two cycles
        # before the load it selects for, and its copy a cycle later, the select of the loads'
        # data muxes (~1000 LUT inputs each): a flip-flop whose D is a flip-flop, which the build
        # copies per group of nearby loads (``FANOUT_COPIES``; timing: one flip-flop could not reach
        # its loads across the die in a cycle, and a copy of a strobe decided the cycle before would
        # carry the decision's logic to every copy).
        # ``arch_source_host``: host state, not guest state; 0 from the start of a VM entry until
        # Entry-Pick, which sets it if any check failed (the entry failure's host load comes two
        # cycles later), then 1 from Entry-Act on (every later area load is a VM exit's).
        # ``arch_source_next``: the exit decider's next guest state; 1 while a guest event is
        # prepared and decided, from Guest-Run's last cycle until a save starts or Respond.
        arch_source_host = Signal()
        arch_source_next = Signal()
        arch_select_host = Signal(attrs={FANOUT_COPIES: 1})
        arch_select_next = Signal(attrs={FANOUT_COPIES: 1})
        m.d.sync += [arch_select_host.eq(arch_source_host), arch_select_next.eq(arch_source_next)]

        def strobe_guest_load(load):
            m.d.sync += [arch_load_guest.eq(load), arch_load_area.eq(load), arch_load_any.eq(load)]

        def strobe_host_load():
            m.d.sync += [arch_load_host.eq(1), arch_load_area.eq(1), arch_load_any.eq(1)]

        def strobe_next_load():
            m.d.sync += [arch_load_next.eq(1), arch_load_any.eq(1)]

        def guest_state_loads():
            """SDM vol. 3C §27.3.2: what the guest-state area loads into the processor state, as
            ``{name: (target, value, condition)}`` (condition ``None``: always)."""
            st = self.arch_state
            loads = {
                "cr0": (st.cr0, guest_cr0, None), "cr3": (st.cr3, field("GUEST_CR3"), None),
                "cr4": (st.cr4, guest_cr4, None),
                "rsp": (st.rsp, field("GUEST_RSP"), None), "rip": (st.rip, field("GUEST_RIP"), None),
                "rflags": (st.rflags, field("GUEST_RFLAGS"), None),
                "gdtr.base": (st.gdtr.base, field("GUEST_GDTR_BASE"), None),
                "gdtr.limit": (st.gdtr.limit, field("GUEST_GDTR_LIMIT"), None),
                "idtr.base": (st.idtr.base, field("GUEST_IDTR_BASE"), None),
                "idtr.limit": (st.idtr.limit, field("GUEST_IDTR_LIMIT"), None),
                "sysenter_cs": (st.sysenter_cs, field("GUEST_SYSENTER_CS"), None),
                "sysenter_esp": (st.sysenter_esp, field("GUEST_SYSENTER_ESP"), None),
                "sysenter_eip": (st.sysenter_eip, field("GUEST_SYSENTER_EIP"), None),
                "activity": (st.activity, field("GUEST_ACTIVITY_STATE"), None),
                "interruptibility": (st.interruptibility, field("GUEST_INTERRUPTIBILITY_INFO"), None),
                "pending_dbg": (st.pending_dbg, field("GUEST_PENDING_DBG_EXCEPTIONS"), None),
                # load debug controls, load IA32_PAT
                "dr7": (st.dr7, field("GUEST_DR7"), entry_ctls[2]),
                "debugctl": (st.debugctl, field("GUEST_IA32_DEBUGCTL"), entry_ctls[2]),
                "pat": (st.pat, field("GUEST_IA32_PAT"), entry_ctls[14]),
                # load IA32_EFER; else LMA follows "IA-32e mode guest", LME too with paging
                "efer": (st.efer, Mux(entry_ctls[15], field("GUEST_IA32_EFER"),
                                      Cat(cpu.efer[0:8], Mux(guest_cr0[31], ia32e_guest, cpu.efer[8]),
                                          cpu.efer[9], ia32e_guest, cpu.efer[11:64])), None),
            }
            for seg in SEGMENTS:
                name = seg.upper()
                segment = getattr(st, seg)
                for part, suffix in (("selector", "SELECTOR"), ("base", "BASE"), ("limit", "LIMIT"),
                                     ("ar", "AR_BYTES")):
                    loads[f"{seg}.{part}"] = (getattr(segment, part), field(f"GUEST_{name}_{suffix}"), None)
            return loads

        def host_state_loads():
            """SDM vol. 3C §28.5: what the host-state area loads into the processor state (VM exit,
            VM-entry failure), as ``{name: (value, condition)}`` (condition ``None``: always), by the
            names of :func:`guest_state_loads`, which gives the targets."""
            loads = {
                "cr0": (field("HOST_CR0"), None), "cr3": (field("HOST_CR3"), None),
                "cr4": (field("HOST_CR4"), None),
                "dr7": (Const(0x400, 64), None), "debugctl": (Const(0, 64), None),
                "rsp": (field("HOST_RSP"), None), "rip": (field("HOST_RIP"), None),
                "rflags": (Const(0x2, 64), None),
                "gdtr.base": (field("HOST_GDTR_BASE"), None),
                "gdtr.limit": (Const(0xFFFF, 32), None),
                "idtr.base": (field("HOST_IDTR_BASE"), None),
                "idtr.limit": (Const(0xFFFF, 32), None),
                "sysenter_cs": (field("HOST_IA32_SYSENTER_CS"), None),
                "sysenter_esp": (field("HOST_IA32_SYSENTER_ESP"), None),
                "sysenter_eip": (field("HOST_IA32_SYSENTER_EIP"), None),
                "activity": (Const(0, 32), None),
                "interruptibility": (Const(0, 32), None),
                "pending_dbg": (Const(0, 64), None),
                # load IA32_PAT
                "pat": (field("HOST_IA32_PAT"), exit_ctls[19]),
                # load IA32_EFER; else LMA and LME follow "host address-space size"
                "efer": (Mux(exit_ctls[21], field("HOST_IA32_EFER"),
                             Cat(cpu.efer[0:8], host64, cpu.efer[9], host64, cpu.efer[11:64])), None),
            }
            for seg in SEGMENTS:
                selector = field(f"HOST_{seg.upper()}_SELECTOR") if seg != "ldtr" else Const(0, 16)
                base = {"fs": field("HOST_FS_BASE"), "gs": field("HOST_GS_BASE"),
                        "tr": field("HOST_TR_BASE")}.get(seg, Const(0, 64))
                limit = 0x67 if seg == "tr" else (0 if seg == "ldtr" else 0xFFFF_FFFF)
                loads[f"{seg}.selector"] = (selector, None)
                loads[f"{seg}.base"] = (base, None)
                loads[f"{seg}.limit"] = (Const(limit, 32), None)
                loads[f"{seg}.ar"] = (host_segment_access_rights(seg, host64=host64, selector_null=selector == 0),
                                      None)
            return loads

        def entry_failure(reason, qualification, check):
            """A VM-entry failure (SDM vol. 3C §27.8): host state, exit reason with bit 31, no launch.
            The host state is loaded in the next cycle (Exit-Write-Reason); nothing reads it before
            the response, two cycles later at the earliest."""
            strobe_host_load()
            m.d.sync += [
                result.outcome.eq(Outcome.ENTRY_FAILED),
                result.exit_reason.eq(ENTRY_FAILURE_BIT | reason.value),
                result.qualification.eq(qualification),
                result.check.eq(check),
            ]
            m.next = "Exit-Write-Reason"

        # -- VM exits: the decision for guest events and the state the exit saves ----------------------
        m.submodules.exit_decider = decider = ExitDecider()
        st = self.arch_state
        event = Signal(GuestEvent)
        run_count = Signal(32)
        tsc = Signal(64)                          # the time-stamp counter: one count per clock cycle
        m.d.sync += tsc.eq(tsc + 1)
        # The decider is pipelined (ExitDecider.PREPARE_LATENCY, DECIDE_LATENCY): its inputs are held
        # while it settles, the TSC too (RDTSC reads the TSC of the cycle the guest stopped running).
        event_tsc = Signal(64)
        # (A combinational decider declares no latencies: the unit then gives it one cycle to decide.)
        prepare_latency = getattr(ExitDecider, "PREPARE_LATENCY", 0)
        decide_latency = getattr(ExitDecider, "DECIDE_LATENCY", 1)
        settle = Signal(range(prepare_latency + decide_latency + 2))
        boundary_exit = Signal()                  # Entry-Boundary's verdict, registered
        boundary_reason = Signal.like(decider.boundary_reason)
        tpr = Signal(4)                           # the guest's task priority (CR8)
        timer = Signal(32)                        # the VMX-preemption timer
        timer_expired = Signal()
        timer_rate = caps.misc & 0x1F
        timer_tick = tsc[0:timer_rate].all() if timer_rate else Const(1, 1)
        bitmap_words = Signal(data.ArrayLayout(64, 2))
        bitmap_index = Signal(1)
        pin = field("PIN_BASED_VM_EXEC_CONTROL")
        injection = field("VM_ENTRY_INTR_INFO_FIELD")
        entry_mtf_pending = injection[31] & (
            ((injection[8:11] == 7) & (injection[0:8] == 0)) | ((injection[8:11] != 7) & proc[27]))
        controls = decider.controls
        m.d.comb += [
            decider.event.eq(event), decider.tsc.eq(event_tsc), decider.bitmap_words.eq(bitmap_words),
            decider.timer_expired.eq(timer_expired),
            controls.pin.eq(pin), controls.proc.eq(proc), controls.proc2.eq(proc2), controls.exit.eq(exit_ctls),
            controls.exception_bitmap.eq(field("EXCEPTION_BITMAP")),
            controls.pfec_mask.eq(field("PAGE_FAULT_ERROR_CODE_MASK")),
            controls.pfec_match.eq(field("PAGE_FAULT_ERROR_CODE_MATCH")),
            controls.cr0_mask.eq(field("CR0_GUEST_HOST_MASK")), controls.cr4_mask.eq(field("CR4_GUEST_HOST_MASK")),
            controls.cr0_shadow.eq(field("CR0_READ_SHADOW")), controls.cr4_shadow.eq(field("CR4_READ_SHADOW")),
            controls.cr3_target_count.eq(field("CR3_TARGET_COUNT")),
            controls.io_bitmap_a.eq(field("IO_BITMAP_A")), controls.io_bitmap_b.eq(field("IO_BITMAP_B")),
            controls.msr_bitmap.eq(field("MSR_BITMAP")), controls.tsc_offset.eq(field("TSC_OFFSET")),
            controls.tpr_threshold.eq(field("TPR_THRESHOLD")),
            decider.guest.tpr.eq(tpr),
        ]
        m.d.comb += [controls.cr3_targets[i].eq(field(f"CR3_TARGET_VALUE{i}")) for i in range(4)]
        guest_registers = [name for name, _ in data.Layout.cast(GuestRegisters) if name != "tpr"]
        m.d.comb += [getattr(decider.guest, name).eq(getattr(st, name)) for name in guest_registers]

        # The EPT walker shares the bus: it owns it while the sequencer waits for a translation.
        m.submodules.ept_walker = walker = EPTWalker(
            maxphyaddr=maxphy, tlb_entries=self.tlb_entries, pwc_entries=self.pwc_entries,
            accessed_dirty=bool(caps.ept_vpid_cap >> 21 & 1), execute_only=bool(caps.ept_vpid_cap & 1),
            advanced_info=bool(caps.ept_vpid_cap >> 22 & 1))
        walker_owns_bus = Signal()
        request = walker.req.payload
        m.d.comb += [
            request.eptp.eq(field("EPT_POINTER")), request.vpid.eq(field("VIRTUAL_PROCESSOR_ID")),
            request.access.eq(event.access), request.user.eq(event.user),
            request.gpa.eq(event.value), request.linear.eq(event.value),
            request.linear_valid.eq(event.linear), request.guest_paging.eq(event.linear & st.cr0[31]),
            request.cr3.eq(st.cr3),
            walker.resp.ready.eq(1),
            walker.invalidate.payload.kind.eq(Mux(op == VMXOp.INVEPT, inv_type[0:2], 4 | inv_type[0:2])),
            walker.invalidate.payload.eptp.eq(operand[0:64]),
            walker.invalidate.payload.vpid.eq(operand[0:16]),
            walker.invalidate.payload.linear.eq(operand[64:128]),
            walker.bus.dat_r.eq(self.bus.dat_r), walker.bus.ack.eq(self.bus.ack & walker_owns_bus),
        ]
        with m.If(walker_owns_bus):
            m.d.comb += [self.bus.cyc.eq(walker.bus.cyc), self.bus.stb.eq(walker.bus.stb),
                         self.bus.we.eq(walker.bus.we), self.bus.adr.eq(walker.bus.adr),
                         self.bus.dat_w.eq(walker.bus.dat_w), self.bus.sel.eq(walker.bus.sel)]

        def enter_guest_decide(latency):
            """Go to Guest-Decide, which decides after ``latency`` cycles."""
            m.d.sync += settle.eq(latency)
            if latency == 0:
                strobe_next_load()
            m.next = "Guest-Decide"

        def decide():
            """Apply the exit decision for the current event: the guest state it leaves, then an exit
            or the no-exit result."""
            decision, after = decider.decision, decider.next_guest
            # (The guest registers take ``after`` in this cycle too, strobed by ``arch_load_next``.)
            # The result and the exit information are written whether or not the decision exits,
            # with the verdict as a data select (timing: it reaches no enable of theirs).
            exits = decision.exit
            m.d.sync += [
                tpr.eq(after.tpr), result.value.eq(Mux(decision.value_valid, decision.value, 0)),
                exit_info.eq(decision), exit_basic.eq(0),
                result.outcome.eq(Mux(exits, Outcome.EXIT, Outcome.NO_EXIT)),
                result.exit_reason.eq(Mux(exits, decision.reason, 0)),
                result.qualification.eq(Mux(exits, decision.qualification, 0)),
            ]
            with m.If(exits):
                start_save()
            with m.Else():
                m.next = "Respond"

        # What a VM exit writes to the VMCS, by field: (value, condition) (SDM vol. 3C §28.2–28.3).
        saved_fields = {
            "GUEST_CR0": (st.cr0, 1), "GUEST_CR3": (st.cr3, 1), "GUEST_CR4": (st.cr4, 1),
            "GUEST_DR7": (st.dr7, exit_ctls[2]), "GUEST_IA32_DEBUGCTL": (st.debugctl, exit_ctls[2]),
            "GUEST_RSP": (st.rsp, 1), "GUEST_RIP": (st.rip, 1), "GUEST_RFLAGS": (st.rflags, 1),
            "GUEST_GDTR_BASE": (st.gdtr.base, 1), "GUEST_GDTR_LIMIT": (st.gdtr.limit, 1),
            "GUEST_IDTR_BASE": (st.idtr.base, 1), "GUEST_IDTR_LIMIT": (st.idtr.limit, 1),
            "GUEST_SYSENTER_CS": (st.sysenter_cs, 1), "GUEST_SYSENTER_ESP": (st.sysenter_esp, 1),
            "GUEST_SYSENTER_EIP": (st.sysenter_eip, 1),
            "GUEST_IA32_PAT": (st.pat, exit_ctls[18]), "GUEST_IA32_EFER": (st.efer, exit_ctls[20]),
            "GUEST_PENDING_DBG_EXCEPTIONS": (st.pending_dbg, 1), "GUEST_ACTIVITY_STATE": (st.activity, 1),
            "GUEST_INTERRUPTIBILITY_INFO": (st.interruptibility, 1),
            "VMX_PREEMPTION_TIMER_VALUE": (timer, exit_ctls[22]),
        }
        for seg in SEGMENTS:
            segment = getattr(st, seg)
            for part, name in (("selector", "SELECTOR"), ("base", "BASE"), ("limit", "LIMIT"), ("ar", "AR_BYTES")):
                saved_fields[f"GUEST_{seg.upper()}_{name}"] = (getattr(segment, part), 1)
        for name, member in EXIT_INFO_FIELDS.items():
            basic = exit_basic_reason if member == "reason" else 0
            saved_fields[name] = (Mux(exit_basic, basic, getattr(exit_info, member)), 1)

        exit_store_count = field("VM_EXIT_MSR_STORE_COUNT")
        exit_load_count = field("VM_EXIT_MSR_LOAD_COUNT")

        # The VM-exit MSR-store list: which modelled MSR an entry names (one-hot in GUEST_MSRS, none
        # for the others, whose value is stored as 0), decoded as its index word arrives, and the
        # guest's value of it, selected in the next cycle (timing: the 32-bit compares and the
        # value select do not fit one cycle together).
        msr_store_which = Signal(len(GUEST_MSRS))
        msr_store_value = Signal(64)
        selected_guest_msr = 0
        for i, name in enumerate(GUEST_MSRS.values()):
            selected_guest_msr = selected_guest_msr | Mux(msr_store_which[i], getattr(st, name), 0)

        def exit_msr_load():
            first_msr_entry(field("VM_EXIT_MSR_LOAD_ADDR"), exit_load_count)
            with m.If(exit_load_count != 0):
                m.next = "Exit-MSR-Load-Index"
            with m.Else():
                m.next = "Respond"

        def start_entry():
            m.d.sync += [gather_row.eq(0), gather_reading.eq(1), link_revision.eq(0), vtpr.eq(0),
                         pdpte_index.eq(0), self.entry_failures.eq(0), arch_source_host.eq(0)]
            m.d.sync += [memory_pdptes[i].eq(0) for i in range(4)]
            m.next = "Entry-Gather"

        def load_msr(index, value):
            """An MSR-load-list entry that reaches the architectural state (SDM vol. 3C §27.4), in
            the next cycle (``msr_write``)."""
            m.d.sync += [msr_write.eq(Cat(index == msr for msr in GUEST_MSRS)), msr_write_value.eq(value)]

        def after_link():
            with m.If(need_vtpr):
                m.next = "Entry-Read-VTPR"
            with m.Else():
                after_vtpr()

        def after_vtpr():
            with m.If(need_pdptes):
                m.next = "Entry-Read-PDPTE"
            with m.Else():
                m.next = "Entry-Check"

        def root_instruction():
            """Instruction-specific checks and work in VMX root operation at CPL 0."""
            with m.Switch(op):
                with m.Case(VMXOp.VMXOFF):
                    m.d.sync += [in_vmx.eq(0), current_valid.eq(0),
                                 current_ptr.eq(INVALID_POINTER), vmxon_ptr.eq(0)]
                    m.d.sync += [slot_valid[i].eq(0) for i in range(n_slots)]
                    respond(Outcome.SUCCEED)

                with m.Case(VMXOp.VMCLEAR):
                    with m.If(pointer_invalid):
                        vmfail(VMInstructionError.VMCLEAR_INVALID_ADDRESS)
                    with m.Elif(pointer_is_vmxon):
                        vmfail(VMInstructionError.VMCLEAR_VMXON_POINTER)
                    with m.Else():
                        m.d.sync += xfer_base.eq(pointer[3:maxphy])
                        xfer_from_start()
                        with m.If(hits.any()):
                            m.d.sync += xfer_slot.eq(hit_slot)
                            with m.If(slot_dirty[hit_slot]):
                                m.d.sync += xfer_evicting.eq(0)
                                m.next = "Writeback-Prime"
                            with m.Else():
                                m.next = "VMCLEAR-Write-Launch-State"
                        with m.Else():
                            m.next = "VMCLEAR-Write-Launch-State"

                with m.Case(VMXOp.VMPTRLD):
                    with m.If(pointer_invalid):
                        vmfail(VMInstructionError.VMPTRLD_INVALID_ADDRESS)
                    with m.Elif(pointer_is_vmxon):
                        vmfail(VMInstructionError.VMPTRLD_VMXON_POINTER)
                    with m.Elif(hits.any()):
                        m.d.sync += [current_valid.eq(1), current_slot.eq(hit_slot),
                                     current_ptr.eq(pointer)]
                        respond(Outcome.SUCCEED)
                    with m.Else():
                        m.next = "VMPTRLD-Read-Revision"

                with m.Case(VMXOp.VMPTRST):
                    respond(Outcome.SUCCEED, value=current_ptr)

                with m.Case(VMXOp.VMREAD, VMXOp.VMWRITE):
                    with m.If(~current_valid):
                        respond(Outcome.FAIL_INVALID)
                    with m.Elif(~field_ok):
                        vmfail(VMInstructionError.UNSUPPORTED_VMCS_COMPONENT)
                    with m.Elif(op == VMXOp.VMREAD):
                        m.next = "VMREAD-Read"
                    with m.Elif(field_ro & (not caps.vmwrite_exit_info)):
                        vmfail(VMInstructionError.VMWRITE_READ_ONLY_COMPONENT)
                    with m.Else():                # the write: ``vmwrite_go``, after the sequencer
                        m.d.sync += slot_dirty[current_slot].eq(1)
                        respond(Outcome.SUCCEED)

                with m.Case(VMXOp.VMLAUNCH, VMXOp.VMRESUME):
                    # SDM vol. 3C §31.3 VMLAUNCH/VMRESUME and §27.1 (basic VM-entry checks).
                    with m.If(~current_valid | slot_shadow[current_slot]):
                        respond(Outcome.FAIL_INVALID)
                    with m.Elif(cpu.mov_ss_blocking):
                        vmfail(VMInstructionError.ENTRY_EVENTS_BLOCKED_BY_MOV_SS)
                    with m.Elif(op == VMXOp.VMLAUNCH):
                        with m.If(slot_launched[current_slot] | slot_corrupt[current_slot]):
                            vmfail(VMInstructionError.VMLAUNCH_NONCLEAR_VMCS)
                        with m.Else():
                            start_entry()
                    with m.Else():
                        with m.If(slot_corrupt[current_slot]):
                            vmfail(VMInstructionError.VMRESUME_AFTER_VMXOFF)
                        with m.Elif(~slot_launched[current_slot]):
                            vmfail(VMInstructionError.VMRESUME_NONLAUNCHED_VMCS)
                        with m.Else():
                            start_entry()

                with m.Case(VMXOp.INVEPT, VMXOp.INVVPID):
                    with m.If(Mux(op == VMXOp.INVEPT, invept_bad, invvpid_bad)):
                        vmfail(VMInstructionError.INVALID_INVEPT_INVVPID_OPERAND)
                    with m.Else():
                        m.next = "Invalidate"

                with m.Default():
                    fault(Fault.UD)

        fsm_executing = Signal()
        # A VMREAD reads the field decoded (and registered) at acceptance from the current VMCS while
        # the command executes; the data is there two cycles later (VMREAD-Read, VMREAD-Respond).
        m.d.comb += [
            store.r_slot.eq(current_slot),
            store.r_index.eq(field_index),
            store.r_en.eq(fsm_executing),
        ]
        stored = store.r_data

        # The sequencer's state is one-hot in the synthesized netlist (``fsm_encoding``: Yosys gives
        # each state a flip-flop, so "in state S" on the many paths that start at the state is a
        # register, not a compare of the state's bits). Yosys drops the initial value of a state
        # register it re-encodes, and an FPGA's sync domain may have no reset (the flip-flops start
        # from their initial values), so the state is also set to Idle in the first cycle, when
        # nothing is accepted (``powered`` is 0).
        powered = Signal()
        m.d.sync += powered.eq(1)

        # The result is cleared as a command or a guest event is accepted, after the sequencer (so
        # the clear is a plain synchronous reset, not one that yields to every state's writes:
        # timing; no state writes the result in Idle).
        result_clear = Signal()

        with m.FSM(name="sequencer") as fsm:
            with m.State("Idle"):
                # ``guest.ready`` does not depend on ``guest.valid``: a test bench that reads ready
                # before its valid settles (cocotb) sees the same handshake as one that does not.
                m.d.comb += [self.cmd.ready.eq(powered),
                             self.guest.ready.eq(powered & non_root & ~self.cmd.valid)]
                with m.If(self.cmd.valid & powered):
                    m.d.sync += [
                        op.eq(self.cmd.payload.op),
                        reg.eq(self.cmd.payload.reg),
                        operand.eq(self.cmd.payload.operand),
                    ]
                    m.d.comb += result_clear.eq(1)
                    with m.If((self.cmd.payload.op == VMXOp.VMREAD) | (self.cmd.payload.op == VMXOp.VMWRITE)):
                        m.next = "Decode-Field"
                    with m.Else():
                        m.next = "Execute"
                with m.Elif(self.guest.valid & self.guest.ready):
                    m.d.sync += [event.eq(self.guest.payload), run_count.eq(self.guest.payload.cycles)]
                    m.d.comb += result_clear.eq(1)
                    m.next = "Guest-Run"

            with m.State("Decode-Field"):
                # VMREAD and VMWRITE: the field encoding, decoded and registered (timing: the
                # decode and the store access it selects do not fit one clock cycle).
                m.d.sync += [
                    field_ok.eq(decoder.supported),
                    field_index.eq(decoder.index),
                    field_width.eq(decoder.width),
                    field_ro.eq(decoder.readonly),
                    field_high.eq(decoder.high),
                    # the path to VMWRITE's write in Execute (§31.3 VMWRITE, in the order checked)
                    # (the field's checks are ``field_ok`` and ``field_ro``, registered here too)
                    vmwrite_go.eq((op == VMXOp.VMWRITE) & in_vmx & ~mode_ud & ~non_root & cpl0 & current_valid),
                ]
                m.next = "Execute"

            with m.State("Execute"):
                # Common #UD conditions (SDM vol. 3C §31.2): real mode, virtual-8086 mode,
                # compatibility mode (``mode_ud``, registered at acceptance).
                m.d.comb += fsm_executing.eq(1)
                with m.Switch(op):
                    with m.Case(VMXOp.RDMSR):
                        m.d.sync += result.value.eq(msr_value)      # (0 unless it succeeds)
                        with m.If(~cpl0):
                            fault(Fault.GP)
                        with m.Elif(non_root):
                            vm_exit(ExitReason.RDMSR)
                        with m.Elif(~msr_known):
                            fault(Fault.GP)
                        with m.Else():
                            respond(Outcome.SUCCEED)

                    with m.Case(VMXOp.VMXON):
                        with m.If(mode_ud | ~cr4_vmxe):
                            fault(Fault.UD)
                        with m.Elif(~in_vmx):
                            with m.If(vmxon_gp):
                                fault(Fault.GP)
                            with m.Elif(pointer_invalid):
                                respond(Outcome.FAIL_INVALID)
                            with m.Else():
                                m.next = "VMXON-Read-Revision"
                        with m.Elif(non_root):
                            vm_exit(ExitReason.VMXON)
                        with m.Elif(~cpl0):
                            fault(Fault.GP)
                        with m.Else():
                            vmfail(VMInstructionError.VMXON_IN_ROOT)

                    with m.Case(VMXOp.VMCALL):
                        # VMCALL exits before the mode checks (SDM vol. 3C §31.3, VMCALL).
                        with m.If(~in_vmx):
                            fault(Fault.UD)
                        with m.Elif(non_root):
                            vm_exit(ExitReason.VMCALL)
                        with m.Elif(v86_or_compat):
                            fault(Fault.UD)
                        with m.Elif(~cpl0):
                            fault(Fault.GP)
                        with m.Else():
                            vmfail(VMInstructionError.VMCALL_IN_ROOT)

                    with m.Default():
                        invept_ud = (op == VMXOp.INVEPT) & (not caps.invept_supported())
                        invvpid_ud = (op == VMXOp.INVVPID) & (not caps.invvpid_supported())
                        with m.If(~in_vmx | mode_ud | invept_ud | invvpid_ud):
                            fault(Fault.UD)
                        with m.Elif(non_root):
                            with m.Switch(op):
                                for vmx_op, reason in exit_reason_of.items():
                                    with m.Case(vmx_op):
                                        vm_exit(reason)
                        with m.Elif(~cpl0):
                            fault(Fault.GP)
                        with m.Else():
                            root_instruction()

            with m.State("VMREAD-Read"):
                # (The store's read takes two cycles.)
                m.next = "VMREAD-Respond"
            with m.State("VMREAD-Respond"):
                respond(Outcome.SUCCEED, value=Mux(field_high, stored[32:64], Mux(long_mode, stored, stored[0:32])))

            # -- VMXON: read the revision identifier of the VMXON region (SDM vol. 3C §31.3) -------
            with m.State("VMXON-Read-Revision"):
                bus_access(pointer[3:maxphy])
                with m.If(self.bus.ack):
                    m.next = "VMXON-Check-Revision"
            with m.State("VMXON-Check-Revision"):
                # (``revision_match``: the revision just read, compared and registered.)
                with m.If(revision_match & ~revision_shadow):
                    m.d.sync += [in_vmx.eq(1), non_root.eq(0), vmxon_ptr.eq(pointer),
                                 current_valid.eq(0), current_ptr.eq(INVALID_POINTER)]
                    respond(Outcome.SUCCEED)
                with m.Else():
                    respond(Outcome.FAIL_INVALID)

            # -- VMCLEAR: write back a resident VMCS, then mark the region clear -------------------
            # -- write every field of slot ``xfer_slot`` back to its region (VMCLEAR, eviction) ----
            # A field's read is made before its bus write (field 0 in Writeback-Prime, each next one
            # at the ack of the one before) and waited for (Writeback-Wait: a read takes two cycles).
            with m.State("Writeback-Prime"):
                m.d.comb += [store.r_slot.eq(xfer_slot), store.r_index.eq(0), store.r_en.eq(1)]
                m.next = "Writeback-Wait"
            with m.State("Writeback-Wait"):
                m.next = "Writeback"
            with m.State("Writeback"):
                bus_access(xfer_address, write=True, data=stored)
                m.d.comb += [store.r_slot.eq(xfer_slot), store.r_index.eq(xfer_next)]
                with m.If(self.bus.ack):
                    m.d.comb += store.r_en.eq(1)
                    m.next = "Writeback-Wait"
                    xfer_advance()
                    with m.If(xfer_index == last_index):
                        with m.If(xfer_evicting):
                            m.next = "Evict-Write-Launch-State"
                        with m.Else():
                            m.next = "VMCLEAR-Write-Launch-State"
            with m.State("VMCLEAR-Write-Launch-State"):
                bus_access(launch_address, write=True, data=0, sel=0x0F)
                with m.If(self.bus.ack):
                    with m.If(hits.any()):
                        m.d.sync += slot_valid[hit_slot].eq(0)
                        with m.If(current_valid & (current_slot == hit_slot)):
                            m.d.sync += [current_valid.eq(0), current_ptr.eq(INVALID_POINTER)]
                    respond(Outcome.SUCCEED)

            # -- VMPTRLD of a VMCS that is not resident ----------------------------------------------
            with m.State("VMPTRLD-Read-Revision"):
                bus_access(pointer[3:maxphy])
                with m.If(self.bus.ack):
                    m.next = "VMPTRLD-Check-Revision"
            with m.State("VMPTRLD-Check-Revision"):
                # (``revision_match``: the revision just read, compared and registered.)
                with m.If(~revision_match | (revision_shadow & (not shadowing))):
                    vmfail(VMInstructionError.VMPTRLD_INCORRECT_REVISION)
                with m.Else():
                    m.d.sync += [
                        xfer_slot.eq(victim),
                        slot_shadow[victim].eq(revision_shadow),
                        victim_next.eq(Mux(victim == n_slots - 1, 0, victim + 1)),
                    ]
                    xfer_from_start()
                    with m.If(slot_valid[victim] & slot_dirty[victim]):
                        m.d.sync += xfer_base.eq(Cat(Const(0, 9), slot_tag[victim]))
                        m.d.sync += xfer_evicting.eq(1)
                        m.next = "Writeback-Prime"
                    with m.Elif(slot_valid[victim]):
                        m.d.sync += xfer_base.eq(Cat(Const(0, 9), slot_tag[victim]))
                        m.next = "Evict-Write-Launch-State"
                    with m.Else():
                        m.d.sync += xfer_base.eq(pointer[3:maxphy])
                        m.next = "VMPTRLD-Read-Launch-State"
            with m.State("Evict-Write-Launch-State"):
                launch_word = Cat(slot_launched[xfer_slot], slot_corrupt[xfer_slot])
                bus_access(launch_address, write=True, data=launch_word, sel=0x0F)
                with m.If(self.bus.ack):
                    m.d.sync += [slot_valid[xfer_slot].eq(0), xfer_base.eq(pointer[3:maxphy])]
                    with m.If(current_valid & (current_slot == xfer_slot)):
                        m.d.sync += [current_valid.eq(0), current_ptr.eq(INVALID_POINTER)]
                    m.next = "VMPTRLD-Read-Launch-State"
            with m.State("VMPTRLD-Read-Launch-State"):
                bus_access(launch_address)
                with m.If(self.bus.ack):
                    m.d.sync += [
                        slot_launched[xfer_slot].eq(self.bus.dat_r[0]),
                        slot_corrupt[xfer_slot].eq(self.bus.dat_r[1]),
                    ]
                    xfer_from_start()
                    m.next = "VMPTRLD-Load"
            with m.State("VMPTRLD-Load"):
                bus_access(xfer_address)
                with m.If(self.bus.ack):
                    m.d.comb += [
                        staged.w_slot.eq(xfer_slot),
                        staged.w_index.eq(xfer_index),
                        # Fields are kept zero-extended: stray high bits in a region are dropped.
                        staged.w_data.eq(self.bus.dat_r & xfer_mask),
                        staged.w_en.eq(0b11),
                    ]
                    xfer_advance()
                    with m.If(xfer_index == last_index):
                        m.next = "VMPTRLD-Mark-Held"
            with m.State("VMPTRLD-Mark-Held"):
                launch_word = Cat(slot_launched[xfer_slot], Const(1, 1))
                bus_access(launch_address, write=True, data=launch_word, sel=0x0F)
                with m.If(self.bus.ack):
                    m.d.sync += [
                        slot_valid[xfer_slot].eq(1),
                        slot_tag[xfer_slot].eq(pointer_tag),
                        slot_dirty[xfer_slot].eq(0),
                        current_valid.eq(1),
                        current_slot.eq(xfer_slot),
                        current_ptr.eq(pointer),
                    ]
                    respond(Outcome.SUCCEED)

            # -- VM entry: gather, fetch what the checks need from memory, check, load -------------
            with m.State("Entry-Gather"):
                m.d.comb += [store.g_en.eq(1), store.g_slot.eq(current_slot), store.g_row.eq(gather_row)]
                m.d.sync += [gather_row.eq(gather_row + 1), gather_reading.eq(gather_reading << 1)]
                with m.If(gather_row == gather_last_row):
                    m.next = "Entry-Gathered"
            with m.State("Entry-Gathered"):
                m.next = "Entry-Gathered-Last"
            with m.State("Entry-Gathered-Last"):
                # The last row is captured at the end of this cycle.
                m.next = "Entry-Fetch"
            with m.State("Entry-Fetch"):
                with m.If(need_link):
                    m.next = "Entry-Read-Link"
                with m.Else():
                    after_link()
            with m.State("Entry-Read-Link"):
                bus_access(link[3:maxphy])
                with m.If(self.bus.ack):
                    m.d.sync += link_revision.eq(self.bus.dat_r[0:32])
                    after_link()
            with m.State("Entry-Read-VTPR"):
                bus_access((vapic | 0x80)[3:maxphy])  # page-aligned: no adder
                with m.If(self.bus.ack):
                    m.d.sync += vtpr.eq(self.bus.dat_r[0:8])
                    after_vtpr()
            with m.State("Entry-Read-PDPTE"):
                bus_access(Cat(pdpte_index, pdpte_base))
                with m.If(self.bus.ack):
                    m.d.sync += [memory_pdptes[pdpte_index].eq(self.bus.dat_r), pdpte_index.eq(pdpte_index + 1)]
                    with m.If(pdpte_index == 3):
                        m.next = "Entry-Check"
            with m.State("Entry-Check"):
                # The checks take this cycle; their verdicts are registered before the first
                # failure of each group is picked (timing: the two do not fit one clock cycle).
                m.d.sync += [self.entry_failures[pos].eq(checker.failures[bit])
                             for bit, pos in enumerate(entry_positions)]
                m.next = "Entry-Decide"
            with m.State("Entry-Decide"):
                # The first failure of each part of each group, registered.
                failures = Cat(self.entry_failures[pos] for pos in entry_positions)
                for (group, parts), picks in zip(entry_parts, part_picks):
                    for i, (bits, picked) in enumerate(zip(parts, picks)):
                        first = first_of([(failures[bit], entry_positions[bit] + 1,
                                           ENTRY_CHECKS[bit].qualification) for bit in bits],
                                         name=f"{group.name.lower()}{i}")
                        m.d.sync += Cat(*picked).eq(Cat(*first))
                m.next = "Entry-Pick"
            with m.State("Entry-Pick"):
                # The first failure of each group, registered (timing: picking it and acting on it
                # do not fit one clock cycle). With no failure, Entry-Act loads the guest state.
                for (group, _), picks, picked in zip(entry_parts, part_picks, entry_picks):
                    m.d.sync += Cat(*picked).eq(Cat(*first_of(picks, name=group.name.lower())))
                any_failed = Cat(failed for picks in part_picks for failed, _, _ in picks).any()
                strobe_guest_load(~any_failed)
                m.d.sync += arch_source_host.eq(any_failed)
                m.next = "Entry-Act"
            with m.State("Entry-Act"):
                m.d.sync += arch_source_host.eq(1)
                (ctl_failed, ctl_check, _), (host_failed, host_check, _), \
                    (guest_failed, guest_check, guest_qualification) = entry_picks
                with m.If(ctl_failed):
                    m.d.sync += result.check.eq(ctl_check)
                    vmfail(VMInstructionError.ENTRY_INVALID_CONTROL_FIELD)
                with m.Elif(host_failed):
                    m.d.sync += result.check.eq(host_check)
                    vmfail(VMInstructionError.ENTRY_INVALID_HOST_STATE_FIELD)
                with m.Elif(guest_failed):
                    entry_failure(ExitReason.ENTRY_FAIL_GUEST_STATE, guest_qualification, guest_check)
                with m.Else():                    # the guest state loads now (arch_load_guest)
                    first_msr_entry(msr_list, msr_count)
                    with m.If(msr_count != 0):
                        m.next = "Entry-MSR-Read-Index"
                    with m.Else():
                        m.next = "Entry-Complete"
            with m.State("Entry-MSR-Read-Index"):
                bus_access(Cat(Const(0, 1), msr_entry))
                with m.If(self.bus.ack):
                    m.d.sync += msr_word0.eq(self.bus.dat_r)
                    m.next = "Entry-MSR-Read-Value"
            with m.State("Entry-MSR-Read-Value"):
                bus_access(Cat(Const(1, 1), msr_entry))
                with m.If(self.bus.ack):
                    m.d.sync += msr_word1.eq(self.bus.dat_r)
                    m.next = "Entry-MSR-Check"
            with m.State("Entry-MSR-Check"):
                m.d.sync += msr_entry_failures.eq(msr_checker.failures)
                m.next = "Entry-MSR-Decide"
            with m.State("Entry-MSR-Decide"):
                msr_failed, msr_check, _ = first_failing(msr_entry_failures, MSR_LOAD_CHECKS,
                                                         group=CheckGroup.MSR_LOAD)
                with m.If(msr_failed):
                    m.d.sync += [self.entry_failures[pos].eq(msr_entry_failures[bit])
                                 for bit, pos in enumerate(msr_positions)]
                    entry_failure(ExitReason.ENTRY_FAIL_MSR_LOADING, msr_number, msr_check)
                with m.Else():
                    load_msr(msr_word0[0:32], msr_word1)
                    next_msr_entry()
                    with m.If(msr_last):
                        m.next = "Entry-Complete"
                    with m.Else():
                        m.next = "Entry-MSR-Read-Index"
            with m.State("Entry-Complete"):
                # SDM vol. 3C §27.6, §27.7: inject the event, clear the valid bit of the
                # interruption-information field, mark the VMCS launched, enter non-root operation.
                injection = field("VM_ENTRY_INTR_INFO_FIELD")
                with m.If(injection[31]):
                    m.d.comb += [
                        staged.w_slot.eq(current_slot),
                        staged.w_index.eq(self.fields.index(BY_NAME["VM_ENTRY_INTR_INFO_FIELD"])),
                        staged.w_data.eq(injection[0:31]),
                        staged.w_en.eq(0b11),
                    ]
                    m.d.sync += [
                        slot_dirty[current_slot].eq(1),
                        result.event.eq(injection),
                        result.event_error.eq(Mux(injection[11], field("VM_ENTRY_EXCEPTION_ERROR_CODE"), 0)),
                    ]
                    # A vectoring event (not type 7, "other event") clears blocking by STI and
                    # MOV SS and makes the logical processor active (§27.7.1).
                    with m.If(injection[8:11] != 7):
                        m.d.sync += [self.arch_state.interruptibility[0:2].eq(0),
                                     self.arch_state.activity.eq(0)]
                with m.If(op == VMXOp.VMLAUNCH):
                    m.d.sync += slot_launched[current_slot].eq(1)
                m.d.sync += non_root.eq(1)
                timer_value = field("VMX_PREEMPTION_TIMER_VALUE")
                m.d.sync += [timer.eq(timer_value), timer_expired.eq(pin[6] & (timer_value == 0))]
                # An exit due before the first guest instruction (§27.7.2–27.7.4): a pending MTF
                # exit, the timer loaded with 0, an open NMI or interrupt window. After injecting a
                # vectoring event the windows are left to the next instruction boundary.
                m.d.sync += settle.eq(prepare_latency)
                m.next = "Entry-Boundary"
            with m.State("Entry-Boundary"):
                # The decider's boundary verdict for the state just entered, once it has settled.
                injection = field("VM_ENTRY_INTR_INFO_FIELD")
                m.d.comb += [decider.at_entry.eq(1), decider.mtf_pending.eq(entry_mtf_pending)]
                with m.If(settle != 0):
                    m.d.sync += settle.eq(settle - 1)
                with m.Else():
                    window = ((decider.boundary_reason == ExitReason.NMI_WINDOW.value) |
                              (decider.boundary_reason == ExitReason.INTERRUPT_WINDOW.value))
                    m.d.sync += [boundary_exit.eq(decider.boundary_exit & ~(injection[31] & window)),
                                 boundary_reason.eq(decider.boundary_reason)]
                    m.next = "Entry-Boundary-Act"
            with m.State("Entry-Boundary-Act"):
                # The verdict, registered (timing: the reason's compares and the exit's many
                # register writes do not fit one cycle).
                with m.If(boundary_exit):
                    take_exit(boundary_reason)
                with m.Else():
                    respond(Outcome.ENTERED)

            # -- a VM exit caused by a VMX instruction in non-root operation (SDM vol. 3C §26.1.2) --
            with m.State("Exit-Write-Reason"):
                m.d.comb += [
                    staged.w_slot.eq(current_slot),
                    staged.w_index.eq(exit_reason_index),
                    staged.w_data.eq(result.exit_reason),
                    staged.w_en.eq(0b11),
                ]
                m.next = "Exit-Write-Qualification"
            with m.State("Exit-Write-Qualification"):
                m.d.comb += [
                    staged.w_slot.eq(current_slot),
                    staged.w_index.eq(qualification_index),
                    staged.w_data.eq(result.qualification),
                    staged.w_en.eq(0b11),
                ]
                m.d.sync += [non_root.eq(0), slot_dirty[current_slot].eq(1)]
                exit_msr_load()

            # -- a VM exit (SDM vol. 3C §28.3–28.6): save guest state and exit information a row of
            # the store per cycle, store MSRs, load host state, load MSRs ------------------------------
            with m.State("Exit-Save"):
                # (The row's data and enables: ``save_select``, after the sequencer.)
                m.d.comb += [staged.s_slot.eq(current_slot), staged.s_row.eq(save_row)]
                m.d.sync += [save_row.eq(save_row + 1), save_select.eq(save_select << 1)]
                with m.If(save_row == save_rows[-1]):
                    m.d.sync += slot_dirty[current_slot].eq(1)
                    first_msr_entry(field("VM_EXIT_MSR_STORE_ADDR"), exit_store_count)
                    with m.If(exit_store_count != 0):
                        m.next = "Exit-MSR-Store-Index"
                    with m.Else():
                        strobe_host_load()
                        m.next = "Exit-Load-Host"
            with m.State("Exit-MSR-Store-Index"):
                bus_access(Cat(Const(0, 1), msr_entry))
                with m.If(self.bus.ack):
                    m.d.sync += msr_store_which.eq(Cat(self.bus.dat_r[0:32] == msr for msr in GUEST_MSRS))
                    m.next = "Exit-MSR-Store-Lookup"
            with m.State("Exit-MSR-Store-Lookup"):
                m.d.sync += msr_store_value.eq(selected_guest_msr)
                m.next = "Exit-MSR-Store-Value"
            with m.State("Exit-MSR-Store-Value"):
                bus_access(Cat(Const(1, 1), msr_entry), write=True, data=msr_store_value)
                with m.If(self.bus.ack):
                    next_msr_entry()
                    with m.If(msr_last):
                        strobe_host_load()
                        m.next = "Exit-Load-Host"
                    with m.Else():
                        m.next = "Exit-MSR-Store-Index"
            with m.State("Exit-Load-Host"):
                # The host state loads now (arch_load_host, set on the way here).
                m.d.sync += [non_root.eq(0), timer_expired.eq(0)]
                if caps.misc >> 5 & 1:
                    # "IA-32e mode guest" := IA32_EFER.LMA of the guest (§28.3, IA32_VMX_MISC[5]).
                    m.d.comb += [
                        staged.w_slot.eq(current_slot),
                        staged.w_index.eq(self.fields.index(BY_NAME["VM_ENTRY_CONTROLS"])),
                        staged.w_data.eq(Cat(entry_ctls[0:9], self.arch_state.efer[10], entry_ctls[10:32])),
                        staged.w_en.eq(0b11),
                    ]
                exit_msr_load()
            with m.State("Exit-MSR-Load-Index"):
                bus_access(Cat(Const(0, 1), msr_entry))
                with m.If(self.bus.ack):
                    m.d.sync += msr_word0.eq(self.bus.dat_r)
                    m.next = "Exit-MSR-Load-Value"
            with m.State("Exit-MSR-Load-Value"):
                bus_access(Cat(Const(1, 1), msr_entry))
                with m.If(self.bus.ack):
                    load_msr(msr_word0[0:32], self.bus.dat_r)
                    next_msr_entry()
                    with m.If(msr_last):
                        m.next = "Respond"
                    with m.Else():
                        m.next = "Exit-MSR-Load-Index"

            # -- a guest event in VMX non-root operation (SDM vol. 3C chapter 26) ---------------------
            with m.State("Guest-Run"):
                # The guest runs ``cycles`` clock cycles; the VMX-preemption timer counts down by one
                # each time TSC bit IA32_VMX_MISC[4:0] changes (§26.5.1).
                m.d.sync += event_tsc.eq(tsc)
                with m.If(timer_expired | (run_count == 0)):
                    m.d.sync += [settle.eq(prepare_latency), arch_source_next.eq(1)]
                    m.next = "Guest-Prepare"
                with m.Else():
                    m.d.sync += run_count.eq(run_count - 1)
                    with m.If(pin[6] & timer_tick):
                        m.d.sync += timer.eq(timer - 1)
                        with m.If(timer == 1):
                            m.d.sync += timer_expired.eq(1)
            with m.State("Guest-Prepare"):
                # The decider settles on the event: boundary exits, bitmap words to read.
                with m.If(settle != 0):
                    m.d.sync += settle.eq(settle - 1)
                with m.Elif(decider.boundary_exit):
                    take_exit(decider.boundary_reason)
                with m.Elif((event.kind == GuestEventKind.MEMORY) & ept_on_guest):
                    m.next = "Guest-Walk-Request"
                with m.Elif(event.kind == GuestEventKind.MEMORY):
                    # Without EPT a guest-physical address is the host-physical address.
                    m.d.sync += [result.outcome.eq(Outcome.NO_EXIT), result.value.eq(event.value)]
                    m.next = "Respond"
                with m.Elif(decider.bitmap_reads != 0):
                    m.d.sync += bitmap_index.eq(0)
                    m.next = "Guest-Read-Bitmap"
                with m.Else():
                    # The other inputs have been held PREPARE_LATENCY cycles; DECIDE_LATENCY more.
                    enter_guest_decide(max(decide_latency - 1, 0))
            with m.State("Guest-Read-Bitmap"):
                bus_access(decider.bitmap_addr[bitmap_index][3:maxphy])
                with m.If(self.bus.ack):
                    m.d.sync += [bitmap_words[bitmap_index].eq(self.bus.dat_r), bitmap_index.eq(1)]
                    with m.If(bitmap_index + 1 == decider.bitmap_reads):
                        enter_guest_decide(decide_latency)
            with m.State("Guest-Decide"):
                with m.If(settle != 0):
                    m.d.sync += settle.eq(settle - 1)
                    with m.If(settle == 1):
                        strobe_next_load()
                with m.Else():
                    decide()

            # -- a guest memory access: the EPT walker translates it (SDM vol. 3C §29.3) ------------
            with m.State("Guest-Walk-Request"):
                m.d.comb += walker.req.valid.eq(1)
                with m.If(walker.req.ready):
                    m.next = "Guest-Walk"
            with m.State("Guest-Walk"):
                m.d.comb += walker_owns_bus.eq(1)
                with m.If(walker.resp.valid):
                    walk = walker.resp.payload
                    violation = walk.outcome == WalkOutcome.VIOLATION
                    reason = Mux(violation, ExitReason.EPT_VIOLATION.value, ExitReason.EPT_MISCONFIG.value)
                    # (What an EPT exit records, loaded whatever the outcome: see ``exit_info``. The
                    # value too, as a data select: a #PF's decision overwrites it.)
                    m.d.sync += [
                        result.walk_refs.eq(walk.refs), result.walk_tlb_hit.eq(walk.tlb_hit),
                        result.walk_pwc_hits.eq(walk.pwc_hits),
                        result.value.eq(Mux(walk.outcome == WalkOutcome.OK, walk.hpa, 0)),
                        exit_info.eq(0), exit_info.reason.eq(reason),
                        exit_info.qualification.eq(Mux(violation, walk.qualification, 0)),
                        exit_info.guest_physical.eq(walk.gpa),
                        exit_info.guest_linear.eq(Mux(violation & walk.qualification[7], walk.linear, 0)),
                        exit_basic.eq(0),
                    ]
                    with m.Switch(walk.outcome):
                        with m.Case(WalkOutcome.OK):
                            m.d.sync += result.outcome.eq(Outcome.NO_EXIT)
                            m.next = "Respond"
                        with m.Case(WalkOutcome.VIOLATION, WalkOutcome.MISCONFIG):
                            m.d.sync += [
                                result.outcome.eq(Outcome.EXIT), result.exit_reason.eq(reason),
                                result.qualification.eq(Mux(violation, walk.qualification, 0)),
                            ]
                            start_save()
                        with m.Default():
                            # A fault in the guest's own paging is a #PF in the guest: it goes
                            # through the exception bitmap like any other exception (§26.2).
                            m.d.sync += [
                                event.kind.eq(GuestEventKind.EXCEPTION), event.vector.eq(14),
                                event.event_type.eq(InterruptionType.HARDWARE_EXCEPTION),
                                event.error_code.eq(walk.error_code), event.value.eq(walk.qualification),
                                event.during.eq(0),
                                # Reported with the result if the guest gets it (no exit).
                                result.event.eq(Cat(Const(14, 8), Const(InterruptionType.HARDWARE_EXCEPTION.value, 3),
                                                    Const(1, 1), Const(0, 19), Const(1, 1))),
                                result.event_error.eq(walk.error_code),
                            ]
                            enter_guest_decide(prepare_latency + decide_latency)

            # -- INVEPT / INVVPID: flush the walker's translation caches (SDM vol. 3C §28.3.3.3) ------
            with m.State("Invalidate"):
                m.d.comb += walker.invalidate.valid.eq(1)
                with m.If(walker.invalidate.ready):
                    respond(Outcome.SUCCEED)

            with m.State("Respond"):
                # (After the last MSR-load entry of an exit, once its write has landed.)
                m.d.comb += self.resp.valid.eq(~msr_write.any())
                m.d.sync += arch_source_next.eq(0)
                with m.If(self.resp.valid & self.resp.ready):
                    m.next = "Idle"

        fsm.state.attrs["fsm_encoding"] = "one-hot"
        with m.If(result_clear):
            m.d.sync += result.eq(0)

        # The store writes of VMWRITE (in Execute) and of VMfailValid's error number (Respond's first
        # cycle), from registers; no state writes the store in either cycle.
        with m.If(vmwrite_go & field_ok & ~(field_ro & (not caps.vmwrite_exit_info))):   # (Execute)
            value = operand[0:64]
            m.d.comb += [staged.w_slot.eq(current_slot), staged.w_index.eq(field_index)]
            with m.Switch(field_width):
                with m.Case(FieldWidth.BITS16):
                    m.d.comb += [staged.w_data.eq(value[0:16]), staged.w_en.eq(0b11)]
                with m.Case(FieldWidth.BITS32):
                    m.d.comb += [staged.w_data.eq(value[0:32]), staged.w_en.eq(0b11)]
                with m.Default():
                    with m.If(field_high):
                        m.d.comb += [staged.w_data.eq(value[0:32] << 32), staged.w_en.eq(0b10)]
                    with m.Else():
                        m.d.comb += [staged.w_data.eq(src_value), staged.w_en.eq(0b11)]
        with m.If(error_write):
            m.d.comb += [staged.w_slot.eq(current_slot), staged.w_index.eq(error_index),
                         staged.w_data.eq(result.error), staged.w_en.eq(0b11)]
        with m.If(~powered):
            m.d.sync += fsm.state.eq(fsm.state.init)

        # The state-area loads and MSR-load writes strobed above. No two of them, and none of them and
        # the sequencer's own write (Entry-Complete's injection: interruptibility, activity), write the
        # same register in one cycle: the MSR writes come at least two cycles after the area loads.
        # A register both areas load whatever the controls is enabled by ``arch_load_area`` (or, if
        # the next guest state has it too, ``arch_load_any``) and takes the source the held selects
        # name (``arch_select_host``, ``arch_select_next``); the others (loaded under a control)
        # keep an enable of their own, a strobe.
        guest_loads, host_loads = guest_state_loads(), host_state_loads()
        assert guest_loads.keys() == host_loads.keys()
        for name, (target, guest_value, guest_condition) in guest_loads.items():
            host_value, host_condition = host_loads[name]
            next_value = getattr(decider.next_guest, name) if name in guest_registers else None
            if guest_condition is None and host_condition is None:
                value = Mux(arch_select_host, host_value, guest_value)
                if next_value is None:
                    with m.If(arch_load_area):
                        m.d.sync += target.eq(value)
                else:
                    with m.If(arch_load_any):
                        m.d.sync += target.eq(Mux(arch_select_next, next_value, value))
            else:
                with m.If(arch_load_guest & (1 if guest_condition is None else guest_condition)):
                    m.d.sync += target.eq(guest_value)
                with m.If(arch_load_host & (1 if host_condition is None else host_condition)):
                    m.d.sync += target.eq(host_value)
                if next_value is not None:
                    with m.If(arch_load_next):
                        m.d.sync += target.eq(next_value)
        assert set(guest_registers) <= guest_loads.keys()
        for bit, (_, name) in enumerate(GUEST_MSRS.items()):
            with m.If(msr_write[bit]):
                m.d.sync += getattr(st, name).eq(msr_write_value)

        # Exit-Save's row: each bank's field of the row ``save_select`` picks (zero when none).
        for bank in range(self.banks):
            bank_data, bank_enable = Const(0, 64), Const(0, 1)
            for select, row in zip(save_select, save_rows):
                index = row * self.banks + bank
                if index >= n_fields or self.fields[index].name not in saved_fields:
                    continue
                value, condition = saved_fields[self.fields[index].name]
                bank_data = bank_data | Mux(select, value[:self.fields[index].bits], 0)
                bank_enable = bank_enable | (select & condition)
            m.d.comb += [staged.s_data[bank].eq(bank_data), staged.s_en[bank].eq(bank_enable)]

        # Internal signals a waveform viewer wants (available once the design is elaborated).
        self.debug_signals = {
            "state": fsm.state,
            "store_r_index": store.r_index,
            "store_w_index": store.w_index,
            "store_w_en": store.w_en,
            "store_w_data": store.w_data,
            "arch_load_guest": arch_load_guest,
            "arch_load_host": arch_load_host,
            "arch_load_next": arch_load_next,
            "arch_select_host": arch_select_host,
            "arch_select_next": arch_select_next,
        }
        return m
