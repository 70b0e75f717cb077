"""The engine's rules the module relies on (docs/engine-rules.md), each in two halves: the stand-in
engine (dagger_fake_engine.py) follows the rule as the engine's v0.21 source writes it, and the module
keeps it. Each module test fails when the module breaks the rule.

What the stand-in does not model is listed in dagger_fake_engine.py's notes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import dagger
import pytest
from dagger import dag
from dagger.client.base import Type
from dagger_fake_engine import Call, FakeEngine, chain, contextual, export_directory, identity, tree_source
from dagger_sources import REPO, repo_source, uploaded_paths

from bitsandbytes_ci.core.matrix import load_matrix
from bitsandbytes_ci.core.plan import Selection, plan_jobs, plan_wheels
from bitsandbytes_ci.core.tree import read_tree
from bitsandbytes_ci.module.main import BitsandbytesCi
from bitsandbytes_ci.module.stages.common import SOURCE_IGNORE
from bitsandbytes_ci.module.stages.fanout import BuildFailed

NATIVE = ["python3", "-m", "bnb_build", "native"]
TREE = read_tree(REPO)


def files_of(result: Any) -> dict[str, str]:
    """The files a build-all result writes itself (failures.md, summary.md, tries.md ...)."""
    return {c.args["path"]: c.args["contents"] for c in chain(result) if c.name == "withNewFile"}


def status(summary: str, row: str) -> str:
    """A row's status in summary.md's table ("built", "failed", ...)."""
    found = [line.split("|")[3].strip().lower() for line in summary.splitlines() if line.startswith(f"| {row} |")]
    assert len(found) == 1, f"summary.md has no row {row}"
    return found[0]


# ---- content digests ---------------------------------------------------------------------------------


def test_stand_in_content_digests() -> None:
    """core/modulesource.go LoadContextDir, core/schema/directory.go file / maintainContentHashing /
    withDirectory, core/schema/module.go currentModuleSource, dagql/result_call_frame.go."""
    a = {"README.md": "a", "csrc/x.cpp": "1"}
    b = {"README.md": "b", "csrc/x.cpp": "1"}
    # a contextual upload is content-hashed, and filter/directory keep a digest
    assert identity(tree_source(a)) != identity(tree_source(b))
    assert identity(tree_source(a).filter(include=["csrc/**"])) == identity(tree_source(b).filter(include=["csrc/**"]))
    assert identity(tree_source(a).directory("csrc")) == identity(tree_source(b).directory("csrc"))
    assert identity(tree_source(a).filter(include=["csrc/**"])) != identity(tree_source({**b, "csrc/x.cpp": "2"}).filter(include=["csrc/**"]))
    # withDirectory sets none: a filter of its result follows the whole recipe
    copied = lambda files: dag.directory().with_directory("s", tree_source(files)).filter(include=["s/csrc/**"])  # noqa: E731
    assert identity(copied(a)) != identity(copied(b))
    # nor do withNewFile chains
    assert identity(tree_source(a, upload=False).filter(include=["csrc/**"])) != identity(tree_source(b, upload=False).filter(include=["csrc/**"]))
    # Directory.file always is, by its path and content
    assert identity(tree_source(a, upload=False).file("csrc/x.cpp")) == identity(tree_source(b, upload=False).file("csrc/x.cpp"))
    assert identity(tree_source(a, upload=False).file("csrc/x.cpp")) != identity(tree_source({**a, "csrc/x.cpp": "2"}, upload=False).file("csrc/x.cpp"))
    # an exec's key: its inputs' digests where they have one, else their whole recipe
    run = lambda d: dag.container().from_("alpine").with_directory("/w", d).with_exec(["make"])  # noqa: E731
    assert identity(run(tree_source(a).filter(include=["csrc/**"]))) == identity(run(tree_source(b).filter(include=["csrc/**"])))
    assert identity(run(tree_source(a))) != identity(run(tree_source(b)))
    assert identity(run(copied(a))) != identity(run(copied(b)))


def test_stand_in_module_source_has_no_digest(engine: FakeEngine) -> None:
    """currentModule().source() is the context directory `withDirectory` the generated files: an edit
    anywhere in it re-keys its subfolders; a file taken with `.file()` follows its own content only."""
    steps = lambda: dag.current_module().source().directory("src/bnb_build")  # noqa: E731
    one = lambda: dag.current_module().source().file("src/bnb_build/native.py")  # noqa: E731
    before_dir, before_file = identity(steps()), identity(one())
    engine.module = {**engine.module, "src/bitsandbytes_ci/module/main.py": "edited"}
    assert identity(steps()) != before_dir
    assert identity(one()) == before_file
    engine.module = {**engine.module, "src/bnb_build/native.py": "edited"}
    assert identity(one()) != before_file


@pytest.mark.asyncio
async def test_stand_in_glob_names_folders_with_a_trailing_slash(engine: FakeEngine) -> None:
    """core/directory.go Glob: a matching folder is listed too, as `path/`; the module lists the step
    programs with a glob and takes only files (`Directory.file` on a folder fails)."""
    found = await tree_source({"steps/a.py": "", "steps/cmake/b.cmake": ""}).glob("steps/**/*")
    assert found == ["steps/a.py", "steps/cmake/", "steps/cmake/b.cmake"]
    from bitsandbytes_ci.module.stages.common import step_files

    assert step_files(["src/bnb_build/__main__.py", "src/bnb_build/cmake/", "src/bnb_build/cmake/x.cmake"]) == ["__main__.py", "cmake/x.cmake"]


# ---- volatile variables -------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_stand_in_volatile_variables_are_per_session(engine: FakeEngine) -> None:
    """core/schema/container.go withVolatileVariable -> dagql/cache.go SetVolatileVars (one value per
    session and name, last write wins); core/container_exec.go reads the session's value."""
    first = dag.container().from_("alpine").with_volatile_variable("N", "1").with_exec(["true"])
    second = dag.container().from_("alpine").with_volatile_variable("N", "2").with_exec(["true"])
    # the value is no part of the exec's key (withVolatileVariable's content digest: the name only)
    assert identity(first) == identity(dag.container().from_("alpine").with_volatile_variable("N", "9").with_exec(["true"]))
    assert identity(first) != identity(dag.container().from_("alpine").with_volatile_variable("M", "1").with_exec(["true"]))
    await first.sync()
    await second.sync()
    [q] = [q for q in engine.leaves("sync") if Call("withVolatileVariable", {"name": "N", "value": "1"}) in q.calls]
    assert engine.seen_volatile(q) == {"N": "2"}, "the first container's exec reads the value written last"
    engine.new_session()
    assert engine.seen_volatile(q) == {}


