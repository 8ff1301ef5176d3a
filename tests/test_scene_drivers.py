"""The rig's drivers under an artist's hands: off-centre camera paths, loops, any framing
(lens, ortho scale, tilt, roll, pan, height), any root scale, objects parented to a level.

Headless Blender subprocesses (tests/blender_harness); tiny Cycles renders read back as pixels.
The expected frames are core.stack.preview's (``render_zoom_frame`` with the footprints), which
follows ``core.zoom.camera_path``: the rig and the MP4 share one camera path.
"""

import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image

from core.stack.preview import render_zoom_frame
from core.zoom.zoom_stack import render_image

from blender_harness import install_extension, run_blender
from test_scene_render import procedural_layers, psnr

ADDON = "bl_ext.user_default.powers_of_ten"


def consistent_images(layers: np.ndarray, zoom: int, footprints, loop: bool = False):
    """core's Π_image with the footprints (round the cycle for a loop): what each level shows."""
    t = torch.from_numpy(layers).permute(0, 3, 1, 2)
    return render_image(t, zoom, footprints, loop).permute(0, 2, 3, 1).numpy().clip(0, 1)


def write_stack(path, images: np.ndarray, zoom: int, footprints=None, loop=False) -> np.ndarray:
    """A stack folder written by hand (the PNGs as given); returns the 8-bit images as float."""
    path.mkdir(parents=True)
    n, h, w, _ = images.shape
    q = np.round(images * 255).astype(np.uint8)
    names = [f"layer_{i:02d}.png" for i in range(n)]
    for name, im in zip(names, q):
        Image.fromarray(im, mode="RGB").save(path / name)
    manifest = {"format": "p10-zoom-stack", "format_version": 1, "zoom": zoom, "width": w,
                "height": h, "num_levels": n, "layers": names,
                "prompts": [f"level {i}" for i in range(n)]}
    if footprints is not None:
        manifest["footprints"] = [list(map(int, fp)) for fp in footprints]
    if loop:
        manifest["loop"] = True
    (path / "manifest.json").write_text(json.dumps(manifest))
    return q.astype(np.float32) / 255


def reference_frame(images, zoom, footprints, z, size, loop=False):
    """core.stack.preview's frame at zoom level z: the same camera path as the rig's."""
    return render_zoom_frame(images, zoom, z, (size, size), footprints=footprints, loop=loop)


@pytest.fixture(scope="module")
def ur(tmp_path_factory):
    return install_extension(tmp_path_factory.mktemp("ur_drivers"))


HELPERS = f'''
import importlib, os
compat = importlib.import_module("{ADDON}.p10_blender.setup.compat")
def load_rig(stack, size=64, samples=16):
    assert "FINISHED" in bpy.ops.p10.load_stack(directory=stack)
    rig = bpy.context.scene
    rig.cycles.samples = samples
    rig.render.resolution_x = rig.render.resolution_y = size
    root = [o for o in rig.objects if "zoom_level" in o][0]
    for fc in compat.fcurves_for(root):
        fc.mute = True
    return rig, root
def render(scene, path):
    scene.render.filepath = path
    bpy.ops.render.render(write_still=True, scene=scene.name)
'''


