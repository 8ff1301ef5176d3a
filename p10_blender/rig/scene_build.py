"""Build the zoom rig of a zoom stack (Sec. 4.1's zoom stack, made of planes).

The rig: an empty (the root, carrying the animatable float ``zoom_level``), one plane per
layer and a camera, all parented to the root. The camera never moves: the planes move. Plane k
is drawn at ``p^(zoom_level - k)`` times the view's size (a driver per plane), so at
``zoom_level == k`` plane k exactly fills the view, and linear keys on ``zoom_level`` give a
constant apparent speed. Everything that renders stays near unit size whatever the depth
(a 30-level zoom-4 stack spans 4^30 ≈ 1e18): planes fully covered by a finer one, or smaller
than 1/4096 of the view, are hidden (``hide_render`` driver) and their scale is clamped, so
float32 never sees a huge or tiny number. The planes lie a hair apart in z (finer in front);
a perspective camera at the same height frames exactly what the orthographic one does.

Every datablock of one build carries the custom property ``p10_build`` (a random id), so a
rebuild can delete precisely the previous build, and only after the new one is complete; the
new datablocks then take the old names (no ``.001``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import uuid
from pathlib import Path
from typing import Any

import bpy

from ...core.errors import StackFormatError
from ...core.stack.stack_io import centred_footprints, read_manifest
from ...core.zoom.camera_path import fixed_points
from ..setup import compat
from ..properties import linked_scene
from . import path_keys

BUILD_KEY = "p10_build"
STACK_KEY = "p10_stack"         # the stack folder's real path
IDENTITY_KEY = "p10_stack_id"   # the stack wherever it lies (``stack_identity``)
HOME_KEY = "p10_home"      # on a rig scene: the scene whose settings it uses
ZOOM_PROP = "zoom_level"  # the animatable float on the rig's root object
PLANE_SIZE = 1.0          # longer side of the view (and of plane k at zoom_level k), in units
Z_STEP = 1e-4             # gap between consecutive planes, as a fraction of PLANE_SIZE
CAMERA_HEIGHT = 1.0       # camera distance above the planes, as a fraction of PLANE_SIZE
OVERSCAN_PROP = "overscan"  # on the root: how much wider than the nominal view the camera sees
DEFAULT_OVERSCAN = 2.0
# Exact mode: pixel values pass through untouched (texture 'Non-Color', view 'Raw', 'Closest'
# texels): the frame then averages texels in the PNG's own value space, as the core's D_p
# does. Default mode: sRGB colour textures (an emission of strength 1 shows the PNG colour
# under the 'Standard' view) sampled smoothly, so lit objects compose normally.
EXACT_COLORSPACE, EXACT_VIEW, EXACT_INTERPOLATION = "Non-Color", "Raw", "Closest"
COLORSPACE, VIEW_TRANSFORM, INTERPOLATION = "sRGB", "Standard", "Linear"


# ---------------------------------------------------------------------------- geometry
def plane_size(width: int, height: int, level: int, zoom: int,
               size: float = PLANE_SIZE) -> tuple[float, float]:
    """(x, y) extent of layer ``level``'s plane: layer 0 fits ``size``, each level 1/p."""
    scale = size / max(width, height) / float(zoom) ** level
    return width * scale, height * scale


def _plane_mesh(name: str, sx: float, sy: float, z: float) -> "bpy.types.Mesh":
    """A single quad centred on the origin with UVs spanning the full image."""
    mesh = bpy.data.meshes.new(name)
    hx, hy = sx / 2, sy / 2
    mesh.from_pydata([(-hx, -hy, z), (hx, -hy, z), (hx, hy, z), (-hx, hy, z)], [],
                     [(0, 1, 2, 3)])
    uv = mesh.uv_layers.new(name="UVMap")
    uv.data.foreach_set("uv", (0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0))
    mesh.update()
    return mesh


def _emission_material(name: str, image: "bpy.types.Image",
                       interpolation: str = INTERPOLATION) -> "bpy.types.Material":
    """Unlit material: the texture drives an Emission of strength 1."""
    mat = bpy.data.materials.new(name)
    if hasattr(mat, "use_nodes") and not mat.use_nodes:
        mat.use_nodes = True  # always on (and deprecated) in 5.0
    tree = mat.node_tree
    tree.nodes.clear()
    tex = tree.nodes.new("ShaderNodeTexImage")
    tex.image = image
    tex.interpolation = interpolation
    tex.extension = "EXTEND"
    emit = tree.nodes.new("ShaderNodeEmission")
    emit.inputs["Strength"].default_value = 1.0
    out = tree.nodes.new("ShaderNodeOutputMaterial")
    tree.links.new(tex.outputs["Color"], emit.inputs["Color"])
    tree.links.new(emit.outputs["Emission"], out.inputs["Surface"])
    tex.location, emit.location, out.location = (-400, 0), (-100, 0), (150, 0)
    tree.nodes.active = tex  # Workbench's texture colour mode samples the active node
    mat.diffuse_color = (1.0, 1.0, 1.0, 1.0)
    return mat