@pytest.mark.asyncio
async def test_no_volatile_variable_differs_within_a_fan_out(engine: FakeEngine) -> None:
    """A mixed build (CPU, CUDA, ROCm, XPU at once): a volatile value is one per session, so every job
    must set the same one; what differs between families (a compile's memory) is an ordinary variable."""
    every = sorted(load_matrix().platforms)
    await BitsandbytesCi().build_all(repo_source(), platform=every, keep_going=True)
    builds = [q for q in engine.leaves("sync") if q.execs() and q.execs()[-1][:4] == NATIVE]
    assert len({q.execs()[-1][q.execs()[-1].index("--job-id") + 1].split("-")[0].rstrip("0123456789") for q in builds}) >= 3
    values: dict[str, set[str]] = {}
    for q in builds:
        for c in q.named("withVolatileVariable"):
            values.setdefault(c.args["name"], set()).add(c.args["value"])
    assert values and all(len(v) == 1 for v in values.values()), values
    memory = {c.args["value"] for q in builds for c in q.named("withEnvVariable") if c.args["name"] == "BNB_COMPILE_MEMORY_GB"}
    assert len(memory) > 1, "the families' compile memory differs, as an ordinary (keyed) variable"


# ---- expect=ANY ---------------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(("code", "raises"), [(0, False), (1, False), (127, False), (128, True), (137, True), (191, True), (192, False), (255, False)])
async def test_stand_in_expect_any_raises_on_signal_codes(engine: FakeEngine, code: int, raises: bool) -> None:
    """core/container.go ReturnTypes.ReturnCodes: ANY accepts 0-127 and 192-255 only."""
    engine.exec_code = lambda _argv: code
    ctr = dag.container().from_("alpine").with_exec(["false"], expect=dagger.ReturnType.ANY)
    if raises:
        with pytest.raises(dagger.ExecError):
            await ctr.exit_code()
    else:
        assert await ctr.exit_code() == code


