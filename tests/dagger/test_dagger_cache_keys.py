"""What the engine would key each step by (FakeEngine, a recording stand-in for the engine, with the
engine's rule for Directory digests: `identity` in dagger_fake_engine.py).

Each step receives only its part of the source, as a filtered Directory, so an edit to a file that a
step does not read leaves that step's key unchanged: the engine answers it from its cache. The source
here is this repository's own file list (contents included), uploaded as `dagger call` would.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from dagger_sources import repo_files as conftest_repo_files
from dagger_fake_engine import FakeEngine, chain, identity, tree_source

from bitsandbytes_ci.module.main import BitsandbytesCi
from bitsandbytes_ci.module.stages.common import SOURCE_IGNORE

REPO = Path(__file__).resolve().parents[2]
NATIVE = ["python3", "-m", "bnb_build", "native"]


def repo_files() -> dict[str, str]:
    files = conftest_repo_files(everything=True)
    assert "CMakeLists.txt" in files and "pipeline/src/bnb_build/native.py" in files
    return files


def step_keys(engine: FakeEngine) -> dict[tuple[str, ...], str]:
    """(step command, leaf) -> identity of every query that runs a step."""
    keys: dict[tuple[str, ...], str] = {}
    for q in engine.queries:
        execs = q.execs()
        if execs and execs[-1][:3] == ["python3", "-m", "bnb_build"]:
            keys[(*execs[-1], q.leaf)] = identity(q)
    return keys


def native_keys(engine: FakeEngine) -> dict[str, str]:
    """job id -> identity of its native build (the synced out/ Directory)."""
    found = {}
    for q in engine.leaves("sync"):
        argv = q.execs()[-1] if q.execs() else []
        if argv[:4] == NATIVE:
            found[argv[argv.index("--job-id") + 1]] = identity(q)
    return found


async def build_all(engine: FakeEngine, files: dict[str, str]) -> dict[tuple[str, ...], str]:
    """Run build-all over `files`; the step keys, plus the manifest step's (part of the lazy result)."""
    engine.queries.clear()
    result = await BitsandbytesCi().build_all(tree_source(files), keep_going=True)
    [manifest] = [c.args["source"] for c in chain(result) if c.name == "withFile" and c.args["path"] == "manifest.json"]
    return {**step_keys(engine), ("python3", "-m", "bnb_build", "manifest", "file"): identity(manifest)}


@pytest.mark.asyncio
async def test_an_unrelated_edit_leaves_every_build_key_unchanged(engine: FakeEngine) -> None:
    files = repo_files()
    await build_all(engine, files)
    before = native_keys(engine)
    assert len(before) > 15
    edited = {**files, "README.md": "edited", "tests/conftest.py": "# edited\n",
              "pipeline/src/bitsandbytes_ci/module/main.py": "edited",
              "docs/new-page.md": "a new page\n"}  # fmt: skip
    await build_all(engine, edited)
    assert native_keys(engine) == before


@pytest.mark.asyncio
async def test_an_edit_of_the_module_outside_the_step_programs_re_runs_nothing(engine: FakeEngine) -> None:
    """The module's own folder (pipeline/) reaches the steps through `currentModule().source()`, which
    has no content digest: only files taken from it with `Directory.file` are keyed by their content."""
    files = repo_files()
    before = await build_all(engine, files)
    engine.module = {**engine.module, "src/bitsandbytes_ci/module/main.py": "edited", "src/bitsandbytes_ci/core/new.py": "x",
                     "pyproject.toml": "edited"}  # fmt: skip
    after = await build_all(engine, files)
    assert after == before
    # the test can fail: a step program's edit re-keys every step
    engine.module = {**engine.module, "src/bnb_build/native.py": "edited"}
    changed = await build_all(engine, files)
    assert all(changed[key] != before[key] for key in before)


@pytest.mark.asyncio
async def test_wheel_try_audit_and_manifest_keys_ignore_files_they_do_not_read(engine: FakeEngine) -> None:
    files = repo_files()
    before = await build_all(engine, files)
    kinds = {key[3] for key in before}
    assert {"native", "wheel", "try-wheels", "audit", "manifest"} <= kinds
    after = await build_all(engine, {**files, "tests/conftest.py": "# edited\n", "docs/new-page.md": "x\n", "benchmarks/_common.py": "# edited\n"})
    assert after == before


@pytest.mark.asyncio
async def test_a_cuda_source_edit_changes_the_cuda_and_rocm_keys_only(engine: FakeEngine) -> None:
    """The same model tells edits apart: the test above could not pass by ignoring the source."""
    files = repo_files()
    await build_all(engine, files)
    before = native_keys(engine)
    cuda_source = next(rel for rel in files if rel.startswith("csrc/cuda/") and rel.endswith(".cu"))
    await build_all(engine, {**files, cuda_source: "edited"})
    after = native_keys(engine)
    changed = {job for job in before if before[job] != after[job]}
    assert changed == {job for job in before if job.startswith(("cuda", "rocm"))}


@pytest.mark.asyncio
async def test_the_readme_reaches_the_wheels_but_no_library(engine: FakeEngine) -> None:
    files = repo_files()
    before = await build_all(engine, files)
    after = await build_all(engine, {**files, "README.md": "edited"})
    changed = {key[3] for key in before if before[key] != after.get(key)}
    assert "native" not in changed and "wheel" in changed


def test_with_directory_include_would_carry_the_whole_tree() -> None:
    """The rule the tests rely on, shown on its own: copying with `include=` keeps the digest of the
    whole Directory, a filtered Directory does not."""
    from dagger import dag

    a = tree_source({"README.md": "a", "csrc/x.cpp": "1"})
    b = tree_source({"README.md": "b", "csrc/x.cpp": "1"})
    copy = lambda src: dag.container().from_("alpine").with_directory("/w", src, include=["csrc/**"])  # noqa: E731
    filtered = lambda src: dag.container().from_("alpine").with_directory("/w", src.filter(include=["csrc/**"]))  # noqa: E731
    assert identity(copy(a)) != identity(copy(b))
    assert identity(filtered(a)) == identity(filtered(b))
    assert set(SOURCE_IGNORE) >= {".git", "**/.venv", "venv", "**/.tox", "libs", "dist-windows"}
