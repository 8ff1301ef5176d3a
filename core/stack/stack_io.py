"""The zoom-stack folder: one PNG per level plus ``manifest.json``.

This folder is what the Blender side and any other tool consume. The manifest half of this
module is stdlib-only (the add-on validates folders before torch is installed); PNG I/O uses
Pillow and numpy, imported when needed.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import StackFormatError
from ..zoom.geometry import centred_footprint, check_size, check_zoom
from .publish import STACK_FORMAT, make_hidden_dir, publish_dir

if TYPE_CHECKING:
    import numpy as np

FORMAT = STACK_FORMAT  # "p10-zoom-stack"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
REQUIRED_KEYS = ("format", "format_version", "prompts", "zoom", "width", "height",
                 "num_levels", "layers")


def layer_filename(level: int) -> str:
    return f"layer_{level:02d}.png"


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    """Read and validate ``manifest.json``; check every layer file exists.

    Raises StackFormatError with a one-line message naming the problem.
    """
    directory = Path(directory)
    path = directory / MANIFEST
    if not directory.is_dir():
        raise StackFormatError(f"zoom stack folder not found: {directory}")
    if not path.is_file():
        raise StackFormatError(f"{directory} is not a zoom stack: it has no {MANIFEST}")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:  # not "not valid JSON": the file may be fine, just not readable
        raise StackFormatError(f"cannot read {path}: {(exc.strerror or str(exc)).lower()}") from None
    except UnicodeDecodeError as exc:
        raise StackFormatError(f"{path} is not valid JSON ({exc})") from None
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StackFormatError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise StackFormatError(f"{path} must hold a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise StackFormatError(f"{path} lacks the keys: {', '.join(missing)}")
    if manifest["format"] != FORMAT:
        raise StackFormatError(f"{path} has format {manifest['format']!r}, expected {FORMAT!r}")
    version = manifest["format_version"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise StackFormatError(f"{path}: format_version must be a whole number >= 1, got {version!r}")
    if version > FORMAT_VERSION:
        raise StackFormatError(
            f"{path} is format version {manifest['format_version']}; this add-on reads up to "
            f"{FORMAT_VERSION}: update the add-on")
    validate_geometry(manifest, path)
    absent = [name for name in manifest["layers"] if not (directory / name).is_file()]
    if absent:
        raise StackFormatError(
            f"zoom stack {directory} is incomplete: missing {', '.join(absent)}")
    return manifest


def validate_geometry(manifest: dict[str, Any], where: Path) -> None:
    """Prompts, zoom, size and layer list must agree with each other."""
    for key in ("width", "height"):
        value = manifest[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise StackFormatError(f"{where}: {key} must be a whole number of pixels, got {value!r}")
    try:
        zoom = check_zoom(manifest["zoom"])
        check_size(manifest["height"], manifest["width"], zoom)
    except (ValueError, TypeError) as exc:
        raise StackFormatError(f"{where}: {exc}") from None
    n = manifest["num_levels"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise StackFormatError(f"{where}: num_levels must be a positive integer, got {n!r}")
    for key in ("layers", "prompts"):
        value = manifest[key]
        if not isinstance(value, list) or len(value) != n:
            raise StackFormatError(f"{where}: '{key}' must list {n} entries, one per level")
    records = manifest.get("levels")
    if records is not None and (not isinstance(records, list) or len(records) != n
                                or not all(isinstance(r, dict) for r in records)):
        raise StackFormatError(f"{where}: 'levels' must list {n} records, one per level")
    _validate_provenance(manifest, where)
    if any(not isinstance(name, str) or "/" in name or "\\" in name or name.startswith(".")
           for name in manifest["layers"]):
        raise StackFormatError(f"{where}: layer names must be plain file names")
    validate_footprints(manifest, where)


def centred_footprints(height: int, width: int, zoom: int, count: int) -> list[tuple[int, int]]:
    """``count`` centred footprints ``(left, top)``: ((W - W/p)/2, (H - H/p)/2)."""
    return [centred_footprint(height, width, zoom)] * count


def validate_footprints(manifest: dict[str, Any], where: Path) -> None:
    """The optional "loop" (true/false) and "footprints" keys: N-1 ``[left, top]`` entries
    (N with a loop), whole pixels, each W/p x H/p region inside the frame. Missing = centred."""
    loop = manifest.get("loop", False)
    if not isinstance(loop, bool):
        raise StackFormatError(f"{where}: 'loop' must be true or false, got {loop!r}")
    n, w, h, p = manifest["num_levels"], manifest["width"], manifest["height"], int(manifest["zoom"])
    if loop and n < 2:
        raise StackFormatError(f"{where}: a loop needs at least 2 levels, the stack has {n}")
    footprints = manifest.get("footprints")
    if footprints is None:
        return
    count = n if loop else n - 1
    if not isinstance(footprints, list) or len(footprints) != count:
        got = len(footprints) if isinstance(footprints, list) else repr(footprints)
        raise StackFormatError(
            f"{where}: 'footprints' must list {count} [left, top] entries, one per transition"
            f"{' (the last: level 0 inside level ' + str(n - 1) + ')' if loop else ''}, got {got}")
    for i, entry in enumerate(footprints):
        name = f"footprints[{i}] (level {(i + 1) % n} inside level {i})"
        if not isinstance(entry, list) or len(entry) != 2 \
                or any(isinstance(v, bool) or not isinstance(v, int) for v in entry):
            raise StackFormatError(f"{where}: {name} must be [left, top] in whole pixels, got {entry!r}")
        left, top = entry
        if not (0 <= left <= w - w // p and 0 <= top <= h - h // p):
            raise StackFormatError(
                f"{where}: {name} = {entry} puts the {w // p}x{h // p} region outside the "
                f"{w}x{h} frame (left 0..{w - w // p}, top 0..{h - h // p})")


def _whole_or_none(value) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool))


def _validate_provenance(manifest: dict[str, Any], where: Path) -> None:
    """Prompts are text; seeds whole numbers (or null); each level record an object whose
    fields have those types: a hand edit that breaks them is one line, not a TypeError later."""
    for i, text in enumerate(manifest["prompts"]):
        if not isinstance(text, str):
            raise StackFormatError(f"{where}: the prompt of level {i} must be text, got {text!r}")
    for key in ("seed", "sample_width", "sample_height"):
        if not _whole_or_none(manifest.get(key)):
            raise StackFormatError(f"{where}: {key} must be a whole number, got "
                                   f"{manifest[key]!r}")
    for key in ("model", "lora", "scheduler", "negative_prompt", "family", "upscaler"):
        if manifest.get(key) is not None and not isinstance(manifest[key], str):
            raise StackFormatError(f"{where}: {key} must be text, got {manifest[key]!r}")
    for i, record in enumerate(manifest.get("levels") or []):
        if not _whole_or_none(record.get("seed")):
            raise StackFormatError(f"{where}: the seed of level {i} in 'levels' must be a whole "
                                   f"number, got {record['seed']!r}")
        for key in ("prompt", "made_by"):
            if record.get(key) is not None and not isinstance(record[key], str):
                raise StackFormatError(f"{where}: the {key} of level {i} in 'levels' must be "
                                       f"text, got {record[key]!r}")


@dataclass
class ZoomStack:
    """Layers as float32 ``(N, H, W, 3)`` in [0, 1], top row first, plus the manifest.

    Each layer is the image its level shows (Π_image of the stack), so ``render_image`` of the
    layers returns them unchanged.
    """

    layers: "np.ndarray"
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def zoom(self) -> int:
        return int(self.manifest["zoom"])

    @property
    def prompts(self) -> list[str]:
        return list(self.manifest.get("prompts", []))

    @property
    def loop(self) -> bool:
        """A cyclic stack: level 0 is the finer level of level N-1."""
        return bool(self.manifest.get("loop", False))

    @property
    def footprints(self) -> list[tuple[int, int]]:
        """``(left, top)`` of level i+1 inside level i in the PNGs' pixels, N-1 of them (N with
        a loop: the last places level 0 inside level N-1); centred when the manifest has none."""
        n, h, w, _ = self.layers.shape
        given = self.manifest.get("footprints")
        if given is not None:
            return [(int(left), int(top)) for left, top in given]
        return centred_footprints(h, w, self.zoom, n if self.loop else n - 1)

    def full_manifest(self) -> dict[str, Any]:
        """The manifest completed with the geometry and bookkeeping keys."""
        from .. import __version__

        n, h, w, _ = self.layers.shape
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "p10_version": __version__,
            "prompts": [""] * n, "negative_prompt": "", "zoom": 2, "model": None,
            "scheduler": None, "steps": None, "guidance": None, "seed": None, "photo": False,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        manifest.update(self.manifest)
        manifest.update(width=w, height=h, num_levels=n,
                        layers=[layer_filename(i) for i in range(n)])
        return manifest

    def save(self, directory: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the folder atomically: a temporary sibling is filled, then renamed.

        Layers are quantised to 8 bits finest-first, so that the centre block of PNG i is
        exactly round(255 · D_p(PNG i+1 / 255)): the files are zoom-consistent to the bit.
        """
        directory = Path(directory)
        if os.path.lexists(directory) and not overwrite:
            raise StackFormatError(f"{directory} already exists; choose another output folder")
        validate_geometry(self.full_manifest(), directory / MANIFEST)  # before making folders
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = make_hidden_dir(directory.parent, f".{directory.name}.")
        try:
            self.write_files(tmp)
            publish_dir(tmp, directory, replace=overwrite)  # old aside, new in, old deleted
        except FileExistsError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise StackFormatError(f"{directory} already exists; choose another output folder") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return directory

    def write_files(self, folder: str | os.PathLike) -> None:
        """Write the layer PNGs and the manifest into the existing, empty ``folder`` (not atomic:
        ``save`` and the command line call it on a hidden folder they rename into place)."""
        from PIL import Image

        folder = Path(folder)
        manifest = self.full_manifest()
        validate_geometry(manifest, folder / MANIFEST)
        pixels = quantise_consistently(self.layers, int(manifest["zoom"]),
                                       manifest.get("footprints"), manifest.get("loop", False))
        for name, layer in zip(manifest["layers"], pixels):
            Image.fromarray(layer, mode="RGB").save(folder / name)
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        self.manifest = manifest

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "ZoomStack":
        """Read a stack folder; every layer must match the manifest's size."""
        import numpy as np
        from PIL import Image

        from .images import to_float_rgb

        directory = Path(directory)
        manifest = read_manifest(directory)
        layers = []
        for name in manifest["layers"]:
            try:
                with Image.open(directory / name) as im:
                    arr = to_float_rgb(im)  # 16-bit greyscale scaled, not clipped to white
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                raise StackFormatError(f"cannot read {directory / name}: {exc}") from None
            if arr.shape[:2] != (manifest["height"], manifest["width"]):
                raise StackFormatError(
                    f"{directory / name} is {arr.shape[1]}x{arr.shape[0]} pixels, the manifest "
                    f"says {manifest['width']}x{manifest['height']}")
            layers.append(arr)
        return cls(np.stack(layers), manifest)