def _camera_rays_only(ob: "bpy.types.Object") -> None:
    """The planes are a backdrop: seen by the camera, never lighting, shadowing or reflected
    in the objects an artist adds (so those render as they would without the zoom)."""
    for name in ("visible_diffuse", "visible_glossy", "visible_transmission",
                 "visible_volume_scatter", "visible_shadow"):
        if hasattr(ob, name):
            setattr(ob, name, False)


def visible_depth(zoom: int) -> int:
    """Finer levels drawn beyond the current one: p^-D is the smallest plane (1/4096 view)."""
    return path_keys.visible_depth(zoom)


# ------------------------------------------------------------------------------ drivers
def _new_driver(idb, path: str, index: int = -1):
    """A fresh driver F-curve (no modifier, no key: Blender versions add either)."""
    fc = idb.driver_add(path, index) if index >= 0 else idb.driver_add(path)
    while fc.modifiers:
        fc.modifiers.remove(fc.modifiers[0])
    fc.keyframe_points.clear()
    return fc


def _prop_var(driver, name: str, idb, data_path: str, id_type: str = "OBJECT") -> None:
    var = driver.variables.new()
    var.name, var.type = name, "SINGLE_PROP"
    var.targets[0].id_type = id_type
    var.targets[0].id = idb
    var.targets[0].data_path = data_path


def _expression(idb, path: str, index: int, root, expression: str,
                overscan: bool = False) -> None:
    """A simple-expression driver of ``root["zoom_level"]`` (as ``z``; ``o``: the root's
    overscan). Simple expressions run without Python, with auto-run scripts off."""
    fc = _new_driver(idb, path, index)
    driver = fc.driver
    driver.type = "SCRIPTED"
    _prop_var(driver, "z", root, f'["{ZOOM_PROP}"]')
    if overscan:
        _prop_var(driver, "o", root, f'["{OVERSCAN_PROP}"]')
    if len(expression) >= 256:  # Blender's limit; the expressions are far shorter
        raise ValueError(f"driver expression too long ({len(expression)} characters)")
    driver.expression = expression


def _keyed(idb, path: str, index: int, root, keys, interpolation: str = "CONSTANT",
           cyclic: bool = False) -> None:
    """A driver F-curve: ``zoom_level`` mapped through keys ``(z, value)`` (no Python).

    CONSTANT keys make a step function of floor(z); BEZIER keys get flat handles a third of
    the way to the neighbours, which is exactly the smoothstep ease of the camera path. A
    loop's curve repeats (Cycles modifier; the last key closes the period)."""
    fc = _new_driver(idb, path, index)
    fc.driver.type = "SUM"
    _prop_var(fc.driver, "z", root, f'["{ZOOM_PROP}"]')
    points = fc.keyframe_points
    points.add(len(keys))
    for kp, (x, y) in zip(points, keys):
        kp.co = (float(x), float(y))
        kp.interpolation = interpolation
        if interpolation == "BEZIER":
            kp.handle_left_type = kp.handle_right_type = "FREE"
            kp.handle_left = (x - 1.0 / 3.0, y)
            kp.handle_right = (x + 1.0 / 3.0, y)
    fc.extrapolation = "CONSTANT"
    if cyclic:
        fc.modifiers.new("CYCLES")
    fc.update()


def drive_pivot(pivot, frame, root, plan: "path_keys.RigPlan", sx: float, sy: float) -> None:
    """Pivot: location R(z) (the camera path's fixed-point ease), scale p^(z - floor z);
    frame: location -R(z). Together: level floor(z)'s frame scaled p^u about R."""
    keys = path_keys.pivot_keys(plan)
    xs = [(k, sx * (rx - 0.5)) for k, rx, _ in keys]
    ys = [(k, sy * (0.5 - ry)) for k, _, ry in keys]
    for index, pts in ((0, xs), (1, ys)):
        _keyed(pivot, "location", index, root, pts, "BEZIER", plan.loop)
        _keyed(frame, "location", index, root, [(k, -v) for k, v in pts], "BEZIER", plan.loop)
    for index in (0, 1):
        _expression(pivot, "scale", index, root, f"pow({plan.zoom}, z - floor(z))")


