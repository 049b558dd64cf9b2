"""A plain-Python reference model of the VMX instruction unit (no Amaranth).

Written from the architecture (Intel SDM vol. 3C chapter 31, "VMX instruction reference", as
summarised in the project's fact sheet §1 and §10) and from the policies the unit documents for
itself in :mod:`hwvirt.hdl.vmcs_unit` (the VMCS-region layout and the on-chip cache). It is the
oracle the hardware tests compare against; it deliberately shares nothing with the gateware except
the field catalogue, the capability MSR values (the configuration both are built from), the
VM-entry check catalogue and the list of fields the checks read (``entry_fields_layout``, used for
its names only). The VM-entry checks themselves are the plain-Python reference checker of
``entry_model.py``.

What it models
--------------
* Processor state (CR0, CR4, IA32_EFER, RFLAGS, IA32_FEATURE_CONTROL, CPL, CS.L, MOV-SS blocking)
  and the #UD / #GP(0) pre-checks of every instruction, in the architectural order.
* VMX operation: outside, root, non-root. A VMX instruction in non-root operation is a VM exit with
  the instruction's basic exit reason; the exit writes VM_EXIT_REASON and EXIT_QUALIFICATION (= 0)
  into the current VMCS and returns to root operation.
* VMfailInvalid / VMfailValid(n): VMfail(n) is VMfailValid(n) when there is a current VMCS (the
  error number is written to VM_INSTRUCTION_ERROR, which dirties the cached VMCS), else
  VMfailInvalid.
* VMCS regions in memory with the unit's layout: revision identifier at offset 0 (bit 31 = shadow
  indicator), launch-state word at offset 8 (bit 0 launched, bit 1 held by the processor), field
  *k* of :data:`~hwvirt.hdl.vmcs_fields.VMCS_FIELDS` at offset 0x10 + 8k (64-bit, zero-extended).
* The VMCS cache of ``cache_slots`` entries with the unit's policy: the current VMCS is always
  resident; VMPTRLD of a resident VMCS touches no memory; otherwise the revision word is read, a
  slot is chosen (the first free slot, else the round-robin victim, skipping the current VMCS), the
  victim is written back (fields only if dirty, launch word always), the launch word is read, every
  supported field is loaded and the launch word is rewritten with bit 1 ("held") set. The
  round-robin pointer becomes (chosen slot + 1) mod N after every load. VMCLEAR writes a resident
  VMCS back (fields if dirty) and always writes launch word 0; VMXOFF drops the cache without
  writing anything. A region loaded with bit 1 set is corrupted: VMLAUNCH fails with error 4,
  VMRESUME with error 6.
* Field access rules: 16/32-bit truncation, the high access (odd encoding) of a 64-bit field is bits
  63:32, register operands are 32 bits outside 64-bit mode (VMWRITE of a 64-bit/natural field then
  clears bits 63:32; VMREAD returns bits 31:0), error 12 for unsupported encodings (bits 31:15 or 12
  set, bits 63:32 set in 64-bit mode, no such field, high access of a non-64-bit field) and error 13
  for VMWRITE of a VM-exit information field unless IA32_VMX_MISC[29] = 1.
* INVEPT / INVVPID type and descriptor checks from IA32_VMX_EPT_VPID_CAP, VMCALL, RDMSR of the
  capability MSRs and IA32_FEATURE_CONTROL.
* VM entry (SDM vol. 3C chapter 27), after the basic checks of VMLAUNCH/VMRESUME (§31.2: no
  current VMCS or a shadow VMCS, MOV-SS blocking, launch state): the consistency checks of the
  check catalogue, decided by the plain-Python reference checker of ``entry_model.py`` on the
  current VMCS's fields (those :func:`~hwvirt.hdl.entry_checks.entry_fields_layout` names; a field
  the configuration lacks reads as 0) and on the values a processor fetches from memory for them:

  - the 32-bit word at the VMCS link pointer, when the pointer is not all ones, 4K-aligned and
    phys-valid (§27.3.1.5), else 0;
  - VTPR, the byte at offset 0x80 of the virtual-APIC page, when 'use TPR shadow' = 1,
    'virtual-interrupt delivery' = 0 and 'virtualize APIC accesses' = 0 (§27.2.1.1; secondary
    controls read as 0 when primary bit 31 is 0) and the page address is 4K-aligned and
    phys-valid, else 0;
  - the PDPTEs (§27.3.1.6): the VMCS fields GUEST_PDPTR0-3 with 'enable EPT', else - for a PAE
    guest (CR0.PG = 1, CR4.PAE = 1, 'IA-32e mode guest' = 0) - the four quadwords at guest CR3
    bits 31:5, else 0;
  - host IA32_EFER.LMA from the processor, the current-VMCS pointer.

  The first failing group in the order of §27.1 decides: a control check is VMfailValid(7), a
  host-state check VMfailValid(8), a guest-state check a VM-entry failure (§27.8: exit reason
  0x80000021 and the check's qualification written to the VMCS, still in root operation, the VMCS
  not launched). Then the VM-entry MSR-load list (§27.4), entry *i* at VM_ENTRY_MSR_LOAD_ADDR +
  16(i - 1) (word 0: MSR index, bits 63:32 reserved; word 1: value): the first failing entry is a
  VM-entry failure with exit reason 0x80000022 and qualification *i*. Otherwise the entry
  succeeds: a valid event in the VM-entry interruption-information field is injected and the
  field's valid bit cleared (§27.6, §27.7), VMLAUNCH marks the VMCS launched, the processor is in
  non-root operation.

Not modelled (the unit does not implement them either): VMCS shadowing in non-root operation, MSR
bitmaps (RDMSR in non-root operation always exits), dual-monitor SMM treatment; the processor state
a VM entry loads (guest state, MSRs) is not part of a result row and is not modelled.

Every instruction method returns a dict shaped like a runner report row: ``outcome`` ("succeed",
"fail_invalid", "fail_valid", "fault", "entered", "exit", "entry_failed"), ``error``, ``fault``
("UD"/"GP"), ``value``, ``exit_reason``, ``qualification``, ``check`` (ID of the check that decided a
failed VM entry), ``checks`` (every failing check ID, in catalogue order, of a VM entry that reached
the checks), ``injected`` (``{vector, type, error_code}`` of the event a VM entry injected);
``None`` where not applicable. The attribute :attr:`VMXModel.bus_words` holds the number of 64-bit
bus transfers the last instruction needed.
"""

