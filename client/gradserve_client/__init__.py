"""gradserve_client: the Python SDK of gradserve.

Build an expression graph with `Graph` and the numpy-named op functions, then send it to a
server. The generated wire code and the tensor codec live in `gradserve_client.proto`.
"""

from . import graph as _graph
from .graph import *  # noqa: F403 - the op functions are the public API, listed in graph.__all__

__all__ = [*_graph.__all__]
