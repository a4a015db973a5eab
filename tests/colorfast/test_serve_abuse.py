"""`cli.py serve` under load and abuse, on a real uvicorn server: a bounded queue (503 + Retry-After), work
dropped for clients that left, uploads on disk rather than in memory, body and header timeouts, one log line
for an aborted upload, the Host/Origin guard, refused temperatures, X-Seconds without the wait."""
import io
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

httpx = pytest.importorskip("httpx", reason="the API tests need httpx (extra [test])")
pytest.importorskip("fastapi", reason="serve needs the web extra")

import colorfast.serve as serve                        # noqa: E402
from cli import cli                                    # noqa: E402
from colorfast.loader import load_colorizer         # noqa: E402
from colorfast.serve_guard import HostOriginGuard      # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def colorizer(ckpt):
    return load_colorizer(ckpt, device="cpu")


def photo(w=40, h=30, seed=0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


class Gate:
    """Counts the server's decodes and colorizations; `hold()` makes the next decode wait for `release()`."""

    def __init__(self, monkeypatch):
        self.decoded, self.colorized, self._open = 0, 0, threading.Event()
        self._open.set()
        load_rgb, colorize_image = serve.load_rgb, serve.colorize_image

        def counting_load(path):
            self.decoded += 1
            assert self._open.wait(60)
            return load_rgb(path)

        def counting_colorize(*a, **kw):
            self.colorized += 1
            return colorize_image(*a, **kw)
        monkeypatch.setattr(serve, "load_rgb", counting_load)
        monkeypatch.setattr(serve, "colorize_image", counting_colorize)

    def hold_network(self, monkeypatch):
        """The next network pass waits for release_network(); counts the full-resolution rebuilds after it."""
        import colorfast.photos as colorize
        predict, rebuild = colorize.predict_ab_small, colorize.rebuild_rgb
        self.rebuilt, self._network_open = 0, threading.Event()

        def held_predict(*a, **kw):
            assert self._network_open.wait(60)
            return predict(*a, **kw)

        def counting_rebuild(*a, **kw):
            self.rebuilt += 1
            return rebuild(*a, **kw)
        monkeypatch.setattr(colorize, "predict_ab_small", held_predict)
        monkeypatch.setattr(colorize, "rebuild_rgb", counting_rebuild)

    def release_network(self):
        self._network_open.set()

    def hold(self):
        self._open.clear()

    def release(self):
        self._open.set()


@pytest.fixture
def gate(monkeypatch):
    return Gate(monkeypatch)


class LogLines(list):
    """Lines that colorfast.serve logs (`colorfast.serve`), from `attach()` on: call it once the server runs,
    since uvicorn's logging setup drops the handlers of loggers under the ones it configures."""

    def attach(self):
        lines = self

        class Handler(logging.Handler):
            def emit(self, record):
                lines.append(self.format(record))
        self.handler = Handler(logging.INFO)
        logging.getLogger("colorfast.serve").addHandler(self.handler)


@pytest.fixture
def log_lines():
    lines = LogLines()
    yield lines
    logging.getLogger("colorfast.serve").removeHandler(getattr(lines, "handler", None))


def wait_until(condition, timeout=30, what="condition"):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def raw_request(url: str, head: bytes, body: bytes = b"") -> socket.socket:
    """A socket that has sent `head` (request line and headers, Host added) and `body`; nothing read."""
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)))
    s.sendall(head.replace(b"\r\n", f"\r\nHost: {host}:{port}\r\n".encode(), 1) + body)
    return s


