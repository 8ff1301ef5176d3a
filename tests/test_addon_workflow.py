"""The add-on's workflow around the rig, as an artist meets it (issue 21): where stacks and
videos go, Extend / Regenerate updating the rig in place, a loaded stack ready to extend, a
moved stack folder relinked. Headless Blender subprocesses with the fake engine (64 px)."""

from __future__ import annotations

import json
import os
import shutil
import textwrap
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from blender_harness import FAKE_SCENE, install_extension, run_blender


@pytest.fixture(scope="module")
def ur(tmp_path_factory):
    return install_extension(tmp_path_factory.mktemp("ur_workflow"))


def script(out: Path, body: str) -> str:
    return f"OUT = {str(out)!r}\n" + FAKE_SCENE + textwrap.dedent(body)


def home_env(tmp_path: Path) -> dict:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {"HOME": str(home)}


RIG = '''
def rig_scene():
    return [s for s in bpy.data.scenes if s.get("p10_home") is not None]
def root_of(scene):
    return [o for o in scene.objects if o.get("p10_role") == "ROOT"][0]
def plane(scene, level):
    return [o for o in scene.objects if o.get("p10_role") == "LAYER" and o["p10_level"] == level][0]
def state():
    rigs = rig_scene()
    rig = rigs[0]
    root = root_of(rig)
    built = {k: sorted(i.name for i in getattr(bpy.data, k) if "p10_build" in i)
             for k in ("objects", "images", "meshes", "materials", "cameras", "collections")}
    return dict(rigs=[s.name for s in rigs], scenes=sorted(s.name for s in bpy.data.scenes),
                mark=root.get("artist_mark"), root=root.name,
                cam=[rig.camera.name, rig.camera.data.type, rig.camera.data.lens],
                prop=bpy.data.objects["Prop"].parent.name,
                leaf=[bpy.data.objects["Leaf"].parent.name,
                      bpy.data.objects["Leaf"].parent.get("p10_level")],
                built=built, planes=sorted(o.name for o in rig.objects
                                           if o.get("p10_role") == "LAYER"), shown=bpy.context.window.scene.name,
                zmax=root.id_properties_ui("zoom_level").as_dict()["max"],
                stack=os.path.basename(p10.last_stack_dir),
                serials=len([c for c in bpy.data.collections if "p10_build" in c]))
'''


def test_extend_and_regenerate_update_the_rig_in_place(ur, tmp_path):
    """Issue 21.5: one scene, the same root (keys, children), camera (the artist's settings)
    and names after Extend Deeper, Extend Wider and Regenerate Level; children of a plane
    follow its image; no new scenes, no `.001`, no leftover packed images."""
    out = run_blender(script(tmp_path / "stacks", RIG + textwrap.dedent('''
        seen = {}
        run_op("generate")
        rig = rig_scene()[0]
        root = root_of(rig)
        root["artist_mark"] = 7
        rig.camera.data.type, rig.camera.data.lens = "PERSP", 40.0
        prop = bpy.data.objects.new("Prop", None); rig.collection.objects.link(prop)
        prop.parent = root
        leaf = bpy.data.objects.new("Leaf", None); rig.collection.objects.link(leaf)
        leaf.parent = plane(rig, 1)                 # the image of "a star"
        for ob in rig.objects:
            if ob.get("p10_role") == "LAYER":
                tex = ob.active_material.node_tree.nodes["Image Texture"]
                tex.image["p10_source"] = home.p10.prompts[ob["p10_level"]].text
        seen["generated"] = state()
        for t in ("a tree", "a leaf"):
            p10.prompts.add().text = t
        seen["deeper_op"] = run_op("extend_stack", direction="DEEPER")
        seen["deeper"] = state()
        p10.prompts.add().text = "the universe"
        p10.prompts.move(len(p10.prompts) - 1, 0)
        seen["wider_op"] = run_op("extend_stack", direction="WIDER")
        seen["wider"] = state()
        p10.prompt_index = 3
        p10.prompts[3].text = "a red planet"
        seen["regen_op"] = run_op("regenerate_level")
        seen["regen"] = state()
        emit(seen=seen)
    ''')).replace("home.p10", "bpy.data.scenes['Scene'].p10"), ur)
    seen = out["seen"]
    for op in ("deeper_op", "wider_op", "regen_op"):
        assert seen[op][0] == ["FINISHED"], seen[op]
    first = seen["generated"]
    assert first["rigs"] == ["a-galaxy"] and first["leaf"] == ["P10 a-galaxy L01", 1]
    for name, n, leaf_level in (("deeper", 5, 1), ("wider", 6, 2), ("regen", 6, 2)):
        s = seen[name]
        assert s["rigs"] == ["a-galaxy"] and s["scenes"] == ["Scene", "a-galaxy"], (name, s)
        assert s["shown"] == "a-galaxy"                    # the window did not jump
        assert s["mark"] == 7 and s["root"] == "P10 Root a-galaxy"
        assert s["cam"] == ["P10 Camera a-galaxy", "PERSP", 40.0]
        assert s["prop"] == "P10 Root a-galaxy"
        # the plane's child follows its image ("a star") to its new level
        assert s["leaf"] == [f"P10 a-galaxy L{leaf_level:02d}", leaf_level]
        assert s["serials"] == 1 and s["zmax"] == n - 1, (name, s)
        assert s["built"]["images"] == [f"P10 a-galaxy L{i:02d}" for i in range(n)]
        assert s["planes"] == [f"P10 a-galaxy L{i:02d}" for i in range(n)]
        assert {"P10 Camera a-galaxy", "P10 Root a-galaxy"} <= set(s["built"]["objects"])
        assert not any(".0" in x for names in s["built"].values() for x in names), s["built"]
    assert seen["regen"]["stack"] == "the-universe-2"  # the panel's stack is the newest one


