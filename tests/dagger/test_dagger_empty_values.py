"""The Dagger functions refuse what bnb-ci refuses, before the engine runs anything: an empty version
(`--cuda-version "$UNSET"` must not build every version) and a SOURCE_DATE_EPOCH a zip cannot hold."""

from __future__ import annotations

import pytest
from dagger_fake_engine import FakeEngine
from dagger_sources import repo_source

from bitsandbytes_ci.core.errors import SelectionError
from bitsandbytes_ci.module.main import BitsandbytesCi


@pytest.mark.asyncio
async def test_an_empty_version_is_refused_not_widened(engine: FakeEngine) -> None:
    module = BitsandbytesCi()
    calls = [
        module.build_cuda(repo_source(), cuda_version=""),
        module.build_rocm(repo_source(), rocm_version=""),
        module.build_xpu(repo_source(), oneapi_version=" "),
        module.build_all(repo_source(), version=[""]),
    ]
    for call in calls:
        with pytest.raises(SelectionError, match=r"version '\s*' is empty: name a version"):
            await call
    assert not [q for q in engine.queries if q.execs()], "nothing ran (reading the tree is all)"


@pytest.mark.asyncio
async def test_a_source_date_epoch_after_2107_is_refused(engine: FakeEngine) -> None:
    with pytest.raises(ValueError, match=r"--source-date-epoch '4354819200' is after 2107-12-31T23:59:59Z"):
        await BitsandbytesCi().build_all(repo_source(), source_date_epoch="4354819200")
    assert not [q for q in engine.queries if q.execs()], "nothing ran (reading the tree is all)"
