"""Where the shipped model files are: inside the installed package, or models/ in a source tree."""

from __future__ import annotations

import importlib.util
from importlib import resources
from pathlib import Path


def shipped_model(name: str) -> Path:
    """The path of a file shipped in models/ (installed as edge_fer.models)."""
    # Installed, edge_fer.models holds it; run from a source tree without installing, models/ does.
    if importlib.util.find_spec("edge_fer.models") is not None:
        shipped = Path(str(resources.files("edge_fer.models") / name))
        if shipped.is_file():
            return shipped
    return Path(__file__).resolve().parent.parent / "models" / name
