"""Python dependencies (torch, diffusers, ...): find them, or pip-install them for Blender.

Two ways to provide them, chosen in the add-on preferences:
* an existing Python environment whose ``site-packages`` is appended to ``sys.path``;
* "Install dependencies": pip for Blender's own Python (``sys.executable``) installs into the
  add-on's user folder (``<extension user dir>/site-packages``), never the install folder.

Nothing here imports torch: ``status()`` only looks modules up. bpy is imported lazily so the
pure helpers can be unit-tested outside Blender.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ...core.errors import Cancelled

# import name -> pip requirement. Order matters only for the message.
REQUIRED = {
    "torch": "torch",
    "diffusers": "diffusers",
    "transformers": "transformers",
    "accelerate": "accelerate",
    "safetensors": "safetensors",
    "huggingface_hub": "huggingface-hub",
    "PIL": "pillow",
}
# Versions this release is tested with (kept equal to requirements.txt by a test), so a future
# release of a library cannot break the add-on; torch stays free to match the GPU's index.
TESTED_VERSIONS = {
    "diffusers": "0.42.1",
    "transformers": "5.24.0",
    "accelerate": "1.15.0",
    "safetensors": "0.8.0",
    "huggingface-hub": "2.4.0",
}
TORCH_INDEX = {
    "CUDA": "https://download.pytorch.org/whl/cu126",
    "ROCM": "https://download.pytorch.org/whl/rocm6.3",
    "CPU": "https://download.pytorch.org/whl/cpu",
    "DEFAULT": None,  # PyPI's own wheels (macOS: Metal support included)
}


def _root_package() -> str:
    # "bl_ext.<repo>.powers_of_ten" (this module is <root>.p10_blender.setup.dependencies)
    return __package__.rsplit(".", 2)[0]


def get_prefs(context=None):
    """The add-on's preferences (None while it is not enabled under its own id)."""
    import bpy
    context = context or bpy.context
    addon = context.preferences.addons.get(_root_package())
    return addon.preferences if addon is not None else None


def user_dir() -> Path:
    """The extension's writable folder (stacks, logs, pip target); created on demand."""
    import bpy
    return Path(bpy.utils.extension_path_user(_root_package(), create=True))


def site_dir() -> Path:
    return user_dir() / "site-packages"


def log_dir() -> Path:
    path = user_dir() / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


# -- sys.path ------------------------------------------------------------------------------

def env_site_packages(env_path: str | os.PathLike) -> Path:
    """``site-packages`` of a Python environment folder (venv, conda env, or the folder itself).

    Raises ValueError with a one-line message if none matches this Python's version.
    """
    root = Path(os.path.expanduser(str(env_path))).resolve()
    if not root.is_dir():
        raise ValueError(f"Python environment folder not found: {root}")
    if root.name == "site-packages":
        return root
    ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for cand in (root / "lib" / ver / "site-packages", root / "Lib" / "site-packages",
                 root / "lib" / "site-packages"):
        if cand.is_dir():
            return cand
    others = sorted(p.parent.name for p in root.glob("lib/python3*/site-packages"))
    if others:
        raise ValueError(f"{root} is a {others[0]} environment but Blender runs {ver}; "
                         f"use an environment made with Python "
                         f"{sys.version_info.major}.{sys.version_info.minor}")
    raise ValueError(f"no site-packages folder found in {root}")


_added: list[str] = []


def add_paths(env_path: str = "", include_site_dir: bool = True) -> str | None:
    """Append the pip target and the chosen environment to ``sys.path``.

    Appended, not prepended: Blender's own numpy etc. must win over copies in the env.
    Returns a one-line problem description, or None.
    """
    problem = None
    wanted: list[Path] = []
    if include_site_dir:
        wanted.append(site_dir())
    if env_path.strip():
        try:
            wanted.append(env_site_packages(env_path))
        except ValueError as exc:
            problem = str(exc)
    for path in wanted:
        s = str(path)
        if path.is_dir() and s not in sys.path:
            sys.path.append(s)
            _added.append(s)
    importlib.invalidate_caches()
    invalidate()
    return problem


def remove_paths() -> None:
    """Undo ``add_paths`` (add-on disabled)."""
    while _added:
        s = _added.pop()
        if s in sys.path:
            sys.path.remove(s)
    invalidate()


# -- status ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class DepStatus:
    missing: tuple[str, ...]
    problem: str | None = None  # e.g. the chosen env is unusable

    @property
    def ok(self) -> bool:
        return not self.missing

    @property
    def message(self) -> str:
        if self.ok:
            return "Dependencies found."
        names = ", ".join(REQUIRED[m] for m in self.missing)
        text = f"Missing Python packages: {names}."
        return f"{text} {self.problem}." if self.problem else text


_status: DepStatus | None = None
_problem: str | None = None


def _findable(name: str) -> bool:
    if name in sys.modules:
        return sys.modules[name] is not None
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def status() -> DepStatus:
    """Cached lookup of the required modules (cheap enough for panel drawing)."""
    global _status
    if _status is None:
        _status = DepStatus(tuple(m for m in REQUIRED if not _findable(m)), _problem)
    return _status


