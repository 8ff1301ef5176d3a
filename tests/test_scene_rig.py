"""The zoom rig as an artist uses it: its own scene, one animatable ``zoom_level``, ortho and
perspective cameras, deep stacks, colours under 'Standard', lit objects, the video render.

Headless Blender subprocesses (tests/blender_harness); small Cycles renders (64 px, 16 samples).
"""

import imageio
import imageio.v3 as iio
import numpy as np
import pytest
import torch

from core.stack.preview import render_zoom_frame
from core.stack.stack_io import ZoomStack
from core.zoom.zoom_stack import render_image

from blender_harness import install_extension, run_blender
from test_scene_render import make_stack, psnr

ADDON = "bl_ext.user_default.powers_of_ten"

HELPERS = f'''
import importlib, os
compat = importlib.import_module("{ADDON}.p10_blender.setup.compat")
def rig_root(scene):
    return [o for o in scene.objects if "zoom_level" in o][0]
def mute(root):
    for fc in compat.fcurves_for(root):
        fc.mute = True
def load_rig(stack):
    """Load a stack; return its scene (16 samples) and root with the zoom keys muted."""
    assert "FINISHED" in bpy.ops.p10.load_stack(directory=stack)  # (no braces: formatted)
    rig = bpy.context.scene
    rig.cycles.samples = 16
    root = rig_root(rig)
    mute(root)
    return rig, root
def render(scene, path):
    scene.render.filepath = path
    bpy.ops.render.render(write_still=True, scene=scene.name)
'''


@pytest.fixture(scope="module")
def ur(tmp_path_factory):
    return install_extension(tmp_path_factory.mktemp("ur_rig"))


@pytest.fixture(scope="module")
def stacks(tmp_path_factory):
    root = tmp_path_factory.mktemp("rig_stacks")
    return {
        "p2": (root / "p2", 2, make_stack(root / "p2", n=4, size=64, zoom=2, seed=5)),
        "p4": (root / "p4", 4, make_stack(root / "p4", n=3, size=64, zoom=4, seed=6)),
        "deep": (root / "deep", 4, make_stack(root / "deep", n=30, size=64, zoom=4, seed=7)),
    }


SNAPSHOT = '''
def snapshot(s):
    r = s.render
    return dict(engine=r.engine, view=s.view_settings.view_transform, look=s.view_settings.look,
                res=[r.resolution_x, r.resolution_y, r.resolution_percentage],
                frames=[s.frame_start, s.frame_end, s.frame_current], fps=r.fps,
                filter=r.filter_size, camera=s.camera.name if s.camera else None,
                objects=sorted(o.name for o in s.objects),
                world=s.world.name if s.world else None,
                display=s.display_settings.display_device)
'''


def test_user_scene_unchanged_rig_in_own_scene_or_beside_objects(ur, stacks):
    path = str(stacks["p2"][0])
    out = run_blender(HELPERS + SNAPSHOT + f'''
user = bpy.context.scene
user.render.resolution_x, user.render.resolution_y = 1920, 1080
before = snapshot(user)
assert bpy.ops.p10.load_stack(directory={path!r}) == {{"FINISHED"}}
after = snapshot(user)
rig = bpy.context.scene  # the window shows the rig's scene
root = rig_root(rig)
own = dict(name=rig.name, objects=sorted(o.name for o in rig.objects), camera=rig.camera.name,
           view=rig.view_settings.view_transform, engine=rig.render.engine,
           frames=[rig.frame_start, rig.frame_end], zoom_level=root["zoom_level"],
           shadow=[o.visible_shadow for o in rig.objects if o.get("p10_role") == "LAYER"])
# the option: into the current scene, beside its objects (the default cube)
bpy.context.window.scene = user
user.p10.animation.use_current_scene = True
assert bpy.ops.p10.load_stack(directory={path!r}) == {{"FINISHED"}}
cube = user.objects["Cube"]
root2 = rig_root(user)
emit(before=before, after=after, own=own, after_current=snapshot(user),
     root_x=root2.location.x, cube_right=max((cube.matrix_world @ __import__("mathutils").Vector(c)).x
                                            for c in cube.bound_box),
     scene_now=bpy.context.scene.name)
''', ur)
    before, after = out["before"], out["after"]
    assert after == before
    own = out["own"]
    assert own["name"] == "p2" and own["camera"] == "P10 Camera p2"
    assert own["objects"] == sorted(
        ["P10 Camera p2", "P10 Root p2", "P10 Pivot p2", "P10 Frame p2"]
        + [f"P10 p2 L{i:02d}" for i in range(4)] + [f"P10 Level p2 L{i:02d}" for i in range(4)])
    assert own["view"] == "Standard" and own["engine"] == "CYCLES"
    assert own["zoom_level"] == 0.0 and own["shadow"] == [False] * 4
    cur = out["after_current"]
    # current-scene mode: every setting kept; objects added; the rig beside the cube
    assert {k: v for k, v in cur.items() if k != "objects"} == \
        {k: v for k, v in before.items() if k != "objects"}
    assert set(before["objects"]) < set(cur["objects"])
    assert out["root_x"] - 0.5 > out["cube_right"]


