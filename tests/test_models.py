"""Models: list / download (progress, cancel, resume) / remove / token against a real local hub.

A ThreadingHTTPServer on 127.0.0.1 (tests/hub_server.py) serves a hub-like tree of the tiny
models; HF_ENDPOINT points the real huggingface_hub client at it. Subprocesses get their own
HF_HOME (huggingface_hub reads HF_HOME, HF_ENDPOINT and the token path once, at import);
in-process tests set the environment, which core.models.cache reads at call time.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from core.models import downloads, cache as models
from core.errors import Cancelled, InvalidInputError, ModelNotFoundError
from tests.hub_server import TOKEN, HubServer, hub_env
from tests.tiny_models import make_tiny_sd

ROOT = Path(__file__).resolve().parents[1]
REPO = "p10/tiny-sd"


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub_repos")
    sd = Path(make_tiny_sd(root / "sd"))
    # what a real repo also has and the add-on must not fetch
    (sd / "README.md").write_text("# tiny")
    (sd / "unet" / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"x" * 1000)
    (sd / "v1-inference.ckpt").write_bytes(b"y" * 1000)
    (sd / "safety_checker").mkdir()
    (sd / "safety_checker" / "model.safetensors").write_bytes(b"z" * 1000)
    notmodel = root / "notmodel"
    notmodel.mkdir()
    (notmodel / "README.md").write_text("not a pipeline")
    return {REPO: sd, "p10/gated": sd, "p10/readme-only": notmodel}


@pytest.fixture
def hub(tiny_repo):
    with HubServer(tiny_repo, gated={"p10/gated"}) as server:
        yield server


@pytest.fixture
def online(monkeypatch, tmp_path, hub):
    """In-process: HF_HOME in tmp, HF_ENDPOINT -> the local hub, offline mode off."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)  # several chunks per file
    return tmp_path / "hf" / "hub"


def _run(args, env, **kw):
    return subprocess.run([sys.executable, *args], env=env, cwd=str(ROOT), capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=300, **kw)


def _one_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, text
    return lines[0]


def test_select_files_takes_only_what_the_addon_loads():
    index = {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
             "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
             "scheduler": ["diffusers", "DDIMScheduler"], "safety_checker": ["x", "Y"],
             "feature_extractor": [None, None]}
    files = ["model_index.json", "README.md", "v1-5.ckpt", "v1-5.safetensors",
             "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
             "unet/diffusion_pytorch_model.bin", "unet/diffusion_pytorch_model.fp16.safetensors",
             "unet/diffusion_pytorch_model.non_ema.bin", "unet/diffusion_pytorch_model.msgpack",
             "text_encoder/config.json", "text_encoder/model-00001-of-00002.safetensors",
             "text_encoder/model-00002-of-00002.safetensors", "text_encoder/model.safetensors.index.json",
             "text_encoder/model.safetensors.index.fp16.json", "text_encoder/pytorch_model.bin",
             "tokenizer/vocab.json", "tokenizer/merges.txt", "scheduler/scheduler_config.json",
             "safety_checker/model.safetensors", "unet/onnx/model.onnx"]
    got = set(models.select_files(index, files))
    assert got == {"model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                   "text_encoder/config.json", "text_encoder/model-00001-of-00002.safetensors",
                   "text_encoder/model-00002-of-00002.safetensors",
                   "text_encoder/model.safetensors.index.json", "tokenizer/vocab.json",
                   "tokenizer/merges.txt", "scheduler/scheduler_config.json"}
    # .bin only when a component has no safetensors
    bin_only = [f for f in files if not f.startswith("unet/diffusion_pytorch_model.safetensors")
                and not f.endswith("fp16.safetensors")]
    assert "unet/diffusion_pytorch_model.bin" in models.select_files(index, bin_only)


def test_download_progress_list_and_remove(online, hub):
    seen = []
    snap = downloads.download(REPO, progress=lambda d, t, s: seen.append((d, t, s)))
    total = seen[-1][1]
    sizes = {f: p.stat().st_size for f, p in hub.repos[REPO].files.items()}
    assert total == sum(sizes[f] for f in ("model_index.json", "unet/config.json", "vae/config.json",
                                           "text_encoder/config.json", "scheduler/scheduler_config.json",
                                           "tokenizer/tokenizer.json", "tokenizer/tokenizer_config.json",
                                           "unet/diffusion_pytorch_model.safetensors",
                                           "vae/diffusion_pytorch_model.safetensors",
                                           "text_encoder/model.safetensors"))
    done = [d for d, _, _ in seen]
    assert done == sorted(done) and done[-1] == total and len(seen) >= 3 and seen[0][0] == 0
    assert all(s >= 0 for _, _, s in seen) and max(s for _, _, s in seen) > 0  # bytes per second
    # the real client's routes, and nothing the add-on does not load
    paths = {p for _, p, _ in hub.requests}
    assert f"/api/models/{REPO}/revision/main" in paths
    assert not any(p.endswith((".ckpt", "README.md", "fp16.safetensors")) or "safety_checker" in p
                   for p in paths)
    entries = models.list_models()
    assert [(e.name, e.family, e.complete, e.source) for e in entries] == [(REPO, "sd", True, "hub")]
    assert entries[0].size_bytes >= total and entries[0].path == snap
    assert models.cached_snapshot(REPO) == snap and not models.missing_files(snap)
    # a second download fetches nothing
    n = len(hub.requests)
    assert downloads.download(REPO) == snap
    assert not any(m == "GET" and "/resolve/" in p for m, p, _ in hub.requests[n:])
    freed = models.remove(REPO)
    assert freed >= total and models.list_models() == []
    assert not (online / f"models--{REPO.replace('/', '--')}").exists()
    with pytest.raises(ModelNotFoundError, match="not in the Hugging Face cache"):
        models.remove(REPO)


