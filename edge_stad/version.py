"""The package version (a leaf module: everything that records it imports this, not the package)."""
__version__ = "0.1.0"
