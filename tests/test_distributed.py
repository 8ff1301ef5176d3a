"""One zoom over several processes: torchrun + gloo on the CPU (core.backends.distributed).

The end-to-end tests start `torchrun --nproc-per-node 2 -m core …` on a tiny random-weight
model and compare with the single-process run; a killed rank and a cancel must leave nothing
behind (no stack, no staging folder, no process).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from core import ZoomStack
from core.backends import distributed
from core.backends.guidance import batched_call

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
ENV = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
ENV.pop("WORLD_SIZE", None)


# ------------------------------------------------------------------------------ sharding
@pytest.mark.parametrize("total, size", [(6, 2), (5, 2), (7, 3), (2, 2), (16, 4)])
def test_shards_cover_every_row_once_in_order(total, size):
    parts = [distributed.shard(total, r, size) for r in range(size)]
    rows = [i for p in parts for i in range(total)[p]]
    assert rows == list(range(total))
    assert max(p.stop - p.start for p in parts) - min(p.stop - p.start for p in parts) <= 1


def test_a_rank_runs_only_its_shard_micro_batched_then_gathers(monkeypatch):
    seen = []

    def model(x, t, **rows):
        seen.append((x[:, 0, 0, 0].tolist(), rows["c"][:, 0].tolist()))
        return x * 2

    gathered = {}

    def fake_gather(local, total):
        gathered.update(local=local.clone(), total=total)
        return torch.zeros(total, *local.shape[1:])

    monkeypatch.setattr(distributed, "world", lambda: (1, 2))
    monkeypatch.setattr(distributed, "gather_rows", fake_gather)
    x = torch.arange(5.0).view(5, 1, 1, 1).expand(5, 1, 2, 2).contiguous()
    c = torch.arange(5.0).view(5, 1) + 10
    with torch.no_grad():
        out = batched_call(model, x, torch.zeros(5), {"c": c}, micro_batch=1)
    # rank 1 of 2 owns rows 3 and 4 of 5: one call per micro-batch, with their own conditions
    assert seen == [([3.0], [13.0]), ([4.0], [14.0])]
    assert gathered["total"] == 5 and torch.equal(gathered["local"], x[3:] * 2)
    assert out.shape == x.shape


def test_rows_are_not_split_while_autograd_records(monkeypatch):
    # reconstruction guidance differentiates through the model: every rank computes every row
    monkeypatch.setattr(distributed, "world", lambda: (0, 2))
    calls = []
    x = torch.randn(4, 1, 2, 2, requires_grad=True)
    with torch.enable_grad():
        out = batched_call(lambda x, t: calls.append(x.shape[0]) or x * 3, x, torch.zeros(4), {},
                           micro_batch=None)
    assert calls == [4] and out.requires_grad


def test_not_distributed_without_torchrun(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not distributed.requested() and distributed.world() == (0, 1)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not distributed.requested()


# ------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from tests.tiny_models import make_tiny_sd

    return make_tiny_sd(tmp_path_factory.mktemp("dist") / "tiny_sd")


def _generate_args(model, out, *extra):
    return ["-m", "core", "generate", "--prompt", "a red galaxy", "--prompt", "a blue star",
            "--prompt", "a green planet", "--model", model, "--size", "64", "--device", "cpu",
            "--scheduler", "ddpm", "--seed", "5", "--out", str(out), *extra]


def _run(cmd, timeout=600):
    return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)


def _close(a: Path, b: Path) -> None:
    x, y = ZoomStack.load(a).layers, ZoomStack.load(b).layers
    diff = np.abs(x - y) * 255
    assert diff.max() <= 1.0 + 1e-4 and diff.mean() < 0.1, (diff.max(), diff.mean())


def test_two_processes_equal_one(tiny_model, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    r1 = _run([sys.executable, *_generate_args(tiny_model, one, "--steps", "4", "--quiet")])
    assert r1.returncode == 0, r1.stderr
    # micro-batching inside each rank's shard keeps working
    r2 = _run([*TORCHRUN, *_generate_args(tiny_model, two, "--steps", "4", "--quiet",
                                          "--micro-batch", "1")])
    assert r2.returncode == 0, r2.stderr
    assert r2.stdout.strip().splitlines() == [str(two)]  # rank 0 alone reports the stack
    _close(one, two)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]
    # regenerate (the same path as extend) under torchrun equals the single process too
    cmd = ["-m", "core", "regenerate", str(one), "--level", "1", "--seed", "9", "--device",
           "cpu", "--quiet"]
    a = _run([sys.executable, *cmd, "--out", str(tmp_path / "re1")])
    b = _run([*TORCHRUN, *cmd, "--out", str(tmp_path / "re2")])
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    _close(tmp_path / "re1", tmp_path / "re2")


def _workers(parent: int) -> list[int]:
    """Live processes whose parent is ``parent`` (torchrun's workers)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == parent and fields[0] != "Z":
                found.append(int(entry))
    return found


def _rank_of(pid: int) -> int | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in env:
        if item.startswith(b"RANK="):
            return int(item[5:])
    return None


def _start_long_run(tiny_model, out):
    proc = subprocess.Popen([*TORCHRUN, *_generate_args(tiny_model, out, "--steps", "400")],
                            cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    seen, deadline = b"", time.monotonic() + 300
    while b"sampling" not in seen and time.monotonic() < deadline and proc.poll() is None:
        seen += os.read(proc.stderr.fileno(), 4096)
    assert b"sampling" in seen, seen.decode(errors="replace")
    return proc, seen


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _nothing_left(workers, tmp_path):
    """No worker process outlives the run (an orphan would be re-parented, so look by pid), and
    neither the stack nor its hidden staging folder exists."""
    deadline = time.monotonic() + 60
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in workers if _alive(p)]
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_killed_rank_stops_the_run_cleanly(tiny_model, tmp_path):
    proc, seen = _start_long_run(tiny_model, tmp_path / "out")
    workers = _workers(proc.pid)
    ranks = {_rank_of(p): p for p in workers}
    assert set(ranks) == {0, 1}, ranks
    os.kill(ranks[1], signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    err = (seen + err).decode(errors="replace")
    assert proc.returncode != 0
    assert "stopped: a process of this torchrun run failed or was stopped" in err, err
    _nothing_left(workers, tmp_path)


def test_cancel_stops_every_rank_and_writes_nothing(tiny_model, tmp_path):
    proc, seen = _start_long_run(tiny_model, tmp_path / "out")
    workers = _workers(proc.pid)
    assert len(workers) == 2
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal reaches the whole group
    out, err = proc.communicate(timeout=120)
    err = (seen + err).decode(errors="replace")
    assert proc.returncode != 0
    assert "nothing was written" in err, err
    _nothing_left(workers, tmp_path)


def test_gather_keeps_uneven_shards_whole_and_in_rank_order(monkeypatch):
    # 5 rows over 2 ranks: rank 0 has 3, rank 1 has 2 (padded to 3 for all_gather, then trimmed)
    import torch.distributed as dist

    shards = {0: torch.arange(3.0).view(3, 1) + 1, 1: torch.arange(2.0).view(2, 1) + 10}

    def fake_all_gather(parts, padded):
        for r, part in enumerate(parts):
            part.zero_()
            part[: shards[r].shape[0]] = shards[r]

    monkeypatch.setattr(distributed, "world", lambda: (1, 2))
    monkeypatch.setattr(dist, "all_gather", fake_all_gather)
    out = distributed.gather_rows(shards[1], 5)
    assert out.view(-1).tolist() == [1.0, 2.0, 3.0, 10.0, 11.0]


@pytest.mark.parametrize("command, joins", [("generate", True), ("extend", True),
                                            ("regenerate", True), ("video", False),
                                            ("models", False)])
def test_every_sampling_command_joins_the_group(monkeypatch, command, joins):
    from core.cli import main as cli

    joined = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(distributed, "init", lambda: joined.append(True))
    monkeypatch.setattr(distributed, "is_main", lambda: False)
    try:
        assert cli._start_distributed(command) is (not joins)
        assert bool(joined) is joins
        assert cli._DISTRIBUTED.get("quiet", False) is joins  # rank 1 writes and says nothing
    finally:
        cli._DISTRIBUTED.clear()
