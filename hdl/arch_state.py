"""The architectural state the unit hands to the rest of the processor on a VM entry or exit.

A successful VM entry loads the guest-state area into :class:`ArchState` (Intel SDM vol. 3C §27.3.2,
"Loading Guest State"); a VM-entry failure — and, with the VM-exit issue, every VM exit — loads the
host-state area instead (§28.5, "Loading Host State"). The rest of the processor runs with these
values; the scenario runner reports them.
"""

from amaranth.lib import data


__all__ = ["SegmentState", "TableRegister", "ArchState", "SEGMENTS", "host_segment_access_rights"]

#: Segment registers in the order of their VMCS field encodings (SDM vol. 3C appendix B).
SEGMENTS = ("es", "cs", "ss", "ds", "fs", "gs", "ldtr", "tr")


class SegmentState(data.Struct):
    """A segment register: selector and the hidden part, access rights in the VMCS format (§25.4.1)."""
    selector: 16
    base:     64
    limit:    32
    ar:       32


class TableRegister(data.Struct):
    """GDTR or IDTR."""
    base:  64
    limit: 32


class ArchState(data.Struct):
    """Registers and non-register state the processor runs with after a VM entry or exit."""
    cr0:              64
    cr3:              64
    cr4:              64
    dr7:              64
    rsp:              64
    rip:              64
    rflags:           64
    es:               SegmentState
    cs:               SegmentState
    ss:               SegmentState
    ds:               SegmentState
    fs:               SegmentState
    gs:               SegmentState
    ldtr:             SegmentState
    tr:               SegmentState
    gdtr:             TableRegister
    idtr:             TableRegister
    efer:             64
    pat:              64
    debugctl:         64
    sysenter_cs:      32
    sysenter_esp:     64
    sysenter_eip:     64
    activity:         32
    interruptibility: 32
    pending_dbg:      64


def host_segment_access_rights(segment, *, host64, selector_null):
    """Access rights a VM exit gives a host segment register (SDM vol. 3C §28.5.2).

    CS: accessed execute/read code (type 11), S = 1, DPL 0, present, L = host address-space size,
    D = not L, G = 1. TR: busy TSS (type 11), present, no G. Others: accessed read/write data (type 3),
    S = 1, DPL 0, present, D/B = 1, G = 1, and unusable when the selector is null (LDTR is always
    unusable after a VM exit). Returns an Amaranth value; ``host64`` and ``selector_null`` are values.
    """
    from amaranth.hdl import Mux
    if segment == "cs":
        return Mux(host64, 0xA09B, 0xC09B)
    if segment == "tr":
        return 0x008B
    if segment == "ldtr":
        return 0x1_0000
    return Mux(selector_null, 0x1_C093, 0xC093)