def drive_level(empty, root, plan: "path_keys.RigPlan", j: int, sx: float, sy: float) -> None:
    """Level j's empty: its frame as seen from level floor(z) (CONSTANT keys, unclamped)."""
    keys = path_keys.level_keys(plan, j)
    loc_x = [(k, sx * (x + size / 2 - 0.5)) for k, x, _, size in keys]
    loc_y = [(k, sy * (0.5 - y - size / 2)) for k, _, y, size in keys]
    scale = [(k, size) for k, _, _, size in keys]
    _keyed(empty, "location", 0, root, loc_x, cyclic=plan.loop)
    _keyed(empty, "location", 1, root, loc_y, cyclic=plan.loop)
    _keyed(empty, "scale", 0, root, scale, cyclic=plan.loop)
    _keyed(empty, "scale", 1, root, scale, cyclic=plan.loop)


def drive_plane(ob, root, plan: "path_keys.RigPlan", j: int, size: float) -> None:
    """Plane j (child of level j's empty): clamped scale, z-order, visibility.

    Clamped so a hidden plane never holds an extreme number (between p^-(D+1) and
    p^(coarse+1) of the view); finer planes a hair in front; hidden when a finer plane covers
    the view widened by the root's ``overscan`` (the camera's actual view), or when it is
    smaller than 1/4096 of the view, or more than ``coarse`` levels behind.
    """
    corr = path_keys.scale_expression(plan, j)
    _expression(ob, "scale", 0, root, corr)
    _expression(ob, "scale", 1, root, corr)
    _expression(ob, "location", 2, root, path_keys.depth_expression(plan, j, Z_STEP * size))
    _expression(ob, "hide_render", -1, root, path_keys.hide_expression(plan, j), overscan=True)


CAMERA_BASES = (("ortho_scale", "rig_ortho_scale"), ("clip_start", "rig_clip_start"),
                ("clip_end", "rig_clip_end"))


def drive_camera(cam_data, root) -> None:
    """Ortho scale and clip distances in the root's units: ``rig_*`` custom properties of
    the camera data times the root's world scale (Blender ignores object scale there)."""
    for path, base in CAMERA_BASES:
        if base not in cam_data:
            cam_data[base] = float(getattr(cam_data, path))
        fc = _new_driver(cam_data, path)
        driver = fc.driver
        driver.type = "SCRIPTED"
        _prop_var(driver, "b", cam_data, f'["{base}"]', id_type="CAMERA")
        var = driver.variables.new()
        var.name, var.type = "s", "TRANSFORMS"
        var.targets[0].id = root
        var.targets[0].transform_type = "SCALE_AVG"
        var.targets[0].transform_space = "WORLD_SPACE"
        driver.expression = "b * s"


# --------------------------------------------------------------------------- render setup
def configure_render(scene: "bpy.types.Scene", width: int, height: int,
                     engine: str = "CYCLES", samples: int = 16, exact: bool = False) -> None:
    """Render settings of a rig's own scene (never called on a user's scene).

    Cycles with a 1-pixel box filter, no denoising, no dither: each pixel integrates the
    texels it covers. The view transform is 'Standard' (the planes show their PNG colours;
    lit objects render normally), or 'Raw' in exact mode, where bounces are off too.
    """
    compat.set_engine(scene, engine)
    render = scene.render
    render.resolution_x, render.resolution_y = int(width), int(height)
    render.resolution_percentage = 100
    render.pixel_aspect_x = render.pixel_aspect_y = 1.0
    render.film_transparent = False
    render.dither_intensity = 0.0
    render.filter_size = 1.0  # Eevee/Workbench: 1 pixel wide
    compat.set_still_output(scene)  # 8-bit RGB PNG stills, as the stack's layers
    scene.display_settings.display_device = "sRGB"
    view = scene.view_settings
    view.look = "None"
    view.exposure = 0.0
    view.gamma = 1.0
    view.use_curve_mapping = False
    scene.sequencer_colorspace_settings.name = "sRGB"
    if hasattr(scene, "cycles"):
        cycles = scene.cycles
        cycles.use_denoising = False
        cycles.use_adaptive_sampling = False
        cycles.pixel_filter_type = "BOX"
        cycles.filter_width = 1.0
        cycles.seed = 0
    set_quality(scene, engine, samples)
    set_scene_look(scene, exact)
    shading = scene.display.shading  # Workbench: unlit texture colour
    shading.light = "FLAT"
    shading.color_type = "TEXTURE"
    if hasattr(scene.display, "render_aa"):
        scene.display.render_aa = "8"


def set_quality(scene: "bpy.types.Scene", engine: str, samples: int) -> None:
    compat.set_engine(scene, engine)
    if hasattr(scene, "cycles"):
        scene.cycles.samples = int(samples)
    eevee = getattr(scene, "eevee", None)
    if eevee is not None and hasattr(eevee, "taa_render_samples"):
        eevee.taa_render_samples = int(samples)


def set_scene_look(scene: "bpy.types.Scene", exact: bool) -> None:
    """View transform of a rig scene: 'Raw' + no bounces (exact) or 'Standard' + defaults."""
    scene.view_settings.view_transform = EXACT_VIEW if exact else VIEW_TRANSFORM
    if hasattr(scene, "cycles"):
        # exact: emission seen directly needs no bounce; otherwise lit objects need them
        scene.cycles.max_bounces = 0 if exact else 12


