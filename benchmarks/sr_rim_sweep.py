"""Sweep of the SR blending's rim (issue 25): which coarser guesses count along a layer's border.

The synthetic 4x SR benchmark (benchmarks/sr_detail.py: 64 px base, N = 5, SDE DPM-Solver++ 20,
the same seeds and random draws) with the SR stage's blending replaced by a variant of
``zoom_stack.blend``'s SR rule. A variant is ``depth,weight,feather[,top,top_rim]``:

* ``depth``: the coarsest observation whose invented bands count in the rim (1 = the next
  coarser level only, shipped; 9 = every coarser level, the rule before issue 25);
* ``weight``, ``feather``: the rim's weight at the border and its width in band pixels;
* ``top``, ``top_rim`` (optional, default 1, 0): the coarser level's first stage-I band (partly
  its upscaler's guess) counts with weight ``top`` inside the layer and 1 in a rim of
  ``top_rim`` band pixels (tried first for issue 25; not shipped).

Prints JSON: per variant the kept energy of bands 1-3 (vs independent SR) and the seam ratio,
with standard errors over seeds. Runs on the reference blend (no stack operators).

    OMP_NUM_THREADS=1 python benchmarks/sr_rim_sweep.py --zoom 4 [--continued] \
        --variants "9,2,1;1,2,1;1,3,1"
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from diffusers import DDPMScheduler  # noqa: E402

from core.backends.schedulers import make_scheduler  # noqa: E402
from core.zoom import sampler, zoom_stack  # noqa: E402
from core.zoom.analytic import (GaussianFieldDenoiser, SuperResolutionDenoiser,  # noqa: E402
                                band_energies, seam_ratio)
from core.zoom.geometry import check_footprints, pyramid_depth  # noqa: E402
from core.zoom.zoom_stack import _rim, collapse_pyramid, laplacian_pyramid, observe  # noqa: E402


def variant_blend(depth: int, weight: float, feather: int, top: float = 1.0, top_rim: int = 0):
    """``blend`` for the SR methods (centred, no loop) with the given rim rule."""
    def blend(images, zoom, method="laplacian", footprints=None, loop=False, **kw):
        if method not in zoom_stack.SR_BLEND:
            return zoom_stack.blend(images, zoom, method, footprints=footprints, loop=loop, **kw)
        s = zoom_stack.SR_BLEND[method]
        n, _, h, w = images.shape
        fps = check_footprints(footprints, h, w, zoom, n, loop)
        levels = pyramid_depth(h, w, zoom)
        sums = laplacian_pyramid(images, zoom, levels)
        counts = [torch.ones(n, 1, 1, 1, dtype=images.dtype) for _ in sums]
        for d in range(1, min(n - 1, levels) + 1):
            seen = observe(images, zoom, d, fps, loop)
            if seen is None:
                continue
            observed, aligned = seen
            for k, band in enumerate(laplacian_pyramid(observed, zoom, levels - d), start=d):
                bw = aligned
                if k - d < s:
                    if d > depth:
                        continue
                    bw = aligned * weight * _rim(*band.shape[-2:], feather, band)
                elif k - d == s and (top != 1 or top_rim):
                    rim = _rim(*band.shape[-2:], top_rim, band) if top_rim else band.new_zeros(())
                    bw = aligned * torch.clamp(rim, min=top)
                pad = [torch.zeros_like(band[:1]).expand(d, *band.shape[1:])]
                sums[k] = sums[k] + torch.cat(pad + [bw * band])
                counts[k] = counts[k] + torch.cat([torch.zeros_like(bw[:1]).expand(d, *bw.shape[1:]), bw])
        return collapse_pyramid([a / c for a, c in zip(sums, counts)])
    return blend


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=24)
    ap.add_argument("--zoom", type=int, default=4)
    ap.add_argument("--continued", action="store_true")
    ap.add_argument("--variants", default="9,2,1;1,3,1")
    args = ap.parse_args()
    sched = make_scheduler("sde-dpmsolver++", dict(DDPMScheduler(num_train_timesteps=1000,
                                                                 clip_sample=False).config))
    p, n, size, steps = args.zoom, 5, 64, 20
    variants = [tuple(float(v) for v in spec.split(",")) for spec in args.variants.split(";")]
    sampler.USE_STACK_OPERATORS = False
    rows = {v: [] for v in variants}
    ref = []
    start = time.perf_counter()
    kw = dict(num_levels=n, zoom=p, num_inference_steps=steps)
    for seed in range(args.seeds):  # the random draws of benchmarks/sr_detail.py
        g = torch.Generator().manual_seed(seed)
        base = sampler.sample_zoom_stack(GaussianFieldDenoiser((3, size, size), sched.alphas_cumprod),
                                         sched, shape=(3, size, size), generator=g, **kw).images
        sr = SuperResolutionDenoiser(base, 4, sched.alphas_cumprod, continued=args.continued)
        shape = (3, size * 4, size * 4)
        indep = sampler.sample_zoom_stack(sr, sched, shape=shape, generator=g, mode="independent",
                                          **kw).images
        ref.append(band_energies(indep, p, 3))
        sampler.sample_zoom_stack(sr, sched, shape=shape, generator=g, **kw)  # sr_detail's plain run
        state = g.get_state()
        for v in variants:
            g.set_state(state)
            sampler.blend = variant_blend(int(v[0]), v[1], int(v[2]), *v[3:4], *(int(x) for x in v[4:5]))
            try:
                out = sampler.sample_zoom_stack(sr, sched, shape=shape, generator=g,
                                                blending=zoom_stack.sr_blend_method(p), **kw).images
            finally:
                sampler.blend = zoom_stack.blend
            rows[v].append((band_energies(out, p, 3), seam_ratio(out, p)))
    mean_ref = [statistics.fmean(r[k] for r in ref) for k in range(3)]
    table = {}
    for v, runs in rows.items():
        row = {f"energy_band_{k + 1}": round(statistics.fmean(r[0][k] for r in runs) / mean_ref[k], 4)
               for k in range(3)}
        seams = [r[1] for r in runs]
        row["seam_ratio"] = round(statistics.fmean(seams), 4)
        if len(runs) > 1:
            row["seam_se"] = round(statistics.stdev(seams) / len(seams) ** 0.5, 4)
            b3 = [r[0][2] / mean_ref[2] for r in runs]
            row["band_3_se"] = round(statistics.stdev(b3) / len(b3) ** 0.5, 4)
        table[",".join(f"{x:g}" for x in v)] = row
    print(json.dumps({"zoom": p, "continued_detail": args.continued, "seeds": args.seeds,
                      "scheduler": "sde-dpmsolver++ 20", "seconds": round(time.perf_counter() - start),
                      "variants": "depth,weight,feather[,top,top_rim]", "results": table}, indent=1))


if __name__ == "__main__":
    main()
