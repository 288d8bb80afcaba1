"""Train and PutDataset: placeholders until the training RPCs land.

Each is a plain function of (servicer, request, context) so that the training engineer can
replace this module without touching the servicer. Raise ``errors.RpcError`` subclasses; the
servicer's ``rpc_method`` decorator maps them (and unparsable chunks) to statuses.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from gradserve.rpc.errors import Unimplemented

#: Whether this server implements Train and PutDataset (GetServerInfo lists "train" if so).
AVAILABLE = False


def train(servicer: Any, request: Any, context: Any) -> Iterator[Any]:
    """The Train RPC (server streaming): one TrainEvent per reported step."""
    raise Unimplemented("Train is not implemented by this server yet")
    yield  # a generator, like the real one


def put_dataset(servicer: Any, request_iterator: Iterator[Any], context: Any) -> Any:
    """The PutDataset RPC (client streaming): returns a DatasetInfo."""
    for _ in request_iterator:  # consume (and so validate) the chunks
        pass
    raise Unimplemented("PutDataset is not implemented by this server yet")
