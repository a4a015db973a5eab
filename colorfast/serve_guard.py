"""What a connection and a request must be before `cli.py serve`'s app does any work for them.

HostOriginGuard (ASGI middleware): 403 for a request whose Origin header is not the server's own origin nor one
named by --allow-origin (any web page could otherwise POST photos to it: a form or fetch needs no permission to
send), and for a Host header that names neither the bound address nor an allowed origin's host (DNS rebinding:
a page whose domain now resolves to 127.0.0.1 sends its own name as Host). Bound to loopback, 127.0.0.1,
localhost and [::1] are the same server. Bound to every interface (0.0.0.0 or ::), any IP address or localhost
with the right port is accepted: a rebinding page can only send a domain name, so a name still needs
--allow-origin.

HeaderTimeoutH11 (uvicorn protocol): closes a connection that has not completed a request's headers within
`header_timeout` seconds of opening or of its last response. uvicorn has no header timeout of its own: a client
that sends half a request line and stops, or keeps trickling the rest of a refused upload, is held forever.
"""
from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from uvicorn.protocols.http.h11_impl import H11Protocol

LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}


def parse_origin(origin: str) -> tuple[str, str, int]:
    """'http://name:port' -> (scheme, host, port); ValueError in one line for anything else (a path, no host)."""
    parts = urlsplit(origin)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") or \
            parts.query or parts.fragment or port == -1 or parts.username:
        raise ValueError(f"--allow-origin {origin!r} is not an origin like http://example.org:8000")
    return parts.scheme, parts.hostname.lower(), port or (443 if parts.scheme == "https" else 80)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


class HostOriginGuard:
    def __init__(self, app, host: str, port: int, allow_origins: tuple[str, ...] = ()):
        self.app, self.port = app, port
        self.allowed_origins = {parse_origin(o) for o in allow_origins}
        self.allowed_hosts = {(h, p) for _, h, p in self.allowed_origins}
        host = host.lower().strip("[]")
        self.any_ip = host in ("0.0.0.0", "::", "")
        self.own_names = LOOPBACK_NAMES if host in LOOPBACK_NAMES or host.startswith("127.") else {host}

    def is_own(self, name: str, port: int) -> bool:
        """Whether host `name`:`port` is this server's own address."""
        return port == self.port and (name in self.own_names or (self.any_ip and (name == "localhost" or _is_ip(name))))

    def refusal(self, headers: dict[bytes, bytes]) -> str | None:
        """Why this request is refused, or None."""
        host = headers.get(b"host", b"").decode("latin-1")
        try:
            _, name, port = parse_origin(f"http://{host}")
        except ValueError:
            return f"Host {host!r} is not host:port"
        # without a port, Host means the scheme's default: 80, or 443 behind an https proxy
        ports = {port} if ":" in host.rsplit("]", 1)[-1] else {80, 443}
        if not (self.is_own(name, port) or any((name, p) in self.allowed_hosts for p in ports)):
            return (f"Host {host!r} is not this server's address; start it with --allow-origin http://{host} "
                    f"to serve that name")
        origin = headers.get(b"origin")
        if origin is not None:
            origin = origin.decode("latin-1")
            try:
                scheme, name, port = parse_origin(origin)
            except ValueError:
                return f"requests from origin {origin!r} are not allowed"
            if not (scheme == "http" and self.is_own(name, port)) and (scheme, name, port) not in self.allowed_origins:
                return (f"requests from origin {origin!r} are not allowed; start the server with "
                        f"--allow-origin {origin} to let its pages use this API")
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            why = self.refusal(dict(scope["headers"]))
            if why is not None:
                from starlette.responses import JSONResponse
                await JSONResponse({"detail": why}, status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class HeaderTimeoutH11(H11Protocol):
    """uvicorn's h11 protocol, closing connections that take longer than `header_timeout` to send headers."""
    header_timeout = 10.0

    def connection_made(self, transport):
        super().connection_made(transport)
        self._header_timer = None
        self._arm_header_timer()

    def on_response_complete(self):
        super().on_response_complete()
        self._arm_header_timer()

    def connection_lost(self, exc):
        if self._header_timer is not None:
            self._header_timer.cancel()
        super().connection_lost(exc)

    def _arm_header_timer(self):
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_overdue, self.cycle)

    def _headers_overdue(self, cycle_when_armed):
        # a request whose headers arrived meanwhile made a new cycle (its body has the app's own timeout)
        if self.cycle is cycle_when_armed and not self.transport.is_closing():
            self.transport.close()


def protocol_with_header_timeout(seconds: float) -> type[H11Protocol]:
    return type("HeaderTimeoutH11", (HeaderTimeoutH11,), {"header_timeout": seconds})
