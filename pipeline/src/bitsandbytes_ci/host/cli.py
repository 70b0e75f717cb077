"""`bnb-ci`: the pipeline's verbs on the host, with the same names and options as the Dagger functions.

This module parses arguments, loads the matrix, plans the selected jobs and hands an `Invocation` to
the handler registered for the verb in `HANDLERS`. `plan` is handled here; the build, wheel and audit
verbs belong to the host executor (verbs.py, local.py); the release verbs to release_verbs.py. This
is, with launch.py (`./bnb`), the only module of the package that reads os.environ; everything else
receives `env` explicitly.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from bnb_build.errors import StepError
from bnb_build.inputs import check_source_date_epoch

from ..core.errors import MatrixError, PipelineError, SelectionError
from ..core.listing import PLAN_FORMATS, jobs_json, render_plan
from ..core.matrix import Matrix, load_matrix
from ..core.plan import Job, Selection, WheelJob, dropped_jobs, plan_jobs, plan_wheels
from ..core.shards import VERSION_OPTIONS
from ..core.tree import DEFAULT_TREE, TreeFacts, read_tree
from .cache_usage import ACTIONS as CACHE_ACTIONS
from .cache_usage import run_cache
from .doctor import detect, run_doctor, verdicts
from .install_toolkit import CUDA_WHEELS_DEFAULT_PREFIX, run_install_cuda_wheels, run_install_toolkit
from .input_checks import check_sources
from .invocation import Handler, Invocation
from .local import CACHE_APP_NAME, DEFAULT_CONCURRENCY, DEFAULT_SOURCE_DATE_EPOCH
from .release_verbs import add_options as add_release_options
from .release_verbs import run_pre_release, run_publish
from .verbs import HOST_HANDLERS

MATRIX_ENV = "BNB_CI_MATRIX"
"""Environment variable naming a matrix file to use instead of the built-in one (--matrix wins)."""

DEFAULT_OUT = "bnb-out"

INTERRUPTED_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}
"""Exit code after an interruption: 128 + the signal number, as a shell reports a process it killed."""


@dataclass(frozen=True)
class Verb:
    """A verb: its help text, which family it builds (None: all), and the option naming its version."""

    help: str
    family: str | None = None
    version_option: str | None = None
    options: tuple[str, ...] = ()


VERBS: dict[str, Verb] = {
    "plan": Verb("list the jobs the matrix yields for a selection", options=("select", "archs", "format", "digest")),
    "build-cpu": Verb("build the CPU library per platform", family="cpu", options=("out", "host")),
    "build-cuda": Verb("build the CUDA libraries", family="cuda", version_option=f"--{VERSION_OPTIONS['cuda']}", options=("archs", "out", "host")),
    "build-rocm": Verb("build the ROCm libraries", family="rocm", version_option=f"--{VERSION_OPTIONS['rocm']}", options=("archs", "out", "host")),
    "build-xpu": Verb("build the Intel XPU (SYCL) libraries", family="xpu", version_option=f"--{VERSION_OPTIONS['xpu']}", options=("archs", "out", "host")),
    "build-wheels": Verb("pack one wheel per platform from built libraries", options=("select", "archs", "out", "libs", "host", "keep-going")),
    "audit-wheels": Verb("check wheels against the plan (platform tag, libraries, arch lists)", options=("select", "archs", "wheels", "out", "host")),
    "test-wheels": Verb("install each wheel into a clean environment and run the tree's try-script", options=("wheels", "out", "host")),
    "build-all": Verb("build every library, then the wheels, then try and audit them", options=("select", "archs", "out", "libs", "host", "keep-going")),
    "pre-release": Verb("publish the wheels as the rolling pre-release", options=("wheels", "select", "archs", "release")),
    "publish": Verb("upload the wheels to the package index", options=("wheels", "select", "archs", "release")),
    "install-toolkit": Verb("install the toolkit of native-runner jobs (Windows CUDA, ROCm, oneAPI) and export its environment", options=("select",)),
    "install-cuda-wheels": Verb("assemble CUDA 13 (nvcc; cuBLAS with --with-cublas) from NVIDIA's PyPI wheels into a folder", options=("cuda-wheels",)),
    "doctor": Verb("list this host's toolkits, the jobs they let bnb-ci build here, and how to install the missing ones", options=("tree",)),
    "cache": Verb("show where the cache is and its size per kind (info), or remove what was not used lately (prune)", options=("cache",)),
}


HERE_FORMATS = ("table", "markdown")
"""The plan formats `--here` may follow: text for a reader, not data for a program."""


def run_plan(invocation: Invocation) -> int:
    fmt = invocation.options.get("format") or "table"
    source = invocation.options.get("source")
    if invocation.options.get("here") and fmt not in HERE_FORMATS:
        msg = f"--here adds a text table after the plan, which --format {fmt} would not parse; use it with --format {' or '.join(HERE_FORMATS)}"
        raise SelectionError(msg)
    if fmt == "json" and source is not None:
        invocation.stdout.write(json.dumps(jobs_with_digests(invocation, Path(source)), indent=2) + "\n")
    else:
        dropped = dropped_jobs(invocation.matrix, invocation.selection, invocation.tree)
        invocation.stdout.write(render_plan(fmt, invocation.matrix, invocation.jobs, invocation.wheels, dropped))
    if invocation.options.get("here"):
        host, base = detect(invocation.env)
        invocation.stdout.write("\n" + verdicts(invocation.jobs, host, base))
    return 0


def jobs_with_digests(invocation: Invocation, source: Path) -> list[dict[str, Any]]:
    """`plan --format json --source DIR`: every job with its input set and digest (`Job.input_digest`), then
    every wheel job with its digest (over the digests of the libraries it packs and the default
    SOURCE_DATE_EPOCH)."""
    repo = Path(source).absolute()
    check_sources(repo, invocation.jobs, invocation.wheels)
    entries = jobs_json(invocation.jobs)
    digests = {job.id: job.input_digest(repo) for job in invocation.jobs}
    for entry, job in zip(entries, invocation.jobs):
        entry["inputs"] = job.inputs()
        entry["input_digest"] = digests[job.id]
    for wheel in invocation.wheels:
        libraries = {i: digests[i] for i in wheel.build_job_ids}
        entries.append({
            "id": wheel.id, "kind": "wheel", "platform": wheel.platform,
            "inputs": wheel.inputs(libraries=libraries, source_date_epoch=DEFAULT_SOURCE_DATE_EPOCH),
            "input_digest": wheel.input_digest(repo, libraries=libraries, source_date_epoch=DEFAULT_SOURCE_DATE_EPOCH),
        })  # fmt: skip
    return entries


HANDLERS: dict[str, Handler] = {
    "plan": run_plan, **HOST_HANDLERS, "pre-release": run_pre_release, "publish": run_publish,
    "install-toolkit": run_install_toolkit, "install-cuda-wheels": run_install_cuda_wheels, "doctor": run_doctor,
    "cache": run_cache,
}  # fmt: skip
"""verb -> function: `plan` here, the build verbs in verbs.py (the host executor), the release verbs in
release_verbs.py."""


def source_date_epoch_arg(text: str) -> str:
    """argparse type of --source-date-epoch: whole seconds since 1970-01-01 UTC that a zip entry can hold
    (bnb_build.inputs.check_source_date_epoch, which the Dagger functions use too)."""
    try:
        return check_source_date_epoch(text)
    except StepError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--source-date-epoch ")) from None


def path_arg(text: str) -> Path:
    """argparse type of the folder and file options: an empty value (an unset variable in `--libs "$LIBS"`)
    is refused; Path("") would silently mean the current directory."""
    if not text.strip():
        msg = f"{text!r} is empty: name a path (an unset variable gives an empty value)"
        raise argparse.ArgumentTypeError(msg)
    return Path(text)


def positive_int(text: str) -> int:
    """argparse type of --jobs."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        msg = f"{text!r} is not a positive whole number"
        raise argparse.ArgumentTypeError(msg)
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bnb-ci", description="Build, audit and release bitsandbytes wheels from the support matrix.")
    parser.add_argument("--matrix", type=path_arg, help=f"support matrix file (default: the built-in one, or ${MATRIX_ENV})")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, verb in VERBS.items():
        sub = verbs.add_parser(name, help=verb.help, description=verb.help)
        sub.add_argument("--platform", action="append", default=[], metavar="ID", help="platform id; repeat for several (default: all)")
        if "archs" in verb.options:
            sub.add_argument("--archs", metavar="LIST", help='GPU arch list replacing the matrix\'s, e.g. "75;90" or "gfx942" (checked against the toolkit)')
        if verb.version_option:
            sub.add_argument(verb.version_option, dest="version", metavar="V", help="toolkit version, exact or leading part, e.g. 12.8 (default: all)")
        if "select" in verb.options:
            sub.add_argument("--backend", action="append", default=[], metavar="NAME", help="cpu, cuda, rocm (hip), xpu; repeat for several (default: all)")
            sub.add_argument("--version", dest="versions", action="append", default=[], metavar="V", help="toolkit version; repeat for several (default: all)")
        if "format" in verb.options:
            sub.add_argument("--here", action="store_true", help="also say, per job, whether bnb-ci can build it on this host (and why not)")
            sub.add_argument(
                "--format", choices=PLAN_FORMATS, default="table",
                help="table (default), json (every job), markdown (the support matrix of README.md) or ci-matrix (the CI shards)",
            )  # fmt: skip
        if "out" in verb.options:
            sub.add_argument("--out", type=path_arg, default=Path(DEFAULT_OUT), metavar="DIR", help=f"output directory (default: {DEFAULT_OUT})")
        if "libs" in verb.options:
            sub.add_argument(
                "--libs", type=path_arg, metavar="DIR",
                help="libraries built earlier (build-<backend> --out DIR); default: build the selected libraries first",
            )  # fmt: skip
        if "wheels" in verb.options:
            sub.add_argument("--wheels", type=path_arg, default=Path(DEFAULT_OUT) / "wheels", metavar="DIR", help="directory of wheels")
        if "host" in verb.options:
            sub.add_argument("--source", type=path_arg, default=Path("."), metavar="DIR", help="the checkout to build (default: the current directory)")
            sub.add_argument("--cache-dir", type=path_arg, metavar="DIR", help=f"work directories and artifact cache (default: $XDG_CACHE_HOME/{CACHE_APP_NAME}, else ~/.cache/{CACHE_APP_NAME})")
            sub.add_argument(
                "--jobs", type=positive_int, default=DEFAULT_CONCURRENCY, metavar="N",
                help=f"how many jobs run at the same time (default: {DEFAULT_CONCURRENCY})",
            )  # fmt: skip
        if name in ("build-wheels", "build-all"):  # what packs wheels: a library does not depend on it
            sub.add_argument(
                "--source-date-epoch", type=source_date_epoch_arg, metavar="SECONDS",
                help=f"SOURCE_DATE_EPOCH of the wheels (default: {DEFAULT_SOURCE_DATE_EPOCH}, as in Dagger; "
                "e.g. \"$(git log -1 --format=%%ct)\" for the commit time)",
            )  # fmt: skip
        if "cache" in verb.options:
            sub.add_argument("action", choices=CACHE_ACTIONS, help="info: where the cache is and its size per kind; prune: remove what was not used lately")
            sub.add_argument("--cache-dir", type=path_arg, metavar="DIR", help=f"the cache root (default: $XDG_CACHE_HOME/{CACHE_APP_NAME}, else ~/.cache/{CACHE_APP_NAME})")
            sub.add_argument("--older-than", metavar="DAYS", help="prune: remove what was not used for DAYS days")
            sub.add_argument("--max-size", metavar="SIZE", help="prune: then remove the least recently used until the cache is at most SIZE (e.g. 20G)")
        if "tree" in verb.options:
            sub.add_argument("--source", type=path_arg, metavar="DIR", help="the tree to build (default: the current directory)")
        if "digest" in verb.options:
            sub.add_argument(
                "--source", type=path_arg, metavar="DIR",
                help="with --format json: add each job's input digest and input set, computed from this checkout",
            )  # fmt: skip
        if "release" in verb.options:
            add_release_options(name, sub)
        if "cuda-wheels" in verb.options:
            sub.add_argument("--with-cublas", action="store_true", help="also cuBLAS and cuBLASLt (about 420 MB), for trees that link CUDA::cublas")
            sub.add_argument("--prefix", type=path_arg, default=Path(CUDA_WHEELS_DEFAULT_PREFIX), metavar="DIR",
                             help=f"where the wheels go; the CUDA root is DIR/nvidia/cu13 (default: {CUDA_WHEELS_DEFAULT_PREFIX})")  # fmt: skip
        if "keep-going" in verb.options:
            sub.add_argument("--keep-going", action="store_true", help="pack a platform's wheel even when one of its libraries failed")
    return parser