def test_stacks_default_beside_the_blend_or_under_home_and_load_fills_the_panel(ur, tmp_path):
    """Issue 21.4: never inside the extension's folder (uninstalling deletes it): unsaved ->
    ~/zoom_stacks, saved -> //zoom_stacks, shown in the panel. Issue 21.6: after Load Zoom
    Stack, Extend and Regenerate work (the panel's stack, prompts and model are the stack's)."""
    from test_addon_ui import RECORDER
    proj = tmp_path / "proj"
    proj.mkdir()
    out = run_blender(script(tmp_path / "unused", RECORDER + textwrap.dedent(f'''
        res = {{}}
        p10.output_dir = ""
        log = []
        addon().p10_blender.interface.panel.draw_output(Recorder(log), bpy.context)
        res["label_unsaved"] = [x for k, x in log if k == "label"]
        run_op("generate")
        res["unsaved"] = p10.last_stack_dir
        bpy.ops.wm.save_as_mainfile(filepath={str(proj / "shot.blend")!r})
        bpy.context.window.scene = home = bpy.data.scenes["Scene"]
        log = []
        addon().p10_blender.interface.panel.draw_output(Recorder(log), bpy.context)
        res["label_saved"] = [x for k, x in log if k == "label"]
        run_op("generate")
        res["saved"] = p10.last_stack_dir
        res["user_dir"] = str(addon().p10_blender.setup.dependencies.user_dir())
        # a fresh scene, nothing typed: load the stack, then extend it
        fresh = bpy.data.scenes.new("Fresh")
        bpy.context.window.scene = fresh
        fresh.p10.model = "some/other-model"
        res["poll_before"] = bpy.ops.p10.extend_stack.poll()
        assert bpy.ops.p10.load_stack(directory=res["saved"]) == {{"FINISHED"}}
        bpy.context.window.scene = fresh
        f = fresh.p10
        res["filled"] = [f.last_stack_dir, [i.text for i in f.prompts], f.model]
        f.output_dir = "//more"
        f.prompts.add().text = "a moon"
        res["extend"] = run_op("extend_stack", direction="DEEPER")
        res["extended"] = f.last_stack_dir
        emit(**res)
    ''')), ur, env=home_env(tmp_path))
    home = tmp_path / "home"
    assert out["unsaved"] == str(home / "zoom_stacks" / "a-galaxy")
    assert out["saved"] == str(proj / "zoom_stacks" / "a-galaxy")
    assert any(str(home / "zoom_stacks") in x for x in out["label_unsaved"])
    assert any(str(proj / "zoom_stacks") in x for x in out["label_saved"])
    assert not Path(out["user_dir"], "stacks").exists()
    assert out["filled"] == [out["saved"], ["a galaxy", "a star", "a planet"],
                             "stabilityai/stable-diffusion-2-1-base"]
    assert out["extend"] == [["FINISHED"], None], out["extend"]
    assert out["extended"] == str(proj / "more" / "a-galaxy")  # '//' follows the .blend
    assert json.loads((proj / "more" / "a-galaxy" / "manifest.json").read_text())[
        "prompts"] == ["a galaxy", "a star", "a planet", "a moon"]


