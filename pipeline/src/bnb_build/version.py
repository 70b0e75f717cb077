"""Step ``version``: the version of the tree being built.

Command line (docs/contracts.md)::

    python3 -m bnb_build version --source src

In order: the first line of ``VERSION`` where that file exists (a ``VERSION`` that is empty or whose
first line is not a version is refused, never skipped: exit code 2); a static ``[project] version`` of
``pyproject.toml``; ``__version__ = "..."`` in the package's ``__init__.py``; a literal
``version="..."`` (or ``"version": "..."``) in ``setup.py``; and, when none of these gives one, the
PEP 517 backend itself: ``prepare_metadata_for_build_wheel`` in an isolated build environment
(the pinned ``build`` front end), which every backend answers. Prints the version.

:func:`static_version` is the pure part (texts in, version out); the orchestration side uses it
on the texts it reads itself.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import sys
from pathlib import Path
from typing import Mapping, Optional, Sequence

from .errors import InputError, UsageError, run_step

_VERSION = re.compile(r"^\d+(\.\d+)*([.-]?(a|b|rc|dev|post|preview)\d*)*(\+[\w.]+)?$")
_SETUP_VERSION = re.compile(r"""["']?version["']?\s*[:=]\s*["']([^"']+)["']""")
_PROJECT_VERSION = re.compile(r'(?ms)^\[project\]\s*$.*?^version\s*=\s*"([^"]+)"')


VERSION_FORMAT = "a version such as 0.1.0, 1.2.0rc1 or 0.45.1.dev0"
"""What a version looks like, for messages."""


class VersionFileError(UsageError):
    """The tree's VERSION file is empty, not text, or its first line is not a version."""


def _checked(value: Optional[str]) -> Optional[str]:
    value = (value or "").strip()
    return value if value and _VERSION.match(value) else None


def static_version(*, version_file: Optional[str] = None, pyproject: Optional[str] = None, package_init: Optional[str] = None,
                   setup_py: Optional[str] = None, version_origin: str = "VERSION") -> Optional[str]:  # fmt: skip
    """The version the tree's files state without running anything, or None. A VERSION file
    (`version_file`, its text; `version_origin` names it in messages) decides alone:
    VersionFileError when it states no version."""
    if version_file is not None:
        return version_from_file(version_file, origin=version_origin)
    if pyproject:
        project = _project_table(pyproject)
        if "version" not in project.get("dynamic", []) and _checked(project.get("version")):
            return _checked(project.get("version"))
    if package_init:
        found = _assigned(package_init, "__version__")
        if found:
            return found
    if setup_py:
        for match in _SETUP_VERSION.finditer(setup_py):
            if _checked(match.group(1)):
                return _checked(match.group(1))
    return None


def version_from_file(text: str, *, origin: str = "VERSION") -> str:
    """The version on the first line of a VERSION file's text; VersionFileError naming the file
    (`origin`) and what it holds."""
    first = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not first:
        raise VersionFileError(f"{origin} is empty: write {VERSION_FORMAT} on its first line")
    found = _checked(first)
    if found is None:
        shown = first if len(first) <= 60 else first[:60] + "..."
        raise VersionFileError(f"{origin} holds {shown!r}, which is not a version: write {VERSION_FORMAT} on its first line")
    return found


def _project_table(text: str) -> dict:
    try:
        import tomllib  # Python 3.11+

        return tomllib.loads(text).get("project", {})
    except ImportError:  # the step programs run on Python 3.8 too: a static version line is enough there
        match = _PROJECT_VERSION.search(text)
        return {"version": match.group(1)} if match else {}
    except ValueError:
        return {}


def _assigned(source: str, name: str) -> Optional[str]:
    """The string literal assigned to `name` at module level, or None."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                value = node.value
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    return _checked(value.value)
    return None


def backend_version(source: Path, env: Mapping[str, str]) -> str:
    """The version the tree's PEP 517 backend reports (prepare_metadata_for_build_wheel), from an
    isolated build environment of its build requirements."""
    try:
        from build.util import project_wheel_metadata
    except ImportError:
        msg = "the tree states no version in its files, and the `build` front end is not installed to ask its backend (pip install build)"
        raise InputError(msg) from None
    old = dict(os.environ)
    os.environ.update(env)
    try:
        metadata = project_wheel_metadata(source, isolated=True)
    except Exception as e:  # the backend's own failure, whatever it raises
        msg = f"the PEP 517 backend of {source} could not say its version: {e}"
        raise InputError(msg) from None
    finally:
        os.environ.clear()
        os.environ.update(old)
    version = metadata.get("Version")
    if not version:
        msg = f"the PEP 517 backend of {source} reports no Version in its metadata"
        raise InputError(msg)
    return str(version)


def tree_version(source: Path, env: Mapping[str, str], package: str = "bitsandbytes") -> str:
    """The version of the tree at `source`: what its files state, else what its backend says."""

    def read(rel: str) -> Optional[str]:
        path = source / rel
        if not path.is_file():
            return None
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise VersionFileError(f"{path} is not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8") from None
        except OSError as e:
            raise InputError(f"{path} cannot be read: {e.strerror or e}") from None

    texts = {"version_file": read("VERSION"), "pyproject": read("pyproject.toml"), "package_init": read(f"{package}/__init__.py"),
             "setup_py": read("setup.py")}  # fmt: skip
    found = static_version(**texts, version_origin=str(source / "VERSION"))
    if found:
        return found
    if not (source / "pyproject.toml").is_file() and not (source / "setup.py").is_file():
        msg = f"{source} has no VERSION file, pyproject.toml or setup.py: nothing tells its version"
        raise InputError(msg)
    return backend_version(source, env)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bnb_build version", description="Print the version of the tree being built.")
    parser.add_argument("--source", required=True, type=Path, help="the tree's root")
    parser.add_argument("--package", default="bitsandbytes", help="its Python package folder (default: bitsandbytes)")
    ns = parser.parse_args(list(sys.argv[1:] if argv is None else argv))

    def run() -> int:
        print(tree_version(ns.source, dict(os.environ), ns.package))
        return 0

    return run_step(run)