from hwvirt.hdl.capabilities import DEFAULT_FEATURES
from hwvirt.hdl.entry_check_catalogue import BY_ID, CHECKS, CheckGroup
from hwvirt.hdl.entry_checks import entry_fields_layout
from hwvirt.hdl.vmcs_fields import BY_NAME, VMCS_FIELDS

import exit_model
from entry_model import reference_failures, reference_msr_entry


__all__ = [
    "VMXModel", "ByteMemory", "CPU_RESET", "EXIT_REASONS", "ROW_KEYS", "INVALID_POINTER",
    "LAUNCH_WORD_OFFSET", "FIELD_BASE", "ENTRY_FIELDS", "ENTRY_FAILURE_BIT", "field_offset",
    "region_words", "step", "scenario", "model_for", "model_rows", "REDUCED_FEATURES",
]

MASK64 = (1 << 64) - 1
MASK32 = (1 << 32) - 1
INVALID_POINTER = MASK64
LAUNCH_WORD_OFFSET = 0x8
FIELD_BASE = 0x10

#: The smallest configuration the tests use: no optional feature but the two a 64-bit host and guest
#: need ('host address-space size', 'IA-32e mode guest': control bits, no fields): 115 fields.
REDUCED_FEATURES = {name: name in ("host_address_space_size", "ia32e_mode_guest") for name in DEFAULT_FEATURES}

#: Keys of a result row the model predicts.
ROW_KEYS = ("outcome", "error", "fault", "value", "exit_reason", "qualification", "check", "checks",
            "injected")

#: Basic exit reasons of the instructions (SDM vol. 3C appendix C).
EXIT_REASONS = {
    "vmcall": 18, "vmclear": 19, "vmlaunch": 20, "vmptrld": 21, "vmptrst": 22, "vmread": 23,
    "vmresume": 24, "vmwrite": 25, "vmxoff": 26, "vmxon": 27, "rdmsr": 31, "invept": 50,
    "invvpid": 53,
}

#: A 64-bit-mode processor at CPL 0 that may execute VMXON (same as the scenario defaults).
CPU_RESET = {
    "cr0": 0x8005_0033, "cr4": 0x2020, "efer": 0xD01, "cpl": 0, "feature_control": 0x5,
    "rflags": 0x2, "cs_l": 1, "mov_ss_blocking": 0,
}

# Architectural MSR indices (SDM vol. 4, table 2-2).
_FEATURE_CONTROL = 0x3A
_BASIC, _PROCBASED, _MISC = 0x480, 0x482, 0x485
_CR0_FIXED0, _CR0_FIXED1, _CR4_FIXED0, _CR4_FIXED1 = 0x486, 0x487, 0x488, 0x489
_PROCBASED2, _EPT_VPID_CAP = 0x48B, 0x48C

_WIDTH_BITS = {0: 16, 1: 64, 2: 32, 3: 64}      # encoding bits 14:13 → storage width (Intel 64)
_CATALOGUE_INDEX = {f.encoding: k for k, f in enumerate(VMCS_FIELDS)}
_ENC_VM_INSTRUCTION_ERROR = 0x4400
_ENC_VM_EXIT_REASON = 0x4402
#: MSR → (guest field a VM exit saves it to, width mask, VM-exit control that makes it saved or None).
_SAVED_MSRS = {0x174: ("GUEST_SYSENTER_CS", MASK32, None), 0x175: ("GUEST_SYSENTER_ESP", MASK64, None),
               0x176: ("GUEST_SYSENTER_EIP", MASK64, None), 0x1D9: ("GUEST_IA32_DEBUGCTL", MASK64, 2),
               0x277: ("GUEST_IA32_PAT", MASK64, 18), 0xC000_0080: ("GUEST_IA32_EFER", MASK64, 20)}
#: The exit-information fields an exit without event information writes as 0 (the unit writes
#: every one of them on every exit).
_EXIT_INFO_ZEROED = ("EXIT_QUALIFICATION", "VM_EXIT_INTR_INFO", "VM_EXIT_INTR_ERROR_CODE",
                     "IDT_VECTORING_INFO_FIELD", "IDT_VECTORING_ERROR_CODE", "VM_EXIT_INSTRUCTION_LEN",
                     "VMX_INSTRUCTION_INFO", "GUEST_LINEAR_ADDRESS", "GUEST_PHYSICAL_ADDRESS")
