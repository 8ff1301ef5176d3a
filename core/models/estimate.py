"""Peak device memory and time per step of a generate() run, before anything heavy is loaded.

Torch-free (stdlib): the add-on shows the estimate in its panel and ``python -m core generate
--dry-run`` prints it without importing torch. ``generate()`` uses the same formulas, with the
loaded model's real sizes and the device's real free memory, to pick the largest micro-batch
that fits when none is given.

Memory (bytes; ``e`` = bytes per element: 2 for fp16 on GPUs, 4 for fp32 on the CPU):

    peak = weights + max(UNet activations, VAE decode activations) + overhead
    weights      = (UNet + text encoders + VAE [+ IF stage II]) parameters · e
    UNet         = rows_per_call · K_unet · h · w · e     (h, w: the sampled latent/pixel size)
    K_unet       = c0 · (25 + 0.5 · L)  if the first UNet level has attention (SD 1.x/2.x)
                   c0 · (12 + 1.9 · L)  otherwise (SDXL, DeepFloyd IF)
    VAE decode   = levels_per_call · (4 + L_vae) · c0_vae · H · W · e_vae   (H, W: pixels)
                   on a GPU (e = 2) × (1.25 + 0.5 / levels_per_call): cuDNN's convolution
                   workspaces and upsampling temporaries, measured on an H200 (docs/backends.md)
    overhead     = 3 % of the weights + 256 MB (sampler state, text encoding, allocator slack)

c0 is the first entry of the UNet's (VAE decoder's) ``block_out_channels``, L its
``layers_per_block``. The constants were fitted on the live-tensor peak of diffusers' UNet and
VAE forward passes traced on the ``meta`` device (benchmarks/memtrack.py) for the SD 1.5, SD
2.1, SDXL UNets and the SD VAE at several sizes and batches; they are linear in the batch and
in h · w (PyTorch's fused attention keeps no (h·w)² matrices). With classifier-free guidance a
step needs 2N UNet rows (N = levels); micro-batch k runs min(k, 2N) rows and decodes min(k, N)
levels per call.

Rectified-flow transformers (SD3/SD3.5, FLUX.1; ``ModelSpec.transformer``): activations per
row = (a · T + b · T²) · e with T = h·w/4 latent tokens (2 x 2 patches), a and b fitted on the
live-tensor peak of the real configurations traced on ``meta`` (SDPA's math path there, so the
T² term is an upper bound for fused attention). Their text encoders (T5-XXL: 4.8B parameters)
are on the device only while the prompts are encoded: peak = max(encoding: transformer + VAE +
encoders, sampling: transformer + VAE + activations) + overhead. bf16 (e = 2); with too little
memory on a GPU that has fp8 (compute capability 8.9+: Ada, Hopper, Blackwell) the transformer's
weights are stored in fp8 (1 byte each, computed in bf16). No GPU figures were measured for
these families (no GPU was available): the constants are the traced ones.

Time per step = rows · FLOPs(h, w) / device throughput (FLOPs per row counted with
torch.utils.flop_counter for the family's reference UNet, scaled by the UNet's size).
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace

from ..errors import InvalidInputError
from .families import LATENT_FAMILIES, UPSCALE_STAGES, VAE_SCALE, family_hint, upscale_factor

GB = 1e9
OVERHEAD_FIXED = 256 * 2**20
OVERHEAD_FRACTION = 0.03
#: part of the free memory the run may plan to use (allocator fragmentation, cuDNN workspaces)
USABLE_FRACTION = 0.9
HOURS_WARNING = 1.0  # warn when a CPU run would take longer than this


@dataclass(frozen=True)
class ModelSpec:
    """What the estimate needs to know of a model (from its configs, else family defaults)."""

    family: str
    unet_params: int
    other_params: int            # text encoders + VAE (+ IF stage II UNet)
    unet_c0: int = 320
    unet_layers: int = 2
    top_attention: bool = True
    vae_c0: int = 128            # 0: no VAE (pixel-space model)
    vae_layers: int = 2
    native: int = 512            # native size in pixels
    upcast_vae: bool = False     # SDXL's VAE decodes in fp32
    sr_params: int = 0           # IF stage II UNet (loaded after sampling)
    sr_c0: int = 0
    source: str = "defaults"     # "defaults" or the folder the numbers came from
    # rectified-flow transformers (SD3, FLUX): per-row activations (a·T + b·T²)·e, T tokens
    transformer: bool = False
    dit_a: float = 0.0
    dit_b: float = 0.0
    dit_width: int = 0           # layers x hidden size (attention FLOPs)
    text_tokens: int = 0         # prompt tokens the transformer attends with
    encoder_params: int = 0      # text encoders: on the device only while encoding

    @property
    def latent(self) -> bool:
        return self.family in LATENT_FAMILIES

    def row_elements(self, h: int, w: int) -> float:
        """Activation elements of one denoiser row at latent size h x w."""
        if self.transformer:
            tokens = (h // 2) * (w // 2)
            return self.dit_a * tokens + self.dit_b * tokens**2
        return self.k_unet() * h * w

    def k_unet(self) -> float:
        if self.top_attention:
            return self.unet_c0 * (25.0 + 0.5 * self.unet_layers)
        return self.unet_c0 * (12.0 + 1.9 * self.unet_layers)

    def k_vae(self) -> float:
        return (4.0 + self.vae_layers) * self.vae_c0


#: Reference models (parameter counts of the released weights).
SPECS = {
    "sd": ModelSpec("sd", 865_910_724, 340_387_840 + 83_653_863, native=512),           # SD 2.1 base
    "sd1": ModelSpec("sd", 859_520_964, 123_060_480 + 83_653_863, native=512),          # SD 1.x
    "sd2-768": ModelSpec("sd", 865_910_724, 340_387_840 + 83_653_863, native=768),      # SD 2.1
    "sdxl": ModelSpec("sdxl", 2_567_463_684, 123_060_480 + 694_659_840 + 83_653_863,
                      top_attention=False, native=1024, upcast_vae=True),
    # IF-I-XL + T5-XXL encoder; stage II (IF-II-L) loaded after sampling. Uncalibrated layout.
    "if": ModelSpec("if", 4_300_000_000, 4_762_310_656, unet_c0=512, unet_layers=3,
                    top_attention=False, vae_c0=0, native=64, sr_params=1_220_000_000, sr_c0=256),
}
# Rectified-flow transformers: a, b traced on meta (benchmarks/memtrack.py, real configs:
# 1024 and 4096 tokens, batch 1 and 2 — exactly linear in the batch); text encoders CLIP-L
# (123M), OpenCLIP-bigG (695M, SD3 only), T5-XXL encoder (4.76B); 16-channel VAE (84M).
_T5, _CLIP_L, _CLIP_G, _VAE16 = 4_762_310_656, 123_060_480, 694_659_840, 83_819_683
SPECS.update({
    "sd3": ModelSpec("sd3", 8_056_627_520, _VAE16, native=1024, transformer=True,  # SD3.5 Large
                     dit_a=169_279, dit_b=144.88, dit_width=38 * 2432, text_tokens=333,
                     encoder_params=_CLIP_L + _CLIP_G + _T5),
    "sd3-medium": ModelSpec("sd3", 2_028_328_000, _VAE16, native=1024, transformer=True,
                            dit_a=106_913, dit_b=91.51, dit_width=24 * 1536, text_tokens=333,
                            encoder_params=_CLIP_L + _CLIP_G + _T5),
    "flux": ModelSpec("flux", 11_901_408_320, _VAE16, native=1024, transformer=True,
                      dit_a=219_811, dit_b=83.18, dit_width=57 * 3072, text_tokens=512,
                      encoder_params=_CLIP_L + _T5),
})
#: GPUs with fp8 (compute capability 8.9+), by name, for the torch-free estimate.
FP8_GPUS = ("H200", "H100", "H20", "L40", "L4", "4090", "4080", "4070", "4060", "B200", "B100",
            "5090", "5080", "5070", "GB200", "RTX 6000 Ada")

#: The ×4 super-resolution stages beyond stage I (core/backends/super_resolution.py), loaded
#: beside it: stabilityai/stable-diffusion-x4-upscaler (UNet, OpenCLIP-H text encoder, VAE of
#: factor 4; samples latents at its input's size). DeepFloyd IF's stage II is part of IF's
#: SPECS entry (``sr_params``).
SR_SPECS = {
    "x4": ModelSpec("x4", 473_000_000, 340_387_840 + 55_000_000, unet_c0=256, unet_layers=2,
                    top_attention=False, vae_c0=128, native=128),
}
#: Per stage: (tile, tile overlap) in sample pixels, guidance, most steps (its default_steps:
#: the run takes min(steps, this)).
SR_STAGE = {"x4": (128, 32, 9.0, 50)}
#: Activations of an SR stage beyond its tile rows (core.backends.upscale.TILE_FIXED_BYTES).
SR_FIXED_BYTES = 512 * 2**20
#: FLOPs of one UNet row: a·(h·w) + b·(h·w)², (h, w) the sampled size (latents for SD/SDXL).
#: "x4": one 128 x 128 tile of the x4 upscaler, from its H200 run (docs/sr_cost_h200.jsonl:
#: 200 rows per step in ≈ 1.7 s at the H200's 220 TFLOP/s), all of it per position.
FLOPS = {"sd": (1.6914e8, 6584.0), "sdxl": (3.797e8, 2.016e3), "if": (6.0e8, 8000.0),
         "x4": (1.14e8, 0.0)}
#: FLOPs per output pixel of one VAE decode + one encode (SD's VAE, block_out_channels[0] =
#: 128, scaled by (c0 / 128)²; ≈ 2.5 and 1.1 TFLOP at 512 px): pixel blending decodes and
#: re-encodes every level on each blended step.
VAE_FLOPS_PER_PIXEL = 9.5e6 + 4.3e6
#: Effective fp16 throughput of common GPUs (FLOP/s) on UNet-sized batches; default below.
GPU_FLOPS = (("H200", 220e12), ("H100", 200e12), ("A100", 120e12), ("L40", 110e12),
             ("4090", 100e12), ("A6000", 60e12), ("4080", 60e12), ("3090", 45e12),
             ("A10", 40e12), ("4070", 35e12), ("3080", 35e12), ("V100", 30e12),
             ("3060", 15e12), ("T4", 12e12))
GPU_FLOPS_DEFAULT = 25e12
MPS_FLOPS = 8e12
CPU_FLOPS_PER_CORE = 40e9  # fp32; 2 busy cores measured ~100 GFLOP/s on SD (docs/backends.md)


@dataclass
class DeviceInfo:
    kind: str                 # "cuda", "mps" or "cpu"
    name: str
    total_bytes: int | None
    free_bytes: int | None
    cores: int = 1

    def flops(self) -> float:
        if self.kind == "cuda":
            for key, value in GPU_FLOPS:
                if key.lower() in self.name.lower():
                    return value
            return GPU_FLOPS_DEFAULT
        if self.kind == "mps":
            return MPS_FLOPS
        return CPU_FLOPS_PER_CORE * max(1, self.cores)

    @property
    def bytes_per_element(self) -> int:
        return 4 if self.kind == "cpu" else 2


@dataclass
class Estimate:
    family: str
    device: str
    levels: int
    rows: int                      # UNet rows per step (2N with guidance)
    micro_batch: int | None        # what the run uses (None: all rows at once)
    auto: bool                     # micro_batch was chosen here
    weights_bytes: int
    unet_bytes: int
    decode_bytes: int
    overhead_bytes: int
    peak_bytes: int
    free_bytes: int | None
    seconds_per_step: float
    total_seconds: float
    steps: int
    fits: bool | None
    spec_source: str
    warnings: list[str] = field(default_factory=list)
    upscale: int = 1                  # output size ÷ sampled size
    upscale_bytes: int = 0            # peak of the ×4 stages (loaded beside stage I), 0: none
    upscale_seconds: float = 0.0      # the ×4 stages, all their steps
    pixel_blend_seconds: float = 0.0  # decoding + re-encoding on the pixel-blended steps
    download_bytes: int = 0        # flow families: disk needed by a hub download (bf16 files)
    fp8: bool = False              # transformer weights stored in fp8 to fit

    def to_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        mb = "all at once" if self.micro_batch is None else f"{self.micro_batch} rows per call"
        how = "chosen to fit" if self.auto else "as set"
        free = f" of {self.free_bytes / GB:.1f} GB free" if self.free_bytes else ""
        out = [
            f"Memory: about {self.peak_bytes / GB:.1f} GB{free} on {self.device} "
            f"(weights {self.weights_bytes / GB:.1f} GB)",
            f"Micro-batch: {mb} ({how}); {self.rows} UNet rows per step",
            f"Time: about {_duration(self.seconds_per_step)} per step, "
            f"{_duration(self.total_seconds)} for {self.steps} steps",
        ]
        if self.download_bytes:
            out.append(f"Download: about {self.download_bytes / GB:.0f} GB of disk (bf16 weights; "
                       "text encoders leave the GPU after encoding)")
        if self.fp8:
            out.append("fp8: the transformer's weights are stored in fp8 to fit (computed in bf16)")
        if self.upscale_bytes:
            out.append(f"Upscale x{self.upscale}: about {self.upscale_bytes / GB:.1f} GB at its peak, "
                       f"{_duration(self.upscale_seconds)} (in the time above)")
        if self.pixel_blend_seconds:
            out.append(f"Pixel blend: {_duration(self.pixel_blend_seconds)} of decoding and "
                       "re-encoding (in the time above)")
        return out + self.warnings


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds:.2f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# ------------------------------------------------------------------------------- model specs
def _json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _params_in(folder: str) -> int:
    """Parameters of a component folder from its safetensors headers (0 if none readable)."""
    from .cache import _is_variant, safetensors_params

    total = 0
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    for n in names:
        if n.endswith(".safetensors") and not _is_variant(n):
            try:
                total += safetensors_params(os.path.join(folder, n))
            except Exception:  # noqa: BLE001 - an unreadable header: fall back to defaults
                return 0
    return total


def _default_spec(model: str, family: str) -> ModelSpec:
    name = model.lower()
    if family == "sd":
        if "v1" in name or "1-5" in name or "1.5" in name or "1-4" in name:
            return SPECS["sd1"]
        if ("2-1" in name or "2-0" in name or "stable-diffusion-2" in name) and "base" not in name:
            return SPECS["sd2-768"]
        return SPECS["sd"]
    if family == "sd3" and "medium" in name:
        return SPECS["sd3-medium"]
    return SPECS.get(family, SPECS["sd"])


def _transformer_spec(folder: str, family: str, fallback: ModelSpec) -> ModelSpec:
    """A rectified-flow folder's sizes: transformer, VAE and text encoders from their headers;
    the traced activation constants scaled by the transformer's width (layers x hidden)."""
    cfg = _json(os.path.join(folder, "transformer", "config.json"))
    layers = int(cfg.get("num_layers", 0)) + int(cfg.get("num_single_layers", 0))
    hidden = int(cfg.get("num_attention_heads", 0)) * int(cfg.get("attention_head_dim", 0))
    width = layers * hidden or fallback.dit_width
    scale = width / fallback.dit_width
    encoders = [_params_in(os.path.join(folder, c)) for c in ("text_encoder", "text_encoder_2",
                                                              "text_encoder_3")]
    return replace(
        fallback, family=family,
        unet_params=_params_in(os.path.join(folder, "transformer")) or fallback.unet_params,
        other_params=_params_in(os.path.join(folder, "vae")) or fallback.other_params,
        encoder_params=sum(encoders) if any(encoders) else fallback.encoder_params,
        dit_a=fallback.dit_a * scale, dit_b=fallback.dit_b * scale, dit_width=width,
        source=folder)