FILTERS = ("Linear", "Cubic", "Closest", "Smart")  # Image Texture interpolations
FILTER_KEY = "p10_filter"  # on a build's collection: the texture filter outside exact mode


def _plane_textures(coll: "bpy.types.Collection") -> list:
    nodes = []
    for ob in build_objects(coll, "LAYER"):
        mat = ob.active_material
        tex = next((n for n in mat.node_tree.nodes if n.type == "TEX_IMAGE"), None) \
            if mat is not None and mat.node_tree is not None else None
        if tex is not None and tex.image is not None and tex not in nodes:
            nodes.append(tex)
    return nodes


def build_filter(coll: "bpy.types.Collection") -> str:
    """The build's texture filter outside exact mode (what its textures use, if set by hand)."""
    if not coll.get("p10_exact"):
        textures = _plane_textures(coll)
        if textures:
            return textures[0].interpolation
    value = str(coll.get(FILTER_KEY, INTERPOLATION))
    return value if value in FILTERS else INTERPOLATION


def set_build_look(coll: "bpy.types.Collection", exact: bool, filter: str | None = None) -> None:
    """Textures of a build: colour data sampled with the build's filter (kept across exact
    toggles and reloads; ``filter`` sets it), or exact values and texels."""
    smooth = filter if filter in FILTERS else build_filter(coll)
    coll[FILTER_KEY] = smooth
    for tex in _plane_textures(coll):
        tex.interpolation = EXACT_INTERPOLATION if exact else smooth
        want = EXACT_COLORSPACE if exact else COLORSPACE
        if tex.image.colorspace_settings.name != want:
            tex.image.colorspace_settings.name = want
    coll["p10_exact"] = bool(exact)


# ------------------------------------------------------------------------------- builds
def _stack_key(directory: str | os.PathLike) -> str:
    return os.path.normcase(os.path.realpath(os.fspath(bpy.path.abspath(os.fspath(directory)))))


def find_builds(scene: "bpy.types.Scene | None" = None,
                directory: str | os.PathLike | None = None) -> list["bpy.types.Collection"]:
    """Build collections (of ``scene`` if given, of ``directory``'s stack if given)."""
    key = _stack_key(directory) if directory is not None else None
    found = []
    for coll in bpy.data.collections:
        if BUILD_KEY not in coll:
            continue
        if key is not None and coll.get(STACK_KEY) != key:
            continue
        if scene is not None and coll.name not in scene.collection.children:
            continue
        found.append(coll)
    return found


def build_info(coll: "bpy.types.Collection") -> dict[str, Any]:
    """What the animation and sequencer need to know about a build."""
    return {
        "build": coll[BUILD_KEY], "stack": coll[STACK_KEY], "zoom": int(coll["p10_zoom"]),
        "num_levels": int(coll["p10_num_levels"]), "width": int(coll["p10_width"]),
        "height": int(coll["p10_height"]), "prompts": json.loads(coll["p10_prompts"]),
        "plane_size": float(coll["p10_plane_size"]), "exact": bool(coll.get("p10_exact")),
        "loop": bool(coll.get("p10_loop", False)),
        "footprints": json.loads(coll.get("p10_footprints", "null")),
    }


def build_objects(coll: "bpy.types.Collection", kind: str) -> list["bpy.types.Object"]:
    """Objects of a build tagged ``p10_role`` == kind ('ROOT', 'LAYER', 'CAMERA')."""
    objs = [ob for ob in coll.objects if ob.get("p10_role") == kind]
    return sorted(objs, key=lambda ob: ob.get("p10_level", 0))


def build_camera(coll: "bpy.types.Collection") -> "bpy.types.Object | None":
    cams = build_objects(coll, "CAMERA")
    return cams[0] if cams else None


def build_root(coll: "bpy.types.Collection") -> "bpy.types.Object | None":
    roots = build_objects(coll, "ROOT")
    return roots[0] if roots else None


def build_scene(coll: "bpy.types.Collection") -> "bpy.types.Scene | None":
    """The scene the build's collection is linked to (its own rig scene, or the user's)."""
    for scene in bpy.data.scenes:
        if coll.name in scene.collection.children:
            return scene
    return None


def active_build(scene: "bpy.types.Scene") -> "bpy.types.Collection | None":
    """The build whose camera is the scene camera, else the newest build in the scene."""
    builds = find_builds(scene)
    for coll in builds:
        if scene.camera is not None and build_camera(coll) == scene.camera:
            return coll
    return max(builds, key=lambda c: c.get("p10_serial", 0)) if builds else None


