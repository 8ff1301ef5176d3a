"""Prompt files and the paper's example sequences. Standard library only (the add-on imports it).

Two formats, chosen by the file name's suffix:

* ``.json``: ``{"zoom": 2, "prompts": ["outermost", ..., "innermost"], ...}``. Every key other
  than ``prompts`` is a :class:`core.settings.GenerateSettings` field (``zoom``, ``steps``,
  ``seed``...), except the descriptive keys in :data:`METADATA_KEYS` (``name``, ``source``...),
  which are kept out of the settings. ``"targets": [[x, y], ...]`` (one per transition, or one
  for all) and ``"loop": true`` place the levels off-centre and close the cycle.
* anything else, e.g. ``.txt``: one prompt per line, outermost first. Blank lines and lines
  whose first non-blank character is ``#`` are ignored. A text file holds prompts only; when
  written, the settings go in as ``#`` comment lines for the reader's benefit and are not read
  back.

The settings are returned as a plain dict and are checked by ``GenerateSettings.validate``,
not here: this module only checks the file's shape.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from .errors import InvalidInputError
from .stack.publish import make_hidden_file

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"

# Descriptive keys a JSON prompt file may carry that are not generation settings.
METADATA_KEYS = ("name", "source", "description", "notes")

_MAX_BYTES = 4 * 1024 * 1024  # a prompt file is text; refuse to slurp something huge by mistake


def _is_json(path: Path) -> bool:
    return path.suffix.lower() == ".json"


def _read_text(path: Path) -> str:
    try:
        if path.is_dir():
            raise InvalidInputError(f"prompt file {str(path)!r} is a folder, not a file")
        if path.stat().st_size > _MAX_BYTES:
            raise InvalidInputError(f"prompt file {str(path)!r} is too large to be a prompt file")
        # utf-8-sig: editors on Windows like to prepend a byte-order mark.
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InvalidInputError(f"prompt file {str(path)!r} does not exist") from None
    except UnicodeDecodeError:
        raise InvalidInputError(f"prompt file {str(path)!r} is not UTF-8 text") from None
    except OSError as e:
        raise InvalidInputError(f"cannot read prompt file {str(path)!r}: {e.strerror or e}") from None


def check_prompts(prompts: Any, where: str = "prompts") -> list[str]:
    """Return ``prompts`` as a list of stripped, non-empty strings, or raise InvalidInputError."""
    if isinstance(prompts, str) or not isinstance(prompts, Sequence):
        raise InvalidInputError(f"{where} must be a list of strings, one per zoom level")
    out = []
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise InvalidInputError(f"{where}: prompt {i + 1} must be a string, got {type(p).__name__}")
        p = p.strip()
        if not p:
            raise InvalidInputError(f"{where}: prompt {i + 1} is empty")
        out.append(p)
    if not out:
        raise InvalidInputError(f"{where} holds no prompts")
    return out


def parse_prompt_text(text: str, where: str = "prompt text") -> list[str]:
    """Prompts of a text file's contents: one per line, skipping blank and ``#`` lines."""
    prompts = [ln.strip() for ln in text.splitlines()]
    prompts = [p for p in prompts if p and not p.startswith("#")]
    if not prompts:
        raise InvalidInputError(f"{where} holds no prompts (one prompt per line, outermost first)")
    return prompts


def parse_prompt_json(text: str, where: str = "prompt JSON") -> tuple[list[str], dict]:
    """``(prompts, settings)`` of a JSON prompt document's text."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidInputError(f"{where} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    if isinstance(doc, list):  # a bare list of prompts is accepted too
        doc = {"prompts": doc}
    if not isinstance(doc, dict):
        raise InvalidInputError(f"{where} must hold a JSON object with a \"prompts\" list")
    if "prompts" not in doc:
        raise InvalidInputError(f"{where} has no \"prompts\" list")
    prompts = check_prompts(doc["prompts"], where)
    settings = {k: v for k, v in doc.items() if k != "prompts" and k not in METADATA_KEYS}
    return prompts, settings


def read_prompt_file(path: str | os.PathLike) -> tuple[list[str], dict]:
    """Read a prompt file: ``(prompts outermost first, settings dict)`` (settings are ``{}`` for text)."""
    path = Path(path)
    text = _read_text(path)
    where = f"prompt file {str(path)!r}"
    if _is_json(path):
        return parse_prompt_json(text, where)
    return parse_prompt_text(text, where), {}


def format_prompt_file(prompts: Sequence[str], settings: Mapping[str, Any] | None = None,
                       *, as_json: bool = True) -> str:
    """The text :func:`write_prompt_file` writes (JSON, or one prompt per line)."""
    prompts = check_prompts(list(prompts))
    settings = {k: v for k, v in (settings or {}).items() if k != "prompts"}
    if as_json:
        # default=str: a pathlib.Path (e.g. the photo) is written as its string.
        return json.dumps({**settings, "prompts": prompts}, indent=2, ensure_ascii=False, default=str) + "\n"
    for i, p in enumerate(prompts):
        if "\n" in p or "\r" in p:
            raise InvalidInputError(f"prompt {i + 1} spans several lines; save it as a .json file instead")
        if p.startswith("#"):
            raise InvalidInputError(f"prompt {i + 1} starts with '#', which a text file reads as a comment; "
                                    "save it as a .json file instead")
    head = ["# Powers of Ten prompts: one per line, outermost zoom level first."]
    head += [f"# {k}: {json.dumps(v, ensure_ascii=False, default=str)}" for k, v in settings.items()]
    return "\n".join(head + prompts) + "\n"


def write_prompt_file(path: str | os.PathLike, prompts: Sequence[str],
                      settings: Mapping[str, Any] | None = None) -> Path:
    """Write prompts (and, for ``.json``, settings) atomically; returns the path written."""
    path = Path(path)
    text = format_prompt_file(prompts, settings, as_json=_is_json(path))
    parent = path.parent if str(path.parent) else Path(".")
    try:
        # Write a sibling temp file and rename it over the target: never a half-written file.
        tmp = make_hidden_file(parent, f".{path.name}.", ".tmp")  # the umask's mode, not 0600
        try:
            with open(tmp, "w", encoding="utf-8", newline="\n") as f:
                f.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as e:
        raise InvalidInputError(f"cannot write prompt file {str(path)!r}: {e.strerror or e}") from None
    return path


# ------------------------------------------------------------------------------------ examples
def _example_key(name: str) -> str:
    return str(name).strip().lower().replace(" ", "_").replace("-", "_")


def list_examples() -> list[str]:
    """Names of the bundled example sequences (file stems of ``core/examples/*.json``), sorted."""
    return sorted(p.stem for p in EXAMPLES_DIR.glob("*.json"))


def example_path(name: str) -> Path:
    """Path of an example's JSON file; ``name`` is case-, space- and hyphen-insensitive."""
    key = _example_key(name)
    if key not in list_examples():
        raise InvalidInputError(f"unknown example {name!r}; choose one of: {', '.join(list_examples())}")
    return EXAMPLES_DIR / f"{key}.json"


def load_example(name: str) -> tuple[list[str], dict]:
    """``(prompts, settings)`` of an example; the settings hold at least the paper's ``zoom``."""
    return read_prompt_file(example_path(name))


def example_info(name: str) -> dict:
    """Display metadata of an example: ``name`` (title), ``source`` (where in the paper), ``zoom``,
    ``num_levels``."""
    doc = json.loads(example_path(name).read_text(encoding="utf-8"))
    return {"name": doc.get("name", name), "source": doc.get("source", ""),
            "zoom": doc["zoom"], "num_levels": len(doc["prompts"])}