# ---- export -------------------------------------------------------------------------------------------


def test_stand_in_export_merges_unless_wipe(tmp_path: Path) -> None:
    """core/schema/directory.go export: `wipe` (default false) empties the folder first."""
    export_directory({"failures.md": "old"}, tmp_path / "dist")
    export_directory({"summary.md": "new"}, tmp_path / "dist")
    assert sorted(p.name for p in (tmp_path / "dist").iterdir()) == ["failures.md", "summary.md"]
    export_directory({"summary.md": "new"}, tmp_path / "dist", wipe=True)
    assert sorted(p.name for p in (tmp_path / "dist").iterdir()) == ["summary.md"]


def test_every_documented_export_of_a_folder_wipes_it() -> None:
    """A stale failures.md (or old wheels) from an earlier run would stay beside a new result."""
    from bitsandbytes_ci.host.launch import dagger_call

    call = dagger_call([])
    assert "--wipe" in call[call.index("export") :], "./bnb build"
    texts = {p.name: p.read_text(encoding="utf-8") for p in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]}
    found = 0
    for name, text in texts.items():
        for command in re.findall(r"`dagger call ([^`]*export --path[^`]*)`", text.replace("\n", " ")):
            if command.split()[0] in ("test-wheels", "audit-wheels", "plan", "lock-images"):
                continue  # a File: its export replaces the one file
            found += 1
            assert "--wipe" in command.split(), f"{name}: `dagger call {command}` merges into an existing folder"
    assert found >= 3


# ---- function cache policies --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_stand_in_function_cache_policy_covers_the_call_only(engine: FakeEngine) -> None:
    """core/modfunc.go cacheImplicitInputs: `session` adds the session to the call's key; the execs
    inside keep their own keys, so a later session answers them from the cache."""
    source = repo_source()
    await engine.call(BitsandbytesCi().build_cpu, source, platform=["linux-x86_64"])
    queries = len(engine.queries)
    engine.new_session()
    await engine.call(BitsandbytesCi().build_cpu, source, platform=["linux-x86_64"])
    assert len(engine.queries) == queries, "the default policy: the same call is answered from the cache, in any session"
    await engine.call(BitsandbytesCi().build_all, source, backend=["cpu"], keep_going=True)
    ran, queries = len(engine.ran), len(engine.queries)
    await engine.call(BitsandbytesCi().build_all, source, backend=["cpu"], keep_going=True)
    assert len(engine.queries) == queries, "cache=session: the same call in the same session is answered"
    engine.new_session()
    await engine.call(BitsandbytesCi().build_all, source, backend=["cpu"], keep_going=True)
    assert len(engine.queries) > queries and len(engine.ran) == ran, "a new session calls it again; its execs are cached"


@pytest.mark.asyncio
@pytest.mark.parametrize("step", ["try-wheels", "audit"])
async def test_a_failed_try_or_audit_is_not_replayed_in_a_later_session(engine: FakeEngine, step: str) -> None:
    """A try or audit that failed by a flake returned (expect=ANY), so the engine cached its exit code:
    the next session must run it again rather than report the cached failure."""
    flaky = [True]
    engine.exec_code = lambda argv: 1 if flaky[0] and argv[:4] == ["python3", "-m", "bnb_build", step] else 0
    source = repo_source()
    first = await engine.call(BitsandbytesCi().build_all, source, backend=["cpu"], keep_going=True)
    row = "try" if step == "try-wheels" else "audit"
    assert status(files_of(first)["summary.md"], row) == "failed"
    flaky[0] = False
    engine.new_session()
    audits = [argv for argv, _ in engine.ran if argv[:4] == ["python3", "-m", "bnb_build", "audit"]]
    second = await engine.call(BitsandbytesCi().build_all, source, backend=["cpu"], keep_going=True)
    assert status(files_of(second)["summary.md"], row) == "built"
    assert "failures.md" not in files_of(second)
    if step == "try-wheels":  # the audit reads the wheels, not tries.md: its cached result stands
        assert [argv for argv, _ in engine.ran if argv[:4] == ["python3", "-m", "bnb_build", "audit"]] == audits


