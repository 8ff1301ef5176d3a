"""Where the SR stage's seam lies: the neighbour-difference profile across the footprint border.

For the synthetic 4x SR benchmark (benchmarks/sr_detail.py; joint SR with SR blending, p = 4,
N = 5, SDE DPM-Solver++ 20) under the default and the ``--continued`` analytic SR model, and for
the stage-I base stack: the energy of neighbour differences at each offset from the border of
the finer level's footprint (0 = across it, +k = k pixels inside, -k outside) ÷ the image's
mean neighbour-difference energy. Prints JSON (docs/backends.md, "Where the p = 4 seam comes
from").

    nice -n 10 python benchmarks/sr_seam_profile.py SEEDS
"""
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
torch.set_num_threads(1)

from diffusers import DDPMScheduler  # noqa: E402

from core.backends.schedulers import make_scheduler  # noqa: E402
from core.zoom.analytic import GaussianFieldDenoiser, SuperResolutionDenoiser  # noqa: E402
from core.zoom.geometry import centre_box  # noqa: E402
from core.zoom.sampler import sample_zoom_stack  # noqa: E402
from core.zoom.zoom_stack import sr_blend_method  # noqa: E402



def profile(images, p, offsets=range(-4, 5)):
    x = images[:-1]
    top, left, h, w = centre_box(x.shape[-2], x.shape[-1], p)
    dy = (x[..., 1:, :] - x[..., :-1, :]).pow(2)
    dx = (x[..., :, 1:] - x[..., :, :-1]).pow(2)
    norm = (dy.mean() + dx.mean()) / 2
    out = {}
    for o in offsets:  # o = 0: across the border; o > 0: inside the footprint
        parts = [dy[..., top - 1 + o, left:left + w], dy[..., top + h - 1 - o, left:left + w],
                 dx[..., top:top + h, left - 1 + o], dx[..., top:top + h, left + w - 1 - o]]
        out[o] = float(torch.cat([q.flatten() for q in parts]).mean() / norm)
    return out


sched = make_scheduler("sde-dpmsolver++", dict(DDPMScheduler(num_train_timesteps=1000, clip_sample=False).config))
p, n, size, seeds = 4, 5, 64, int(sys.argv[1])
res = {}
for continued in (False, True):
    profs, stage1 = [], []
    for seed in range(seeds):
        g = torch.Generator().manual_seed(seed)
        base = sample_zoom_stack(GaussianFieldDenoiser((3, size, size), sched.alphas_cumprod), sched,
                                 num_levels=n, zoom=p, shape=(3, size, size), num_inference_steps=20, generator=g).images
        sr = SuperResolutionDenoiser(base, 4, sched.alphas_cumprod, continued=continued)
        out = sample_zoom_stack(sr, sched, num_levels=n, zoom=p, shape=(3, size * 4, size * 4),
                                num_inference_steps=20, generator=g, blending=sr_blend_method(p)).images
        profs.append(profile(out, p))
        stage1.append(profile(base, p))
    key = "continued" if continued else "default"
    res[key] = {"sr_stage": {o: round(statistics.fmean(q[o] for q in profs), 3) for o in profs[0]},
                "stage_1": {o: round(statistics.fmean(q[o] for q in stage1), 3) for o in stage1[0]}}
    print(key, json.dumps(res[key]), file=sys.stderr, flush=True)
print(json.dumps({"zoom": p, "levels": n, "seeds": seeds, "scheduler": "sde-dpmsolver++ 20",
                  "offsets": "0 = across the footprint border, > 0 inside, < 0 outside; neighbour-difference energy / the image mean", **res}, indent=1))