VIDEO_WORK = '''
import importlib, os, shutil
from pathlib import Path
res = {{}}
anim = bpy.context.scene.p10.animation
anim.frames_per_level, anim.hold_start, anim.hold_end, anim.ease_frames = 1, 0, 0, 0
anim.samples, anim.fade_frames, anim.captions = 1, 0, False
assert bpy.ops.p10.load_stack(directory={old!r}) == {{"FINISHED"}}
rig = bpy.context.scene
rig.render.resolution_x, rig.render.resolution_y = 33, 18      # odd: H.264 cannot
try:
    bpy.ops.p10.make_video()
except RuntimeError as e:
    res["odd"] = str(e)
rig.render.resolution_x, rig.render.resolution_y = 32, 18      # the artist's 16:9 frame
rig.camera.data.type, rig.camera.data.lens = "PERSP", 36.0
bpy.ops.wm.save_as_mainfile(filepath={blend!r})
# the stack folder moves (the old place is gone); loading it from there relinks the rig
shutil.move({old!r}, {new!r}); shutil.rmtree(os.path.dirname({old!r}))
bpy.context.window.scene = bpy.data.scenes["Scene"]
assert bpy.ops.p10.load_stack(directory={new!r}) == {{"FINISHED"}}
res["names"] = sorted(i.name for k in ("objects", "images", "collections", "scenes")
                      for i in getattr(bpy.data, k) if "p10_build" in i or k == "scenes")
res["cam"] = [rig.camera.data.type, rig.camera.data.lens]
assert bpy.ops.p10.make_video() == {{"FINISHED"}}
video = bpy.context.scene
res["video_size"] = [video.render.resolution_x, video.render.resolution_y]
res["rig_size"] = [rig.render.resolution_x, rig.render.resolution_y]
res["make_path"] = bpy.path.abspath(video.render.frame_path(frame=video.frame_start))
vr = importlib.import_module(ADDON + ".p10_blender.video.video_render")
for fmt, path in (("PNG", "//seq/"), ("EXR", "exr_frames"), ("FFV1", "")):
    anim.video_format, anim.filepath = fmt, path
    res[fmt] = [sorted(bpy.ops.p10.render_video()), vr.progress.message]
res["old_back"] = os.path.exists(os.path.dirname({old!r}))
emit(**res)
'''


