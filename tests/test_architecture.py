"""The layout keeps its promises (docs/architecture.md): no import circles, dependencies one way,
a small top level, the public API importable from ``core``."""

from __future__ import annotations

import ast
import collections
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def _exists(dotted: str) -> bool:
    p = ROOT.joinpath(*dotted.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def import_graph(*packages: str) -> dict[str, set[str]]:
    """module -> project modules it imports (relative imports, at any depth in the file)."""
    graph: dict[str, set[str]] = collections.defaultdict(set)
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            name, is_package = _module_name(path)
            graph[name]
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.ImportFrom) or not node.level:
                    continue
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
                subs = [f"{target}.{a.name}" for a in node.names if _exists(f"{target}.{a.name}")]
                graph[name].update(subs or [target])
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node, or a node importing itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                found.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The same graph between a package's direct children (``core.zoom``, ``p10_blender.rig``).
    The package's own ``__init__`` (``core``: lazy names only) is left out."""
    def unit(m: str) -> str:
        return ".".join(m.split(".")[:2])

    out: dict[str, set[str]] = collections.defaultdict(set)
    for a, targets in graph.items():
        for b in targets:
            if "." in a and "." in b and unit(a) != unit(b):
                out[unit(a)].add(unit(b))
    return out


GRAPH = import_graph("core", "p10_blender")


def test_no_import_circle_between_modules():
    assert cycles(GRAPH) == []


def test_no_import_circle_between_packages():
    assert cycles(package_graph(GRAPH)) == []


def test_the_finder_sees_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c"]]
    assert cycles(package_graph({"x.p.m": {"x.q.n"}, "x.q.n": {"x.p.k"}})) == [["x.p", "x.q"]]


def _imports_of(prefix: str) -> set[str]:
    return {t for m, ts in GRAPH.items() if m.startswith(prefix + ".") or m == prefix for t in ts}


def test_the_mathematics_imports_nothing_of_models_or_files():
    assert {".".join(t.split(".")[:2]) for t in _imports_of("core.zoom")} <= {"core.zoom", "core.errors"}


def test_model_facts_import_only_errors():
    assert {".".join(t.split(".")[:2]) for t in _imports_of("core.models")} <= {"core.models", "core.errors"}


def test_the_backend_base_imports_no_family_and_no_upscale():
    assert GRAPH["core.backends.base"] <= {"core.backends.guidance", "core.zoom.zoom_stack"}


def test_the_stack_folder_imports_no_model_code():
    units = {".".join(t.split(".")[:2]) for t in _imports_of("core.stack")}
    assert not units & {"core.backends", "core.models", "core.generate", "core.settings"}


def test_core_never_imports_bpy():
    for path in (ROOT / "core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] == "bpy" for n in names), path


@pytest.mark.parametrize("package, limit", [("core", 10), ("p10_blender", 8)])
def test_top_level_is_small(package, limit):
    modules = [p for p in (ROOT / package).glob("*.py")]
    assert len(modules) <= limit, sorted(p.name for p in modules)


PUBLIC = ["render_image", "render_noise", "blend", "downsample", "crop_centre",
          "sample_zoom_stack", "SampleResult", "ZoomStack", "read_manifest", "load_photo",
          "make_scheduler", "P10Error", "InvalidInputError", "Cancelled", "StackFormatError"]


def test_public_api_from_core():
    code = ("import core, sys\n"
            f"names = {PUBLIC!r}\n"
            "missing = [n for n in names if not hasattr(core, n)]\n"
            "assert not missing, missing\n"
            "assert set(names) <= set(core.__all__)\n")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_import_core_is_torch_free():
    code = ("import sys, core, core.settings, core.prompts, core.stack.stack_io\n"
            "import core.models.cache, core.models.downloads, core.models.estimate\n"
            "import core.models.families, core.models.fast_models\n"
            "bad = [m for m in ('torch', 'diffusers', 'PIL') if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_families_register_themselves():
    from core.backends.base import FAMILY_BACKENDS
    from core.backends.loading import _backend_class
    from core.models.families import FAMILIES, FAMILY_MODULES

    assert set(FAMILY_MODULES) == set(FAMILIES)
    for family in FAMILIES:
        cls = _backend_class(family)
        assert cls.family == family and FAMILY_BACKENDS[family] is cls
