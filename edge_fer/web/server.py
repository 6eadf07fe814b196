"""The web view's server: the standard library's ThreadingHTTPServer on web.listen, with TLS, bounded connections
and the deadline sweeper."""

from __future__ import annotations

import logging
import socket
import ssl
import sys
import threading
from http.server import ThreadingHTTPServer
from typing import Any

from edge_fer.config import WebConfig
from edge_fer.errors import EdgeFerError
from edge_fer.web.app import App
from edge_fer.web.feed import Feed
from edge_fer.web.handler import Handler
from edge_fer.web.niceness import yield_to_pipeline

log = logging.getLogger(__name__)

SWEEP_SECONDS = 0.25  # how often connections past their deadline are looked for


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer with a bound on connections, TLS handshakes off the accepting thread, and quiet errors."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 32

    def __init__(self, app: App, context: ssl.SSLContext | None) -> None:
        host, port = app.cfg.address
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.app = app
        super().__init__((host, port), Handler)
        if context is not None:
            # The handshake waits for the client: done on the request's thread, under its deadline.
            self.socket = context.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.app.connections.acquire(blocking=False):
            self.app.refuse("connections")
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self.app.connections.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.app.deadline(request, None)
            self.app.connections.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that leaves, times out or speaks no TLS is no error of ours; anything else is a bug, logged.
        exc = sys.exc_info()[1]
        if isinstance(exc, (OSError, ValueError)):
            log.debug("web client %s: %s", client_address[0], exc)
        else:
            log.exception("web request from %s failed", client_address[0])


def tls_context(cfg: WebConfig) -> ssl.SSLContext:
    """The server's TLS context from web.certfile and web.keyfile (checked when the config was loaded)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cfg.certfile, cfg.keyfile or None, password=lambda: b"")
    return context


class WebServer:
    """The view on web.listen: the server's thread, the hub's, and the deadline sweeper's."""

    def __init__(self, cfg: WebConfig, feed: Feed) -> None:
        self.cfg = cfg
        self.app = App(cfg, feed)
        self._server: _Server | None = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    @property
    def url(self) -> str:
        """Where the page is."""
        host, port = self._server.server_address[:2] if self._server else self.cfg.address
        host = str(host)
        shown = f"[{host}]" if ":" in host else host
        return f"{self.app.scheme}://{shown}:{port}/"

    def start(self) -> WebServer:
        """Bind and serve; a clear EdgeFerError when the address cannot be used."""
        try:
            self._server = _Server(self.app, tls_context(self.cfg) if self.cfg.tls else None)
        except (OSError, ssl.SSLError) as e:
            raise EdgeFerError(f"web.listen {self.cfg.listen}: cannot listen ({e.strerror or e})") from None
        self.app.hub.start()
        self._threads = [threading.Thread(target=self._serve, name="web", daemon=True),
                         threading.Thread(target=self._sweep, name="web-sweep", daemon=True)]
        for t in self._threads:
            t.start()
        login = "login required" if self.app.gate.required else "no login: loopback only"
        log.info("web view on %s (%s)", self.url, login)
        return self

    def _serve(self) -> None:
        yield_to_pipeline()
        assert self._server is not None
        self._server.serve_forever(poll_interval=0.2)

    def _sweep(self) -> None:
        yield_to_pipeline()
        while not self._stop.wait(SWEEP_SECONDS):
            self.app.sweep()

    def stop(self) -> None:
        """Stop accepting, end the streams, and release the port."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self.app.hub.stop()  # wakes the streams, which then leave
        for t in self._threads:
            t.join(2)
        self._server = None
