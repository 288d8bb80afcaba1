"""The only place where protobuf meets numpy: codec, errors, graph cache, the steps every
request shares (requests), servicer, handlers, interceptors; and the in-process entry point
(inprocess) that LocalClient runs."""

from gradserve.rpc.graph_cache import GraphCache
from gradserve.rpc.handlers import SERVICE_NAME, add_to_server
from gradserve.rpc.servicer import GradientServicer

__all__ = ["SERVICE_NAME", "GradientServicer", "GraphCache", "add_to_server"]
