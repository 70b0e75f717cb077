"""What a host run produced, per job, and how it is reported. Pure: data in, text out.

Every job of a run ends in one `JobResult`:
- built: the step succeeded; `artifact` is the library, wheel or report it made, with its sha256;
- skipped: it was not run, and `reason` says why (a missing toolchain, another platform, a failed
  library of the same wheel, ...);
- failed: it ran and failed (`exit_code`, the failing lines of its log, the log's path), or it could not
  be prepared (`reason`).

`render_summary` is what bnb-ci prints at the end; `render_failures` is failures.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Status = Literal["built", "skipped", "failed"]
Kind = Literal["library", "wheel", "try", "audit"]
STATUSES: tuple[Status, ...] = ("built", "skipped", "failed")
LOG_TAIL_LINES = 20

_FAILING = (
    re.compile(r"^CMake Error\b"),  # CMake's own errors: "CMake Error at CMakeLists.txt:99 (message):" and the message below
    re.compile(r"^(?:FAILED: |ninja: error|make(?:\[\d+\])?: \*\*\*)"),
    re.compile(r"(?:^|:\d+(?::\d+)?: )(?:fatal )?error(?: [A-Z]+\d+)?:", re.IGNORECASE),  # compilers, linkers, nvcc
    re.compile(r"^(?:[A-Za-z_][\w.]*(?:Error|Exception)|error): "),  # a Python exception; a step's "error: ..."
)
_CONTEXT_LINES = 3


def failure_excerpt(lines: Sequence[str], limit: int = LOG_TAIL_LINES) -> tuple[str, ...]:
    """What a failed step's log says went wrong: its failing lines (CMake errors with the message
    below them, compiler and linker errors, ninja's FAILED lines, an exception, the step's own
    `error:` line), in log order and at most `limit`; the last `limit` lines where none is found."""
    picked: list[int] = []
    for i, line in enumerate(lines):
        text = line.strip().removeprefix("| ").strip()
        if any(p.search(text) for p in _FAILING):
            span = range(i, min(len(lines), i + 1 + _CONTEXT_LINES)) if text.startswith("CMake Error") else range(i, i + 1)
            picked += [j for j in span if j not in picked and (j == i or lines[j].strip())]
    if not picked:
        return tuple(lines[-limit:])
    if len(picked) > limit:  # the first failures (the cause) and the last one (the step's verdict)
        picked = [*picked[: limit - 1], picked[-1]]
    return tuple(lines[j] for j in sorted(picked))


@dataclass(frozen=True)
class JobResult:
    job_id: str
    kind: Kind
    status: Status
    platform: str | None = None
    reason: str = ""
    duration_s: float | None = None
    artifact: Path | None = None
    sha256: str | None = None
    build_info: Mapping[str, Any] | None = field(default=None, repr=False)
    exit_code: int | None = None
    log_tail: tuple[str, ...] = field(default=(), repr=False)
    log_path: Path | None = None
    notes: tuple[str, ...] = ()
    inputs_digest: str | None = None  # the input digest the host's artifact cache keys this job by
    cached: bool = False  # built earlier: the output was taken from the artifact cache, the step did not run

    @property
    def failed(self) -> bool:
        return self.status == "failed"


def counts(results: Sequence[JobResult]) -> dict[str, int]:
    return {status: sum(1 for r in results if r.status == status) for status in STATUSES}


def any_failed(results: Sequence[JobResult]) -> bool:
    return any(r.failed for r in results)


def _what(result: JobResult) -> str:
    parts = []
    if result.cached:
        parts.append("cached")
    elif result.duration_s is not None:
        parts.append(f"{result.duration_s:.1f} s")
    if result.artifact is not None:
        parts.append(result.artifact.name)
    if result.sha256:
        parts.append(f"sha256:{result.sha256[:16]}")
    return "  ".join(parts)


def render_summary(results: Sequence[JobResult]) -> str:
    """Built / skipped (with reasons) / failed (exit code, log, last lines), then the totals."""
    width = max((len(r.job_id) for r in results), default=0)
    lines: list[str] = []
    for status in STATUSES:
        group = [r for r in results if r.status == status]
        if not group:
            continue
        lines.append(f"{status}:")
        for r in group:
            if status == "built":
                lines.append(f"  {r.job_id.ljust(width)}  {_what(r)}")
            elif status == "skipped":
                lines.append(f"  {r.job_id.ljust(width)}  {r.reason}")
            else:
                code = f"exit code {r.exit_code}" if r.exit_code is not None else "not run"
                where = f"; log: {r.log_path}" if r.log_path else ""
                lines.append(f"  {r.job_id.ljust(width)}  {code}{': ' + r.reason if r.reason else ''}{where}")
                lines += [f"      | {line}" for line in r.log_tail]
            lines += [f"  {' ' * width}  note: {note}" for note in r.notes]
    total = counts(results)
    cached = sum(1 for r in results if r.cached and r.status == "built")
    built = f"{total['built']} built ({cached} cached)" if cached else f"{total['built']} built"
    lines.append(f"summary: {built}, {total['skipped']} skipped, {total['failed']} failed")
    return "\n".join(lines)


def render_failures(results: Sequence[JobResult]) -> str:
    """failures.md: every failed job with its exit code, log path and the last lines of its log."""
    failed = [r for r in results if r.failed]
    lines = ["# Failed jobs", "", f"{len(failed)} job(s) failed.", ""]
    for r in failed:
        lines.append(f"## {r.job_id}")
        lines.append("")
        lines.append(f"- kind: {r.kind}")
        if r.platform:
            lines.append(f"- platform: {r.platform}")
        lines.append(f"- exit code: {r.exit_code if r.exit_code is not None else 'not run'}")
        if r.reason:
            lines.append(f"- reason: {r.reason}")
        if r.log_path:
            lines.append(f"- log: {r.log_path}")
        if r.log_tail:
            lines += ["", "From the log (its failing lines, else its end):", "", "```text", *r.log_tail, "```"]
        lines.append("")
    return "\n".join(lines)
