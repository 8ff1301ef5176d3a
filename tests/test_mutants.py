"""Mutation testing stays part of the suite: the mutant list matches the code, the tool scores
correctly, and a few mutants of the science are caught (the full run: tools/mutate.py)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "mutate.py"


def _tool():
    spec = importlib.util.spec_from_file_location("p10_mutate", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_mutant_snippet_is_in_the_code():
    mutants = _tool().load_mutants()  # raises, naming the mutant, when a snippet is gone
    ids = {m["id"] for m in mutants}
    assert len(mutants) >= 33
    # the bugs the suite once missed stay on the list
    assert {"M07", "M10", "M15", "M16", "M17", "M18", "M28", "M29", "M30", "M31", "M33"} <= ids
    # the core, and the add-on (its mutants are caught by headless-Blender tests)
    assert all(m["file"].startswith(("core/", "p10_blender/")) for m in mutants)
    assert all(m["tests"] and m["description"].strip() for m in mutants)


def test_a_lost_snippet_stops_the_run_with_a_precise_message(tmp_path):
    tool = _tool()
    listing = tmp_path / "mutants.toml"
    listing.write_text(
        '[[mutant]]\nid = "X1"\nfile = "core/zoom/geometry.py"\noriginal = "return d  # gone"\n'
        'replacement = "return d + 1"\ntests = ["tests/test_zoom_stack.py"]\n'
        'description = "observation depth off by one"\n', encoding="utf-8")
    with pytest.raises(tool.MutantListError) as exc:
        tool.load_mutants(listing)
    message = str(exc.value)
    for part in ("X1", "core/zoom/geometry.py", "not found", "'return d  # gone'",
                 "observation depth off by one"):
        assert part in message, message


def test_the_command_line_names_the_lost_snippet(tmp_path):
    listing = tmp_path / "mutants.toml"
    listing.write_text('[[mutant]]\nid = "X2"\nfile = "core/zoom/geometry.py"\noriginal = "gone"\n'
                       'replacement = "x"\ntests = ["tests/test_zoom_stack.py"]\n'
                       'description = "d"\n', encoding="utf-8")
    code, report, err = _run_tool("--check", "--mutants", str(listing))
    assert code == 2 and report is None
    assert "mutant X2 (core/zoom/geometry.py): original snippet not found" in err


def _run_tool(*args):
    proc = subprocess.run([sys.executable, str(TOOL), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else None, proc.stderr


def test_the_tool_tells_caught_from_missed(tmp_path):
    # one real bug (caught), one change of a docstring (cannot be caught: reported as missed)
    listing = tmp_path / "mutants.toml"
    listing.write_text("""
[[mutant]]
id = "A"
file = "core/zoom/geometry.py"
original = "if n <= 0 or n % (2 * p):"
replacement = "if n <= 0 or n % p:"
tests = ["tests/test_zoom_stack.py::test_bad_shapes_are_named"]
description = "size check too lax"

[[mutant]]
id = "B"
file = "core/zoom/geometry.py"
original = "Deeper observations (e.g."
replacement = "Deeper observed levels (e.g."
tests = ["tests/test_zoom_stack.py::test_bad_shapes_are_named"]
description = "a docstring"
""", encoding="utf-8")
    code, report, err = _run_tool("--mutants", str(listing), "--no-baseline")
    assert code == 1, err  # an unexplained miss fails the run
    assert (report["caught"], report["total"], report["missed"]) == (1, 2, ["B"])
    assert report["missed_unexplained"] == ["B"] and report["score"] == 0.5


def test_a_few_mutants_of_the_science_are_caught():
    # the blend's deepest observation, the stack folder's 8-bit scale, the final Π_image
    code, report, err = _run_tool("--only", "M07,M17,M28", "--no-baseline")
    assert report is not None, err
    assert report["caught"] == report["total"] == 3, report
    assert code == 0
    # caught by the tests that guard them (a collection error would show as ERROR <file>)
    by = {r["id"]: r["caught_by"] for r in report["mutants"]}
    assert by["M07"].startswith("tests/test_zoom_stack.py::test_every_aligned_observation"), by
    assert by["M17"].startswith("tests/test_stack_pixels.py::test_save_load_returns"), by
    assert by["M28"].startswith("tests/test_sampler_invariants.py::test_inconsistent_denoiser"), by
