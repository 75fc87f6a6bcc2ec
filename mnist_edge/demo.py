"""The browser demo's server: serve examples/web, onnxruntime-web's files and an exported model on loopback.

Standard library only (plus the runtime, to check the model files before serving them). Routes:

    /                     examples/web/index.html (and its app.js, digit.mjs, style.css)
    /ort/<file>           examples/web/node_modules/onnxruntime-web/dist/<file> (the wasm build only)
    /models/index.json    which precisions are served, with sizes and SHA-256
    /models/<file>        model.onnx, model.int8.onnx and manifest.json (the bytes checked at start)

Nothing else is served (no directory listings, no paths outside those folders), and the page loads
nothing from anywhere else. onnxruntime-web comes from npm (``npm ci`` in examples/web, versions locked in
its package-lock.json); it is not committed.

    from mnist_edge.demo import create_server
    server = create_server(port=0)      # port 0: any free port
    print(server.url); server.serve_forever()
"""

from __future__ import annotations

import errno
import hashlib
import io
import ipaddress
import json
import socket
import sys
import threading
import time
from functools import cached_property
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from mnist_edge import artifacts as A
from mnist_edge.artifacts import ONNX_FILES, TFLITE_FILES, resolve
from mnist_edge.errors import ArtifactError, MnistEdgeError, UsageError

CHECKOUT = Path(__file__).resolve().parents[1]
WEB_DIR = Path("examples", "web")
PAGE_FILES = ("index.html", "app.js", "digit.mjs", "selftest.mjs", "style.css")
ORT_DIST = Path("node_modules", "onnxruntime-web", "dist")
# The WebAssembly-only build of onnxruntime-web and the module + binary it loads (single-threaded use).
ORT_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".json": "application/json", ".wasm": "application/wasm", ".onnx": "application/octet-stream",
         ".bin": "application/octet-stream"}


class DemoSetupError(MnistEdgeError):
    """The demo's page or its npm dependencies are not where the demo looks for them."""


def find_web_dir(web_dir=None) -> Path:
    """The folder holding index.html: ``web_dir``, else examples/web here or in the source checkout."""
    candidates = [Path(web_dir)] if web_dir is not None else [Path.cwd() / WEB_DIR, CHECKOUT / WEB_DIR]
    for d in candidates:
        if (d / "index.html").is_file():
            return d.resolve()
    raise DemoSetupError(
        f"the demo page (index.html) is not in {' nor '.join(map(str, candidates))}; it ships in the source "
        "repository's examples/web (not in the wheel): run from a checkout or pass --web-dir DIR")


def find_ort_dist(web_dir: Path) -> Path:
    """onnxruntime-web's dist folder under ``web_dir``; DemoSetupError saying to run npm ci if absent."""
    dist = web_dir / ORT_DIST
    missing = [name for name in ORT_FILES if not (dist / name).is_file()]
    if missing:
        raise DemoSetupError(
            f"onnxruntime-web is not installed for the demo ({dist} lacks {', '.join(missing)}): run "
            f"`npm ci` in {web_dir} once (Node.js 18+; it installs the versions locked in package-lock.json)")
    return dist


def find_model_dir(model=None) -> Path:
    """The artifact folder to serve: ``model`` (a zoo name, a folder or a file in one) resolved by
    :func:`mnist_edge.artifacts.resolve`, holding at least one ONNX file."""
    folder = resolve(model).folder
    if not any((folder / name).is_file() for name in ONNX_FILES.values()):
        raise ArtifactError(f"no model to serve: {folder} holds neither {' nor '.join(ONNX_FILES.values())}; pass "
                            "--model NAME_OR_DIR, or create it with `mnist-edge export --model bn_cnn --quantize`")
    return folder.resolve()


