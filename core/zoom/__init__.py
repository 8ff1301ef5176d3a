"""The paper's mathematics: zoom-stack geometry, D_p / Π_image / Π_noise / blending (Sec. 4.1-4.2),
the joint sampler (Alg. 2), known levels and photo zoom (Sec. 4.4), analytic test scenes.

Imports nothing of models, backends or files (only ``core.errors``).
"""
