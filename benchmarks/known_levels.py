"""Known levels: what they cost. Prints JSON; every scenario runs in its own subprocess so that
peak memories do not mix (torch.cuda.max_memory_allocated on GPU; on CPU the rise of the
process's peak RSS over its value once the model is loaded).

    python benchmarks/known_levels.py extend   [--device cpu] [--size 256] [--steps 10]
    python benchmarks/known_levels.py guidance [--device cpu] [--unet tiny|sd15] [--levels 2]
    python benchmarks/known_levels.py rates    [--seeds 24] [--priors independent,deep]
                                               [--configs 4:4:64] [--cases out] [--aligned-only]
                                               [--no-chain] [--known-step 1]

* extend: a 24-level extension of a 4-level stack in windows of 4 (overlap 2) on the tiny
  random-weight SD of tests/tiny_models.py, beside a 4-level and a 24-level generate: the
  extension's peak is the window's, not the depth's.
* guidance: seconds and peak memory of one sampling step with no known level, with a known
  finest level and the photo loss, and with reconstruction guidance (forward with autograd +
  one backward through the UNet). ``--unet sd15``: SD 1.5's UNet with random weights, 64x64
  latents (slow on CPU: minutes per step).
* rates: success rates of known levels on the analytic mixture priors (in / out / middle,
  p = 2 and 4, auto and photo-loss-only guidance), with the standard error:
  docs/sampler.md "Known levels". ``--aligned-only``: the guidance loss without the
  area-sampled footprints below the pixel-aligned depths (the previous behaviour).
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
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def peak_rss_bytes() -> int:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r if sys.platform == "darwin" else r * 1024)


class Peak:
    """Peak memory of what runs after construction (see the module docstring)."""

    def __init__(self, device):
        import torch

        self.cuda = device.type == "cuda"
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.base = 0 if self.cuda else peak_rss_bytes()

    def bytes(self) -> int:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            return int(torch.cuda.max_memory_allocated())
        return peak_rss_bytes() - self.base


# ------------------------------------------------------------------------------- extend
def _extend_single(args) -> dict:
    import torch

    from core.backends.loading import ModelCache
    from core.extend import extend
    from core.generate import generate
    from core.settings import GenerateSettings
    from core.stack.stack_io import ZoomStack

    cache = ModelCache()
    backend = cache.get(args.model, device=args.device)
    # one tiny warm-up call so that one-off allocations are in the baseline, not the peak
    generate(GenerateSettings(prompts=["a"], model=args.model, steps=1, device=args.device,
                              width=64, height=64, scheduler="ddpm"), models=cache)
    peak = Peak(backend.device)
    start = time.perf_counter()
    prompts = [f"a view {i}" for i in range(args.levels)]
    if args.single == "extend":
        stack = ZoomStack.load(args.base)
        out = extend(stack, prompts, overlap=2, window=4, models=cache, device=args.device,
                     steps=args.steps)
        levels = out.layers.shape[0]
    else:
        out = generate(GenerateSettings(prompts=prompts, model=args.model, steps=args.steps,
                                        device=args.device, width=args.size, height=args.size,
                                        scheduler="ddpm"), models=cache)
        levels = out.layers.shape[0]
    return {"scenario": args.single, "levels": int(levels), "new_levels": args.levels,
            "seconds": round(time.perf_counter() - start, 2), "peak_bytes": peak.bytes(),
            "peak_kind": "cuda max_memory_allocated" if peak.cuda else "rise of peak RSS"}


def run_extend(args) -> dict:
    from tests.tiny_models import make_tiny_sd

    tmp = Path(tempfile.mkdtemp(prefix="p10_known_bench_"))
    model = make_tiny_sd(tmp / "tiny_sd")
    base = tmp / "base"
    subprocess.run([sys.executable, "-m", "core", "generate", *sum([["--prompt", f"base {i}"]
                    for i in range(4)], []), "--model", model, "--size", str(args.size),
                    "--steps", str(args.steps), "--device", args.device, "--out", str(base),
                    "--quiet"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    results = {}
    for name, levels in (("generate", 4), ("extend", 24), ("generate", 24)):
        key = f"{name}_{levels}"
        results[key] = _sub(["extend", "--single", name, "--levels", str(levels), "--model", model,
                             "--base", str(base)], args)
    return {"benchmark": "known_levels extend", "model": "tiny random SD (tests/tiny_models.py)",
            "size": args.size, "steps": args.steps, "window": 4, "overlap": 2,
            "results": results,
            "extend24_over_generate4_peak": round(results["extend_24"]["peak_bytes"]
                                                  / max(1, results["generate_4"]["peak_bytes"]), 3),
            "generate24_over_generate4_peak": round(results["generate_24"]["peak_bytes"]
                                                    / max(1, results["generate_4"]["peak_bytes"]), 3)}


# ----------------------------------------------------------------------------- guidance
TINY_UNET = dict(
    sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
    attention_head_dim=8, norm_num_groups=32,
)


def _guidance_single(args) -> dict:
    import torch
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from diffusers.utils import logging as dlog

    from core.backends.base import Conditioning
    from core.backends.loading import resolve_device
    from core.backends.stable_diffusion import StableDiffusionBackend
    from core.zoom.sampler import sample_zoom_stack

    dlog.set_verbosity_error()
    device = resolve_device(args.device)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from realsize import SD15_UNET

    cfg = SD15_UNET if args.unet == "sd15" else TINY_UNET
    latent = args.latent or (64 if args.unet == "sd15" else 8)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**cfg).to(device).eval()
    unet.requires_grad_(False)  # weights are frozen: only z_t needs a gradient
    sched = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          clip_sample=False)
    backend = StableDiffusionBackend(SimpleNamespace(unet=unet, scheduler=sched), device,
                                     torch.float32, "random UNet")
    n = args.levels
    dim = cfg["cross_attention_dim"]
    emb = torch.randn(n + 1, 77, dim, device=device)
    cond = Conditioning({"encoder_hidden_states": emb[:n]}, {"encoder_hidden_states": emb[n:]})
    scenario = args.single
    denoiser = backend.make_denoiser(cond, args.guidance, None,
                                     differentiable=scenario == "reconstruction")
    known = None
    if scenario != "plain":
        known = {n - 1: torch.randn(4, latent, latent, generator=torch.Generator().manual_seed(1))}
    times, cpu = [], []
    last = [0.0, 0.0]

    def on_step(step, total, layers):
        now, now_cpu = time.perf_counter(), time.process_time()
        times.append(now - last[0])
        cpu.append(now_cpu - last[1])
        last[:] = [now, now_cpu]

    peak = Peak(device)
    last[:] = [time.perf_counter(), time.process_time()]
    sample_zoom_stack(denoiser, sched, num_levels=n, zoom=2, shape=(4, latent, latent),
                      num_inference_steps=args.steps, generator=torch.Generator().manual_seed(0),
                      known=known, known_guidance="photo" if scenario == "photo" else "auto",
                      callback=on_step, device=device)
    # CPU seconds (all threads) as well: wall time on a shared machine measures the neighbours
    return {"scenario": scenario, "seconds_per_step": round(min(times), 3),
            "cpu_seconds_per_step": round(min(cpu), 3),
            "first_step_seconds": round(times[0], 3), "steps": len(times),
            "peak_bytes": peak.bytes(),
            "peak_kind": "cuda max_memory_allocated" if peak.cuda else "rise of peak RSS"}


def run_guidance(args) -> dict:
    results = {s: _sub(["guidance", "--single", s], args)
               for s in ("plain", "photo", "reconstruction")}
    plain = results["plain"]
    return {"benchmark": "known_levels guidance", "unet": args.unet, "levels": args.levels,
            "latent": args.latent or (64 if args.unet == "sd15" else 8),
            "guidance": args.guidance, "unet_batch": (2 if args.guidance != 1 else 1) * args.levels,
            "results": results,
            "reconstruction_over_plain_time": round(
                results["reconstruction"]["seconds_per_step"] / plain["seconds_per_step"], 2),
            "reconstruction_over_plain_cpu_time": round(
                results["reconstruction"]["cpu_seconds_per_step"]
                / max(1e-9, plain["cpu_seconds_per_step"]), 2),
            "reconstruction_over_plain_peak": round(
                results["reconstruction"]["peak_bytes"] / max(1, plain["peak_bytes"]), 2)}


# -------------------------------------------------------------------------------- rates
def run_rates(args) -> dict:
    import statistics

    import torch
    from diffusers import DDPMScheduler

    import core.zoom.known as known_mod
    from core.zoom.analytic import MixtureDenoiser, SCENE_PRIORS, nearest_scene_error
    from core.zoom.geometry import max_observation_depth
    import core.zoom.sampler as sampler_mod
    from core.zoom.sampler import sample_zoom_stack

    torch.set_num_threads(1)
    if args.aligned_only:  # ablation: the guidance loss stops at the pixel-aligned depths
        known_mod.guidance_depth = max_observation_depth
    if args.no_chain:  # ablation: the known-level terms only (no chain terms)
        known_mod.chain_residuals = lambda x, levels, *a, **k: [None] * len(levels)
    if args.known_step is not None:  # ablation: ζ of the reconstruction-guidance step
        sampler_mod.KNOWN_STEP = args.known_step
    ddpm = DDPMScheduler(num_train_timesteps=1000, clip_sample=False)
    table = {}
    for prior in args.priors.split(","):
        for config in args.configs.split(","):
            p, n, size = (int(v) for v in config.split(":"))
            shape = (3, size, size)
            scenes = SCENE_PRIORS[prior](3, n, shape, p, torch.Generator().manual_seed(0),
                                         detail=8 if size == 32 else 4)
            denoiser = MixtureDenoiser(scenes, ddpm.alphas_cumprod)
            for case in args.cases.split(","):
                k = {"in": 0, "out": n - 1, "middle": 1}[case]
                for how in args.guidance_kinds.split(","):
                    hits, worst, start = [], 0.0, time.perf_counter()
                    for seed in range(args.first_seed, args.first_seed + args.seeds):
                        scene = seed % 3
                        out = sample_zoom_stack(
                            denoiser, ddpm, num_levels=n, zoom=p, shape=shape,
                            num_inference_steps=args.steps,
                            generator=torch.Generator().manual_seed(seed),
                            known={k: scenes[scene, k]}, known_guidance=how)
                        error, nearest = nearest_scene_error(out.images, scenes)
                        hits.append(int(error < 0.02 and nearest == scene))
                        worst = max(worst, float((out.images[k] - scenes[scene, k]).abs().max()))
                    rate = statistics.fmean(hits)
                    key = f"{prior}_p{p}_n{n}_{size}px_{case}_{how}"
                    table[key] = {
                        "success_rate": round(rate, 3), "successes": sum(hits),
                        "seeds": len(hits), "standard_error": round(
                            (rate * (1 - rate) / max(1, len(hits) - 1)) ** 0.5, 3),
                        "known_level_max_abs_error": worst,
                        "seconds": round(time.perf_counter() - start, 1)}
                    print(f"{key}: {sum(hits)}/{len(hits)}", file=sys.stderr, flush=True)
    return {"benchmark": "known_levels rates", "scheduler": "DDPM", "steps": args.steps,
            "scenes": 3, "first_seed": args.first_seed,
            "guidance_loss": "aligned depths only" if args.aligned_only
            else "every depth down to one pixel (area-sampled below the aligned ones)",
            "chain_terms": not args.no_chain,
            "known_step": args.known_step if args.known_step is not None else 1.0,
            "success": "rmse < 0.02 to the known level's scene", "results": table}


# -------------------------------------------------------------------------------- driver
def _sub(extra: list[str], args) -> dict:
    cmd = [sys.executable, __file__, *extra, "--device", args.device, "--size", str(args.size),
           "--steps", str(args.steps), "--unet", args.unet, "--levels-guidance", str(args.levels),
           "--guidance", str(args.guidance)]
    if args.latent:
        cmd += ["--latent", str(args.latent)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(proc.returncode)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=("extend", "guidance", "rates"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", type=int, default=256, help="extend: pixels (tiny SD)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--unet", default="tiny", choices=("tiny", "sd15"))
    ap.add_argument("--levels-guidance", dest="levels", type=int, default=2)
    ap.add_argument("--latent", type=int, default=None)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--seeds", type=int, default=24)
    ap.add_argument("--guidance-kinds", default="auto,photo")
    ap.add_argument("--priors", default="independent",
                    help="rates: comma list of core.zoom.analytic.SCENE_PRIORS")
    ap.add_argument("--configs", default="2:4:32,4:3:32",
                    help="rates: comma list of zoom:levels:size")
    ap.add_argument("--cases", default="in,out,middle", help="rates: known level in/out/middle")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--aligned-only", action="store_true",
                    help="rates: ablation, no guidance term below the pixel-aligned depths")
    ap.add_argument("--no-chain", action="store_true",
                    help="rates: ablation, the known-level terms only (no chain terms)")
    ap.add_argument("--known-step", type=float, default=None,
                    help="rates: ablation, ζ of the reconstruction-guidance step (default 1)")
    ap.add_argument("--single", help=argparse.SUPPRESS)
    ap.add_argument("--levels", dest="new_levels", type=int, default=24, help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--base", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.steps is None:
        args.steps = {"extend": 10, "guidance": 2, "rates": 50}[args.part]
    if args.single:
        if args.part == "extend":
            args.levels = args.new_levels
            print(json.dumps(_extend_single(args)))
        else:
            print(json.dumps(_guidance_single(args)))
        return
    run = {"extend": run_extend, "guidance": run_guidance, "rates": run_rates}[args.part]
    print(json.dumps(run(args), indent=2))


if __name__ == "__main__":
    main()
