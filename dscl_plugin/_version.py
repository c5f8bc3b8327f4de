"""The package version; a leaf module, imported by the package ``__init__`` and by
whatever stamps results with it."""

__version__ = "0.1.0"