def invalidate(problem: str | None = None) -> None:
    global _status, _problem
    _status, _problem = None, problem


def refresh(prefs=None) -> DepStatus:
    """Re-apply the preferences' paths and look again."""
    env = getattr(prefs, "python_env", "") if prefs is not None else ""
    problem = add_paths(env)
    invalidate(problem)
    return status()


# -- install --------------------------------------------------------------------------------

def online_access() -> bool:
    """Blender's "Allow Online Access" preference (4.2+); older builds have no such switch."""
    import bpy
    return bool(getattr(bpy.app, "online_access", True))


def detect_torch_build(system: str | None = None, which=shutil.which) -> str:
    """'CUDA' if an NVIDIA driver answers, 'ROCM' for AMD ROCm, 'DEFAULT' on macOS, else 'CPU'."""
    system = system or platform.system()
    if system == "Darwin":
        return "DEFAULT"
    smi = which("nvidia-smi")
    if smi:
        try:
            if subprocess.run([smi, "-L"], capture_output=True, timeout=10).returncode == 0:
                return "CUDA"
        except (OSError, subprocess.SubprocessError):
            pass
    if which("rocminfo") or which("rocm-smi") or Path("/opt/rocm").is_dir():
        return "ROCM"
    return "CPU"


def pip_command(target: Path, torch_build: str, python: str | None = None,
                constraints: Path | None = None) -> list[str]:
    """One pip call installing everything, torch from the index matching ``torch_build``.

    One call (not two) so pip resolves torch once: a second call would pull PyPI's default
    (CUDA) torch back in as a dependency of accelerate.
    """
    if torch_build not in TORCH_INDEX:
        raise ValueError(f"unknown torch build {torch_build!r}")
    cmd = [python or sys.executable, "-m", "pip", "install", "--upgrade", "--target", str(target),
           "--no-input", "--disable-pip-version-check", "--progress-bar", "off"]
    index = TORCH_INDEX[torch_build]
    if index:
        cmd += ["--extra-index-url", index]
    if constraints is not None:
        cmd += ["--constraint", str(constraints)]
    return cmd + [f"{name}=={TESTED_VERSIONS[name]}" if name in TESTED_VERSIONS else name
                  for name in REQUIRED.values()]


def write_constraints(path: Path) -> Path:
    """Pin numpy to Blender's own: its compiled modules expect that version."""
    lines = []
    try:
        import numpy
        lines.append(f"numpy=={numpy.__version__}")
    except ImportError:
        pass
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def ensure_pip_command(python: str | None = None) -> list[str]:
    return [python or sys.executable, "-m", "ensurepip", "--upgrade"]


def run_logged(cmd: list[str], log_path: Path, on_line, cancelled) -> int:
    """Run ``cmd``; append its output to ``log_path`` and hand each line to ``on_line``.

    ``cancelled()`` is checked per line; on cancel the process is terminated. Returns the
    exit code.
    """
    env = dict(os.environ, PYTHONNOUSERSITE="1", PIP_NO_INPUT="1")
    with open(log_path, "a", encoding="utf-8") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                bufsize=1, env=env, errors="replace")
        try:
            for line in proc.stdout:
                log.write(line)
                on_line(line.rstrip())
                if cancelled():
                    proc.terminate()
                    break
        finally:
            proc.stdout.close()
            code = proc.wait()
    return code


def pip_phase(line: str) -> str | None:
    """A short phase name for a pip output line, or None."""
    for word, phase in (("Collecting", "resolving"), ("Downloading", "downloading"),
                        ("Installing collected", "installing"),
                        ("Successfully installed", "done")):
        if line.lstrip().startswith(word):
            return phase
    return None


def install_work(target: Path, torch_build: str, log_path: Path):
    """The worker function of an install job (runs in a thread; no bpy)."""
    def work(reporter) -> str:
        target.mkdir(parents=True, exist_ok=True)
        lines = 0

        def on_line(line: str) -> None:
            nonlocal lines
            lines += 1
            reporter.post("log", line)
            phase = pip_phase(line)
            reporter.progress(phase or "installing", lines, 0)

        cancelled = reporter.cancelled
        if run_logged(pip_command_hook(sys.executable, ["-m", "pip", "--version"]), log_path,
                      on_line, cancelled) != 0:
            run_logged(ensure_pip_command(), log_path, on_line, cancelled)
        constraints = write_constraints(target.parent / "constraints.txt")
        code = run_logged(pip_command_hook(*split_pip(pip_command(target, torch_build,
                                                                  constraints=constraints))),
                          log_path, on_line, cancelled)
        if reporter.cancelled():
            raise InstallCancelled("Installation cancelled.")
        if code != 0:
            raise RuntimeError(f"pip failed (exit code {code}); see the log: {log_path}")
        return str(target)
    return work


def split_pip(cmd: list[str]) -> tuple[str, list[str]]:
    return cmd[0], cmd[1:]


def pip_command_hook(python: str, args: list[str]) -> list[str]:
    """Test seam: tests replace this to run a fake pip instead of the network."""
    return [python, *args]


class InstallCancelled(Cancelled):
    """The user cancelled the installation (jobs treat every ``Cancelled`` as a cancel)."""
