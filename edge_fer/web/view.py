"""The web view's life in the service: started with it, restarted when a reload changes the `web` section."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from edge_fer.config import WebConfig
from edge_fer.errors import EdgeFerError
from edge_fer.web.feed import Feed
from edge_fer.web.server import WebServer

log = logging.getLogger(__name__)


class WebView:
    """The server for the current `web` section, or none while it is off."""

    def __init__(self, feed: Feed) -> None:
        self.feed = feed
        self.server: WebServer | None = None

    def apply(self, cfg: WebConfig) -> None:
        """Serve `cfg` (nothing to do when it is what runs); EdgeFerError when its address cannot be used."""
        if self.server is not None and self.server.cfg == cfg:
            return
        self.close()
        if cfg.enabled:
            self.server = WebServer(cfg, self.feed).start()

    def reload(self, cfg: WebConfig) -> None:
        """apply() for a reload: a new address that cannot be used is logged, and the view stays off."""
        try:
            self.apply(cfg)
        except EdgeFerError as e:
            log.error("web view off: %s", e)

    def close(self) -> None:
        """Stop the server, if one runs."""
        if self.server is not None:
            self.server.stop()
            self.server = None

    @contextmanager
    def serving(self, cfg: WebConfig) -> Iterator[None]:
        """The view for as long as the service runs."""
        self.apply(cfg)
        try:
            yield
        finally:
            self.close()
