# SPDX-License-Identifier: GPL-3.0-or-later
"""Powers of Ten Zoom: Blender extension root. Everything bpy lives in ``p10_blender``."""

from __future__ import annotations


def register() -> None:
    from . import p10_blender
    p10_blender.register()


def unregister() -> None:
    from . import p10_blender
    p10_blender.unregister()
