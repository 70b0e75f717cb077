"""What the CLI hands a verb's handler: `Invocation` (the parsed options and the jobs planned for
them) and the `Handler` type. The CLI builds invocations; the verbs only read them, so neither
imports the other's module."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from ..core.matrix import Matrix
from ..core.plan import Job, Selection, WheelJob
from ..core.tree import DEFAULT_TREE, TreeFacts


@dataclass(frozen=True)
class Invocation:
    """Everything a verb's handler needs: the parsed options and the jobs planned for them."""

    verb: str
    matrix: Matrix
    selection: Selection
    jobs: list[Job]
    wheels: list[WheelJob]
    options: Mapping[str, Any]
    env: Mapping[str, str]
    stdout: TextIO = field(repr=False)
    tree: TreeFacts = DEFAULT_TREE


Handler = Callable[[Invocation], int]
