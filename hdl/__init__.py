"""Synthesizable gateware of the hwvirt virtualization unit (Amaranth HDL)."""
