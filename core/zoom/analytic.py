"""Analytic test models: multi-scale scenes and their exact posterior-mean denoiser.

A "scene" is a consistent zoom stack; the prior at level i is the uniform mixture over the
K scenes' renders at that level. For z_t = α_t x0 + σ_t ε the posterior mean is exact:
    E[x0 | z_t] = Σ_k softmax_k(−‖z_t − α_t X_k‖² / 2σ_t²) X_k.
Used by the tests and the ablation benchmark: the right answer (one scene at every level)
is known, so consistency and sharpness can be measured as numbers.
"""

from __future__ import annotations

import torch

from .geometry import check_footprints
from .zoom_stack import downsample, laplacian_pyramid, render_image, upsample


def make_scenes(num_scenes: int, num_levels: int, shape: tuple[int, int, int], zoom: int,
                generator: torch.Generator | None = None, detail: int = 4, footprints=None,
                loop: bool = False) -> torch.Tensor:
    """Renders of ``num_scenes`` random zoom stacks: ``(K, N, C, H, W)`` in [-1, 1].

    Each layer is smooth random structure (a (H/detail x W/detail) grid upsampled), so every
    level has content of its own at every scale. ``footprints`` / ``loop``: the stacks' geometry
    (``render_image``); with ``loop`` each scene is a cycle (level N is level 0 again: a
    self-similar prior, whose right answer is one scene round the whole cycle).
    """
    layers = _random_layers(num_scenes, num_levels, shape, generator, detail)
    return torch.stack([render_image(stack, zoom, footprints, loop) for stack in layers])


