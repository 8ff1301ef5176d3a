"""The zoom in Blender, rendered headless and compared pixel by pixel with the core.

Each Blender run is a subprocess with the packaged add-on installed (tests/blender_harness).
Engine: Cycles on the CPU, 1-pixel box filter, no denoising; the "Exact Pixels" option
('Closest' textures, 'Non-Color', Raw view): at an integer level every output pixel integrates
exactly the texels it covers, so the frame equals ``render_image`` (D_p is a box for p = 2) up
to sampling noise. (tests/test_scene_rig.py covers the default, smooth sRGB look.)
"""

import json

import imageio
import imageio.v3 as iio
import numpy as np
import pytest
import torch

from core.stack.preview import render_zoom_frame
from core.stack.stack_io import ZoomStack
from core.zoom.zoom_stack import render_image

from blender_harness import install_extension, run_blender


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(1.0 / mse)


def procedural_layers(n: int, size: int, seed: int) -> np.ndarray:
    """Smooth, distinct layers (stripes and rings), float32 (N, H, W, 3) in [0, 1]."""
    rng = np.random.default_rng(seed)
    y, x = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    layers = []
    for _ in range(n):
        f, ph, ang = rng.uniform(1.0, 3.0, 3), rng.uniform(0, 6, 3), rng.uniform(0, 3, 3)
        r = np.hypot(x, y)
        chans = [0.5 + 0.25 * np.sin(f[c] * np.pi * (np.cos(ang[c]) * x + np.sin(ang[c]) * y)
                                     + ph[c]) + 0.2 * np.cos(3 * f[c] * r) for c in range(3)]
        layers.append(np.clip(np.stack(chans, -1), 0, 1))
    return np.stack(layers).astype(np.float32)


def make_stack(path, n=4, size=64, zoom=2, seed=0) -> np.ndarray:
    """Write a zoom-consistent stack folder; return the images each level shows (float)."""
    layers = torch.from_numpy(procedural_layers(n, size, seed)).permute(0, 3, 1, 2)
    images = render_image(layers, zoom).permute(0, 2, 3, 1).numpy()
    ZoomStack(images, {"zoom": zoom, "prompts": [f"level {i} of seed {seed}" for i in range(n)]}
              ).save(path)
    stack = ZoomStack.load(path)  # the quantised PNGs: what Blender sees
    # the PNGs are themselves a consistent stack: Π_image leaves them unchanged
    t = torch.from_numpy(stack.layers).permute(0, 3, 1, 2)
    return render_image(t, zoom).permute(0, 2, 3, 1).numpy()


@pytest.fixture(scope="module")
def ur(tmp_path_factory):
    return install_extension(tmp_path_factory.mktemp("ur"))


@pytest.fixture(scope="module")
def stacks(tmp_path_factory):
    root = tmp_path_factory.mktemp("stacks")
    return {
        "a": (root / "a", make_stack(root / "a", n=4, size=64, zoom=2, seed=0)),
        "b": (root / "b", make_stack(root / "b", n=3, size=64, zoom=4, seed=1)),
    }


RENDER_FRAMES = '''
import json
anim = bpy.context.scene.p10.animation
anim.frames_per_level = {fpl}
anim.hold_start = anim.hold_end = anim.ease_frames = 0
anim.samples = {samples}
anim.exact = True
r = bpy.ops.p10.load_stack(directory={stack!r})
assert r == {{"FINISHED"}}, r
scene = bpy.context.scene  # the rig's own scene
root = [o for o in scene.objects if "zoom_level" in o][0]
levels = []
for f in range(scene.frame_start, scene.frame_end + 1):
    scene.frame_set(f)
    levels.append(root["zoom_level"])
    scene.render.filepath = {out!r} + "/f%03d.png" % f
    bpy.ops.render.render(write_still=True)
emit(frame_start=scene.frame_start, frame_end=scene.frame_end, levels=levels,
     engine=scene.render.engine, view=scene.view_settings.view_transform,
     size=[scene.render.resolution_x, scene.render.resolution_y],
     packed=[im.packed_file is not None for im in bpy.data.images if "p10_build" in im])
'''


