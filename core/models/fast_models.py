"""Few-step models: LCM-distilled checkpoints, LCM-LoRA, SD-Turbo / SDXL-Turbo.

Torch-free (the add-on and ``GenerateSettings`` use it before dependencies are installed).
What can be told from the model picks the sampler, the steps and the guidance when the
settings leave them on auto; explicit settings always win.

* LCM (consistency-distilled, Luo et al. 2023): a scheduler config of class LCMScheduler, a
  model name with "lcm", or a LoRA whose name has "lcm" (LCM-LoRA). Renoise sampler
  (``update_renoise``), 8 steps, no classifier-free guidance (LCM-LoRA's recommended 1–2).
* Turbo (adversarial diffusion distillation, Sauer et al. 2023): a model name with "turbo".
  Renoise sampler on the student's 4-timestep grid (999, 749, 499, 249), 4 steps, no
  guidance (diffusers' guidance_scale=0: the same single conditional evaluation).
* Few-step rectified-flow models (FLUX.1-schnell, SD3.5 Large Turbo): "schnell" or "turbo" in
  the name of an SD3/FLUX model. The family's flow sampler on its own shifted σ grid, 4 steps,
  no guidance.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Guidance when the settings leave it on auto and the model is not a few-step model.
DEFAULT_GUIDANCE = 7.5
#: Guidance per family when it differs: SD3's pipeline default (CFG); FLUX.1-dev's embedded
#: guidance (one conditional pass, FluxPipeline's default; schnell ignores it).
FAMILY_GUIDANCE = {"sd3": 7.0, "flux": 3.5}
#: The rectified-flow families' sampler on "auto" (measured: docs/sampler.md, "Rectified flow").
FLOW_DEFAULT_SCHEDULER = "flow-renoise"
#: LCM-distilled UNets with a guidance embedding (time_cond_proj_dim): the w they were
#: distilled around (LatentConsistencyModelPipeline's default 8.0); no CFG pass.
LCM_EMBEDDED_GUIDANCE = 8.0


@dataclass(frozen=True)
class FastProfile:
    name: str
    scheduler: str
    steps: int
    guidance: float
    #: scheduler config overrides: the timestep grid the student was distilled on
    scheduler_config: dict = field(default_factory=dict)


PROFILES = {
    "lcm": FastProfile("lcm", "lcm", 8, 1.0),
    "turbo": FastProfile("turbo", "lcm", 4, 1.0, {"original_inference_steps": 4}),
    "flow-few-step": FastProfile("flow-few-step", FLOW_DEFAULT_SCHEDULER, 4, 0.0),
}


def _name(source: str | None, parts: int = 1) -> str:
    """The last ``parts`` components of a path or hub id, lower case."""
    bits = str(source or "").replace("\\", "/").rstrip("/").split("/")
    return "/".join(bits[-parts:]).lower()


def detect_fast_model(model: str, lora: str | None = None, scheduler_class: str = "",
                      family: str | None = None) -> FastProfile | None:
    """The few-step profile of ``model`` (+ ``lora``), or None for an ordinary model.

    ``scheduler_class``: ``_class_name`` of the model's scheduler config, when known;
    ``family``: the model's family when known (rectified-flow families have their own profile).
    """
    if family in ("sd3", "flux") or scheduler_class == "FlowMatchEulerDiscreteScheduler":
        name = _name(model)
        return PROFILES["flow-few-step"] if "schnell" in name or "turbo" in name else None
    # a LoRA file's folder counts too: lcm-lora-sdxl/pytorch_lora_weights.safetensors
    if lora and "lcm" in _name(lora, 2):
        return PROFILES["lcm"]
    if scheduler_class == "LCMScheduler":
        return PROFILES["lcm"]
    if "turbo" in _name(model):
        return PROFILES["turbo"]
    if "lcm" in _name(model):
        return PROFILES["lcm"]
    return None


__all__ = ["DEFAULT_GUIDANCE", "FAMILY_GUIDANCE", "FLOW_DEFAULT_SCHEDULER", "LCM_EMBEDDED_GUIDANCE", "FastProfile", "PROFILES",
           "detect_fast_model"]