def spec_from_folder(folder: str, family: str, fallback: ModelSpec) -> ModelSpec:
    """Sizes from a diffusers folder's configs and safetensors headers (torch-free)."""
    if fallback.transformer:
        return _transformer_spec(folder, family, fallback)
    unet = _json(os.path.join(folder, "unet", "config.json"))
    if not unet:
        return fallback
    blocks = unet.get("block_out_channels") or [fallback.unet_c0]
    down = unet.get("down_block_types") or ["CrossAttnDownBlock2D"]
    lpb = unet.get("layers_per_block", 2)
    lpb = lpb[0] if isinstance(lpb, (list, tuple)) else lpb
    vae = _json(os.path.join(folder, "vae", "config.json"))
    index = _json(os.path.join(folder, "model_index.json"))
    unet_params = _params_in(os.path.join(folder, "unet")) or fallback.unet_params
    others = [c for c, v in index.items() if not c.startswith("_") and c != "unet"
              and isinstance(v, list) and v[0] and c not in ("safety_checker", "feature_extractor",
                                                             "watermarker")]
    counted = [_params_in(os.path.join(folder, c)) for c in others]
    other = sum(counted) if any(counted) else fallback.other_params
    sample = unet.get("sample_size") or fallback.native
    sample = sample[0] if isinstance(sample, (list, tuple)) else sample
    vscale = 2 ** (len(vae.get("block_out_channels", [])) - 1) if vae else 1
    return replace(
        fallback, family=family, unet_params=int(unet_params), other_params=int(other),
        unet_c0=int(blocks[0]), unet_layers=int(lpb),
        top_attention="Attn" in str(down[0]) and "Simple" not in str(down[0]),
        vae_c0=int((vae.get("block_out_channels") or [0])[0]) if vae else 0,
        vae_layers=int(vae.get("layers_per_block", 2)) if vae else 0,
        native=int(sample) * vscale, upcast_vae=bool(vae.get("force_upcast", False)) and family == "sdxl",
        source=folder,
    )


