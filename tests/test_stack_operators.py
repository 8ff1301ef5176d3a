"""The per-step zoom-stack operations as precomputed sparse operators (issue 23): the same results
as the reference functions to float rounding, a number of kernels per step that does not grow
with N, and the reference code where sparse products are not available."""

import sys
from pathlib import Path

import pytest
import torch
from diffusers import DDPMScheduler

import core.zoom.sampler as sampler
from core.zoom.geometry import check_footprints
from core.zoom.stack_operators import OPERATOR_BLENDS, stack_operators, supported
from core.zoom.zoom_stack import blend, render_image, render_noise

CASES = [  # (p, N, H, W, footprints, loop)
    (2, 4, 32, 32, None, False),
    (2, 8, 64, 64, None, False),
    (4, 3, 64, 32, None, False),
    (8, 2, 64, 64, None, False),
    (2, 5, 32, 32, [(0, 0), (16, 16), (3, 11), (9, 2)], False),
    (4, 3, 32, 64, [(0, 24), (48, 0)], False),
    (4, 3, 128, 128, [(16, 80), (40, 8)], False),  # SR rim: d = 2 observations, wide bands
    (2, 3, 32, 32, None, True),
    (2, 4, 32, 32, [(3, 9), (10, 2), (0, 16), (7, 7)], True),
    (4, 2, 64, 32, None, True),
    (2, 1, 16, 16, None, False),
]


def rand(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("p,n,h,w,fps,loop", CASES)
def test_operators_equal_the_reference_functions(p, n, h, w, fps, loop):
    footprints = check_footprints(fps, h, w, p, n, loop)
    x = rand(n, 3, h, w, seed=n + p)
    for method in OPERATOR_BLENDS:
        ops = stack_operators(n, h, w, p, footprints, loop, method)
        torch.testing.assert_close(ops.blend(x), blend(x, p, method, footprints=footprints, loop=loop),
                                   rtol=0, atol=1e-6)
    torch.testing.assert_close(ops.render_image(x), render_image(x, p, footprints, loop),
                               rtol=0, atol=1e-6)
    torch.testing.assert_close(ops.render_noise(x), render_noise(x, p, footprints, loop),
                               rtol=0, atol=1e-6)
    layers, images = ops.consolidate(x)
    torch.testing.assert_close(images, render_image(blend(x, p, OPERATOR_BLENDS[-1], footprints=footprints,
                                                          loop=loop), p, footprints, loop),
                               rtol=0, atol=1e-6)


def test_operators_keep_dtype_and_run_in_float64_and_half():
    footprints = check_footprints(None, 32, 32, 2, 3)
    x = rand(3, 4, 32, 32, dtype=torch.float64)
    ops = stack_operators(3, 32, 32, 2, footprints, dtype=torch.float64)
    out = ops.render_image(ops.blend(x))
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, render_image(blend(x, 2), 2), rtol=0, atol=1e-12)
    half = stack_operators(3, 32, 32, 2, footprints, dtype=torch.bfloat16)
    y = half.render_noise(x.to(torch.bfloat16))
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.double(), render_noise(x, 2), rtol=0, atol=0.05)


def test_operators_are_built_once_per_configuration():
    footprints = check_footprints(None, 32, 32, 2, 4)
    a = stack_operators(4, 32, 32, 2, footprints)
    assert stack_operators(4, 32, 32, 2, list(footprints)) is a
    assert stack_operators(4, 32, 32, 2, footprints, blending="laplacian-sr1") is not a


def test_only_devices_with_sparse_products_use_them():
    assert supported("cpu", torch.float32, "laplacian")
    assert supported(torch.device("cuda"), torch.float16, "laplacian-sr2")
    assert not supported("mps", torch.float32, "laplacian")
    assert not supported("cpu", torch.float32, "naive")


