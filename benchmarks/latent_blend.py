"""How far latent blending's assumption Dec(D_p z) ≈ D_p(Dec z) is off, and what blending in
pixel space (decode -> blend -> encode, ``GenerateSettings.pixel_blend``) buys.

    python benchmarks/latent_blend.py                          # the tiny random VAE (tests')
    python benchmarks/latent_blend.py --model stabilityai/stable-diffusion-2-1-base --size 512

1. ``commutation_gap``: for smooth test images x (Gaussian fields in [0, 1]) and z = Enc(x),
   RMS(Dec(D_p z) − D_p(Dec z)) ÷ RMS(D_p(Dec z) − its mean) — 0 if the VAE commuted with the
   zoom stack's downsampling. Same for random latents z ~ N(0, 1).
2. ``generate``: the decoded, *unconsolidated* pixels' inconsistency (max and RMS of
   centre(image i) − D_p(image i+1)) after latent-only blending vs pixel blending for the last
   20 % / all of the timesteps, and the sampling time of each. Prints JSON.
A random VAE is a worst case (nothing ties its decoder to a smooth image manifold); the figure
from real weights replaces it when the model is available.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402


def rms(x: torch.Tensor) -> float:
    return float(x.pow(2).mean().sqrt())


def commutation_gap(backend, images: torch.Tensor, zoom: int) -> dict:
    from core.zoom.zoom_stack import downsample

    with torch.no_grad():
        z = backend.encode(images * 2 - 1)
        out = {}
        for name, lat in (("encoded_images", z), ("random_latents", torch.randn_like(z))):
            dec_down = backend.decode(downsample(lat, zoom))       # Dec(D_p z)
            down_dec = downsample(backend.decode(lat), zoom)       # D_p(Dec z)
            out[name] = round(rms(dec_down - down_dec) / rms(down_dec - down_dec.mean()), 4)
    return out


def pixel_inconsistency(layers: np.ndarray, zoom: int) -> tuple[float, float]:
    from core.zoom.zoom_stack import crop_centre, downsample

    x = torch.from_numpy(layers).permute(0, 3, 1, 2)
    d = crop_centre(x[:-1], zoom) - downsample(x[1:], zoom)
    return float(d.abs().max()), rms(d)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="an SD/SDXL model (default: the tests' tiny random one)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--zoom", type=int, default=2)
    ap.add_argument("--levels", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    from core.zoom.analytic import GaussianFieldDenoiser
    from core.backends.loading import ModelCache
    from core.generate import generate
    from core.settings import GenerateSettings

    model = args.model
    if model is None:
        from tests.tiny_models import make_tiny_sd

        model = make_tiny_sd(Path(tempfile.mkdtemp(prefix="p10_latent_blend_")) / "sd")
    cache = ModelCache()
    backend = cache.get(model, device=args.device)
    field = GaussianFieldDenoiser((3, args.size, args.size), torch.zeros(1))
    images = (0.5 + 0.4 * field.sample_prior(4, torch.Generator().manual_seed(0))).clamp(0, 1)
    result = {"model": args.model or "tiny random SD (tests/tiny_models.py)", "size": args.size,
              "zoom": args.zoom, "commutation_gap": commutation_gap(backend, images, args.zoom)}
    rows = {}
    for fraction in (0.0, 0.2, 1.0):
        s = GenerateSettings(prompts=[f"level {i}" for i in range(args.levels)], model=model,
                             zoom=args.zoom, width=args.size, height=args.size, steps=args.steps,
                             scheduler="ddim", device=args.device, pixel_blend=fraction)
        start = time.perf_counter()
        layers = generate(s, models=cache, consolidate=False).layers
        worst, typical = pixel_inconsistency(layers, args.zoom)
        rows[f"pixel_blend={fraction:g}"] = {"inconsistency_max": round(worst, 4),
                                             "inconsistency_rms": round(typical, 4),
                                             "seconds": round(time.perf_counter() - start, 2)}
    cache.release()
    result["generate_unconsolidated"] = rows
    result["steps"], result["levels"] = args.steps, args.levels
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
