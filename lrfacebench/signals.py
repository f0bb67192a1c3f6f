"""Ctrl-C (SIGINT) handling shared by the builder and the command line; imports nothing heavy, so
the CLI can use it before torch is loaded."""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Callable, Iterator, Union

Handler = Union[Callable[[int, Any], Any], int]  # a function, signal.SIG_IGN or signal.SIG_DFL


@contextlib.contextmanager
def sigint_handled_by(handler: Handler) -> Iterator[bool]:
    """SIGINT goes to ``handler`` inside the block; the previous handler is restored after.

    Yields True, or False (changing nothing) outside the main thread, where Python cannot change
    signal handlers. A child process started inside the block with ``signal.SIG_IGN`` keeps
    ignoring SIGINT: Python installs its KeyboardInterrupt handler only over the default.
    """
    if threading.current_thread() is not threading.main_thread():
        yield False
        return
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield True
    finally:
        signal.signal(signal.SIGINT, previous)