def test_moved_stack_relinks_and_video_keeps_the_frame_and_writes_sequences(ur, tmp_path):
    """Issue 21.10: a moved stack relinks (same scene, names, camera; no `.001`) and no output
    re-creates its old folder; 21.9: the video keeps the artist's resolution (the zoom fills
    it); 21.12: PNG / EXR sequences and a codec choice, relative paths against the .blend."""
    from test_scene_render import make_stack
    old, new = tmp_path / "old" / "place" / "p2", tmp_path / "new" / "p2"
    images = make_stack(old, n=3, size=32, zoom=2, seed=3)
    new.parent.mkdir()
    proj = tmp_path / "proj"
    proj.mkdir()
    out = run_blender(VIDEO_WORK.format(old=str(old), new=str(new),
                                        blend=str(proj / "shot.blend")), ur,
                      env=home_env(tmp_path))
    names = out["names"]
    assert {"P10 Camera p2", "P10 Root p2", "P10 Zoom p2", "Scene", "p2"} <= set(names)
    assert not any(".0" in n for n in names) and "p2 Video" not in names, names
    planes = [f"P10 p2 L{i:02d}" for i in range(3)]  # objects and images
    assert [n for n in names if n.startswith("P10 p2 L")] == sorted(planes * 2)
    assert out["cam"] == ["PERSP", 36.0]
    assert "needs an even width and height, the frame is 33x18" in out["odd"]
    assert "Traceback" not in out["odd"] and len(out["odd"].strip().splitlines()) == 1
    assert out["video_size"] == out["rig_size"] == [32, 18]
    assert out["make_path"] == str(proj / "zoom_stacks" / "p2.mp4")  # follows the .blend
    for fmt in ("PNG", "EXR", "FFV1"):
        assert out[fmt][0] == ["FINISHED"], out[fmt]
    seq = proj / "seq" / "p2-frames"
    pngs = sorted(seq.glob("frame_*.png"))
    assert len(pngs) == 3 and f"Wrote {seq}" in out["PNG"][1]
    frame = iio.imread(pngs[0]).astype(np.float32) / 255
    assert frame.shape == (18, 32, 3)
    assert frame.mean(axis=(1, 2)).min() > 0.1  # every row shows the zoom: no bars
    # the middle 18 rows of level 0's 32 px image fill the 16:9 frame (cropped)
    assert np.abs(frame - images[0][7:25]).mean() < 0.08
    assert len(sorted((proj / "exr_frames").glob("frame_*.exr"))) == 3
    assert (proj / "zoom_stacks" / "p2.mkv").stat().st_size > 0
    assert not out["old_back"]
    assert not [p for p in proj.rglob(".*")]  # no hidden leftovers


def test_ui_tooltips_preset_estimate_scene_option_colour_note_world(ur, tmp_path):
    """Issue 21.15 and 21.8: one-line tooltips; the preset enum without a context-dependent
    callback (no 'matches no enum' warning); no estimate without prompts; Add to Current Scene
    beside Load Zoom Stack, with a note on which view transforms show the PNG colours; rig
    scenes get a world; no 'P10' in the names of the video's strips."""
    from test_addon_ui import RECORDER
    from test_scene_render import make_stack
    stack = tmp_path / "grid"
    make_stack(stack, n=2, size=32, zoom=2, seed=1)
    out = run_blender(RECORDER + textwrap.dedent(f'''
        import importlib
        res = {{}}
        mod = addon().p10_blender
        ops = [c for c in mod.all_classes() if issubclass(c, bpy.types.Operator)]
        res["tooltips"] = {{c.bl_idname: getattr(getattr(bpy.ops, c.bl_idname.split(".")[0]),
                                                 c.bl_idname.split(".")[1]).get_rna_type().description
                           for c in ops}}
        p10 = bpy.context.scene.p10
        res["preset_items"] = p10.bl_rna.properties["preset"].enum_items.keys()
        res["preset"] = p10.preset
        def draw(fn):
            log = []
            fn(Recorder(log), bpy.context)
            return log
        res["model_empty"] = draw(mod.interface.panel.draw_model)
        p10.prompts.add().text = "a galaxy"
        res["model_one"] = draw(mod.interface.panel.draw_model)
        res["output_off"] = draw(mod.interface.panel.draw_output)
        res["animation"] = draw(mod.interface.panel.draw_animation)
        p10.animation.use_current_scene = True
        scene = bpy.context.scene
        notes = {{}}
        for view, exact in (("AgX", False), ("Standard", False), ("Filmic", False),
                            ("Standard", True), ("Raw", True)):
            scene.view_settings.view_transform = view
            p10.animation.exact = exact
            notes[f"{{view}} {{exact}}"] = [x for k, x in draw(mod.interface.panel.draw_output)
                                           if k == "label"]
        res["notes"] = notes
        p10.animation.use_current_scene = p10.animation.exact = False
        assert bpy.ops.p10.load_stack(directory={str(stack)!r}) == {{"FINISHED"}}
        rig = bpy.context.scene
        res["world"] = rig.world.name if rig.world else None
        assert bpy.ops.p10.make_video() == {{"FINISHED"}}
        compat = importlib.import_module(ADDON + ".p10_blender.setup.compat")
        res["strips"] = sorted(s.name for s in compat.all_strips(bpy.context.scene.sequence_editor))
        emit(**res)
    '''), ur, env=home_env(tmp_path))
    bad = {k: v for k, v in out["tooltips"].items() if "\n" in v or "  " in v or not v.strip()}
    assert not bad and len(out["tooltips"]) > 20, bad
    assert "galaxy" in out["preset_items"] and out["preset"] in out["preset_items"]
    assert "matches no enum" not in out["_stderr"]
    assert not any("Memory" in x for k, x in out["model_empty"] if k == "label")
    assert any("Memory: about" in x for k, x in out["model_one"] if k == "label")
    output = out["output_off"]
    assert ["prop", "use_current_scene"] in output and ["operator", "p10.load_stack"] in output
    assert ["prop", "use_current_scene"] not in out["animation"]
    notes = out["notes"]
    assert any("'AgX' tone-maps" in x and "'Standard'" in x for x in notes["AgX False"])
    assert any("'Filmic' tone-maps" in x for x in notes["Filmic False"])
    assert any("only 'Raw'" in x for x in notes["Standard True"])
    assert not any("tone-maps" in x for x in notes["Standard False"] + notes["Raw True"])
    assert out["world"] is not None
    assert out["strips"] and not any("P10" in s for s in out["strips"]), out["strips"]


