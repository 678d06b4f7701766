"""SIGTERM handled as SIGINT is: an exception in the main thread, so that a command's cleanup runs on the way out
(``atomic_open`` removes its temporary, the batch job stops its workers and flushes its manifest), and an exit
status that says which signal stopped it: 128 + its number, the shells' convention (130 for SIGINT, 143 for
SIGTERM).

Without this, SIGTERM (what ``kill``, systemd and container runtimes send) ends a Python process where it stands:
no ``finally`` runs, and a half-written temporary stays beside its final name until the next writer of that name
removes it. The server does not use this: it is an asyncio program and stops its own way
(``runtime.serve.__main__``)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

SIGNALS = (signal.SIGTERM, signal.SIGINT)
_state = {"active": False, "deferring": 0, "pending": None, "raised": False}


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGINT came: raised once in the main thread, where it was when the signal came (or at the end of
    a ``deferred`` block). A KeyboardInterrupt, so code that already cleans up after Ctrl-C does after SIGTERM."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _handler(signum: int, frame) -> None:
    if _state["raised"]:  # already stopping: the cleanup under way is bounded; a second signal would cut it
        return
    if _state["deferring"]:
        _state["pending"] = signum
        return
    _state["raised"] = True
    raise Interrupted(signum)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT raise ``Interrupted`` (once; later ones are ignored while the cleanup
    runs). The handlers before it come back after it. Off the main thread (where Python allows no signal handler)
    it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _handler) for sig in SIGNALS}
    _state.update(active=True, deferring=0, pending=None, raised=False)
    try:
        yield
    finally:
        _state["active"] = False
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def take_back() -> None:
    """Inside ``interruptible``, handle SIGTERM and SIGINT again after a library set handlers of its own
    (``ray.init`` makes SIGTERM exit with status 15, with no cleanup)."""
    if _state["active"] and threading.current_thread() is threading.main_thread():
        for sig in SIGNALS:
            signal.signal(sig, _handler)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A block that a signal does not cut in two (appending a manifest line): a SIGTERM or SIGINT that comes inside
    it is raised when it ends. Costs nothing where ``interruptible`` is not in force."""
    _state["deferring"] += 1
    try:
        yield
    finally:
        _state["deferring"] -= 1
    # (after the block only when it ended well: an exception of its own goes on as it is)
    if not _state["deferring"] and _state["pending"] is not None and not _state["raised"]:
        signum, _state["pending"] = _state["pending"], None
        _state["raised"] = True
        raise Interrupted(signum)