RENDER = HELPERS + '''
rig, root = load_rig({stack!r})
zoom_keys = [tuple(kp.co) for kp in compat.find_fcurve(root, '["zoom_level"]').keyframe_points]
interpolation = [kp.interpolation for kp in compat.find_fcurve(root, '["zoom_level"]').keyframe_points]
for z in {levels!r}:
    root["zoom_level"] = float(z)
    render(rig, os.path.join({out!r}, f"z{{z}}.png"))
rig.camera.data.type = "PERSP"  # the matching lens frames the same view
render(rig, os.path.join({out!r}, "persp.png"))
rig.camera.data.type = "ORTHO"
# every driver runs without Python: valid, and SCRIPTED ones simple expressions
not_simple = [(idb.name, fc.data_path) for idb in [*bpy.data.objects, *bpy.data.cameras]
              if idb.animation_data for fc in idb.animation_data.drivers
              if not fc.driver.is_valid
              or (fc.driver.type == "SCRIPTED" and not fc.driver.is_simple_expression)]
drivers = sum(len(idb.animation_data.drivers) for idb in [*bpy.data.objects, *bpy.data.cameras]
              if idb.animation_data)
if {save!r}:
    bpy.context.window.scene = rig
    bpy.ops.wm.save_as_mainfile(filepath={save!r})
emit(n=len(rig.objects), not_simple=not_simple, drivers=drivers, zoom_keys=zoom_keys,
     frame_end=rig.frame_end, interpolation=interpolation)
'''

# the saved .blend, opened without the add-on and with auto-run scripts off
NO_ADDON = '''
if ADDON in bpy.context.preferences.addons.keys():
    disable_addon()
bpy.context.preferences.filepaths.use_scripts_auto_execute = False
bpy.ops.wm.open_mainfile(filepath={blend!r}, load_ui=False)
rig = bpy.context.scene
root = [o for o in rig.objects if "zoom_level" in o][0]
root.animation_data.action = None
root["zoom_level"] = {z!r}
rig.render.filepath = {path!r}
bpy.ops.render.render(write_still=True)
emit(auto=bpy.context.preferences.filepaths.use_scripts_auto_execute, scene=rig.name,
     addon=ADDON in bpy.context.preferences.addons.keys(), p10=hasattr(bpy.types.Scene, "p10"))
'''


@pytest.mark.parametrize("zoom,footprints,levels", [
    (2, [(8, 24), (28, 4), (16, 30)], [0, 1, 2, 3, 0.5, 1.3, 2.6]),
    (4, [(40, 8), (4, 36)], [0, 1, 2, 0.4, 1.7]),
])
def test_off_centre_camera_path_renders_like_the_core_at_and_between_levels(
        ur, tmp_path, zoom, footprints, levels):
    n = len(footprints) + 1
    images = consistent_images(procedural_layers(n, 64, seed=11 + zoom), zoom, footprints)
    images = write_stack(tmp_path / "fp", images, zoom, footprints)
    out = run_blender(RENDER.format(stack=str(tmp_path / "fp"), levels=levels,
                                    out=str(tmp_path), save=""), ur)
    assert out["not_simple"] == [] and out["drivers"] > 0
    scores = {}
    for z in levels:
        frame = iio.imread(tmp_path / f"z{z}.png").astype(np.float32) / 255
        scores[z] = psnr(frame, reference_frame(images, zoom, footprints, z, 64))
    print("PSNR", zoom, scores)
    assert min(scores.values()) >= 30, scores
    # the path is what moves the view: a centred view would miss the off-centre footprint
    frame = iio.imread(tmp_path / f"z{levels[-1]}.png").astype(np.float32) / 255
    assert psnr(frame, reference_frame(images, zoom, None, levels[-1], 64)) < \
        scores[levels[-1]] - 6
    persp = iio.imread(tmp_path / "persp.png").astype(np.float32) / 255
    assert psnr(persp, reference_frame(images, zoom, footprints, levels[-1], 64)) >= 30


