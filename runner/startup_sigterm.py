"""SIGTERM before the train loop runs: noted, and the run ends cleanly.

training.loop.run turns SIGTERM into a save once it runs. Before that (gin parsing, the
trainer's build, initial params, the resume checks) a CLI holds this handler, so a SIGTERM
there makes runner.train return with a line saying nothing was trained yet (exit 0) instead
of killing the process (-15). A SIGTERM that lands after the last check and before the
loop's own handler is installed is passed on to the loop once it runs (`forward`).

A multi-process run whose hosts agree through JAX's preemption sync point installs nothing:
a Python handler would replace the coordination service's own (training.loop), which
records the SIGTERM so that the loop's first step saves it on every host.
"""

from __future__ import annotations

import os
import signal
import threading

_state = {"depth": 0, "previous": None, "requested": False}


def _handle(signum, frame):
    _state["requested"] = True


class startup_sigterm:
    """`with startup_sigterm():` SIGTERM sets a flag instead of killing (re-entrant)."""

    def __enter__(self):
        _state["depth"] += 1
        if (_state["depth"] == 1 and threading.current_thread() is threading.main_thread()
                and not _service_handles_sigterm()):
            _state["previous"] = signal.signal(signal.SIGTERM, _handle)
        return self

    def __exit__(self, *exc):
        _state["depth"] -= 1
        if _state["depth"] == 0 and _state["previous"] is not None:
            signal.signal(signal.SIGTERM, _state["previous"])
            _state["previous"] = None
        return False


def _service_handles_sigterm() -> bool:
    import jax

    if not jax.distributed.is_initialized():
        return False
    from training.loop import preemption_mode

    return preemption_mode("auto") == "service"


def requested() -> bool:
    """True on every host once any host got SIGTERM (all hosts must call it together)."""
    import jax

    if jax.process_count() == 1:
        return _state["requested"]
    import numpy as np
    from jax.experimental import multihost_utils

    flags = multihost_utils.process_allgather(np.array(_state["requested"]))
    _state["requested"] = bool(np.any(flags))
    return _state["requested"]


def forward() -> None:
    """Send a SIGTERM noted here to the handler installed now (the train loop's)."""
    if _state["requested"] and signal.getsignal(signal.SIGTERM) is not _handle:
        _state["requested"] = False
        os.kill(os.getpid(), signal.SIGTERM)
