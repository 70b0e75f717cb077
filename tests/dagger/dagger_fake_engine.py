"""FakeEngine: a stand-in for the Dagger engine, which cannot run on this machine.

It replaces the SDK's query execution (`dagger.client._core.Context.execute`): each query the module
would send is recorded as its chain of fields (name + arguments, objects kept as objects), and a
placeholder value of the expected type is answered. The tests check what the module asks for (images,
platforms, commands, caches, files) and how it reacts to what the engine answers.

The engine's rules it follows (each from the engine's v0.21 source, dagger/dagger at v0.21.8, the
newest v0.21 tag of the mirror; docs/engine-rules.md states them for the module):

- content digests (`identity`): a contextual `DefaultPath` directory is content-hashed
  (core/modulesource.go, LoadContextDir); `Directory.file` always is (core/schema/directory.go, `file`);
  `Directory.filter`/`directory` keep a digest only when their parent has one
  (core/schema/directory.go, maintainContentHashing); `withDirectory`/`withNewFile`/`withFile` set
  none, nor does `currentModule().source()` (core/schema/module.go, currentModuleSource: the context
  directory `withDirectory` the generated files). A call's key covers its inputs by their content
  digest where they have one, else by their whole recipe (dagql/result_call_frame.go, inputs and
  ContentPreferredDigest).
- execs (`evaluate`): an exec runs when a leaf that needs its result is asked for (not for an ID);
  expect=SUCCESS accepts exit code 0, expect=ANY 0-127 and 192-255, anything else raises an ExecError
  (core/container.go, ReturnTypes.ReturnCodes); an accepted exec is cached by its key across sessions,
  a failed one is not (dagql/cache.go, `wait`: a call that ends in an error is dropped).
- volatile variables: one value per session and name, the last one written; an exec reads the
  session's value of each volatile name its container carries, whatever value that container set
  (core/schema/container.go withVolatileVariable -> dagql/cache.go SetVolatileVars; core/container_exec.go
  ResolveVolatileVars). The stand-in answers the worst case: the value last written in the session.
  The value is no part of an exec's key: withVolatileVariable's content digest is its parent's and
  the name only (core/schema/container.go, withVolatileVariable).
- glob (`known`): matching folders are listed too, with a trailing slash (core/directory.go, Glob).
- IDs: an object loaded from the ID a `sync` answered is that result, not a copy: its execs and exit
  code are those of the query that made it (`expand`).
- copy filters (`filter`, `withDirectory`'s include/exclude, an upload's ignore patterns): a pattern
  matches a path or a folder above it, `*` within one folder, `**/` across folders (util/patternmatcher,
  moby's, which core/directory.go uses); `!` negations are not modelled.
- function cache policies (`call`): `never` and `session` add a per-call or per-session input to the
  function call's key only (core/modfunc.go, cacheImplicitInputs); the execs inside keep their keys.
- export (`export_directory`): merges into the folder unless `wipe` (core/schema/directory.go, `export`).

Not modelled: the contents of files that steps write (outputs are known by their recipe only, which is
stricter than the engine's content hashing of exec outputs; a step's stdout and an unknown file's
contents are placeholders named by the query's key), the module context behind
`currentModule().source()` (here the module's folder, pipeline/, only), cache volumes' contents and
locking, secrets' scrubbing, services, emulation, a TTL's expiry, and the engine's pruning of its cache.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import dagger
import pytest
from dagger._exceptions import QueryErrorValue
from dagger.client._core import Context, Field
from dagger.client.base import Type

REPO = Path(__file__).resolve().parents[2]


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


# core/container.go, ReturnTypes.ReturnCodes: 128-191 are "likely from exiting via a signal" and are
# accepted by no expectation.
ACCEPTED = {"SUCCESS": frozenset({0}), "FAILURE": frozenset([*range(1, 128), *range(192, 256)]),
            "ANY": frozenset([*range(0, 128), *range(192, 256)])}  # fmt: skip

EVALUATING = frozenset({"sync", "exitCode", "stdout", "stderr", "contents", "entries", "glob", "exists", "digest", "export", "size"})
"""Leaves that need the result (so its execs run); `id` does not (the engine hands out IDs lazily)."""


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


def module_files() -> dict[str, str]:
    """The module's folder (dagger.json: source = "pipeline") as the engine loads it: path -> digest."""
    root = REPO / "pipeline"
    files = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if not path.is_file() or rel.startswith(("sdk/", ".venv/", ".env")) or "__pycache__" in rel or rel.endswith(".pyc"):
            continue
        files[rel] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return files


