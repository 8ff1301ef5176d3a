"""Build the layer-plane collection of a zoom stack (Sec. 4.1's zoom stack, made of planes).

Layer i becomes a plane 1/p^i the size of layer 0's, centred on the same axis, lifted a
little toward the camera so finer layers cover the centre of coarser ones. Seen through an
orthographic camera whose ortho_scale is plane i's size, the frame shows exactly image i.

Every datablock of one build carries the custom property ``p10_build`` (a random id), so a
rebuild can delete precisely the previous build, and only after the new one is complete.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import bpy

from ..core.errors import StackFormatError
from ..core.stack_io import read_manifest
from . import compat

BUILD_KEY = "p10_build"
STACK_KEY = "p10_stack"
PLANE_SIZE = 1.0          # longer side of layer 0's plane, in scene units
Z_STEP = 1e-3             # gap between consecutive planes, as a fraction of PLANE_SIZE
# Pixel values pass through untouched (texture 'Non-Color', view 'Raw'): the frame then
# averages texels in the PNG's own value space, as the core's D_p does, instead of in linear
# light, so a render matches core.render_image to the bit wherever D_p is a box (p = 2).
COLORSPACE = "Non-Color"
VIEW_TRANSFORM = "Raw"
CAMERA_HEIGHT = 1.0       # camera distance above layer 0, as a fraction of PLANE_SIZE


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
                       interpolation: str = "Closest") -> "bpy.types.Material":
    """Unlit material: the texture drives an Emission of strength 1.

    With the Raw view transform the rendered 8-bit pixel then equals the texel.
    'Closest' keeps texels exact when a pixel integrates over exactly one texel.
    """
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


# --------------------------------------------------------------------------- render setup
def configure_render(scene: "bpy.types.Scene", width: int, height: int,
                     engine: str = "CYCLES", samples: int = 16) -> None:
    """Render settings under which a pixel of the frame equals the texel it shows.

    Values pass through (Non-Color texture, Raw view), no look, exposure 0, gamma 1, no dither; Cycles with a 1-pixel
    box filter and no denoising (each pixel integrates exactly the texels it covers).
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
    view.view_transform = VIEW_TRANSFORM
    view.look = "None"
    view.exposure = 0.0
    view.gamma = 1.0
    view.use_curve_mapping = False
    scene.sequencer_colorspace_settings.name = "sRGB"
    if hasattr(scene, "cycles"):
        cycles = scene.cycles
        cycles.samples = int(samples)
        cycles.use_denoising = False
        cycles.use_adaptive_sampling = False
        cycles.pixel_filter_type = "BOX"
        cycles.filter_width = 1.0
        cycles.max_bounces = 0  # emission seen directly needs no bounce
        cycles.seed = 0
    if hasattr(scene, "eevee"):
        eevee = scene.eevee
        if hasattr(eevee, "taa_render_samples"):
            eevee.taa_render_samples = int(samples)
    shading = scene.display.shading  # Workbench: unlit texture colour
    shading.light = "FLAT"
    shading.color_type = "TEXTURE"
    if hasattr(scene.display, "render_aa"):
        scene.display.render_aa = "8"


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
        "plane_size": float(coll["p10_plane_size"]),
    }


def build_objects(coll: "bpy.types.Collection", kind: str) -> list["bpy.types.Object"]:
    """Objects of a build tagged ``p10_role`` == kind ('ROOT', 'LAYER', 'CAMERA')."""
    objs = [ob for ob in coll.objects if ob.get("p10_role") == kind]
    return sorted(objs, key=lambda ob: ob.get("p10_level", 0))


def build_camera(coll: "bpy.types.Collection") -> "bpy.types.Object | None":
    cams = build_objects(coll, "CAMERA")
    return cams[0] if cams else None


def active_build(scene: "bpy.types.Scene") -> "bpy.types.Collection | None":
    """The build whose camera is the scene camera, else the newest build in the scene."""
    builds = find_builds(scene)
    for coll in builds:
        if scene.camera is not None and build_camera(coll) == scene.camera:
            return coll
    return builds[-1] if builds else None


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