def zoom_build(scene: "bpy.types.Scene") -> "bpy.types.Collection | None":
    """The build the panel's zoom settings act on, from any scene: a video scene's rig, the
    scene's own build, else the newest rig loaded from this scene."""
    source = linked_scene(scene, "p10_video_of")
    if source is not None and source != scene:
        scene = source
    coll = active_build(scene)
    if coll is not None:
        return coll
    homed = [c for c in find_builds() if home_of(c) == scene]
    return max(homed, key=lambda c: c.get("p10_serial", 0)) if homed else None


def home_of(idb) -> "bpy.types.Scene | None":
    """The scene a rig (scene or build collection) was loaded from."""
    return linked_scene(idb, HOME_KEY)


def _ids_of_build(build_id: str) -> list["bpy.types.ID"]:
    ids: list[bpy.types.ID] = []
    for coll in (bpy.data.objects, bpy.data.meshes, bpy.data.materials, bpy.data.images,
                 bpy.data.cameras, bpy.data.actions, bpy.data.collections):
        ids.extend(idb for idb in coll if idb.get(BUILD_KEY) == build_id)
    return ids


def remove_build(build_id: str) -> None:
    """Delete every datablock of a build (objects, meshes, materials, images, camera...)."""
    ids = _ids_of_build(build_id)
    if ids:
        bpy.data.batch_remove(ids)


def _load_layers(directory: Path, manifest: dict[str, Any], label: str,
                 build_id: str) -> list["bpy.types.Image"]:
    images: list[bpy.types.Image] = []
    want = (int(manifest["width"]), int(manifest["height"]))
    try:
        for i, name in enumerate(manifest["layers"]):
            path = directory / name
            try:
                image = compat.load_image_packed(path, f"P10 {label} L{i:02d}", COLORSPACE)
            except RuntimeError:
                raise StackFormatError(f"cannot read layer image {path}") from None
            image[BUILD_KEY] = build_id
            images.append(image)
            if tuple(image.size) == (0, 0):
                raise StackFormatError(f"cannot read layer image {path}: not a valid PNG")
            if tuple(image.size) != want:
                raise StackFormatError(
                    f"{path} is {image.size[0]}x{image.size[1]} pixels, the manifest says "
                    f"{want[0]}x{want[1]}")
    except BaseException:
        if images:
            bpy.data.batch_remove(images)
        raise
    return images


def _free_slot_x(scene: "bpy.types.Scene", exclude: set, size: float) -> float:
    """x of a root beside everything in the scene (other rigs, the default cube...), so the
    rig never encloses an object and no camera sees another rig."""
    right = None
    for ob in scene.objects:
        if ob in exclude:
            continue
        xs = [(ob.matrix_world @ _vec(c)).x for c in ob.bound_box]
        edge = max(xs) if xs else ob.matrix_world.translation.x
        right = edge if right is None else max(right, edge)
    return 0.0 if right is None else right + 0.75 * size


def _vec(corner):
    from mathutils import Vector
    return Vector(tuple(corner))


def stack_identity(manifest: dict[str, Any]) -> str:
    """The same stack wherever its folder lies: a digest of its manifest (prompts, seed, model,
    creation time, levels...). A moved or renamed folder keeps it; an extended or regenerated
    stack (a new manifest) gets a new one."""
    text = json.dumps(manifest, sort_keys=True, default=str)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def _same_stack(idb: "bpy.types.ID", keys: set, identity: str) -> bool:
    return idb.get(STACK_KEY) in keys or idb.get(IDENTITY_KEY) == identity


def _rig_scene(home: "bpy.types.Scene", keys: set, identity: str,
               label: str) -> "tuple[bpy.types.Scene, bool]":
    """The stack's own scene (made on its first load): ``(scene, created)``. A moved folder
    (same identity) or the stack this one was made from (``keys``: Extend, Regenerate) finds
    the scene it had."""
    for scene in bpy.data.scenes:
        if _same_stack(scene, keys, identity) and scene.get(HOME_KEY) is not None:
            if not isinstance(scene.get(HOME_KEY), bpy.types.Scene) and home_of(scene) is None:
                scene[HOME_KEY] = home  # an older file's name that no longer resolves
            return scene, False
    scene = bpy.data.scenes.new(label)
    scene[HOME_KEY] = home  # a pointer: renaming the home scene keeps the link
    return scene, True


def _world(scene: "bpy.types.Scene") -> None:
    """A rig scene gets a world of its own (black: the rig renders as before, with no ambient
    light on objects an artist adds until the world is changed; the planes are emission seen
    by camera rays only and ignore it)."""
    if scene.world is None:
        world = bpy.data.worlds.new(scene.name)
        world.color = (0.0, 0.0, 0.0)
        if hasattr(world, "use_nodes") and not world.use_nodes:
            world.use_nodes = True  # always on (and deprecated) in 5.0
        background = world.node_tree.nodes.get("Background") if world.node_tree else None
        if background is not None:
            background.inputs["Color"].default_value = (0.0, 0.0, 0.0, 1.0)
        scene.world = world


