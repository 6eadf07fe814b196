"""Errors that end in one clear line for the user, each with its exit status."""

from __future__ import annotations

import enum
import signal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


class ExitStatus(enum.IntEnum):
    """What edge-fer exits with; the values are documented in README ("Exit status") and never change."""

    OK = 0
    INPUT = 1  # an input could not be read (the others were still answered)
    USAGE = 2  # bad command line or configuration
    MODEL = 3  # the model file is missing, corrupt or does not match its sidecar
    RUNTIME = 4  # the daemon could not run (e.g. no display for the window), or an output could not be written
    INTERRUPTED = 128 + signal.SIGINT  # Ctrl-C, as a shell reports a tool killed by SIGINT
    PIPE = 128 + signal.SIGPIPE  # stdout closed by its reader, as a shell reports a tool killed by SIGPIPE


# The statuses under the names modules and tests already import.
EXIT_OK = ExitStatus.OK
EXIT_INPUT = ExitStatus.INPUT
EXIT_USAGE = ExitStatus.USAGE
EXIT_MODEL = ExitStatus.MODEL
EXIT_RUNTIME = ExitStatus.RUNTIME


class EdgeFerError(Exception):
    """An error whose message is the one line shown to the user."""

    exit_code: ExitStatus = ExitStatus.RUNTIME


class UsageError(EdgeFerError):
    """A command line that cannot be run."""

    exit_code = ExitStatus.USAGE


class ConfigError(EdgeFerError):
    """A configuration file or override that is wrong; the message names the key."""

    exit_code = ExitStatus.USAGE


class ImageError(EdgeFerError):
    """An input image that cannot be read."""

    exit_code = ExitStatus.INPUT


class ModelError(EdgeFerError):
    """A model file that is missing, corrupt or inconsistent with its sidecar."""

    exit_code = ExitStatus.MODEL


class WriteError(EdgeFerError):
    """An output file (annotated image, snapshot, recording) that could not be written."""

    exit_code = ExitStatus.RUNTIME


def redacted(text: object) -> str:
    """A URL as it may be shown: a password in its authority or its query replaced by ***; anything else as is."""
    s = str(text)
    if "://" not in s:
        return s
    try:
        parts = urlsplit(s)
    except ValueError:  # not a URL after all (e.g. an unclosed [ in the host): show nothing that might be a secret
        return s.split("://", 1)[0] + "://***"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
    query = urlencode([(k, "***" if k.lower() in ("password", "pass", "pwd") else v)
                       for k, v in parse_qsl(parts.query, keep_blank_values=True)], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def shown(text: object) -> str:
    """A file name or value as one safe terminal line: quoted when it holds control or undecodable characters."""
    s = str(text)
    return s if s.isprintable() else repr(s)
