"""Evidence Archiver: preserve cited online evidence with a verifiable chain of custody."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("evidence-archiver")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

SOFTWARE = f"evidence-archiver/{__version__}"

__all__ = ["SOFTWARE", "__version__"]