#: Passes of the finest-first quantisation around a loop (each pass shrinks the region the
#: wrap changes by p^N; in practice the second pass finds nothing left to change).
LOOP_QUANTISE_PASSES = 8


def quantise_consistently(layers: "np.ndarray", zoom: int, footprints=None,
                          loop: bool = False) -> "np.ndarray":
    """8-bit layers ``(N, H, W, 3)`` whose footprints are the rounded D_p of the next finer PNG.

    Finest-first (each level needs the quantised finer one): N-1 small downsamples.
    ``footprints``: ``(left, top)`` of level i+1 inside level i (None: centred). With ``loop``
    level N-1's footprint holds D_p of PNG 0, which depends on PNG N-1 again: the finest-first
    pass is repeated until nothing changes (``LOOP_QUANTISE_PASSES`` at most).
    """
    import numpy as np
    import torch

    from ..zoom.zoom_stack import downsample

    n, h, w, _ = layers.shape
    ch, cw = h // zoom, w // zoom
    count = n if loop else n - 1
    boxes = list(footprints) if footprints is not None else centred_footprints(h, w, zoom, count)

    def with_finer(i: int, finer_u8: "np.ndarray") -> "np.ndarray":
        finer = torch.from_numpy(finer_u8.astype(np.float32) / 255.0).permute(2, 0, 1)
        left, top = boxes[i]
        level = np.array(layers[i], dtype=np.float32)
        level[top:top + ch, left:left + cw] = downsample(finer, zoom).permute(1, 2, 0).numpy()
        return np.clip(np.rint(level * 255.0), 0, 255).astype(np.uint8)

    out = np.empty(layers.shape, dtype=np.uint8)
    out[-1] = np.clip(np.rint(layers[-1] * 255.0), 0, 255)
    for _ in range(LOOP_QUANTISE_PASSES if loop else 1):
        before = out.copy() if loop else None
        for i in range(n - 2, -1, -1):
            out[i] = with_finer(i, out[i + 1])
        if not loop:
            break
        out[-1] = with_finer(n - 1, out[0])  # the wrap: level 0 inside level N-1
        if np.array_equal(out, before):
            break
    return out