def test_loop_wraps_zoom_level_n_renders_like_zero_at_any_number_of_loops(ur, tmp_path):
    zoom, footprints = 2, [(24, 8), (4, 20), (16, 16)]
    images = consistent_images(procedural_layers(3, 64, seed=21), zoom, footprints, loop=True)
    images = write_stack(tmp_path / "loop", images, zoom, footprints, loop=True)
    levels = [0, 3, 6, 1.5, 4.5, 10.5, 2.5]
    blend = str(tmp_path / "loop.blend")
    out = run_blender(RENDER.format(stack=str(tmp_path / "loop"), levels=levels,
                                    out=str(tmp_path), save=blend), ur)
    assert out["not_simple"] == [] and out["drivers"] > 0
    # the panel's keys zoom once round the loop, level 0 to level N (= level 0 again), at
    # constant speed from the first frame; the last frame is the one before level N
    assert out["zoom_keys"] == [[1.0, 0.0], [145.0, 3.0]] and out["frame_end"] == 144
    assert out["interpolation"] == ["LINEAR", "LINEAR"]
    frames = {z: iio.imread(tmp_path / f"z{z}.png").astype(np.float32) / 255 for z in levels}
    # without the add-on, auto-run off: the same frame
    bare = run_blender(NO_ADDON.format(blend=blend, z=4.5, path=str(tmp_path / "bare.png")),
                       ur, enable=False)
    assert bare["auto"] is False and not bare["addon"] and not bare["p10"]
    assert psnr(iio.imread(tmp_path / "bare.png").astype(np.float32) / 255, frames[4.5]) >= 40
    assert psnr(frames[3], frames[0]) >= 40 and psnr(frames[6], frames[0]) >= 40
    assert psnr(frames[4.5], frames[1.5]) >= 40 and psnr(frames[10.5], frames[1.5]) >= 40
    for z in (0, 1.5, 2.5):  # and each is the cycle's frame (2.5: level 0 inside level 2)
        ref = reference_frame(images, zoom, footprints, z, 64, loop=True)
        assert psnr(frames[z], ref) >= 30, (z, psnr(frames[z], ref))


FRAMING = HELPERS + '''
import math
rig, root = load_rig({stack!r}, size=32, samples=2)
cam = rig.camera
base = dict(type=cam.data.type, lens=cam.data.lens, loc=tuple(cam.location),
            rot=tuple(cam.rotation_euler), ortho=cam.data["rig_ortho_scale"])
def reset():
    cam.data.type, cam.data.lens = base["type"], base["lens"]
    cam.location, cam.rotation_euler = base["loc"], base["rot"]
    cam.data["rig_ortho_scale"] = base["ortho"]
    root.scale = (1, 1, 1)
    root.location = root.rotation_euler = (0, 0, 0)
def shot(name, levels):
    for z in levels:
        root["zoom_level"] = float(z)
        render(rig, os.path.join({out!r}, f"{{name}}_{{z}}.png"))
cases = dict(
    nominal=lambda: None,
    lens24=lambda: (setattr(cam.data, "type", "PERSP"), setattr(cam.data, "lens", 24.0)),
    ortho13=lambda: cam.data.__setitem__("rig_ortho_scale", 1.3),
    tilt15=lambda: setattr(cam, "rotation_euler", (math.radians(15), 0, 0)),
    roll30=lambda: setattr(cam, "rotation_euler", (0, 0, math.radians(30))),
    pan015=lambda: setattr(cam, "location", (0.15, 0, 1)),
    high15=lambda: (setattr(cam.data, "type", "PERSP"), setattr(cam, "location", (0, 0, 1.5))),
    scale10=lambda: setattr(root, "scale", (10, 10, 10)),
    scale01=lambda: setattr(root, "scale", (0.1, 0.1, 0.1)),
    moved=lambda: (setattr(root, "location", (5, -3, 2)),
                   setattr(root, "rotation_euler", (0.3, 0.2, 1.0)),
                   setattr(root, "scale", (2, 2, 2))),
)
fitted = {{}}
for name, change in cases.items():
    reset()
    change()
    bpy.context.view_layer.update()
    shot(name, [1, 2, 3])
    fitted[name] = root["overscan"]
# without the overscan margin the coarser plane would go too early: black shows
reset()
handlers = list(bpy.app.handlers.depsgraph_update_post)
bpy.app.handlers.depsgraph_update_post.clear()  # (it would fit the overscan again)
cases["lens24"]()
root["overscan"] = 1.0
shot("nomargin", [1])
bpy.app.handlers.depsgraph_update_post.extend(handlers)
# a 12 mm lens sees 3x the view: fitted to the camera (handler), black-free from level 2 on
reset()
cam.data.type, cam.data.lens = "PERSP", 12.0
bpy.context.view_layer.update()
fitted["lens12"] = root["overscan"]
shot("lens12", [2, 3])
root["overscan"] = 10.0  # Fit Overscan to Camera sets it exactly (down too)
assert bpy.ops.p10.fit_overscan() == {{"FINISHED"}}
fitted["operator"] = root["overscan"]
# an animated lens (36 mm on frame 1, 12 mm on the last): fitted over the whole shot
reset()
cam.data.type = "PERSP"
cam.data.keyframe_insert("lens", frame=rig.frame_start)
cam.data.lens = 12.0
cam.data.keyframe_insert("lens", frame=rig.frame_end)
rig.frame_set(rig.frame_start)
root["overscan"] = 1.0
assert bpy.ops.p10.fit_overscan() == {{"FINISHED"}}
fitted["animated"] = root["overscan"]
fitted["frame_back"] = rig.frame_current == rig.frame_start
# an object parented to a level's empty zooms with it at every zoom level
reset()
child = bpy.data.objects.new("child", None)
rig.collection.objects.link(child)
child.parent = bpy.data.objects["P10 Level fp L01"]
scales = []
for z in (0.0, 1.0, 2.0, 3.0, 2.5):
    root["zoom_level"] = z
    root.update_tag()
    bpy.context.view_layer.update()
    scales.append(child.matrix_world.to_scale().x)
emit(fitted=fitted, scales=scales, clip=[cam.data.clip_end])
'''