@pytest.mark.parametrize("name,fpl", [("a", 4), ("b", 3)])
def test_rendered_zoom_matches_core_at_and_between_levels(ur, stacks, tmp_path, name, fpl):
    path, images = stacks[name]
    zoom = 2 if name == "a" else 4
    n = len(images)
    out = run_blender(RENDER_FRAMES.format(fpl=fpl, samples=256, stack=str(path),
                                           out=str(tmp_path)), ur)
    assert out["engine"] == "CYCLES" and out["size"] == [64, 64] and out["view"] == "Raw"
    assert out["packed"] == [True] * n
    frames = list(range(out["frame_start"], out["frame_end"] + 1))
    assert len(frames) == (n - 1) * fpl + 1
    # linear keys on zoom_level: constant speed (the drivers make it exponential)
    assert np.allclose(out["levels"], np.arange(len(frames)) / fpl, atol=1e-5)

    for i, f in enumerate(frames):
        frame = iio.imread(tmp_path / f"f{f:03d}.png").astype(np.float32) / 255.0
        level = i / fpl
        if i % fpl == 0:
            expected = images[i // fpl]
            # p = 2: D_p is the box the pixel integrates, so the frame is the PNG to ±1
            limit = 1.5 / 255 if zoom == 2 else 24 / 255  # p = 4: Gaussian taps vs box
            assert np.abs(frame - expected).max() <= limit, (name, level)
            assert psnr(frame, expected) >= (50 if zoom == 2 else 35), (name, level)
        else:
            expected = render_zoom_frame(images, zoom, level)
            assert psnr(frame, expected) >= 30, (name, level, psnr(frame, expected))


VIDEO = '''
scene = bpy.context.scene
anim = scene.p10.animation
anim.frames_per_level, anim.hold_start, anim.hold_end, anim.ease_frames = 2, 1, 2, 0
anim.samples, anim.video_size, anim.fps, anim.fade_frames = 16, 64, 12, 2
anim.captions = True
assert bpy.ops.p10.load_stack(directory={stack!r}) == {{"FINISHED"}}
assert bpy.ops.p10.make_video(filepath={out!r}) == {{"FINISHED"}}
# again, from the video scene: it is remade for its source scene, not duplicated
assert bpy.ops.p10.make_video(filepath={out!r}) == {{"FINISHED"}}
video = bpy.context.scene
video_scenes = [s.name for s in bpy.data.scenes if "p10_video_of" in s]
from {addon}.p10_blender.setup import compat
strips = compat.strips(video.sequence_editor)
captions = sorted((s.frame_final_start, s.frame_final_end, s.text) for s in strips
                  if s.type == "TEXT")
bpy.ops.render.render(animation=True)
emit(scene=video.name, video_scenes=video_scenes, frames=video.frame_end - video.frame_start + 1, captions=captions,
     size=[video.render.resolution_x, video.render.resolution_y],
     path=bpy.path.abspath(video.render.frame_path(frame=video.frame_start)))
'''


def test_make_video_renders_an_mp4_with_captions(ur, stacks, tmp_path):
    path, images = stacks["a"]
    out = run_blender(VIDEO.format(stack=str(path), out=str(tmp_path / "zoom.mp4"),
                                   addon="bl_ext.user_default.powers_of_ten"), ur)
    n, fpl = len(images), 2
    total = 1 + (n - 1) * fpl + 1 + 2
    assert out["frames"] == total and out["size"] == [64, 64]
    assert out["video_scenes"] == [out["scene"]]
    assert out["path"].endswith(".mp4")
    # caption k from the frame level k fills the view (frame 1 is a hold of level 0)
    manifest = json.loads((path / "manifest.json").read_text())
    starts = [c[0] for c in out["captions"]]
    # at 64 px a caption keeps what fits one line of the bottom strip (then an ellipsis)
    assert len(out["captions"]) == len(manifest["prompts"])
    for (_, _, text), prompt in zip(out["captions"], manifest["prompts"]):
        assert text.endswith("…") and prompt.startswith(text[:-1]) and len(text) >= 6, text
    assert starts == [1, 2 + fpl, 2 + 2 * fpl, 2 + 3 * fpl]
    assert out["captions"][-1][1] == total + 1  # the last caption runs to the end

    reader = imageio.get_reader(out["path"])
    video = np.stack([f for f in reader]).astype(np.float32) / 255.0  # len() is inf
    reader.close()
    assert video.shape == (total, 64, 64, 3)
    assert video[0].mean() < 0.05 and video[-1].mean() < 0.05  # faded from / to black
    middle = video[2:-2]
    assert np.all(middle.reshape(len(middle), -1).std(axis=1) > 0.05)  # not blank
    # away from the captions, the frames at levels 1 and 2 show the stack's images 1 and 2
    # (luma only: H.264 subsamples chroma; a 64x64 H.264 frame is lossy, hence the margin)
    luma = np.array([0.2126, 0.7152, 0.0722], np.float32)
    for level in (1, 2):
        frame = video[1 + level * fpl][:40] @ luma
        scores = [psnr(frame, im[:40] @ luma) for im in images]
        assert int(np.argmax(scores)) == level and scores[level] >= 20, scores


ORPHANS = '''
def counts():
    return {{k: sum(1 for i in getattr(bpy.data, k) if "p10_build" in i)
             for k in ("images", "materials", "meshes", "cameras", "objects", "actions",
                       "collections")}}
def orphans():
    return sorted(i.name for k in ("images", "materials", "meshes", "cameras", "actions")
                  for i in getattr(bpy.data, k) if i.users == 0)
baseline = set(orphans())  # the factory file has some (e.g. the 'Dots Stroke' material)
_orphans = orphans
orphans = lambda: sorted(set(_orphans()) - baseline)
scene = bpy.context.scene
# Headless, operators called from Python push no undo step; the UI does that after each
# operator with the UNDO flag. Push the same steps by hand.
ops = addon().p10_blender.rig.operators
undo_flags = ["UNDO" in c.bl_options for c in (ops.P10_OT_load_stack, addon().p10_blender.video.operators.P10_OT_make_video)]
bpy.ops.ed.undo_push(message="start")
for _ in range(3):
    assert bpy.ops.p10.load_stack(directory={a!r}) == {{"FINISHED"}}
    bpy.ops.ed.undo_push(message="Load Zoom Stack")
after_a = counts(); orphans_a = orphans()
assert bpy.ops.p10.load_stack(directory={b!r}) == {{"FINISHED"}}
bpy.ops.ed.undo_push(message="Load Zoom Stack")
after_b = counts(); orphans_b = orphans()
scenes_b = sorted(s.name for s in bpy.data.scenes)
win = bpy.context.window_manager.windows[0]  # undo polls for a screen, even headless
with bpy.context.temp_override(window=win, screen=win.screen, area=win.screen.areas[0]):
    bpy.ops.ed.undo()
after_undo = counts(); orphans_undo = orphans()
emit(after_a=after_a, after_b=after_b, after_undo=after_undo, orphans=orphans_a + orphans_b
     + orphans_undo, scenes_b=scenes_b, scenes=sorted(s.name for s in bpy.data.scenes),
     undo_flags=undo_flags)
'''


def test_rebuild_replaces_the_previous_build_and_undo_restores(ur, stacks):
    a, b = str(stacks["a"][0]), str(stacks["b"][0])
    out = run_blender(ORPHANS.format(a=a, b=b), ur)
    # objects: root, camera, pivot, frame, and per level its empty and its plane
    one_a = {"images": 4, "materials": 4, "meshes": 4, "cameras": 1, "objects": 12,
             "actions": 1, "collections": 1}
    assert out["after_a"] == one_a
    assert out["after_b"] == {k: v + {"images": 3, "materials": 3, "meshes": 3,
                                      "objects": 10}.get(k, v) for k, v in one_a.items()}
    assert out["undo_flags"] == [True, True]
    assert out["after_undo"] == one_a
    assert out["orphans"] == []
    assert out["scenes_b"] == ["Scene", "a", "b"]  # each stack in a scene of its own
    assert out["scenes"] == ["Scene", "a"]


BAD = '''
before = {{k: len(getattr(bpy.data, k)) for k in ("images", "materials", "meshes", "objects",
                                                 "cameras", "collections", "scenes")}}
messages = []
for d in {dirs!r}:
    try:
        r = bpy.ops.p10.load_stack(directory=d)
        messages.append("returned " + str(sorted(r)))
    except RuntimeError as ex:
        messages.append(str(ex))
after = {{k: len(getattr(bpy.data, k)) for k in before}}
emit(messages=messages, same=before == after)
'''


def test_bad_stack_folders_report_plain_errors_and_build_nothing(ur, stacks, tmp_path):
    import shutil
    src = stacks["a"][0]
    incomplete = tmp_path / "incomplete"
    shutil.copytree(src, incomplete)
    (incomplete / "layer_02.png").unlink()
    bad_json = tmp_path / "bad_json"
    shutil.copytree(src, bad_json)
    (bad_json / "manifest.json").write_text("{not json")
    wrong_size = tmp_path / "wrong_size"
    shutil.copytree(src, wrong_size)
    iio.imwrite(wrong_size / "layer_03.png", np.zeros((32, 32, 3), np.uint8))
    missing = tmp_path / "does_not_exist"
    corrupt = tmp_path / "corrupt"
    shutil.copytree(src, corrupt)
    (corrupt / "layer_01.png").write_bytes(b"this is not a png")
    out = run_blender(BAD.format(dirs=[str(incomplete), str(bad_json), str(wrong_size),
                                       str(missing), str(corrupt)]), ur)
    assert out["same"]
    msgs = out["messages"]
    assert all(m.startswith("Error: ") and "Traceback" not in m for m in msgs), msgs
    assert "incomplete" in msgs[0] and "layer_02.png" in msgs[0]
    assert "JSON" in msgs[1]
    assert "layer_03.png" in msgs[2] and "32x32" in msgs[2]
    assert "not found" in msgs[3]
    assert "cannot read" in msgs[4] and "layer_01.png" in msgs[4]


KEEP = '''
assert bpy.ops.p10.load_stack(directory={d!r}) == {{"FINISHED"}}
names = sorted(o.name for o in bpy.data.objects)
import shutil, os
os.replace({d!r} + "/layer_01.png", {d!r} + "/moved.png")  # the folder breaks on disk
try:
    bpy.ops.p10.load_stack(directory={d!r})
    failed = False
except RuntimeError:
    failed = True
layers = [o for o in bpy.data.objects if o.get("p10_role") == "LAYER"]
emit(failed=failed, same=names == sorted(o.name for o in bpy.data.objects),
     packed=[o.active_material.node_tree.nodes["Image Texture"].image.packed_file is not None
             for o in layers],
     camera=bpy.context.scene.camera is not None)
'''


def test_a_failed_rebuild_keeps_the_previous_build(ur, stacks, tmp_path):
    import shutil
    d = tmp_path / "c"
    shutil.copytree(stacks["a"][0], d)
    out = run_blender(KEEP.format(d=str(d)), ur)
    assert out["failed"] and out["same"] and out["camera"]
    assert out["packed"] == [True] * 4  # the old layers still render: packed in the .blend


KEYS = '''
scene = bpy.context.scene
anim = scene.p10.animation
anim.frames_per_level, anim.direction, anim.hold_start, anim.hold_end, anim.ease_frames = \\
    5, "OUT", 2, 3, 4
assert bpy.ops.p10.load_stack(directory={d!r}) == {{"FINISHED"}}
rig = bpy.context.scene
root = [o for o in rig.objects if "zoom_level" in o][0]
fc = root.animation_data.action
from {addon}.p10_blender.setup import compat
fc = [c for c in compat.fcurves_for(root) if c.data_path == '["zoom_level"]'][0]
emit(keys=[(k.co.x, k.co.y, k.handle_right.x - k.co.x, k.handle_right.y - k.co.y)
           for k in fc.keyframe_points], start=rig.frame_start, end=rig.frame_end)
'''


def test_zoom_level_keys_follow_the_eased_zoom_out_settings(ur, stacks):
    from test_scene_animation import anim

    out = run_blender(KEYS.format(d=str(stacks["b"][0]), addon="bl_ext.user_default.powers_of_ten"), ur)
    keys = anim.zoom_keys(3, 5, direction="OUT", hold_start=2, hold_end=3, ease_frames=4)
    assert out["start"] == 1 and out["end"] == keys.length
    want = [[1 + f, v, keys.ease, 0.0] for f, v in zip(keys.frames, keys.values)]
    assert np.allclose(out["keys"], want, atol=1e-5)  # F-curves store float32
