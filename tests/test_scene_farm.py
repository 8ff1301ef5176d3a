"""A saved rig renders on a render farm's worker (docs/farm.md): without the add-on, with
auto-run of scripts off, with no absolute file path to resolve, and any frame range on its own
gives the same pixels as the whole render."""

import imageio.v3 as iio
import numpy as np
import pytest

from blender_harness import install_extension, run_blender
from test_scene_render import make_stack

BUILD_AND_SAVE = '''
scene = bpy.context.scene
anim = scene.p10.animation
anim.frames_per_level, anim.hold_start, anim.hold_end, anim.ease_frames = 3, 0, 0, 0
anim.samples = 4
assert bpy.ops.p10.load_stack(directory={stack!r}) == {{"FINISHED"}}
rig = bpy.context.scene
rig.render.resolution_x = rig.render.resolution_y = 32
rig.render.image_settings.file_format = "PNG"
rig.render.filepath = "//frames/f_####"
bpy.ops.wm.save_as_mainfile(filepath={blend!r}, relative_remap=True)
frames = list(range(rig.frame_start, rig.frame_end + 1))
bpy.ops.render.render(animation=True, scene=rig.name)  # the whole range, here
emit(scene=rig.name, frames=frames)
'''

RENDER_RANGE = '''
prefs = bpy.context.preferences
prefs.filepaths.use_scripts_auto_execute = False  # a farm worker's safe default
bpy.ops.wm.open_mainfile(filepath={blend!r}, load_ui=False, use_scripts=False)
import os
absolute = [p for p in bpy.utils.blend_paths(absolute=False, packed=False, local=False)
            if os.path.isabs(p) and not p.startswith("//")]
scene = bpy.data.scenes[{scene!r}]
scene.frame_start, scene.frame_end = {first}, {last}
scene.render.filepath = "//range/f_####"
bpy.ops.render.render(animation=True, scene=scene.name)
emit(absolute=absolute, addon_enabled=ADDON in prefs.addons,
     auto_run=prefs.filepaths.use_scripts_auto_execute)
'''


@pytest.fixture(scope="module")
def ur(tmp_path_factory):
    return install_extension(tmp_path_factory.mktemp("ur_farm"))


def test_a_frame_range_renders_alone_without_the_addon(ur, tmp_path):
    stack = tmp_path / "stack"
    make_stack(stack, n=3, size=32, zoom=2, seed=4)
    blend = tmp_path / "shot" / "zoom.blend"
    blend.parent.mkdir()
    out = run_blender(BUILD_AND_SAVE.format(stack=str(stack), blend=str(blend)), ur)
    frames = out["frames"]
    assert len(frames) == 7
    first, last = frames[2], frames[4]  # a middle range, as one farm task would get
    res = run_blender(RENDER_RANGE.format(blend=str(blend), scene=out["scene"], first=first,
                                          last=last), ur, enable=False)
    assert res["absolute"] == [] and not res["addon_enabled"] and not res["auto_run"]
    for f in range(first, last + 1):
        whole = iio.imread(blend.parent / "frames" / f"f_{f:04d}.png").astype(np.float32)
        alone = iio.imread(blend.parent / "range" / f"f_{f:04d}.png").astype(np.float32)
        assert whole.std() > 5  # an image, not a black frame
        assert np.abs(whole - alone).max() <= 1.0, f
    assert not (blend.parent / "range" / f"f_{first - 1:04d}.png").exists()
