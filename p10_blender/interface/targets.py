"""The zoom target in the panel: where the next level sits inside a level, drawn as a marker on
that level's thumbnail (the image ``Zoom Target``, remade when a target, the target mode, the
loop or the active row changes: ``properties.TARGET_HOOKS``).

The marker is the region the next level covers (the footprint, as ``core`` places it: centred
on the target as far as the frame allows) and a cross at the target itself.
"""

from __future__ import annotations

import bpy

from ...core.zoom.geometry import footprints_for_targets
from ..properties import transitions_of
from ..setup import compat

MARKER_IMAGE = "Zoom Target"
THUMB = 128                   # the thumbnail's longer side, in pixels
MARKER = (1.0, 0.8, 0.1)      # the footprint's outline and the cross
EMPTY = 0.3                   # grey where no image of the level is loaded yet


def active_target(p10) -> tuple[float, float] | None:
    """The target the panel shows (of the active row), or None when that row has no next
    level (the finest one, without a loop)."""
    if p10.target_mode == "ONE":
        return tuple(float(v) for v in p10.target)
    if p10.target_mode == "EACH":
        i = p10.prompt_index
        if not 0 <= i < min(len(p10.prompts), transitions_of(p10)):
            return None
        return tuple(float(v) for v in p10.prompts[i].target)
    return 0.5, 0.5


def _level_image(scene, level: int):
    """The loaded rig's image of ``level``, if the rig holds the panel's prompt at that level."""
    from ..rig import scene_build

    coll = scene_build.zoom_build(scene)
    if coll is None or not 0 <= level < len(scene.p10.prompts):
        return None
    info = scene_build.build_info(coll)
    if level >= len(info["prompts"]) or \
            info["prompts"][level].strip() != scene.p10.prompts[level].text.strip():
        return None
    for ob in scene_build.build_objects(coll, "LAYER"):
        if ob.get("p10_level") == level and ob.active_material is not None:
            for node in ob.active_material.node_tree.nodes:
                if node.type == "TEX_IMAGE" and node.image is not None:
                    return node.image
    return None


def marker_pixels(base, target: tuple[float, float] | None, frame: tuple[int, int],
                  zoom: int):
    """RGB ``(h, w, 3)`` (top row first): ``base`` with the footprint of ``target`` outlined
    and a cross at the target; ``frame`` = (width, height) of the level in pixels."""
    import numpy as np

    out = np.array(base, dtype=np.float32)
    th, tw = out.shape[:2]
    if target is None:
        return out
    width, height = frame
    (left, top), = footprints_for_targets([target], height, width, zoom)
    x0, x1 = int(round(left * tw / width)), int(round((left + width // zoom) * tw / width)) - 1
    y0, y1 = int(round(top * th / height)), int(round((top + height // zoom) * th / height)) - 1
    out[y0:y1 + 1, [x0, x1]] = MARKER
    out[[y0, y1], x0:x1 + 1] = MARKER
    cx, cy = min(int(target[0] * tw), tw - 1), min(int(target[1] * th), th - 1)
    out[cy, max(0, cx - 3):cx + 4] = MARKER
    out[max(0, cy - 3):cy + 4, cx] = MARKER
    return out


def update_marker(scene) -> "bpy.types.Image | None":
    """(Re)draw the ``Zoom Target`` image of ``scene``'s panel settings; returns it."""
    import numpy as np

    p10 = getattr(scene, "p10", None)
    if p10 is None:
        return None
    width, height, zoom = int(p10.width), int(p10.height), int(p10.zoom)
    level = p10.prompt_index if p10.target_mode != "CENTRE" else 0
    image = _level_image(scene, level)
    if image is not None:
        width, height = image.size
    scale = THUMB / max(width, height)
    tw, th = max(2, round(width * scale)), max(2, round(height * scale))
    base = np.full((th, tw, 3), EMPTY, np.float32)
    if image is not None and image.size[0] > 0:
        rgba = np.empty(width * height * image.channels, np.float32)
        image.pixels.foreach_get(rgba)
        pixels = rgba.reshape(height, width, image.channels)[::-1, :, :3]  # top row first
        ys = (np.arange(th) * height // th).clip(0, height - 1)
        xs = (np.arange(tw) * width // tw).clip(0, width - 1)
        base = pixels[ys][:, xs]
    rgb = marker_pixels(base, active_target(p10), (width, height), zoom)
    marker = compat.write_rgb_image(MARKER_IMAGE, rgb)
    marker.use_fake_user = True  # the panel's, not an orphan: kept with the .blend
    try:
        marker.preview_ensure()
        marker.preview.reload()
    except (AttributeError, RuntimeError):  # no previews (background mode)
        pass
    return marker


def on_targets_changed(scene) -> None:
    try:
        update_marker(scene)
    except (RuntimeError, ValueError, AttributeError):  # a marker never breaks an edit
        pass


def draw_targets(layout, p10) -> None:
    """Loop toggle, target mode, the active row's (or the one) target and the marker."""
    col = layout.column(align=True)
    col.prop(p10, "loop")
    col.prop(p10, "target_mode")
    if p10.target_mode == "ONE":
        col.prop(p10, "target")
    elif p10.target_mode == "EACH" and 0 <= p10.prompt_index < len(p10.prompts):
        if active_target(p10) is None:
            col.label(text="The finest level has no next level (Loop: level 0)", icon="INFO")
        else:
            col.prop(p10.prompts[p10.prompt_index], "target",
                     text=f"Target in Level {p10.prompt_index}")
    marker = bpy.data.images.get(MARKER_IMAGE)
    preview = getattr(marker, "preview", None) if marker is not None else None
    if preview is not None and preview.icon_id:
        layout.template_icon(icon_value=preview.icon_id, scale=6.0)
