"""Headless command line: ``python -m core generate|extend|regenerate|video|examples|models|check-model``.

Exit codes: 0 done, 1 user error (one line on stderr, no traceback), 130 cancelled (Ctrl-C),
143 terminated (SIGTERM). Output is all-or-nothing: the stack folder (and its preview video) is
assembled in a hidden sibling, made before the model loads, and renamed into place only when
complete (core.publish). Every fault and what the user sees: docs/faults.md.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import Cancelled, P10Error, WriteError, is_out_of_memory
from ..signals import Terminated, sigterm_raises, signals_deferred

EXIT_OK, EXIT_ERROR, EXIT_CANCELLED, EXIT_TERMINATED = 0, 1, 130, 143
PREVIEW_NAME = "preview.mp4"


class UsageError(P10Error):
    """Bad command-line usage (argparse's complaints, conflicting options)."""


class _Parser(argparse.ArgumentParser):
    # argparse prints the whole usage and exits 2; we want one line and exit code 1.
    def error(self, message: str):
        raise UsageError(f"{message} (see {self.prog} --help)")


# ------------------------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    from ..settings import SCHEDULER_CHOICES

    parser = _Parser(prog="python -m core", description="Powers of Ten: generate semantic-zoom "
                     "stacks from one prompt per zoom level (Generative Powers of Ten, CVPR 2024).")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    g = sub.add_parser("generate", help="generate a zoom stack folder (and optionally its video)",
                       description="Generate a zoom stack. Options given here override the "
                       "settings of a JSON prompt file.")
    src = g.add_argument_group("prompts (outermost zoom level first)")
    src.add_argument("--prompt", action="append", metavar="TEXT",
                     help="the prompt of one zoom level; repeat it, outermost first")
    src.add_argument("--prompts", metavar="FILE",
                     help="a .txt file (one prompt per line), a .json file (prompts + settings) "
                     "or the name of a bundled example (see `python -m core examples`)")
    s = g.add_argument_group("settings")
    _settings_options(s, SCHEDULER_CHOICES)
    s.add_argument("--photo", metavar="IMG", help="a photo one level must show exactly (photo zoom)")
    s.add_argument("--photo-level", type=int, metavar="K", help="the photo's level: 0 = outermost "
                   "(default: zoom into the photo), -1 = finest (zoom out of it)")
    _target_options(s, "every transition")
    s.add_argument("--loop", action="store_true", default=None,
                   help="a seamless loop: the finest level zooms back into the first (a cycle)")
    o = g.add_argument_group("output")
    o.add_argument("--out", metavar="DIR", help="the stack folder to create (required unless --dry-run)")
    o.add_argument("--force", action="store_true", help="replace DIR if it exists")
    o.add_argument("--video", action="store_true", help=f"also write DIR/{PREVIEW_NAME}")
    _video_options(o)
    g.add_argument("--dry-run", action="store_true",
                   help="print the memory/time estimate and the micro-batch; load and write nothing")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    e = sub.add_parser("extend", help="add levels to a stack folder (deeper, or wider with --outward)",
                       description="Extend a zoom stack: new levels beyond its finest one (or, with "
                       "--outward, in front of its outermost one), sampled in windows whose "
                       "overlapping old levels are known. The old levels stay unchanged.")
    e.add_argument("stack", metavar="STACK", help="the stack folder to extend")
    src = e.add_argument_group("new prompts (outermost first)")
    src.add_argument("--prompt", action="append", metavar="TEXT", help="one new level; repeat it")
    src.add_argument("--prompts", metavar="FILE", help="a .txt or .json prompt file of new levels")
    x = e.add_argument_group("extension")
    x.add_argument("--outward", action="store_true", help="add coarser levels in front (zoom out)")
    x.add_argument("--overlap", type=int, default=2, metavar="K",
                   help="known old levels in every window (default 2)")
    x.add_argument("--window", type=int, metavar="W",
                   help="levels sampled at once (default 4): sets the peak memory")
    _target_options(x, "every new transition (outward too); the stack's own footprints are kept")
    _settings_options(e.add_argument_group("settings (default: the stack's)"), SCHEDULER_CHOICES)
    _stack_output_options(e)

    r = sub.add_parser("regenerate", help="re-sample some levels of a stack folder",
                       description="Re-sample levels of a zoom stack with every other level known.")
    r.add_argument("stack", metavar="STACK", help="the stack folder")
    r.add_argument("--level", type=int, action="append", required=True, metavar="K",
                   help="a level to re-sample (0 = outermost, -1 = finest); repeat for several")
    r.add_argument("--prompt", action="append", metavar="TEXT",
                   help="a new prompt for that level (one per --level; default: the stack's)")
    _settings_options(r.add_argument_group("settings (default: the stack's)"), SCHEDULER_CHOICES)
    _stack_output_options(r)

    v = sub.add_parser("video", help="(re)render a stack folder's zoom video",
                       description="Render the continuous zoom through a stack folder as an H.264 MP4.")
    v.add_argument("stack", metavar="DIR", help="a zoom stack folder")
    v.add_argument("--out", metavar="FILE", help=f"the .mp4 to write (default DIR/{PREVIEW_NAME})")
    _video_options(v)
    v.add_argument("--quiet", action="store_true", help="no progress bar")
    v.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    sub.add_parser("examples", help="list the bundled example prompt sequences from the paper")
    from .models_cmd import add_models_parser

    add_models_parser(sub)
    from .check_model import add_check_parser

    add_check_parser(sub)
    return parser


def _settings_options(s, schedulers) -> None:
    """Model and sampling options shared by generate, extend and regenerate."""
    s.add_argument("--zoom", type=int, metavar="P", help="relative zoom between levels: a power of two, 2, 4, 8, 16 ... (default 2)")
    s.add_argument("--model", metavar="ID_OR_PATH", help="hub id, model folder or .safetensors file")
    s.add_argument("--steps", type=int, metavar="N", help="denoising steps (default: the scheduler's)")
    s.add_argument("--guidance", type=float, metavar="G", help="classifier-free guidance scale "
                   "(default: 7.5; 1 = none for LCM/Turbo models; <= 1 turns guidance off)")
    s.add_argument("--seed", type=int, metavar="S", help="random seed (default 0)")
    s.add_argument("--size", type=int, metavar="PX", help="width and height in pixels (default: the model's)")
    s.add_argument("--width", type=int, metavar="PX", help="width in pixels")
    s.add_argument("--height", type=int, metavar="PX", help="height in pixels")
    s.add_argument("--scheduler", metavar="NAME", help=f"one of {', '.join(schedulers)} "
                   "(default auto: the model's best; lcm for LCM, LCM-LoRA and Turbo models)")
    s.add_argument("--lora", metavar="ID_OR_FILE", help="a LoRA to load into the model (hub id, "
                   "folder or .safetensors), e.g. LCM-LoRA: then lcm, 8 steps, no guidance")
    s.add_argument("--negative-prompt", metavar="TEXT", help="what no level should show")
    s.add_argument("--device", metavar="DEV", help="auto (default), cpu, cuda, cuda:N or mps")
    s.add_argument("--micro-batch", type=int, metavar="K",
                   help="UNet rows per model call (default: the largest that fits; same result)")
    s.add_argument("--family", metavar="NAME", help="force the model family: sd, sdxl, if, sd3 or flux")
    s.add_argument("--upscale", nargs="?", const="4", metavar="F",
                   help="output size / sampled size: 1, 4 (alone: 4) or 16 (DeepFloyd IF only); "
                   "every x4 stage is sampled jointly (default: IF 4, SD/SDXL 1)")
    s.add_argument("--upscaler", metavar="ID[,ID]",
                   help="models of the x4 stages, comma-separated (IF: stage II, then the x4 "
                   "upscaler; SD/SDXL: stabilityai/stable-diffusion-x4-upscaler), or 'none'")
    s.add_argument("--pixel-blend", type=float, metavar="FRAC",
                   help="latent models: blend decoded pixels (decode, blend, encode) for the last "
                   "FRAC of the timesteps (default 0: latents only)")


def _stack_output_options(g) -> None:
    """Output options of extend and regenerate (a new stack folder, as for generate)."""
    o = g.add_argument_group("output")
    o.add_argument("--out", required=True, metavar="DIR", help="the stack folder to create")
    o.add_argument("--force", action="store_true", help="replace DIR if it exists")
    o.add_argument("--video", action="store_true", help=f"also write DIR/{PREVIEW_NAME}")
    _video_options(o)
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def _target_options(group, which: str) -> None:
    group.add_argument("--target", metavar="X,Y", help="where the next level sits, as fractions of "
                       f"the frame (0,0 top-left; 0.5,0.5 the centre, the default), for {which}")
    group.add_argument("--targets", metavar="FILE", help="a JSON list of [x, y] targets, one per "
                       "transition (level i+1 inside level i)")


def targets_from_args(args: argparse.Namespace, default=None):
    """The ``targets`` of ``--target X,Y`` / ``--targets FILE`` (``default`` when neither)."""
    import json

    if args.target and args.targets:
        raise UsageError("give either --target X,Y or --targets FILE, not both")
    if args.target:
        try:
            x, y = (float(v) for v in args.target.split(","))
        except ValueError:
            raise UsageError(f"--target must be X,Y (two fractions of the frame, e.g. 0.3,0.6), "
                             f"got {args.target!r}") from None
        return [[x, y]]
    if args.targets:
        path = Path(args.targets).expanduser()
        try:
            return json.loads(path.read_text(encoding="utf-8-sig"))
        except FileNotFoundError:
            raise UsageError(f"targets file {str(path)!r} does not exist") from None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise UsageError(f"targets file {str(path)!r} is not a JSON list of [x, y] pairs "
                             f"({_one_line(exc)})") from None
    return default


def _video_options(group) -> None:
    group.add_argument("--frames-per-level", type=int, default=24, metavar="F",
                       help="frames per zoom level (default 24)")
    group.add_argument("--fps", type=float, default=24.0, help="frames per second (default 24)")
    group.add_argument("--video-size", type=int, metavar="PX", help="longer side of the video (default: the stack's)")
    group.add_argument("--direction", choices=("in", "out"), default="in", help="zoom in (default) or out")
    group.add_argument("--loops", type=int, default=1, metavar="K",
                       help="a looping stack: play the cycle K times (default 1; N levels per loop)")


# ---------------------------------------------------------------------------------- settings
_OVERRIDES = ("zoom", "model", "steps", "guidance", "seed", "width", "height", "scheduler", "loop",
              "negative_prompt", "photo", "photo_level", "device", "micro_batch", "family",
              "upscaler", "upscale", "pixel_blend", "lora")


def _read_prompts_source(source: str) -> tuple[list[str], dict]:
    from ..prompts import list_examples, load_example, read_prompt_file

    path = Path(source).expanduser()
    if not path.exists() and source.strip().lower().replace("-", "_").replace(" ", "_") in list_examples():
        return load_example(source)
    prompts, settings = read_prompt_file(path)
    photo = settings.get("photo")
    if isinstance(photo, str) and photo and not Path(photo).expanduser().is_absolute():
        # A photo named in a prompt file is relative to that file, not to the shell's folder.
        settings["photo"] = str((path.parent / photo).resolve())
    return prompts, settings


def settings_from_args(args: argparse.Namespace, warn: Callable[[str], None] | None = None):
    """GenerateSettings from parsed ``generate`` arguments: prompt file first, options on top."""
    from ..settings import GenerateSettings

    if args.prompt and args.prompts:
        raise UsageError("give prompts either with --prompt (repeated) or with --prompts FILE, not both")
    if args.size is not None and (args.width is not None or args.height is not None):
        raise UsageError("give either --size or --width/--height, not both")
    if args.prompts:
        prompts, data = _read_prompts_source(args.prompts)
    elif args.prompt:
        prompts, data = list(args.prompt), {}
    else:
        raise UsageError("no prompts: give --prompt TEXT (once per zoom level) or --prompts FILE")
    if args.size is not None:
        args.width = args.height = args.size
    if args.photo_level is not None and not (args.photo or data.get("photo")):
        raise UsageError("--photo-level needs --photo IMG")
    data = dict(data, **{k: getattr(args, k) for k in _OVERRIDES if getattr(args, k) is not None})
    data["prompts"] = prompts
    targets = targets_from_args(args)
    if targets is not None:
        data["targets"] = targets
    settings = GenerateSettings.from_dict(data)
    if settings.extra and warn is not None:
        warn(f"ignoring unknown setting(s) {', '.join(sorted(map(str, settings.extra)))}")
    return settings.validate()


# -------------------------------------------------------------------------------- progress
class _Progress:
    """tqdm bar on stderr, one per phase (loading, sampling, decoding...)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None
        self.phase = None
        self.lock = threading.Lock()

    def __call__(self, phase: str, step: int, total: int, preview: Any = None) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        with self.lock:
            if phase != self.phase or self.bar is None:
                self.close()
                self.phase = phase
                unit = dict(unit="B", unit_scale=True) if phase == "downloading" else dict(unit="step")
                self.bar = tqdm(total=total or None, desc=str(phase), file=sys.stderr,
                                dynamic_ncols=True, leave=False, **unit)
            if total and self.bar.total != total:
                self.bar.total = total
            self.bar.n = step
            self.bar.refresh()

    def frames(self, n: int, total: int) -> None:
        self("video", n, total)

    def stop(self) -> None:
        """Close the bar and draw no more (the job is being cancelled)."""
        self.enabled = False
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _load_generate() -> Callable:
    """The generator (a seam for tests, and a lazy import: torch loads only when needed)."""
    from ..generate import generate
    return generate


_abandoned: list[threading.Thread] = []  # workers left running after a second Ctrl-C


def abandoned_work() -> bool:
    """True when a second Ctrl-C left a worker thread computing (``__main__`` then hard-exits:
    finalising the interpreter under a running torch thread aborts the process)."""
    return any(t.is_alive() for t in _abandoned)


def _run_cancellable(fn: Callable[[threading.Event], Any], on_interrupt: Callable[[], None]) -> Any:
    """Run ``fn(cancel)`` in a worker thread; Ctrl-C sets ``cancel`` and waits for ``fn`` to stop.

    In the main thread a SIGINT handler replaces KeyboardInterrupt for the run: the first Ctrl-C
    only sets ``cancel`` (the job stops at its next check, once per denoising step) and a second
    one abandons the job. Waiting uses an Event, not Thread.join: a KeyboardInterrupt inside
    join() can make a live thread look finished (CPython issue 90882).
    """
    cancel, done = threading.Event(), threading.Event()
    box: dict[str, Any] = {}

    def work():
        try:
            box["result"] = fn(cancel)
        except BaseException as e:  # handed to the main thread below
            box["error"] = e
        finally:
            done.set()

    def on_sigint(signum, frame):
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        on_interrupt()

    t = threading.Thread(target=work, name="p10-generate", daemon=True)
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_sigint) if in_main else None
    try:
        t.start()
        while not done.wait(0.1):
            pass
    except KeyboardInterrupt as exc:
        if not done.is_set():
            cancel.set()
            _abandoned.append(t)
        if isinstance(exc, Terminated):  # SIGTERM: stop now, like a second Ctrl-C
            raise
        raise Cancelled("cancelled") from None
    finally:
        if in_main:
            signal.signal(signal.SIGINT, previous)
    if "error" in box:
        raise box["error"]
    if cancel.is_set():
        raise Cancelled("cancelled")
    return box["result"]


# -------------------------------------------------------------------------------- commands
def _say(msg: str) -> None:
    if not _DISTRIBUTED.get("quiet"):  # under torchrun only rank 0 speaks
        print(msg, file=sys.stderr, flush=True)


#: {"quiet": bool}: set by main() for ranks other than 0 of a torchrun run
_DISTRIBUTED: dict = {}

#: commands that sample, and so may run as one zoom over several processes (torchrun)
SAMPLING_COMMANDS = ("generate", "extend", "regenerate")


def _start_distributed(command: str) -> bool:
    """Join torchrun's process group for a sampling command; True when this is rank 0 (or
    there is no group). Ranks other than 0 then print nothing and write nothing."""
    if command not in SAMPLING_COMMANDS or os.environ.get("WORLD_SIZE", "1").strip() in ("", "1"):
        return True  # not under torchrun: import no torch (``--dry-run`` stays torch-free)
    from ..backends import distributed

    if not distributed.requested():
        return True
    distributed.init()
    main = distributed.is_main()
    _DISTRIBUTED["quiet"] = not main
    return main


def _cmd_generate(args: argparse.Namespace) -> int:
    from ..settings import family_hint, output_size

    settings = settings_from_args(args, warn=lambda m: _say(f"warning: {m}"))
    if args.dry_run:  # torch-free: nothing is loaded, downloaded or written
        from ..models.estimate import estimate

        for line in estimate(settings).lines():
            print(line)
        return EXIT_OK
    if not args.out:
        raise UsageError("give the stack folder to create with --out DIR (or use --dry-run)")
    h, w = output_size(settings.family or family_hint(settings.model), settings.width,
                       settings.height, settings.upscaler, settings.upscale)
    return _run_and_publish(
        args, len(settings.prompts) * h * w * 3, (h, w),
        lambda: (lambda cancel, progress: _load_generate()(settings, progress=progress, cancel=cancel)),
        loop=settings.loop)


def _run_and_publish(args: argparse.Namespace, needed_bytes: int, frame: tuple[int, int],
                     make_job: Callable, loop: bool = False) -> int:
    """Run the job ``make_job()`` returns (``job(cancel, progress) -> ZoomStack``) cancellably
    and publish its stack (and video) at ``args.out``, all or nothing. ``frame``: the stack's
    (height, width), for the video options' check; ``loop``: whether the stack made will loop
    (``--loops`` needs one)."""
    from ..stack.preview import check_video_options, write_preview_video
    from ..stack.publish import StagedFolder

    if args.video:  # check the video options before the long run, not after it
        check_video_options(args.frames_per_level, args.fps, args.video_size, args.direction, frame,
                            loops=args.loops, loop=loop)
    if _DISTRIBUTED.get("quiet"):  # torchrun, rank > 0: sample alongside rank 0, write nothing
        make_job()(threading.Event(), _Progress(enabled=False))
        return EXIT_OK
    # The output folder is checked and its hidden sibling made before the model loads.
    with StagedFolder(args.out, replace=args.force, needed_bytes=needed_bytes) as staged:
        job = make_job()
        progress = _Progress(enabled=not args.quiet)
        problems = []
        try:
            stack = _run_cancellable(
                lambda cancel: job(cancel, progress),
                on_interrupt=lambda: (progress.stop(), _say("cancelling... (Ctrl-C again to quit at once)")))
            progress.close()
            try:
                stack.write_files(staged.path)
            except OSError as exc:
                raise WriteError(f"could not write the stack: {exc.strerror or exc}") from None
            if args.video:
                try:
                    write_preview_video(stack, staged.path / PREVIEW_NAME, args.frames_per_level,
                                        args.fps, args.video_size, direction=args.direction,
                                        progress=progress.frames, loops=args.loops)
                except Cancelled:
                    raise
                except Exception as exc:  # keep the stack: minutes of sampling outweigh a video
                    problems.append(f"the video failed ({_one_line(exc)}); the stack was kept "
                                    f"without it: retry with `python -m core video`")
        finally:
            progress.close()
        with signals_deferred():  # Ctrl-C / SIGTERM wait for the renames to finish
            out = staged.publish()
    if out != staged.target:
        problems.insert(0, f"{staged.target} appeared during the run; this run's stack was "
                           f"saved to {out} instead")
    print(out)
    if args.video and not problems:
        print(out / PREVIEW_NAME)
    if problems:
        _say(f"error: {'; '.join(problems)}")
        return EXIT_ERROR
    return EXIT_OK


def _load_known_levels() -> tuple[Callable, Callable]:
    """``(extend, regenerate)`` of core.extend (a seam for tests; torch loads only when run)."""
    from ..extend import extend, regenerate
    return extend, regenerate


def _stack_options(args: argparse.Namespace) -> dict:
    if args.size is not None and (args.width is not None or args.height is not None):
        raise UsageError("give either --size or --width/--height, not both")
    if args.size is not None:
        args.width = args.height = args.size
    keys = ("zoom", "model", "steps", "guidance", "width", "height", "scheduler", "negative_prompt",
            "device", "micro_batch", "family", "upscaler", "upscale", "pixel_blend", "lora")
    return {k: getattr(args, k) for k in keys if getattr(args, k) is not None}


def _file_options(data: dict, source: str, stack) -> dict:
    """A prompt file's settings as extend options (the command line's win): the sampling ones
    and the seed are used, model / zoom / size checked against the stack's, ``targets`` go
    with the new levels; a setting that cannot apply to new levels (a photo, another loop) is
    refused rather than silently dropped."""
    from ..extend import SAMPLING_OPTIONS

    if "loop" in data and bool(data["loop"]) != bool(stack.loop):
        raise UsageError(f"the prompt file {source} sets loop {data['loop']!r}; the stack's is "
                         f"{bool(stack.loop)} and extend keeps it")
    usable = set(SAMPLING_OPTIONS) | {"seed", "targets", "loop"}
    foreign = sorted(str(k) for k in data if k not in usable)
    if foreign:
        raise UsageError(f"the prompt file {source} sets {', '.join(foreign)}, which extend cannot "
                         "use; remove it or give the prompts with --prompt")
    return {k: v for k, v in data.items() if v is not None and k not in ("targets", "loop")}


def _stack_bytes(stack, levels: int) -> int:
    _, h, w, _ = stack.layers.shape
    return levels * h * w * 3


def _cmd_extend(args: argparse.Namespace) -> int:
    from ..extend import check_extend
    from ..stack.stack_io import ZoomStack

    if args.prompt and args.prompts:
        raise UsageError("give prompts either with --prompt (repeated) or with --prompts FILE, not both")
    file_settings: dict = {}
    options: dict = {}
    stack = ZoomStack.load(Path(args.stack).expanduser())
    if args.prompts:
        prompts, file_settings = _read_prompts_source(args.prompts)
        options = _file_options(file_settings, args.prompts, stack)
    else:
        prompts = list(args.prompt or [])
    options.update(_stack_options(args))
    seed = args.seed if args.seed is not None else options.pop("seed", None)
    options.pop("seed", None)
    kw = dict(outward=args.outward, overlap=args.overlap, window=args.window, seed=seed,
              targets=targets_from_args(args, file_settings.get("targets")), **options)
    check_extend(stack, prompts, **kw)  # everything that can fail before a model loads
    return _run_and_publish(
        args, _stack_bytes(stack, len(stack.layers) + len(prompts)), stack.layers.shape[1:3],
        lambda: (lambda cancel, progress: _load_known_levels()[0](
            stack, prompts, progress=progress, cancel=cancel, **kw)), loop=stack.loop)


def _cmd_regenerate(args: argparse.Namespace) -> int:
    from ..extend import check_regenerate
    from ..stack.stack_io import ZoomStack

    options = _stack_options(args)
    stack = ZoomStack.load(Path(args.stack).expanduser())
    check_regenerate(stack, args.level, args.prompt, seed=args.seed, **options)
    return _run_and_publish(
        args, _stack_bytes(stack, len(stack.layers)), stack.layers.shape[1:3],
        lambda: (lambda cancel, progress: _load_known_levels()[1](
            stack, args.level, args.prompt, seed=args.seed, progress=progress, cancel=cancel,
            **options)), loop=stack.loop)


def _cmd_video(args: argparse.Namespace) -> int:
    from ..stack.preview import write_preview_video
    from ..stack.stack_io import ZoomStack

    stack = ZoomStack.load(Path(args.stack).expanduser())
    out = Path(args.out).expanduser() if args.out else Path(args.stack).expanduser() / PREVIEW_NAME
    progress = _Progress(enabled=not args.quiet)
    try:
        write_preview_video(stack, out, args.frames_per_level, args.fps, args.video_size,
                            direction=args.direction, progress=progress.frames, loops=args.loops)
    finally:
        progress.close()
    print(out)
    return EXIT_OK


def _cmd_examples(args: argparse.Namespace) -> int:
    from ..prompts import example_info, list_examples

    for name in list_examples():
        info = example_info(name)
        print(f"{name:15s} p={info['zoom']}  {info['num_levels']:2d} levels  {info['source']}")
    return EXIT_OK


def _cmd_models(args: argparse.Namespace) -> int:
    from .models_cmd import run_models

    return run_models(args, _run_cancellable, _Progress, _say, UsageError)


def _cmd_check_model(args: argparse.Namespace) -> int:
    from .check_model import run_check

    return run_check(args, _run_cancellable)


COMMANDS = {"generate": _cmd_generate, "extend": _cmd_extend, "regenerate": _cmd_regenerate,
            "video": _cmd_video, "examples": _cmd_examples, "models": _cmd_models,
            "check-model": _cmd_check_model}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (never raises for user errors or Ctrl-C)."""
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    for stream in (sys.stdout, sys.stderr):
        # A console that cannot show a character (PYTHONIOENCODING=ascii, a Windows code page)
        # gets it escaped: printing a non-ASCII path must not turn a finished run into a failure.
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError, OSError):
            pass
    try:
        with sigterm_raises():  # SIGTERM cleans up like Ctrl-C (default: die, leaving temp files)
            args = build_parser().parse_args(argv)
            if args.command is None:
                raise UsageError("choose a command: generate, extend, regenerate, video, examples "
                                 "or models")
            _start_distributed(args.command)
            return COMMANDS[args.command](args)
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else EXIT_OK
    except Terminated as e:
        if _DISTRIBUTED:  # torchrun stops every rank when one of them fails or is killed
            _say("stopped: a process of this torchrun run failed or was stopped (its own "
                 "output says why); nothing was written")
        else:
            _say("terminated; nothing was written")
        return 128 + getattr(e, "signum", 15)  # 143 (SIGTERM), 129 (SIGHUP)
    except (Cancelled, KeyboardInterrupt):
        _say("cancelled; nothing was written")
        return EXIT_CANCELLED
    except P10Error as e:
        _say(f"error: {_one_line(e)}")
        return EXIT_ERROR
    except Exception as e:  # a bug, or an error a dependency raised: still one line by default
        if debug:
            raise
        if is_out_of_memory(e):  # e.g. writing the layers or the video of a very large stack
            _say("error: out of memory: use fewer levels or a smaller --size / --video-size")
            return EXIT_ERROR
        _say(f"error: {type(e).__name__}: {_one_line(e)} (rerun with --debug for details)")
        return EXIT_ERROR
    finally:
        if _DISTRIBUTED:
            from ..backends import distributed
            distributed.shutdown()
            _DISTRIBUTED.clear()


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__
