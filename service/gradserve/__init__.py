"""gradserve: the server side of the gradient-computation service."""

from importlib import metadata

try:
    __version__ = metadata.version("gradserve")
except metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