def test_cancel_keeps_partial_and_next_download_resumes(online, hub):
    unet = "unet/diffusion_pytorch_model.safetensors"
    size = hub.repos[REPO].files[unet].stat().st_size
    cancel = threading.Event()
    small = size // 2
    hub.delay = 0.002  # progress is reported every 0.1 s: let the unet take ~0.5 s

    def progress(done, total, speed):
        if hub.bytes_served(unet) > 0 and done > total - small:
            cancel.set()

    with pytest.raises(Cancelled):
        downloads.download(REPO, progress=progress, cancel=cancel)
    storage = online / f"models--{REPO.replace('/', '--')}"
    parts = list((storage / "blobs").glob("*" + models.PARTIAL_SUFFIX))
    assert len(parts) == 1 and 0 < parts[0].stat().st_size < size
    assert not (storage / "refs" / "main").exists()  # diffusers must not see it as loadable
    [entry] = models.list_models()
    assert not entry.complete and "unet/ (weights)" in entry.missing
    assert models.cached_snapshot(REPO) is None
    kept = parts[0].stat().st_size
    n, m = len(hub.requests), len(hub.responses)
    seen = []
    downloads.download(REPO, progress=lambda done, total, speed: seen.append((done, total)))
    # the progress counts what was kept: it starts at the files already complete and ends
    # exactly at the total (a resumed file's kept bytes included), never beyond it
    total = seen[-1][1]
    assert seen[-1][0] == total and all(d <= t == total for d, t in seen)
    assert seen[0][0] == total - size  # every file but the unet was complete
    ranges = [r for meth, p, r in hub.requests[n:] if meth == "GET" and p.endswith(unet)]
    assert ranges == [f"bytes={kept}-"]  # resumed where it stopped
    assert hub.responses[m:] == [(unet, kept, size - kept)]  # only the rest crossed the wire
    blob = storage / "snapshots" / hub.repos[REPO].sha / unet
    assert blob.read_bytes() == hub.repos[REPO].files[unet].read_bytes()
    assert models.list_models()[0].complete


@pytest.mark.parametrize("repo, words", [
    ("p10/no-such-model", "does not exist on the Hugging Face hub"),
    ("p10/readme-only", "not a diffusers pipeline"),
    ("not a repo id", "is not a Hugging Face model id"),
])
def test_bad_hub_ids_are_one_line_and_leave_nothing(online, repo, words):
    with pytest.raises((ModelNotFoundError, InvalidInputError)) as exc:
        downloads.download(repo)
    assert words in str(exc.value) and "\n" not in str(exc.value)
    assert not list(online.glob("models--*")) if online.exists() else True


def test_bare_401_without_a_token_is_one_clear_line(online, hub):
    hub.error_codes = False  # a plain 401, as a proxy or mirror may answer
    with pytest.raises(ModelNotFoundError) as exc:
        downloads.download("p10/gated")
    msg = str(exc.value)
    assert "needs a valid hub token (HTTP 401)" in msg and "gated" in msg and "\n" not in msg
    assert not list(online.glob("models--*")) if online.exists() else True


def test_no_network_is_one_line(online, hub, monkeypatch):
    hub.stop()
    with pytest.raises(ModelNotFoundError) as exc:
        downloads.download(REPO)
    assert "could not be reached" in str(exc.value) and "\n" not in str(exc.value)
    assert not list(online.glob("models--*")) if online.exists() else True


def test_generate_downloads_first_and_cancel_works_during_download(online, hub):
    from core.generate import generate
    from core.settings import GenerateSettings

    hub.delay = 0.01  # a slow link: cancel arrives mid-file
    phases, cancel = [], threading.Event()

    def progress(phase, step, total, preview):
        phases.append((phase, step, total))
        if phase == "downloading" and step > 100_000:
            cancel.set()

    with pytest.raises(Cancelled):
        generate(GenerateSettings(prompts=["a cat", "a dog"], model=REPO, device="cpu", steps=1),
                 progress=progress, cancel=cancel)
    assert phases[0][0] == "downloading" and all(p == "downloading" for p, _, _ in phases)
    totals = {t for _, _, t in phases}
    assert len(totals) == 1 and totals.pop() > 3_000_000  # bytes, not a frozen step
    assert len({s for _, s, _ in phases}) > 3


