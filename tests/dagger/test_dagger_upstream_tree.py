"""The Dagger functions over a tree of upstream's shape (tests/fixtures/upstream_tree: flat csrc/, no
VERSION file, setuptools backend, OpenMP, a CUDA library that links cuBLAS), through FakeEngine (a
recording stand-in for the engine, which cannot run here): the tree is taken as it is, the pipeline
brings its own step programs and CMake files, and the plan follows what the tree's files say."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dagger_fake_engine import Call, FakeEngine, chain, tree_source

from bitsandbytes_ci.module.main import BitsandbytesCi
from bitsandbytes_ci.core.tree import TreeError

UPSTREAM = Path(__file__).resolve().parents[1] / "fixtures" / "upstream_tree"
STEP = ["python3", "-m", "bnb_build"]


def upstream_files() -> dict[str, str]:
    return {p.relative_to(UPSTREAM).as_posix(): p.read_text() for p in sorted(UPSTREAM.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


def step_queries(engine: FakeEngine, step: str) -> list:
    return [q for q in engine.queries if q.execs() and q.execs()[-1][:4] == [*STEP, step] and q.leaf in ("sync", "stdout")]


@pytest.mark.asyncio
async def test_build_all_takes_the_tree_as_it_is(engine: FakeEngine) -> None:
    source = tree_source(upstream_files())
    result = await BitsandbytesCi().build_all(source, backend=["cpu", "cuda"], version=[], platform=["linux-x86_64"], archs="75", keep_going=True)
    natives = {q.execs()[-1][q.execs()[-1].index("--job-id") + 1]: q for q in step_queries(engine, "native")}
    assert {"cpu-linux-x86_64", "cuda130-linux-x86_64"} <= set(natives)
    cpu = natives["cpu-linux-x86_64"]
    # OpenMP kept: gcc in the manylinux_2_28 image, the image's own CPython for the tools
    assert cpu.calls[1] == Call("from", {"address": "quay.io/pypa/manylinux_2_28_x86_64:latest"})
    assert ["/opt/bnb/bin/uv", "venv", "--python", "/opt/python/cp312-cp312/bin/python3", "/opt/bnb/venv"] in cpu.execs()
    assert "--toolchain" not in cpu.execs()[-1]
    # every source the tree has under the default patterns; the step programs are the module's own
    [src] = [c for c in cpu.named("withDirectory") if c.args["path"] == "/work/src"]
    assert chain(src.args["source"])[-1] == Call("filter", {"include": ["CMakeLists.txt", "VERSION", "cmake/**", "include/**", "csrc/**"]})
    [steps] = [c for c in cpu.named("withDirectory") if c.args["path"] == "/opt/bnb/steps/bnb_build"]
    module_files = [chain(c.args["source"]) for c in chain(steps.args["source"]) if c.name == "withFile"]
    assert module_files and all(src[:2] == [Call("currentModule", {}), Call("source", {})] for src in module_files)
    # the wheel: libgomp vendored, the tree's packaging files
    [wheel] = step_queries(engine, "wheel")
    assert wheel.execs()[-1][-2:] == ["--vendor", "libgomp.so.1"]
    [wsrc] = [c for c in wheel.named("withDirectory") if c.args["path"] == "/work/src"]
    assert chain(wsrc.args["source"])[-1] == Call("filter", {"include": ["pyproject.toml", "bitsandbytes/**", "setup.py", "setup.cfg", "MANIFEST.in", "VERSION", "README.md", "LICENSE"]})
    # the audit: no symbol parity (the tree declares none), OpenMP expected of the CPU library
    [audit] = [q for q in engine.leaves("sync") if q.execs() and q.execs()[-1][:4] == [*STEP, "audit"]]
    [expect] = [c.args["contents"] for c in audit.named("withNewFile") if c.args["path"] == "/work/expect.json"]
    expected = json.loads(expect)
    assert expected["symbol_parity"] is False and expected["wheels"]["linux-x86_64"]["libraries"]["libbitsandbytes_cpu.so"]["openmp"] is True
    # the try: no try-script, so an import of the package
    [try_step] = [q for q in engine.leaves("sync") if q.execs() and q.execs()[-1][:4] == [*STEP, "try-wheels"]]
    assert "--script" not in try_step.execs()[-1]
    # the version from the package (no VERSION file), in manifest.json's jobs.json
    [manifest] = [c.args["source"] for c in chain(result) if c.name == "withFile" and c.args["path"] == "manifest.json"]
    [jobs_json] = [c.args["contents"] for c in engine.made(manifest) if c.name == "withNewFile" and c.args["path"] == "/work/jobs.json"]
    assert json.loads(jobs_json)["version"] == "0.50.2.dev0"


@pytest.mark.asyncio
async def test_plan_reads_the_tree(engine: FakeEngine) -> None:
    jobs = {j["id"]: j for j in json.loads(await BitsandbytesCi().plan(tree_source(upstream_files()), backend=["cpu"], format_="json"))}
    assert jobs["cpu-linux-aarch64"]["toolchain"] == "gcc" and jobs["cpu-macos-arm64"]["toolchain"] == "zig"
    assert not [q for q in engine.queries if q.execs()], "planning runs nothing"


@pytest.mark.asyncio
async def test_a_tree_without_a_package_or_cmake_is_refused(engine: FakeEngine) -> None:
    files = upstream_files()
    with pytest.raises(TreeError, match="has no CMakeLists.txt"):
        await BitsandbytesCi().build_cpu(tree_source({k: v for k, v in files.items() if k != "CMakeLists.txt"}))
    with pytest.raises(TreeError, match="no Python package 'bitsandbytes'"):
        await BitsandbytesCi().build_cpu(tree_source({k: v for k, v in files.items() if not k.startswith("bitsandbytes/")}))
    with pytest.raises(TreeError, match=r"'csrc/gpu/\*\*' select\(s\) no file"):
        extra = files["pyproject.toml"] + '\n[tool.bitsandbytes-ci.sources]\ncuda = ["csrc/gpu/**"]\n'
        await BitsandbytesCi().build_cuda(tree_source({**files, "pyproject.toml": extra}))
    assert not [q for q in engine.queries if q.execs()]


@pytest.mark.asyncio
async def test_a_version_no_file_states_is_asked_of_the_backend(engine: FakeEngine) -> None:
    files = {k: v for k, v in upstream_files().items()}
    files["bitsandbytes/__init__.py"] = "from ._version import __version__\n"
    files["setup.py"] = files["setup.py"].replace('"version": "0.50.2.dev0"', '"version": compute_version()')
    await BitsandbytesCi().build_all(tree_source(files), backend=["cpu"], platform=["linux-x86_64"], keep_going=True)
    [version] = [q for q in engine.leaves("stdout") if q.execs() and q.execs()[-1][:4] == [*STEP, "version"]]
    assert version.execs()[-1] == [*STEP, "version", "--source", "src", "--package", "bitsandbytes"]
    assert ["python3", "-m", "pip", "install", "-c", "/opt/bnb/step-requirements.txt", "build"] in version.execs()