@dataclass
class FakeEngine:
    queries: list[Recorded] = field(default_factory=list)
    fail: Callable[[Recorded], Exception | None] = lambda _: None
    exit_codes: dict[str, int] = field(default_factory=dict)
    globs: dict[str, list[str]] = field(default_factory=dict)  # Directory.glob(pattern) -> paths
    digests: Callable[[Recorded], str] = lambda q: fake_digest(q.text())  # File/Directory.digest()
    platform: str = "linux/amd64"  # defaultPlatform: the engine's own
    exec_code: Callable[[list[str]], int] = lambda _argv: 0  # the exit code of an exec that runs
    # the same, given also the calls that made the exec's container (None: exec_code's answer)
    exit_code_of: Callable[[list[str], list[Call]], int | None] = lambda _argv, _calls: None
    module: dict[str, str] = field(default_factory=module_files)  # the module's folder: path -> digest

    # the engine's state: the exec cache outlives sessions, volatile values and session-cached calls do not
    exec_cache: dict[str, int] = field(default_factory=dict)
    ran: list[tuple[list[str], str]] = field(default_factory=list)  # (argv, key) of every exec that ran
    session: int = 0
    volatile: dict[str, str] = field(default_factory=dict)
    calls_cache: dict[tuple[Any, ...], Any] = field(default_factory=dict)
    synced: dict[str, list[Any]] = field(default_factory=dict)  # the ID a `sync` answered -> the fields it names

    delay_s: float = 0.0  # how long each query takes: lets a test see how many run at the same time
    in_flight: int = 0
    most_in_flight: dict[str, int] = field(default_factory=dict)  # leaf -> most queries with it at once

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        engine = self
        monkeypatch.setattr(_STATE, "engine", self)

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

    # ---- sessions, function calls ------------------------------------------------------------------

    def new_session(self) -> None:
        """A new `dagger call` on the same (persistent) engine: the exec cache stays."""
        self.session += 1
        self.volatile.clear()

    async def call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call a module function as the engine does: its result is cached by its arguments, plus the
        session (`cache="session"`) or the call itself (`cache="never"`); core/modfunc.go,
        cacheImplicitInputs. Only the call: the execs inside keep their own keys."""
        cache = _function_cache_policy(method)
        if cache == "never":
            return await method(*args, **kwargs)
        key: tuple[Any, ...] = (getattr(method, "__name__", str(method)), tuple(_identity_arg(a) for a in args),
                                tuple(sorted((k, _identity_arg(v)) for k, v in kwargs.items())))  # fmt: skip
        if cache == "session":
            key = (*key, self.session)
        if key not in self.calls_cache:
            self.calls_cache[key] = await method(*args, **kwargs)
        return self.calls_cache[key]

    # ---- answering a query -------------------------------------------------------------------------

    def answer(self, ctx: Context, return_type: Any) -> Any:
        record = Recorded([Call(f.name, dict(f.args)) for f in ctx.selections], ctx)
        self.queries.append(record)
        error = self.fail(record)
        if error is not None:
            raise error
        leaf = record.leaf
        last_code = self.evaluate(self.expand(list(ctx.selections)[:-1])) if leaf in EVALUATING else None
        known = self.known(record)
        if known is not None:
            return known
        if leaf == "defaultPlatform":
            return dagger.Platform(self.platform)
        if leaf == "imageRef":
            address = record.named("from")[-1].args["address"]
            return f"docker.io/{address}@{fake_digest(address)}"
        if leaf == "exitCode":
            return self.exit_codes.get("exitCode", last_code or 0)
        if leaf in ("stdout", "contents"):  # the same query, the same answer (a cached exec's output stays)
            return f"<{leaf} of {fake_digest(identity(record))[7:23]}>"
        if leaf in ("sync", "id"):
            # An ID names the result by what the engine keys it by (`identity`), as a real engine's does.
            answer = "id:" + identity(record)
            self.synced.setdefault(answer, list(ctx.selections)[:-1])
            return answer
        if leaf == "glob":
            return list(self.globs.get(record.calls[-1].args["pattern"], []))
        if leaf == "entries":
            return self.step_output(record)
        if leaf == "exists":
            return False
        if leaf == "digest":
            return self.digests(record)
        return None if return_type is None else ""

    def evaluate(self, fields: list[Field]) -> int | None:
        """Run what the chain `fields` needs, as the engine would: the objects among its arguments
        first, then its execs in order, each answered from the exec cache when its key is there.
        Returns the exit code of the chain's last exec (None when it has none)."""
        last: int | None = None
        for i, f in enumerate(fields):
            for value in _objects(f.args):
                self.evaluate(list(value._ctx.selections))
            if f.name == "withVolatileVariable":  # core/schema/container.go -> dagql/cache.go SetVolatileVars
                self.volatile[f.args["name"]] = f.args["value"]
            if f.name != "withExec":
                continue
            argv = list(f.args["args"])
            key = _walk(fields[: i + 1])[1]
            if key in self.exec_cache:
                last = self.exec_cache[key]
                continue
            chosen = self.exit_code_of(argv, [Call(g.name, dict(g.args)) for g in fields[: i + 1]])
            code = self.exec_code(argv) if chosen is None else chosen
            self.ran.append((argv, key))
            expect = f.args.get("expect")
            expect_name = expect.name if isinstance(expect, enum.Enum) else (expect or "SUCCESS")
            if code not in ACCEPTED[str(expect_name)]:
                raise exec_error(argv, code)  # an error is no result: nothing is cached
            self.exec_cache[key] = code
            last = code
        return last

    def expand(self, fields: list[Any]) -> list[Any]:
        """`fields`, where they start from an object loaded by an ID this engine answered, with the
        fields that made it (an ID names a result, not a copy: the object's execs and exit code are
        those of the query that made it)."""
        if fields and (fields[0].name == "node" or fields[0].name.startswith("load")):
            made = self.synced.get(str(fields[0].args.get("id", "")))
            if made is not None:
                return self.expand(made) + list(fields[1:])
        return fields

    def seen_volatile(self, record: Recorded) -> dict[str, str]:
        """The volatile variables the last exec of `record` reads: for each name its container set,
        the session's value (core/container_exec.go, ResolveVolatileVars), last write wins."""
        names = [c.args["name"] for c in record.calls if c.name == "withVolatileVariable"]
        return {name: self.volatile[name] for name in names if name in self.volatile}

    def known(self, record: Recorded) -> Any:
        """Answers about a Directory whose files the model knows (see `identity`): exists, entries,
        glob, and the contents of one of its files; None for anything else."""
        leaf, calls = record.leaf, record.calls
        if leaf == "contents" and len(calls) >= 2 and calls[-2].name == "file":
            files = _walk(list(record.ctx.selections)[:-2])[0]
            path = calls[-2].args["path"]
            return files[path] if files is not None and path in files else None
        if leaf not in ("exists", "entries", "glob"):
            return None
        files = _walk(list(record.ctx.selections)[:-1])[0]
        if files is None:
            return False if leaf == "exists" else None
        args = calls[-1].args
        if leaf == "exists":
            path = args["path"].strip("/")
            return path in files or any(k.startswith(path + "/") for k in files)
        if leaf == "entries":
            return sorted({k.split("/", 1)[0] for k in files})
        # core/directory.go Glob: folders match too, named with a trailing slash (SupportsDirSlash:
        # clients of this SDK's version)
        regex = _glob_regex(args["pattern"])
        folders = {"/".join(k.split("/")[:i]) for k in files for i in range(1, k.count("/") + 1)}
        return sorted([k for k in files if regex.match(k)] + [f"{d}/" for d in folders if regex.match(d)])

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

    def made(self, obj: Any) -> list[Call]:
        """The query that made `obj`: its own chain, or, for an object loaded from the ID a `sync`
        answered, the chain of that synced query (without the `sync`)."""
        calls = chain(obj)
        if calls and (calls[0].name == "node" or calls[0].name.startswith("load")):
            made = str(calls[0].args.get("id", ""))
            for q in self.leaves("sync"):
                if "id:" + identity(q) == made:
                    return q.calls[:-1] + calls[1:]
        return calls

    def leaves(self, name: str) -> list[Recorded]:
        return [q for q in self.queries if q.leaf == name]

    def all_text(self, *, secrets: bool = True) -> str:
        return "\n".join(render(SimpleNamespace(_ctx=q.ctx), secrets=secrets) for q in self.queries)


