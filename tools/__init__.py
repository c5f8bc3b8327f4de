"""Tools for the repository's own upkeep (not shipped, not benchmarks): run each from the
repository root as a module, e.g. ``python -m tools.render_docs --check``."""
