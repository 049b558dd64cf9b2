"""Synthesizable gateware of the hwvirt virtualization unit (Amaranth HDL)."""

import hashlib
from pathlib import Path

#: A digest of this package's sources as they were when it was first imported (just before its
#: modules are): simulator builds are cached under it, so that a process keeps building the design
#: it has in memory under that design's key even if the sources are edited while it runs.
SOURCE_DIGEST = hashlib.sha256(b"".join(
    path.name.encode() + path.read_bytes() for path in sorted(Path(__file__).parent.glob("*.py"))
)).hexdigest()