def _function_cache_policy(method: Any) -> str:
    """The `cache=` of a module function as the SDK registers it ("" for the default, a TTL)."""
    from dagger.mod._module import FUNCTION_DEF_KEY

    meta = getattr(getattr(method, "__func__", method), FUNCTION_DEF_KEY, None)
    return str(getattr(meta, "cache", "") or "")


def _objects(value: Any) -> list[Type]:
    if isinstance(value, Type):
        return [value]
    if isinstance(value, dict):
        return [o for v in value.values() for o in _objects(v)]
    if isinstance(value, (list, tuple)):
        return [o for v in value for o in _objects(v)]
    return []


def export_directory(files: Mapping[str, str], path: Path, *, wipe: bool = False) -> None:
    """`Directory.export(path, wipe)` on the host: the folder is emptied first only with `wipe`,
    otherwise the files are merged into whatever it holds (core/schema/directory.go, `export`)."""
    if wipe and path.exists():
        shutil.rmtree(path)
    for rel, contents in files.items():
        target = path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(contents)


# ---- the engine's cache keys ------------------------------------------------------------------------
#
# The engine keys every call by its receiver and arguments; where one of them carries a content digest,
# by that digest instead of its recipe (dagql/result_call_frame.go). Which objects carry one: see the
# module notes. `identity` applies those rules to a recorded chain. For Directories whose files the
# model knows (built from `dag.directory()` and `with_new_file`, a contextual upload, the module's
# source) it follows the files, so two content-hashed chains that hold the same files get the same
# identity, and two chains without a digest get the same identity only when their recipes match.


