"""A tiny Hugging Face hub on 127.0.0.1 for download tests: real HTTP, real huggingface_hub client.

    with HubServer({"p10/tiny-sd": folder}, gated={"p10/gated"}) as hub:
        os.environ["HF_ENDPOINT"] = hub.url
        ...

Serves the routes huggingface_hub 2.x calls for ``HfApi.repo_info``, ``HfApi.list_repo_tree``,
``get_hf_file_metadata`` / ``hf_hub_download`` / ``http_get`` and ``login``:

* ``GET /api/models/{id}/revision/{rev}``  -> {"id", "sha", "siblings"}
* ``GET /api/models/{id}/tree/{rev}?recursive=True`` -> [{"type": "file", "path", "size", "oid"}]
* ``HEAD|GET /{id}/resolve/{rev}/{path}`` with ``ETag``, ``X-Repo-Commit``, ``Content-Length``,
  ``Accept-Ranges``; GET honours ``Range: bytes=N-`` (206 + ``Content-Range``)
* ``GET /api/whoami-v2`` (token check of ``huggingface_hub.login``)

As on the real hub, weights (``.safetensors``, ``.bin``, ``.ckpt``) are LFS files: their ETag
and the tree's ``lfs.oid`` are the SHA-256 of the content; other files' ETag is their git blob
id (SHA-1 of ``"blob <size>\0" + content``).
Unknown repos answer 404 ``X-Error-Code: RepoNotFound``; gated repos answer 401
``X-Error-Code: GatedRepo`` unless the request carries ``Authorization: Bearer <token>``.
Faults: ``portal = True`` answers every request with a 200 HTML sign-in page (a captive
portal); ``tamper = {"unet/x.safetensors"}`` serves those files with flipped bytes (same size,
same ETag).
``requests`` records (method, path, range header), ``responses`` (file, first byte, length)
per GET of a file; ``served`` counts body bytes written per file.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

TOKEN = "hf_p10_test_token"
LFS_SUFFIXES = (".safetensors", ".bin", ".ckpt")
PORTAL_PAGE = b"<!DOCTYPE html><html><body><h1>Welcome to Hotel Wi-Fi</h1>Please sign in.</body></html>"


class _Repo:
    def __init__(self, folder: Path):
        self.files: dict[str, Path] = {
            p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()
        }
        digest = hashlib.sha1()
        self.etags: dict[str, str] = {}
        self.lfs: set[str] = set()
        for name, path in self.files.items():
            data = path.read_bytes()
            if name.endswith(LFS_SUFFIXES):
                self.lfs.add(name)
                self.etags[name] = hashlib.sha256(data).hexdigest()
            else:
                self.etags[name] = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
            digest.update(name.encode() + self.etags[name].encode())
        self.sha = digest.hexdigest()  # 40 hex digits, like a git commit


class HubServer:
    def __init__(self, repos: dict[str, str | Path], gated: set[str] = frozenset(),
                 token: str = TOKEN, chunk: int = 16384, delay: float = 0.0):
        self.repos = {rid: _Repo(Path(f)) for rid, f in repos.items()}
        self.gated, self.token = set(gated), token
        self.chunk, self.delay = chunk, delay  # body written in chunks, ``delay`` s apart
        self.error_codes = True  # False: bare 401/404 answers without X-Error-Code
        self.portal = False  # True: every answer is a captive portal's HTML page
        self.tamper: set[str] = set()  # files served with flipped bytes
        self.requests: list[tuple[str, str, str | None]] = []
        self.served: dict[str, int] = {}
        self.responses: list[tuple[str, int, int]] = []  # (file, first byte, body length) per GET
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "HubServer":
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def bytes_served(self, suffix: str = "") -> int:
        with self.lock:
            return sum(n for k, n in self.served.items() if k.endswith(suffix))

    # ------------------------------------------------------------------------------ routes
    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def _send(self, code: int, body: bytes = b"", headers: dict | None = None,
                      head: bool = False) -> None:
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, str(v))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if body and not head:
                    self.wfile.write(body)

            def _json(self, obj, code: int = 200, head: bool = False) -> None:
                self._send(code, json.dumps(obj).encode(), {"Content-Type": "application/json"}, head)

            def _error(self, code: int, error_code: str, message: str, head: bool = False) -> None:
                headers = {"Content-Type": "application/json"}
                if hub.error_codes:
                    headers.update({"X-Error-Code": error_code, "X-Error-Message": message})
                self._send(code, json.dumps({"error": message}).encode(), headers, head)

            def _authorised(self) -> bool:
                return self.headers.get("Authorization", "") == f"Bearer {hub.token}"

            def _repo(self, repo_id: str, head: bool = False):
                repo = hub.repos.get(repo_id)
                if repo is None:
                    self._error(404, "RepoNotFound", "Repository not found", head)
                    return None
                if repo_id in hub.gated and not self._authorised():
                    self._error(401, "GatedRepo", f"Access to model {repo_id} is restricted.", head)
                    return None
                return repo

            def do_HEAD(self):
                self._route(head=True)

            def do_GET(self):
                self._route(head=False)

            def _route(self, head: bool) -> None:
                path = unquote(urlsplit(self.path).path)
                with hub.lock:
                    hub.requests.append((self.command, path, self.headers.get("Range")))
                parts = path.strip("/").split("/")
                if hub.portal:
                    return self._send(200, PORTAL_PAGE, {"Content-Type": "text/html"}, head)
                if parts[:2] == ["api", "whoami-v2"]:
                    if not self._authorised():
                        return self._error(401, "Unauthorized", "Invalid credentials", head)
                    return self._json({"name": "p10-tester", "type": "user", "auth": {
                        "accessToken": {"displayName": "p10-test", "role": "read"}}}, head=head)
                if parts[:2] == ["api", "models"] and len(parts) >= 6:
                    repo_id, what = "/".join(parts[2:4]), parts[4]
                    repo = self._repo(repo_id, head)
                    if repo is None:
                        return
                    if what == "revision":
                        return self._json({"id": repo_id, "sha": repo.sha, "private": False,
                                           "siblings": [{"rfilename": f} for f in repo.files]},
                                          head=head)
                    if what == "tree":
                        return self._json([
                            {"type": "file", "path": f, "size": p.stat().st_size,
                             "oid": repo.etags[f][:40],
                             **({"lfs": {"oid": repo.etags[f], "size": p.stat().st_size,
                                         "pointerSize": 134}} if f in repo.lfs else {})}
                            for f, p in repo.files.items()], head=head)
                    return self._error(404, "EntryNotFound", "unknown api route", head)
                if len(parts) >= 5 and parts[2] == "resolve":
                    repo_id, filename = "/".join(parts[:2]), "/".join(parts[4:])
                    repo = self._repo(repo_id, head)
                    if repo is None:
                        return
                    if filename not in repo.files:
                        return self._error(404, "EntryNotFound", f"{filename} not found", head)
                    return self._file(repo, repo_id, filename, head)
                self._error(404, "RepoNotFound", "not found", head)

            def _file(self, repo: _Repo, repo_id: str, filename: str, head: bool) -> None:
                data = repo.files[filename].read_bytes()
                if filename in hub.tamper:  # 4 KB flipped in the middle: same size, same ETag
                    mid = len(data) // 2
                    data = data[:mid] + bytes(b ^ 0xFF for b in data[mid:mid + 4096]) + data[mid + 4096:]
                start, code = 0, 200
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes=") and not head:
                    start = int(rng[6:].split("-")[0] or 0)
                    code = 206
                body = data[start:]
                self.send_response(code)
                self.send_header("ETag", f'"{repo.etags[filename]}"')
                self.send_header("X-Repo-Commit", repo.sha)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(body)))
                if code == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if head:
                    return
                with hub.lock:
                    hub.responses.append((filename, start, len(body)))
                try:
                    for i in range(0, len(body), hub.chunk):
                        piece = body[i:i + hub.chunk]
                        self.wfile.write(piece)
                        with hub.lock:
                            key = f"{repo_id}/{filename}"
                            hub.served[key] = hub.served.get(key, 0) + len(piece)
                        if hub.delay:
                            time.sleep(hub.delay)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler


def hub_env(url: str, home: str | os.PathLike) -> dict[str, str]:
    """Environment for a subprocess that talks to ``url`` with its own HF_HOME (cache, token)."""
    env = dict(os.environ)
    env.update({"HF_ENDPOINT": url, "HF_HOME": str(home), "HF_HUB_OFFLINE": "0",
                "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1",
                "HF_HUB_DISABLE_PROGRESS_BARS": "1"})
    env.pop("HF_HUB_CACHE", None)
    env.pop("HF_TOKEN", None)
    return env