RENDER_LEVELS = HELPERS + '''
rig, root = load_rig({stack!r})
for cam_type in ("ORTHO", "PERSP"):
    rig.camera.data.type = cam_type
    for k in {levels!r}:
        root["zoom_level"] = float(k)
        render(rig, os.path.join({out!r}, f"{{cam_type}}_{{k}}.png"))
emit(levels={levels!r})
'''


@pytest.mark.parametrize("name,levels", [
    ("p2", [0, 1, 2, 3, 1.5]),
    ("p4", [0, 1, 2, 0.5]),
    ("deep", [0, 14, 29, 28.5]),
])
def test_zoom_level_k_renders_level_k_ortho_and_perspective(ur, stacks, tmp_path, name, levels):
    path, zoom, images = stacks[name]
    run_blender(RENDER_LEVELS.format(stack=str(path), levels=levels, out=str(tmp_path)), ur)
    scores = {}
    for cam in ("ORTHO", "PERSP"):
        for k in levels:
            frame = iio.imread(tmp_path / f"{cam}_{k}.png").astype(np.float32) / 255
            if float(k).is_integer():
                expected = images[int(k)]  # core.render_image of the stack, level k
            else:
                expected = render_zoom_frame(images, zoom, k)
            scores[cam, k] = psnr(frame, expected)
    assert min(scores.values()) >= 30, scores
    # the deepest level (4^-29 of level 0) is no worse than level 0
    assert scores["ORTHO", levels[2]] >= scores["ORTHO", 0] - 1, scores


