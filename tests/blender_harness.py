"""Drive the packaged add-on in a real headless Blender (the ``bpy`` module of this venv).

Every Blender run is a SUBPROCESS: bpy keeps global state (registered classes, handlers,
preferences) that must not leak between tests or into pytest itself.

    zip_path = build_extension_zip()                  # built once per test session
    ur = install_extension(tmp_path / "ur")          # fresh BLENDER_USER_RESOURCES
    out = run_blender('''
        scene = bpy.context.scene
        emit(has_p10=hasattr(scene, "p10"))
    ''', ur)
    assert out["has_p10"]

Inside the script these names exist: ``bpy``, ``ADDON`` (the add-on's module name,
``bl_ext.user_default.powers_of_ten``), ``addon()`` (that module, enabled), ``emit(**kw)``
(adds JSON-able values to the result dict ``RESULT``) and ``enable_addon()``/``disable_addon()``.
The add-on is enabled before the script runs unless ``enable=False``. An uncaught exception in
the script fails the call with ``BlenderRunError`` carrying Blender's output.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXTENSION_ID = "powers_of_ten"
REPO = "user_default"
ADDON_MODULE = f"bl_ext.{REPO}.{EXTENSION_ID}"
_MARK = "P10_HARNESS_RESULT:"

# Modules a "dependencies missing" run hides from the add-on.
HEAVY_MODULES = ("torch", "torchvision", "diffusers", "transformers", "accelerate",
                 "safetensors", "huggingface_hub", "tokenizers")


class BlenderRunError(AssertionError):
    """A Blender subprocess failed; the message holds the tail of its output."""


@functools.lru_cache(maxsize=1)
def build_extension_zip() -> Path:
    """Build + validate the extension zip with Blender's own tool; once per test session."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import build_extension
    finally:
        sys.path.remove(str(ROOT / "tools"))
    out_dir = Path(tempfile.mkdtemp(prefix="p10_zip_"))
    return build_extension.build(out_dir)


def blender_env(user_resources: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "BLENDER_USER_RESOURCES": str(user_resources),
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
        "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1",
    })
    env.pop("PYTHONPATH", None)
    env.update(extra or {})
    return env


_PRELUDE = '''
import sys, json, traceback
_HIDE = {hide!r}
if _HIDE:
    import importlib.abc
    class _Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in _HIDE:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None
    sys.meta_path.insert(0, _Hide())
import bpy, addon_utils
ADDON = {addon!r}
RESULT = {{}}
def emit(**kw):
    RESULT.update(kw)
def _raise(ex):
    raise ex
def enable_addon():
    mod = addon_utils.enable(ADDON, default_set=True, handle_error=_raise)
    if mod is None:
        raise RuntimeError("add-on did not enable: " + ADDON)
    return mod
def disable_addon():
    addon_utils.disable(ADDON, default_set=True, handle_error=_raise)
def addon():
    return sys.modules[ADDON]
if {enable!r}:
    enable_addon()
'''

# bpy 4.2 as a module can crash while tearing the interpreter down (seen: SIGSEGV at exit right
# after an extension install). The script's work is done and reported by then, so leave without
# the teardown; an exception earlier still exits non-zero through the normal path.
_EPILOGUE = '''
print({mark!r} + json.dumps(RESULT, default=str), flush=True)
import os as _os, sys as _sys
_sys.stderr.flush()
_os._exit(0)
'''


def run_blender(script: str, user_resources: Path, *, timeout: float = 300,
                enable: bool = True, hide_modules: tuple[str, ...] = (),
                env: dict[str, str] | None = None) -> dict:
    """Run ``script`` in a fresh headless Blender; return the dict it built with ``emit``."""
    prelude = _PRELUDE.format(hide=tuple(hide_modules), addon=ADDON_MODULE, enable=enable)
    body = prelude + "\n" + textwrap.dedent(script) + "\n" + _EPILOGUE.format(mark=_MARK)
    with tempfile.NamedTemporaryFile("w", suffix=".py", prefix="p10_script_", delete=False) as f:
        f.write(body)
        path = f.name
    try:
        proc = subprocess.run([sys.executable, path], capture_output=True, text=True,
                              timeout=timeout, env=blender_env(user_resources, env),
                              cwd=str(user_resources))
    except subprocess.TimeoutExpired as ex:
        raise BlenderRunError(f"Blender script timed out after {timeout} s:\n"
                              f"{_tail(ex.stdout)}{_tail(ex.stderr)}") from None
    finally:
        os.unlink(path)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(_MARK)]
    if proc.returncode != 0 or not lines:
        raise BlenderRunError(f"Blender script failed (exit {proc.returncode}):\n"
                              f"--- stdout ---\n{_tail(proc.stdout)}\n"
                              f"--- stderr ---\n{_tail(proc.stderr)}")
    result = json.loads(lines[-1][len(_MARK):])
    result.setdefault("_stderr", proc.stderr[-4000:])
    return result


