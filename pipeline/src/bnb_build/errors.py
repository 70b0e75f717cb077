"""Errors of the step programs: one base class, one exit code per kind of failure.

A step's ``main`` catches :class:`StepError`, prints it and returns its ``exit_code``; everything
below ``main`` raises, so tests can assert on the exception. Messages say what went wrong, the bad
value, and what is allowed or what to try next.
"""

from __future__ import annotations

import sys
from typing import Callable, Sequence


class StepError(Exception):
    """Base class of every failure a step reports to its caller."""

    exit_code = 1


class UsageError(StepError):
    """A command-line value is not allowed (unknown platform, bad library name, ...)."""

    exit_code = 2


class CorruptWheel(UsageError):
    """A file given as a wheel is no readable zip archive (not a zip, truncated, a damaged entry)."""

    exit_code = 2


class InputError(StepError):
    """An input file or folder is missing or unusable (no CMakeLists.txt, no wheels, ...)."""

    exit_code = 3


class ToolNotFound(StepError):
    """An external program the step needs is not on PATH."""

    exit_code = 4


class ToolFailed(StepError):
    """An external program exited with a non-zero status."""

    exit_code = 5

    def __init__(self, argv: Sequence[str], returncode: int, output_tail: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.output_tail = output_tail
        tail = "\n".join("    " + line for line in output_tail.splitlines()) or "    (no output)"
        msg = f"command failed with exit code {returncode}: {join_argv(argv)}\n  last lines of its output:\n{tail}"
        super().__init__(msg)


class BuildMismatch(StepError):
    """The build produced something other than what the job asked for."""

    exit_code = 6


class WheelError(StepError):
    """The wheel could not be assembled (wrong libraries, backend output, tag...)."""

    exit_code = 7


class AuditFailed(StepError):
    """The audit found at least one violation (the report lists them)."""

    exit_code = 8


def join_argv(argv: Sequence[str]) -> str:
    """A command line as a shell would read it (for messages only)."""
    import shlex

    return " ".join(shlex.quote(str(a)) for a in argv)


def redact(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every secret replaced by ``***`` (longest first, so no part of one survives)."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def run_step(action: Callable[[], object], secrets: Sequence[str] = ()) -> int:
    """A step's ``main``: run ``action``; on a StepError print it (secrets redacted) and return its
    exit code. Returns the action's result when that is an exit code (an int), else 0."""
    try:
        code = action()
    except StepError as e:
        print(f"error: {redact(str(e), secrets)}", file=sys.stderr, flush=True)
        return e.exit_code
    return code if isinstance(code, int) else 0