def test_zoom_level_keys_ease_retime_and_follow_settings(ur, stacks):
    path = str(stacks["p2"][0])
    out = run_blender(HELPERS + f'''
anim = bpy.context.scene.p10.animation
anim.frames_per_level, anim.hold_start, anim.hold_end = 10, 2, 3
assert bpy.ops.p10.load_stack(directory={path!r}) == {{"FINISHED"}}
rig = bpy.context.scene
root = rig_root(rig)
fcs = [fc for fc in compat.fcurves_for(root) if fc.data_path == '["zoom_level"]']
def state():
    fc = fcs[0] if fcs else None
    pts = [(kp.co.x, kp.co.y, kp.interpolation) for kp in fc.keyframe_points]
    vals = [fc.evaluate(f) for f in range(rig.frame_start, rig.frame_end + 1)]
    return dict(keys=pts, values=vals, frames=[rig.frame_start, rig.frame_end])
eased = state()
anim.ease_frames = 0            # a setting change re-keys the rig at once
linear = state()
anim.frames_per_level = 5
shorter = state()
# retiming is moving keys: the video's captions follow the curve
fc = compat.fcurves_for(root)[0]
fc.keyframe_points[1].co.x -= 6
fc.keyframe_points[1].handle_left.x -= 6
fc.keyframe_points[1].handle_right.x -= 6
fc.update()
ops = importlib.import_module("{ADDON}.p10_blender.rig.animation")
lv = list(ops.frame_levels(root, range(rig.frame_start, rig.frame_end + 1)))
emit(eased=eased, linear=linear, shorter=shorter, n_fcurves=len(fcs), retimed=lv,
     drivers=len(root.animation_data.drivers) if root.animation_data else 0,
     plane_drivers=[len(o.animation_data.drivers) for o in rig.objects if o.get("p10_role") == "LAYER"])
''', ur)
    assert out["n_fcurves"] == 1 and out["drivers"] == 0
    assert all(n >= 3 for n in out["plane_drivers"])
    eased, linear, shorter = out["eased"], out["linear"], out["shorter"]
    # two keys: level 0 after the hold, level 3 after 3 levels x 10 frames; ease in/out
    assert [(x, y) for x, y, _ in eased["keys"]] == [(3.0, 0.0), (33.0, 3.0)]
    assert {i for _, _, i in eased["keys"]} == {"BEZIER"}
    assert eased["frames"] == [1, 1 + 2 + 30 + 3]
    speed = np.diff(eased["values"][2:33])
    assert np.all(speed >= -1e-6) and speed[0] < speed[15] / 3 and speed[-1] < speed[15] / 3
    # linear keys: constant speed, level k at frame 3 + 10 k
    assert {i for _, _, i in linear["keys"]} == {"LINEAR"}
    assert np.allclose(linear["values"][2:33], np.arange(31) / 10, atol=1e-5)
    assert shorter["frames"] == [1, 1 + 2 + 15 + 3]
    assert [(x, y) for x, y, _ in shorter["keys"]] == [(3.0, 0.0), (18.0, 3.0)]
    # the last key moved from frame 18 to 12: level 3 is reached 6 frames earlier
    assert abs(out["retimed"][11] - 3.0) < 1e-5 and out["retimed"][10] < 3.0


COLOURS = HELPERS + '''
rig, root = load_rig({stack!r})
root["zoom_level"] = 0.0
render(rig, os.path.join({out!r}, "planes.png"))
# a lit object in front of the planes, with a sun: rendered with and without the planes
mesh = bpy.data.meshes.new("ball")
import bmesh
bm = bmesh.new(); bmesh.ops.create_uvsphere(bm, u_segments=24, v_segments=12, radius=0.15)
bm.to_mesh(mesh); bm.free()
ball = bpy.data.objects.new("ball", mesh)
rig.collection.objects.link(ball)
ball.location = (0.15, -0.1, 0.4)
mat = bpy.data.materials.new("ball")
mat.use_nodes = True
mat.node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value = (0.8, 0.3, 0.1, 1)
mesh.materials.append(mat)
sun = bpy.data.objects.new("sun", bpy.data.lights.new("sun", "SUN"))
sun.data.energy = 3.0
sun.rotation_euler = (0.6, 0.3, 0.0)
rig.collection.objects.link(sun)
render(rig, os.path.join({out!r}, "with.png"))
for o in [o for o in rig.objects if o.get("p10_role") == "LAYER"]:
    bpy.data.objects.remove(o)
render(rig, os.path.join({out!r}, "without.png"))
emit(view=rig.view_settings.view_transform)
'''