def install_extension(user_resources: Path, zip_path: Path | None = None) -> Path:
    """Install the zip into ``user_resources`` (a fresh BLENDER_USER_RESOURCES) and enable it.

    Returns ``user_resources``. Uses the same operator a user's drag-and-drop install does.
    """
    zip_path = zip_path or build_extension_zip()
    user_resources = Path(user_resources)
    user_resources.mkdir(parents=True, exist_ok=True)
    out = run_blender(f'''
        r = bpy.ops.extensions.package_install_files(
            filepath={str(zip_path)!r}, repo={REPO!r}, enable_on_install=True)
        emit(result=sorted(r), enabled=ADDON in bpy.context.preferences.addons.keys())
    ''', user_resources, enable=False)
    if out["result"] != ["FINISHED"] or not out["enabled"]:
        raise BlenderRunError(f"install failed: {out}")
    return user_resources


def _tail(text, n: int = 6000) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return (text or "")[-n:]


# A fake generation engine for Blender scripts: paste it at the top of a script, then set
# FAKE["steps"], FAKE["delay"] (seconds per step) or FAKE["fail"] (an exception) as needed.
# It honours the core.generate contract: progress(phase, step, total, preview), cancel event,
# returns a ZoomStack; FAKE["calls"] counts runs, FAKE["released"] counts ModelCache.release().
FAKE_ENGINE = '''
import importlib, time, numpy as _np
_gen = addon().p10_blender.generate.generation
_stack_io = importlib.import_module(ADDON + ".core.stack.stack_io")
_errors = importlib.import_module(ADDON + ".core.errors")
FAKE = {"steps": 4, "delay": 0.0, "fail": None, "calls": 0, "released": 0, "on_step": None}
class _FakeCache:
    def release(self):
        FAKE["released"] += 1
def _fake_generate(settings, *, progress=None, cancel=None, models=None, known=None):
    FAKE["calls"] += 1
    FAKE["photo"] = settings.photo
    n, h, w = len(settings.prompts), settings.height or 64, settings.width or 64
    for s in range(FAKE["steps"]):
        if cancel is not None and cancel.is_set():
            raise _errors.Cancelled("Cancelled.")
        if FAKE["fail"] is not None and s == 1:
            raise FAKE["fail"]
        time.sleep(FAKE["delay"])
        if progress:
            progress("sampling", s + 1, FAKE["steps"],
                     _np.full((n, h // 4, w // 4, 3), (s + 1) / FAKE["steps"], _np.float32))
    layers = _np.full((n, h, w, 3), 0.5, _np.float32)
    for level, image in (known or {}).items():  # known levels come back as given
        layers[level] = image
    FAKE["known"] = sorted(known or {})
    return _stack_io.ZoomStack(layers, {"prompts": list(settings.prompts), "zoom": settings.zoom,
                                        "model": settings.model, "seed": settings.seed})
_gen.engine = lambda: (_fake_generate, _FakeCache)
_gen._models = None
'''


# FAKE_ENGINE plus a scene ready to generate into the folder OUT (which the script defines
# first): three prompts at 64 px, ``run_op(name, **kw)`` -> (sorted result, None) or
# (None, the operator's error), and listings of what the run left.
FAKE_SCENE = FAKE_ENGINE + '''
import json, os, time
from pathlib import Path
p10 = bpy.context.scene.p10
p10.width = p10.height = 64
p10.output_dir = OUT
for t in ("a galaxy", "a star", "a planet"):
    p10.prompts.add().text = t
def run_op(name="generate", **kw):
    try:
        return sorted(getattr(bpy.ops.p10, name)(**kw)), None
    except RuntimeError as e:
        return None, str(e)
def stacks():
    return sorted(p.name for p in Path(OUT).iterdir()) if Path(OUT).exists() else []
def listing():
    return sorted(os.listdir(OUT)) if os.path.isdir(OUT) else []
def previews():
    return sorted(i.name for i in bpy.data.images if i.name.startswith("Zoom Preview"))
def manifest():
    return json.load(open(os.path.join(p10.last_stack_dir, "manifest.json")))
'''
