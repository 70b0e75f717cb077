"""``python3 -m bnb_build <step> [options]``: run one step program."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Optional, Sequence

STEPS = {
    "native": "build one native library with CMake",
    "wheel": "pack the libraries of one platform into a wheel",
    "audit": "check wheels against the expected libraries, write a Markdown report",
    "pre-release": "rename wheels to the stable pre-release version, write body.md and release.json",
    "github-release": "replace the GitHub pre-release with a pre-release folder (token: $GITHUB_TOKEN)",
    "publish": "verify wheels, then upload them with twine --skip-existing (token: $PYPI_TOKEN)",
    "manifest": "describe a build-all output folder in manifest.json (artifacts, jobs, digests)",
    "try-wheels": "install each wheel into a clean environment of its platform and run a script",
    "version": "print the version of the tree being built (its files, else its PEP 517 backend)",
}

# Steps whose module name differs from the step name.
MODULES = {"pre-release": "release", "github-release": "github_release", "try-wheels": "try_wheels"}


def usage() -> str:
    lines = ["usage: python3 -m bnb_build <step> [options]", "", "steps:"]
    lines += [f"  {name:<14} {text}" for name, text in STEPS.items()]
    lines.append("\n'python3 -m bnb_build <step> --help' shows the options of a step.")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else 2
    step, rest = args[0], args[1:]
    if step not in STEPS:
        print(f"error: unknown step {step!r}; allowed: {', '.join(STEPS)}\n\n{usage()}", file=sys.stderr)
        return 2
    from .process import watch_parent

    watch_parent(os.environ)  # started by bnb-ci: end with it (process.watch_parent)
    module = importlib.import_module(f"bnb_build.{MODULES.get(step, step)}")
    return int(module.main(rest))


if __name__ == "__main__":
    sys.exit(main())