def test_planes_show_png_colours_under_standard_and_lit_objects_render_normally(ur, tmp_path):
    # uniform colours per level, the (242, 48, 48) outermost
    colours = np.array([[242, 48, 48], [40, 200, 90], [30, 60, 220]], np.float32) / 255
    layers = np.broadcast_to(colours[:, None, None], (3, 64, 64, 3)).copy()
    t = torch.from_numpy(layers).permute(0, 3, 1, 2)
    images = render_image(t, 2).permute(0, 2, 3, 1).numpy()
    ZoomStack(images, {"zoom": 2, "prompts": ["red", "green", "blue"]}).save(tmp_path / "flat")
    pngs = ZoomStack.load(tmp_path / "flat").layers
    out = run_blender(COLOURS.format(stack=str(tmp_path / "flat"), out=str(tmp_path)), ur)
    assert out["view"] == "Standard"
    planes = iio.imread(tmp_path / "planes.png").astype(np.float32) / 255
    # away from the footprint edges (linear texture filtering blends across them)
    inner = np.ones((64, 64), bool)
    for edge in (16, 24, 40, 48):
        inner[edge - 2:edge + 2, :] = inner[:, edge - 2:edge + 2] = False
    assert np.abs(planes - pngs[0])[inner].max() <= 2 / 255
    with_, without = (iio.imread(tmp_path / f"{n}.png").astype(np.float32) / 255
                      for n in ("with", "without"))
    ball = without.max(axis=-1) > 0.05  # the world is black: lit pixels are the ball's
    for _ in range(2):  # away from its antialiased outline (there it mixes with the background)
        ball[1:-1, 1:-1] &= ball[:-2, 1:-1] & ball[2:, 1:-1] & ball[1:-1, :-2] & ball[1:-1, 2:]
    assert ball.sum() > 100
    assert np.abs(with_ - without)[ball].max() <= 2 / 255  # no light, shadow or bounce from planes
    assert np.abs(with_ - planes)[~ball].mean() < 0.02     # the planes behind are unchanged


VIDEO = HELPERS + '''
anim = bpy.context.scene.p10.animation
anim.frames_per_level, anim.hold_start, anim.hold_end, anim.ease_frames = 2, 1, 2, 0
anim.samples, anim.video_size, anim.fps, anim.fade_frames = 4, 64, 12, 2
anim.captions = {captions!r}
assert not bpy.data.filepath  # an unsaved file
assert bpy.ops.p10.load_stack(directory={stack!r}) == {{"FINISHED"}}
res = {{}}
if {make!r}:
    assert bpy.ops.p10.make_video() == {{"FINISHED"}}
    video = bpy.context.scene
    res["make_path"] = bpy.path.abspath(video.render.frame_path(frame=video.frame_start))
    bpy.ops.render.render(animation=True)
anim.filepath = "//renders/zoom.mp4"
vr = importlib.import_module(ADDON + ".p10_blender.video.video_render")
bpy.context.window.scene = bpy.data.scenes["Scene"]  # the panel works from any scene
res["r"] = sorted(bpy.ops.p10.render_video())
res["message"] = vr.progress.message
res["scenes"] = sorted(s.name for s in bpy.data.scenes)
anim.filepath = "/proc/no/such/zoom.mp4"
try:
    bpy.ops.p10.render_video()
except RuntimeError as e:
    res["refused"] = str(e)
emit(**res)
'''


def _read_video(path):
    reader = imageio.get_reader(str(path))
    frames = np.stack([f for f in reader]).astype(np.float32) / 255
    reader.close()
    return frames


def test_make_and_render_video_in_an_unsaved_file(ur, stacks, tmp_path):
    import shutil
    stack = tmp_path / "stacks" / "p2"
    shutil.copytree(stacks["p2"][0], stack)
    images = stacks["p2"][2]
    home = tmp_path / "home"
    env = {"HOME": str(home)}
    out = run_blender(VIDEO.format(stack=str(stack), captions=True, make=True), ur, env=env)
    total = 1 + 3 * 2 + 1 + 2
    # Make Zoom Video: an unsaved file's default is <stack>.mp4 in ~/zoom_stacks (issue 21.4:
    # never the extension's folder; the stack's own folder is not where outputs go)
    assert out["make_path"] == str(home / "zoom_stacks" / "p2.mp4")
    made = _read_video(out["make_path"])
    # Render Zoom Video: '//' in an unsaved file is ~/zoom_stacks; it says where
    want = home / "zoom_stacks" / "renders" / "zoom.mp4"
    assert out["r"] == ["FINISHED"] and str(want) in out["message"]
    rendered = _read_video(want)
    assert made.shape == rendered.shape == (total, 64, 64, 3)
    assert out["scenes"] == ["Scene", "p2", "p2 Video"]
    assert "cannot write the video" in out["refused"] and "\n" not in out["refused"].strip()
    assert sorted(p.name for p in (tmp_path / "stacks").iterdir()) == ["p2"]  # nothing beside it
    assert not list((home / "zoom_stacks").glob(".*"))  # no leftover frames or partial files
    # the right level at the right frame (luma, top rows: away from the caption strip)
    luma = np.array([0.2126, 0.7152, 0.0722], np.float32)
    for level in (1, 2):
        frame = rendered[1 + level * 2][:40] @ luma
        scores = [psnr(frame, im[:40] @ luma) for im in images]
        assert int(np.argmax(scores)) == level and scores[level] >= 20, scores
    assert rendered[0].mean() < 0.05 and rendered[-1].mean() < 0.05  # fades

    # captions only ever touch a strip at the bottom
    plain = run_blender(VIDEO.format(stack=str(stack), captions=False, make=False), ur, env=env)
    assert plain["r"] == ["FINISHED"]
    bare = _read_video(want)
    diff = np.abs(rendered - bare).mean(axis=(0, 2, 3))  # per row (H.264 noise is ~0.015)
    rows = np.flatnonzero(diff > 0.05)
    assert rows.size and rows.min() >= 64 * 0.75, rows


