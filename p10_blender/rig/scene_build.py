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
from ...core.stack.stack_io import read_manifest
from ..setup import compat

BUILD_KEY = "p10_build"
STACK_KEY = "p10_stack"         # the stack folder's real path
IDENTITY_KEY = "p10_stack_id"   # the stack wherever it lies (``stack_identity``)
HOME_KEY = "p10_home"      # on a rig scene: the scene whose settings it uses
ZOOM_PROP = "zoom_level"  # the animatable float on the rig's root object
PLANE_SIZE = 1.0          # longer side of the view (and of plane k at zoom_level k), in units
Z_STEP = 1e-4             # gap between consecutive planes, as a fraction of PLANE_SIZE
CAMERA_HEIGHT = 1.0       # camera distance above the planes, as a fraction of PLANE_SIZE
FINEST_VIEW_FRACTION = 1.0 / 4096  # planes smaller than this part of the view are hidden
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
    return max(1, int(math.floor(math.log(1.0 / FINEST_VIEW_FRACTION, zoom) + 1e-9)))


def _add_driver(ob, path: str, index: int, root, expression: str) -> None:
    fc = ob.driver_add(path, index) if index >= 0 else ob.driver_add(path)
    driver = fc.driver
    driver.type = "SCRIPTED"
    var = driver.variables.new()
    var.name, var.type = "z", "SINGLE_PROP"
    var.targets[0].id_type = "OBJECT"
    var.targets[0].id = root
    var.targets[0].data_path = f'["{ZOOM_PROP}"]'
    # Simple expressions only: they run without Python (auto-run scripts may be off).
    driver.expression = expression


def drive_plane(ob, root, level: int, zoom: int, size: float) -> None:
    """Plane ``level`` follows ``root["zoom_level"]``: scale p^(z - k), z-order, visibility.

    Clamped so a hidden plane never holds an extreme number: covered planes stop at p (still
    larger than the view, behind the visible one), tiny ones at p^-(D+1).
    """
    depth = visible_depth(zoom)
    scale = f"pow({zoom}, clamp(z - {level}, {-(depth + 1)}, 1))"
    _add_driver(ob, "scale", 0, root, scale)
    _add_driver(ob, "scale", 1, root, scale)
    _add_driver(ob, "location", 2, root,
                f"clamp({level} - z, -1, {depth + 1}) * {Z_STEP * size!r}")
    # covered: plane z >= k + 1 fills the view in front; too small: finer than p^-D
    _add_driver(ob, "hide_render", -1, root, f"z - {level} >= 1 or {level} - z > {depth}")


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


