"""core.models.estimate against measured peak memory (and time) of real-size random-weight models.

    python benchmarks/estimate_check.py --device cuda          # SD 2.1 + SDXL, fp16 (< 2 min on an H100)
    nice -n 10 python benchmarks/estimate_check.py --device cpu --quick   # SD 2.1 UNet, 2 rows, fp32

For each (model, levels, micro-batch) point: one UNet call with the rows a micro-batch runs
(guidance on: 2N rows per step) and one VAE decode of the levels a call decodes. Measured:
``torch.cuda.max_memory_allocated`` on CUDA (weights included: the model is on the device);
on the CPU the live-tensor peak of benchmarks/memtrack.py plus the weights, and the process
peak RSS. Estimated: the UNet (or VAE) weights plus ``core.models.estimate.activation_bytes``. Prints
JSON: one row per point with estimate, measured, their ratio, and seconds per UNet call against
the estimate's time per step scaled to the call's rows.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

SD21_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2, down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, attention_head_dim=(5, 10, 20, 20),
    cross_attention_dim=1024, use_linear_projection=True)
SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280),
    layers_per_block=2, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816)
VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
           down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
           layers_per_block=2, norm_num_groups=32, sample_size=512)
MODELS = {"sd21-base": (SD21_UNET, 1024, 512, "sd"), "sdxl": (SDXL_UNET, 2048, 1024, "sdxl")}
POINTS = {  # (levels, micro_batch); None = all 2N rows in one call
    "sd21-base": [(4, None), (8, None), (8, 4)],
    "sdxl": [(4, None), (8, 4)],
}


def _peak_rss() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def measure(fn, device, weights_bytes: int):
    """(peak bytes incl. weights, seconds) of fn() — CUDA allocator peak or traced live tensors."""
    import torch
    from memtrack import TensorMemory

    if device.type == "cuda":
        fn()  # warm-up: kernels, cuDNN plans
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated()), time.perf_counter() - t
    with TensorMemory() as mem:
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
    return weights_bytes + mem.peak_bytes, dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--models", default="sd21-base,sdxl")
    ap.add_argument("--quick", action="store_true", help="CPU: one SD 2.1 point, 2 rows, no VAE")
    args = ap.parse_args()

    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.utils import logging as dlog

    from core.models import estimate as est

    dlog.set_verbosity_error()
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    e = 2 if dtype == torch.float16 else 4
    info = est.DeviceInfo(device.type, torch.cuda.get_device_name(device) if device.type == "cuda"
                          else "CPU", None, None, cores=torch.get_num_threads())
    rows_out = []
    names = ["sd21-base"] if args.quick else args.models.split(",")
    for name in names:
        cfg, text_dim, px, family = MODELS[name]
        torch.manual_seed(0)
        with torch.device(device):
            unet = UNet2DConditionModel(**cfg).to(dtype).eval()
        n_unet = sum(p.numel() for p in unet.parameters())
        spec = replace(est.SPECS["sd" if family == "sd" else "sdxl"], unet_params=n_unet)
        h = px // 8
        points = [(1, None)] if args.quick else POINTS[name]
        for levels, micro in points:
            rows = 2 * levels if micro is None else min(micro, 2 * levels)
            x = torch.randn(rows, 4, h, h, device=device, dtype=dtype)
            c = torch.randn(rows, 77, text_dim, device=device, dtype=dtype)
            t = torch.full((rows,), 500, device=device)
            kw = {}
            if family == "sdxl":
                kw["added_cond_kwargs"] = {"text_embeds": torch.randn(rows, 1280, device=device, dtype=dtype),
                                           "time_ids": torch.randn(rows, 6, device=device, dtype=dtype)}

            def call():
                with torch.inference_mode():
                    unet(x, t, encoder_hidden_states=c, **kw)

            measured, seconds = measure(call, device, n_unet * e + x.nbytes + c.nbytes)
            act, _ = est.activation_bytes(spec, rows, 1, px, px, e)
            estimate = n_unet * e + act
            sps = est.seconds_per_step(spec, rows, px, px, info) if device.type == "cuda" else None
            rows_out.append({"model": name, "part": "unet", "levels": levels, "micro_batch": micro,
                             "rows_per_call": rows, "size_px": px, "dtype": str(dtype)[6:],
                             "estimate_bytes": int(estimate), "measured_bytes": measured,
                             "ratio": round(estimate / measured, 3), "seconds_per_call": round(seconds, 4),
                             "estimated_seconds": None if sps is None else round(sps, 4),
                             "peak_rss_bytes": _peak_rss() if device.type == "cpu" else None})
            del x, c, kw
        del unet
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if args.quick:
            continue
        # VAE decode of the levels one call decodes (SDXL's VAE runs in fp32: force_upcast)
        vdtype = torch.float32 if family == "sdxl" else dtype
        with torch.device(device):
            vae = AutoencoderKL(**VAE).to(vdtype).eval()
        n_vae = sum(p.numel() for p in vae.parameters())
        vspec = replace(spec, upcast_vae=family == "sdxl")
        for levels in ((1, 2) if family == "sdxl" else (1, 4)):
            z = torch.randn(levels, 4, px // 8, px // 8, device=device, dtype=vdtype)

            def decode():
                with torch.inference_mode():
                    vae.decode(z)

            measured, seconds = measure(decode, device, n_vae * vdtype.itemsize + z.nbytes)
            _, dec = est.activation_bytes(vspec, 1, levels, px, px, e)
            estimate = n_vae * vdtype.itemsize + dec
            rows_out.append({"model": name, "part": "vae decode", "levels": levels, "size_px": px,
                             "dtype": str(vdtype)[6:], "estimate_bytes": int(estimate),
                             "measured_bytes": measured, "ratio": round(estimate / measured, 3),
                             "seconds_per_call": round(seconds, 4)})
        del vae
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(json.dumps({"benchmark": "estimate_check", "device": info.name, "torch": torch.__version__,
                      "rows": rows_out}, indent=2))


if __name__ == "__main__":
    main()
