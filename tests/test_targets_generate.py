"""``generate`` / ``extend`` / ``regenerate`` with targets and loops, end to end: on an analytic
backend (a mixture of zoom stacks whose answer is known: the targets must reach the sampler as
footprints on its grid) and on the tiny random-weight Stable Diffusion through the CLI (the
saved PNGs are exact at every footprint, the wrap's too; old levels and footprints are kept)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from core.cli import main as cli
from core.generate import generate
from core.settings import GenerateSettings
from core.stack.stack_io import ZoomStack
from core.zoom.analytic import MixtureDenoiser, nearest_scene_error
from core.zoom.zoom_stack import downsample, render_image, upsample
from tests.test_cli import _one_line_error, _run

TWO = 2 / 255


# ------------------------------------------------------------------------ analytic backend
class AnalyticBackend:
    """The parts of a model backend ``generate`` uses, with an exact mixture denoiser in pixel
    space (DeepFloyd-IF-like: no VAE, 16 x 16 samples)."""

    family, scale_factor, native_size, channels = "if", 1, 16, 3
    device = torch.device("cpu")
    default_upscale, upscale_stages, guidance_embedded = 1, (), False

    def __init__(self, renders: torch.Tensor):
        self.renders = renders
        self.scheduler_config = DDPMScheduler(num_train_timesteps=1000, clip_sample=False).config

    def sampling_config(self, height, width):  # core.backends.base.Backend's hook
        return dict(self.scheduler_config)

    def encode_prompts(self, prompts, negative, height, width):
        return None

    def make_denoiser(self, cond, guidance, micro_batch, differentiable=False):
        alphas = DDPMScheduler(num_train_timesteps=1000).alphas_cumprod
        return MixtureDenoiser(self.renders, alphas)

    def pixel_blending(self, denoiser, zoom, fraction, micro_batch, **placement):
        return denoiser

    def decode(self, images, micro_batch):
        return ((images + 1) / 2).clamp(0, 1)

    def preview(self, images):
        return None

    def encode_photo(self, x, micro_batch):
        return x[0] * 2 - 1 if x.dim() == 4 else x * 2 - 1


class AnalyticCache:
    def __init__(self, backend):
        self.backend = backend

    def get(self, model, **kw):
        return self.backend

    def release(self):
        pass


def _scenes(footprints, loop, n=3, k=3, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand((k * n, 3, 4, 4), generator=g) * 2 - 1
    layers = upsample(coarse, (16, 16)).reshape(k, n, 3, 16, 16)
    return torch.stack([render_image(s, 2, footprints=footprints, loop=loop) for s in layers])


def _analytic(settings: GenerateSettings, renders, **kw) -> ZoomStack:
    return generate(settings, models=AnalyticCache(AnalyticBackend(renders)), **kw)


@pytest.mark.parametrize("loop", [False, True])
def test_targets_reach_the_sampler_as_footprints_on_its_grid(loop):
    # target (0.75, 0.25) on a 16 x 16 grid at p = 2: the 8 x 8 footprint starts at (8, 0)
    fps = [(8, 0)] * (3 if loop else 2)
    renders = _scenes(fps, loop)
    s = GenerateSettings(prompts=["a", "b", "c"], model="analytic", family="if", width=16,
                         height=16, steps=40, scheduler="ddpm", seed=1, micro_batch=8,
                         upscaler="none", targets=[0.75, 0.25], loop=loop)
    out = _analytic(s, renders)
    assert out.manifest["footprints"] == [[8, 0]] * len(fps)
    assert out.manifest.get("loop", False) is loop and out.footprints == fps
    x = torch.from_numpy(out.layers).permute(0, 3, 1, 2)
    err, _ = nearest_scene_error(x * 2 - 1, renders)
    assert err < 0.02  # lands on one of the prior's stacks
    for i, (left, top) in enumerate(fps):  # exactly consistent at the targets
        region = x[i, :, top:top + 8, left:left + 8]
        assert (region - downsample(x[(i + 1) % 3], 2)).abs().max() < 1e-5
    # the same prior sampled centred cannot land on it: the footprints did the work
    centred = _analytic(GenerateSettings(**{**s.to_dict(), "targets": None}), renders)
    assert nearest_scene_error(torch.from_numpy(centred.layers).permute(0, 3, 1, 2) * 2 - 1,
                               renders)[0] > 5 * err


@pytest.mark.parametrize("outward", [False, True])
def test_extend_with_targets_lands_on_the_known_levels_scene(outward):
    from core.extend import extend

    fps = [(8, 0), (0, 8)]
    renders = _scenes(fps, False)
    pixels = ((renders[1] + 1) / 2).permute(0, 2, 3, 1).numpy()  # scene 1, (N, H, W, 3)
    kept = slice(1, 3) if outward else slice(0, 2)
    stack = ZoomStack(pixels[kept], {
        "zoom": 2, "model": "analytic", "family": "if", "prompts": ["a", "b"],
        "footprints": [list(fps[1] if outward else fps[0])], "scheduler": "ddpm", "steps": 40,
        "upscaler": "none", "sample_width": 16, "sample_height": 16, "seed": 3, "width": 16,
        "height": 16})
    target = [[0.75, 0.25]] if outward else [[0.25, 0.75]]  # -> (8, 0) / (0, 8) on the 16 grid
    out = extend(stack, ["new"], outward=outward, targets=target, micro_batch=8,
                 models=AnalyticCache(AnalyticBackend(renders)))
    assert out.footprints == fps and out.manifest["footprints"] == [list(f) for f in fps]
    new = 0 if outward else 2
    x = torch.from_numpy(out.layers[new]).permute(2, 0, 1) * 2 - 1
    rmse = ((renders[:, new] - x) ** 2).flatten(1).mean(-1).sqrt()  # to each scene's level
    assert int(rmse.argmin()) == 1 and rmse[1] < 0.3 * rmse[[0, 2]].min()  # the known scene's
    assert np.abs(out.layers[kept] - pixels[kept]).max() < 1e-5


# ------------------------------------------------------------------------ tiny model, CLI
@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from tests.tiny_models import make_tiny_sd

    return str(make_tiny_sd(tmp_path_factory.mktemp("targets_tiny") / "sd"))


def _pngs(folder) -> np.ndarray:
    from PIL import Image

    m = ZoomStack.load(folder).manifest
    return np.stack([np.asarray(Image.open(folder / name)) for name in m["layers"]])


def _exact(folder, zoom=2) -> bool:
    """Every footprint of the saved PNGs is round(255 D_p(next PNG)), to the bit."""
    stack = ZoomStack.load(folder)
    png = _pngs(folder)
    n, h, w, _ = png.shape
    for i, (left, top) in enumerate(stack.footprints):
        finer = torch.from_numpy(png[(i + 1) % n].astype(np.float32) / 255).permute(2, 0, 1)
        want = np.rint(downsample(finer, zoom).permute(1, 2, 0).numpy() * 255)
        if not np.array_equal(png[i, top:top + h // zoom, left:left + w // zoom], want):
            return False
    return True


GEN = ["--size", "64", "--steps", "2", "--device", "cpu", "--seed", "5", "--quiet"]


def test_generate_extend_regenerate_with_targets_on_the_tiny_model(capsys, model, tmp_path):
    # 64 px = 8 x 8 latents, footprints 4 latents: target (0.75, 0.25) -> (4, 0) latents = (32, 0) px
    code, _, err = _run(capsys, "generate", "--prompt", "a galaxy", "--prompt", "a star",
                        "--prompt", "a planet", "--model", model, "--target", "0.75,0.25",
                        "--out", tmp_path / "s3", *GEN)
    assert code == 0, err
    s3 = ZoomStack.load(tmp_path / "s3")
    assert s3.manifest["footprints"] == [[32, 0], [32, 0]] and s3.loop is False
    assert _exact(tmp_path / "s3")

    # deeper: the stack's footprints kept, the new transitions from --targets
    targets = tmp_path / "t.json"
    targets.write_text("[[0.1, 0.9], [0.5, 0.5]]")
    code, _, err = _run(capsys, "extend", tmp_path / "s3", "--prompt", "a tree", "--prompt",
                        "a leaf", "--targets", targets, "--device", "cpu", "--out",
                        tmp_path / "s5", "--quiet")
    assert code == 0, err
    s5 = ZoomStack.load(tmp_path / "s5")
    assert s5.footprints == [(32, 0), (32, 0), (0, 32), (16, 16)]
    assert np.abs(s5.layers[:3] - s3.layers).max() <= TWO and _exact(tmp_path / "s5")

    # outward: the old level 0 inside the new one at the target
    code, _, err = _run(capsys, "extend", tmp_path / "s3", "--prompt", "the universe",
                        "--outward", "--target", "0,0", "--device", "cpu", "--out",
                        tmp_path / "s4", "--quiet")
    assert code == 0, err
    s4 = ZoomStack.load(tmp_path / "s4")
    assert s4.footprints == [(0, 0), (32, 0), (32, 0)]
    assert np.abs(s4.layers[1:] - s3.layers).max() <= TWO and _exact(tmp_path / "s4")

    code, _, err = _run(capsys, "regenerate", tmp_path / "s3", "--level", "1", "--device", "cpu",
                        "--out", tmp_path / "r", "--quiet")
    assert code == 0, err
    r = ZoomStack.load(tmp_path / "r")
    assert r.footprints == s3.footprints and _exact(tmp_path / "r")
    assert np.abs(r.layers[0] - s3.layers[0]).max() <= TWO


def test_loop_on_the_tiny_model_and_its_video(capsys, model, tmp_path):
    import imageio_ffmpeg

    code, _, err = _run(capsys, "generate", "--prompt", "a galaxy", "--prompt", "a star",
                        "--prompt", "a planet", "--model", model, "--loop", "--targets",
                        _write(tmp_path / "t.json", "[[0.25, 0.25], [0.5, 0.5], [0.75, 0.75]]"),
                        "--out", tmp_path / "loop", "--video", "--frames-per-level", "2",
                        "--loops", "2", *GEN)
    assert code == 0, err
    stack = ZoomStack.load(tmp_path / "loop")
    assert stack.loop and stack.footprints == [(0, 0), (16, 16), (32, 32)]
    assert _exact(tmp_path / "loop")  # the wrap too: level 0 inside level 2
    frames = imageio_ffmpeg.count_frames_and_secs(str(tmp_path / "loop" / "preview.mp4"))[0]
    assert frames == 2 * 3 * 2
    # regenerate works on a loop (extend refuses: tests/test_targets_cli.py)
    code, _, err = _run(capsys, "regenerate", tmp_path / "loop", "--level", "0", "--device",
                        "cpu", "--out", tmp_path / "r", "--quiet")
    assert code == 0, err
    r = ZoomStack.load(tmp_path / "r")
    assert r.loop and r.footprints == stack.footprints and _exact(tmp_path / "r")
    assert np.abs(r.layers[1:] - stack.layers[1:]).max() <= TWO


def _write(path, text):
    path.write_text(text)
    return path


def test_targets_and_loops_through_super_resolution_and_pixel_blend(capsys, model, tmp_path):
    from tests.tiny_models import make_tiny_x4_upscaler

    # 32 px = 4 x 4 latents, footprints 2 latents: (0.75, 0.25) -> (2, 0) latents -> (64, 0) in
    # the x4 stage's 128 px PNGs; the SR stage samples, augments and blends at the footprints
    x4 = make_tiny_x4_upscaler(tmp_path / "x4")
    common = ["--prompt", "a", "--prompt", "b", "--prompt", "c", "--model", model, "--size", "32",
              "--steps", "2", "--device", "cpu", "--seed", "5", "--quiet", "--target", "0.75,0.25",
              "--loop"]
    code, _, err = _run(capsys, "generate", *common, "--upscale", "4", "--upscaler", x4,
                        "--out", tmp_path / "sr")
    assert code == 0, err
    sr = ZoomStack.load(tmp_path / "sr")
    assert sr.layers.shape[1:3] == (128, 128) and sr.loop
    assert sr.footprints == [(64, 0)] * 3 and _exact(tmp_path / "sr")
    code, _, err = _run(capsys, "generate", *common, "--pixel-blend", "0.5", "--out",
                        tmp_path / "pb")
    assert code == 0, err
    pb = ZoomStack.load(tmp_path / "pb")
    assert pb.footprints == [(16, 0)] * 3 and _exact(tmp_path / "pb")