def check_models(model_dir: Path) -> tuple[dict, dict[str, bytes]]:
    """Load each model file with the runtime (manifest hash, contract, loadability).

    Returns the index the page reads and the checked bytes by file name: the server sends those bytes,
    so the file checked is the file served, whatever happens on disk afterwards.
    """
    from mnist_edge.runtime import load

    files, blobs = {}, {}
    name = None
    for precision, filename in ONNX_FILES.items():
        path = model_dir / filename
        if not path.is_file():
            continue
        data = path.read_bytes()
        clf = load(path)  # raises ArtifactError / ContractError naming the file
        if clf.sha256 != hashlib.sha256(data).hexdigest():
            raise ArtifactError(f"{path} changed while the demo was checking it; start the demo again")
        name = name or clf.model
        blobs[filename] = data
        files[precision] = {"url": f"models/{filename}", "bytes": len(data), "sha256": clf.sha256,
                            "verified": bool(clf.verified)}
    if (model_dir / A.MANIFEST).is_file():
        blobs[A.MANIFEST] = (model_dir / A.MANIFEST).read_bytes()
    index = {"model": name, "model_dir": str(model_dir), "files": files}
    from mnist_edge.manifest import load_manifest, verify_files
    from mnist_edge.evaluate.bundle import BUNDLE_NAME

    manifest = load_manifest(model_dir) if (model_dir / A.MANIFEST).is_file() else None
    if manifest is not None and BUNDLE_NAME in manifest.files:  # the page self-tests each model with it
        verify_files(model_dir, [BUNDLE_NAME], manifest.to_json())
        data = (model_dir / BUNDLE_NAME).read_bytes()
        sha256 = manifest.files[BUNDLE_NAME].sha256
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ArtifactError(f"{model_dir / BUNDLE_NAME} changed while the demo was checking it; start it again")
        blobs[BUNDLE_NAME] = data
        index["selftest"] = {"url": f"models/{BUNDLE_NAME}", "bytes": len(data), "sha256": sha256}
    return index, blobs


IDLE_TIMEOUT_S = 10.0  # a connection that sends nothing for this long is closed (and its thread ends)
# The whole request (request line and headers) must arrive within this: a client dripping a header line
# every few seconds never trips the idle timeout, so only a deadline on the whole request ends it.
REQUEST_DEADLINE_S = 10.0
RESPONSE_TIMEOUT_S = 60.0  # sending one response (sendall's timeout bounds the whole send)
MAX_HANDLERS = 32  # concurrent handler threads; beyond, accepting waits for one to end (a page opens ~6)
BACKLOG = 128  # pending connections the kernel queues (socketserver's default of 5 dropped a burst of 300)
# accept() errors that mean "out of descriptors or memory for now": the listening socket stays readable,
# so retrying at once spins a core; wait, doubling up to the cap, until a connection closes.
ACCEPT_BACKOFF_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
ACCEPT_BACKOFF_S = (0.05, 1.0)  # first wait, longest wait


class DemoServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer with the demo's routes; ``url`` is the address to open."""

    daemon_threads = True
    request_queue_size = BACKLOG

    def __init__(self, address, *, web_dir: Path, ort_dist: Path, model_dir: Path, index: dict,
                 blobs: dict[str, bytes], quiet: bool = True, request_deadline_s: float = REQUEST_DEADLINE_S,
                 max_handlers: int = MAX_HANDLERS):
        self.web_dir, self.ort_dist, self.model_dir, self.quiet = web_dir, ort_dist, model_dir, quiet
        self.index, self.blobs = index, blobs
        self.request_deadline_s = float(request_deadline_s)
        self._slots = threading.BoundedSemaphore(max_handlers)
        self._accept_wait = 0.0  # the current back-off after accept() ran out of descriptors
        super().__init__(address, _Handler)

    def get_request(self):
        """accept(), backing off when the process is out of descriptors instead of retrying at once."""
        try:
            got = super().get_request()
        except OSError as e:
            if e.errno in ACCEPT_BACKOFF_ERRNOS:
                first, longest = ACCEPT_BACKOFF_S
                self._accept_wait = min(longest, max(first, 2 * self._accept_wait))
                time.sleep(self._accept_wait)
            raise  # socketserver drops this accept and selects again
        self._accept_wait = 0.0
        return got

    def process_request(self, request, client_address):
        """Start a handler thread once fewer than ``max_handlers`` run; while all are busy the accept loop
        waits (new connections queue in the kernel's backlog). A slot that does not free up within a
        request deadline (every handler ends by then) means something is wrong: refuse with 503."""
        if not self._slots.acquire(timeout=self.request_deadline_s + 1.0):
            _refuse_busy(request)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address):
        """A browser that closes a connection early (reload, tab closed) is normal: no traceback for it."""
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
            if not self.quiet:
                print(f"mnist-edge demo: {client_address[0]} closed the connection early", file=sys.stderr)
            return
        super().handle_error(request, client_address)

    @cached_property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/"

    def route(self, path: str) -> tuple[Path | bytes, str] | None:
        """(file or bytes, suffix for its content type) for a request path; None for anything not served."""
        path = unquote(urlsplit(path).path)
        parts = ["index.html"] if path == "/" else path.lstrip("/").split("/")
        if len(parts) == 1 and parts[0] in PAGE_FILES:
            return self.web_dir / parts[0], Path(parts[0]).suffix
        if len(parts) == 2 and parts[0] == "ort" and parts[1] in ORT_FILES:
            return self.ort_dist / parts[1], Path(parts[1]).suffix
        if len(parts) == 2 and parts[0] == "models":
            if parts[1] == "index.json":
                return json.dumps(self.index, indent=2).encode(), ".json"
            if parts[1] in self.blobs:
                return self.blobs[parts[1]], Path(parts[1]).suffix
        return None


