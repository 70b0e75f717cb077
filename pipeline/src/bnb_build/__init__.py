"""Step programs of the build-and-release pipeline.

Each step is a small program run as ``python3 -m bnb_build <step>``, the same way inside a build
container and on the host. The package uses the Python standard library only (Python >= 3.8), so it
runs in any build image that has a bare Python 3.

Steps (one module each, each with ``main(argv=None) -> int``):

- ``native``  configure and build one native library with CMake, write its build-info.json
- ``wheel``   pack the libraries of one platform into a wheel with the project's PEP 517 backend
- ``audit``   check wheels against what the plan expects, write a Markdown report
- ``pre-release`` (module ``release``)  rename wheels to the stable pre-release version, write the
  release body and manifest
- ``github-release``  replace the rolling GitHub pre-release with that folder (REST API)
- ``publish``  verify wheels, then upload them with twine (``--skip-existing``)

Helper modules: ``inputs`` (source patterns and input digests, shared with the orchestration side),
``elf`` (a small ELF reader), ``platforms`` (platform ids and library names), ``process`` (running
external tools), ``files`` (atomic writes), ``errors`` (error classes with exit codes).
``release`` also holds the wheel-set checks shared with ``publish``.
"""
