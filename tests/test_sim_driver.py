"""The backend-independent driver pieces: field packing and the memory model."""

from hwvirt.hdl.vmcs_unit import Command, Result, VMXOp
from hwvirt.sim.driver import PhysicalMemory, pack, unpack


def test_pack_unpack_round_trip():
    word = pack(Command, {"op": VMXOp.VMWRITE, "reg": 0x6800, "operand": (1 << 127) | 5})
    assert unpack(Command, word) == {"op": VMXOp.VMWRITE.value, "reg": 0x6800, "operand": (1 << 127) | 5}
    assert unpack(Result, pack(Result, {"value": 2**64 - 1}))["value"] == 2**64 - 1


def test_memory_is_sparse_little_endian_and_masks_bus_writes():
    memory = PhysicalMemory()
    assert memory.read_int(0x7FFF_FFFF_F000, 8) == 0
    memory.write_int(0x1000, 0x1122334455667788, 8)
    assert memory.read(0x1000, 2) == b"\x88\x77"
    memory.write_word(0x1000 // 8, 0xAAAAAAAA_BBBBBBBB, 0x0F)
    assert memory.read_word(0x1000 // 8) == 0x11223344_BBBBBBBB
    memory.write(0x1FFE, b"\x01\x02\x03\x04")          # crosses a page boundary
    assert memory.read_int(0x1FFE, 4) == 0x04030201
