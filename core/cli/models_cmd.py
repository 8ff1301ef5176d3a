"""``python -m core models list|download ID|remove ID`` (see docs/cli.md). Torch-free."""

from __future__ import annotations

import argparse
import json
import sys

from ..models import downloads, cache as models

EXIT_OK = 0


def add_models_parser(sub) -> None:
    m = sub.add_parser("models", help="list, download or remove models in the Hugging Face cache",
                       description="Models the add-on can use: the Hugging Face cache "
                       "(HF_HOME / HF_HUB_CACHE) and local folders/files.")
    msub = m.add_subparsers(dest="models_command", metavar="ACTION", parser_class=sub._parser_class)
    ls = msub.add_parser("list", help="the usable models: family, size on disk, complete or not")
    ls.add_argument("--local", action="append", default=[], metavar="PATH",
                    help="also describe this model folder or .safetensors file (repeatable)")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    dl = msub.add_parser("download", help="download a hub model (resumes an interrupted download)")
    dl.add_argument("repo_id", metavar="ID", help="hub id, e.g. stabilityai/stable-diffusion-2-1-base")
    dl.add_argument("--quiet", action="store_true", help="no progress bar")
    rm = msub.add_parser("remove", help="delete a model from the Hugging Face cache")
    rm.add_argument("repo_id", metavar="ID")
    rm.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    for p in (m, ls, dl, rm):
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def _table(entries: list[models.ModelEntry]) -> list[str]:
    if not entries:
        return [f"no usable models in {models.cache_dir()}"]
    width = max(len(e.name) for e in entries)
    out = []
    for e in entries:
        if e.complete:
            state = "complete"
        elif e.corrupt:
            state = f"corrupt / incomplete: download again ({', '.join(e.corrupt[:3])} fails its checksum)"
        elif e.source == "hub":
            state = "corrupt / incomplete: download again (missing " + ", ".join(e.missing[:3]) + ")"
        else:
            state = "incomplete: " + ", ".join(e.missing[:3])
        out.append(f"{e.name:{width}s}  {e.family:5s}  {models.format_bytes(e.size_bytes):>9s}  {state}")
    return out


def run_models(args, run_cancellable, progress_class, say, usage_error) -> int:
    action = args.models_command
    if action is None:
        raise usage_error("choose an action: models list, models download ID or models remove ID")
    if action == "list":
        entries = models.list_models(args.local)
        if args.json:
            print(json.dumps([e.to_dict() for e in entries], indent=2))
        else:
            print("\n".join(_table(entries)))
        return EXIT_OK
    if action == "download":
        from ..settings import model_facts

        facts = model_facts(args.repo_id)
        if "download" in facts:  # the big ones (SD3, FLUX): disk and memory before the bytes
            say(f"{args.repo_id}: {facts}")
        bar = progress_class(enabled=not args.quiet)
        try:
            path = run_cancellable(
                lambda cancel: downloads.download(
                    args.repo_id, cancel=cancel,
                    progress=lambda done, total, speed: bar("downloading", done, total)),
                on_interrupt=lambda: (bar.stop(), say("cancelling... (run it again to resume)")))
        finally:
            bar.close()
        print(path)
        return EXIT_OK
    if action == "remove":
        rid = models.check_repo_id(args.repo_id)
        entry = next((e for e in models.cached_models() if e.name == rid), None)
        size = models.format_bytes(entry.size_bytes) if entry else "unknown size"
        if not args.yes:
            if not sys.stdin.isatty():
                raise usage_error(f"removing {rid} needs a confirmation: add --yes")
            answer = input(f"Remove {rid} ({size}) from {models.cache_dir()}? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                say("nothing removed")
                return EXIT_OK
        freed = models.remove(rid)
        print(f"removed {rid} ({models.format_bytes(freed)} freed)")
        return EXIT_OK
    raise usage_error(f"unknown models action {action!r}")
