"""Source patterns, input digests and copied subsets (bnb_build.inputs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from bnb_build_helpers import source_patterns

from bnb_build import inputs
from bnb_build.errors import InputError, UsageError


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    files = {
        "CMakeLists.txt": "project(x)\n",
        "VERSION": "0.1.0\n",
        "cmake/Bnbcpu.cmake": "# cpu\n",
        "csrc/bitsandbytes.h": "// abi\n",
        "csrc/common/api.cpp": "// api\n",
        "csrc/cpu/backend.cpp": "// cpu\n",
        "csrc/cuda/backend.cu": "// cuda\n",
        "csrc/cuda/sub/deep.cuh": "// deep\n",
        "README.md": "not a source\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return tmp_path


def test_expand_gives_sorted_relative_posix_paths(tree: Path) -> None:
    assert inputs.expand(tree, source_patterns("cuda")) == [
        "CMakeLists.txt",
        "VERSION",
        "cmake/Bnbcpu.cmake",
        "csrc/bitsandbytes.h",
        "csrc/common/api.cpp",
        "csrc/cuda/backend.cu",
        "csrc/cuda/sub/deep.cuh",
    ]


def test_expand_unique_and_empty_folder_allowed(tree: Path) -> None:
    assert inputs.expand(tree, ["VERSION", "VERSION", "csrc/xpu/**"]) == ["VERSION"]


def test_missing_exact_files_are_named(tree: Path) -> None:
    with pytest.raises(InputError, match="csrc/missing.h, LICENSE"):
        inputs.expand(tree, ["VERSION", "csrc/missing.h", "LICENSE"])


@pytest.mark.parametrize("pattern", ["csrc/*.cu", "../x", "/abs/file", "csrc/**/x", "csrc\\cpu", "./VERSION", "", "/**"])
def test_other_patterns_are_rejected(tree: Path, pattern: str) -> None:
    with pytest.raises(UsageError, match="not allowed"):
        inputs.expand(tree, [pattern])


def test_digest_follows_content_mode_names_and_extra(tree: Path) -> None:
    files = inputs.expand(tree, source_patterns("cpu"))
    base = inputs.digest(tree, files, {"backend": "cpu"})
    assert base.startswith("sha256:") and len(base) == 7 + 64
    assert inputs.digest(tree, list(reversed(files)), {"backend": "cpu"}) == base, "order of the list must not matter"
    assert inputs.digest(tree, files, {"backend": "cpu", "flags": []}) != base
    assert inputs.digest(tree, files[:-1], {"backend": "cpu"}) != base

    os.chmod(tree / "VERSION", 0o755)
    assert inputs.digest(tree, files, {"backend": "cpu"}) != base, "the executable bit is part of the digest"
    os.chmod(tree / "VERSION", 0o644)
    assert inputs.digest(tree, files, {"backend": "cpu"}) == base

    (tree / "VERSION").write_text("0.1.1\n")
    assert inputs.digest(tree, files, {"backend": "cpu"}) != base


def test_extra_is_canonical(tree: Path) -> None:
    files = ["VERSION"]
    assert inputs.digest(tree, files, {"a": 1, "b": [1, 2]}) == inputs.digest(tree, files, {"b": [1, 2], "a": 1})


def test_editing_a_cu_file_changes_the_cuda_digest_only(tree: Path) -> None:
    def digests() -> dict:
        return {
            b: inputs.digest(tree, inputs.expand(tree, source_patterns(b)), {"backend": b}) for b in ("cpu", "cuda")
        }

    before = digests()
    (tree / "csrc/cuda/backend.cu").write_text("// cuda, edited\n")
    after = digests()
    assert after["cuda"] != before["cuda"]
    assert after["cpu"] == before["cpu"]
    (tree / "csrc/common/api.cpp").write_text("// api, edited\n")
    assert all(v != after[k] for k, v in digests().items()), "a shared file changes every job's digest"


def test_copy_subset_copies_exactly_the_selected_files(tree: Path, tmp_path: Path) -> None:
    dest = tmp_path / "copy"
    copied = inputs.copy_subset(tree, source_patterns("cpu"), dest)
    assert inputs.all_files(dest) == copied
    assert "README.md" not in copied and "csrc/cuda/backend.cu" not in copied
    assert inputs.digest(dest, copied, None) == inputs.digest(tree, copied, None)
