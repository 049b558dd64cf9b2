"""EPT tables from Plan 9 devvmx's memory-map lines (the ``ept_map`` scenario op).

Plan 9's vmx device takes lines ``attr mtype lo hi [seg off]`` through its ``map`` file and writes
them into EPT tables the way its ``eptwalk``/``epttranslate`` do. This module does the same into a
scenario's physical memory, so a scenario can replay a real map and then let the guest access it:

* ``attr``: ``r``, ``w``, ``x`` or ``-`` characters: read (bit 0), write (bit 1), execute (bit 2,
  and bit 10, user-mode execute, as Plan 9 sets both);
* ``mtype``: the leaf's memory type by Plan 9's names ``uc wc 02 03 wt wp wb 07`` (types 2, 3 and 7
  are invalid, which the walker reports as an EPT misconfiguration), with ``!`` appended for
  "ignore PAT" (bit 6);
* ``lo``, ``hi``: the guest-physical range, page aligned;
* ``seg off``: required when any of r/w/x is given. Plan 9 names a segment; here ``seg`` is the
  host-physical address the segment starts at, and the range maps to ``seg + off`` onwards.

Every 4 KiB page of the range gets a leaf ``hpa | attr | mtype << 3``. Missing tables are taken from
``tables`` upwards, one page each, zeroed, and linked with the entry value ``table | 0x407`` (R, W,
X and user-execute), as Plan 9's eptwalk does.
"""

__all__ = ["MapError", "PLAN9_MEMORY_TYPES", "parse_map_line", "build_ept"]

#: Plan 9's names of the eight EPT memory-type values.
PLAN9_MEMORY_TYPES = ("uc", "wc", "02", "03", "wt", "wp", "wb", "07")
PAGE = 0x1000


class MapError(ValueError):
    """A map line Plan 9 would refuse; the message says why."""


def _number(text, what):
    try:
        value = int(text, 0)
    except ValueError:
        raise MapError(f"{what} {text!r} is not a number") from None
    if value < 0 or value & (PAGE - 1) or value >> 48:
        raise MapError(f"{what} {text!r} is not a page-aligned address below 2^48")
    return value


def parse_map_line(line):
    """``(attr, lo, hi, hpa)`` of one map line (``attr`` = the leaf's low 12 bits)."""
    fields = line.split()
    if len(fields) not in (4, 6):
        raise MapError(f"{line!r}: expected 'attr mtype lo hi [seg off]' (4 or 6 fields)")
    attr = 0
    for char in fields[0]:
        bit = {"r": 1, "w": 2, "x": 0x404, "-": 0}.get(char)
        if bit is None or (bit and attr & bit):
            raise MapError(f"{line!r}: invalid access field {fields[0]!r}")
        attr |= bit
    mtype = fields[1]
    if mtype[:2] not in PLAN9_MEMORY_TYPES or len(mtype) > 3 or (len(mtype) == 3 and mtype[2] != "!"):
        raise MapError(f"{line!r}: invalid memory type {mtype!r} (one of {', '.join(PLAN9_MEMORY_TYPES)}, "
                       f"optionally followed by '!')")
    attr |= PLAN9_MEMORY_TYPES.index(mtype[:2]) << 3 | (0x40 if mtype.endswith("!") else 0)
    lo, hi = _number(fields[2], "low guest-physical address"), _number(fields[3], "high guest-physical address")
    if hi <= lo:
        raise MapError(f"{line!r}: the high address must be above the low one")
    if attr & 7 and len(fields) != 6:
        raise MapError(f"{line!r}: a mapped range needs 'seg off'")
    hpa = _number(fields[4], "segment address") + _number(fields[5], "offset") if len(fields) == 6 else 0
    return attr, lo, hi, hpa


def build_ept(memory, pml4, lines, tables):
    """Write the EPT entries of ``lines`` into ``memory`` (a :class:`~hwvirt.sim.driver.PhysicalMemory`)
    under the PML4 table at ``pml4``, allocating new tables from ``tables``; returns the address of
    the next free table page."""
    for line in lines:
        attr, lo, hi, hpa = parse_map_line(line)
        for page in range(lo, hi, PAGE):
            table = pml4
            for level in (3, 2, 1):
                slot = table + 8 * (page >> (12 + 9 * level) & 0x1FF)
                entry = memory.read_int(slot, 8)
                if entry & 3 == 0:
                    memory.write(tables, bytes(PAGE))
                    entry = tables | 0x407
                    memory.write_int(slot, entry, 8)
                    tables += PAGE
                table = entry & ~0xFFF & ((1 << 52) - 1)
            memory.write_int(table + 8 * (page >> 12 & 0x1FF), hpa + (page - lo) + attr, 8)
    return tables
