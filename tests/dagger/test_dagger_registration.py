"""The module as the Dagger runtime loads it: entry point, functions, arguments, defaults, DefaultPath,
Ignore; and the SDK's own registration code run with query execution replaced by a recorder.

Each check runs in a fresh interpreter, because the SDK reads DAGGER_MAIN_OBJECT when dagger is first
imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]

LOAD = """
import json, sys
sys.path.insert(0, {src!r})
from dagger.mod.cli import get_entry_point
from dagger.mod._converter import to_typedef
cls = get_entry_point().load()
mod = cls.__dagger_module__
out = {{"main": mod.is_main(cls.__dagger_object_type__), "name": cls.__name__, "doc": cls.__doc__, "functions": {{}}}}
for name, obj in mod._objects.items():
    for api, fn in obj.functions.items():
        to_typedef(fn.return_type)
        params = {{}}
        for p in fn.parameters.values():
            to_typedef(p.resolved_type)
            params[p.name] = {{"type": repr(p.resolved_type), "optional": p.is_optional, "default": p.default_value,
                              "default_path": p.default_path, "ignore": p.ignore, "doc": p.doc}}
        out["functions"][api] = {{"returns": repr(fn.return_type), "cache": fn.cache_policy, "doc": fn.doc, "args": params}}
print(json.dumps(out))
"""

TYPEDEFS = """
import json, sys, anyio
sys.path.insert(0, {src!r})
import dagger.client._core as core
recorded = []

def render(ctx):
    out = ""
    for f in reversed(list(ctx.selections)):
        args = ", ".join(k + ": " + (render(v._ctx) if hasattr(v, "_ctx") else json.dumps(getattr(v, "name", v))) for k, v in f.args.items())
        out = f.name + ("(" + args + ")" if args else "") + (" {{ " + out + " }}" if out else "")
    return out

async def execute(self, return_type=None):
    recorded.append(render(self))
    return "id-" + str(len(recorded))

core.Context.execute = execute
from dagger.mod.cli import get_entry_point
mod = get_entry_point().load().__dagger_module__
result = anyio.run(mod._typedefs)
print(json.dumps({{"result": result, "queries": recorded}}))
"""


def run_python(code: str) -> str:
    env = {**os.environ, "DAGGER_MAIN_OBJECT": "BitsandbytesCi", "DAGGER_DEFAULT_PYTHON_PACKAGE": "bitsandbytes_ci"}
    proc = subprocess.run([sys.executable, "-c", code.format(src=str(REPO / "pipeline" / "src"))],
                          capture_output=True, text=True, env=env, timeout=300, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def module() -> dict[str, Any]:
    return json.loads(run_python(LOAD))


SOURCE_IGNORED = [".git", "**/.venv", "**/__pycache__", "build", "build-*", "dist", ".bnb-cache", ".ccache", "pipeline/sdk",
                  "venv", "**/.tox", "libs", "dist-windows"]  # fmt: skip

EXPECTED: dict[str, list[str]] = {
    "plan": ["source", "backend", "version", "platform", "archs", "format"],
    "build_cpu": ["source", "platform", "ccache", "jobs"],
    "build_cuda": ["source", "cuda_version", "platform", "archs", "ccache", "jobs"],
    "build_rocm": ["source", "rocm_version", "platform", "archs", "ccache", "jobs"],
    "build_xpu": ["source", "oneapi_version", "platform", "ccache", "jobs"],
    "build_wheels": ["libs", "source", "platform", "source_date_epoch"],
    "test_wheels": ["wheels", "source", "keep_going"],
    "audit_wheels": ["wheels", "source", "platform", "archs", "keep_going"],
    "build_all": ["source", "platform", "backend", "version", "archs", "ccache", "keep_going", "source_date_epoch", "jobs", "libs"],
    "verify_reproducible": ["source", "platform", "backend", "version", "archs", "source_date_epoch", "keep_going", "jobs"],
    "lock_images": [],
    "pre_release": ["wheels", "token", "repository", "commit", "source", "tag", "platform", "backend", "version", "archs"],
    "publish": ["wheels", "source", "token", "oidc_request_url", "oidc_request_token", "repository_url", "platform", "backend", "version", "archs"],
}

DAGGER_CALL_FLAGS = {"json": "j", "output": "o", "mod": "m", "progress": None, "debug": "d", "silent": "s", "verbose": "v",
                     "quiet": "q", "interactive": "i", "web": "w", "help": "h"}  # fmt: skip
"""The flags `dagger call` defines itself on every function subcommand (long name -> one-letter form;
dagger-python.md, "Engine rules"): an argument under one of these names makes the CLI fail with
"flag already exists" as soon as any flag follows the function name."""


def cli_flag(api_name: str) -> str:
    """The flag `dagger call` gives an argument: the engine's lowerCamel name in kebab case."""
    camel = re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), api_name)
    return re.sub(r"(?<=[a-z0-9])([A-Z])", lambda m: "-" + m.group(1).lower(), camel)


