"""The extension zip: built and validated by Blender's tool, installs, enables, disables cleanly."""

from __future__ import annotations

import textwrap
import tomllib
import zipfile

import pytest

from blender_harness import (FAKE_ENGINE, HEAVY_MODULES, build_extension_zip,
                             install_extension, run_blender)

ALLOWED_TOP = {"__init__.py", "blender_manifest.toml", "LICENSE"}
ALLOWED_DIRS = ("core/", "p10_blender/")


@pytest.fixture(scope="module")
def user_resources(tmp_path_factory):
    return install_extension(tmp_path_factory.mktemp("ur_pkg"))


def test_zip_holds_only_the_addon():
    names = zipfile.ZipFile(build_extension_zip()).namelist()
    assert ALLOWED_TOP <= set(names)
    stray = [n for n in names if n not in ALLOWED_TOP and not n.startswith(ALLOWED_DIRS)]
    assert stray == []
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert any(n.startswith("core/examples/") and n.endswith(".json") for n in names)
    assert "p10_blender/interface/panel.py" in names and "core/settings.py" in names


def test_manifest_fields():
    with zipfile.ZipFile(build_extension_zip()) as z:
        m = tomllib.loads(z.read("blender_manifest.toml").decode())
    assert m["id"] == "powers_of_ten" and m["type"] == "add-on"
    assert m["blender_version_min"] == "4.2.0"
    assert m["license"] == ["SPDX:GPL-3.0-or-later"]
    assert len(m["tagline"]) <= 64 and not m["tagline"].endswith(".")
    assert set(m["permissions"]) == {"files", "network"}


def test_enable_disable_enable_leaves_nothing_behind(user_resources):
    out = run_blender(FAKE_ENGINE + textwrap.dedent('''
        import sys
        p = addon().p10_blender
        def snapshot():
            return {
                "classes": sorted({n for n in dir(bpy.types) if n.startswith(("P10_", "p10"))} |
                                  {c.__name__ for base in (bpy.types.PropertyGroup,
                                   bpy.types.AddonPreferences, bpy.types.Operator,
                                   bpy.types.Panel, bpy.types.UIList)
                                   for c in base.__subclasses__()
                                   if c.__name__.startswith("P10_") and c.is_registered}),
                "scene_prop": hasattr(bpy.types.Scene, "p10"),
                "handlers": sorted(f.__name__ for name in ("load_pre", "load_post",
                                   "depsgraph_update_post", "frame_change_post", "save_pre")
                                   for f in getattr(bpy.app.handlers, name)
                                   if "p10" in f.__name__),
                "timers": len(p.generate.jobs.registered_timers()),
                "paths": sorted(s for s in sys.path if "powers_of_ten" in s),
            }
        on1 = snapshot()
        # disable while a job runs: the worker stops, the timer goes, nothing is left
        p10 = bpy.context.scene.p10
        p10.width = p10.height = 64
        p10.prompts.add().text = "a galaxy"
        FAKE["steps"], FAKE["delay"] = 200, 0.05
        job = _gen.start(bpy.context, sync=False)
        p.generate.jobs.start_polling(_gen.runner, force=True)
        running = (job.running, len(p.generate.jobs.registered_timers()))
        disable_addon()
        off = snapshot()
        enable_addon()
        p = addon().p10_blender
        on2 = snapshot()
        bpy.context.scene.p10.prompts.add().text = "x"
        emit(on1=on1, off=off, on2=on2, running=running, alive=job.thread.is_alive(), user_dir=str(p.setup.dependencies.user_dir()),
             install_dir=str(addon().__path__[0]), enabled=ADDON in bpy.context.preferences.addons)
    '''), user_resources)
    on1, off, on2 = out["on1"], out["off"], out["on2"]
    for name in ("P10_PT_zoom", "P10_OT_generate", "P10_SceneSettings", "P10_UL_prompts",
                 "P10_PromptItem", "P10_AddonPreferences"):
        assert name in on1["classes"]
    assert on1["scene_prop"] and on1["handlers"] == ["p10_depsgraph_update", "p10_load_pre"]
    assert off == {"classes": [], "scene_prop": False, "handlers": [], "timers": 0, "paths": []}
    assert on2 == on1
    assert out["running"] == [True, 1] and not out["alive"]
    assert out["enabled"]
    # writable data lives in the extension's user folder, never in the install folder
    assert out["user_dir"].startswith(str(user_resources))
    assert not out["user_dir"].startswith(out["install_dir"])


def test_enables_and_draws_without_torch(user_resources):
    out = run_blender('''
        import sys
        p = addon().p10_blender
        st = p.setup.dependencies.status()
        try:
            bpy.ops.p10.generate()
            err = None
        except RuntimeError as e:
            err = str(e)
        emit(ok=st.ok, missing=list(st.missing), err=err,
             heavy=[m for m in sys.modules if m.split(".")[0] in ("torch", "diffusers")])
    ''', user_resources, hide_modules=HEAVY_MODULES)
    assert not out["ok"] and "torch" in out["missing"] and "diffusers" in out["missing"]
    assert out["heavy"] == []
    assert "Missing Python packages" in out["err"] and "Traceback" not in out["err"]