def set_build_look(coll: "bpy.types.Collection", exact: bool) -> None:
    """Textures of a build: colour data sampled smoothly, or exact values and texels."""
    for ob in build_objects(coll, "LAYER"):
        mat = ob.active_material
        tex = next((n for n in mat.node_tree.nodes if n.type == "TEX_IMAGE"), None) \
            if mat is not None and mat.node_tree is not None else None
        if tex is None or tex.image is None:
            continue
        tex.interpolation = EXACT_INTERPOLATION if exact else INTERPOLATION
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
    source = bpy.data.scenes.get(str(scene.get("p10_video_of", "")))
    if source is not None and source != scene:
        scene = source
    coll = active_build(scene)
    if coll is not None:
        return coll
    homed = [c for c in find_builds() if c.get(HOME_KEY) == scene.name]
    return max(homed, key=lambda c: c.get("p10_serial", 0)) if homed else None


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
    (same identity) or the stack this one extends (``keys``) finds the scene it had."""
    for scene in bpy.data.scenes:
        if scene.get(HOME_KEY) is not None and _same_stack(scene, keys, identity):
            return scene, False
    scene = bpy.data.scenes.new(label)
    scene[HOME_KEY] = home.name
    return scene, True


def _world(scene: "bpy.types.Scene") -> None:
    """A rig scene gets a world (Blender's default grey) so objects an artist adds are lit as
    in any new scene; the planes are emission seen by camera rays only and ignore it."""
    if scene.world is None:
        world = bpy.data.worlds.new(scene.name)
        world.color = (0.05, 0.05, 0.05)
        if hasattr(world, "use_nodes") and not world.use_nodes:
            world.use_nodes = True  # always on (and deprecated) in 5.0
        background = world.node_tree.nodes.get("Background") if world.node_tree else None
        if background is not None:
            background.inputs["Color"].default_value = (0.05, 0.05, 0.05, 1.0)
        scene.world = world


def _new_rig(scene: "bpy.types.Scene", label: str, n: int, size: float, old: list,
             own_scene: bool) -> "tuple[bpy.types.Collection, bpy.types.Object, bpy.types.Object]":
    """A new build's collection, root and camera (first load): ``(coll, root, camera)``."""
    coll = bpy.data.collections.new(f"P10 Zoom {label}")
    scene.collection.children.link(coll)
    root = bpy.data.objects.new(f"P10 Root {label}", None)
    root.empty_display_type = "PLAIN_AXES"
    root.empty_display_size = 0.1 * size
    if not own_scene:
        exclude = {ob for c in old for ob in c.objects}
        root.location = (_free_slot_x(scene, exclude, size), 0.0, 0.0)
    root[ZOOM_PROP] = 0.0
    root["p10_role"] = "ROOT"

    cam_data = bpy.data.cameras.new(f"P10 Camera {label}")
    cam_data.type = "ORTHO"
    cam_data.sensor_fit = "AUTO"
    cam_data.ortho_scale = size
    # perspective framing equal to the orthographic one at the planes' distance
    cam_data.lens = cam_data.sensor_width * CAMERA_HEIGHT
    cam_data.clip_start = 0.01 * size
    cam_data.clip_end = 2.0 * CAMERA_HEIGHT * size
    cam = bpy.data.objects.new(f"P10 Camera {label}", cam_data)
    cam.parent = root
    cam.location = (0.0, 0.0, CAMERA_HEIGHT * size)  # looks down -Z at the planes
    cam["p10_role"] = "CAMERA"
    for ob in (root, cam):
        coll.objects.link(ob)
    return coll, root, cam


def _add_planes(coll, root, images, label: str, width: int, height: int, zoom: int,
                size: float) -> "dict[bpy.types.ID, str]":
    """One plane per layer, parented to ``root`` and driven by its ``zoom_level``; returns
    the new datablocks with their final names."""
    names: dict[bpy.types.ID, str] = {}
    sx, sy = plane_size(width, height, 0, zoom, size)
    for i, image in enumerate(images):
        name = f"P10 {label} L{i:02d}"
        mesh = _plane_mesh(name, sx, sy, 0.0)
        mat = _emission_material(name, image)
        mesh.materials.append(mat)
        ob = bpy.data.objects.new(name, mesh)
        ob.parent = root
        ob["p10_role"], ob["p10_level"] = "LAYER", i
        _camera_rays_only(ob)
        drive_plane(ob, root, i, zoom, size)
        coll.objects.link(ob)
        names.update({mesh: name, mat: name, ob: name, image: name})
    return names


def _adopt_children(old_coll, new_objects: list, shift: int) -> None:
    """Objects an artist parented to a level of the old build move to the same image's new
    object (level + ``shift`` after Extend Wider). Their local transform and parent inverse
    stay: the new object of that image is where the old one was at the same zoom."""
    by_level = {(ob.get("p10_role"), ob.get("p10_level")): ob for ob in new_objects}
    old_id = old_coll[BUILD_KEY]
    for ob in old_coll.objects:
        role = ob.get("p10_role")
        if role in (None, "ROOT", "CAMERA") or ob.get(BUILD_KEY) != old_id:
            continue
        target = by_level.get((role, int(ob.get("p10_level", 0)) + shift))
        for child in list(ob.children):
            child.parent = target if target is not None else build_root(old_coll)


def _set_stack_info(coll, key: str, identity: str, manifest: dict, size: float,
                    label: str) -> None:
    coll[STACK_KEY], coll[IDENTITY_KEY], coll["p10_label"] = key, identity, label
    coll["p10_zoom"], coll["p10_num_levels"] = int(manifest["zoom"]), int(manifest["num_levels"])
    coll["p10_width"], coll["p10_height"] = int(manifest["width"]), int(manifest["height"])
    coll["p10_plane_size"] = float(size)
    coll["p10_prompts"] = json.dumps([str(p) for p in manifest["prompts"]])


def _zoom_range(root, n: int) -> None:
    ui = root.id_properties_ui(ZOOM_PROP)
    ui.update(min=0.0, max=float(n - 1), soft_min=0.0, soft_max=float(n - 1),
              description=f"Zoom level shown: k fills the view with image k (0-{n - 1}); "
                          f"keys in between give a constant-speed exponential zoom")


def build_zoom_stack(home: "bpy.types.Scene", directory: str | os.PathLike, *,
                     own_scene: bool = True, exact: bool = False, engine: str = "CYCLES",
                     samples: int = 16, size: float = PLANE_SIZE,
                     replaces: str | os.PathLike | None = None,
                     level_shift: int = 0) -> "bpy.types.Collection":
    """Build the rig of the stack folder ``directory``, or update a rig in place; returns its
    collection.

    ``own_scene`` (default): in a scene of its own named after the stack, made on the first
    load with the render settings of ``configure_render``; ``home`` (the user's scene) is not
    changed at all. Otherwise the rig is added to ``home`` beside its objects, and only the
    camera is set, if ``home`` has none.

    In place: a rig of the same stack (the same folder, the same stack moved elsewhere —
    ``stack_identity`` —, or the stack ``replaces`` names, which Extend / Regenerate made this
    one from) keeps its scene, collection, root (with its keys and children), camera (with the
    artist's settings) and names; only the planes are new. Children of the old planes move to
    the new plane of the same image (``level_shift``: levels added outside, Extend Wider).
    The new planes are made complete first; only then do the old ones go, so a failure leaves
    everything as it was. Raises StackFormatError for a bad folder. The zoom is not keyed here
    (see ``animation.key_zoom``).
    """
    directory = Path(bpy.path.abspath(os.fspath(directory)))
    manifest = read_manifest(directory)
    key, identity = _stack_key(directory), stack_identity(manifest)
    keys = {key} | ({_stack_key(replaces)} if replaces else set())
    width, height = int(manifest["width"]), int(manifest["height"])
    zoom, n = int(manifest["zoom"]), int(manifest["num_levels"])
    build_id = uuid.uuid4().hex

    created_scene = None
    new_ids: list = []  # made by this call: removed again on failure
    try:
        if own_scene:
            scene, created = _rig_scene(home, keys, identity, directory.name or "stack")
            created_scene = scene if created else None
        else:
            scene = home
        old = [c for c in find_builds(scene) if _same_stack(c, keys, identity)]
        keep = max(old, key=lambda c: c.get("p10_serial", 0)) if old else None
        label = str(keep.get("p10_label", "")) if keep is not None else ""
        label = label or (directory.name or "stack")
        images = _load_layers(directory, manifest, label, build_id)
        if keep is not None:
            coll, root, cam = keep, build_root(keep), build_camera(keep)
        else:
            coll, root, cam = _new_rig(scene, label, n, size, old, own_scene)
            coll["p10_serial"] = max([c.get("p10_serial", 0) for c in find_builds()] or [0]) + 1
            coll[HOME_KEY] = home.name
            new_ids += [coll, root, cam, cam.data]
        names = _add_planes(coll, root, images, label, width, height, zoom, size)
        new_ids += list(names)
        for idb in new_ids:
            idb[BUILD_KEY] = build_id
        set_build_look(coll, exact)  # (the new planes; the old ones go below)

        if own_scene:
            if created_scene is not None:
                configure_render(scene, width, height, engine, samples, exact)
                _world(scene)
            if scene.camera is None or keep is None:
                scene.camera = cam
        elif scene.camera is None or any(scene.camera == build_camera(c) for c in old):
            scene.camera = cam
    except BaseException:
        remove_build(build_id)  # (the images are tagged as they load)
        if created_scene is not None:
            bpy.data.scenes.remove(created_scene)
        raise
    # The new planes are complete: the old ones may go now. A kept rig's root, camera,
    # collection and keys pass to the new build; everything else of the old builds goes.
    if keep is not None:
        _adopt_children(keep, [ob for ob in names if isinstance(ob, bpy.types.Object)],
                        level_shift)
        kept = [coll, root, cam, cam.data]
        action = root.animation_data.action if root.animation_data is not None else None
        kept += [action] if action is not None else []
        old_id = keep[BUILD_KEY]
        for idb in kept:
            idb[BUILD_KEY] = build_id
        remove_build(old_id)
        if level_shift:
            from .animation import shift_levels
            shift_levels(root, level_shift)
    for coll_old in old:
        if coll_old is not keep:
            remove_build(coll_old[BUILD_KEY])
    if own_scene:
        scene[STACK_KEY], scene[IDENTITY_KEY] = key, identity
    _set_stack_info(coll, key, identity, manifest, size, label)
    _zoom_range(root, n)
    root["p10_zoom"] = zoom
    for idb, name in names.items():
        if idb.name != name:
            idb.name = name
    return coll
