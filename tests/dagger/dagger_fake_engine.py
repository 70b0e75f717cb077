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
import re
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

    delay_s: float = 0.0  # how long each query takes: lets a test see how many run at the same time
    in_flight: int = 0
    most_in_flight: dict[str, int] = field(default_factory=dict)  # leaf -> most queries with it at once

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        engine = self

        async def execute(ctx: Context, return_type: Any = None) -> Any:
            if not engine.delay_s:
                return engine.answer(ctx, return_type)
            import anyio

            native = any(f.name == "withExec" and list(f.args.get("args", []))[:4] == ["python3", "-m", "bnb_build", "native"] for f in ctx.selections)
            engine.in_flight += native
            engine.most_in_flight["native"] = max(engine.most_in_flight.get("native", 0), engine.in_flight)
            try:
                await anyio.sleep(engine.delay_s)
                return engine.answer(ctx, return_type)
            finally:
                engine.in_flight -= native

        monkeypatch.setattr(Context, "execute", execute)

    def answer(self, ctx: Context, return_type: Any) -> Any:
        record = Recorded([Call(f.name, dict(f.args)) for f in ctx.selections], ctx)
        self.queries.append(record)
        error = self.fail(record)
        if error is not None:
            raise error
        leaf = record.leaf
        known = self.known(record)
        if known is not None:
            return known
        if leaf == "imageRef":
            address = record.named("from")[-1].args["address"]
            return f"docker.io/{address}@{fake_digest(address)}"
        if leaf == "exitCode":
            return self.exit_codes.get("exitCode", 0)
        if leaf in ("stdout", "contents"):
            return f"<{leaf} of {len(self.queries)}>"
        if leaf in ("sync", "id"):
            # An ID names the result by what the engine keys it by (`identity`), as a real engine's does.
            return "id:" + identity(record)
        if leaf == "glob":
            return list(self.globs.get(record.calls[-1].args["pattern"], []))
        if leaf == "entries":
            return self.step_output(record)
        if leaf == "exists":
            return False
        if leaf == "digest":
            return self.digests(record)
        return None if return_type is None else ""

    def known(self, record: Recorded) -> Any:
        """Answers about a Directory whose files the model knows (see `identity`): exists, entries,
        glob, and the contents of one of its files; None for anything else."""
        leaf, calls = record.leaf, record.calls
        if leaf == "contents" and len(calls) >= 2 and calls[-2].name == "file":
            files = files_of_calls(calls[:-2])
            path = calls[-2].args["path"]
            return files[path] if files is not None and path in files else None
        if leaf not in ("exists", "entries", "glob"):
            return None
        files = files_of_calls(calls[:-1])
        if files is None:
            return False if leaf == "exists" else None
        args = calls[-1].args
        if leaf == "exists":
            path = args["path"].strip("/")
            return path in files or any(k.startswith(path + "/") for k in files)
        if leaf == "entries":
            return sorted({k.split("/", 1)[0] for k in files})
        regex = _glob_regex(args["pattern"])
        return sorted(k for k in files if regex.match(k))

    @staticmethod
    def step_output(record: Recorded) -> list[str]:
        """The entries of a step's out/ folder, as the step would write them: a wheel step's wheel."""
        calls = record.calls
        if calls and calls[0].name == "node":  # a synced Directory: its ID holds the query that made it
            made = str(calls[0].args.get("id", ""))
            found = re.search(r'withExec\(args: \["python3", "-m", "bnb_build", "wheel", .*?"--plat-tag", "([^"]+)"', made)
            if found and made.endswith('.directory(path: "/work/out").sync()'):
                return [f"bitsandbytes-0.0.0-py3-none-{found.group(1)}.whl"]
        return []

    def leaves(self, name: str) -> list[Recorded]:
        return [q for q in self.queries if q.leaf == name]

    def all_text(self, *, secrets: bool = True) -> str:
        return "\n".join(render(SimpleNamespace(_ctx=q.ctx), secrets=secrets) for q in self.queries)