def selection_for(verb_name: str, args: argparse.Namespace) -> Selection:
    """The plan selection a verb's options describe."""
    verb = VERBS[verb_name]
    backends = [verb.family] if verb.family else list(getattr(args, "backend", []))
    versions = list(getattr(args, "versions", []))
    if getattr(args, "version", None) is not None:  # "" too: refused by the plan, never "every version"
        versions.append(args.version)
    return Selection(backends=tuple(backends), versions=tuple(versions), platforms=tuple(args.platform), archs=getattr(args, "archs", None))


def tree_for(args: argparse.Namespace) -> TreeFacts:
    """What the plan knows of the tree being built: `--source DIR` when the verb takes one, else the
    current directory when it is a tree (plan, release verbs), else nothing (the pipeline's defaults)."""
    source = getattr(args, "source", None)
    if source is not None:
        return read_tree(Path(source))
    if Path("CMakeLists.txt").is_file():
        return read_tree(Path("."))
    return DEFAULT_TREE


def main_inner(
    argv: Sequence[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    stdout: TextIO | None = None,
    handlers: Mapping[str, Handler] | None = None,
) -> int:
    """Parse, plan, dispatch; raises PipelineError (tests call this directly)."""
    env = dict(os.environ) if env is None else env
    args = build_parser().parse_args(argv)
    matrix_path = args.matrix or env.get(MATRIX_ENV) or None
    try:
        matrix = load_matrix(matrix_path)
    except MatrixError as e:
        if args.matrix or not matrix_path:
            raise
        msg = f"{MATRIX_ENV}={matrix_path} (from the environment): {e}"
        raise MatrixError(msg) from None
    selection = selection_for(args.verb, args)
    tree = tree_for(args)
    jobs = plan_jobs(matrix, selection, tree)
    options = {k: v for k, v in vars(args).items() if k not in {"verb", "matrix", "platform", "archs", "backend", "version", "versions"}}
    invocation = Invocation(
        verb=args.verb,
        matrix=matrix,
        selection=selection,
        jobs=jobs,
        wheels=plan_wheels(matrix, jobs, tree),
        options=options,
        env=env,
        stdout=stdout or sys.stdout,
        tree=tree,
    )
    return (handlers or HANDLERS)[args.verb](invocation)


def main(argv: Sequence[str] | None = None, *, env: Mapping[str, str] | None = None) -> int:
    """Console entry point: prints a PipelineError and returns its exit code (`env`: os.environ when None).

    SIGTERM is handled like Ctrl-C (SIGINT): the running jobs are cancelled, their processes stopped
    and their partial work removed (local.run_step); then bnb-ci exits with 128 + the signal number.
    """
    received: list[int] = []

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        sigint = signal.getsignal(signal.SIGINT)  # asyncio's while jobs run: it cancels them
        if callable(sigint):
            sigint(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        return main_inner(argv, env=env)
    except (PipelineError, StepError) as e:  # StepError: a step's check run in this process (bnb_build)
        print(f"bnb-ci: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        sig = signal.SIGTERM if received else signal.SIGINT
        print(
            f"bnb-ci: interrupted ({signal.Signals(sig).name}): running jobs were stopped and their partial work removed; "
            "the output directory holds only complete files. Run the same command again to go on.",
            file=sys.stderr,
        )
        return INTERRUPTED_EXIT[sig]
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
