"""Where the step programs find the files they ship with: the tool pins (``step-requirements.txt``)
and the pipeline's CMake files (``cmake/``: toolchain files, ``project.cmake``).

The CMake files are package data of ``bnb_build``. The pins have one source, ``pipeline/step-requirements.txt``;
they are found

- inside the package (``bnb_build/step-requirements.txt``), where an installed pipeline has them: its
  wheel ships them there (pipeline/pyproject.toml, ``force-include``);
- else two folders above the package, where a checkout (``pipeline/src/bnb_build`` ->
  ``pipeline/``) and the build containers (``/opt/bnb/steps/bnb_build`` -> ``/opt/bnb/``) have them.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

PINS_NAME = "step-requirements.txt"
CMAKE_SUBDIR = "cmake"


def package_dir() -> Path:
    """The folder of the bnb_build package (importlib.resources; Python 3.8 has no ``files``)."""
    try:
        from importlib.resources import files
    except ImportError:  # pragma: no cover - Python 3.8
        return Path(__file__).resolve().parent
    return Path(str(files(__package__ or "bnb_build"))).resolve()


def pins_candidates(steps_dir: Path) -> List[Path]:
    """Where the pins of the step package in ``steps_dir`` may be, in the order they are looked for."""
    steps_dir = Path(steps_dir)
    beside = steps_dir.parent.parent if len(steps_dir.parents) >= 2 else steps_dir
    return [steps_dir / PINS_NAME, beside / PINS_NAME]


def step_requirements(steps_dir: Optional[Path] = None) -> Path:
    """The pins of the step package in ``steps_dir`` (default: this one); the last place looked at
    when none has them (the caller reports it)."""
    candidates = pins_candidates(package_dir() if steps_dir is None else steps_dir)
    return next((path for path in candidates if path.is_file()), candidates[-1])


def cmake_dir() -> Path:
    """The pipeline's own CMake files."""
    return package_dir() / CMAKE_SUBDIR