def test_any_framing_and_root_scale_never_shows_black_and_levels_can_be_parented_to(
        ur, tmp_path):
    images = consistent_images(procedural_layers(4, 32, seed=3), 2, None)
    write_stack(tmp_path / "fp", images, 2)  # centred, no "footprints" key
    out = run_blender(FRAMING.format(stack=str(tmp_path / "fp"), out=str(tmp_path)), ur)

    def black(name, z):
        frame = iio.imread(tmp_path / f"{name}_{z}.png").astype(np.float32) / 255
        return float((frame.max(axis=-1) < 0.02).mean())

    for name in ("lens24", "ortho13", "tilt15", "roll30", "pan015", "high15", "scale10",
                 "scale01", "moved"):
        assert [black(name, z) for z in (1, 2, 3)] == [0.0, 0.0, 0.0], (name, out["fitted"])
    print("overscan fitted", out["fitted"])
    assert black("nomargin", 1) > 0.2  # the test sees black when there is some
    # the root's transform moves the whole shot: the frames stay what they were
    for name in ("scale10", "scale01", "moved"):
        for z in (1, 2, 3):
            a, b = (iio.imread(tmp_path / f"{n}_{z}.png").astype(np.float32) / 255
                    for n in (name, "nominal"))
            assert psnr(a, b) >= 35, (name, z, psnr(a, b))
    assert out["fitted"]["lens12"] >= 2.9
    assert 2.9 <= out["fitted"]["operator"] <= 3.1
    assert 2.9 <= out["fitted"]["animated"] <= 3.1 and out["fitted"]["frame_back"]
    assert out["fitted"]["scale10"] == 2.0  # the default covers these; scale changes nothing
    assert black("lens12", 2) == 0.0 and black("lens12", 3) == 0.0
    # world scale of a child of level 1's empty: 2^(z - 1) at every zoom level, unclamped
    assert np.allclose(out["scales"], [0.5, 1.0, 2.0, 4.0, 2 ** 1.5], rtol=1e-4), out["scales"]


