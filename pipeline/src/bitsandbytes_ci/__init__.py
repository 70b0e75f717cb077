"""Orchestration side of the bitsandbytes build-and-release pipeline, in three parts:

- ``core/``: matrix (data, validated) -> tree settings -> plan (jobs, wheels, shards) -> results;
- ``host/``: the host executor ``bnb-ci``, which runs the plan's steps on this machine;
- ``module/``: the Dagger module, which runs the same steps in containers.

``core/`` imports neither executor and the executors do not import each other (docs/contracts.md).
The step programs that jobs run live in the sibling package ``bnb_build`` (standard library and
pinned tools). ``BitsandbytesCi`` is the Dagger module's main object (``module/main.py``); it is
imported on first use, so ``bnb-ci`` never loads the Dagger SDK.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .module.main import BitsandbytesCi as BitsandbytesCi

__all__ = ["BitsandbytesCi"]


def __getattr__(name: str) -> Any:
    if name == "BitsandbytesCi":
        from .module.main import BitsandbytesCi

        return BitsandbytesCi
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
