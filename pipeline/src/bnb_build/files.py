"""Atomic file output: a reader sees the old file or the complete new one, never a partial one."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def write_bytes_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        _remove(Path(tmp))
        raise


def write_text_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    write_bytes_atomic(path, text.encode("utf-8"), mode)


def copy_atomic(src: Path, dest: Path, mode: int = 0o644) -> None:
    """Copy ``src`` to ``dest`` through a temporary file in the destination folder, then rename it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=str(dest.parent))
    os.close(fd)
    try:
        shutil.copyfile(str(src), tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, str(dest))
    except BaseException:
        _remove(Path(tmp))
        raise


def move_into_place(src: Path, dest: Path, mode: int = 0o644) -> None:
    """Move a finished file to ``dest`` (same file system) with a fixed mode, replacing an old one."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(src, mode)
    os.replace(src, dest)


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass


def remove_tree(path: Path) -> None:
    """Remove a file or folder if it exists."""
    _remove(path)
