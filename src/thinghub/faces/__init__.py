"""API faces: one package per cloud API, each a thin adapter over the core services."""