@dataclass
class _State:
    engine: FakeEngine | None = None
    contextual: dict[int, tuple[Field, dict[str, str]]] = field(default_factory=dict)


_STATE = _State()


def contextual(directory: dagger.Directory, files: dict[str, str]) -> dagger.Directory:
    """Mark `directory` (holding `files`) as a contextual `DefaultPath` upload: content-hashed by the
    engine (core/modulesource.go, LoadContextDir sets the content digest of the loaded directory)."""
    last = directory._ctx.selections[-1]
    _STATE.contextual[id(last)] = (last, dict(files))
    return directory


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """An include or exclude pattern (`csrc/**`, `*.whl`, `**/.venv`, an exact path) as a path regex,
    as the engine's copy filter matches it (util/patternmatcher, moby's, which core/directory.go
    uses): a pattern matches a path or any folder above it; `*` stays within one folder, `**/` spans
    zero or more folders, a leading `/` is the root."""
    pattern = pattern.lstrip("/")
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(.*/)?"
            i += 3
        elif pattern.startswith("**", i):
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


def _file_content(obj: Any) -> str | None:
    """The content of a File taken with `Directory.file` from a Directory whose files are known."""
    fields = list(obj._ctx.selections)
    if not fields or fields[-1].name != "file":
        return None
    files = _walk(fields[:-1])[0]
    return None if files is None else files.get(fields[-1].args["path"])


