"""``python -m core check-model MODEL``: does latent blending hold for this model's VAE?

The sampler blends a latent model's x̂0 in latent space; that is zoom-consistent in pixels only
if the decoder commutes with D_p, Dec(D_p z) ≈ D_p(Dec z) (docs/sampler.md, "Latent models").
No trained VAE does exactly and the analytic tests cannot tell how far off a real one is, so this
command measures it on the model itself: it generates a small stack twice — latent blending (the
default) and ``--pixel-blend`` (decode x̂0, blend in pixels, encode back for the last FRAC of
the timesteps) — decodes each without the final consolidation pass, and reports in 8-bit pixel
levels (0-255):

* ``render_inconsistency``: RMS and max of centre(image i) − D_p(image i+1) over the decoded
  levels — the seam the final consolidation pass has to hide (0 = consistent);
* ``commutation``: RMS of Dec(D_p z) − D_p(Dec z) on the latents the run produced, and that
  RMS ÷ the RMS contrast of D_p(Dec z) (``relative``);
* ``seconds`` of each run; then a recommendation (docs/cli.md, "check-model").
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, Callable

#: Render inconsistency (RMS, 8-bit levels) below which latent blending is enough: about the
#: rounding of an 8-bit PNG plus a JPEG's; the final consolidation pass removes it unseen.
QUIET_RMS = 2.0
#: Pixel blending is recommended only if it cuts the RMS inconsistency at least this much
#: (it costs N decodes and encodes per step it runs).
WORTH_FACTOR = 0.5
PROMPTS = ("a wide landscape", "a house in the landscape", "a window of the house",
           "a cat behind the window", "the cat's eye", "the iris of the eye")
EXIT_OK = 0


def add_check_parser(sub) -> None:
    c = sub.add_parser("check-model", help="measure whether latent blending holds for a model "
                       "(VAE vs zoom-stack downsampling) and recommend --pixel-blend or not",
                       description="Generate a small stack with latent and with pixel blending, "
                       "decode both, and report in 8-bit pixel levels how far the levels disagree "
                       "and how far Dec(D_p z) is from D_p(Dec z) on the model's own latents.")
    c.add_argument("model", metavar="MODEL", help="hub id, model folder or .safetensors file")
    c.add_argument("--levels", type=int, default=3, metavar="N", help="levels (default 3)")
    c.add_argument("--zoom", type=int, default=2, metavar="P", help="zoom factor (default 2)")
    c.add_argument("--size", type=int, metavar="PX", help="pixels (default: the model's)")
    c.add_argument("--steps", type=int, metavar="N", help="steps (default: the scheduler's)")
    c.add_argument("--scheduler", default="auto", metavar="NAME", help="default auto")
    c.add_argument("--seed", type=int, default=0, metavar="S")
    c.add_argument("--device", default="auto", metavar="DEV")
    c.add_argument("--pixel-blend", type=float, default=0.2, metavar="FRAC",
                   help="the pixel-blending run's fraction of the timesteps (default 0.2)")
    c.add_argument("--json", action="store_true", help="print JSON instead of a report")
    c.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def _levels_8bit(x) -> float:
    return float(x) * 255.0


def render_inconsistency(pixels, zoom: int) -> dict[str, float]:
    """RMS / max of centre(image i) − D_p(image i+1) of ``(N, 3, H, W)`` in [0, 1], in 8-bit levels."""
    from ..zoom.zoom_stack import crop_centre, downsample

    d = crop_centre(pixels[:-1], zoom) - downsample(pixels[1:], zoom)
    return {"rms": round(_levels_8bit(d.pow(2).mean().sqrt()), 3),
            "max": round(_levels_8bit(d.abs().max()), 3)}


def commutation(backend, latents, zoom: int) -> dict[str, float]:
    """Dec(D_p z) against D_p(Dec z) on ``latents (N, C, h, w)``: RMS in 8-bit levels, and
    relative to the RMS contrast of D_p(Dec z)."""
    import torch

    from ..zoom.zoom_stack import downsample

    with torch.no_grad():
        dec_down = backend.decode(downsample(latents, zoom))
        down_dec = downsample(backend.decode(latents), zoom)
    gap = (dec_down - down_dec).pow(2).mean().sqrt()
    contrast = (down_dec - down_dec.mean()).pow(2).mean().sqrt().clamp(min=1e-12)
    return {"rms": round(_levels_8bit(gap), 3), "relative": round(float(gap / contrast), 4)}


class _LastDecode:
    """Keeps the input of the backend's last ``decode`` call (generate's decode of the final
    latents comes last; pixel blending decodes x̂0 at earlier steps)."""

    def __init__(self, backend):
        self.backend, self.original, self.latents = backend, backend.decode, None

    def __enter__(self):
        def decode(x, *args, **kwargs):
            self.latents = x.detach().clone()
            return self.original(x, *args, **kwargs)

        self.backend.decode = decode
        return self

    def __exit__(self, *exc):
        del self.backend.decode  # the class's method again
        return False


def check_model(model: str, *, levels: int = 3, zoom: int = 2, size: int | None = None,
                steps: int | None = None, scheduler: str = "auto", seed: int = 0,
                device: str = "auto", pixel_blend: float = 0.2, models=None,
                cancel=None) -> dict[str, Any]:
    """Run both routes on ``model`` and return the report (see the module docstring)."""
    import torch

    from ..backends.loading import ModelCache
    from ..errors import InvalidInputError
    from ..generate import generate
    from ..models.families import LATENT_FAMILIES
    from ..settings import GenerateSettings

    if not 2 <= levels <= len(PROMPTS):
        raise InvalidInputError(f"--levels must be 2 to {len(PROMPTS)}, got {levels}")
    if not 0 < pixel_blend <= 1:
        raise InvalidInputError(f"--pixel-blend must be a fraction in (0, 1], got {pixel_blend:g}")
    runs = {name: GenerateSettings(prompts=list(PROMPTS[:levels]), model=model, zoom=zoom,
                                   width=size, height=size, steps=steps, scheduler=scheduler,
                                   seed=seed, device=device, pixel_blend=fraction)
            for name, fraction in (("latent_blend", 0.0), ("pixel_blend", float(pixel_blend)))}
    for settings in runs.values():  # bad settings: one line before any model loads
        settings.validate()
    cache = models or ModelCache()
    try:
        backend = cache.get(model, device=device)
        if backend.family not in LATENT_FAMILIES:
            return {"model": model, "family": backend.family, "latent": False,
                    "recommendation": "none needed: this model samples pixels, so blending is "
                    "already in pixel space"}
        routes, latents = {}, {}
        for name, settings in runs.items():
            start = time.perf_counter()
            with _LastDecode(backend) as last:
                stack = generate(settings, models=cache, consolidate=False, cancel=cancel)
            seconds = time.perf_counter() - start
            latents[name] = last.latents
            pixels = torch.from_numpy(stack.layers).permute(0, 3, 1, 2).float()
            routes[name] = {"pixel_blend": settings.pixel_blend, "seconds": round(seconds, 2),
                            "render_inconsistency": render_inconsistency(pixels, zoom),
                            "commutation": commutation(backend, last.latents.to(backend.device),
                                                       zoom)}
    finally:
        if models is None:
            cache.release()
    report = {"model": model, "family": backend.family, "latent": True, "levels": levels,
              "zoom": zoom, "size": int(stack.layers.shape[1]), "seed": seed,
              "units": "8-bit pixel levels (0-255)", **routes}
    if torch.equal(latents["latent_blend"], latents["pixel_blend"]):
        # pixel blending acts for t < FRAC·T only: few steps can all lie above it
        report["recommendation"] = (
            f"no verdict: pixel blending never ran (no timestep below {pixel_blend:g}·T at "
            f"these steps); rerun with more --steps or a larger --pixel-blend")
    else:
        report["recommendation"] = recommend(routes["latent_blend"], routes["pixel_blend"])
    return report


def recommend(latent: dict, pixel: dict) -> str:
    """One line: latent blending, or ``--pixel-blend FRAC``, and why (thresholds above)."""
    a = latent["render_inconsistency"]["rms"]
    b = pixel["render_inconsistency"]["rms"]
    frac = pixel["pixel_blend"]
    if a <= QUIET_RMS:
        return (f"latent blending (the default): the decoded levels disagree by {a:.2f} RMS "
                f"(<= {QUIET_RMS:g}), which the final consolidation pass removes unseen")
    if b <= WORTH_FACTOR * a:
        return (f"--pixel-blend {frac:g}: it cuts the levels' disagreement from {a:.2f} to "
                f"{b:.2f} RMS, for {pixel['seconds'] / max(latent['seconds'], 1e-9):.1f}x the time")
    return (f"latent blending (the default): pixel blending leaves {b:.2f} of {a:.2f} RMS, "
            f"not worth its decode and encode per step; the final consolidation pass fixes "
            f"the rest")


def format_report(r: dict) -> list[str]:
    if not r["latent"]:
        return [f"{r['model']} ({r['family']}): {r['recommendation']}"]
    lines = [f"{r['model']} ({r['family']}), {r['levels']} levels, p = {r['zoom']}, "
             f"{r['size']} px, seed {r['seed']}; {r['units']}:"]
    for name in ("latent_blend", "pixel_blend"):
        x = r[name]
        ri, c = x["render_inconsistency"], x["commutation"]
        lines.append(f"  {name:12s} (pixel_blend {x['pixel_blend']:g}): levels disagree "
                     f"{ri['rms']:.2f} RMS / {ri['max']:.1f} max; Dec(D_p z) vs D_p(Dec z) "
                     f"{c['rms']:.2f} RMS ({c['relative']:.1%} of the contrast); {x['seconds']:.1f} s")
    lines.append(f"recommendation: {r['recommendation']}")
    return lines


def run_check(args: argparse.Namespace, run_cancellable: Callable) -> int:
    report = run_cancellable(lambda cancel: check_model(
        args.model, levels=args.levels, zoom=args.zoom, size=args.size, steps=args.steps,
        scheduler=args.scheduler, seed=args.seed, device=args.device,
        pixel_blend=args.pixel_blend, cancel=cancel), lambda: None)
    print(json.dumps(report, indent=2) if args.json else "\n".join(format_report(report)))
    return EXIT_OK
