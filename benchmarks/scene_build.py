"""Time building the layer-plane scene of a 16-level 512x512 stack in headless Blender.

    .venv/bin/python benchmarks/scene_build.py [--levels 16] [--size 512] [--zoom 2]

Prints JSON: seconds to write the stack (core), to build the scene (bpy: load + pack the
PNGs, planes, materials, drivers, zoom_level keys), to rebuild it, and to render one frame
with Cycles.
Blender runs in a subprocess that imports the repository as the package ``powers_of_ten``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SCRIPT = r'''
import json, sys, time
sys.path.insert(0, {pkg!r})
import bpy
from powers_of_ten.p10_blender.rig import operators as scene_ops, scene_build
scene = bpy.context.scene
t = time.perf_counter()
coll = scene_ops.build_and_animate(scene, {stack!r})   # the rig in a scene of its own
build = time.perf_counter() - t
t = time.perf_counter()
coll = scene_ops.build_and_animate(scene, {stack!r})
rebuild = time.perf_counter() - t
rig = scene_build.build_scene(coll)
scene_build.set_quality(rig, "CYCLES", {samples})
rig.frame_set(rig.frame_start + 24)
rig.render.filepath = {out!r}
t = time.perf_counter()
bpy.ops.render.render(write_still=True, scene=rig.name)
render = time.perf_counter() - t
print("P10_BENCH" + json.dumps(dict(build_s=build, rebuild_s=rebuild, render_frame_s=render,
                                    frames=rig.frame_end - rig.frame_start + 1)))
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", type=int, default=16)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--zoom", type=int, default=2)
    ap.add_argument("--samples", type=int, default=16)
    args = ap.parse_args()

    from core.stack.stack_io import ZoomStack

    with tempfile.TemporaryDirectory(prefix="p10_bench_") as tmp:
        tmp = Path(tmp)
        rng = np.random.default_rng(0)
        layers = rng.random((args.levels, args.size, args.size, 3), dtype=np.float32)
        t = time.perf_counter()
        ZoomStack(layers, {"zoom": args.zoom, "prompts": ["x"] * args.levels}).save(tmp / "s")
        write = time.perf_counter() - t
        (tmp / "pkg").mkdir()
        os.symlink(ROOT, tmp / "pkg" / "powers_of_ten")
        script = tmp / "bench.py"
        script.write_text(SCRIPT.format(pkg=str(tmp / "pkg"), stack=str(tmp / "s"),
                                        samples=args.samples, out=str(tmp / "frame.png")))
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
        total = time.perf_counter() - t
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("P10_BENCH")]
        if proc.returncode or not line:
            sys.exit(f"benchmark failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        result = json.loads(line[-1][len("P10_BENCH"):])
    result.update(levels=args.levels, size=args.size, zoom=args.zoom, samples=args.samples,
                  write_stack_s=write, blender_process_s=total, engine="CYCLES (CPU)",
                  cpu_count=os.cpu_count())
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v
                      for k, v in result.items()}, indent=2))


if __name__ == "__main__":
    main()
