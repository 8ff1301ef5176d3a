"""Cost of the joint ×4 super-resolution stage beside stage I: CPU time, wall time, peak memory.

    python benchmarks/sr_cost.py                       # tiny random-weight pipelines, CPU (~1 min)
    python benchmarks/sr_cost.py --real-size --device cuda --size 512 --levels 4 --steps 5

Stage I = an SD pipeline sampled jointly (Alg. 2) and VAE-decoded; the SR stage = the Stable
Diffusion x4 upscaler sampled jointly on the decoded levels (per-level conditioning, blend +
Π_noise every step, tiled UNet) and decoded by its own VAE (Backend.upscale). ``--real-size``
builds random-weight stand-ins with the real configurations (SD 1.5 UNet + VAE; the x4
upscaler's UNet + VAE; small text encoders, whose cost is negligible) in memory — random
weights cost exactly what trained ones do; no download. Per phase: ``cpu_seconds``
(process CPU time), ``wall_seconds``, ``peak_memory_bytes`` (CUDA: max_memory_allocated since
the phase began; CPU: peak RSS sampled every 5 ms during the phase). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, cross_attention_dim=768,
    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, attention_head_dim=8,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
)
SD_VAE = dict(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
              up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=2,
              sample_size=512, scaling_factor=0.18215)
X4_UNET = dict(  # stabilityai/stable-diffusion-x4-upscaler unet/config.json
    sample_size=128, in_channels=7, out_channels=4, cross_attention_dim=1024,
    block_out_channels=(256, 512, 512, 1024), layers_per_block=2, attention_head_dim=8,
    down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * 3,
    up_block_types=("CrossAttnUpBlock2D",) * 3 + ("UpBlock2D",),
    only_cross_attention=(True, True, True, False), num_class_embeds=1000,
    use_linear_projection=True,
)
X4_VAE = dict(block_out_channels=(128, 256, 512), down_block_types=("DownEncoderBlock2D",) * 3,
              up_block_types=("UpDecoderBlock2D",) * 3, latent_channels=4, layers_per_block=2,
              sample_size=256, scaling_factor=0.08333)
SCHED = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
             clip_sample=False)


class PhaseMeter:
    """CPU time, wall time and peak memory of named phases."""

    def __init__(self, device: torch.device):
        self.device, self.phases, self._stop = device, {}, None

    def _sample_rss(self, box: dict, stop: threading.Event) -> None:
        import psutil

        proc = psutil.Process()
        while not stop.is_set():
            box["peak"] = max(box["peak"], proc.memory_info().rss)
            stop.wait(0.005)

    def run(self, name: str, fn):
        box, stop = {"peak": 0}, threading.Event()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            sampler = threading.Thread(target=self._sample_rss, args=(box, stop), daemon=True)
            sampler.start()
        cpu, wall = time.process_time(), time.perf_counter()
        out = fn()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        row = {"cpu_seconds": round(time.process_time() - cpu, 2),
               "wall_seconds": round(time.perf_counter() - wall, 2)}
        if self.device.type == "cuda":
            row["peak_memory_bytes"] = int(torch.cuda.max_memory_allocated())
            row["peak_memory_kind"] = "torch.cuda.max_memory_allocated"
        else:
            stop.set()
            sampler.join()
            row["peak_memory_bytes"] = int(box["peak"])
            row["peak_memory_kind"] = "process RSS (sampled)"
        self.phases[name] = row
        return out


def tiny_backends(device, dtype):
    from core.backends.loading import load_backend, load_stage
    from tests.tiny_models import make_tiny_sd, make_tiny_x4_upscaler

    tmp = Path(tempfile.mkdtemp(prefix="p10_sr_cost_"))
    backend = load_backend(make_tiny_sd(tmp / "sd"), device=device, dtype=dtype)
    source = make_tiny_x4_upscaler(tmp / "x4")
    return backend, [("x4", source)], lambda: load_stage(backend, "x4", source), None


def real_size_backends(device, dtype, levels: int):
    from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel

    from core.backends.base import Conditioning
    from core.backends.stable_diffusion import StableDiffusionBackend
    from core.backends.super_resolution import X4Upscaler

    torch.manual_seed(0)
    pipe = SimpleNamespace(unet=UNet2DConditionModel(**SD15_UNET).to(device, dtype).eval(),
                           vae=AutoencoderKL(**SD_VAE).to(device, dtype).eval(),
                           scheduler=DDPMScheduler(**SCHED))
    backend = StableDiffusionBackend(pipe, device, dtype, "random SD 1.5 (real size)")
    x4 = SimpleNamespace(
        unet=UNet2DConditionModel(**X4_UNET).to(device, dtype).eval(),
        vae=AutoencoderKL(**X4_VAE).to(device, dtype).eval(),
        scheduler=DDIMScheduler(**{**SCHED, "beta_start": 0.0001, "beta_end": 0.02},
                                prediction_type="v_prediction"),
        low_res_scheduler=DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.0001,
                                        beta_end=0.02))
    stage = X4Upscaler(x4, device, dtype, "random x4 upscaler (real size)")
    emb = torch.randn(levels + 1, 77, 1024, device=device, dtype=dtype)  # stands in for OpenCLIP
    stage.conditioning = lambda *a: Conditioning({"encoder_hidden_states": emb[:levels]},
                                                 {"encoder_hidden_states": emb[levels:]})
    backend._stages = {"x4": stage}
    cond = torch.randn(levels + 1, 77, 768, device=device, dtype=dtype)
    stage_one = Conditioning({"encoder_hidden_states": cond[:levels]},
                             {"encoder_hidden_states": cond[levels:]})
    return backend, [("x4", stage.source)], lambda: stage, stage_one


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--real-size", action="store_true")
    ap.add_argument("--size", type=int, default=None, help="stage-I px (default 64 tiny, 512 real)")
    ap.add_argument("--levels", type=int, default=3)
    ap.add_argument("--zoom", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4, help="steps of each stage")
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--micro-batch", type=int, default=None)
    ap.add_argument("--tile", type=int, default=None, help="x4 tile size in latent px (default 128)")
    args = ap.parse_args()

    from core.backends.loading import default_dtype, resolve_device
    from core.backends.schedulers import make_scheduler
    from core.backends.super_resolution import X4Upscaler
    from core.zoom.sampler import sample_zoom_stack
    from core.backends.upscale import upscale

    device = resolve_device(args.device)
    dtype = default_dtype(device) if args.dtype == "auto" else getattr(torch, args.dtype)
    if args.tile:
        X4Upscaler.tile_size = args.tile
    if args.real_size:
        backend, plan, stage_of, cond = real_size_backends(device, dtype, args.levels)
        size = args.size or 512
    else:
        backend, plan, stage_of, cond = tiny_backends(device, dtype)
        size = args.size or 64
    prompts = [f"level {i}" for i in range(args.levels)]
    meter = PhaseMeter(device)
    with torch.inference_mode():
        if cond is None:
            cond = backend.encode_prompts(prompts, "", height=size, width=size)
        meter.run("load_sr_model", stage_of)  # loading is not counted in the SR stage
        f = backend.scale_factor
        result = meter.run("stage_1_sampling", lambda: sample_zoom_stack(
            backend.make_denoiser(cond, args.guidance, args.micro_batch),
            make_scheduler("ddpm", backend.scheduler_config), num_levels=args.levels,
            zoom=args.zoom, shape=(backend.channels, size // f, size // f),
            num_inference_steps=args.steps, generator=torch.Generator().manual_seed(0),
            device=device))
        pixels = meter.run("stage_1_decode",
                           lambda: backend.decode(result.images, args.micro_batch))
        out = meter.run("super_resolution", lambda: upscale(
            backend, pixels, cond, prompts, "", plan, zoom=args.zoom, scheduler="ddpm",
            steps=args.steps, seed=0, micro_batch=args.micro_batch))
    stage = stage_of()
    summary = {
        "benchmark": "sr_cost", "real_size": args.real_size,
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "dtype": str(dtype).replace("torch.", ""), "levels": args.levels, "zoom": args.zoom,
        "steps_per_stage": args.steps, "sampled_px": size, "output_px": int(out.shape[-1]),
        "sr_sample": list(stage.sample_shape(size, size)), "sr_tile": stage.tile_size,
        "sr_tile_overlap": stage.tile_overlap, "micro_batch": args.micro_batch,
        "phases": meter.phases,
        "sr_over_stage_1_cpu": round(meter.phases["super_resolution"]["cpu_seconds"]
                                     / max(meter.phases["stage_1_sampling"]["cpu_seconds"]
                                           + meter.phases["stage_1_decode"]["cpu_seconds"],
                                           1e-9), 2),
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
