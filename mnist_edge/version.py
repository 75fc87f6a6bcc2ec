"""The package version, in one place (the wheel, the manifests and the checkpoints record it)."""

__version__ = "0.1.0"
