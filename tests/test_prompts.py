"""Prompt files (txt / JSON) and the paper's bundled example sequences."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import InvalidInputError
from core.prompts import (example_info, list_examples, load_example, read_prompt_file,
                          write_prompt_file)

PAPER = Path(__file__).resolve().parents[1].parent / "shared/reference/generative_powers_of_ten_paper.md"

# name: (zoom p, number of prompts, first prompt, last prompt) - from the paper's tables/figures.
EXPECTED = {
    "hand": (4, 8, "An aerial view of a man lying on the picnic blanket with his hand in the center of the image",
             "Photo taken through a light microscope of a nucleus within a single cell"),
    "forest": (2, 8, "Path leading to the dense forest from open land",
               "Close-up of tree bark showing small cracks, lichen, and insects"),
    "hawaii": (2, 7, "A aerial photo capturing Hawaii's islands surrounded by the vast Pacific Ocean from above",
               "A top down shot of a man standing on the edge of a volcano's caldera, waving at the camera."),
    "sunflowers": (2, 6, "A sunflower field from afar",
                   "An extreme close-up of the center of the sunflower Showcase the dark, velvety disc florets, "
                   "and capture the honey bee sipping nectar and transferring pollen"),
    "earth": (4, 7, "Satellite image of the Earth's surface showing a landmass in the middle as seen from space",
              "Top down view of a lake with a person kayaking shoot directly from above"),
    "mount_rainier": (2, 6, "A straight road in the middle with alpine forests on the sides under the blue sky "
                      "with clouds; autumn season",
                      "A team of climbers with red clothes climbing on the rugged cliffs; low camera angle"),
    "galaxy": (2, 16, "Small galaxy far away surrounded by large starry dark sky, millions of sparkling stars "
               "against dark background and vast emptiness",
               "Top-down view of an alien outpost as seen directly above"),
    "maple_leaf": (2, 6, "A girl is holding a maple leaf in front of her face, partially obscuring it",
                   "High resolution macrophotograph showing the magnified veins pattern on the orange maple leaf "
                   "texture; macrophotography"),
}


def test_all_paper_examples_are_bundled():
    assert list_examples() == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_matches_paper(name):
    zoom, count, first, last = EXPECTED[name]
    prompts, settings = load_example(name)
    assert settings == {"zoom": zoom}  # descriptive keys (name, source) are not settings
    assert len(prompts) == count
    assert prompts[0] == first and prompts[-1] == last
    info = example_info(name)
    assert info["zoom"] == zoom and info["num_levels"] == count and "Powers of Ten" in info["source"]


@pytest.mark.skipif(not PAPER.is_file(), reason="paper text not available")
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_prompts_are_verbatim_from_paper(name):
    text = PAPER.read_text(encoding="utf-8").replace("&lt;", "<").replace("&gt;", ">")
    for prompt in load_example(name)[0]:
        assert prompt in text, prompt


def test_example_names_are_forgiving_and_unknown_is_one_line():
    assert load_example("Mount Rainier") == load_example("mount-rainier") == load_example("MOUNT_RAINIER")
    with pytest.raises(InvalidInputError, match="unknown example 'nope'.*galaxy") as e:
        load_example("nope")
    assert "\n" not in str(e.value)


def test_txt_round_trip(tmp_path):
    prompts = ["A galaxy, far away", "A star — with a planet", "Planet surface; tight framing"]
    path = write_prompt_file(tmp_path / "p.txt", prompts, {"zoom": 4, "seed": 7})
    text = path.read_text(encoding="utf-8")
    assert text.count("\n") == len(text.splitlines())
    assert "# zoom: 4" in text  # settings are documented as comments
    assert read_prompt_file(path) == (prompts, {})


def test_txt_reading_skips_comments_and_blank_lines(tmp_path):
    p = tmp_path / "p.txt"
    p.write_bytes("\ufeff# header\n\n  outer  \r\n   # indented comment\ninner\n\n".encode("utf-8"))
    assert read_prompt_file(p) == (["outer", "inner"], {})


def test_json_round_trip_keeps_settings(tmp_path):
    prompts = ["outer", "middle", "inner"]
    settings = {"zoom": 2, "steps": 30, "guidance": 7.5, "seed": 3, "negative_prompt": "blurry",
                "photo": Path("/tmp/a.png")}
    path = write_prompt_file(tmp_path / "p.json", prompts, settings)
    got_prompts, got_settings = read_prompt_file(path)
    assert got_prompts == prompts
    assert got_settings == {**settings, "photo": "/tmp/a.png"}
    assert json.loads(path.read_text(encoding="utf-8"))["prompts"] == prompts


def test_json_accepts_bare_list_and_drops_metadata(tmp_path):
    p = tmp_path / "a.JSON"
    p.write_text('["one", "two"]', encoding="utf-8")
    assert read_prompt_file(p) == (["one", "two"], {})
    p.write_text('{"name": "X", "source": "me", "zoom": 8, "prompts": [" a ", "b"]}', encoding="utf-8")
    assert read_prompt_file(p) == (["a", "b"], {"zoom": 8})


@pytest.mark.parametrize("suffix, content, message", [
    (".txt", "", "holds no prompts"),
    (".txt", "# only a comment\n\n", "holds no prompts"),
    (".json", "{not json", "not valid JSON"),
    (".json", '{"zoom": 2}', 'no "prompts"'),
    (".json", '{"prompts": []}', "holds no prompts"),
    (".json", '{"prompts": "a single string"}', "must be a list"),
    (".json", '{"prompts": ["ok", ""]}', "prompt 2 is empty"),
    (".json", '{"prompts": ["ok", 3]}', "prompt 2 must be a string"),
    (".json", "3", "JSON object"),
])
def test_bad_files_give_one_line_errors(tmp_path, suffix, content, message):
    p = tmp_path / f"bad{suffix}"
    p.write_text(content, encoding="utf-8")
    with pytest.raises(InvalidInputError, match=message) as e:
        read_prompt_file(p)
    assert "\n" not in str(e.value)


def test_unreadable_files(tmp_path):
    with pytest.raises(InvalidInputError, match="does not exist"):
        read_prompt_file(tmp_path / "missing.txt")
    with pytest.raises(InvalidInputError, match="is a folder"):
        read_prompt_file(tmp_path)
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(InvalidInputError, match="not UTF-8"):
        read_prompt_file(tmp_path / "bin.txt")


def test_writing_refuses_what_a_text_file_cannot_hold(tmp_path):
    with pytest.raises(InvalidInputError, match="several lines"):
        write_prompt_file(tmp_path / "a.txt", ["one\ntwo"])
    with pytest.raises(InvalidInputError, match="comment"):
        write_prompt_file(tmp_path / "a.txt", ["#1 hit"])
    with pytest.raises(InvalidInputError, match="no prompts"):
        write_prompt_file(tmp_path / "a.json", [])
    assert not list(tmp_path.iterdir())  # nothing half-written
    write_prompt_file(tmp_path / "a.json", ["one\ntwo", "#1 hit"])  # JSON holds anything
    assert read_prompt_file(tmp_path / "a.json")[0] == ["one\ntwo", "#1 hit"]
    with pytest.raises(InvalidInputError, match="cannot write"):
        write_prompt_file(tmp_path / "no_such_dir" / "a.json", ["x"])


def test_prompts_module_is_torch_free():
    code = ("import sys, core.prompts, core.errors; "
            "bad = [m for m in ('torch', 'numpy', 'PIL', 'diffusers') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