def _random_layers(num_scenes: int, num_levels: int, shape: tuple[int, int, int],
                   generator: torch.Generator | None, detail: int) -> torch.Tensor:
    """``(K, N, C, H, W)`` smooth random layers in [-1, 1]."""
    c, h, w = shape
    coarse = torch.rand((num_scenes * num_levels, c, h // detail, w // detail),
                        generator=generator) * 2 - 1
    return upsample(coarse, (h, w)).reshape(num_scenes, num_levels, c, h, w)


def make_deep_scenes(num_scenes: int, num_levels: int, shape: tuple[int, int, int], zoom: int,
                     generator: torch.Generator | None = None, detail: int = 4,
                     colour: float = 0.7) -> torch.Tensor:
    """Scenes that only the deepest level tells apart: ``(K, N, C, H, W)``.

    Every intermediate layer (1 .. N-2) is the same in all scenes; the outermost layer differs
    (level 0 has its own content to choose) and so does the deepest, whose mean colour is the
    scene's (a share ``colour`` of it is a per-scene colour in [-1, 1]^C, the rest structure).
    With the deepest level known, the levels between carry no evidence of the scene beyond
    their centres: the outermost level learns it only from its view of the deepest level
    (1 pixel at 64 px, p = 4, N = 4). Needs N >= 3.
    """
    if num_levels < 3:
        raise ValueError(f"deep scenes need at least 3 levels, got {num_levels}")
    layers = _random_layers(num_scenes, num_levels, shape, generator, detail)
    layers[:, 1:-1] = layers[:1, 1:-1]
    tint = torch.rand((num_scenes, shape[0], 1, 1), generator=generator) * 2 - 1
    layers[:, -1] = (1 - colour) * layers[:, -1] + colour * tint
    return torch.stack([render_image(stack, zoom) for stack in layers])


def make_field_scenes(num_scenes: int, num_levels: int, shape: tuple[int, int, int],
                      zoom: int, generator: torch.Generator | None = None, footprints=None,
                      loop: bool = False) -> torch.Tensor:
    """Like ``make_scenes`` but each layer is a draw of the scale-invariant Gaussian field
    (1/f² spectrum, natural-image-like texture at every scale) instead of smooth blobs: a
    mixture prior of a different structure, still with one right answer per scene."""
    field = GaussianFieldDenoiser(shape, torch.zeros(1))
    layers = field.sample_prior(num_scenes * num_levels, generator).reshape(
        num_scenes, num_levels, *shape)
    return torch.stack([render_image(stack, zoom, footprints, loop) for stack in layers])


def make_close_scenes(num_scenes: int, num_levels: int, shape: tuple[int, int, int], zoom: int,
                      generator: torch.Generator | None = None, detail: int = 4,
                      spread: float = 0.03) -> torch.Tensor:
    """Scenes with close mean colours: ``(K, N, C, H, W)``.

    Like ``make_scenes``, but every layer's per-channel mean is replaced by one colour shared
    by all scenes (per level) plus a per-scene offset of at most ``spread``: the scenes differ
    in structure, hardly in colour, so a level's few pixels of a coarse view barely tell them
    apart and the low frequencies carry no decision.
    """
    layers = _random_layers(num_scenes, num_levels, shape, generator, detail)
    mean = layers.mean(dim=(-2, -1), keepdim=True)
    offset = (torch.rand(mean.shape, generator=generator) * 2 - 1) * spread
    layers = layers - mean + mean.mean(dim=0, keepdim=True) + offset
    return torch.stack([render_image(stack, zoom) for stack in layers])


#: Analytic scene priors of different structure (benchmarks measure sampling claims on >= 2).
SCENE_PRIORS = {"independent": make_scenes, "deep": make_deep_scenes, "close": make_close_scenes}


class MixtureDenoiser:
    """Exact E[x0 | z_t] per level under a uniform prior over the scenes' renders."""

    def __init__(self, renders: torch.Tensor, alphas_cumprod: torch.Tensor):
        self.renders = renders  # (K, N, C, H, W)
        self.alphas_cumprod = alphas_cumprod.double()

    def __call__(self, z_t: torch.Tensor, t: int, levels: torch.Tensor) -> torch.Tensor:
        return self.posterior_mean(z_t, self.alphas_cumprod[t], levels)

    def posterior_mean(self, z_t: torch.Tensor, ab: torch.Tensor,
                       levels: torch.Tensor) -> torch.Tensor:
        """E[x0 | z_t = √ᾱ x0 + √(1−ᾱ) ε] at any ᾱ (``FlowMatchingDenoiser`` uses it)."""
        ab = torch.as_tensor(ab, dtype=torch.float64)
        x = self.renders[:, levels].double()                          # (K, B, C, H, W)
        d2 = ((z_t.double()[None] - ab.sqrt() * x) ** 2).flatten(2).sum(-1)  # (K, B)
        weights = torch.softmax(-d2 / (2 * (1 - ab)), dim=0)
        return torch.einsum("kb,kbchw->bchw", weights, x).to(z_t.dtype)


def nearest_scene_error(images: torch.Tensor, renders: torch.Tensor) -> tuple[float, int]:
    """RMSE of ``images (N, C, H, W)`` to the closest single scene, and that scene's index."""
    rmse = ((renders - images[None]) ** 2).flatten(1).mean(-1).sqrt()
    k = int(rmse.argmin())
    return float(rmse[k]), k


def per_level_scene(images: torch.Tensor, renders: torch.Tensor) -> list[int]:
    """Index of the nearest scene at each level separately."""
    rmse = ((renders - images[None]) ** 2).flatten(2).mean(-1)  # (K, N)
    return rmse.argmin(0).tolist()


class GaussianFieldDenoiser:
    """Exact E[x0 | z_t] for a stationary, scale-invariant Gaussian prior (natural-image-like).

    Every level's prior is the same periodic Gaussian field with power spectrum
    S(f) ∝ 1/(|f|² + f0²) (the 1/f² law of natural images, which D_p maps to itself). In the
    orthonormal Fourier basis the posterior mean is diagonal:
        x̂_f = α_t S_f / (α_t² S_f + σ_t²) · z_f.
    Unlike the finite mixture, this prior has a continuum of detail, so blur is measurable:
    the finest-band energy of a sample should match that of prior draws.
    """

    def __init__(self, shape: tuple[int, int, int], alphas_cumprod: torch.Tensor,
                 std: float = 0.5):
        _, h, w = shape
        fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
        fx = torch.fft.rfftfreq(w, dtype=torch.float64)[None, :]
        spectrum = 1.0 / (fy**2 + fx**2 + (1.0 / max(h, w)) ** 2)
        # full-grid mean of S = pixel variance (rfft keeps half the columns: weight them)
        weight = torch.full_like(fx, 2.0)
        weight[:, 0] = 1.0
        if w % 2 == 0:
            weight[:, -1] = 1.0
        spectrum = spectrum * std**2 / float((spectrum * weight).sum() / (h * w))
        self.spectrum, self.shape = spectrum, shape
        self.alphas_cumprod = alphas_cumprod.double()

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` exact prior draws ``(n, C, H, W)``."""
        white = torch.randn((n, *self.shape), generator=generator, dtype=torch.float64)
        f = torch.fft.rfft2(white, norm="ortho") * self.spectrum.sqrt()
        return torch.fft.irfft2(f, s=self.shape[1:], norm="ortho").float()

    def __call__(self, z_t: torch.Tensor, t: int, levels: torch.Tensor) -> torch.Tensor:
        return self.posterior_mean(z_t, self.alphas_cumprod[t], levels)

    def posterior_mean(self, z_t: torch.Tensor, ab: torch.Tensor,
                       levels: torch.Tensor) -> torch.Tensor:
        return _wiener(z_t, self.spectrum, torch.as_tensor(ab, dtype=torch.float64))


class FlowMatchingDenoiser:
    """An analytic prior on the rectified-flow path z_σ = (1−σ) x0 + σ ε (SD3, FLUX), called
    as a flow backend's denoiser is: t = 1000 σ (a float), returning x̂0.

    z_σ / √((1−σ)² + σ²) is the variance-preserving z_t with ᾱ = (1−σ)² / ((1−σ)² + σ²), so
    the exact posterior mean is the VP prior's (``vp.posterior_mean``) at that ᾱ.
    """

    def __init__(self, vp, num_train_timesteps: int = 1000):
        self.vp, self.total = vp, float(num_train_timesteps)

    def __call__(self, z_t: torch.Tensor, t: float, levels: torch.Tensor) -> torch.Tensor:
        sigma = torch.tensor(float(t) / self.total, dtype=torch.float64)
        norm2 = (1 - sigma) ** 2 + sigma**2
        z_vp = (z_t.double() / norm2.sqrt()).to(z_t.dtype)
        return self.vp.posterior_mean(z_vp, (1 - sigma) ** 2 / norm2, levels)


def _wiener(y: torch.Tensor, spectrum: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """E[x | y = √ᾱ x + √(1-ᾱ) ε] for x ~ the periodic Gaussian field with ``spectrum``:
    F⁻¹[√ᾱ S / (ᾱ S + 1 - ᾱ) · F(y)] (diagonal in the orthonormal Fourier basis)."""
    gain = ab.sqrt() * spectrum / (ab * spectrum + (1 - ab))
    f = torch.fft.rfft2(y.double(), norm="ortho") * gain
    return torch.fft.irfft2(f, s=y.shape[-2:], norm="ortho").to(y.dtype)


class SuperResolutionDenoiser:
    """Exact E[x0 | z_t, base] of a synthetic ×``factor`` super-resolution model.

    Level i's high-resolution image is x = U(b_i) + d: its low-resolution conditioning b_i
    bilinearly upsampled, plus detail d drawn from a periodic Gaussian field that lives above
    the base's band (the 1/f² spectrum times a high-pass (f/f_c)⁴ / (1 + (f/f_c)⁴) at the base's
    Nyquist f_c = 1/(2·factor)). Given z_t = α_t x + σ_t ε the posterior mean is U(b_i) plus the
    Wiener filter of the residual, diagonal in Fourier:
        x̂0 = U(b_i) + F⁻¹[α S_d / (α² S_d + σ²) · F(z_t − α U(b_i))].
    Different levels draw independent detail, like an upscaler run on each level alone; the
    conditioning is picked per row by level index, as a real SR stage's is.

    ``continued``: the detail continues the base prior's 1/f² law (a GaussianFieldDenoiser
    of the base's size and ``std``) at the same energy per octave. By default the large field
    is normalised to pixel variance std² on its own grid, which spreads the same variance
    over two more octaves: its detail has 1/1.39 of the base's energy per octave (×4 from
    64 px), a step in the spectrum at the base's Nyquist that a real upscaler would not make.
    """

    def __init__(self, base: torch.Tensor, factor: int, alphas_cumprod: torch.Tensor,
                 std: float = 0.5, continued: bool = False):
        n, c, h, w = base.shape
        big = (c, h * factor, w * factor)
        self.upsampled = upsample(base, big[1:])
        field = GaussianFieldDenoiser(big, alphas_cumprod, std)
        fy = torch.fft.fftfreq(big[1], dtype=torch.float64)[:, None]
        fx = torch.fft.rfftfreq(big[2], dtype=torch.float64)[None, :]
        r4 = ((fy**2 + fx**2) * (2 * factor) ** 2) ** 2
        self.spectrum = field.spectrum * r4 / (1 + r4)
        if continued:  # S = k / (f² + f0²) in cycles per pixel: the same k as the base's field
            self.spectrum = self.spectrum * (_field_constant(GaussianFieldDenoiser(
                (c, h, w), alphas_cumprod, std)) / _field_constant(field))
        self.shape, self.alphas_cumprod = big, alphas_cumprod.double()

    def __call__(self, z_t: torch.Tensor, t: int, levels: torch.Tensor) -> torch.Tensor:
        ab = self.alphas_cumprod[t]
        up = self.upsampled[levels].to(z_t)
        return up + _wiener(z_t - ab.sqrt().to(z_t.dtype) * up, self.spectrum, ab)


def _field_constant(field: GaussianFieldDenoiser) -> float:
    """k of a field's spectrum S(f) = k / (|f|² + f0²) (f in cycles per pixel)."""
    _, h, w = field.shape
    return float(field.spectrum[0, 1] * ((1.0 / w) ** 2 + (1.0 / max(h, w)) ** 2))


def band_energies(x: torch.Tensor, zoom: int, bands: int) -> list[float]:
    """Mean energy of the ``bands`` finest Laplacian bands of ``(..., C, H, W)`` (finest first)."""
    pyramid = laplacian_pyramid(x.reshape(-1, *x.shape[-3:]), zoom, bands)
    return [float(b.pow(2).mean()) for b in pyramid[:bands]]


# ----------------------------------------------------------------------------- metrics
def detail_energy(x: torch.Tensor) -> float:
    """Mean energy of the finest Laplacian band of ``(..., C, H, W)`` images (blur lowers it)."""
    return float(laplacian_pyramid(x.reshape(-1, *x.shape[-3:]), 2, 1)[0].pow(2).mean())


def inconsistency(images: torch.Tensor, zoom: int, footprints=None, loop: bool = False) -> float:
    """Largest RMS difference between the footprint of image i+1 in image i and D_p(image i+1)
    (0 = consistent); on a loop the wrap link (level 0 in level N-1) counts too."""
    n, _, height, width = images.shape
    fps = check_footprints(footprints, height, width, zoom, n, loop)
    h, w = height // zoom, width // zoom
    return max((float((images[i][..., t:t + h, l:l + w] - downsample(images[(i + 1) % n], zoom))
                      .pow(2).mean().sqrt()) for i, (l, t) in enumerate(fps)), default=0.0)


def seam_ratio(images: torch.Tensor, zoom: int, footprints=None, loop: bool = False) -> float:
    """Energy of the pixel differences across the border of each footprint (the finer level's
    region), relative to the mean neighbour-difference energy of the images: about 1 when the
    finer content is seamless, > 1 when a visible edge surrounds it ("inconsistencies at layer
    boundaries"). Border sides that lie on the frame's edge have no pixel across: skipped."""
    n, _, height, width = images.shape
    fps = check_footprints(footprints, height, width, zoom, n, loop)
    x = images[:len(fps)]
    h, w = height // zoom, width // zoom
    dy = (x[..., 1:, :] - x[..., :-1, :]).pow(2)  # dy[r] = row r+1 - row r
    dx = (x[..., :, 1:] - x[..., :, :-1]).pow(2)
    across = []
    for i, (left, top) in enumerate(fps):  # a few slices per level
        if top > 0:
            across.append(dy[i, ..., top - 1, left:left + w].flatten())
        if top + h < height:
            across.append(dy[i, ..., top + h - 1, left:left + w].flatten())
        if left > 0:
            across.append(dx[i, ..., top:top + h, left - 1].flatten())
        if left + w < width:
            across.append(dx[i, ..., top:top + h, left + w - 1].flatten())
    return float(torch.cat(across).mean() / ((dy.mean() + dx.mean()) / 2))
