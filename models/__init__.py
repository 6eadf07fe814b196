"""The shipped models (installed as edge_fer.models)."""