def test_targets_and_loop_from_the_panel_reach_the_engine_and_the_marker(ur, tmp_path):
    """Issue 19.5: Centre by default, one target for all or one per transition (the prompt
    rows), drawn as the next level's region on the level's thumbnail; a loaded stack's
    footprints come back as its targets. Issue 20.5: the Loop toggle (one more transition),
    a photo inside a loop."""
    from test_addon_ui import RECORDER
    from core.stack.stack_io import ZoomStack
    aimed = tmp_path / "aimed"
    ZoomStack(np.full((3, 64, 64, 3), 0.5, np.float32),
              {"zoom": 2, "prompts": ["a", "b", "c"], "footprints": [[0, 0], [32, 32]]}
              ).save(aimed)
    out = run_blender(script(tmp_path / "stacks", RECORDER + textwrap.dedent(f'''
        import numpy as np
        _inner = _fake_generate
        def _capture(settings, **kw):
            FAKE["seen"] = [settings.targets, settings.loop, settings.photo is not None]
            return _inner(settings, **kw)
        _gen.engine = lambda: (_capture, _FakeCache)
        mod = addon().p10_blender
        res = {{}}
        def generate():
            r = run_op("generate")
            return [r, FAKE.get("seen")]
        res["default"] = [p10.target_mode, generate()]
        p10.target_mode, p10.target = "ONE", (0.25, 0.75)
        res["one"] = generate()
        p10.target_mode = "EACH"
        for item, t in zip(p10.prompts, ((0.2, 0.3), (0.7, 0.6), (0.1, 0.1))):
            item.target = t
        res["each"] = generate()
        p10.loop = True
        res["each_loop"] = generate()
        photo = bpy.data.images.new("photo", 64, 64)
        p10.use_photo, p10.photo, p10.photo_level = True, photo, 1
        res["photo_loop"] = generate()
        p10.use_photo = False
        # prompt files carry the targets and the loop both ways
        path = os.path.join(OUT, "..", "aimed.json")
        bpy.ops.p10.prompts_export(filepath=path)
        p10.target_mode, p10.loop = "CENTRE", False
        bpy.ops.p10.prompts_import(filepath=path)
        res["file"] = [p10.target_mode, p10.loop,
                       [[round(v, 4) for v in i.target] for i in p10.prompts]]
        # the marker: row 0's target at the top-left quarter of the frame (footprint 0,0)
        p10.loop = False
        bpy.context.window.scene = bpy.data.scenes["Scene"]
        p10.prompt_index = 0
        p10.prompts[0].target = (0.25, 0.25)
        img = bpy.data.images["Zoom Target"]
        w, h = img.size
        px = np.empty(w * h * 4, np.float32); img.pixels.foreach_get(px)
        px = px.reshape(h, w, 4)[::-1, :, :3]
        res["marker"] = [w, h, px[0, 0].tolist(), px[0, w // 2 - 1].tolist(),
                         px[h // 2 - 1, 0].tolist(), px[h - 1, w - 1].tolist(),
                         px[10, 50].tolist()]
        log = []
        mod.interface.panel.draw_prompts(Recorder(log), bpy.context)
        res["drawn"] = log
        p10.prompt_index = 2                      # the finest row: no next level
        log = []
        mod.interface.panel.draw_prompts(Recorder(log), bpy.context)
        res["finest"] = [x for k, x in log if k == "label"]
        # a stack made with targets: its footprints come back as the panel's targets
        fresh = bpy.data.scenes.new("Fresh"); bpy.context.window.scene = fresh
        assert bpy.ops.p10.load_stack(directory={str(aimed)!r}) == {{"FINISHED"}}
        f = fresh.p10
        res["loaded"] = [f.target_mode, [list(i.target) for i in f.prompts][:2], f.loop]
        emit(**res)
    ''')), ur, env=home_env(tmp_path))
    assert out["default"] == ["CENTRE", [[["FINISHED"], None], [None, False, False]]]
    assert out["one"][1] == [[[0.25, 0.75]], False, False]
    assert out["each"][1][0] == [[0.2, 0.3], [0.7, 0.6]]                  # N-1 transitions
    assert out["each_loop"][1] == [[[0.2, 0.3], [0.7, 0.6], [0.1, 0.1]], True, False]  # N
    assert out["file"] == ["EACH", True, [[0.2, 0.3], [0.7, 0.6], [0.1, 0.1]]]
    assert out["photo_loop"] == [[["FINISHED"], None], [out["each_loop"][1][0], True, True]]
    w, h, corner, top_edge, left_edge, far, inside = out["marker"]
    yellow = pytest.approx([1.0, 0.8, 0.1], abs=0.02)
    assert (w, h) == (128, 128)
    assert corner == yellow and top_edge == yellow and left_edge == yellow  # region 0..63
    assert far != yellow and inside != yellow
    assert ["prop", "loop"] in out["drawn"] and ["prop", "target_mode"] in out["drawn"]
    assert ["prop", "target"] in out["drawn"]
    assert any("no next level" in x for x in out["finest"])
    assert out["loaded"] == ["EACH", [[0.25, 0.25], [0.75, 0.75]], False]


