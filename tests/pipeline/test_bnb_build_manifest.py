"""Step ``manifest``: dist/manifest.json from the output folder and jobs.json, the same bytes anywhere."""

from __future__ import annotations

import json
from pathlib import Path

from bnb_build_helpers import run_step

from bnb_build import manifest

JOBS = {
    "version": "0.1.0",
    "source_date_epoch": "315532800",
    "jobs": [
        {"id": "cpu-linux-x86_64", "kind": "library", "status": "built", "platform": "linux-x86_64",
         "artifact": "libbitsandbytes_cpu.so", "inputs_digest": "sha256:" + "1" * 64},
        {"id": "cuda128-linux-x86_64", "kind": "library", "status": "skipped", "platform": "linux-x86_64", "reason": "no nvcc 12.8"},
        {"id": "wheel-linux-x86_64", "kind": "wheel", "status": "built", "platform": "linux-x86_64",
         "artifact": "bitsandbytes-0.1.0-py3-none-manylinux_2_28_x86_64.whl"},
        {"id": "audit", "kind": "audit", "status": "built"},
    ],
}  # fmt: skip


def make_dist(root: Path) -> Path:
    dist = root / "dist"
    libs = dist / "libs" / "linux" / "x86_64"
    libs.mkdir(parents=True)
    (libs / "libbitsandbytes_cpu.so").write_bytes(b"\x7fELF cpu")
    (libs / "libbitsandbytes_cpu.so.build-info.json").write_text(json.dumps({"job_id": "cpu-linux-x86_64", "archs": []}))
    (dist / "wheels").mkdir()
    (dist / "wheels" / "bitsandbytes-0.1.0-py3-none-manylinux_2_28_x86_64.whl").write_bytes(b"PK wheel")
    (dist / "audit.md").write_text("Result: **PASS**\n")
    (dist / "failures.md").write_text("not an artifact\n")
    (root / "jobs.json").write_text(json.dumps(JOBS))
    return dist


def test_the_step_writes_the_same_bytes_in_any_folder(tmp_path: Path) -> None:
    texts = []
    for where in (tmp_path / "a", tmp_path / "elsewhere" / "b"):
        make_dist(where)
        done = run_step(["manifest", "--dist", "dist", "--jobs", "jobs.json"], where)
        assert done.returncode == 0, done.stderr
        texts.append((where / "dist" / "manifest.json").read_text())
    assert texts[0] == texts[1]
    document = json.loads(texts[0])
    assert document["schema_version"] == manifest.MANIFEST_SCHEMA and document["ok"] is True
    assert document["summary"] == {"built": 3, "skipped": 1, "failed": 0}
    assert [a["path"] for a in document["artifacts"]] == [
        "audit.md", "libs/linux/x86_64/libbitsandbytes_cpu.so", "wheels/bitsandbytes-0.1.0-py3-none-manylinux_2_28_x86_64.whl",
    ]  # fmt: skip
    lib = document["artifacts"][1]
    assert lib["job"] == "cpu-linux-x86_64" and lib["size"] == 8 and len(lib["sha256"]) == 64
    jobs = {j["id"]: j for j in document["jobs"]}
    assert jobs["cpu-linux-x86_64"]["build_info"] == {"job_id": "cpu-linux-x86_64", "archs": []}
    assert jobs["cpu-linux-x86_64"]["sha256"] == lib["sha256"] and jobs["audit"]["artifact"] == "audit.md"
    assert jobs["cuda128-linux-x86_64"] == {"id": "cuda128-linux-x86_64", "kind": "library", "status": "skipped",
                                            "platform": "linux-x86_64", "reason": "no nvcc 12.8"}  # fmt: skip
    assert str(tmp_path) not in texts[0]


def test_a_built_job_without_its_artifact_and_bad_jobs_json_are_refused(tmp_path: Path) -> None:
    dist = make_dist(tmp_path)
    (dist / "audit.md").unlink()
    done = run_step(["manifest", "--dist", "dist", "--jobs", "jobs.json"], tmp_path)
    assert done.returncode == 3 and "job audit is built, but its artifact audit.md is not in dist" in done.stderr
    assert not (dist / "manifest.json").exists()
    (tmp_path / "jobs.json").write_text(json.dumps({"version": "1", "jobs": [{"id": "x", "kind": "library", "status": "ok"}]}))
    done = run_step(["manifest", "--dist", "dist", "--jobs", "jobs.json"], tmp_path)
    assert done.returncode == 2 and "every job needs an 'id', a 'kind'" in done.stderr