def _apply(files: dict[str, str], call: Call) -> dict[str, str] | None:
    """The files after one call on a Directory whose files are known; None when they become unknown."""
    args = call.args
    if call.name == "withNewFile":
        return {**files, args["path"]: args["contents"]}
    if call.name == "withFile":
        content = _file_content(args["source"])
        return None if content is None else {**files, args["path"].strip("/"): content}
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
    """The files of a Directory the model knows, else None."""
    return _walk(list(obj._ctx.selections))[0]


def files_of_calls(calls: list[Call]) -> dict[str, str] | None:
    return _walk_calls(calls)[0]


def _root(fields: list[Any]) -> tuple[int, dict[str, str] | None, str, bool]:
    """Where a chain's known part starts: (calls consumed, files, key, content-hashed)."""
    for i in range(len(fields) - 1, -1, -1):  # the longest prefix that is a contextual upload
        found = _STATE.contextual.get(id(fields[i]))
        if found is not None and found[0] is fields[i]:
            return i + 1, dict(found[1]), _content_key(found[1]), True
    names = [f.name for f in fields[:2]]
    if names == ["currentModule", "source"]:
        # core/schema/module.go currentModuleSource: the context directory `withDirectory` the generated
        # files: no content digest, so its key follows every file of the module's folder.
        module = _STATE.engine.module if _STATE.engine is not None else module_files()
        return 2, dict(module), "currentModule.source:" + _content_key(module), False
    if fields and fields[0].name == "directory" and not fields[0].args:
        return 1, {}, "directory()", False
    return 0, None, "", False


def _walk(fields: list[Any]) -> tuple[dict[str, str] | None, str]:
    consumed, files, key, hashed = _root(fields)
    for f in fields[consumed:]:
        call = Call(f.name, dict(f.args))
        if call.name == "file" and files is not None and call.args["path"] in files:
            # core/schema/directory.go `file`: always content-hashed (its path and content)
            path = call.args["path"]
            files, key, hashed = None, "file-content:" + _content_key({path: files[path]}), True
            continue
        files = _apply(files, call) if files is not None else None
        if hashed and files is not None and call.name in ("filter", "directory"):
            key = _content_key(files)  # maintainContentHashing: the parent had a digest, the result gets one
            continue
        hashed = False
        if call.name == "withVolatileVariable":
            # core/schema/container.go withVolatileVariable: its content digest is the parent's and the
            # name only, so the value never reaches an exec's key
            key = f"{key}.withVolatileVariable(name: {_identity_arg(call.args['name'])})"
            continue
        rendered = ", ".join(f"{k}: {_identity_arg(v)}" for k, v in call.args.items())
        key = f"{key}.{call.name}({rendered})" if key else f"{call.name}({rendered})"
    return files, key


def _walk_calls(calls: list[Call]) -> tuple[dict[str, str] | None, str]:
    """`_walk` over recorded calls (their Field objects are gone: contextual marks are matched by
    re-running the recorded chain's fields where the caller kept them)."""
    return _walk([_AsField(c.name, c.args) for c in calls])


@dataclass
class _AsField:
    name: str
    args: dict[str, Any]


def _identity_of_calls(calls: list[Call]) -> str:
    return _walk_calls(calls)[1]


def identity(obj: Any) -> str:
    """The engine's cache identity of a Dagger object (or a Recorded query) under the rules above."""
    if isinstance(obj, Recorded):
        return _walk(list(obj.ctx.selections))[1]
    return _walk(list(obj._ctx.selections))[1]


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


def tree_source(files: dict[str, str], *, upload: bool = True) -> dagger.Directory:
    """A source Directory holding `files` (path -> contents); `upload`: as `dagger call` passes a
    `DefaultPath` argument (a contextual, content-hashed directory), else built with `with_new_file`
    (no content digest)."""
    from dagger import dag

    directory = dag.directory()
    for path, contents in sorted(files.items()):
        directory = directory.with_new_file(path, contents)
    return contextual(directory, files) if upload else directory