# ---- the engine's cache keys ------------------------------------------------------------------------
#
# The engine keys every step by the digests of its inputs. Its rule (dagger-python.md, "Engine rules"):
# a Directory made by `Directory.filter(...)` or `Directory.directory(path)` is keyed by the files it
# holds; any other object by the whole query that made it (so `Container.with_directory(path, dir,
# include=...)` still carries the digest of all of `dir`). `identity` applies that rule to a recorded
# chain: for Directories built from `dag.directory()` and `with_new_file` (the tests' sources) it knows
# the files, so two chains that select the same files get the same identity.


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """An include pattern (`csrc/**`, `*.whl`, `linux/x86_64/**`, an exact path) as a path regex."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(f"^{out}(/.*)?$")


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A `Directory.glob` pattern as a regex over file paths (`**/` spans folders, `*` does not)."""
    out = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
    return re.compile(f"^{out}$")


def select_files(files: dict[str, str], include: list[str] | None, exclude: list[str] | None = None) -> dict[str, str]:
    chosen = dict(files)
    if include:
        regexes = [_pattern_regex(p) for p in include]
        chosen = {k: v for k, v in chosen.items() if any(r.match(k) for r in regexes)}
    if exclude:
        regexes = [_pattern_regex(p) for p in exclude]
        chosen = {k: v for k, v in chosen.items() if not any(r.match(k) for r in regexes)}
    return chosen


def _content_key(files: dict[str, str]) -> str:
    return "content:" + hashlib.sha256(json.dumps(sorted(files.items())).encode()).hexdigest()[:16]


def _apply(files: dict[str, str], call: Call) -> dict[str, str] | None:
    """The files after one call on a Directory whose files are known; None when they become unknown."""
    args = call.args
    if call.name == "withNewFile":
        return {**files, args["path"]: args["contents"]}
    if call.name == "withDirectory":
        inner = _files_of(args["source"])
        if inner is None:
            return None
        prefix = args["path"].strip("/").removeprefix(".").strip("/")
        subset = select_files(inner, args.get("include"), args.get("exclude"))
        return {**files, **{f"{prefix}/{k}" if prefix else k: v for k, v in subset.items()}}
    if call.name == "filter":
        return select_files(files, args.get("include"), args.get("exclude"))
    if call.name == "directory":
        root = args["path"].strip("/") + "/"
        return {k[len(root) :]: v for k, v in files.items() if k.startswith(root)}
    return None


def _files_of(obj: Any) -> dict[str, str] | None:
    """The files of a Directory built from `dag.directory()` by calls this model follows, else None."""
    return files_of_calls(chain(obj))


def files_of_calls(calls: list[Call]) -> dict[str, str] | None:
    if not calls or calls[0] != Call("directory", {}):
        return None
    files: dict[str, str] | None = {}
    for call in calls[1:]:
        files = _apply(files, call) if files is not None else None
    return files


def identity(obj: Any) -> str:
    """The engine's cache identity of a Dagger object (or a Recorded query) under the rule above."""
    calls = obj.calls if isinstance(obj, Recorded) else chain(obj)
    files: dict[str, str] | None = {} if calls and calls[0] == Call("directory", {}) else None
    key = "directory" if files is not None else ""
    for call in calls[1:] if files is not None else calls:
        files = _apply(files, call) if files is not None else None
        if files is not None and call.name in ("filter", "directory"):
            key = _content_key(files)  # the engine re-hashes the subset here
            continue
        rendered = ", ".join(f"{k}: {_identity_arg(v)}" for k, v in call.args.items())
        key = f"{key}.{call.name}({rendered})" if key else f"{call.name}({rendered})"
    return key


def _identity_arg(value: Any) -> str:
    if isinstance(value, dagger.Secret):
        return "<Secret>"
    if isinstance(value, Type):
        return "<" + identity(value) + ">"
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_identity_arg(v) for v in value) + "]"
    return json.dumps(value)


def tree_source(files: dict[str, str]) -> dagger.Directory:
    """A source Directory holding `files` (path -> contents), as `dagger call` would upload a tree."""
    from dagger import dag

    directory = dag.directory()
    for path, contents in sorted(files.items()):
        directory = directory.with_new_file(path, contents)
    return directory
