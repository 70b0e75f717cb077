"""Benchmark: size of each library and wheel of a build-all output, compressed and not.

    python benchmarks/wheel_size.py [DIST]     (default: bnb-out, the output of `bnb-ci build-all`)

Per library (DIST/libs/<os>/<arch>/*): its size and its size deflated at level 9 (what a wheel
stores); per wheel (DIST/wheels/*.whl): its file size and the sum of its entries uncompressed.
"""

from __future__ import annotations

import sys
import zipfile
import zlib
from pathlib import Path

from _common import emit, machine


def main() -> int:
    dist = Path(sys.argv[1] if len(sys.argv) > 1 else "bnb-out")
    libraries = sorted(p for p in (dist / "libs").rglob("libbitsandbytes_*") if p.is_file() and not p.name.endswith(".build-info.json"))
    wheels = sorted((dist / "wheels").glob("*.whl"))
    if not libraries and not wheels:
        raise SystemExit(f"{dist} holds no libs/ or wheels/: run `bnb-ci build-all --out {dist}` first")
    result: dict[str, object] = {"dist": str(dist), "machine": machine(), "libraries": [], "wheels": []}
    lines = [f"wheel_size ({dist}):"]
    for lib in libraries:
        data = lib.read_bytes()
        packed = len(zlib.compress(data, 9))
        result["libraries"].append({"path": lib.relative_to(dist).as_posix(), "bytes": len(data), "deflated_bytes": packed})  # type: ignore[union-attr]
        lines.append(f"  {lib.relative_to(dist).as_posix():55} {len(data) / 2**20:8.2f} MiB, deflated {packed / 2**20:8.2f} MiB ({packed / len(data):.0%})")
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as z:
            unpacked = sum(i.file_size for i in z.infolist())
        size = wheel.stat().st_size
        result["wheels"].append({"name": wheel.name, "bytes": size, "uncompressed_bytes": unpacked})  # type: ignore[union-attr]
        lines.append(f"  {wheel.name:55} {size / 2**20:8.2f} MiB, unpacked {unpacked / 2**20:8.2f} MiB ({size / unpacked:.0%})")
    emit("wheel_size", result, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
