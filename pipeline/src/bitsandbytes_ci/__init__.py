"""Orchestration side of the bitsandbytes build-and-release pipeline.

matrix (data, validated) -> plan (jobs) -> executor (Dagger or host) -> artefacts -> wheels -> audit -> release.
The step programs that jobs run live in the sibling package ``bnb_build`` (standard library only).
"""
