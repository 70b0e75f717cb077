"""Stage `lock-images`: resolve the digest of every image the plan uses, through the engine.

Each `name:tag` is pulled for every platform that uses it; `Container.image_ref()` (valid right after
`from`) names the digest the engine resolved the tag to. The lock holds one digest per tag, meant to
be the multi-arch index digest: when two platforms resolve one tag to different digests the refresh
fails instead of writing a digest that pins only one platform.
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import dagger
from dagger import dag

from ...core.image_lock import DIGEST, render_lock
from ...core.plan import Job, WheelJob
from .common import base


def image_platforms(jobs: Sequence[Job | WheelJob]) -> dict[str, list[str]]:
    """`name:tag` (digest dropped) -> the Dagger platforms whose jobs use it, from the plan."""
    found: dict[str, list[str]] = {}
    for job in jobs:
        if job.image is None or job.dagger_platform is None:
            continue
        platforms = found.setdefault(job.image.split("@", 1)[0], [])
        if job.dagger_platform not in platforms:
            platforms.append(job.dagger_platform)
    return dict(sorted(found.items()))


def digest_of(image_ref: str) -> str:
    digest = image_ref.rpartition("@")[2]
    if not DIGEST.match(digest):
        msg = f"the engine resolved the image to {image_ref!r}, which carries no sha256 digest"
        raise ValueError(msg)
    return digest


async def resolve(uses: dict[str, list[str]]) -> dict[str, str | None]:
    """Every image's digest, resolved concurrently (one pull per image and platform)."""
    seen: dict[str, dict[str, str]] = {ref: {} for ref in uses}

    async def one(ref: str, platform: str) -> None:
        seen[ref][platform] = digest_of(await base(ref, platform).image_ref())

    async with anyio.create_task_group() as tg:
        for ref, platforms in uses.items():
            for platform in platforms:
                tg.start_soon(one, ref, platform)
    digests: dict[str, str | None] = {}
    for ref, per_platform in seen.items():
        if len(set(per_platform.values())) != 1:
            msg = f"{ref} resolved to different digests per platform ({per_platform}); the lock needs the index digest"
            raise ValueError(msg)
        digests[ref] = next(iter(per_platform.values()))
    return digests


async def lock_file(jobs: Sequence[Job | WheelJob]) -> str:
    return render_lock(await resolve(image_platforms(jobs)))


def as_file(text: str) -> dagger.File:
    return dag.file("images.lock.toml", text)
