"""Fixtures: a local HTTP server standing in for the publisher of released weights (no network here)."""
import functools
import http.server
import threading

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