def ops_per_step(n: int, p: int, size: int = 64, operators: bool = True) -> float:
    """Top-level aten ops of one DDPM step: benchmarks/overhead.py's count (torch.profiler,
    eager, CPU, trivial denoiser), the measure of issue 23."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from overhead import ops_per_step as count

    return count(n, p, size, operators)


@pytest.mark.parametrize("n,p", [(8, 2), (16, 2), (8, 4)])
def test_a_joint_step_issues_at_most_150_ops_whatever_n(n, p):
    assert ops_per_step(n, p) <= 150


def test_the_reference_path_grows_with_n_and_the_operators_do_not():
    small, large = ops_per_step(4, 2, size=32), ops_per_step(12, 2, size=32)
    assert large == small
    assert ops_per_step(12, 2, 32, operators=False) > ops_per_step(4, 2, 32, operators=False) + 200
    assert sampler.USE_STACK_OPERATORS  # the count leaves the switch as it was


def test_sampler_with_and_without_operators_agrees(monkeypatch):
    from core.zoom.analytic import MixtureDenoiser, make_scenes

    sched = DDPMScheduler(num_train_timesteps=1000, clip_sample=False)
    g = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    scenes = make_scenes(3, 4, (3, 32, 32), 2, g(0))
    den = MixtureDenoiser(scenes, sched.alphas_cumprod)
    kw = dict(num_levels=4, zoom=2, shape=(3, 32, 32), num_inference_steps=12)
    for extra in ({}, {"loop": True}, {"footprints": [(0, 0), (16, 16), (3, 11)]}):
        fast = sampler.sample_zoom_stack(den, sched, generator=g(1), **kw, **extra)
        monkeypatch.setattr(sampler, "USE_STACK_OPERATORS", False)
        slow = sampler.sample_zoom_stack(den, sched, generator=g(1), **kw, **extra)
        monkeypatch.setattr(sampler, "USE_STACK_OPERATORS", True)
        torch.testing.assert_close(fast.images, slow.images, rtol=0, atol=1e-5)


def test_a_failing_compile_falls_back_to_the_eager_operators(monkeypatch):
    footprints = check_footprints(None, 32, 32, 2, 3)
    ops = stack_operators(3, 32, 32, 2, footprints, blending="laplacian-sr1")
    x = rand(3, 2, 32, 32)
    eager = ops.consolidate(x)

    def broken(fn, **kw):
        def compiled(*a):
            raise RuntimeError("no working C++ compiler")
        return compiled

    monkeypatch.setattr(torch, "compile", broken)
    ops._compiled = None
    ops.compile()
    assert ops._compiled  # compiled lazily: the failure shows on the first call
    for _ in range(2):
        out = ops.consolidate(x)
        assert all(torch.equal(a, b) for a, b in zip(out, eager))
    assert ops._compiled is False  # eager from then on


@pytest.mark.parametrize("p,n,h,fps,loop,levels", [
    (2, 4, 32, None, False, (3,)), (2, 4, 32, None, False, (1,)),
    (2, 5, 32, [(0, 0), (16, 16), (3, 11), (9, 2)], False, (0, 4)),
    (4, 3, 64, None, False, (2,)), (2, 3, 32, None, True, (1,)),
    (2, 4, 32, [(3, 9), (10, 2), (0, 16), (7, 7)], True, (0, 2))])
def test_known_levels_are_imposed_by_one_product_as_by_impose_known(p, n, h, fps, loop, levels):
    from core.zoom.known import impose_known

    footprints = check_footprints(fps, h, h, p, n, loop)
    ops = stack_operators(n, h, h, p, footprints, loop)
    truth = render_image(rand(n, 3, h, h, seed=1), p, footprints, loop)
    known = {k: truth[k] for k in levels}
    x = rand(n, 3, h, h, seed=2)
    imposed = ops.known_imposer(known)(x)
    torch.testing.assert_close(imposed, impose_known(x, known, p, footprints=footprints, loop=loop),
                               rtol=0, atol=1e-6)
    if not loop:  # the known levels shown (on a loop: except their own miniature)
        for k in levels:
            torch.testing.assert_close(imposed[k], truth[k], rtol=0, atol=1e-6)


def test_each_run_imposes_its_own_known_images():
    # the operators are shared between runs of one configuration; the known images are not
    sched = DDPMScheduler(num_train_timesteps=1000, clip_sample=False)
    kw = dict(num_levels=3, zoom=2, shape=(3, 32, 32), num_inference_steps=3,
              known_guidance="photo")
    for seed in range(3):
        image = render_image(rand(3, 3, 32, 32, seed=seed), 2)[0]
        out = sampler.sample_zoom_stack(lambda z, t, lv: z * 0.5, sched, known={0: image},
                                        generator=torch.Generator().manual_seed(0), **kw)
        torch.testing.assert_close(out.images[0], image, rtol=0, atol=1e-6)
