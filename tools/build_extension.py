"""Build the Blender extension zip with Blender's own extension tool, then validate it.

    python tools/build_extension.py [--output-dir dist]

Writes ``dist/powers_of_ten-<version>.zip`` and prints its path. Uses ``blender_ext.py`` from
the ``bpy`` module of this Python (no Blender binary needed) or, failing that, ``blender
--command extension`` from PATH.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def find_blender_ext() -> list[str]:
    """Command prefix that runs Blender's extension CLI (``... build`` / ``... validate``)."""
    spec = importlib.util.find_spec("bpy")  # locate without importing (importing is slow)
    if spec is not None and spec.submodule_search_locations:
        for pkg in spec.submodule_search_locations:
            hits = sorted(Path(pkg).glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
            if hits:
                return [sys.executable, str(hits[-1])]
    blender = shutil.which("blender")
    if blender:
        return [blender, "--factory-startup", "--command", "extension"]
    raise SystemExit("error: neither the bpy module nor a 'blender' executable was found")


def manifest_version(source: Path = ROOT) -> tuple[str, str]:
    with open(source / "blender_manifest.toml", "rb") as f:
        data = tomllib.load(f)
    return data["id"], data["version"]


def build(output_dir: Path = ROOT / "dist", source: Path = ROOT) -> Path:
    """Build and validate the zip; return its path. Raises SystemExit with the tool's output."""
    ext_id, version = manifest_version(source)
    output_dir.mkdir(parents=True, exist_ok=True)
    zip_path = output_dir / f"{ext_id}-{version}.zip"
    zip_path.unlink(missing_ok=True)
    cli = find_blender_ext()
    for args in (["build", "--source-dir", str(source), "--output-filepath", str(zip_path)],
                 ["validate", str(zip_path)]):
        proc = subprocess.run(cli + args, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"error: extension {args[0]} failed:\n{proc.stdout}{proc.stderr}")
    return zip_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=ROOT / "dist")
    args = parser.parse_args(argv)
    print(build(args.output_dir.resolve()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
