"""The memory bus every block of the unit shares: a Wishbone B4 classic initiator port.

64-bit data, byte selects, word addresses (``adr`` is the physical address divided by 8, so its width
is MAXPHYADDR − 3). Single transfers only: the initiator holds ``cyc`` and ``stb`` and the request
stable until the target answers with ``ack`` for one cycle (Wishbone B4 §3.2.1). The VMCS unit uses it
now; the EPT walker and the SVM unit share it later through an arbiter.
"""

from amaranth.lib import wiring
from amaranth.lib.wiring import Out, In


__all__ = ["WishboneSignature"]


class WishboneSignature(wiring.Signature):
    """Wishbone B4 classic initiator, 64-bit data (``sel`` per byte), from the initiator's side.

    Parameters
    ----------
    addr_width : int
        Width of ``adr`` (a word address).

    Members
    -------
    cyc, stb, we : Out(1)
    adr : Out(addr_width)
    dat_w : Out(64)
    sel : Out(8)
    dat_r : In(64)
    ack : In(1)
    """

    def __init__(self, *, addr_width):
        if not isinstance(addr_width, int) or addr_width <= 0:
            raise TypeError(f"addr_width must be a positive integer, not {addr_width!r}")
        self._addr_width = addr_width
        super().__init__({
            "cyc":   Out(1),
            "stb":   Out(1),
            "we":    Out(1),
            "adr":   Out(addr_width),
            "dat_w": Out(64),
            "sel":   Out(8),
            "dat_r": In(64),
            "ack":   In(1),
        })

    @property
    def addr_width(self):
        return self._addr_width

    def __eq__(self, other):
        return isinstance(other, WishboneSignature) and self.addr_width == other.addr_width

    def __repr__(self):
        return f"WishboneSignature(addr_width={self.addr_width})"
