"""bnb_build runs in bare build images: the standard library and the tools pinned in
pipeline/step-requirements.txt only (never dagger, pydantic or bitsandbytes_ci), Python 3.8 syntax,
``python3 -I``."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from importlib.metadata import packages_distributions

from bnb_build_helpers import PIPELINE_SRC, REPO_ROOT, run_step

PACKAGE_DIR = PIPELINE_SRC / "bnb_build"
MODULES = sorted(f"bnb_build.{p.stem}" for p in PACKAGE_DIR.glob("*.py") if p.stem != "__init__") + ["bnb_build"]
STEP_REQUIREMENTS = REPO_ROOT / "pipeline" / "step-requirements.txt"

# Python 3.8 has no sys.stdlib_module_names; the modules bnb_build may use there.
STDLIB_38 = {
    "__future__", "_abc", "_codecs", "_collections", "_collections_abc", "_frozen_importlib", "_frozen_importlib_external",
    "_functools", "_imp", "_io", "_thread", "_warnings", "_weakref", "abc", "argparse", "ast", "atexit", "base64",
    "binascii", "bz2", "codecs", "collections", "contextlib", "copy", "csv", "dataclasses", "encodings", "enum",
    "errno", "fnmatch", "functools", "genericpath", "gettext", "hashlib", "heapq", "importlib", "io", "itertools",
    "json", "keyword", "linecache", "locale", "lzma", "marshal", "ntpath", "operator", "os", "pathlib", "posix",
    "posixpath", "re", "reprlib", "select", "selectors", "shlex", "shutil", "signal", "site", "sre_compile",
    "sre_constants", "sre_parse", "stat", "string", "struct", "subprocess", "sys", "tempfile", "threading", "time",
    "token", "tokenize", "types", "typing", "urllib", "warnings", "weakref", "zipfile", "zipimport", "zlib",
}


def pinned_distributions() -> set:
    """The distributions pipeline/step-requirements.txt pins, normalized (``scikit-build-core``)."""
    names = set()
    for line in STEP_REQUIREMENTS.read_text().splitlines():
        m = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==", line)
        if m:
            names.add(re.sub(r"[-_.]+", "-", m.group(1)).lower())
    return names


def pinned_modules() -> set:
    """The top-level modules of the pinned distributions installed here (lief, auditwheel, ...)."""
    pinned = pinned_distributions()
    return {module for module, dists in packages_distributions().items() if any(re.sub(r"[-_.]+", "-", d).lower() in pinned for d in dists)}


# Imports every module, then reads a library with the ELF reader, so what a reader loads on first use
# (lief) counts as well.
CHECK = f"""
import importlib, json, sys
sys.path.insert(0, {str(PIPELINE_SRC)!r})
before = set(sys.modules)
for name in {MODULES!r}:
    importlib.import_module(name)
from bnb_build import elf
machine = elf.read_elf(sys.executable).machine
loaded = {{m.split(".")[0] for m in set(sys.modules) - before}}
stdlib = set(getattr(sys, "stdlib_module_names", ())) or {sorted(STDLIB_38)!r}
print(json.dumps({{"loaded": sorted(loaded - stdlib - {{"bnb_build"}}), "machine": machine}}))
"""


def test_every_module_imports_only_the_standard_library_and_pinned_tools() -> None:
    assert len(MODULES) >= 10, MODULES
    assert "lief" in pinned_distributions(), "bnb_build.elf and bnb_build.binfmt read libraries with lief"
    result = subprocess.run([sys.executable, "-I", "-c", CHECK], capture_output=True, text=True, check=True)
    found = json.loads(result.stdout)
    assert "lief" in found["loaded"] and found["machine"] > 0, found
    unpinned = set(found["loaded"]) - pinned_modules()
    assert not unpinned, f"bnb_build loaded {sorted(unpinned)}, which is neither in the standard library nor pinned in pipeline/step-requirements.txt"
    assert not {"dagger", "pydantic", "bitsandbytes_ci"} & set(found["loaded"])


def test_sources_parse_as_python_38() -> None:
    for path in sorted(PACKAGE_DIR.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path), feature_version=(3, 8))
        imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        if imports:  # a module with code starts with the __future__ import, so annotations stay strings on 3.8
            first = imports[0]
            assert isinstance(first, ast.ImportFrom) and first.module == "__future__", f"{path.name}: start with 'from __future__ import annotations'"


def test_main_lists_steps_and_rejects_unknown_ones(tmp_path) -> None:
    listing = run_step(["--help"], tmp_path)
    assert listing.returncode == 0
    for step in ("native", "wheel", "audit"):
        assert step in listing.stdout
    unknown = run_step(["nativ"], tmp_path)
    assert unknown.returncode == 2
    assert "unknown step 'nativ'" in unknown.stderr and "native" in unknown.stderr