def _free_slot_x(scene: "bpy.types.Scene", exclude_key: str, width: float) -> float:
    """x position beside the other stacks in this scene, so cameras never see each other."""
    right = None
    for coll in find_builds(scene):
        if coll.get(STACK_KEY) == exclude_key:
            continue
        for root in build_objects(coll, "ROOT"):
            edge = root.location.x + 0.5 * float(coll["p10_plane_size"])
            right = edge if right is None else max(right, edge)
    return 0.0 if right is None else right + 0.25 * width + 0.5 * width


def build_zoom_stack(scene: "bpy.types.Scene", directory: str | os.PathLike, *,
                     engine: str = "CYCLES", samples: int = 16,
                     size: float = PLANE_SIZE) -> "bpy.types.Collection":
    """Build (or rebuild) the plane collection of the stack folder ``directory``.

    The new build is made complete first; only then is the previous build of the same stack
    removed, so a failure leaves the scene as it was. Raises StackFormatError for a bad
    folder (nothing is built). Sets the scene camera and render settings; the camera is not
    animated here (see ``animation.animate_zoom``).
    """
    directory = Path(bpy.path.abspath(os.fspath(directory)))
    manifest = read_manifest(directory)
    key = _stack_key(directory)
    width, height = int(manifest["width"]), int(manifest["height"])
    zoom, n = int(manifest["zoom"]), int(manifest["num_levels"])
    label = directory.name or "stack"
    build_id = uuid.uuid4().hex
    old = find_builds(None, directory)

    images = _load_layers(directory, manifest, label, build_id)
    try:
        coll = bpy.data.collections.new(f"P10 Zoom {label}")
        coll[BUILD_KEY] = build_id
        coll[STACK_KEY] = key
        coll["p10_zoom"], coll["p10_num_levels"] = zoom, n
        coll["p10_width"], coll["p10_height"] = width, height
        coll["p10_plane_size"] = float(size)
        coll["p10_prompts"] = json.dumps([str(p) for p in manifest["prompts"]])
        scene.collection.children.link(coll)

        root = bpy.data.objects.new(f"P10 Root {label}", None)
        root.empty_display_type = "PLAIN_AXES"
        root.empty_display_size = 0.1 * size
        old_roots = [r for c in old if c.name in scene.collection.children
                     for r in build_objects(c, "ROOT")]
        root.location = old_roots[0].location if old_roots else \
            (_free_slot_x(scene, key, size), 0.0, 0.0)

        created: list[bpy.types.ID] = [root]
        for i, image in enumerate(images):
            sx, sy = plane_size(width, height, i, zoom, size)
            mesh = _plane_mesh(f"P10 {label} L{i:02d}", sx, sy, i * Z_STEP * size)
            mat = _emission_material(f"P10 {label} L{i:02d}", image)
            mesh.materials.append(mat)
            ob = bpy.data.objects.new(f"P10 {label} L{i:02d}", mesh)
            ob.parent = root
            ob["p10_role"], ob["p10_level"] = "LAYER", i
            created += [mesh, mat, ob]

        cam_data = bpy.data.cameras.new(f"P10 Camera {label}")
        cam_data.type = "ORTHO"
        cam_data.sensor_fit = "AUTO"
        cam_data.ortho_scale = size
        cam_data.clip_start = 0.01 * size
        cam_data.clip_end = 2.0 * CAMERA_HEIGHT * size
        cam = bpy.data.objects.new(f"P10 Camera {label}", cam_data)
        cam.parent = root
        cam.location = (0.0, 0.0, CAMERA_HEIGHT * size)  # looks down -Z at the planes
        cam["p10_role"] = "CAMERA"
        created += [cam_data, cam]
        root["p10_role"] = "ROOT"
        for idb in created:
            idb[BUILD_KEY] = build_id
            if isinstance(idb, bpy.types.Object):
                coll.objects.link(idb)

        scene.camera = cam
        configure_render(scene, width, height, engine, samples)
    except BaseException:
        remove_build(build_id)
        raise
    # The new build is complete: now the previous one of this stack may go.
    for coll_old in old:
        remove_build(coll_old[BUILD_KEY])
    return coll
