"""summary.md: a build-all run in Markdown, for people (manifest.json is the one for programs).

It holds the verdict, then one table row per job that ran (status, time, whether the artifact came
from the cache, its size), the audit's verdict per wheel (read from audit.md), every failed job with
the last lines of its log and the path of the whole log, and the skipped jobs with their reasons in
a collapsed block. `bnb-ci build-all` writes it to DIR/summary.md and, when GITHUB_STEP_SUMMARY is set
(GitHub Actions), appends it to that file so it shows on the run's page.

`render_summary_md` is pure; `sizes` and the audit report's text come from the caller.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from .results import JobResult, counts

STEP_SUMMARY_ENV = "GITHUB_STEP_SUMMARY"


def format_duration(seconds: float) -> str:
    """12.3 -> "12s", 72 -> "1m 12s", 3725 -> "1h 02m 05s"."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def format_size(size: int | None) -> str:
    if size is None:
        return ""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def audit_verdicts(report: str) -> list[tuple[str, str, str, str]]:
    """(wheel, platform, tag, verdict) rows of the first table of an audit.md (bnb_build.audit)."""
    rows: list[tuple[str, str, str, str]] = []
    lines = report.splitlines()
    for i, line in enumerate(lines):
        if line.replace(" ", "") == "|wheel|platform|tag|verdict|":
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                cells = [c.strip() for c in row.strip().strip("|").split(" | ")]
                if len(cells) == 4:
                    rows.append((cells[0], cells[1], cells[2], cells[3]))
            break
    return rows


def render_summary_md(
    results: Sequence[JobResult],
    *,
    title: str = "bnb-ci build-all",
    wall_s: float | None = None,
    sizes: Mapping[str, int] | None = None,
    audit_report: str | None = None,
    out_dir: Path | None = None,
) -> str:
    sizes = sizes or {}
    total = counts(results)
    cached = sum(1 for r in results if r.status == "built" and getattr(r, "cached", False))
    verdict = f"**FAILED** ({total['failed']} failed job(s))" if total["failed"] else "**OK**"
    built = f"{total['built']} built" + (f" ({cached} from the cache)" if cached else "")
    lines = [f"## {title}", "", f"Result: {verdict}", ""]
    lines.append(f"{len(results)} job(s): {built}, {total['skipped']} skipped, {total['failed']} failed" + (f"; {format_duration(wall_s)} in all" if wall_s is not None else "") + ".")
    if out_dir is not None:
        lines.append(f"Outputs: `{out_dir}`.")
    ran = [r for r in results if r.status != "skipped"]
    if ran:
        lines += ["", "| job | kind | status | time | cache | size |", "|---|---|---|---|---|---|"]
        for r in ran:
            time_cell = f"{r.duration_s:.1f} s" if r.duration_s is not None else ""
            cache_cell = "hit" if getattr(r, "cached", False) else ("miss" if r.kind == "library" and r.status == "built" else "")
            status = r.status.upper() if r.failed else r.status
            lines.append(f"| {r.job_id} | {r.kind} | {status} | {time_cell} | {cache_cell} | {format_size(sizes.get(r.job_id))} |")
    verdicts = audit_verdicts(audit_report) if audit_report else []
    if verdicts:
        lines += ["", "### Audit", "", "| wheel | platform | tag | verdict |", "|---|---|---|---|"]
        lines += [f"| {w} | {p} | {t} | {v} |" for w, p, t, v in verdicts]
    failed = [r for r in results if r.failed]
    if failed:
        lines += ["", "### Failed jobs"]
        for r in failed:
            code = f"exit code {r.exit_code}" if r.exit_code is not None else "not run"
            lines += ["", f"#### {r.job_id}", "", f"- {code}" + (f": {r.reason}" if r.reason else "")]
            if r.log_path:
                lines.append(f"- full log: `{r.log_path}`")
            if r.log_tail:
                lines += ["", "```text", *r.log_tail, "```"]
    skipped = [r for r in results if r.status == "skipped"]
    if skipped:
        lines += ["", f"<details><summary>{len(skipped)} skipped job(s)</summary>", "", "| job | reason |", "|---|---|"]
        lines += [f"| {r.job_id} | {_cell(r.reason)} |" for r in skipped]
        lines += ["", "</details>"]
    return "\n".join(lines) + "\n"


def append_step_summary(env: Mapping[str, str], text: str) -> Path | None:
    """Append `text` to the file $GITHUB_STEP_SUMMARY names (GitHub Actions); None when it is unset."""
    target = env.get(STEP_SUMMARY_ENV, "").strip()
    if not target:
        return None
    path = Path(target)
    with open(path, "a", encoding="utf-8") as f:
        f.write(text if text.endswith("\n") else text + "\n")
    return path
