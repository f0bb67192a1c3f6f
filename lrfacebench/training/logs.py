"""``RUN/log.txt`` and the loss lines of a run, added to the logging set-up for one training session."""
from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import Iterator

step_log = logging.getLogger("lrfacebench.training.steps")  # loss lines: log.txt (+ stderr without a bar)


@contextlib.contextmanager
def run_logging(out: Path, is_main: bool) -> Iterator[None]:
    """INFO and loss lines into ``out/log.txt`` (rank 0) without changing what the console shows;
    loss lines also go to stderr when there is no progress bar and the console shows INFO."""
    root = logging.getLogger()
    level, console = root.level, root.getEffectiveLevel()
    saved = [(h, h.level) for h in root.handlers]
    step_log.propagate = False
    handlers: list[logging.Handler] = []
    if is_main:
        fh = logging.FileHandler(out / "log.txt")
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handlers.append(fh)
        if not sys.stderr.isatty() and console <= logging.INFO:
            sh = logging.StreamHandler(sys.stderr)
            sh.setFormatter(logging.Formatter("%(message)s"))
            handlers.append(sh)
        for h, lvl in saved:
            h.setLevel(max(lvl, console))
        root.setLevel(logging.INFO)
        root.addHandler(fh)
        step_log.setLevel(logging.INFO)
        for h in handlers:
            step_log.addHandler(h)
    try:
        yield
    finally:
        for h in handlers:
            root.removeHandler(h)
            step_log.removeHandler(h)
            h.close()
        root.setLevel(level)
        for h, lvl in saved:
            h.setLevel(lvl)