def test_entry_point_finds_the_main_object(module: dict[str, Any]) -> None:
    assert module["main"] is True and module["name"] == "BitsandbytesCi"
    dagger_json = json.loads((REPO / "dagger.json").read_text())
    assert dagger_json["name"] == "bitsandbytes-ci" and dagger_json["source"] == "pipeline"
    assert dagger_json["sdk"] == {"source": "python"} and dagger_json["engineVersion"] == "v0.21.11"


def test_functions_and_argument_names(module: dict[str, Any]) -> None:
    functions = {name: list(fn["args"]) for name, fn in module["functions"].items() if name}
    assert functions == EXPECTED
    for name, fn in module["functions"].items():
        if name:
            assert fn["doc"], f"{name} has no description"
            assert all(arg["doc"] for arg in fn["args"].values() if arg["default_path"] is None), name


def test_no_argument_takes_a_flag_of_dagger_call(module: dict[str, Any]) -> None:
    reserved = set(DAGGER_CALL_FLAGS) | {short for short in DAGGER_CALL_FLAGS.values() if short}
    assert cli_flag("as_json") == "as-json" and cli_flag("source_date_epoch") == "source-date-epoch"
    clashes = [(fn or "<constructor>", name) for fn, spec in module["functions"].items() for name in spec["args"] if cli_flag(name) in reserved]
    assert clashes == [], f"arguments named like a `dagger call` flag: {clashes}"


def test_functions_that_can_return_failures_are_never_cached_across_sessions(module: dict[str, Any]) -> None:
    """A --keep-going result (failures.md inside) served again from a persistent engine would hide a fix
    or repeat a failure that is gone: such functions are cached per session at most."""
    fns = module["functions"]
    keep_going = {name for name, fn in fns.items() if "keep_going" in fn["args"]}
    assert keep_going == {"test_wheels", "audit_wheels", "build_all", "verify_reproducible"}
    assert {name: fns[name]["cache"] for name in keep_going} == {
        "test_wheels": "session", "audit_wheels": "session", "build_all": "session", "verify_reproducible": "never",
    }  # fmt: skip


def test_source_is_the_repository_minus_ignored_paths(module: dict[str, Any]) -> None:
    for name, fn in module["functions"].items():
        if "source" in fn["args"]:
            arg = fn["args"]["source"]
            assert arg["type"] == "<class 'dagger.Directory'>" and arg["default_path"] == "/" and arg["optional"], name
            assert set(SOURCE_IGNORED) <= set(arg["ignore"]), name
            assert not any(p.startswith("!") for p in arg["ignore"]), "pipeline/src/bnb_build must stay uploadable"


def test_types_defaults_and_caching(module: dict[str, Any]) -> None:
    fns = module["functions"]
    assert {n: fns[n]["returns"] for n in fns if n} == {
        "plan": "<class 'str'>", "lock_images": "<class 'dagger.File'>", "audit_wheels": "<class 'dagger.File'>", "test_wheels": "<class 'dagger.File'>",
        "publish": "<class 'str'>", "verify_reproducible": "<class 'str'>",
        **{n: "<class 'dagger.Directory'>" for n in ("build_cpu", "build_cuda", "build_rocm", "build_xpu", "build_wheels", "build_all", "pre_release")},
    }  # fmt: skip
    assert {n for n in fns if fns[n]["cache"] == "never"} == {"lock_images", "pre_release", "publish", "verify_reproducible"}
    assert {n for n in fns if fns[n]["cache"] == "session"} == {"test_wheels", "audit_wheels", "build_all"}
    all_args = fns["build_all"]["args"]
    assert all_args["platform"]["type"] == "list[str] | None" and all_args["platform"]["default"] == "null"
    assert all_args["keep_going"]["default"] == "false" and all_args["archs"]["default"] == '""'
    assert all_args["ccache"]["type"] == "dagger.Directory | None"
    # unset (null) and empty differ: an empty version is refused, never read as every version
    assert fns["build_cuda"]["args"]["cuda_version"]["default"] == "null" and fns["build_cuda"]["args"]["cuda_version"]["type"] == "str | None"
    assert fns["publish"]["args"]["token"]["type"] == "dagger.Secret | None"
    assert fns["publish"]["args"]["oidc_request_url"]["type"] == "dagger.Secret | None"
    assert fns["pre_release"]["args"]["token"] == {**fns["pre_release"]["args"]["token"], "type": "<class 'dagger.Secret'>", "optional": False}
    assert fns["pre_release"]["args"]["tag"]["default"] == '"continuous-release_main"'


