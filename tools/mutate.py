#!/usr/bin/env python3
"""Mutation testing for core/: does the test suite catch plausible one-line bugs?

Each mutant in tools/mutants.toml replaces one exact snippet of one file with a plausible bug.
For each mutant this script patches a temporary copy of the repository, runs that mutant's
fast test files (``pytest -x -q``, with a timeout), and counts it *caught* when the tests fail.
At the end it prints the score as JSON on stdout (progress goes to stderr).

    python tools/mutate.py                 # every mutant (baseline run first), JSON score
    python tools/mutate.py --only M07,M28  # some of them
    python tools/mutate.py --check         # only check every snippet is still in the code
    python tools/mutate.py --list          # id, file, description

A mutant whose original snippet is no longer found exactly once in its file stops the run
with a message naming the mutant, the file and the snippet: the list must follow the code.
Mutants the suite cannot catch by design carry an ``equivalent`` note saying why; any other
missed mutant makes the exit status non-zero. Stdlib only; the repository is never modified.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_LIST = ROOT / "tools" / "mutants.toml"
FIELDS = ("id", "file", "original", "replacement", "tests", "description")
IGNORE = shutil.ignore_patterns(".git", ".venv*", "__pycache__", ".pytest_cache", "dist", "*.pyc",
                                "*.egg-info", ".mypy_cache", ".ruff_cache")


class MutantListError(Exception):
    """The list does not match the code (or is malformed); the script prints it and exits 2."""


def load_mutants(path: Path = DEFAULT_LIST, root: Path = ROOT) -> list[dict]:
    """Read and validate the list: fields, unique ids, files, snippets found exactly once."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise MutantListError(f"cannot read the mutant list {path}: {exc}") from None
    mutants = data.get("mutant", [])
    if not mutants:
        raise MutantListError(f"{path} holds no [[mutant]] entries")
    seen: set[str] = set()
    lost = []  # every stale snippet at once, so one pass can refresh them all
    for m in mutants:
        label = m.get("id", "<no id>")
        missing = [f for f in FIELDS if f not in m]
        if missing:
            raise MutantListError(f"{path}: mutant {label} lacks {', '.join(missing)}")
        if label in seen:
            raise MutantListError(f"{path}: mutant id {label} appears twice")
        seen.add(label)
        if m["original"] == m["replacement"]:
            raise MutantListError(f"{path}: mutant {label}: replacement equals the original")
        for test in m["tests"]:
            if not (root / test.split("::")[0]).is_file():
                raise MutantListError(f"{path}: mutant {label}: test file {test} does not exist")
        target = root / m["file"]
        if not target.is_file():
            raise MutantListError(
                f"{path}: mutant {label}: file {m['file']} does not exist (moved? update 'file')")
        count = target.read_text(encoding="utf-8").count(m["original"])
        if count != 1:
            what = "not found" if count == 0 else f"found {count} times (must be unique)"
            lost.append(f"mutant {label} ({m['file']}): original snippet {what}:\n"
                        f"    {m['original']!r}\n    bug: {m['description']}")
    if lost:
        raise MutantListError(
            f"{path}: {len(lost)} mutant(s) no longer match the code:\n  " + "\n  ".join(lost)
            + "\n  Find the code that does this now and update 'original' and 'replacement' "
            "(same bug), or remove the mutant if the code is gone.")
    return mutants