def model_spec(model: str, family: str | None = None) -> ModelSpec:
    """The spec of a model name: a local folder or a complete cached snapshot when there is
    one (its real sizes), else the family's reference numbers."""
    try:
        fam = family or family_hint(model)
    except Exception:  # noqa: BLE001 - an unsupported folder: validation reports it
        fam = "sd"
    fallback = _default_spec(model, fam)
    path = os.path.expanduser(model.strip())
    folder = None
    if os.path.isdir(path):
        folder = path
    elif not os.path.isfile(path) and path.count("/") == 1:
        try:
            from .cache import cached_snapshot

            folder = cached_snapshot(path)
        except Exception:  # noqa: BLE001 - no huggingface_hub yet: defaults
            folder = None
    return spec_from_folder(folder, fam, fallback) if folder else fallback


# ------------------------------------------------------------------------------- devices
_device_cache: dict[str, tuple[float, DeviceInfo]] = {}


def _cpu_info() -> DeviceInfo:
    total = free = None
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            info = {ln.split(":")[0]: int(ln.split()[1]) * 1024 for ln in f if ":" in ln}
        total, free = info.get("MemTotal"), info.get("MemAvailable")
    except (OSError, ValueError, IndexError):
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return DeviceInfo("cpu", platform.processor() or "CPU", total, free, cores)


