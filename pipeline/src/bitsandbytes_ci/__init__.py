"""Orchestration side of the bitsandbytes build-and-release pipeline.

matrix (data, validated) -> plan (jobs) -> executor (Dagger or host) -> artefacts -> wheels -> audit -> release.
The step programs that jobs run live in the sibling package ``bnb_build`` (standard library only).
``BitsandbytesCi`` is the Dagger module's main object (``main.py``); it is imported on first use, so
the host side (``bnb-ci``) never loads the Dagger SDK.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .main import BitsandbytesCi as BitsandbytesCi

__all__ = ["BitsandbytesCi"]


def __getattr__(name: str) -> Any:
    if name == "BitsandbytesCi":
        from .main import BitsandbytesCi

        return BitsandbytesCi
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