def post_raw(url: str, body: bytes) -> socket.socket:
    return raw_request(url, b"POST /api/colorize HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body), body)


def read_until_closed(s: socket.socket, timeout: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and the seconds that took."""
    s.settimeout(timeout)
    t, data = time.perf_counter(), b""
    while chunk := s.recv(65536):
        data += chunk
    return data, time.perf_counter() - t


def test_a_full_queue_answers_503_with_retry_after_and_x_seconds_excludes_the_wait(colorizer, start_server, gate):
    with start_server(colorizer, size=64, queue=1) as url, ThreadPoolExecutor(2) as pool:
        queue = url.app.state.queue
        gate.hold()
        first = pool.submit(httpx.post, f"{url}/api/colorize", content=photo(seed=1), timeout=60)
        wait_until(lambda: queue.running is not None, what="the first job to start")
        second = pool.submit(httpx.post, f"{url}/api/colorize", content=photo(seed=2), timeout=60)
        wait_until(lambda: queue.waiting == 1, what="the second request to wait")
        refused = httpx.post(f"{url}/api/colorize", content=photo(seed=3), timeout=10)
        assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1
        assert "busy" in refused.json()["detail"]
        assert httpx.get(f"{url}/api/health", timeout=10).status_code == 200
        time.sleep(3)                                     # the second request waits at least this long
        gate.release()
        assert first.result().status_code == 200
        r = second.result()
        assert r.status_code == 200
        assert float(r.headers["x-queue-seconds"]) >= 3
        assert float(r.headers["x-seconds"]) < 3, r.headers                # its own work (a 40 x 30 photo), not the wait
        assert httpx.post(f"{url}/api/colorize", content=photo(), timeout=60).status_code == 200   # room again
    assert gate.decoded == 3


def test_a_client_that_leaves_before_its_turn_costs_no_work(colorizer, start_server, gate, log_lines):
    with start_server(colorizer, size=64, queue=2) as url, ThreadPoolExecutor(1) as pool:
        queue = url.app.state.queue
        log_lines.attach()
        gate.hold()
        first = pool.submit(httpx.post, f"{url}/api/colorize", content=photo(seed=1), timeout=60)
        wait_until(lambda: queue.running is not None, what="the first job to start")
        leaver = post_raw(url, photo(80, 60, seed=2))
        wait_until(lambda: queue.waiting == 1, what="the second request to wait")
        leaver.close()
        wait_until(lambda: queue.waiting == 0, what="the request of the client that left to be dropped")
        gate.release()
        assert first.result().status_code == 200
        assert httpx.post(f"{url}/api/colorize", content=photo(seed=3), timeout=60).status_code == 200
    assert gate.decoded == 2                               # the first and the last; never the one that left
    gone = [line for line in log_lines if "went away" in line]
    assert len(gone) == 1 and "before its turn" in gone[0] and "80 x 60" in gone[0], log_lines


def test_a_job_whose_client_leaves_stops_at_the_next_stage(colorizer, start_server, gate, log_lines):
    with start_server(colorizer, size=64) as url:
        queue = url.app.state.queue
        log_lines.attach()
        gate.hold()
        leaver = post_raw(url, photo(seed=1))
        wait_until(lambda: queue.running is not None, what="the job to start")
        job = queue.running
        leaver.close()
        wait_until(job.gone.is_set, what="the server to notice the disconnect")
        gate.release()                                     # decoding finishes; colorizing must not start
        wait_until(lambda: queue.running is None, what="the job to stop")
        assert httpx.post(f"{url}/api/colorize", content=photo(seed=2), timeout=60).status_code == 200
    assert gate.decoded == 2 and gate.colorized == 1
    assert any("after decoding, before colorizing" in line for line in log_lines), log_lines


def test_a_job_whose_client_leaves_during_the_network_skips_the_rebuild(colorizer, start_server, gate, monkeypatch,
                                                                     log_lines):
    with start_server(colorizer, size=64) as url:
        queue = url.app.state.queue
        log_lines.attach()
        gate.hold_network(monkeypatch)
        leaver = post_raw(url, photo(seed=1))
        wait_until(lambda: queue.running is not None and gate.colorized == 1, what="the network to start")
        job = queue.running
        leaver.close()
        wait_until(job.gone.is_set, what="the server to notice the disconnect")
        gate.release_network()
        wait_until(lambda: queue.running is None, what="the job to stop")
        assert httpx.post(f"{url}/api/colorize", content=photo(seed=2), timeout=60).status_code == 200
    assert gate.rebuilt == 1                                                # only the second request's
    assert any("after the network, before the full-resolution rebuild" in line for line in log_lines), log_lines


def test_a_body_that_never_arrives_gets_408_and_its_connection_closed(colorizer, start_server):
    with start_server(colorizer, size=64, body_timeout=1) as url:
        s = raw_request(url, b"POST /api/colorize HTTP/1.1\r\nContent-Length: 20000000\r\n\r\n", b"\xff\xd8\xff\xe0")
        answer, seconds = read_until_closed(s, timeout=20)
        assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive within 1 s" in answer, answer
        assert seconds < 10
        assert url.app.state.queue.taken == 0                                 # its place in line is free
        assert httpx.post(f"{url}/api/colorize", content=photo(), timeout=60).status_code == 200


def test_a_connection_that_never_finishes_its_headers_is_closed(colorizer, start_server):
    with start_server(colorizer, size=64, header_timeout=1) as url:
        half = raw_request(url, b"POST /api/colorize HTTP/1.1\r\nContent-Le")
        host, port = url.removeprefix("http://").split(":")
        silent = socket.create_connection((host, int(port)))
        for s in (half, silent):
            answer, seconds = read_until_closed(s, timeout=20)
            assert answer == b"" and seconds < 10
        assert httpx.get(f"{url}/api/health", timeout=10).status_code == 200


def test_an_aborted_upload_logs_one_line(colorizer, start_server, capsys, gate):
    with start_server(colorizer, size=64) as url:
        s = raw_request(url, b"POST /api/colorize HTTP/1.1\r\nContent-Length: 5000000\r\n\r\n", photo() + b"\0" * 100_000)
        time.sleep(0.5)
        s.close()
        err = ""
        deadline = time.time() + 20
        while "went away" not in err and time.time() < deadline:
            time.sleep(0.1)
            err += capsys.readouterr().err
        time.sleep(0.5)                                     # anything else it would log comes now
        err += capsys.readouterr().err
        assert httpx.get(f"{url}/api/health", timeout=10).status_code == 200
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "went away during its upload" in lines[0], err
    assert gate.decoded == 0


def test_other_origins_and_foreign_host_names_are_refused(colorizer, start_server, gate):
    png = photo()
    with start_server(colorizer, size=64) as url, httpx.Client(timeout=60) as c:
        port = url.rsplit(":", 1)[1]
        api = f"{url}/api/colorize"
        for origin in ("https://evil.example", f"http://evil.example:{port}", "http://127.0.0.1:1", "null"):
            r = c.post(api, content=png, headers={"Origin": origin})
            assert r.status_code == 403 and "not allowed" in r.json()["detail"], (origin, r.text)
        r = c.post(api, content=png, headers={"Host": f"rebound.example:{port}"})      # DNS rebinding
        assert r.status_code == 403 and "--allow-origin" in r.json()["detail"]
        assert c.get(f"{url}/api/health", headers={"Host": f"rebound.example:{port}"}).status_code == 403
        assert gate.decoded == 0
        for origin in (f"http://127.0.0.1:{port}", f"http://localhost:{port}"):         # its own page
            assert c.post(api, content=png, headers={"Origin": origin}).status_code == 200, origin
        assert c.get(f"{url}/api/health", headers={"Host": f"localhost:{port}"}).status_code == 200
    with start_server(colorizer, size=64, allow_origin=("https://app.example", "http://box.lan:8000")) as url, \
            httpx.Client(timeout=60) as c:
        api = f"{url}/api/colorize"
        assert c.post(api, content=png, headers={"Origin": "https://app.example"}).status_code == 200
        assert c.post(api, content=png, headers={"Origin": "http://app.example"}).status_code == 403
        assert c.post(api, content=png, headers={"Host": "box.lan:8000", "Origin": "http://box.lan:8000"}).status_code == 200


def test_bound_to_every_interface_any_address_but_no_unknown_name_is_accepted():
    guard = HostOriginGuard(None, host="0.0.0.0", port=8000)
    assert guard.refusal({b"host": b"192.168.1.20:8000", b"origin": b"http://192.168.1.20:8000"}) is None
    assert guard.refusal({b"host": b"[fe80::1]:8000"}) is None and guard.refusal({b"host": b"localhost:8000"}) is None
    assert "not this server's address" in guard.refusal({b"host": b"attacker.example:8000"})
    assert "not this server's address" in guard.refusal({b"host": b"192.168.1.20:9000"})
    assert "not allowed" in guard.refusal({b"host": b"192.168.1.20:8000", b"origin": b"http://attacker.example"})
    behind_proxy = HostOriginGuard(None, host="127.0.0.1", port=8000, allow_origins=("https://colors.example",))
    assert behind_proxy.refusal({b"host": b"colors.example", b"origin": b"https://colors.example"}) is None
    assert behind_proxy.refusal({b"host": b"colors.example:8443"}) is not None


def test_bad_temperatures_get_422_and_stop_the_server_from_starting(colorizer, start_server, ckpt, gate):
    with start_server(colorizer, size=64) as url, httpx.Client(timeout=60) as c:
        for t in ("nan", "inf", "-1", "1e-300", "1000", "warm"):
            r = c.post(f"{url}/api/colorize", params={"temperature": t}, content=photo())
            assert r.status_code == 422 and "finite number between 0.01 and 100" in r.json()["detail"], (t, r.text)
        assert gate.decoded == 0
        assert c.post(f"{url}/api/colorize", params={"temperature": "0.5"}, content=photo()).status_code == 200
    with socket.socket() as taken:                    # were it not refused, it would fail to bind here, not hang
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        for t in ("nan", "1e-300", "inf"):
            res = CliRunner().invoke(cli, ["serve", "--checkpoint", str(ckpt), "--port", port, "--temperature", t])
            # refused as a bad option, like every option of the CLI (click's usage line, then one error line)
            assert res.exit_code == 2 and "Traceback" not in res.output, res.output
            errors = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
            assert len(errors) == 1 and "'--temperature'" in errors[0], res.output
            assert "finite number between 0.01 and 100" in errors[0], res.output
    res = CliRunner().invoke(cli, ["serve", "--checkpoint", str(ckpt), "--allow-origin", "example.org"])
    assert res.exit_code == 1 and "is not an origin like" in res.output


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads the server's RSS from /proc")
def test_many_large_uploads_at_once_are_spooled_to_disk_not_memory(ckpt):
    """16 clients upload 8 MB each at once to a server whose queue admits them all: its RSS grows by far less
    than the 128 MB that holding the bodies in memory would take."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "serve", "--checkpoint", str(ckpt), "--port",
                               str(port), "--size", "64", "--device", "cpu", "--queue", "16", "--max-mb", "9"],
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    body = photo(60, 40) + b"\0" * (8 * 2**20)            # decoders stop at the image's end: small work
    try:
        deadline = time.time() + 120
        while True:
            try:
                assert httpx.post(f"{url}/api/colorize", content=photo(), timeout=60).status_code == 200
                break
            except httpx.TransportError:
                assert server.poll() is None and time.time() < deadline, "the server did not start"
                time.sleep(0.3)
        before, peak, done = _rss(server.pid), 0, threading.Event()

        def sample():
            nonlocal peak
            while not done.is_set():
                peak = max(peak, _rss(server.pid))
                time.sleep(0.01)
        sampler = threading.Thread(target=sample)
        sampler.start()
        barrier = threading.Barrier(16)

        def post(_):
            with httpx.Client(timeout=120) as c:
                barrier.wait()
                return c.post(f"{url}/api/colorize", content=body).status_code
        try:
            with ThreadPoolExecutor(16) as pool:
                codes = list(pool.map(post, range(16)))
        finally:
            done.set()
            sampler.join()
    finally:
        server.terminate()
        server.wait(30)
    assert codes == [200] * 16
    assert peak - before < 64 * 2**20, f"RSS grew by {(peak - before) / 2**20:.0f} MB"
