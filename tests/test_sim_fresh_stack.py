"""sim/fresh_stack.py: a call on a new thread, with its result or exception handed back."""

import threading

import pytest

from hwvirt.sim.fresh_stack import call_on_fresh_stack


def test_result_and_arguments_come_back():
    caller = threading.get_ident()
    ran_on = []

    def work(a, *, b):
        ran_on.append(threading.get_ident())
        return a + b

    assert call_on_fresh_stack(work, 2, b=3) == 5
    assert ran_on and ran_on[0] != caller


def test_exception_is_re_raised_unchanged():
    class Marker(Exception):
        pass

    def fail():
        raise Marker("from the simulation")

    with pytest.raises(Marker, match="from the simulation"):
        call_on_fresh_stack(fail)
