"""gradserve_client: the Python SDK of gradserve.

Build an expression graph with `Graph` and the numpy-named op functions, then send it to a
server. The generated wire code and the tensor codec live in `gradserve_client.proto`.
"""

from . import composites as _composites
from . import graph as _graph
from . import ops as _ops
from .composites import *  # noqa: F403 - functions composed of ops (global_avg_pool)
from .graph import *  # noqa: F403 - Graph, Var, Operand, constant, OPSET
from .ops import *  # noqa: F403 - the op functions (generated from the opset) are the public API

__all__ = [*_graph.__all__, *_ops.__all__, *_composites.__all__]

# The clients, their exceptions and result types.
from . import errors as _errors
from . import training as _training
from ._channel import OWN_CONNECTION, TLS
from ._info import AttrInfo, OperatorInfo, ServerInfo
from .aio import AsyncClient
from .client import Client
from .errors import *  # noqa: F403 - GradserveError and one subclass per status code
from .local import LocalClient
from .training import *  # noqa: F403 - the optimisers, schedules, runs and their results

__all__ += [
    *_errors.__all__,
    "TLS",
    "OWN_CONNECTION",
    "AsyncClient",
    "AttrInfo",
    "Client",
    "LocalClient",
    "OperatorInfo",
    "ServerInfo",
    *_training.__all__,
]