def stack_path(manifest: dict[str, Any]) -> tuple[list, list, bool]:
    """Footprints (centred when the manifest has none), their fixed points and the loop flag
    of a manifest ``read_manifest`` validated."""
    loop = bool(manifest.get("loop", False))
    n, w, h = int(manifest["num_levels"]), int(manifest["width"]), int(manifest["height"])
    zoom, count = int(manifest["zoom"]), n if loop else n - 1
    given = manifest.get("footprints")
    footprints = [tuple(fp) for fp in given] if given is not None else \
        centred_footprints(h, w, zoom, count)
    return footprints, fixed_points(footprints, zoom, w, h, count), loop


def camera_overscan(coll: "bpy.types.Collection", scene=None, depsgraph=None) -> float:
    """How much wider than the rig's nominal view (about its centre) the build's camera sees
    on the planes now: from its lens, sensor, shift, ortho scale, position and rotation."""
    from mathutils import Vector
    root, cam = build_root(coll), build_camera(coll)
    if root is None or cam is None:
        return 1.0
    scene = scene or build_scene(coll) or bpy.context.scene
    if depsgraph is not None and depsgraph.scene_eval.original == scene:
        pass
    elif scene == bpy.context.scene:
        depsgraph = bpy.context.evaluated_depsgraph_get()
    else:  # a rig scene not shown in the window
        depsgraph = scene.view_layers[0].depsgraph
        depsgraph.update()
    cam_eval = cam.evaluated_get(depsgraph)
    root_eval = root.evaluated_get(depsgraph)
    # Blender renders with the camera's matrix normalised (object scale ignored)
    to_root = root_eval.matrix_world.inverted() @ cam_eval.matrix_world.normalized()
    corners = cam_eval.data.view_frame(scene=scene)
    origin = to_root @ Vector((0.0, 0.0, 0.0))
    hits = []
    for corner in corners:
        if cam_eval.data.type == "ORTHO":
            start = to_root @ Vector((corner.x, corner.y, 0.0))
            direction = to_root.to_3x3() @ Vector((0.0, 0.0, -1.0))
        else:
            start, direction = origin, to_root @ corner - origin
        if direction.z >= -1e-9:  # parallel to or away from the planes
            hits.append(None)
            continue
        t = -start.z / direction.z
        hits.append(None if t <= 0 else (start.x + t * direction.x, start.y + t * direction.y))
    info = build_info(coll)
    sx, sy = plane_size(info["width"], info["height"], 0, info["zoom"], info["plane_size"])
    return path_keys.view_overscan(hits, sx / 2, sy / 2)


def fit_overscan(coll: "bpy.types.Collection", depsgraph=None) -> float:
    """Raise the root's ``overscan`` to what the camera sees (never lowers it); returns it."""
    root = build_root(coll)
    if root is None:
        return 1.0
    need = camera_overscan(coll, depsgraph=depsgraph)
    value = max(float(root.get(OVERSCAN_PROP, DEFAULT_OVERSCAN)), need)
    if value > float(root.get(OVERSCAN_PROP, 0.0)):
        root[OVERSCAN_PROP] = value
        root.update_tag()
    return value


def _new_object(name: str, data, parent, role: str, created: list, names: dict):
    ob = bpy.data.objects.new(name, data)
    ob.parent = parent
    ob["p10_role"] = role
    created.append(ob)
    names[ob] = name
    return ob


def _adopt(old: list, role: str):
    found = [ob for c in old for ob in build_objects(c, role)]
    return found[0] if found else None


def _carry_over(old: list, coll, keep: set, by_level: dict, shift: int = 0) -> None:
    """Before the old build goes: everything that pointed to its planes or level empties
    (children, constraints, drivers) points to the new ones of the same image (level +
    ``shift``: levels added outside, Extend Wider); objects an artist put in its collection
    move to the new one."""
    for c in old:
        for ob in list(c.objects):
            if ob in keep:
                continue
            if BUILD_KEY not in ob or ob.get(BUILD_KEY) != c.get(BUILD_KEY):
                if ob.name not in coll.objects:
                    coll.objects.link(ob)
                continue
            level = ob.get("p10_level")
            role = ob.get("p10_role")
            target = by_level.get((role, level + shift)) if role in ("LAYER", "LEVEL") else \
                by_level.get((role, None))
            if target is not None and target != ob:
                ob.user_remap(target)


