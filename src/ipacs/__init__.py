"""iPACS: an open-source research-imaging archive."""

__version__ = "0.1.0"
