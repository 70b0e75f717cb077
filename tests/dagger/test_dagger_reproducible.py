"""verify-reproducible and SOURCE_DATE_EPOCH in the Dagger module, as dry runs against FakeEngine.

The engine cannot run here, so these tests check what the function asks for: two complete builds of
the selection, the second with a cache-buster variable and ccache off set just before every step
(and nowhere else), the same SOURCE_DATE_EPOCH for both, every artifact's digest compared, and a
report that names each artifact as identical or different.
"""

from __future__ import annotations

import pytest
from dagger import dag
from dagger.client.base import Type
from dagger_sources import REPO, repo_source
from dagger_fake_engine import Call, FakeEngine, chain, fake_digest

from bitsandbytes_ci.module.main import BitsandbytesCi
from bitsandbytes_ci.core.matrix import load_matrix
from bitsandbytes_ci.core.plan import Job, Selection, manifest_argv, plan_jobs, plan_wheels
from bitsandbytes_ci.module.stages.fanout import BuildFailed, reproducibility_report
from bitsandbytes_ci.core.tree import read_tree
from bnb_build.inputs import DEFAULT_SOURCE_DATE_EPOCH

STEP = ["python3", "-m", "bnb_build"]
SELECTION = Selection(backends=("cuda",), versions=("13.0",), platforms=("linux-aarch64",))
OPTIONS = {"platform": ["linux-aarch64"], "backend": ["cuda"], "version": ["13.0"]}
WHEEL = "wheels/bitsandbytes-0.1.0-py3-none-manylinux_2_28_aarch64.whl"
GLOBS = {
    "libs/*/*/*": ["libs/linux/aarch64/libbitsandbytes_cuda130.so", "libs/linux/aarch64/libbitsandbytes_cuda130.so.build-info.json"],
    "wheels/*.whl": [WHEEL],
    "audit.md": ["audit.md"],
    "manifest.json": ["manifest.json"],
}


def source():
    return repo_source()


def the_job() -> Job:
    [job] = [j for j in plan_jobs(load_matrix(), SELECTION, read_tree(REPO)) if j.runner == "container"]
    return job


def step_envs(calls: list[Call], step: str) -> list[dict[str, str]]:
    """The variables set before each exec of `python3 -m bnb_build <step>` in a chain, looking into the
    objects its arguments are built from too (a File or Directory argument carries its own chain)."""
    found: list[dict[str, str]] = []
    env: dict[str, str] = {}
    for call in calls:
        for value in call.args.values():
            if isinstance(value, Type):
                found += step_envs(chain(value), step)
        if call.name == "withEnvVariable":
            env[call.args["name"]] = call.args["value"]
        if call.name == "withExec" and list(call.args["args"])[:4] == [*STEP, step]:
            found.append(dict(env))
    return found


def runs_of(engine: FakeEngine, step: str) -> list[dict[str, str]]:
    """The environment of every distinct run of a step, in query order."""
    seen: dict[str, dict[str, str]] = {}
    for q in engine.queries:
        for env in step_envs(q.calls, step):
            seen.setdefault(repr(sorted(env.items())), env)
    return list(seen.values())


@pytest.mark.asyncio
async def test_verify_reproducible_builds_twice_the_second_time_uncached(engine: FakeEngine) -> None:
    engine.globs = GLOBS
    engine.digests = lambda q: fake_digest(q.calls[-2].args["path"])  # equal content in both builds
    report = await BitsandbytesCi().verify_reproducible(source(), **OPTIONS)
    for step in ("native", "wheel", "audit", "manifest"):
        runs = runs_of(engine, step)
        assert len(runs) == 2, f"{step}: {runs}"
        first, second = runs
        assert "BNB_CACHE_BUSTER" not in first and "BNB_NO_CCACHE" not in first
        assert len(second["BNB_CACHE_BUSTER"]) == 32 and second["BNB_NO_CCACHE"] == "1"
        assert {k: v for k, v in second.items() if k not in ("BNB_CACHE_BUSTER", "BNB_NO_CCACHE")} == first, "nothing else differs"
    wheel_runs = runs_of(engine, "wheel")
    assert all(env["SOURCE_DATE_EPOCH"] == DEFAULT_SOURCE_DATE_EPOCH for env in wheel_runs)
    # every artifact of both builds is compared by content digest (metadata excluded)
    digests = [q for q in engine.leaves("digest") if q.calls[-1].args.get("excludeMetadata")]
    compared = sorted(q.calls[-2].args["path"] for q in digests)
    assert compared == sorted(2 * [p for paths in GLOBS.values() for p in paths])
    assert "Result: **REPRODUCIBLE**: 5 identical, 0 different, 0 in one build only." in report
    assert f"| `{WHEEL}` |" in report


@pytest.mark.asyncio
async def test_a_different_artifact_fails_with_the_report_unless_keep_going(engine: FakeEngine) -> None:
    engine.globs = GLOBS
    # the fake digest is the query text: the cache buster makes every artifact of the second build differ
    with pytest.raises(BuildFailed, match=r"NOT REPRODUCIBLE"):
        await BitsandbytesCi().verify_reproducible(source(), **OPTIONS)
    engine.queries.clear()
    engine.digests = lambda q: "sha256:" + ("1" * 64 if "BNB_CACHE_BUSTER" in q.text() and "wheel" in q.calls[-2].args["path"] else "0" * 64)
    report = await BitsandbytesCi().verify_reproducible(source(), **OPTIONS, keep_going=True)
    assert f"| `{WHEEL}` | sha256:{'0' * 64} | sha256:{'1' * 64} | different |" in report
    assert "4 identical, 1 different" in report


def test_report_lists_missing_and_refuses_an_empty_comparison() -> None:
    text, same = reproducibility_report({"a": "sha256:1", "b": "sha256:2"}, {"a": "sha256:1"})
    assert not same and "| `b` | sha256:2 | - | missing |" in text and "1 identical, 0 different, 1 in one build only" in text
    assert reproducibility_report({}, {})[1] is False


@pytest.mark.asyncio
async def test_build_all_passes_the_source_date_epoch_to_the_wheel_step_only(engine: FakeEngine) -> None:
    result = await BitsandbytesCi().build_all(source(), **OPTIONS, source_date_epoch="1700000000")
    [wheel_env] = runs_of(engine, "wheel")
    assert wheel_env["SOURCE_DATE_EPOCH"] == "1700000000"
    assert all("SOURCE_DATE_EPOCH" not in env for env in runs_of(engine, "native")), "a library does not depend on it"
    # the manifest is the step's, fed with jobs.json (the same step the host executor runs)
    [manifest] = [c.args["source"] for c in chain(result) if c.name == "withFile" and c.args["path"] == "manifest.json"]
    assert [c.args["args"] for c in engine.made(manifest) if c.name == "withExec"][-1] == manifest_argv()
    with pytest.raises(ValueError, match="not a whole number"):
        await BitsandbytesCi().build_all(source(), **OPTIONS, source_date_epoch="yesterday")


def test_wheel_job_digest_covers_the_source_date_epoch() -> None:
    matrix = load_matrix()
    [wheel] = plan_wheels(matrix, [the_job()], read_tree(REPO))
    a = wheel.inputs(libraries={"x": "sha256:1"}, source_date_epoch="315532800")
    b = wheel.inputs(libraries={"x": "sha256:1"}, source_date_epoch="1700000000")
    assert a != b and a["source_date_epoch"] == "315532800"