def _refuse_busy(request) -> None:
    """Best effort 503 to a connection refused for lack of a handler slot (never blocks the accept loop)."""
    try:
        request.setblocking(False)
        request.send(b"HTTP/1.0 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n")
    except OSError:
        pass


class _DeadlineReader(io.RawIOBase):
    """A socket's receiving side that ends at a deadline: each recv waits at most the idle timeout and
    never past the deadline, so the request as a whole is bounded, not only each receive."""

    def __init__(self, sock: socket.socket, idle_s: float | None, deadline: float):
        self._sock, self._idle_s, self._deadline = sock, idle_s, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request deadline passed")  # http.server closes the connection
        self._sock.settimeout(left if self._idle_s is None else min(left, self._idle_s))
        return self._sock.recv_into(buffer)


class _Handler(BaseHTTPRequestHandler):
    server: DemoServer
    server_version = "mnist-edge-demo"
    timeout = IDLE_TIMEOUT_S  # socket timeout: idle or half-open clients do not hold a thread forever

    def setup(self):
        super().setup()
        deadline = time.monotonic() + self.server.request_deadline_s
        self.rfile.close()
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, self.timeout, deadline))

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self._send(body=True)

    def do_HEAD(self):  # noqa: N802
        self._send(body=False)

    def _send(self, body: bool) -> None:
        self.connection.settimeout(RESPONSE_TIMEOUT_S)  # the request is in: bound the response instead
        found = self.server.route(self.path)
        data = None
        if found is not None:
            data, suffix = found
            if isinstance(data, Path):
                try:
                    data = data.read_bytes()
                except OSError:
                    data = None
        if data is None:
            self.send_error(HTTPStatus.NOT_FOUND, "not part of the mnist-edge demo")
            return
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", TYPES.get(suffix, "application/octet-stream"))
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Content-Type-Options", "nosniff")
        # Cross-origin isolation: every file is same-origin, so nothing breaks, and performance.now() gets
        # microsecond resolution instead of 100 us, which the latency display needs for sub-ms runs.
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, format, *args):  # noqa: A002 (http.server's signature)
        if not self.server.quiet:
            super().log_message(format, *args)


def create_server(host: str = "127.0.0.1", port: int = 8000, model=None, web_dir=None,
                  quiet: bool = True) -> DemoServer:
    """Check everything (page, onnxruntime-web, models), then bind; ``port=0`` takes any free port."""
    web = find_web_dir(web_dir)
    dist = find_ort_dist(web)
    models = find_model_dir(model)
    index, blobs = check_models(models)
    if not 0 <= int(port) <= 65535:
        raise UsageError(f"port {port} is out of range 0-65535")
    try:
        return DemoServer((host, int(port)), web_dir=web, ort_dist=dist, model_dir=models, index=index,
                          blobs=blobs, quiet=quiet)
    except OSError as e:
        raise UsageError(f"cannot listen on {host}:{port} ({e.strerror or e}); pick another port with "
                         "--port N, or --port 0 for any free one") from None


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve(host: str = "127.0.0.1", port: int = 8000, model=None, web_dir=None, quiet: bool = True,
          open_browser: bool = False, out=None) -> int:
    """Serve the demo until interrupted; prints the address (first line: ``serving http://HOST:PORT/``)."""
    out = out or sys.stdout
    server = create_server(host=host, port=port, model=model, web_dir=web_dir, quiet=quiet)
    files = server.index["files"]
    print(f"mnist-edge demo: serving {server.url}", file=out, flush=True)
    print(f"  model {server.index['model']} ({', '.join(files)}) from {server.model_dir}", file=out, flush=True)
    if not _is_loopback(host):
        print(f"  note: {host} is not a loopback address: other machines can open this page", file=out, flush=True)
    if str(model or "").endswith(".tflite") or any((server.model_dir / n).is_file() for n in TFLITE_FILES.values()):
        print("  note: the page runs the ONNX files (onnxruntime-web); a browser cannot run the LiteRT .tflite files "
              "here (predict, bench and verify run them)", file=out, flush=True)
    print("  Ctrl-C to stop", file=out, flush=True)
    if open_browser:
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("mnist-edge demo: stopped", file=out, flush=True)
    finally:
        server.server_close()
    return 0
