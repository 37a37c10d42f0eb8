"""The package version, in one place (imported by the package and by every file format that records it)."""
__version__ = "0.1.0"