NAMES = HELPERS + '''
def names():
    return sorted(f"{{k}}:{{i.name}}" for k in ("objects", "meshes", "materials", "images",
                                              "cameras", "collections", "scenes", "actions")
                  for i in getattr(bpy.data, k) if "p10_build" in i or k == "scenes")
seen = []
for _ in range(3):
    bpy.context.window.scene = bpy.data.scenes["Scene"]
    assert bpy.ops.p10.load_stack(directory={stack!r}) == {{"FINISHED"}}
    assert bpy.ops.p10.make_video() == {{"FINISHED"}}
    seen.append(names())
props = importlib.import_module(ADDON + ".p10_blender.properties")
home = bpy.data.scenes["Scene"]
home.p10.negative_prompt = "typed at home"  # (the prompts are the loaded stack's now)
for sc in bpy.data.scenes:  # the panel's settings are the home scene's, whatever is shown
    bpy.context.window.scene = sc
    seen.append([sc.name, props.p10_of(bpy.context).negative_prompt,
                 bpy.ops.p10.generate.poll()])
emit(seen=seen)
'''


def test_names_stable_over_reloads_and_panel_settings_from_any_scene(ur, stacks):
    out = run_blender(NAMES.format(stack=str(stacks["p4"][0])), ur)
    first, second, third = out["seen"][:3]
    assert first == second == third
    assert not any(".0" in n for n in first), first
    assert "scenes:p4" in first and "scenes:p4 Video" in first and "collections:P10 Zoom p4" in first
    panels = out["seen"][3:]
    assert sorted(p[0] for p in panels) == ["Scene", "p4", "p4 Video"]
    assert all(p[1] == "typed at home" for p in panels), panels


BIG = HELPERS + '''
anim = bpy.context.scene.p10.animation
anim.frames_per_level, anim.hold_start, anim.hold_end, anim.ease_frames = 2, 1, 0, 0
anim.samples, anim.video_size, anim.fade_frames, anim.captions = 4, 128, 0, False
anim.filepath = {out!r}
assert bpy.ops.p10.load_stack(directory={stack!r}) == {{"FINISHED"}}
assert bpy.ops.p10.render_video() == {{"FINISHED"}}
rig = bpy.data.scenes["p2"]
emit(rig_size=[rig.render.resolution_x, rig.render.resolution_y])
'''


def test_video_larger_than_the_stack_fills_the_frame(ur, stacks, tmp_path):
    path, _, images = stacks["p2"]
    out = run_blender(BIG.format(stack=str(path), out=str(tmp_path / "big.mp4")), ur)
    assert out["rig_size"] == [128, 128]  # the rig's own scene renders at the video size
    video = _read_video(tmp_path / "big.mp4")
    assert video.shape == (1 + 3 * 2 + 1, 128, 128, 3)
    luma = np.array([0.2126, 0.7152, 0.0722], np.float32)
    for level in (0, 1, 3):
        expected = np.repeat(np.repeat(images[level], 2, 0), 2, 1)  # 64 -> 128 px
        assert psnr(video[1 + 2 * level] @ luma, expected @ luma) >= 25