_ENC_EXIT_QUALIFICATION = 0x6400
_ENC_INTR_INFO = BY_NAME["VM_ENTRY_INTR_INFO_FIELD"].encoding

#: Exit reasons of a VM-entry failure (SDM vol. 3C appendix C, with bit 31 "VM-entry failure").
ENTRY_FAILURE_BIT = 1 << 31
#: The VMCS fields the VM-entry checks read (the checker's inputs), then those the sequencer needs.
ENTRY_FIELDS = tuple(entry_fields_layout().members)
_ENTRY_EXTRA = ("VM_ENTRY_MSR_LOAD_COUNT", "VM_ENTRY_MSR_LOAD_ADDR", "VM_ENTRY_INTR_INFO_FIELD",
                "VM_ENTRY_EXCEPTION_ERROR_CODE")
_CATALOGUE_POSITION = {c.id: i for i, c in enumerate(CHECKS)}


def field_offset(encoding):
    """Byte offset of a (full-encoding) field in a VMCS region: 0x10 + 8 × catalogue index."""
    return FIELD_BASE + 8 * _CATALOGUE_INDEX[encoding]


def region_words():
    """Number of 64-bit words the layout uses: revision/abort, launch word, every catalogue field."""
    return 2 + len(VMCS_FIELDS)


def _bit(value, n):
    return (value >> n) & 1


class ByteMemory(dict):
    """Sparse byte memory: address → byte; missing bytes read as 0."""

    def read(self, address, length):
        return bytes(self.get(address + i, 0) for i in range(length))

    def write(self, address, payload):
        for i, byte in enumerate(payload):
            self[address + i] = byte


def _read_int(memory, address, nbytes):
    return int.from_bytes(bytes(memory.get(address + i, 0) for i in range(nbytes)), "little")


def _write_int(memory, address, value, nbytes):
    for i, byte in enumerate((value & ((1 << (8 * nbytes)) - 1)).to_bytes(nbytes, "little")):
        memory[address + i] = byte


class _Slot:
    """One cache entry: a VMCS held by the processor."""

    def __init__(self, pointer, fields, launched, corrupt, shadow):
        self.pointer = pointer
        self.fields = fields            # full encoding -> 64-bit value
        self.dirty = False
        self.launched = launched
        self.corrupt = corrupt
        self.shadow = shadow