def run_tests(copy: Path, tests: list[str], timeout: float) -> tuple[str, float, str]:
    """('passed' | 'failed' | 'timeout' | 'error', seconds, pytest's output)."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", HF_HUB_OFFLINE="1")
    # one pytest at a time: a single torch thread is faster than contending threads
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    start = time.monotonic()
    # own process group: a timeout or Ctrl-C also ends what the tests started (CLI runs, ffmpeg)
    proc = subprocess.Popen(cmd, cwd=copy, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        return "timeout", time.monotonic() - start, ""
    except BaseException:
        _kill_group(proc)
        raise
    # pytest: 0 all passed, 1 some failed, 2 interrupted (collection error), 5 nothing collected
    status = {0: "passed", 1: "failed", 2: "failed"}.get(proc.returncode, "error")
    return status, time.monotonic() - start, out


def first_failure(output: str) -> str:
    """The node id pytest -x stopped at ("FAILED tests/x.py::test_y - ..." in its summary)."""
    for line in output.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return line.split(" ", 1)[1].split(" - ", 1)[0].strip()
    return ""


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mutants", type=Path, default=DEFAULT_LIST, help="the mutant list (TOML)")
    ap.add_argument("--only", default="", help="comma-separated mutant ids")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per mutant's test run")
    ap.add_argument("--check", action="store_true", help="only check the list against the code")
    ap.add_argument("--list", action="store_true", help="print id, file and description")
    ap.add_argument("--no-baseline", action="store_true",
                    help="skip the unmutated run of the tests (they must pass for a fair score)")
    args = ap.parse_args(argv)

    mutants = load_mutants(args.mutants)
    if args.only:
        wanted = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = sorted(set(wanted) - {m["id"] for m in mutants})
        if unknown:
            raise MutantListError(f"unknown mutant ids: {', '.join(unknown)}")
        mutants = [m for m in mutants if m["id"] in wanted]
    if args.list:
        for m in mutants:
            print(f"{m['id']:5} {m['file']:28} {m['description']}")
        return 0
    if args.check:
        print(json.dumps({"mutants": len(mutants), "snippets": "all found exactly once"}))
        return 0

    # SIGTERM ends the run like Ctrl-C: the test process group is killed, the copy removed
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    results = []
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="p10-mutants-") as tmp:
        copy = Path(tmp) / "repo"
        shutil.copytree(ROOT, copy, ignore=IGNORE, symlinks=True)
        if not args.no_baseline:
            union = list(dict.fromkeys(t for m in mutants for t in m["tests"]))
            print(f"baseline: {' '.join(union)}", file=sys.stderr, flush=True)
            status, seconds, tail = run_tests(copy, union, args.timeout * 2)
            if status != "passed":
                print(tail[-3000:], file=sys.stderr)
                raise SystemExit(f"mutate.py: the unmutated tests do not pass ({status}); "
                                 "fix them before measuring the score")
            print(f"baseline passed in {seconds:.0f} s", file=sys.stderr, flush=True)
        for m in mutants:
            target = copy / m["file"]
            original = target.read_text(encoding="utf-8")
            try:
                target.write_text(original.replace(m["original"], m["replacement"], 1),
                                  encoding="utf-8")
                status, seconds, output = run_tests(copy, m["tests"], args.timeout)
            finally:
                target.write_text(original, encoding="utf-8")
            outcome = {"passed": "missed", "failed": "caught", "timeout": "caught",
                       "error": "error"}[status]
            by = first_failure(output) if status == "failed" else ""
            results.append({"id": m["id"], "file": m["file"], "result": outcome,
                            "status": status, "seconds": round(seconds, 1), "caught_by": by})
            print(f"{m['id']:5} {outcome:6} {seconds:6.1f} s  {m['description']}"
                  + (f"\n      by {by}" if by else ""), file=sys.stderr, flush=True)

    by_id = {m["id"]: m for m in mutants}
    caught = [r["id"] for r in results if r["result"] == "caught"]
    missed = [r["id"] for r in results if r["result"] == "missed"]
    errors = [r["id"] for r in results if r["result"] == "error"]
    unexplained = [i for i in missed if not by_id[i].get("equivalent")]
    real = len(results) - (len(missed) - len(unexplained))  # without the equivalent mutants
    report = {
        "caught": len(caught), "total": len(results),
        "score": round(len(caught) / len(results), 3) if results else None,
        "score_without_equivalent": round(len(caught) / real, 3) if real else None,
        "missed": missed, "missed_unexplained": unexplained, "errors": errors,
        "equivalent_but_caught": [i for i in caught if by_id[i].get("equivalent")],
        "seconds": round(time.monotonic() - began, 1),
        "mutants": results,
    }
    print(json.dumps(report, indent=1))
    return 1 if unexplained or errors else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except MutantListError as exc:
        print(f"mutate.py: {exc}", file=sys.stderr)
        sys.exit(2)
