"""Fixtures: a local HTTP server standing in for the publisher of released weights (no network here), and a real
uvicorn server for colorfast.serve's app."""
import functools
import http.server
import socket
import threading
import time
from contextlib import contextmanager

import pytest
import torch

from released_weights import released_state_dict


class _Quiet(http.server.SimpleHTTPRequestHandler):
    requests: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        type(self).requests.append(self.path)
        super().do_GET()


@pytest.fixture(scope="module")
def ckpt(tiny_runs):
    """The tiny CE run's checkpoint (tests/conftest.py's tiny_runs), as a path string."""
    return str(tiny_runs[1]["ce"])


@pytest.fixture
def file_server(tmp_path):
    """(folder served, base URL, list of requested paths): a threaded http.server on localhost."""
    root = tmp_path / "served"
    root.mkdir()
    handler = type("Handler", (_Quiet,), {"requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}", handler.requests
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def released_file(tmp_path_factory):
    """(path, state dict) of a tiny released-layout state dict saved as a plain .pth."""
    sd = released_state_dict()
    path = tmp_path_factory.mktemp("released") / "tiny_released.pth"
    torch.save(sd, path)
    return path, sd


class ServerURL(str):
    """The base URL, with the app behind it (`url.app.state.queue`)."""

    def __new__(cls, url: str, app):
        self = super().__new__(cls, url)
        self.app = app
        return self


@contextmanager
def live_server(colorizer, **cfg):
    """A real uvicorn server for colorfast.serve's app on a free localhost port, in a thread, configured as
    `cli.py serve` configures it -> base URL."""
    uvicorn = pytest.importorskip("uvicorn", reason="serve needs the web extra (fastapi, uvicorn)")
    from colorfast.serve import ServeConfig, create_app, uvicorn_config
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = ServeConfig(**{"host": "127.0.0.1", "port": port, **cfg})
    app = create_app(colorizer, config)
    server = uvicorn.Server(uvicorn_config(app, config, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert thread.is_alive() and time.time() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield ServerURL(f"http://127.0.0.1:{port}", app)
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(scope="session")
def start_server():
    """live_server as a fixture: `with start_server(colorizer, max_mb=1) as url: ...`."""
    return live_server
