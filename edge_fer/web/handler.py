"""One HTTP connection of the web view: the checks (host, origin, login), the routes, the two kinds of stream."""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
import time
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

from edge_fer.config import is_loopback
from edge_fer.web import metrics, pages
from edge_fer.web.auth import COOKIE, Verdict
from edge_fer.web.niceness import yield_to_pipeline
from edge_fer.web.state import STALE_SECONDS, state_doc

if TYPE_CHECKING:
    from edge_fer.web.server import _Server

log = logging.getLogger(__name__)

BOUNDARY = "frame"
KEEPALIVE_SECONDS = 15.0  # an idle event feed sends a comment this often, so proxies keep it open
MAX_BODY = 4096  # a login form is a password; anything larger is refused unread
LOOPBACK_NAMES = {"localhost", "localhost."}
STREAM_SEND_BUFFER = 256 * 1024
SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    # Not no-referrer: with it a browser sends "Origin: null" on the login form, and the origin check cannot pass.
    ("Referrer-Policy", "same-origin"),
    # No other origin may embed, frame or script the view: the page uses only its own files.
    ("Content-Security-Policy", "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; "
                                "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    ("Cache-Control", "no-store"),
)


class Handler(BaseHTTPRequestHandler):
    """One connection: requests in turn (HTTP/1.1 keep-alive), or one stream until the client or server leaves."""

    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "edge-fer"
    # Errors found before the request's version is read are answered with a status line too (not as HTTP/0.9).
    default_request_version = "HTTP/1.0"

    def version_string(self) -> str:
        return self.server_version

    def setup(self) -> None:
        yield_to_pipeline()  # each connection's own thread
        self.app = self.server.app
        self.limit = self.app.cfg.timeout_seconds
        self._head = False
        self._body_read = False
        if isinstance(self.request, ssl.SSLSocket):
            self.app.deadline(self.request, self.limit)
            try:
                self.request.do_handshake()
            except OSError:
                if self.app.waiting(self.request):  # failed by itself; one cut at its deadline was counted there
                    self.app.refuse("tls")
                raise
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        # The request line only, and only when debugging: no header (a password) is ever logged.
        log.debug("web %s: " + format, self.client_address[0], *args)

    def handle_one_request(self) -> None:
        # Until the request is in, only its deadline counts (the sweeper closes it); then each read and write has
        # web.timeout_seconds, so a stream client that stops reading is let go after it.
        self.request.settimeout(None)
        self.app.deadline(self.request, self.limit)
        self._head = self._body_read = False
        try:
            super().handle_one_request()
        except (OSError, ValueError) as e:  # the client left, timed out, or was shut by the sweeper
            log.debug("web client %s: %s", self.client_address[0], e)
            self.close_connection = True
        finally:
            self.app.deadline(self.request, None)

    def parse_request(self) -> bool:
        if not super().parse_request():
            self.app.refuse("malformed")
            return False
        if len(self.requestline.split()) == 2:  # HTTP/0.9: no headers, so no Host, no login, no answer's headers
            self.app.refuse("malformed")
            self.send_error(HTTPStatus.BAD_REQUEST, "HTTP/0.9 is not served")
            return False
        return True

    def end_headers(self) -> None:
        for name, value in SECURITY_HEADERS:
            self.send_header(name, value)
        super().end_headers()

    # Answers --------------------------------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        if not self._body_read and (self.headers.get("Content-Length", "0") not in ("", "0")
                                    or "Transfer-Encoding" in self.headers):
            self.close_connection = True  # a body left unread would be taken for the next request
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if not self._head:
            self.wfile.write(body)

    def _text(self, status: int, text: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        self._send(status, (text + "\n").encode(), "text/plain; charset=utf-8", headers)

    def _json(self, status: int, doc: dict[str, Any]) -> None:
        self._send(status, json.dumps(doc, separators=(",", ":")).encode(), "application/json")

    def _refused(self, status: HTTPStatus, reason: str, text: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.app.refuse(reason)
        self._text(status, text, headers)

    # Checks ---------------------------------------------------------------------------------------------------

    def _host_allowed(self) -> bool:
        """On loopback only loopback names: a page elsewhere that rebinds its DNS name to 127.0.0.1 is refused."""
        if not self.app.loopback:
            return True
        host = urllib.parse.urlsplit(f"//{self.headers.get('Host', '')}").hostname or ""
        try:
            return host in LOOPBACK_NAMES or is_loopback(host)
        except ValueError:
            return False

    def _navigation(self) -> bool:
        """A browser opening a page (a link followed, an address typed), not a page's own request."""
        dest = self.headers.get("Sec-Fetch-Dest")
        if dest is not None:
            return dest == "document" and self.headers.get("Sec-Fetch-Mode") == "navigate"
        return "text/html" in self.headers.get("Accept", "")

    def _same_origin(self) -> bool:
        """No other origin: Origin, when sent, is ours; a browser's cross-site request only as a navigation."""
        origin = self.headers.get("Origin")
        if origin is not None and origin != f"{self.app.scheme}://{self.headers.get('Host', '')}":
            return False
        site = self.headers.get("Sec-Fetch-Site")
        if site in ("cross-site", "same-site"):
            return self.command == "GET" and self._navigation()
        return True

    def _admitted(self, path: str) -> bool:
        """Host, origin and login checks; False once the refusal is sent."""
        if not self._host_allowed():
            self._refused(HTTPStatus.FORBIDDEN, "host", "forbidden: this server answers to localhost only")
            return False
        if not self._same_origin():
            self._refused(HTTPStatus.FORBIDDEN, "origin", "forbidden: cross-origin request")
            return False
        if path in pages.PUBLIC or path in ("/login", "/healthz", "/logout"):
            return True
        verdict = self.app.gate.check(self.headers, self.client_address[0])
        if verdict is Verdict.ALLOWED:
            return True
        if verdict is Verdict.THROTTLED:
            self._refused(HTTPStatus.TOO_MANY_REQUESTS, "throttled", "too many wrong passwords: wait a minute",
                          (("Retry-After", "60"),))
        elif path == "/" and self.command == "GET" and self._navigation() and verdict is Verdict.MISSING:
            self.app.refuse("login")
            self._send(HTTPStatus.SEE_OTHER, b"", "text/plain", (("Location", "login"),))
        else:
            # A page's own requests (an image, the event feed) get no Basic challenge: no password dialog over it.
            quiet = self.headers.get("Sec-Fetch-Dest", "document") != "document"
            challenge = () if quiet else (("WWW-Authenticate", 'Basic realm="edge-fer"'),)
            self._refused(HTTPStatus.UNAUTHORIZED, "login", "login required", challenge)
        return False

    def _request_in(self) -> None:
        """The request has arrived: its deadline ends, and its answer's writes get the timeout."""
        self.app.deadline(self.request, None)
        self.request.settimeout(self.limit)

    # Routes ---------------------------------------------------------------------------------------------------

    def do_HEAD(self) -> None:
        self._head = True
        self.do_GET()

    def do_GET(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if path == "/index.html":
            path = "/"
        if not self._admitted(path):
            return
        self._request_in()
        asset = self.app.assets.get(path)
        if asset is not None:
            self._send(HTTPStatus.OK, asset.body, asset.content_type)
        elif path == "/login":
            self._send(HTTPStatus.OK, pages.login_page(), "text/html; charset=utf-8")
        elif path == "/stream.mjpg":
            self._stream()
        elif path == "/events":
            self._events()
        elif path == "/snapshot.jpg":
            picture = self.app.hub.snapshot()
            if picture is None:
                self._text(HTTPStatus.SERVICE_UNAVAILABLE, "no frame yet")
            else:
                self._send(HTTPStatus.OK, picture.jpeg, "image/jpeg")
        elif path == "/api/state":
            doc = state_doc(self.app.feed, recent=self.app.cfg.recent_events)
            doc["login"] = self.app.gate.required
            self._json(HTTPStatus.OK, doc)
        elif path == "/healthz":
            self._health()
        elif path == "/metrics":
            body = metrics.render(self.app.feed, self.app.web_counts()).encode()
            self._send(HTTPStatus.OK, body, metrics.CONTENT_TYPE)
        else:
            self._refused(HTTPStatus.NOT_FOUND, "not_found", "not found")

    def do_POST(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if path not in ("/login", "/logout"):
            self._refused(HTTPStatus.NOT_FOUND, "not_found", "not found")
            return
        if not self._admitted(path):
            return
        length = self.headers.get("Content-Length", "")
        if not length.isdigit() or int(length) > MAX_BODY:
            self.close_connection = True
            self._refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE if length.isdigit() else HTTPStatus.LENGTH_REQUIRED,
                          "malformed", "a login form is a password")
            return
        body = self.rfile.read(int(length))
        self._body_read = True
        self._request_in()
        secure = "; Secure" if self.app.cfg.tls else ""
        if path == "/logout":
            self.app.gate.logout(self.headers)
            self._send(HTTPStatus.SEE_OTHER, b"", "text/plain",
                       (("Location", "login"), ("Set-Cookie", f"{COOKIE}=; Path=/; Max-Age=0; HttpOnly; "
                                                              f"SameSite=Lax{secure}")))
            return
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"), max_num_fields=4)
        verdict, token = self.app.gate.login((form.get("password") or [""])[0], self.client_address[0])
        if verdict is Verdict.ALLOWED:
            log.info("web: login from %s", self.client_address[0])
            cookie = (f"{COOKIE}={token}; Path=/; Max-Age={int(self.app.gate.session_seconds)}; HttpOnly; "
                      f"SameSite=Lax{secure}")
            self._send(HTTPStatus.SEE_OTHER, b"", "text/plain", (("Location", "./"), ("Set-Cookie", cookie)))
        elif verdict is Verdict.THROTTLED:
            self.app.refuse("throttled")
            self._send(HTTPStatus.TOO_MANY_REQUESTS, pages.login_page("Too many wrong passwords: wait a minute."),
                       "text/html; charset=utf-8", (("Retry-After", "60"),))
        else:
            log.warning("web: wrong password from %s", self.client_address[0])
            self.app.refuse("wrong_password")
            self._send(HTTPStatus.UNAUTHORIZED, pages.login_page("Wrong password."), "text/html; charset=utf-8")

    def _health(self) -> None:
        live = self.app.feed.latest
        camera = self.app.feed.camera
        fresh = live is not None and time.monotonic() - live.result.frame.t <= STALE_SECONDS
        healthy = camera == "ok" and fresh
        self._json(HTTPStatus.OK if healthy else HTTPStatus.SERVICE_UNAVAILABLE,
                   {"status": "ok" if healthy else "unhealthy", "camera": camera})

    def _open_stream(self, content_type: str, limit: threading.BoundedSemaphore, reason: str) -> bool:
        """The headers of an endless answer; False (answered 503) when that kind of stream is at its limit."""
        if not limit.acquire(blocking=False):
            self.close_connection = True
            self._refused(HTTPStatus.SERVICE_UNAVAILABLE, reason, "too many clients", (("Retry-After", "5"),))
            return False
        self.close_connection = True
        # A modest send buffer: a client that stops reading blocks a write (and is let go) after a few pictures,
        # not after the megabytes the kernel would otherwise hold for it.
        self.request.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SEND_BUFFER)
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Connection", "close")
        self.end_headers()
        return True

    def _stream(self) -> None:
        """MJPEG: each encoded picture once; a client that falls behind gets the newest, and skips the rest."""
        app, hub = self.app, self.app.hub
        if not self._open_stream(f"multipart/x-mixed-replace; boundary={BOUNDARY}", app.streams, "streams"):
            return
        app.count("stream_clients", 1)
        hub.watch(1)
        sent = 0
        try:
            if self._head:
                return
            self.wfile.write(f"--{BOUNDARY}\r\n".encode())
            while not hub.stopping:
                with hub.changed:
                    hub.changed.wait_for(lambda sent=sent: hub.stopping or (  # type: ignore[misc]
                        hub.picture is not None and hub.picture.number != sent), KEEPALIVE_SECONDS)
                picture = hub.picture
                if hub.stopping or picture is None or picture.number == sent:
                    continue
                if sent:
                    app.count("skipped", max(0, picture.number - sent - 1))
                # The boundary right after each picture: browsers show a part once the next boundary arrives.
                self.wfile.write(b"Content-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(picture.jpeg)
                                 + picture.jpeg + f"\r\n--{BOUNDARY}\r\n".encode())
                sent = picture.number
        except TimeoutError:
            app.refuse("stalled")
            log.info("web stream client %s stopped reading: closed after %.0f s", self.client_address[0], self.limit)
        except OSError as e:
            log.debug("web stream client %s left: %s", self.client_address[0], e)
        finally:
            if sent and hub.picture is not None:
                app.count("skipped", max(0, hub.picture.number - sent))  # the ones it missed before it left
            hub.watch(-1)
            app.count("stream_clients", -1)
            app.streams.release()

    def _events(self) -> None:
        """Server-sent events: 'state' whenever it changes, 'track' for each event; a missed event is resent."""
        app, hub, feed = self.app, self.app.hub, self.app.feed
        if not self._open_stream("text/event-stream; charset=utf-8", app.feeds, "event_clients"):
            return
        app.count("event_clients", 1)
        hub.listen(1)
        try:
            if self._head:
                return
            # After the event a reconnecting browser names, or the one the page's state ended with, else from now.
            after = self.headers.get("Last-Event-ID") or urllib.parse.parse_qs(
                urllib.parse.urlsplit(self.path).query).get("after", [""])[0]
            seen = int(after) if after.isdigit() else feed.event_no
            state_no = hub.state_no
            self.wfile.write(b"retry: 2000\n\nevent: state\ndata: %s\n\n" % hub.state_json())  # the state now
            while not hub.stopping:
                new = list(feed.events_after(seen))
                out = [b"id: %d\nevent: track\ndata: %s\n\n" % (n, json.dumps(doc, separators=(",", ":")).encode())
                       for n, doc in new]
                if new:
                    seen = new[-1][0]
                if hub.state_no != state_no:
                    state_no = hub.state_no
                    out.append(b"event: state\ndata: %s\n\n" % hub.state)
                self.wfile.write(b"".join(out) or b": keep-alive\n\n")
                with hub.changed:
                    hub.changed.wait_for(lambda seen=state_no: hub.stopping or hub.state_no != seen,  # type: ignore[misc]
                                         KEEPALIVE_SECONDS)
        except TimeoutError:
            app.refuse("stalled")
            log.info("web event client %s stopped reading: closed after %.0f s", self.client_address[0], self.limit)
        except OSError as e:
            log.debug("web event client %s left: %s", self.client_address[0], e)
        finally:
            hub.listen(-1)
            app.count("event_clients", -1)
            app.feeds.release()