def test_a_frame_narrower_than_the_stack_is_filled_not_letterboxed(ur, tmp_path):
    """Issue 21.9: a square frame of a 2:1 stack shows its middle (the add-on's camera framing
    is fitted); a camera the artist framed is left alone."""
    from core.stack.stack_io import ZoomStack
    rng = np.random.default_rng(4)
    wide = tmp_path / "wide"
    ZoomStack(rng.uniform(0.3, 0.9, (2, 16, 32, 3)).astype(np.float32),
              {"zoom": 2, "prompts": ["a", "b"]}).save(wide)
    out = run_blender(textwrap.dedent(f'''
        anim = bpy.context.scene.p10.animation
        anim.frames_per_level, anim.hold_start, anim.hold_end, anim.ease_frames = 1, 0, 0, 0
        anim.samples, anim.fade_frames, anim.captions = 1, 0, False
        anim.video_format, anim.filepath = "PNG", {str(tmp_path / "seq") + "/"!r}
        assert bpy.ops.p10.load_stack(directory={str(wide)!r}) == {{"FINISHED"}}
        rig = bpy.context.scene
        rig.render.resolution_x = rig.render.resolution_y = 16
        assert bpy.ops.p10.render_video() == {{"FINISHED"}}
        cam = rig.camera.data
        fitted = [cam.ortho_scale, cam.lens, cam.sensor_width]
        cam.lens = 20.0                                  # framed by the artist: kept
        bpy.ops.p10.make_video()
        emit(fitted=fitted, kept=[cam.lens, cam.ortho_scale])
    '''), ur, env=home_env(tmp_path))
    ortho, lens, sensor = out["fitted"]
    assert ortho == pytest.approx(0.5) and lens == pytest.approx(2 * sensor)
    assert out["kept"] == pytest.approx([20.0, 0.5])
    frames = sorted((tmp_path / "seq" / "wide-frames").glob("frame_*.png"))
    frame = iio.imread(frames[0]).astype(np.float32) / 255
    assert frame.shape == (16, 16, 3) and frame.mean(axis=(1, 2)).min() > 0.2  # no bars
