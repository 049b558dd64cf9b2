"""Run a simulation on a fresh Python thread, so that its frames start at the bottom of a data stack.

CPython 3.11 keeps frames in 16 KiB chunks allocated with ``mmap``; a call that does not fit in the
current chunk gets a new one, freed again when the call returns. Amaranth's simulator compiles the
design into functions with up to a thousand locals (about 8 KiB of frame each) and calls them every
delta cycle. Called from inside a pytest-xdist worker (a deeper stack than a script's), each such
call crossed a chunk boundary: an ``mmap`` and a ``munmap`` per call, 4.3 million of each in one
VMWRITE sweep (``strace -c``), which then spent more time in the kernel than in Python (30.4 s
with 16.5 s of system time; 12.8 s on a fresh thread). A new thread's data stack is empty, so the
simulator's frames fit in its first chunk wherever the caller is.
"""

import threading

__all__ = ["call_on_fresh_stack", "run_simulation"]


def call_on_fresh_stack(function, *args, **kwargs):
    """``function(*args, **kwargs)`` on a new thread; its result, or its exception re-raised."""
    outcome = {}

    def target():
        try:
            outcome["value"] = function(*args, **kwargs)
        except BaseException as error:          # noqa: B036 — handed to the caller unchanged
            outcome["error"] = error

    thread = threading.Thread(target=target, name="simulation", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def run_simulation(sim, *, until=None):
    """Run an Amaranth :class:`~amaranth.sim.Simulator` on a fresh stack: to the end of its
    testbenches, or ``until`` seconds of simulated time (``sim.run_until``)."""
    if until is None:
        return call_on_fresh_stack(sim.run)
    return call_on_fresh_stack(sim.run_until, until)
