"""Bad arguments to the Dagger functions are refused before the engine is asked anything.

Each function plans its jobs with plan.py first (main._container_jobs), and the plan checks the
selection against the matrix; so a bad version, arch list or platform raises with the same message as
`bnb-ci`, and the FakeEngine has recorded no query at all (no container was created).
"""

from __future__ import annotations

import dagger
import pytest
from dagger import dag
from dagger_sources import repo_source
from dagger_fake_engine import FakeEngine

from bitsandbytes_ci.core.errors import SelectionError
from bitsandbytes_ci.module.main import BitsandbytesCi


def source() -> dagger.Directory:
    return repo_source()


@pytest.mark.asyncio
async def test_unknown_cuda_version_runs_nothing(engine: FakeEngine) -> None:
    with pytest.raises(SelectionError, match=r"version '12\.9' is not in the support matrix for cuda; allowed: 11\.8\.0, .*13\.\d+\.\d+$"):
        await BitsandbytesCi().build_cuda(source(), cuda_version="12.9")
    with pytest.raises(SelectionError, match=r"version '6\.9' is not in the support matrix for rocm; allowed: 6\.4\.4"):
        await BitsandbytesCi().build_rocm(source(), rocm_version="6.9")
    with pytest.raises(SelectionError, match=r"version '2024' is not in the support matrix for xpu; allowed: 2025, 2026"):
        await BitsandbytesCi().build_xpu(source(), oneapi_version="2024")
    assert not [q for q in engine.queries if q.execs()], "nothing ran (reading the tree is all)"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("archs", "message"),
    [("70", "cuda 13.0.2 cannot build 70; it builds 75;80"), ("75;;80", "has an empty element"), ("sm_75", "'sm_75' not understood")],
)
async def test_bad_arch_list_runs_nothing(engine: FakeEngine, archs: str, message: str) -> None:
    with pytest.raises(SelectionError, match="--archs") as caught:
        await BitsandbytesCi().build_cuda(source(), cuda_version="13.0", archs=archs)
    assert message in str(caught.value)
    with pytest.raises(SelectionError):
        await BitsandbytesCi().build_all(source(), backend=["cuda"], version=["13.0"], archs=archs)
    assert not [q for q in engine.queries if q.execs()], "nothing ran (reading the tree is all)"


@pytest.mark.asyncio
async def test_unknown_platform_runs_nothing(engine: FakeEngine) -> None:
    with pytest.raises(SelectionError, match=r"unknown platform 'linux-arm64' \(did you mean 'linux-aarch64'\?\); allowed: linux-x86_64, linux-aarch64"):
        await BitsandbytesCi().build_all(source(), platform=["linux-arm64"])
    with pytest.raises(SelectionError, match="unknown platform 'linux-arm64'"):
        await BitsandbytesCi().build_cpu(source(), platform=["linux-arm64"])
    assert not [q for q in engine.queries if q.execs()], "nothing ran (reading the tree is all)"
