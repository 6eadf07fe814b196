"""The `web` section: its address, its login's secret and its TLS files checked at load; HTTPS served for real."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_fer.config import as_dict, load
from edge_fer.errors import ConfigError
from edge_fer.web.feed import Feed
from edge_fer.web.server import WebServer
from tests.broker import free_port
from tests.conftest import ROOT

SECRET = "s3cret-not-shown"


def error_of(*overrides: str) -> str:
    with pytest.raises(ConfigError) as e:
        load(None, list(overrides))
    return str(e.value)


def test_off_by_default_on_loopback() -> None:
    web = load(None, []).web
    assert (web.enabled, web.listen, web.fps, web.loopback) == (False, "127.0.0.1:8080", 5.0, True)


@pytest.mark.parametrize("listen", ["\"8080\"", "localhost", "127.0.0.1:0", "127.0.0.1:65536", "example.com:80",
                                    "[::1]8080", ":8080", "::1:8080", "127.0.0.1:80a", "0.0.0.0:-1"])
def test_a_listen_address_that_is_not_ip_and_port_is_refused(listen: str) -> None:
    message = error_of(f"web.listen={listen}")
    assert "web.listen" in message and "must be HOST:PORT" in message


@pytest.mark.parametrize(("listen", "loopback"), [("localhost:8080", True), ("127.0.0.2:1", True),
                                                   ("[::1]:8080", True), ("0.0.0.0:8080", False),
                                                   ("[::]:8443", False), ("192.168.1.20:80", False)])
def test_loopback_is_told_from_other_addresses(listen: str, loopback: bool) -> None:
    assert load(None, [f"web.listen={listen}"]).web.loopback is loopback


def test_off_loopback_a_password_is_required() -> None:
    message = error_of("web.enabled=true", "web.listen=0.0.0.0:8080")
    assert "reachable from other machines" in message and "web.password" in message
    assert load(None, ["web.listen=0.0.0.0:8080"]).web.enabled is False  # off: nothing to protect
    assert load(None, ["web.enabled=true", "web.listen=0.0.0.0:8080", f"web.password={SECRET}"]).web.password == SECRET


def test_the_password_comes_from_the_environment_or_a_file_and_is_never_shown(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_FER_TEST_WEB", SECRET)
    web = load(None, ["web.enabled=true", "web.password_env=EDGE_FER_TEST_WEB"]).web
    assert web.password == SECRET and SECRET not in repr(web)
    assert "EDGE_FER_UNSET_WEB" in error_of("web.enabled=true", "web.password_env=EDGE_FER_UNSET_WEB")
    monkeypatch.setenv("EDGE_FER_EMPTY_WEB", "  ")
    assert "is empty" in error_of("web.enabled=true", "web.password_env=EDGE_FER_EMPTY_WEB")
    # A view that is off needs no password, even from a variable that is not set.
    assert load(None, ["web.password_env=EDGE_FER_UNSET_WEB"]).web.password == ""
    secret = tmp_path / "pw"
    secret.write_text(f"{SECRET}\nsecond line\n")
    assert load(None, ["web.enabled=true", f"web.password_file={secret}"]).web.password == SECRET
    secret.write_text("\n")
    assert "no password on its first line" in error_of("web.enabled=true", f"web.password_file={secret}")
    assert "a folder" in error_of("web.enabled=true", f"web.password_file={tmp_path}")
    # A wrong type names the key, not the value; the printed config masks it.
    assert SECRET not in error_of("web.password=[s3cret-not-shown]")
    cfg = load(None, [f"web.password={SECRET}"])
    assert as_dict(cfg)["web"]["password"] == "***"
    out = subprocess.run([sys.executable, "-m", "edge_fer", "--check-config", "--set", f"web.password={SECRET}"],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and SECRET not in out.stdout + out.stderr


OPENSSL = shutil.which("openssl")


def make_cert(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, and its key."""
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    subprocess.run([OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> tuple[Path, Path, Path]:
    if OPENSSL is None:
        pytest.skip("openssl is not installed (apt-get install openssl)")
    folder = tmp_path_factory.mktemp("certs")
    cert, key = make_cert(folder, "server")
    _, other = make_cert(folder, "other")
    return cert, key, other


def test_tls_files_are_checked_at_load(tmp_path: Path, certs: tuple[Path, Path, Path]) -> None:
    cert, key, other = certs
    assert "needs web.certfile" in error_of("web.tls=true")
    assert "cannot read" in error_of("web.tls=true", f"web.certfile={tmp_path / 'missing.crt'}")
    text = tmp_path / "text.crt"
    text.write_text("not a certificate\n")
    assert "holds no PEM certificate" in error_of("web.tls=true", f"web.certfile={text}")
    assert "holds no PEM private key" in error_of("web.tls=true", f"web.certfile={cert}", f"web.keyfile={cert}")
    assert "cannot be used together" in error_of("web.tls=true", f"web.certfile={cert}", f"web.keyfile={other}")
    both = tmp_path / "both.pem"
    both.write_text(cert.read_text() + key.read_text())
    assert load(None, ["web.tls=true", f"web.certfile={both}"]).web.certfile == str(both)  # the key in the file


@pytest.fixture
def https(certs: tuple[Path, Path, Path]) -> Iterator[tuple[WebServer, ssl.SSLContext]]:
    cert, key, _ = certs
    port = free_port()
    cfg = load(None, ["web.enabled=true", f"web.listen=127.0.0.1:{port}", "web.tls=true", f"web.certfile={cert}",
                      f"web.keyfile={key}", f"web.password={SECRET}", "web.timeout_seconds=2"])
    server = WebServer(cfg.web, Feed("tls")).start()
    client = ssl.create_default_context(cafile=str(cert))
    try:
        yield server, client
    finally:
        server.stop()


def test_https_is_served_and_plain_http_on_its_port_is_let_go(https: tuple[WebServer, ssl.SSLContext]) -> None:
    server, client = https
    port = server.cfg.address[1]
    assert server.url == f"https://127.0.0.1:{port}/"
    # Plain HTTP, and a client that opens the connection and never says hello: both are let go.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as plain:
        plain.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert not plain.makefile("rb").read().startswith(b"HTTP/")  # a TLS alert at most, then closed
    with socket.create_connection(("127.0.0.1", port), timeout=10) as silent:
        assert silent.recv(100) == b""  # closed at its deadline
    conn = http.client.HTTPSConnection("localhost", port, context=client, timeout=10)
    try:
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        assert resp.status == 503 and json.loads(resp.read()) == {"status": "unhealthy", "camera": "starting"}
        conn.request("POST", "/login", "password=" + SECRET, {"Content-Type": "application/x-www-form-urlencoded",
                                                              "Origin": f"https://localhost:{port}"})
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 303 and "; Secure" in resp.getheader("Set-Cookie")
        conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {SECRET}"})
        metrics = conn.getresponse().read().decode()
    finally:
        conn.close()
    assert 'edge_fer_web_refused_total{reason="tls"} 1' in metrics
    assert 'edge_fer_web_refused_total{reason="timeout"} 1' in metrics
