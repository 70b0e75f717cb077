"""Errors of the orchestration side. Each class carries the exit code `bnb-ci` returns for it.

Messages say what was wrong (naming the bad value) and what to do instead (listing allowed values).
"""

from __future__ import annotations

from collections.abc import Iterable


class PipelineError(Exception):
    """Base class: `bnb-ci` prints the message and exits with `exit_code`."""

    exit_code = 1


class MatrixError(PipelineError):
    """The support matrix file (or the image lock file) is invalid."""

    exit_code = 3


class SelectionError(PipelineError):
    """A selection (backend, version, platform, arch override) names something the matrix lacks."""

    exit_code = 2


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """" (did you mean 'x'?)" for the closest choice, or "" when nothing is close."""
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def allowed_list(choices: Iterable[object]) -> str:
    return ", ".join(str(c) for c in choices)
