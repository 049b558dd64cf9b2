"""Simulation drivers, the scenario runner and the ``hwvirt`` command line."""