KEYS = HELPERS + '''
anim = bpy.context.scene.p10.animation
anim.frames_per_level, anim.hold_start, anim.hold_end, anim.ease_frames = 10, 2, 3, 4
home = bpy.context.scene
assert "FINISHED" in bpy.ops.p10.load_stack(directory={stack!r})
rig = bpy.context.scene
root = [o for o in rig.objects if "zoom_level" in o][0]
anim_mod = importlib.import_module("{addon}.p10_blender.rig.animation")
def keys():
    fc = compat.find_fcurve(root, '["zoom_level"]')
    return [(round(kp.co.x, 3), round(kp.co.y, 3)) for kp in fc.keyframe_points]
def curve():
    fc = compat.find_fcurve(root, '["zoom_level"]')
    return [fc.evaluate(f / 4) for f in range(4 * rig.frame_start, 4 * rig.frame_end + 1)]
res = dict(first=keys(), first_end=rig.frame_end)
# hold at level 2: two keys at 2.0, flat handles, no overshoot anywhere
anim.hold_levels, anim.hold_frames = "2", 6
res["held"], res["held_curve"], res["held_end"] = keys(), curve(), rig.frame_end
# the artist moves the last key 5 frames later and adds a hold key by hand
fc = compat.find_fcurve(root, '["zoom_level"]')
last = max(fc.keyframe_points, key=lambda kp: kp.co.x)
for attr in ("co", "handle_left", "handle_right"):
    getattr(last, attr).x += 5
fc.update()
root.animation_data.action.update_tag()
bpy.context.view_layer.update()      # the Graph Editor's edit reaches the depsgraph
res["retimed_end"], res["edited"] = rig.frame_end, anim_mod.keys_edited(root)
edited = keys()
anim.frames_per_level = 7            # any setting: the edited keys stay
anim.direction = "OUT"
anim.direction = "IN"
res["kept"] = keys() == edited
# the artist's camera and children survive a reload of the same stack
cam = rig.camera
cam.data.type, cam.data.lens = "PERSP", 40.0
cam.location.x = 0.05
kid = bpy.data.objects.new("kid", None); rig.collection.objects.link(kid); kid.parent = root
pet = bpy.data.objects.new("pet", None); rig.collection.objects.link(pet)
pet.parent = bpy.data.objects["P10 Level fp L02"]
anim.texture_filter = "Cubic"
anim.exact = True
anim.exact = False
res["filter_toggle"] = anim_mod and [n.interpolation for m in bpy.data.materials if "p10_build" in m
                                     for n in m.node_tree.nodes if n.type == "TEX_IMAGE"]
bpy.context.window.scene = home
home.name = "Renamed Home"           # the rig keeps pointing at it
assert "FINISHED" in bpy.ops.p10.load_stack(directory={stack!r})
rig = bpy.context.scene
root = [o for o in rig.objects if "zoom_level" in o][0]
cam = rig.camera
res["reload"] = dict(type=cam.data.type, lens=cam.data.lens, x=round(cam.location.x, 4),
                     cam=cam.name, kid=kid.parent.name if kid.parent else None,
                     pet=pet.parent.name if pet.parent else None, keys=keys() == edited,
                     scenes=sorted(s.name for s in bpy.data.scenes),
                     filter=[n.interpolation for m in bpy.data.materials if "p10_build" in m
                             for n in m.node_tree.nodes if n.type == "TEX_IMAGE"],
                     objects=len(rig.objects))
# from the renamed home: Reset Zoom Keys (asks; here run directly) and the video still work
bpy.context.window.scene = bpy.data.scenes["Renamed Home"]
res["poll_video"] = bpy.ops.p10.make_video.poll()
assert bpy.ops.p10.rekey_zoom() == {{"FINISHED"}}
res["reset"], res["reset_end"] = keys(), rig.frame_end
# a rig whose root lacks the overscan (as rigs of older versions do), saved and reopened:
# a reload adopts that root and its new drivers must work (they were left flagged invalid)
del root["overscan"]
bpy.context.window.scene = rig
bpy.ops.wm.save_as_mainfile(filepath={blend!r})
bpy.ops.wm.open_mainfile(filepath={blend!r})
bpy.context.window.scene = bpy.data.scenes["Renamed Home"]
assert "FINISHED" in bpy.ops.p10.load_stack(directory={stack!r})
rig = bpy.context.scene
root = [o for o in rig.objects if "zoom_level" in o][0]
root.animation_data.action = None
root["zoom_level"] = 0.0
root.update_tag()
bpy.context.view_layer.update()
dg = bpy.context.evaluated_depsgraph_get()
res["legacy"] = dict(
    invalid=[(i.name, fc.data_path) for i in [*bpy.data.objects, *bpy.data.cameras]
             if i.animation_data for fc in i.animation_data.drivers if not fc.driver.is_valid],
    shown=[o.name for o in rig.objects if o.get("p10_role") == "LAYER"
           and not o.evaluated_get(dg).hide_render], overscan=root.get("overscan"))
before = len(bpy.data.objects)
try:
    bpy.ops.p10.load_stack(directory={bad!r})
    res["bad"] = "loaded"
except RuntimeError as e:
    res["bad"] = str(e)
res["bad_built"] = len(bpy.data.objects) - before
emit(**res)
'''


