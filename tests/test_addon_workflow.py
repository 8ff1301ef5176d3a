"""The add-on's workflow around the rig, as an artist meets it (issue 21): where stacks and
videos go, Extend / Regenerate updating the rig in place, a loaded stack ready to extend, a
moved stack folder relinked. Headless Blender subprocesses with the fake engine (64 px)."""

from __future__ import annotations

import json
import os
import shutil
import textwrap
from pathlib import Path

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
                built=built, shown=bpy.context.window.scene.name,
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
        assert s["built"]["objects"] == sorted(["P10 Camera a-galaxy", "P10 Root a-galaxy"]
                                               + [f"P10 a-galaxy L{i:02d}" for i in range(n)])
        assert not any(".0" in x for names in s["built"].values() for x in names), s["built"]
    assert seen["regen"]["stack"] == "the-universe-2"  # the panel's stack is the newest one