# ---- failure injection --------------------------------------------------------------------------------


Signature = tuple[str | None, str | None, tuple[str, ...]]
"""An exec as the plan knows it: its container's platform (None: the engine's own), image and command."""


def signature(calls: list[Call]) -> Signature:
    platform = calls[0].args.get("platform") if calls and calls[0].name == "container" else None
    image = next((c.args["address"] for c in calls if c.name == "from"), None)
    return platform, image, tuple(calls[-1].args["args"])


def exec_signatures(calls: list[Call]) -> set[Signature]:
    """Every exec a chain runs: its own and those of the objects among its arguments."""
    found: set[Signature] = set()
    for i, c in enumerate(calls):
        for value in c.args.values():
            for obj in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(obj, Type):
                    found |= exec_signatures(chain(obj))
        if c.name == "withExec":
            found.add(signature(calls[: i + 1]))
    return found


async def inject(engine: FakeEngine, run: Any) -> tuple[list[Signature], dict[str, set[Signature]]]:
    """Run `run` once with nothing failing: the distinct execs it runs, in order, and the execs each
    library and wheel job depends on (its own chain; a wheel also needs its libraries)."""
    seen: list[Signature] = []

    def record(argv: list[str], calls: list[Call]) -> int | None:
        if signature(calls) not in seen:
            seen.append(signature(calls))
        return None

    engine.exit_code_of = record
    await run(True)
    needs: dict[str, set[Signature]] = {}
    for q in engine.leaves("sync"):
        argv = q.execs()[-1] if q.execs() else []
        if argv[:4] == NATIVE:
            needs[argv[argv.index("--job-id") + 1]] = exec_signatures(q.calls)
        elif argv[:4] == ["python3", "-m", "bnb_build", "wheel"]:
            needs["wheel-" + argv[argv.index("--platform") + 1]] = exec_signatures(q.calls)
        elif argv[:4] in (["python3", "-m", "bnb_build", "try-wheels"], ["python3", "-m", "bnb_build", "audit"]):
            needs.setdefault("try" if argv[3] == "try-wheels" else "audit", set()).update(exec_signatures(q.calls))
    return seen, needs


async def check_every_failure(engine: FakeEngine, selection: Selection, **options: Any) -> int:
    jobs = [job for job in plan_jobs(load_matrix(), selection, TREE) if job.runner in ("container", "cross")]
    wheels = plan_wheels(load_matrix(), plan_jobs(load_matrix(), selection, TREE), TREE)

    async def run(keep_going: bool) -> Any:
        return await BitsandbytesCi().build_all(repo_source(), keep_going=keep_going, **options)

    execs, needs = await inject(engine, run)
    assert {job.id for job in jobs} | {"try", "audit"} <= set(needs), "every library job ran, and the try and audit steps"
    for failing in execs:
        engine.exec_cache.clear()
        engine.queries.clear()
        engine.new_session()
        engine.exit_code_of = lambda _argv, calls, failing=failing: 137 if signature(calls) == failing else None  # killed (OOM)
        command = " ".join(failing[2])
        result = await run(True)
        files = files_of(result)
        assert "failures.md" in files, f"{command}: no failures.md"
        assert command in files["failures.md"], f"failures.md does not name `{command}`:\n{files['failures.md']}"
        summary = files["summary.md"]
        failed_libs = {job.id for job in jobs if failing in needs[job.id]}
        for job in jobs:
            expected = "failed" if job.id in failed_libs else "built"
            assert status(summary, job.id) == expected, f"{command}: {job.id} should be {expected}"
        for wheel in wheels:
            if wheel.id not in needs:
                continue  # a wheel of a native runner's platform, not built here
            broken = failing in needs[wheel.id] or any(i in failed_libs for i in wheel.build_job_ids)
            expected = "failed" if broken else "built"
            assert status(summary, wheel.id) == expected, f"{command}: {wheel.id} should be {expected}"
        for report in ("try", "audit"):
            if failing in needs[report]:
                assert status(summary, report) == "failed", f"{command}: the {report} row should be failed"
        [libs] = [c.args["source"] for c in chain(result) if c.name == "withDirectory" and c.args["path"] == "libs"]
        assert len([c for c in chain(libs) if c.name == "withDirectory"]) == len(jobs) - len(failed_libs), "the other libraries are kept"
        engine.exec_cache.clear()
        engine.new_session()
        with pytest.raises(BuildFailed) as raised:
            await run(False)
        assert command in str(raised.value), f"without --keep-going the call fails with the step's message ({command})"
    return len(execs)


