"""Errors that end in one clear line for the user, each with its exit status."""

from __future__ import annotations

# Exit statuses, documented in README.
EXIT_OK = 0
EXIT_INPUT = 1  # an image could not be read (the others were still answered)
EXIT_USAGE = 2  # bad command line or configuration
EXIT_MODEL = 3  # the model file is missing, corrupt or does not match its sidecar
EXIT_RUNTIME = 4  # the daemon could not run (e.g. no display for the window)


class EdgeFerError(Exception):
    """An error whose message is the one line shown to the user."""

    exit_code = EXIT_RUNTIME


class UsageError(EdgeFerError):
    """A command line that cannot be run."""

    exit_code = EXIT_USAGE


class ConfigError(EdgeFerError):
    """A configuration file or override that is wrong; the message names the key."""

    exit_code = EXIT_USAGE


class ImageError(EdgeFerError):
    """An input image that cannot be read."""

    exit_code = EXIT_INPUT


class ModelError(EdgeFerError):
    """A model file that is missing, corrupt or inconsistent with its sidecar."""

    exit_code = EXIT_MODEL


class WriteError(EdgeFerError):
    """An output file (annotated image, snapshot, recording) that could not be written."""

    exit_code = EXIT_RUNTIME


def shown(text: object) -> str:
    """A file name or value as one safe terminal line: quoted when it holds control or undecodable characters."""
    s = str(text)
    return s if s.isprintable() else repr(s)