class VMXModel:
    """Reference model of one logical processor's VMX instruction unit.

    Parameters
    ----------
    capabilities : hwvirt.hdl.capabilities.VMXCapabilities
        Only its MSR values (``msrs``), ``maxphyaddr`` and field existence are used.
    cache_slots : int
        Number of VMCSs the processor holds on chip.
    memory : dict-like
        Byte-addressed physical memory (address → byte, missing = 0); read and written in place.
    cpu : dict, optional
        Initial processor state (keys of :data:`CPU_RESET`).
    """

    def __init__(self, capabilities, cache_slots=2, memory=None, cpu=None):
        if cache_slots < 1:
            raise ValueError("cache_slots must be at least 1")
        self.caps = capabilities
        self.msrs = dict(capabilities.msrs)
        self.maxphyaddr = capabilities.maxphyaddr
        self.fields = tuple(f for f in VMCS_FIELDS if capabilities.field_supported(f))
        self._by_encoding = {f.encoding: f for f in self.fields}
        self.memory = memory if memory is not None else ByteMemory()
        self.cpu = dict(CPU_RESET)
        if cpu:
            self.cpu.update(cpu)
        self.in_vmx = False
        self.non_root = False
        self.vmxon_pointer = None
        self.slots = [None] * cache_slots
        self.current = None             # slot index of the current VMCS, or None
        self.injected_vectoring = False  # the last VM entry injected a vectoring event
        self.msr_loaded = {}             # … and set these MSRs from its MSR-load list
        self.victim_next = 0
        self.bus_words = 0
        self.msr_entries_checked = 0     # VM-entry MSR-load entries the last instruction checked
        self.fields_written_back = 0     # VMCS fields the last instruction wrote back to memory

    # -- configuration answers, from the MSR values (SDM vol. 3D appendix A) ---------------------

    def _msr(self, index):
        return self.msrs.get(index, 0)

    @property
    def revision_id(self):
        return self._msr(_BASIC) & 0x7FFF_FFFF

    def _secondary_allowed1(self, bit):
        # A secondary control exists only with "activate secondary controls" (primary bit 31).
        return bool(_bit(self._msr(_PROCBASED), 63) and _bit(self._msr(_PROCBASED2), 32 + bit))

    @property
    def shadowing(self):
        return self._secondary_allowed1(14)

    @property
    def ept(self):
        return self._secondary_allowed1(1)

    @property
    def vpid(self):
        return self._secondary_allowed1(5)

    @property
    def ept_vpid_cap(self):
        return self._msr(_EPT_VPID_CAP)

    @property
    def vmwrite_exit_info(self):
        return bool(_bit(self._msr(_MISC), 29))

    # -- processor modes -----------------------------------------------------------------------

    def set_cpu(self, **state):
        for key in state:
            if key not in CPU_RESET:
                raise KeyError(f"unknown processor-state key {key!r}")
        self.cpu.update(state)

    @property
    def long_mode(self):
        """64-bit mode: IA32_EFER.LMA = 1 and CS.L = 1."""
        return bool(_bit(self.cpu["efer"], 10) and self.cpu["cs_l"])

    @property
    def compat_mode(self):
        return bool(_bit(self.cpu["efer"], 10) and not self.cpu["cs_l"])

    def _mode_ud(self):
        """Real mode, virtual-8086 mode or compatibility mode: #UD for the VMX instructions."""
        return (not _bit(self.cpu["cr0"], 0)) or bool(_bit(self.cpu["rflags"], 17)) or self.compat_mode

    def _reg(self, value):
        """A register operand: 64 bits in 64-bit mode, else 32 bits."""
        return value & (MASK64 if self.long_mode else MASK32)

    @staticmethod
    def _fixed_ok(value, fixed0, fixed1):
        return (value & fixed0) == fixed0 and (value & ~fixed1 & MASK64) == 0

    def _pointer_invalid(self, pointer):
        return bool(pointer & 0xFFF) or bool(pointer >> self.maxphyaddr)

    # -- results -------------------------------------------------------------------------------

    @staticmethod
    def _row(outcome, **kw):
        row = dict.fromkeys(ROW_KEYS)
        row["outcome"] = outcome
        row.update(kw)
        return row

    def _succeed(self, value=None):
        return self._row("succeed", value=value)

    def _fault(self, kind):
        return self._row("fault", fault=kind)

    def _fail_invalid(self):
        return self._row("fail_invalid")

    def _vmfail(self, error):
        """VMfail(n): VMfailValid(n) with a current VMCS (error recorded there), else VMfailInvalid."""
        if self.current is None:
            return self._fail_invalid()
        self._store(_ENC_VM_INSTRUCTION_ERROR, error)
        return self._row("fail_valid", error=error)

    def _store(self, encoding, value):
        slot = self.slots[self.current]
        if encoding in slot.fields:
            slot.fields[encoding] = value & MASK64
        slot.dirty = True

    def _vm_exit(self, name):
        reason = EXIT_REASONS[name]
        self._exit_switch(reason)
        return self._row("exit", exit_reason=reason, qualification=0)

    def _exit_switch(self, reason):
        """A VM exit with no event information (SDM vol. 3C §28.2–28.3): the exit reason, every other
        exit-information field 0, and the guest state saved — as the entry loaded it, except that
        a vectoring event the entry injected ended blocking by STI/MOV SS and made the guest active
        (§27.7.1). The VM-exit MSR lists are left to tests/test_hdl_vmcs_unit_exits.py."""
        self._store(_ENC_VM_EXIT_REASON, reason)
        for name in _EXIT_INFO_ZEROED:
            self._store(BY_NAME[name].encoding, 0)
        slot = self.slots[self.current]
        # MSRs the entry's MSR-load list set are the guest's values the exit saves (§28.3.3).
        exit_controls = self._field(slot, "VM_EXIT_CONTROLS")
        for msr, (name, mask, control) in _SAVED_MSRS.items():
            if msr in self.msr_loaded and (control is None or _bit(exit_controls, control)):
                self._store(BY_NAME[name].encoding, self.msr_loaded[msr] & mask)
        if self.caps.misc >> 5 & 1:
            # "IA-32e mode guest" := the guest's IA32_EFER.LMA (IA32_VMX_MISC[5]): from the MSR-load
            # list if it set EFER, else from the VMCS as the entry loaded it (§27.3.2.1).
            entry = self._field(slot, "VM_ENTRY_CONTROLS")
            lma = (self.msr_loaded[0xC000_0080] >> 10 & 1 if 0xC000_0080 in self.msr_loaded else
                   _bit(self._field(slot, "GUEST_IA32_EFER"), 10) if _bit(entry, 15) else _bit(entry, 9))
            self._store(BY_NAME["VM_ENTRY_CONTROLS"].encoding, (entry & ~(1 << 9)) | lma << 9)
        if self.injected_vectoring:
            self._store(BY_NAME["GUEST_INTERRUPTIBILITY_INFO"].encoding,
                        self._field(slot, "GUEST_INTERRUPTIBILITY_INFO") & ~0b11)
            self._store(BY_NAME["GUEST_ACTIVITY_STATE"].encoding, 0)
        self.non_root = False

    def _common(self, name, extra_ud=False):
        """The common checks (SDM vol. 3C §31.2): #UD, VM exit in non-root, #GP(0) for CPL > 0."""
        if not self.in_vmx or self._mode_ud() or extra_ud:
            return self._fault("UD")
        if self.non_root:
            return self._vm_exit(name)
        if self.cpu["cpl"] != 0:
            return self._fault("GP")
        return None

    # -- memory and cache ----------------------------------------------------------------------

    def _mem_read(self, address, nbytes):
        self.bus_words += 1
        return _read_int(self.memory, address, nbytes)

    def _mem_write(self, address, value, nbytes):
        self.bus_words += 1
        _write_int(self.memory, address, value, nbytes)

    def _slot_of(self, pointer):
        for i, slot in enumerate(self.slots):
            if slot is not None and slot.pointer == pointer:
                return i
        return None

    def _write_back(self, index, launch_word):
        slot = self.slots[index]
        if slot.dirty:
            for field in self.fields:
                self._mem_write(slot.pointer + field_offset(field.encoding), slot.fields[field.encoding], 8)
            self.fields_written_back += len(self.fields)
        self._mem_write(slot.pointer + LAUNCH_WORD_OFFSET, launch_word, 4)
        self.slots[index] = None
        if self.current == index:
            self.current = None

    def _choose_slot(self):
        for i, slot in enumerate(self.slots):
            if slot is None:
                return i
        victim = self.victim_next
        if len(self.slots) > 1 and self.current == victim:
            victim = (victim + 1) % len(self.slots)
        return victim

    def resident(self):
        """Pointers of the VMCSs in the cache, by slot (None for a free slot)."""
        return [None if s is None else s.pointer for s in self.slots]

    # -- instructions --------------------------------------------------------------------------

    def _begin(self):
        self.bus_words = 0
        self.msr_entries_checked = 0
        self.fields_written_back = 0

    def vmxon(self, ptr):
        self._begin()
        cpu = self.cpu
        if self._mode_ud() or not _bit(cpu["cr4"], 13):
            return self._fault("UD")
        if not self.in_vmx:
            fc = cpu["feature_control"]
            if (cpu["cpl"] != 0
                    or not self._fixed_ok(cpu["cr0"], self._msr(_CR0_FIXED0), self._msr(_CR0_FIXED1))
                    or not self._fixed_ok(cpu["cr4"], self._msr(_CR4_FIXED0), self._msr(_CR4_FIXED1))
                    or not _bit(fc, 0) or not _bit(fc, 2)):
                return self._fault("GP")
            if self._pointer_invalid(ptr):
                return self._fail_invalid()
            revision = self._mem_read(ptr, 4)
            if revision != self.revision_id:        # bits 30:0 must match and bit 31 must be 0
                return self._fail_invalid()
            self.in_vmx, self.non_root, self.vmxon_pointer, self.current = True, False, ptr, None
            return self._succeed()
        if self.non_root:
            return self._vm_exit("vmxon")
        if cpu["cpl"] != 0:
            return self._fault("GP")
        return self._vmfail(15)

    def vmxoff(self):
        self._begin()
        early = self._common("vmxoff")
        if early:
            return early
        self.in_vmx = self.non_root = False
        self.vmxon_pointer = None
        self.slots = [None] * len(self.slots)       # dropped, nothing written back
        self.current = None
        return self._succeed()

    def vmclear(self, ptr):
        self._begin()
        early = self._common("vmclear")
        if early:
            return early
        if self._pointer_invalid(ptr):
            return self._vmfail(2)
        if ptr == self.vmxon_pointer:
            return self._vmfail(3)
        index = self._slot_of(ptr)
        if index is not None:
            self._write_back(index, 0)
        else:
            self._mem_write(ptr + LAUNCH_WORD_OFFSET, 0, 4)
        return self._succeed()

    def vmptrld(self, ptr):
        self._begin()
        early = self._common("vmptrld")
        if early:
            return early
        if self._pointer_invalid(ptr):
            return self._vmfail(9)
        if ptr == self.vmxon_pointer:
            return self._vmfail(10)
        index = self._slot_of(ptr)
        if index is not None:
            self.current = index
            return self._succeed()
        revision = self._mem_read(ptr, 4)
        shadow = bool(revision >> 31)
        if (revision & 0x7FFF_FFFF) != self.revision_id or (shadow and not self.shadowing):
            return self._vmfail(11)
        index = self._choose_slot()
        self.victim_next = (index + 1) % len(self.slots)
        if self.slots[index] is not None:
            old = self.slots[index]
            self._write_back(index, int(old.launched) | (int(old.corrupt) << 1))
        launch = self._mem_read(ptr + LAUNCH_WORD_OFFSET, 8)
        launched, corrupt = bool(launch & 1), bool(launch & 2)
        # Fields are held zero-extended to their width: stray high bits in a region are dropped.
        fields = {f.encoding: self._mem_read(ptr + field_offset(f.encoding), 8) & ((1 << f.bits) - 1)
                  for f in self.fields}
        self._mem_write(ptr + LAUNCH_WORD_OFFSET, int(launched) | 2, 4)
        self.slots[index] = _Slot(ptr, fields, launched, corrupt, shadow)
        self.current = index
        return self._succeed()

    def vmptrst(self):
        self._begin()
        early = self._common("vmptrst")
        if early:
            return early
        return self._succeed(self.current_pointer)

    @property
    def current_pointer(self):
        return INVALID_POINTER if self.current is None else self.slots[self.current].pointer

    def decode(self, encoding):
        """(field, high) for a supported encoding (already cut to the operand size), else None."""
        if encoding & ~0x6FFF & MASK64:             # bits 63:15 and bit 12 are reserved
            return None
        field = self._by_encoding.get(encoding & ~1)
        if field is None:
            return None
        high = bool(encoding & 1)
        if high and field.width != 1:             # only 64-bit fields have a high half
            return None
        return field, high

    def vmread(self, encoding):
        self._begin()
        early = self._common("vmread")
        if early:
            return early
        if self.current is None:
            return self._fail_invalid()
        decoded = self.decode(self._reg(encoding))
        if decoded is None:
            return self._vmfail(12)
        field, high = decoded
        value = self.slots[self.current].fields[field.encoding]
        bits = _WIDTH_BITS[field.width]
        if high:
            value >>= 32
        elif bits < 64:
            value &= (1 << bits) - 1
        return self._succeed(self._reg(value))

    def vmwrite(self, encoding, value):
        self._begin()
        early = self._common("vmwrite")
        if early:
            return early
        if self.current is None:
            return self._fail_invalid()
        decoded = self.decode(self._reg(encoding))
        if decoded is None:
            return self._vmfail(12)
        field, high = decoded
        if field.readonly and not self.vmwrite_exit_info:
            return self._vmfail(13)
        value = self._reg(value)
        slot = self.slots[self.current]
        bits = _WIDTH_BITS[field.width]
        if high:
            new = (slot.fields[field.encoding] & MASK32) | ((value & MASK32) << 32)
        else:
            new = value & ((1 << bits) - 1)
        slot.fields[field.encoding] = new
        slot.dirty = True
        return self._succeed()

    def _entry(self, name):
        """VMLAUNCH / VMRESUME: the basic checks (SDM vol. 3C §31.2), then the VM entry (§27)."""
        self._begin()
        early = self._common(name)
        if early:
            return early
        if self.current is None or self.slots[self.current].shadow:
            return self._fail_invalid()
        if self.cpu["mov_ss_blocking"]:
            return self._vmfail(26)
        slot = self.slots[self.current]
        if name == "vmlaunch":
            if slot.launched or slot.corrupt:
                return self._vmfail(4)
        else:
            if slot.corrupt:
                return self._vmfail(6)
            if not slot.launched:
                return self._vmfail(5)
        return self._vm_entry(name, slot)

    def _field(self, slot, name):
        """A field of ``slot`` by name; 0 for a field the configuration does not have."""
        return slot.fields.get(BY_NAME[name].encoding, 0)

    def _page_ok(self, address):
        return not self._pointer_invalid(address)

    def entry_inputs(self, slot):
        """The checker's inputs for a VM entry with ``slot``: (fields by name, environment).

        Reads memory (counted in :attr:`bus_words`) in the order the architecture needs it: the
        VMCS-link word, VTPR, the PDPTEs.
        """
        fields = {name: self._field(slot, name) for name in ENTRY_FIELDS}
        proc = fields["CPU_BASED_VM_EXEC_CONTROL"]
        proc2 = fields["SECONDARY_VM_EXEC_CONTROL"] if _bit(proc, 31) else 0
        entry_controls = fields["VM_ENTRY_CONTROLS"]
        link = fields["VMCS_LINK_POINTER"]
        link_revision = 0
        if link != INVALID_POINTER and self._page_ok(link):           # §27.3.1.5
            link_revision = self._mem_read(link, 4)
        vtpr = 0
        vapic = fields["VIRTUAL_APIC_PAGE_ADDR"]
        if (_bit(proc, 21) and not _bit(proc2, 9) and not _bit(proc2, 0)
                and self._page_ok(vapic)):                              # §27.2.1.1
            vtpr = self._mem_read(vapic + 0x80, 1)
        pdptes = [0] * 4
        cr0, cr4 = fields["GUEST_CR0"], fields["GUEST_CR4"]
        if _bit(proc2, 1):                                              # §27.3.1.6, EPT on
            pdptes = [fields[f"GUEST_PDPTR{i}"] for i in range(4)]
        elif _bit(cr0, 31) and _bit(cr4, 5) and not _bit(entry_controls, 9):
            table = fields["GUEST_CR3"] & 0xFFFF_FFE0                    # PAE: bits 31:5 of CR3
            pdptes = [self._mem_read(table + 8 * i, 8) for i in range(4)]
        env = {"host_lma": _bit(self.cpu["efer"], 10), "current_vmcs": slot.pointer,
               "link_revision": link_revision, "vtpr": vtpr, "pdptes": pdptes}
        return fields, env

    def _entry_failure(self, reason, qualification, check, checks):
        """A VM-entry failure (SDM vol. 3C §27.8): exit reason (bit 31 set) and qualification in the
        VMCS, root operation, the VMCS's launch state unchanged."""
        exit_reason = ENTRY_FAILURE_BIT | reason
        self._store(_ENC_VM_EXIT_REASON, exit_reason)
        self._store(_ENC_EXIT_QUALIFICATION, qualification)
        self.non_root = False
        # The host state is loaded as on a VM exit, then the VM-exit MSR-load list is read (§27.8,
        # §28.6): two words an entry. The model keeps no MSRs; it counts the reads.
        slot = self.slots[self.current]
        table = self._field(slot, "VM_EXIT_MSR_LOAD_ADDR")
        for i in range(self._field(slot, "VM_EXIT_MSR_LOAD_COUNT") & MASK32):
            self._mem_read(table + 16 * i, 8)
            self._mem_read(table + 16 * i + 8, 8)
        return self._row("entry_failed", exit_reason=exit_reason, qualification=qualification,
                         check=check, checks=checks)

    def _vm_entry(self, name, slot):
        fields, env = self.entry_inputs(slot)
        failing = sorted(reference_failures(self.caps, fields, **env), key=_CATALOGUE_POSITION.get)
        for group in (CheckGroup.CONTROLS, CheckGroup.HOST, CheckGroup.GUEST):     # §27.1
            first = next((c for c in failing if BY_ID[c].group == group), None)
            if first is None:
                continue
            if group == CheckGroup.GUEST:
                return self._entry_failure(group.value, BY_ID[first].qualification, first, failing)
            row = self._vmfail(group.value)
            row.update(check=first, checks=failing)
            return row
        # The VM-entry MSR-load list (§27.4), one 16-byte entry at a time.
        loaded = {}                     # MSRs the VM-entry MSR-load list set, by index
        count = self._field(slot, "VM_ENTRY_MSR_LOAD_COUNT") & MASK32
        table = self._field(slot, "VM_ENTRY_MSR_LOAD_ADDR")
        for number in range(1, count + 1):
            address = table + 16 * (number - 1)
            word0 = self._mem_read(address, 8)
            value = self._mem_read(address + 8, 8)
            self.msr_entries_checked += 1
            ids = reference_msr_entry(self.caps, number, word0 & MASK32, word0 >> 32, value)
            if ids:
                ids = sorted(ids, key=_CATALOGUE_POSITION.get)
                return self._entry_failure(CheckGroup.MSR_LOAD.value, number, ids[0], ids)
            loaded[word0 & MASK32] = value
        # Success: event injection (§27.6) clears the valid bit; launch state (§31.3); non-root.
        injected = None
        info = self._field(slot, "VM_ENTRY_INTR_INFO_FIELD")
        if _bit(info, 31):
            self._store(_ENC_INTR_INFO, info & ~(1 << 31))
            error_code = self._field(slot, "VM_ENTRY_EXCEPTION_ERROR_CODE") if _bit(info, 11) else None
            injected = {"vector": info & 0xFF, "type": (info >> 8) & 7, "error_code": error_code}
        if name == "vmlaunch":
            slot.launched = True
        self.non_root = True
        self.injected_vectoring = injected is not None and injected["type"] != 7
        self.msr_loaded = loaded
        # An exit due before the first guest instruction is the result of the entry itself
        # (SDM vol. 3C §27.7: pending MTF, preemption timer 0, open NMI / interrupt window).
        fields = {f.name: self._field(slot, f.name) for f in VMCS_FIELDS}
        proc = fields["CPU_BASED_VM_EXEC_CONTROL"]
        interruptibility = fields["GUEST_INTERRUPTIBILITY_INFO"]
        if self.injected_vectoring:
            interruptibility &= ~0b11
        mtf_pending = injected is not None and (
            (injected["type"] == 7 and injected["vector"] == 0) or (injected["type"] != 7 and _bit(proc, 27)))
        timer_zero = _bit(fields["PIN_BASED_VM_EXEC_CONTROL"], 6) and fields["VMX_PREEMPTION_TIMER_VALUE"] == 0
        due = exit_model.boundary(fields, {"interruptibility": interruptibility, "rflags": fields["GUEST_RFLAGS"]},
                                  at_entry=True, mtf_pending=mtf_pending, timer_expired=timer_zero)
        if due is not None and not (injected is not None and due.reason in (7, 8)):
            self._exit_switch(due.reason)
            return self._row("exit", exit_reason=due.reason, qualification=0, checks=[], injected=injected)
        return self._row("entered", checks=[], injected=injected)

    def vmlaunch(self):
        return self._entry("vmlaunch")

    def vmresume(self):
        return self._entry("vmresume")

    def eptp_valid(self, eptp):
        """The VM-entry EPTP checks (SDM vol. 3C §27.2.1.1) against IA32_VMX_EPT_VPID_CAP."""
        cap = self.ept_vpid_cap
        memtype = eptp & 7
        if not ((memtype == 0 and _bit(cap, 8)) or (memtype == 6 and _bit(cap, 14))):
            return False
        walk = (eptp >> 3) & 7
        if not (walk == 3 or (walk == 4 and _bit(cap, 7))):
            return False
        if _bit(eptp, 6) and not _bit(cap, 21):
            return False
        reserved = (eptp >> 7) & 0x1F
        if _bit(cap, 23):
            reserved &= ~1
        if reserved:
            return False
        return not (eptp >> self.maxphyaddr)

    def invept(self, kind, eptp):
        self._begin()
        cap = self.ept_vpid_cap
        early = self._common("invept", extra_ud=not (self.ept and _bit(cap, 20)))
        if early:
            return early
        kind = self._reg(kind)
        if kind not in (1, 2) or not _bit(cap, 24 + kind):
            return self._vmfail(28)
        if kind == 1 and not self.eptp_valid(eptp):
            return self._vmfail(28)
        return self._succeed()

    def _canonical(self, address):
        width = 57 if _bit(self.cpu["cr4"], 12) else 48
        top = address >> (width - 1)
        return top == 0 or top == (1 << (65 - width)) - 1

    def invvpid(self, kind, vpid, la=0, reserved=0):
        self._begin()
        cap = self.ept_vpid_cap
        early = self._common("invvpid", extra_ud=not (self.vpid and _bit(cap, 32)))
        if early:
            return early
        kind = self._reg(kind)
        if kind > 3 or not _bit(cap, 40 + kind):
            return self._vmfail(28)
        if reserved:
            return self._vmfail(28)
        if kind != 2 and vpid == 0:
            return self._vmfail(28)
        if kind == 0 and not self._canonical(la):
            return self._vmfail(28)
        return self._succeed()

    def vmcall(self):
        self._begin()
        if not self.in_vmx:
            return self._fault("UD")
        if self.non_root:
            return self._vm_exit("vmcall")
        if _bit(self.cpu["rflags"], 17) or self.compat_mode:
            return self._fault("UD")
        if self.cpu["cpl"] != 0:
            return self._fault("GP")
        return self._vmfail(1)

    def rdmsr(self, index):
        self._begin()
        if self.cpu["cpl"] != 0:
            return self._fault("GP")
        if self.non_root:
            return self._vm_exit("rdmsr")
        index &= MASK32
        if index == _FEATURE_CONTROL:
            return self._succeed(self.cpu["feature_control"])
        if index in self.msrs:
            return self._succeed(self.msrs[index])
        return self._fault("GP")

    # -- scenario steps ------------------------------------------------------------------------

    def execute(self, op, args):
        """Run one scenario step (``op`` and the parser's normalized ``args``); return its row."""
        self._begin()
        if op == "set_cpu":
            self.set_cpu(**args["cpu"])
            return self._succeed()
        if op == "mem_write":
            for i, byte in enumerate(args["data"]):
                self.memory[args["addr"] + i] = byte
            return self._succeed()
        if op == "mem_read":
            return self._succeed(_read_int(self.memory, args["addr"], args["width"] // 8))
        if op == "vmwrite":
            words = 0
            for encoding, value in args["fields"]:
                row = self.vmwrite(encoding, value)
                words += self.bus_words
                if row["outcome"] != "succeed":
                    break
            self.bus_words = words
            return row
        if op in ("vmxon", "vmclear", "vmptrld"):
            return getattr(self, op)(args["addr"])
        if op in ("vmxoff", "vmptrst", "vmlaunch", "vmresume", "vmcall"):
            return getattr(self, op)()
        if op == "vmread":
            return self.vmread(args["field"])
        if op == "invept":
            return self.invept(args["type"], args["eptp"])
        if op == "invvpid":
            return self.invvpid(args["type"], args["vpid"], args.get("addr", 0),
                                args.get("descriptor_reserved", 0))
        if op == "rdmsr":
            return self.rdmsr(args["msr"])
        raise ValueError(f"the model has no step {op!r}")


# -- scenario helpers (plain Python: the scenario dataclasses do not need Amaranth) -----------------

def step(op, **args):
    """A scenario step's (op, args) with args normalized as the parser does.

    ``field`` may be a name or an encoding; ``vmwrite`` takes ``field`` + ``value`` or ``fields`` (a
    list of pairs); ``set_cpu`` takes the processor-state keys; ``mem_write`` takes ``addr`` and
    ``data`` (bytes); ``invvpid`` fills in ``addr`` and ``descriptor_reserved``.
    """
    from hwvirt.hdl.vmcs_fields import lookup_encoding
    if "field" in args:
        args["field"] = lookup_encoding(args["field"])
    if op == "vmwrite":
        if "fields" not in args:
            args = {"fields": [(args.pop("field"), args.pop("value"))]}
        else:
            args = {"fields": [(lookup_encoding(f), v) for f, v in args["fields"]]}
    elif op == "set_cpu":
        args = {"cpu": dict(args)}
    elif op == "invvpid":
        args.setdefault("addr", 0)
        args.setdefault("descriptor_reserved", 0)
    return op, args


def scenario(steps, *, config=None, cpu=None, memory=(), name="generated"):
    """A :class:`hwvirt.sim.scenario.Scenario` from (op, args) pairs (see :func:`step`)."""
    from hwvirt.sim.scenario import CPU_DEFAULTS, Config, Scenario, Step
    state = dict(CPU_DEFAULTS)
    state.update(cpu or {})
    return Scenario(name=name, arch="vmx", description="", config=config or Config(), cpu=state,
                    memory=[(a, bytes(d)) for a, d in memory],
                    steps=[Step(index=i, op=op, args=args) for i, (op, args) in enumerate(steps, 1)])


def model_for(scn):
    """A :class:`VMXModel` in the state a scenario starts from (configuration, processor, memory)."""
    memory = ByteMemory()
    for address, payload in scn.memory:
        memory.write(address, payload)
    return VMXModel(scn.config.capabilities(), scn.config.vmcs_cache_slots, memory, dict(scn.cpu))


def model_rows(scn, model=None):
    """Replay a scenario on the model; return (rows, bus words per step, model).

    ``model.msr_entries_by_step`` holds the VM-entry MSR-load entries each step checked,
    ``model.written_back_by_step`` the VMCS fields each step wrote back to memory."""
    model = model or model_for(scn)
    rows, words = [], []
    model.msr_entries_by_step = []
    model.written_back_by_step = []
    for s in scn.steps:
        rows.append(model.execute(s.op, s.args))
        words.append(model.bus_words)
        model.msr_entries_by_step.append(model.msr_entries_checked)
        model.written_back_by_step.append(model.fields_written_back)
    return rows, words, model
