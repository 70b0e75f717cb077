"""bitsandbytes_ci.core.summary: summary.md of a build-all run, and the GitHub step summary."""

from __future__ import annotations

from pathlib import Path

from bitsandbytes_ci.core.results import JobResult
from bitsandbytes_ci.core.summary import append_step_summary, audit_verdicts, format_size, render_summary_md

AUDIT = """# Wheel audit

Result: **PASS** (0 violations)

| wheel | platform | tag | verdict |
|---|---|---|---|
| bitsandbytes-0.1.0-py3-none-manylinux_2_28_x86_64.whl | linux-x86_64 | manylinux_2_28_x86_64 | PASS |

## bitsandbytes-0.1.0-py3-none-manylinux_2_28_x86_64.whl
"""

RESULTS = [
    JobResult("cpu-linux-x86_64", "library", "built", "linux-x86_64", duration_s=31.04, artifact=Path("/w/libbitsandbytes_cpu.so")),
    JobResult("cuda130-linux-x86_64", "library", "failed", "linux-x86_64", duration_s=8.9, exit_code=5,
              log_tail=("error: boom", "ninja: build stopped"), log_path=Path("/cache/jobs/cuda130-linux-x86_64/log.txt")),
    JobResult("cuda128-linux-x86_64", "library", "skipped", "linux-x86_64", reason="no nvcc 12.8 on this host (found: 13.0 at /usr/local/cuda)"),
    JobResult("wheel-linux-x86_64", "wheel", "built", "linux-x86_64", duration_s=1.0),
]  # fmt: skip


def test_summary_lists_jobs_times_sizes_audit_and_failures() -> None:
    text = render_summary_md(RESULTS, wall_s=75, sizes={"cpu-linux-x86_64": 47_300, "wheel-linux-x86_64": 3 * 1024 * 1024}, audit_report=AUDIT)
    assert text.startswith("## bnb-ci build-all\n\nResult: **FAILED** (1 failed job(s))\n")
    assert "4 job(s): 2 built, 1 skipped, 1 failed; 1m 15s in all." in text
    assert "| cpu-linux-x86_64 | library | built | 31.0 s | miss | 46.2 KiB |" in text
    assert "| cuda130-linux-x86_64 | library | FAILED | 8.9 s |  |  |" in text
    assert "| wheel-linux-x86_64 | wheel | built | 1.0 s |  | 3.0 MiB |" in text
    assert "| bitsandbytes-0.1.0-py3-none-manylinux_2_28_x86_64.whl | linux-x86_64 | manylinux_2_28_x86_64 | PASS |" in text
    assert "#### cuda130-linux-x86_64\n\n- exit code 5\n- full log: `/cache/jobs/cuda130-linux-x86_64/log.txt`\n\n```text\nerror: boom\nninja: build stopped\n```" in text
    assert "<details><summary>1 skipped job(s)</summary>" in text and "| cuda128-linux-x86_64 | no nvcc 12.8 on this host" in text


def test_cache_hits_are_counted_and_marked() -> None:
    cached = JobResult("cpu-linux-x86_64", "library", "built", "linux-x86_64", cached=True)
    text = render_summary_md([cached])
    assert "Result: **OK**" in text and "1 job(s): 1 built (1 from the cache), 0 skipped, 0 failed." in text
    assert "| cpu-linux-x86_64 | library | built |  | hit |  |" in text


def test_audit_verdicts_and_sizes() -> None:
    assert audit_verdicts(AUDIT) == [("bitsandbytes-0.1.0-py3-none-manylinux_2_28_x86_64.whl", "linux-x86_64", "manylinux_2_28_x86_64", "PASS")]
    assert audit_verdicts("no table") == []
    assert [format_size(n) for n in (None, 512, 2048, 5 * 1024**3)] == ["", "512 B", "2.0 KiB", "5.0 GiB"]


def test_step_summary_is_appended_only_when_set(tmp_path: Path) -> None:
    assert append_step_summary({}, "x") is None
    target = tmp_path / "step.md"
    target.write_text("before\n")
    assert append_step_summary({"GITHUB_STEP_SUMMARY": str(target)}, "## run\n") == target
    assert target.read_text() == "before\n## run\n"