def test_release_functions(module: dict[str, Any]) -> None:
    """pre-release and publish: required and optional secrets, the plan selection of build-all, nothing else."""
    pre, publish = module["functions"]["pre_release"]["args"], module["functions"]["publish"]["args"]
    for name in ("wheels", "repository", "commit"):
        assert not pre[name]["optional"], name
    assert pre["wheels"]["type"] == publish["wheels"]["type"] == "<class 'dagger.Directory'>"
    assert pre["repository"]["type"] == pre["commit"]["type"] == "<class 'str'>"
    for name in ("token", "oidc_request_url", "oidc_request_token"):
        assert publish[name]["type"] == "dagger.Secret | None" and publish[name]["optional"] and publish[name]["default"] == "null", name
    assert publish["repository_url"]["default"] == '"https://upload.pypi.org/legacy/"'
    assert "skip_existing" not in publish, "the step always skips files the index already has"
    selection = module["functions"]["build_all"]["args"]
    for args in (pre, publish):
        for name in ("platform", "backend", "version", "archs"):
            assert args[name]["type"] == selection[name]["type"] and args[name]["default"] == selection[name]["default"], name


def test_sdk_registration_dry_run() -> None:
    """The SDK's real `_typedefs` (what `dagger functions` gets) with a recording stand-in for the engine."""
    run = json.loads(run_python(TYPEDEFS))
    assert run["result"] == f"id-{len(run['queries'])}"
    text = "\n".join(run["queries"])
    assert text.count("withFunction(") == len(EXPECTED) and "withConstructor(" in text
    for name, args in EXPECTED.items():
        assert f'function(name: "{name}"' in text, name
        for arg in args:
            assert f'withArg(name: "{arg}"' in text, (name, arg)
    assert 'defaultPath: "/"' in text and '".ccache"' in text and '"pipeline/sdk"' in text
    assert text.count('withCachePolicy(policy: \"Never\")') == 4  # lock_images, pre_release, publish, verify_reproducible
    assert text.count('withCachePolicy(policy: \"PerSession\")') == 3  # test_wheels, audit_wheels, build_all


def test_the_main_command_calls_build_all_with_flags_it_registers(module: dict[str, Any]) -> None:
    """`./bnb build` (bitsandbytes_ci.host.launch) runs `dagger call build-all ... export --path dist`:
    every flag it passes before `export` names an argument of build_all, and the user's selection
    flags, given in bnb-ci's spelling, do too."""
    sys.path.insert(0, str(REPO / "pipeline" / "src"))
    from bitsandbytes_ci.host.launch import DIST, dagger_call

    user = ["--platform", "linux-x86_64", "--backend", "cpu", "--version", "13.0", "--archs", "75", "--jobs", "2"]
    call = dagger_call(user)
    export = call.index("export")
    assert call[:2] == ["call", "build-all"] and call[export + 1 : export + 3] == ["--path", DIST]
    flags = {a[2:] for a in call[2:export] if a.startswith("--")}
    registered = {cli_flag(name) for name in module["functions"]["build_all"]["args"]}
    assert flags <= registered, flags - registered
    assert "keep-going" in flags
    import inspect

    import dagger

    export_flags = {a[2:] for a in call[export + 1 :] if a.startswith("--")}
    assert export_flags == {"path", "wipe"}, "the output folder is replaced, so nothing of an earlier run stays"
    assert export_flags <= {cli_flag(name) for name in inspect.signature(dagger.Directory.export).parameters if name != "self"}
