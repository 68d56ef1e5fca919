"""Running the collector's app: parse `--listen`, bind the socket, serve until SIGINT/SIGTERM.

The socket is bound before uvicorn starts so that "address in use" is a clear error, port 0
picks a free port whose number the caller can print, and the status line is printed only once
the port is really open. uvicorn shuts down gracefully on SIGINT/SIGTERM (in-flight batches
finish) and `serve` then returns normally, so the caller can close the store and exit 0.
"""

from __future__ import annotations

import signal
import socket

import uvicorn
from starlette.types import ASGIApp


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `[v6addr]:PORT` or `:PORT` (all interfaces) -> (host, port).

    Raises ValueError with a message fit for the user.
    """
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:7400, [::1]:7400, :7400)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "0.0.0.0", int(port_text)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port). Raises OSError (address in use, bad address)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(512)
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock


def bound_url(sock: socket.socket) -> str:
    """`http://HOST:PORT` for a bound socket (IPv6 hosts in brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(app: ASGIApp, sock: socket.socket) -> None:
    """Serve `app` on `sock` until SIGINT or SIGTERM, then return after a graceful shutdown."""
    config = uvicorn.Config(app, log_config=None, log_level="warning", access_log=False,
                            lifespan="off", server_header=False, timeout_graceful_shutdown=30)
    server = uvicorn.Server(config)
    # uvicorn re-raises the signal that stopped it once it is done; with these no-op handlers
    # in place that re-raise is harmless and the caller gets to clean up and exit 0.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