def build_zoom_stack(home: "bpy.types.Scene", directory: str | os.PathLike, *,
                     own_scene: bool = True, exact: bool = False, engine: str = "CYCLES",
                     samples: int = 16, size: float = PLANE_SIZE,
                     filter: str | None = None, replaces: str | os.PathLike | None = None,
                     level_shift: int = 0) -> "bpy.types.Collection":
    """Build (or rebuild) the rig of the stack folder ``directory``; returns its collection.

    ``own_scene`` (default): in a scene of its own named after the stack, made on the first
    load with the render settings of ``configure_render``; ``home`` (the user's scene) is not
    changed at all. Otherwise the rig is added to ``home`` beside its objects, and only the
    camera is set, if ``home`` has none. A rebuild keeps the previous build's root (its
    place, keys, overscan and children) and camera (every setting), makes new planes, and
    only then removes the previous planes, so a failure leaves everything as it was. Raises
    StackFormatError for a bad folder. The zoom is not keyed here (``animation.key_zoom``).

    A rebuild is of the same stack: the same folder, the same stack moved elsewhere
    (``stack_identity``), or the stack ``replaces`` names (Extend / Regenerate made this one
    from it). It keeps the scene and the names (the first load's label); children of the old
    planes go to the new plane of the same image (``level_shift``: levels added outside, as
    Extend Wider does; the root's ``zoom_level`` and keys shift with them).
    """
    directory = Path(bpy.path.abspath(os.fspath(directory)))
    manifest = read_manifest(directory)
    footprints, fixed, loop = stack_path(manifest)
    key, identity = _stack_key(directory), stack_identity(manifest)
    keys = {key} | ({_stack_key(replaces)} if replaces else set())
    width, height = int(manifest["width"]), int(manifest["height"])
    zoom, n = int(manifest["zoom"]), int(manifest["num_levels"])
    plan = path_keys.plan_rig(zoom, width, height, n, footprints, fixed, loop)
    build_id = uuid.uuid4().hex

    created_scene = None
    try:
        if own_scene:
            scene, created = _rig_scene(home, keys, identity, directory.name or "stack")
            created_scene = scene if created else None
        else:
            scene = home
        old = [c for c in find_builds(scene) if _same_stack(c, keys, identity)]
        old.sort(key=lambda c: -c.get("p10_serial", 0))  # the newest rig is the one kept
        label = str(old[0].get("p10_label", "")) if old else ""
        label = label or directory.name or "stack"  # a rebuild keeps the names it had
        images = _load_layers(directory, manifest, label, build_id)
        smooth = build_filter(old[0]) if old else filter  # a rebuild keeps the filter
        names: dict[bpy.types.ID, str] = {im: f"P10 {label} L{i:02d}"
                                          for i, im in enumerate(images)}
        coll = bpy.data.collections.new(f"P10 Zoom {label}")
        names[coll] = f"P10 Zoom {label}"
        coll[BUILD_KEY] = build_id
        coll[STACK_KEY], coll[IDENTITY_KEY], coll["p10_label"] = key, identity, label
        coll[HOME_KEY] = home
        coll["p10_serial"] = max([c.get("p10_serial", 0) for c in find_builds()] or [0]) + 1
        coll["p10_zoom"], coll["p10_num_levels"] = zoom, n
        coll["p10_width"], coll["p10_height"] = width, height
        coll["p10_plane_size"] = float(size)
        coll["p10_prompts"] = json.dumps([str(p) for p in manifest["prompts"]])
        coll["p10_loop"] = bool(loop)
        coll["p10_footprints"] = json.dumps(manifest.get("footprints"))
        scene.collection.children.link(coll)

        created: list[bpy.types.ID] = []
        root = _adopt(old, "ROOT")
        if root is None:
            root = _new_object(f"P10 Root {label}", None, None, "ROOT", created, names)
            root.empty_display_type = "PLAIN_AXES"
            root.empty_display_size = 0.1 * size
            if not own_scene:
                exclude = {ob for c in old for ob in c.objects}
                root.location = (_free_slot_x(scene, exclude, size), 0.0, 0.0)
            root[ZOOM_PROP] = 0.0
        if OVERSCAN_PROP not in root:
            root[OVERSCAN_PROP] = DEFAULT_OVERSCAN
            # an adopted root's evaluated copy must get the new property, or the drivers
            # reading it fail (and Blender keeps them flagged invalid: every plane hidden)
            root.update_tag()
        sx, sy = plane_size(width, height, 0, zoom, size)
        pivot = _new_object(f"P10 Pivot {label}", None, root, "PIVOT", created, names)
        frame = _new_object(f"P10 Frame {label}", None, pivot, "FRAME", created, names)
        for ob in (pivot, frame):
            ob.empty_display_size = 0.05 * size
        drive_pivot(pivot, frame, root, plan, sx, sy)
        by_level: dict = {}
        meshes, mats = [], []
        for i, image in enumerate(images):
            name = f"P10 {label} L{i:02d}"
            mesh = _plane_mesh(name, sx, sy, 0.0)
            mat = _emission_material(name, image)
            mesh.materials.append(mat)
            meshes.append(mesh)
            mats.append(mat)
            created += [mesh, mat]
            names.update({mesh: name, mat: name})
        for j in range(plan.planes):
            level, copy = j % n, j // n
            suffix = f" L{level:02d}" + (f" copy {copy}" if copy else "")
            empty = _new_object(f"P10 Level {label}{suffix}", None, frame, "LEVEL", created,
                                names)
            empty.empty_display_type = "CUBE"
            empty.empty_display_size = 0.5 * size  # half the level's frame width: its outline
            empty["p10_level"], empty["p10_copy"] = level, copy
            drive_level(empty, root, plan, j, sx, sy)
            ob = _new_object(f"P10 {label}{suffix}", meshes[level], empty, "LAYER", created,
                             names)
            ob["p10_level"], ob["p10_copy"] = level, copy
            _camera_rays_only(ob)
            drive_plane(ob, root, plan, j, size)
            if copy == 0:
                by_level[("LEVEL", level)] = empty
                by_level[("LAYER", level)] = ob
        by_level[("PIVOT", None)], by_level[("FRAME", None)] = pivot, frame

        cam = _adopt(old, "CAMERA")
        if cam is None:
            cam_data = bpy.data.cameras.new(f"P10 Camera {label}")
            cam_data.type = "ORTHO"
            cam_data.sensor_fit = "AUTO"
            cam_data.ortho_scale = size
            # perspective framing equal to the orthographic one at the planes' distance
            cam_data.lens = cam_data.sensor_width * CAMERA_HEIGHT
            cam_data.clip_start = 0.01 * size
            cam_data.clip_end = 100.0 * CAMERA_HEIGHT * size
            cam = _new_object(f"P10 Camera {label}", cam_data, root, "CAMERA", created, names)
            cam.location = (0.0, 0.0, CAMERA_HEIGHT * size)  # looks down -Z at the planes
            created.append(cam_data)
            names[cam_data] = f"P10 Camera {label}"
            drive_camera(cam_data, root)
        for idb in created:
            idb[BUILD_KEY] = build_id
            if isinstance(idb, bpy.types.Object):
                coll.objects.link(idb)
        set_build_look(coll, exact, smooth)
    except BaseException:
        remove_build(build_id)
        if created_scene is not None:
            bpy.data.scenes.remove(created_scene)
        raise
    # The new build is complete: it adopts the previous root and camera (their places,
    # settings, keys and children), takes over what pointed to the old planes, then the
    # previous build goes and its names pass to the new datablocks.
    kept = {root, cam}
    adopted_root = root.get(BUILD_KEY) != build_id
    for ob in kept:
        if ob.get(BUILD_KEY) != build_id:
            ob[BUILD_KEY] = build_id
            coll.objects.link(ob)
            if ob.type == "CAMERA":
                ob.data[BUILD_KEY] = build_id
                drive_camera(ob.data, root)
    action = root.animation_data.action if root.animation_data else None
    if action is not None:
        action[BUILD_KEY] = build_id
    _carry_over(old, coll, kept, by_level, level_shift)
    if level_shift and adopted_root:
        from .animation import shift_levels
        shift_levels(root, level_shift)  # image k is level k + shift now
    for coll_old in old:
        for ob in kept:
            if ob.name in coll_old.objects:
                coll_old.objects.unlink(ob)
        remove_build(coll_old[BUILD_KEY])
    ui = root.id_properties_ui(ZOOM_PROP)
    top = float(n if loop else n - 1)
    ui.update(min=0.0, max=1e6 if loop else top, soft_min=0.0, soft_max=top,
              description=f"Zoom level shown: k fills the view with image k (0-{n - 1}"
                          + ("; a loop: level N is level 0 again)" if loop else ")")
                          + "; keys in between give a constant-speed exponential zoom")
    ui = root.id_properties_ui(OVERSCAN_PROP)
    ui.update(min=1.0, max=path_keys.OVERSCAN_MAX, soft_min=1.0, soft_max=8.0,
              description="How many times wider than the rig's view the camera may see: a "
                          "coarser level stays visible until a finer one covers that much")
    root["p10_zoom"] = zoom
    if own_scene:
        scene.camera = cam
        scene[STACK_KEY], scene[IDENTITY_KEY] = key, identity  # (a moved stack: its new place)
        if created_scene is not None:
            configure_render(scene, width, height, engine, samples, exact)
            _world(scene)
    elif scene.camera is None or any(scene.camera == build_camera(c) for c in old):
        scene.camera = cam
    for idb, name in names.items():
        if idb.name != name:
            idb.name = name
    try:
        fit_overscan(coll)
    except (RuntimeError, ValueError, ZeroDivisionError):
        pass  # no evaluated camera yet: the default overscan stands
    return coll
