"""The one place every subcommand's errors end: one line on stderr and the documented exit status."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TextIO

from edge_fer.errors import EdgeFerError, ExitStatus


def _silence_stdout(out: TextIO) -> None:
    """Point a closed stdout at /dev/null so Python's final flush does not print a traceback."""
    try:
        fd = out.fileno()
    except (OSError, ValueError, AttributeError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def funnel(work: Callable[[], int], out: TextIO, err: TextIO) -> int:
    """Run `work`; whatever it raises for the user becomes one `edge-fer:` line and its exit status."""
    try:
        status = int(work())
        out.flush()  # a reader gone by now is found here, not in Python's final flush
        return status
    except EdgeFerError as e:
        print(f"edge-fer: {e}", file=err)
        return int(e.exit_code)
    except KeyboardInterrupt:
        return int(ExitStatus.INTERRUPTED)
    except BrokenPipeError:
        # The reader went away (`| head -1`): stop quietly with the status a shell gives a tool killed by SIGPIPE.
        _silence_stdout(out)
        return int(ExitStatus.PIPE)
    except MemoryError:
        print("edge-fer: out of memory", file=err)
        return int(ExitStatus.RUNTIME)
    except SystemExit as e:  # --help and --version end argparse this way; main still returns
        return e.code if isinstance(e.code, int) else int(ExitStatus.OK if e.code is None else ExitStatus.USAGE)