def _nvidia_smi() -> list[DeviceInfo]:
    """The CUDA GPUs nvidia-smi sees, in index order ([] without nvidia-smi or a GPU)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=name,memory.total,memory.free",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=3).stdout.strip().splitlines()
        gpus = []
        for line in out:
            name, total, free = [x.strip() for x in line.split(",")]
            gpus.append(DeviceInfo("cuda", name, int(float(total) * 2**20), int(float(free) * 2**20)))
        return gpus
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return []


def cuda_count() -> int:
    """CUDA GPUs on this machine: torch's count when torch is loaded, else nvidia-smi's."""
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available():
            return int(torch.cuda.device_count())
    except Exception:  # noqa: BLE001 - driver trouble: ask nvidia-smi
        pass
    return len(_nvidia_smi())


def _torch_info(device: str) -> DeviceInfo | None:
    torch = sys.modules.get("torch")  # only when already imported: never import it for this
    if torch is None:
        return None
    try:
        if device in ("auto", "cuda") or device.startswith("cuda"):
            if torch.cuda.is_available():
                idx = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
                free, total = torch.cuda.mem_get_info(idx)
                return DeviceInfo("cuda", torch.cuda.get_device_name(idx), int(total), int(free))
            if device != "auto":
                return None
        if device in ("auto", "mps") and getattr(torch.backends, "mps", None) is not None \
                and torch.backends.mps.is_available():
            total = int(torch.mps.recommended_max_memory())
            used = int(torch.mps.driver_allocated_memory())
            return DeviceInfo("mps", "Apple GPU", total, max(0, total - used))
    except Exception:  # noqa: BLE001 - any driver trouble: fall back to the torch-free probes
        return None
    return _cpu_info() if device in ("auto", "cpu") else None


def device_info(device: str = "auto", max_age: float = 30.0) -> DeviceInfo:
    """The device a run on ``device`` would use and its free memory (cached ``max_age`` s)."""
    device = (device or "auto").strip().lower()
    hit = _device_cache.get(device)
    if hit is not None and time.monotonic() - hit[0] < max_age:
        return hit[1]
    info = _torch_info(device)
    if info is None:
        if device == "cpu":
            info = _cpu_info()
        elif device.startswith("cuda") or device == "auto":
            gpus, index = _nvidia_smi(), int(device[5:]) if device[5:].isdigit() else 0
            info = gpus[index] if index < len(gpus) else None
        if info is None and (device == "mps" or (device == "auto" and sys.platform == "darwin"
                                                 and platform.machine() == "arm64")):
            cpu = _cpu_info()  # unified memory
            info = DeviceInfo("mps", "Apple GPU", cpu.total_bytes, cpu.free_bytes)
        if info is None:
            info = _cpu_info() if device == "auto" else DeviceInfo(device.split(":")[0], device, None, None)
    _device_cache[device] = (time.monotonic(), info)
    return info


def check_device(device: str, info: DeviceInfo) -> None:
    """InvalidInputError when the device asked for is not on this machine (``info``: what
    ``device_info`` found for it): no estimate for a GPU that is not there."""
    device = (device or "auto").strip().lower()
    kind = device.split(":")[0]
    if kind == "cuda" and (info.kind != "cuda" or info.total_bytes is None):
        count = cuda_count()
        if not count:
            raise InvalidInputError(f"device {device!r} was asked for but no CUDA GPU was found; "
                                    "use auto or cpu")
        raise InvalidInputError(f"there is no GPU {device!r}: {count} found (cuda:0 to "
                                f"cuda:{count - 1})")
    if kind == "mps" and (info.kind != "mps" or sys.platform != "darwin"):
        raise InvalidInputError(f"device {device!r} was asked for but Apple Metal is not available "
                                "(Apple silicon Macs only); use auto or cpu")


# ------------------------------------------------------------------------------- the estimate
def unet_rows(levels: int, guidance: float, family: str = "") -> int:
    """Denoiser rows per step: 2N with classifier-free guidance (<= 1: none; FLUX never uses
    it: [dev] embeds the guidance scale in one conditional pass)."""
    return 2 * levels if guidance > 1.0 and family != "flux" else levels


def sample_size(spec: ModelSpec, width: int | None, height: int | None) -> tuple[int, int, int, int]:
    """(H, W) in pixels and (h, w) the UNet samples."""
    H, W = height or spec.native, width or spec.native
    f = VAE_SCALE if spec.latent else 1
    return H, W, max(1, H // f), max(1, W // f)


#: GPU VAE decode over the traced live-tensor peak: (GPU_DECODE_SCALE · levels +
#: GPU_DECODE_EXTRA) per-level peaks. Fitted on an H200 (SD 2.1 VAE fp16 at 1 and 4 levels,
#: SDXL VAE fp32 at 1 and 2 levels; benchmarks/estimate_check.py --device cuda): the traced
#: peak alone read 0.65-0.76 of torch.cuda.max_memory_allocated there.
GPU_DECODE_SCALE, GPU_DECODE_EXTRA = 1.25, 0.5


def activation_bytes(spec: ModelSpec, rows_per_call: int, levels_per_decode: int,
                     height: int | None, width: int | None, e: int,
                     gpu: bool | None = None) -> tuple[int, int]:
    """(UNet activations, decode activations) at the peak of one call, in bytes.
    ``gpu``: add the GPU decode workspaces (default: when ``e`` is 2, i.e. an fp16 GPU run)."""
    H, W, h, w = sample_size(spec, width, height)
    gpu = e == 2 if gpu is None else gpu
    unet = rows_per_call * spec.row_elements(h, w) * e
    if spec.latent:
        e_vae = 4 if spec.upcast_vae else e
        per_level = spec.k_vae() * H * W * e_vae
        levels = (GPU_DECODE_SCALE * levels_per_decode + GPU_DECODE_EXTRA) if gpu \
            else levels_per_decode
        decode = levels * per_level
    elif not spec.sr_params:  # a pixel model without its stage II: nothing to decode
        decode = 0
    else:  # IF stage II: 2 guided rows per level at 4x the size
        sr_rows = max(2, 2 * max(1, levels_per_decode // 2))
        decode = sr_rows * (spec.sr_c0 or spec.unet_c0) * 13.8 * (4 * H) * (4 * W) * e
    return int(unet), int(decode)


def weights_bytes(spec: ModelSpec, e: int, fp8: bool = False) -> int:
    """Weights resident on the device while sampling (fp8: the transformer at 1 byte each)."""
    if spec.transformer:
        return int(spec.unet_params * (1 if fp8 else e) + spec.other_params * e)
    extra = spec.vae_c0 and spec.upcast_vae and 83_653_863 * 2  # fp32 copy of SDXL's VAE
    return int((spec.unet_params + spec.other_params + spec.sr_params) * e + (extra or 0))


#: Reconstruction guidance (known levels coarser than an unknown one, docs/sampler.md) keeps
#: every activation of a UNet call for the backward pass: per UNet row, this many times one
#: forward's peak (measured: SD 1.5 config, fp32, 64² latents, +1.75 GB per row against the
#: 0.136 GB ``activation_bytes`` gives one row; docs/known_levels_cost.json). The sampler
#: runs the backward pass per micro-batch, so the micro-batch bounds it.
RECONSTRUCTION_ROW_FACTOR = 12.8


def peak_bytes(spec: ModelSpec, levels: int, guidance: float, micro_batch: int | None,
               height: int | None, width: int | None, e: int,
               with_weights: bool = True, fp8: bool = False,
               reconstruct: bool = False) -> tuple[int, int, int, int, int]:
    """(peak, weights, unet, decode, overhead) bytes for one run. ``reconstruct``: with
    reconstruction guidance (the UNet's activations kept for the backward pass)."""
    rows = unet_rows(levels, guidance, spec.family)
    k = rows if micro_batch is None else max(1, min(micro_batch, rows))
    lv = levels if micro_batch is None else max(1, min(micro_batch, levels))
    unet, decode = activation_bytes(spec, k, lv, height, width, e)
    if reconstruct:
        unet = int(unet * RECONSTRUCTION_ROW_FACTOR)
    weights = weights_bytes(spec, e, fp8)
    overhead = int(OVERHEAD_FRACTION * weights + OVERHEAD_FIXED)
    # flow families: the text encoders visit the device before sampling, not during it
    working = max(unet, decode, spec.encoder_params * e if with_weights else 0)
    total = working + overhead + (weights if with_weights else 0)
    return total, weights, unet, decode, overhead


def largest_micro_batch(spec: ModelSpec, levels: int, guidance: float, height: int | None,
                        width: int | None, e: int, budget_bytes: float,
                        with_weights: bool = True, fp8: bool = False,
                        reconstruct: bool = False) -> int | None:
    """The largest micro-batch whose peak fits ``budget_bytes``: None = all rows at once fits;
    1 when even one row does not fit (the run will say so)."""
    rows = unet_rows(levels, guidance, spec.family)
    kw = dict(with_weights=with_weights, fp8=fp8, reconstruct=reconstruct)
    if peak_bytes(spec, levels, guidance, None, height, width, e, **kw)[0] <= budget_bytes:
        return None
    best = 1
    for k in range(1, rows + 1):
        if peak_bytes(spec, levels, guidance, k, height, width, e, **kw)[0] <= budget_bytes:
            best = k
    return best


def seconds_per_step(spec: ModelSpec, rows: int, height: int | None, width: int | None,
                     info: DeviceInfo) -> float:
    _, _, h, w = sample_size(spec, width, height)
    if spec.transformer:  # 2 FLOPs per parameter per token + attention (QKᵀ and AV)
        tokens = (h // 2) * (w // 2) + spec.text_tokens
        return rows * (2 * spec.unet_params * tokens + 4 * spec.dit_width * tokens**2) / info.flops()
    a, b = FLOPS.get(spec.family, FLOPS["sd"])
    ref = SPECS["sdxl" if spec.family == "sdxl" else spec.family if spec.family in SPECS else "sd"]
    scale = spec.unet_params / ref.unet_params
    flops = rows * (a * h * w + b * (h * w) ** 2) * scale
    return flops / info.flops()


def download_bytes(spec: ModelSpec) -> int:
    """Disk a hub download needs: every component's weights in bf16 (the release format)."""
    return 2 * (spec.unet_params + spec.other_params + spec.encoder_params)


def use_fp8(spec: ModelSpec, info: DeviceInfo, budget_bytes: float | None, levels: int,
            guidance: float, height: int | None, width: int | None) -> bool:
    """Store a flow transformer in fp8 when one row does not fit in bf16 and the GPU has fp8."""
    if not spec.transformer or info.kind != "cuda" or budget_bytes is None:
        return False
    if not any(key.lower() in info.name.lower() for key in FP8_GPUS):
        return False
    one_row = peak_bytes(spec, levels, guidance, 1, height, width, info.bytes_per_element)[0]
    return one_row > budget_bytes
def _tiles(size: int, tile: int, overlap: int) -> int:
    """Tiles along one side (core.backends.super_resolution.tile_starts)."""
    return 1 if size <= tile else -(-(size - overlap) // (tile - overlap))


def upscale_cost(spec: ModelSpec, levels: int, height: int | None, width: int | None,
                 factor: int, steps: int, info: DeviceInfo, budget: float | None) -> tuple[int, float]:
    """(peak bytes, seconds) of the ×4 stages ``spec`` does not count already (IF's stage II
    is part of its spec). A stage is loaded beside stage I and runs its UNet over every
    level's tiles, twice with guidance, in micro-batches that fit ``budget`` (as
    ``core.backends.upscale.fit_tile_micro_batch`` picks them), for min(steps, 50) steps."""
    count = {4: 1, 16: 2}.get(factor, 0)  # ×4 stages
    stages = UPSCALE_STAGES.get(spec.family, ())[:count]
    H, W, _, _ = sample_size(spec, width, height)
    if spec.family == "if":
        stages, H, W = stages[1:], 4 * H, 4 * W  # after stage II
    e = info.bytes_per_element
    base = weights_bytes(spec, e)
    peak, seconds = 0, 0.0
    for kind in stages:
        sr = SR_SPECS[kind]
        tile, overlap, guidance, max_steps = SR_STAGE[kind]
        th, tw = min(H, tile), min(W, tile)  # the x4 upscaler samples latents at its input size
        rows = unet_rows(levels, guidance) * _tiles(H, tile, overlap) * _tiles(W, tile, overlap)
        row = sr.k_unet() * th * tw * e
        weights = weights_bytes(sr, e)
        room = None if budget is None else budget - base - weights - SR_FIXED_BYTES
        k = rows if room is None or rows * row <= room else max(1, int(room // row))
        peak = max(peak, int(base + weights + k * row + SR_FIXED_BYTES))
        a, b = FLOPS[kind]
        seconds += min(steps, max_steps) * rows * (a * th * tw + b * (th * tw) ** 2) / info.flops()
        H, W = 4 * H, 4 * W
    return peak, seconds


def pixel_blend_seconds(spec: ModelSpec, levels: int, height: int | None, width: int | None,
                        fraction: float, steps: int, info: DeviceInfo) -> float:
    """Decoding and re-encoding every level on the last ``fraction`` of the steps
    (``GenerateSettings.pixel_blend``; latent models only)."""
    if not spec.latent or fraction <= 0:
        return 0.0
    H, W, _, _ = sample_size(spec, width, height)
    per_level = VAE_FLOPS_PER_PIXEL * H * W * (spec.vae_c0 / 128) ** 2
    return math.ceil(fraction * steps) * levels * per_level / info.flops()


def check_model(model: str) -> None:
    """A model given as a path must be a model folder or checkpoint file: one-line
    ModelNotFoundError / InvalidInputError otherwise (hub ids are not checked here)."""
    from .cache import CHECKPOINT_SUFFIXES, describe_local

    path = os.path.expanduser((model or "").strip())
    if (os.path.exists(path) or os.path.isabs(path) or path.startswith(".") or path.count("/") != 1
            or "\\" in path or path.lower().endswith(CHECKPOINT_SUFFIXES + (".bin", ".pt", ".pth"))):
        describe_local(path)


def estimate(settings: "core.settings.GenerateSettings", *, info: DeviceInfo | None = None,
             spec: ModelSpec | None = None) -> Estimate:
    """The estimate of one run of ``settings`` on its device; micro-batch chosen when unset.

    One-line InvalidInputError / ModelNotFoundError, not an estimate, when the device is not on
    this machine or the model given as a path is missing or no model."""
    if spec is None:
        check_model(settings.model)
    spec = spec or model_spec(settings.model, settings.family)
    info = info or device_info(settings.device)
    check_device(settings.device, info)
    factor = upscale_factor(spec.family, settings.upscale if isinstance(settings.upscale, int) else None,
                            settings.upscaler if isinstance(settings.upscaler, str) else None)
    if spec.family == "if" and factor == 1:
        spec = replace(spec, sr_params=0)  # no stage II
    e = info.bytes_per_element
    levels = len(settings.prompts)
    choice = settings.resolved(spec.family)  # scheduler/steps/guidance "auto" resolved
    guidance = choice["guidance"]
    rows = unet_rows(levels, guidance, spec.family)
    budget = info.free_bytes * USABLE_FRACTION if info.free_bytes else None
    fp8 = use_fp8(spec, info, budget, levels, guidance, settings.height, settings.width)
    micro, auto = settings.micro_batch, False
    if micro is None and budget is not None:
        micro, auto = largest_micro_batch(spec, levels, guidance, settings.height,
                                          settings.width, e, budget, fp8=fp8), True
    peak, weights, unet, decode, overhead = peak_bytes(
        spec, levels, guidance, micro, settings.height, settings.width, e, fp8=fp8)
    steps = choice["steps"]
    sps = seconds_per_step(spec, rows, settings.height, settings.width, info)
    up_bytes, up_seconds = upscale_cost(spec, levels, settings.height, settings.width, factor,
                                        steps, info, budget)
    blend_seconds = pixel_blend_seconds(spec, levels, settings.height, settings.width,
                                        float(settings.pixel_blend or 0), steps, info)
    total = steps * sps + up_seconds + blend_seconds
    peak = max(peak, up_bytes)
    fits = None if budget is None else peak <= budget
    device = f"{info.name} ({info.kind})" if info.kind != "cpu" else f"the CPU ({info.cores} cores)"
    warnings = []
    if fits is False:
        warnings.append(
            f"Warning: needs about {peak / GB:.1f} GB but only {info.free_bytes / GB:.1f} GB are free: "
            "use fewer levels, a smaller size, or free memory")
    if info.kind == "cpu" and total > HOURS_WARNING * 3600:
        warnings.append(
            f"Warning: about {total / 3600:.1f} hours on the CPU: use a GPU, fewer steps/levels "
            "or a smaller size")
    download = download_bytes(spec) if spec.transformer else 0
    return Estimate(spec.family, device, levels, rows, micro, auto, weights, unet, decode,
                    overhead, peak, info.free_bytes, sps, total, steps, fits, spec.source, warnings,
                    factor, up_bytes, up_seconds, blend_seconds, download_bytes=download, fp8=fp8)


def spec_from_backend(backend) -> ModelSpec:
    """The spec of a loaded core.backends Backend (its modules' real sizes; needs torch)."""
    pipe, family = backend.pipe, backend.family
    fallback = SPECS.get(family, SPECS["sd"])
    ucfg = backend.unet.config
    count = lambda m: sum(p.numel() for p in m.parameters()) if m is not None else 0  # noqa: E731
    if fallback.transformer:  # SD3 / FLUX: the traced constants scaled by layers x hidden
        layers = int(getattr(ucfg, "num_layers", 0)) + int(getattr(ucfg, "num_single_layers", 0) or 0)
        width = layers * int(ucfg.num_attention_heads) * int(ucfg.attention_head_dim)
        scale = width / fallback.dit_width
        encoders = sum(count(getattr(pipe, n, None))
                       for n in ("text_encoder", "text_encoder_2", "text_encoder_3"))
        return replace(fallback, unet_params=count(backend.unet), other_params=count(pipe.vae),
                       encoder_params=encoders, dit_a=fallback.dit_a * scale,
                       dit_b=fallback.dit_b * scale, dit_width=width,
                       native=backend.native_size, source="loaded model")
    other = sum(count(getattr(pipe, n, None)) for n in ("text_encoder", "text_encoder_2", "vae"))
    vae = getattr(pipe, "vae", None)
    down = list(ucfg.down_block_types)
    lpb = ucfg.layers_per_block
    lpb = lpb[0] if isinstance(lpb, (list, tuple)) else lpb
    return replace(
        fallback, unet_params=count(backend.unet), other_params=other,
        unet_c0=int(ucfg.block_out_channels[0]), unet_layers=int(lpb),
        top_attention="Attn" in down[0] and "Simple" not in down[0],
        vae_c0=int(vae.config.block_out_channels[0]) if vae is not None else 0,
        vae_layers=int(vae.config.layers_per_block) if vae is not None else 0,
        native=backend.native_size,
        upcast_vae=family == "sdxl" and bool(getattr(vae.config, "force_upcast", False)),
        sr_params=fallback.sr_params if family == "if" else 0, source="loaded model")


def fit_micro_batch(backend, levels: int, guidance: float, height: int, width: int,
                    reconstruct: bool = False) -> int | None:
    """The largest micro-batch that fits the free memory left next to the loaded model
    (None: all rows at once, or nothing known about the device/model: run as before).
    ``reconstruct``: the run uses reconstruction guidance (``RECONSTRUCTION_ROW_FACTOR``)."""
    try:
        free = free_bytes_now(backend.device)
        e = 4 if backend.dtype.itemsize >= 4 else 2
        spec = spec_from_backend(backend)
    except Exception:  # noqa: BLE001 - an unusual pipeline or device: no micro-batch, as before
        return None
    if not free:
        return None
    return largest_micro_batch(spec, levels, guidance, height, width, e,
                               free * USABLE_FRACTION, with_weights=False, reconstruct=reconstruct)


def free_bytes_now(device) -> int | None:
    """Free memory of a torch device now (None: unknown), next to what is loaded on it."""
    name = f"{device.type}:{device.index}" if device.index is not None else device.type
    return device_info(name, max_age=0.0).free_bytes


__all__ = ["DeviceInfo", "Estimate", "ModelSpec", "SPECS", "SR_SPECS", "activation_bytes",
           "check_device", "check_model", "cuda_count", "device_info", "estimate",
           "fit_micro_batch", "free_bytes_now", "largest_micro_batch", "model_spec", "peak_bytes",
           "pixel_blend_seconds", "seconds_per_step", "spec_from_backend", "spec_from_folder",
           "RECONSTRUCTION_ROW_FACTOR", "upscale_cost", "weights_bytes"]