def test_hand_timing_kept_holds_without_overshoot_camera_children_and_home_kept(ur, tmp_path):
    images = consistent_images(procedural_layers(4, 32, seed=4), 2, None)
    write_stack(tmp_path / "fp", images, 2)
    write_stack(tmp_path / "bad", images, 2, footprints=[(8, 8), (20, 8), (8, 8)])
    out = run_blender(KEYS.format(stack=str(tmp_path / "fp"), addon=ADDON,
                                  bad=str(tmp_path / "bad"), blend=str(tmp_path / "k.blend")),
                      ur)
    for name in ("first", "held", "reset"):
        out[name] = [tuple(k) for k in out[name]]
    assert out["first"] == [(3.0, 0.0), (33.0, 3.0)] and out["first_end"] == 36
    # hold at level 2 for 6 frames: keys 0 -> 2, 2 (held), -> 3; monotone, never past 2
    assert out["held"] == [(3.0, 0.0), (23.0, 2.0), (29.0, 2.0), (39.0, 3.0)]
    curve = np.array(out["held_curve"])
    assert np.all(np.diff(curve) >= -1e-6) and curve.max() <= 3 + 1e-6
    assert out["held_end"] == 42
    # retimed by hand: the frame range follows; no setting re-keys an edited curve
    assert out["edited"] and out["retimed_end"] == 47
    assert out["kept"]
    r = out["reload"]
    assert (r["type"], r["lens"], r["x"]) == ("PERSP", 40.0, 0.05) and r["cam"] == "P10 Camera fp"
    assert r["kid"] == "P10 Root fp" and r["pet"] == "P10 Level fp L02" and r["keys"]
    assert r["scenes"] == ["Renamed Home", "fp"]
    assert set(out["filter_toggle"]) == {"Cubic"} and set(r["filter"]) == {"Cubic"}
    assert out["poll_video"]
    # Reset Zoom Keys: the settings' keys again (7 frames per level now, hold 6 at level 2)
    assert out["reset"] == [(3.0, 0.0), (17.0, 2.0), (23.0, 2.0), (30.0, 3.0)]
    assert out["reset_end"] == 33
    # a footprint outside the frame: one line naming it, nothing built
    assert "footprints[1]" in out["bad"] and "\n" not in out["bad"].strip()
    assert out["bad_built"] == 0
    legacy = out["legacy"]
    assert legacy["invalid"] == [] and legacy["overscan"] == 2.0
    assert legacy["shown"] == ["P10 fp L00", "P10 fp L01", "P10 fp L02", "P10 fp L03"]
