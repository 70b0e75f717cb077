"""FakeEngine: a stand-in for the Dagger engine, which cannot run on this machine.

It replaces the SDK's query execution (`dagger.client._core.Context.execute`): each query the module
would send is recorded as its chain of fields (name + arguments, objects kept as objects), and a
placeholder value of the expected type is answered. Nothing here checks that the engine would accept a
query; the tests check what the module asks for (images, platforms, commands, caches, files).
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import dagger
import pytest
from dagger._exceptions import QueryErrorValue
from dagger.client._core import Context
from dagger.client.base import Type


@dataclass(frozen=True)
class Call:
    """One field of a query chain."""

    name: str
    args: dict[str, Any]


def chain(obj: Any) -> list[Call]:
    """The fields that build `obj` (a Dagger object), outermost first."""
    return [Call(f.name, dict(f.args)) for f in obj._ctx.selections]


def render(obj: Any, *, secrets: bool = False) -> str:
    """The query text of `obj`; Secret objects render as <Secret> unless `secrets` (they travel as IDs)."""
    def lit(value: Any) -> str:
        if isinstance(value, dagger.Secret) and not secrets:
            return "<Secret>"
        if isinstance(value, Type):
            return "<" + type(value).__name__ + " " + render(value, secrets=secrets) + ">"
        if isinstance(value, enum.Enum):
            return value.name
        if isinstance(value, (list, tuple)):
            return "[" + ", ".join(lit(v) for v in value) + "]"
        return json.dumps(value)

    out = ""
    for f in reversed(list(obj._ctx.selections)):
        args = ", ".join(f"{k}: {lit(v)}" for k, v in f.args.items())
        out = f"{f.name}{'(' + args + ')' if args else ''}{' { ' + out + ' }' if out else ''}"
    return out


def fake_digest(address: str) -> str:
    return "sha256:" + hashlib.sha256(address.encode()).hexdigest()


def exec_error(argv: list[str], code: int = 1, stderr: str = "boom") -> dagger.ExecError:
    value = QueryErrorValue(
        message=f"process exited with {code}",
        extensions={"_type": "EXEC_ERROR", "cmd": argv, "exitCode": code, "stdout": "", "stderr": stderr},
    )
    error = dagger.QueryError([value], SimpleNamespace(document=None))
    assert isinstance(error, dagger.ExecError)
    return error


@dataclass
class Recorded:
    calls: list[Call]
    ctx: Context

    @property
    def leaf(self) -> str:
        return self.calls[-1].name

    def named(self, name: str) -> list[Call]:
        return [c for c in self.calls if c.name == name]

    def execs(self) -> list[list[str]]:
        return [list(c.args["args"]) for c in self.named("withExec")]

    def text(self) -> str:
        return render(SimpleNamespace(_ctx=self.ctx))


@dataclass
class FakeEngine:
    queries: list[Recorded] = field(default_factory=list)
    fail: Callable[[Recorded], Exception | None] = lambda _: None
    exit_codes: dict[str, int] = field(default_factory=dict)
    globs: dict[str, list[str]] = field(default_factory=dict)  # Directory.glob(pattern) -> paths
    digests: Callable[[Recorded], str] = lambda q: fake_digest(q.text())  # File/Directory.digest()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        engine = self

        async def execute(ctx: Context, return_type: Any = None) -> Any:
            return engine.answer(ctx, return_type)

        monkeypatch.setattr(Context, "execute", execute)

    def answer(self, ctx: Context, return_type: Any) -> Any:
        record = Recorded([Call(f.name, dict(f.args)) for f in ctx.selections], ctx)
        self.queries.append(record)
        error = self.fail(record)
        if error is not None:
            raise error
        leaf = record.leaf
        if leaf == "imageRef":
            address = record.named("from")[-1].args["address"]
            return f"docker.io/{address}@{fake_digest(address)}"
        if leaf == "exitCode":
            return self.exit_codes.get("exitCode", 0)
        if leaf in ("stdout", "contents"):
            return f"<{leaf} of {len(self.queries)}>"
        if leaf in ("sync", "id"):
            return "id:" + record.text()
        if leaf == "glob":
            return list(self.globs.get(record.calls[-1].args["pattern"], []))
        if leaf == "entries":
            return []
        if leaf == "digest":
            return self.digests(record)
        return None if return_type is None else ""

    def leaves(self, name: str) -> list[Recorded]:
        return [q for q in self.queries if q.leaf == name]

    def all_text(self, *, secrets: bool = True) -> str:
        return "\n".join(render(SimpleNamespace(_ctx=q.ctx), secrets=secrets) for q in self.queries)