def test_cli_models_list_download_remove_and_offline_generate(hub, tmp_path):
    env = hub_env(hub.url, tmp_path / "hf")
    r = _run(["-m", "core", "models", "download", REPO], env)
    assert r.returncode == 0 and "snapshots" in r.stdout, r.stderr
    assert "downloading" in r.stderr and "3.57M/3.57M" in r.stderr  # a bytes progress bar
    r = _run(["-m", "core", "models", "list", "--json"], env)
    [entry] = json.loads(r.stdout)
    assert (entry["name"], entry["family"], entry["complete"]) == (REPO, "sd", True)
    r = _run(["-m", "core", "models", "list"], env)
    assert REPO in r.stdout and "complete" in r.stdout and "MB" in r.stdout
    # what was downloaded is all diffusers needs: generate by hub id with the network off
    r = _run(["-m", "core", "generate", "--prompt", "a cat", "--prompt", "a dog", "--model", REPO,
              "--steps", "1", "--size", "64", "--device", "cpu", "--quiet",
              "--out", str(tmp_path / "stack")], dict(env, HF_HUB_OFFLINE="1"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / "stack" / "manifest.json").read_text())["model"] == REPO
    r = _run(["-m", "core", "models", "remove", REPO], env)
    assert r.returncode == 1 and "--yes" in _one_line(r.stderr)  # no silent deletion
    r = _run(["-m", "core", "models", "remove", REPO, "--yes"], env)
    assert r.returncode == 0 and "removed" in r.stdout
    r = _run(["-m", "core", "models", "download", "p10/nope"], env)
    assert r.returncode == 1 and "does not exist" in _one_line(r.stderr)


GATED = textwrap.dedent('''
    import json, sys
    from core.models import cache as models
    from core.models.downloads import download
    from core.errors import P10Error
    out = {}
    try:
        download("p10/gated")
    except P10Error as e:
        out["without"] = str(e)
    out["status0"] = models.token_status()
    try:
        models.save_token("hf_wrong_token")
    except P10Error as e:
        out["wrong"] = str(e)
    out["saved"] = models.save_token(sys.argv[1])
    out["status"] = models.token_status()
    out["path"] = download("p10/gated")
    out["cleared"] = models.clear_token()
    out["status2"] = models.token_status()
    print(json.dumps(out))
''')


def test_gated_repo_needs_the_token_stored_like_huggingface_hub(hub, tmp_path):
    env = hub_env(hub.url, tmp_path / "hf")
    r = _run(["-c", GATED, TOKEN], env)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert "gated" in out["without"] and "token" in out["without"] and "\n" not in out["without"]
    assert out["status0"] is None and "refused" in out["wrong"]
    assert "checked with the hub" in out["saved"] and out["status"] == "hf_…oken"
    assert out["path"].endswith(tuple("0123456789abcdef")) and out["cleared"]
    assert out["status2"] is None
    assert any(p == "/api/whoami-v2" for _, p, _ in hub.requests)  # huggingface_hub.login checked it


DISK_FULL = textwrap.dedent('''
    import os, resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)       # EFBIG instead of being killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (500_000, 500_000))  # no file may exceed 500 kB
    from core.models import downloads, cache as models
    from core.errors import P10Error
    try:
        downloads.download("p10/tiny-sd")
    except P10Error as e:
        print("ERROR", e)
''')


def test_disk_full_is_one_line_and_nothing_half_installed(hub, tmp_path):
    env = hub_env(hub.url, tmp_path / "hf")
    r = _run(["-c", DISK_FULL], env)
    assert r.returncode == 0, r.stderr[-2000:]
    line = _one_line(r.stdout)
    assert line.startswith("ERROR") and "disk is full" in line
    cache = tmp_path / "hf" / "hub"
    assert not list(cache.glob("models--*"))


def test_local_folders_and_files(tiny_repo, tmp_path):
    sd = tiny_repo[REPO]
    entry = models.describe_local(str(sd))
    assert (entry.source, entry.family, entry.complete) == ("folder", "sd", True)
    assert entry.size_bytes > 3_000_000
    with pytest.raises(InvalidInputError, match="not a diffusers model folder") as exc:
        models.describe_local(str(tiny_repo["p10/readme-only"]))
    assert "\n" not in str(exc.value)
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        models.describe_local(str(tmp_path / "missing"))
    from safetensors.torch import save_file
    import torch

    xl = tmp_path / "xl.safetensors"
    save_file({"conditioner.embedders.1.model.ln_final.weight": torch.zeros(2)}, str(xl))
    e = models.describe_local(str(xl))
    assert (e.source, e.family, e.complete) == ("file", "sdxl", True)
    with pytest.raises(InvalidInputError, match="not a model file"):
        models.describe_local(str(sd / "model_index.json"))
    # a folder whose weights are gone is listed as incomplete, with what is missing
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(sd, broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    listed = models.list_models([str(broken), str(tmp_path / "gone")], cache=str(tmp_path / "nocache"))
    assert [(e.complete, e.missing) for e in listed] == [
        (False, ["unet/ (weights)"]), (False, ["not found or not a model"])]
