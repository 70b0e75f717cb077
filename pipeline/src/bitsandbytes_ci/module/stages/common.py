"""What every stage shares: fixed paths, cache volumes, the step tools and the source subset.

Layout inside every step container (docs/contracts.md: step programs run in the job's work directory
with relative paths, so the command line is the host's byte for byte):

    /work            working directory: src/ (the job's source subset), out/, libs/, wheels/ ...
    /opt/bnb/steps   PYTHONPATH: the bnb_build package, from the module's own source (never from the tree
                     being built, which may be another project's)
    /opt/bnb/venv    build images only: a venv of the image's own Python (`step_python` of the family,
                     3.8 or newer) with the pinned tools, first on PATH, so `python3` is that interpreter
    /cache/...       cache volumes (ccache per job id, uv/pip wheels, dnf/apt packages)

Tool versions are never written here: `pipeline/step-requirements.txt` pins them and is used as a
constraints file, so a stage names only *which* tools it needs.

Cache keys: the engine keys a step by the digests of everything it receives. `Container.with_directory`
keeps the digest of the whole Directory it copies from, even with `include=`; only `Directory.filter`
and `Directory.directory` compute the digest of the subset. So every stage receives its part of the
source as `source.filter(include=...)` (`filtered`), and an edit elsewhere (README.md, tests/, the
orchestration package) re-runs nothing that does not read it.

Only a Directory the engine content-hashed keeps a digest through `filter`/`directory`: the
contextual source (`DefaultPath`) has one, `dag.current_module().source()` has none (the engine
builds it with `withDirectory`, which sets none, so its key follows every edit of the module's
folder, main.py included). The step programs and the pins are therefore taken file by file with
`Directory.file`, which the engine always content-hashes (docs/engine-rules.md).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from contextvars import ContextVar

import dagger
from dagger import dag

WORK = "/work"
TOOLS = "/opt/bnb"
STEPS_PATH = f"{TOOLS}/steps"
VENV = f"{TOOLS}/venv"
UV = f"{TOOLS}/bin/uv"
REQUIREMENTS = f"{TOOLS}/step-requirements.txt"

STEPS_SOURCE = "src/bnb_build"
"""The step programs (with the pipeline's CMake files) inside the module's source folder (pipeline/)."""
REQUIREMENTS_SOURCE = "step-requirements.txt"
"""The one file that pins the step tools, inside the module's source folder."""

CCACHE_MOUNT = "/cache/ccache"
CCACHE_MAXSIZE = "2G"
"""Per job: bounds what a snapshot (the `ccache/` folder of a result) carries between CI runs."""

SOURCE_IGNORE = [
    ".git",
    "**/.venv",
    "**/__pycache__",
    "**/*.pyc",
    "**/.pytest_cache",
    ".cuda-wheels",
    "build",
    "build-*",
    "_skbuild",
    "dist",
    "out",
    "bnb-out",
    "**/*.egg-info",
    ".ci/node",
    "**/.pyright",
    "**/.mypy_cache",
    "**/.ruff_cache",
    ".bnb-cache",
    ".ccache",
    "bitsandbytes/libbitsandbytes_*",
    "pipeline/sdk",
    "pipeline/.env",
    "venv",
    "**/.tox",
    "libs",
    "dist-windows",
]
"""What the source Directory never uploads: VCS data, environments, build outputs, caches. The engine
applies these patterns only (a `DefaultPath` upload reads no .gitignore, docs/engine-rules.md): every
other file of the folder is uploaded, untracked ones included; no job copies more than its plan entry
names, so an untracked file changes no step's key unless a job's patterns select it."""

PIP_ENV = {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_ROOT_USER_ACTION": "ignore", "PYTHONDONTWRITEBYTECODE": "1"}
UV_ENV = {"UV_PYTHON_DOWNLOADS": "never", "UV_PYTHON_PREFERENCE": "only-system", "UV_LINK_MODE": "copy"}
"""uv uses the image's own Python and never downloads one."""
SETUP_ENV = {"DEBIAN_FRONTEND": "noninteractive"}
"""Package managers run without prompts (apt's tzdata and friends would otherwise wait for input)."""


TAIL_LINES = 30


def describe(error: dagger.QueryError) -> str:
    """A failure's text: the command and exit code of a failed exec plus its output tail."""
    if isinstance(error, dagger.ExecError):
        tail = "\n".join((error.stdout + "\n" + error.stderr).strip().splitlines()[-TAIL_LINES:])
        return f"`{' '.join(error.command)}` exited with {error.exit_code}\n\n```text\n{tail}\n```"
    return str(error)


def rerun_env() -> dict[str, str]:
    """A variable never used before: set on a step that reported a failure, it makes the engine run
    the step again instead of answering it from its cache (no function's `cache=` policy reaches the
    execs, docs/engine-rules.md); the step ignores it."""
    return {"BNB_RERUN": uuid.uuid4().hex}


# ---- cache volumes: the one helper -----------------------------------------------------------------


def platform_key(dagger_platform: str | None) -> str:
    """"linux/arm64" -> "linux-arm64"; None (the engine's own platform) -> "native"."""
    return dagger_platform.replace("/", "-") if dagger_platform else "native"


def ccache_key(job_id: str) -> str:
    """The ccache volume of one build job: `bnb-ccache-<job id>`."""
    return f"bnb-ccache-{job_id}"


def image_key(image: str) -> str:
    """A cache-volume-safe name of an image: `nvidia/cuda:12.8.1-devel-rockylinux8@sha256:...` ->
    `nvidia-cuda-12.8.1-devel-rockylinux8` (the digest is dropped: one volume per tag)."""
    name = image.split("@", 1)[0]
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in name)


def package_caches(image: str, dagger_platform: str | None) -> dict[str, str]:
    """System package caches (mount path -> volume key), one set per image and platform: used only
    while setup runs, locked (package managers do not share a cache safely), so containers of the
    same image wait for each other and containers of different images never do."""
    suffix = f"{image_key(image)}-{platform_key(dagger_platform)}"
    return {
        "/var/cache/dnf": f"bnb-dnf-{suffix}",
        "/var/cache/apt": f"bnb-apt-{suffix}",
        "/var/lib/apt/lists": f"bnb-apt-lists-{suffix}",
    }


TOOL_CACHES = {"/root/.cache/uv": "bnb-uv", "/root/.cache/pip": "bnb-pip"}
"""Python package caches (mount path -> volume key): wheel files are tagged per platform, so one volume serves all."""


def with_caches(
    ctr: dagger.Container,
    mounts: Mapping[str, str],
    *,
    sharing: dagger.CacheSharingMode = dagger.CacheSharingMode.SHARED,
    source: dagger.Directory | None = None,
) -> dagger.Container:
    """Mount a cache volume per (path -> key); `source` seeds a volume the first time it is created."""
    for path, key in mounts.items():
        ctr = ctr.with_mounted_cache(path, dag.cache_volume(key), source=source, sharing=sharing)
    return ctr


def without_caches(ctr: dagger.Container, mounts: Mapping[str, str]) -> dagger.Container:
    """Unmount what `with_caches` mounted, so later steps neither see nor lock those volumes."""
    for path in mounts:
        ctr = ctr.without_mount(path)
    return ctr


# ---- containers ------------------------------------------------------------------------------------


def base(image: str, dagger_platform: str | None) -> dagger.Container:
    """The job's image (with its digest when locked) for the job's platform."""
    platform = dagger.Platform(dagger_platform) if dagger_platform else None
    return dag.container(platform=platform).from_(image)


def with_env(ctr: dagger.Container, env: Mapping[str, str]) -> dagger.Container:
    for name, value in sorted(env.items()):
        ctr = ctr.with_env_variable(name, value)
    return ctr


def with_setup(ctr: dagger.Container, commands: Sequence[str], image: str, dagger_platform: str | None) -> dagger.Container:
    """Run the matrix's setup commands for the image, without prompts, with the image's package caches
    mounted, then unmount them."""
    if not commands:
        return ctr
    caches = package_caches(image, dagger_platform)
    ctr = with_caches(ctr, caches, sharing=dagger.CacheSharingMode.LOCKED)
    for name, value in SETUP_ENV.items():
        ctr = ctr.with_env_variable(name, value)
    for command in commands:
        ctr = ctr.with_exec(["sh", "-c", command])
    for name in SETUP_ENV:
        ctr = ctr.without_env_variable(name)
    return without_caches(ctr, caches)


def filtered(source: dagger.Directory, patterns: Sequence[str]) -> dagger.Directory:
    """The files of `source` that `patterns` select, as a Directory of their own (its digest covers
    them only: see the module notes on cache keys). Patterns are those of docs/contracts.md "Source
    patterns": exact root-relative files or `folder/**`, which mean the same to Dagger's filter."""
    return source.filter(include=list(patterns))


def pipeline_source() -> dagger.Directory:
    """The module's own source folder (pipeline/): the step programs and the pins travel with the
    pipeline, so it builds trees that have neither."""
    return dag.current_module().source()


def requirements_file() -> dagger.File:
    """step-requirements.txt, keyed by its own content (`Directory.file` is content-hashed)."""
    return pipeline_source().file(REQUIREMENTS_SOURCE)


_STEP_PROGRAMS: ContextVar[dagger.Directory | None] = ContextVar("bnb_step_programs", default=None)


def step_files(paths: Sequence[str]) -> list[str]:
    """The files of the bnb_build package among `paths` (a glob of the module's source), relative to
    it: no folders, no byte code."""
    prefix = f"{STEPS_SOURCE}/"
    found = [p.removeprefix(prefix) for p in paths if p.startswith(prefix) and not p.endswith("/")]
    return sorted(p for p in found if "__pycache__/" not in p and not p.endswith(".pyc"))


async def load_step_programs() -> dagger.Directory:
    """The bnb_build package as a Directory of content-hashed files (one `Directory.file` each), so a
    step's key follows the step programs only; every function calls this before it builds a
    container (`with_steps` uses it)."""
    source = pipeline_source()
    names = step_files(await source.glob(f"{STEPS_SOURCE}/**/*"))
    if "__main__.py" not in names:
        msg = f"the module's source has no {STEPS_SOURCE}/__main__.py: the step programs are missing"
        raise RuntimeError(msg)
    steps = dag.directory()
    for name in names:
        steps = steps.with_file(name, source.file(f"{STEPS_SOURCE}/{name}"))
    _STEP_PROGRAMS.set(steps)
    return steps


def step_programs() -> dagger.Directory:
    steps = _STEP_PROGRAMS.get()
    if steps is None:
        msg = "the step programs are not loaded: call `await load_step_programs()` first"
        raise RuntimeError(msg)
    return steps


def with_steps(ctr: dagger.Container) -> dagger.Container:
    """The bnb_build package of the module, importable as `python3 -m bnb_build`."""
    return (
        ctr.with_directory(f"{STEPS_PATH}/bnb_build", step_programs())
        .with_env_variable("PYTHONPATH", STEPS_PATH)
        .with_env_variable("PYTHONDONTWRITEBYTECODE", "1")
        .with_workdir(WORK)
    )


def uv_binary(dagger_platform: str | None, python_image: str) -> dagger.File:
    """The pinned uv, installed from PyPI in the matrix's Python image of the same platform."""
    ctr = base(python_image, dagger_platform).with_file(REQUIREMENTS, requirements_file())
    ctr = with_caches(with_env(ctr, PIP_ENV), {"/root/.cache/pip": TOOL_CACHES["/root/.cache/pip"]})
    return ctr.with_exec(["python3", "-m", "pip", "install", "-c", REQUIREMENTS, "uv"]).file("/usr/local/bin/uv")


def with_tools_venv(
    ctr: dagger.Container, tools: Sequence[str], *, step_python: str, dagger_platform: str | None, python_image: str
) -> dagger.Container:
    """A venv of the image's own `step_python` holding `tools` (versions from step-requirements.txt),
    first on PATH. uv creates it (no ensurepip or python3-venv needed in the image) and never
    downloads an interpreter; its wheel cache is a volume."""
    uv_cache = {"/root/.cache/uv": TOOL_CACHES["/root/.cache/uv"]}
    ctr = ctr.with_file(UV, uv_binary(dagger_platform, python_image))
    ctr = with_env(ctr.with_file(REQUIREMENTS, requirements_file()), UV_ENV)
    ctr = with_caches(ctr, uv_cache)
    ctr = ctr.with_exec([UV, "venv", "--python", step_python, VENV])
    ctr = ctr.with_exec([UV, "pip", "install", "--python", f"{VENV}/bin/python", "-c", REQUIREMENTS, *tools])
    ctr = without_caches(ctr, uv_cache)
    return ctr.with_env_variable("PATH", f"{VENV}/bin:${{PATH}}", expand=True)


def with_image_tools(ctr: dagger.Container, tools: Sequence[str]) -> dagger.Container:
    """`tools` (versions from step-requirements.txt) installed with the image's own python3 and pip."""
    pip_cache = {"/root/.cache/pip": TOOL_CACHES["/root/.cache/pip"]}
    ctr = with_caches(with_env(ctr, PIP_ENV).with_file(REQUIREMENTS, requirements_file()), pip_cache)
    if tools:
        ctr = ctr.with_exec(["python3", "-m", "pip", "install", "-c", REQUIREMENTS, *tools])
    return without_caches(ctr, pip_cache)


def source_subset(ctr: dagger.Container, source: dagger.Directory, patterns: Sequence[str], path: str = "src") -> dagger.Container:
    """Copy only the files `patterns` select to `<work>/<path>` (a `filtered`, so the step's cache
    key covers those files only)."""
    return ctr.with_directory(f"{WORK}/{path}", filtered(source, patterns))
