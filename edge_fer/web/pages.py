"""The page's files, shipped in the package and read once: plain HTML, JavaScript and CSS (no build, no CDN)."""

from __future__ import annotations

import html
from dataclasses import dataclass
from importlib import resources

# Served by name: (file, content type). Anyone may fetch the public ones (the login page needs them).
FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
    "/icon.svg": ("icon.svg", "image/svg+xml"),
}
PUBLIC = {"/style.css", "/icon.svg"}
MESSAGE_MARK = "<!--message-->"


@dataclass(frozen=True)
class Asset:
    """One file's bytes and content type."""

    body: bytes
    content_type: str


def load() -> dict[str, Asset]:
    """Every page file, by the path it is served at."""
    static = resources.files("edge_fer.web") / "static"
    return {path: Asset((static / name).read_bytes(), kind) for path, (name, kind) in FILES.items()}


def login_page(message: str = "") -> bytes:
    """The login form, with a message above it (our own words, escaped all the same)."""
    text = (resources.files("edge_fer.web") / "static" / "login.html").read_text(encoding="utf-8")
    shown = f'<p class="message" id="message">{html.escape(message)}</p>' if message else ""
    return text.replace(MESSAGE_MARK, shown).encode()
