"""The web view's threads yield the CPU to the pipeline: each lowers its own scheduling priority."""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)

# Linux's nice, per thread: at +10 a busy web thread gets about a tenth of a core the pipeline also wants.
WEB_NICENESS = 10


def yield_to_pipeline() -> None:
    """Put the calling thread WEB_NICENESS below the main thread (Linux: a thread's id is a process id to
    setpriority; a thread starts at its creator's niceness, so it is set from the main thread's, not added)."""
    try:
        base = os.getpriority(os.PRIO_PROCESS, os.getpid())
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), min(19, base + WEB_NICENESS))
    except (AttributeError, OSError) as e:  # not Linux, or not allowed: the threads run at the usual priority
        log.debug("web thread priority unchanged: %s", e)