@pytest.mark.asyncio
async def test_every_exec_of_the_cpu_plan_can_fail_without_hiding_the_rest(engine: FakeEngine) -> None:
    """Each distinct exec of `build-all --backend cpu` (builds, setup, wheels, tries, audit, manifest)
    killed in turn (exit 137: raises even under expect=ANY)."""
    assert await check_every_failure(engine, Selection(backends=("cpu",)), backend=["cpu"]) >= 15


@pytest.mark.asyncio
async def test_every_exec_of_a_cuda_job_can_fail_without_hiding_the_rest(engine: FakeEngine) -> None:
    """A container job's own setup (dnf, pip, uv) and step, killed in turn."""
    selection = Selection(backends=("cuda",), versions=("12.8",), platforms=("linux-x86_64",))
    assert await check_every_failure(engine, selection, backend=["cuda"], version=["12.8"], platform=["linux-x86_64"]) >= 5


# ---- the images ---------------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("family", ["xpu", "cuda"])
async def test_the_container_installs_the_python_its_steps_run_with(engine: FakeEngine, family: str) -> None:
    """uv never downloads an interpreter (UV_PYTHON_DOWNLOADS=never): the image's setup provides the
    step programs' Python (the XPU image may lack python3; Rocky 8's own is too old)."""
    await getattr(BitsandbytesCi(), f"build_{family}")(repo_source(), platform=["linux-x86_64"])
    builds = [q for q in engine.leaves("sync") if q.execs() and q.execs()[-1][:4] == NATIVE]
    assert builds
    for q in builds:
        execs = q.execs()
        venv = next(i for i, argv in enumerate(execs) if argv[1:3] == ["venv", "--python"])
        python = execs[venv][3]
        assert any(argv[:2] == ["sh", "-c"] and re.search(rf"(dnf|apt-get) .*install .*\b{re.escape(python)}\b", argv[2]) for argv in execs[:venv])


# ---- the upload ---------------------------------------------------------------------------------------


def _gitignore_examples() -> list[str]:
    """One path for each .gitignore rule (under a subfolder too where the rule is not anchored)."""
    examples = []
    for line in (REPO / ".gitignore").read_text(encoding="utf-8").splitlines():
        rule = line.strip()
        if not rule or rule.startswith(("#", "!")):
            continue
        path = rule.strip("/").replace("*", "x") + ("/f" if rule.endswith("/") else "")
        examples.append(path)
        if not rule.startswith("/") and "/" not in rule.strip("/"):
            examples.append(f"pipeline/src/{path}")
    return examples


def test_the_upload_leaves_out_what_git_ignores() -> None:
    """A `DefaultPath` upload applies the function's ignore patterns only (core/modfunc.go: no
    .gitignore): every rule of .gitignore needs its counterpart in SOURCE_IGNORE."""
    from dagger_fake_engine import select_files

    examples = _gitignore_examples()
    assert len(examples) > 15 and "pipeline/src/x.egg-info/f" in examples and ".pyright/f" in examples
    kept = select_files(dict.fromkeys(examples, ""), None, SOURCE_IGNORE)
    assert not kept, f"uploaded although git ignores them: {sorted(kept)}"
    uploaded = set(uploaded_paths())
    assert "CMakeLists.txt" in uploaded and "pipeline/src/bnb_build/native.py" in uploaded
    assert not {p for p in uploaded if "/__pycache__/" in p or p.startswith((".git/", ".venv/", ".ci/node/"))}


def test_stand_in_contextual_marks_follow_the_files() -> None:
    """The test helpers' upload is the stand-in's contextual directory (content-hashed)."""
    files = {"a": "1"}
    assert identity(contextual(dag.directory().with_new_file("a", "1"), files)) == identity(tree_source(files))
