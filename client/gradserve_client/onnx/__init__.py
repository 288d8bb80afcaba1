"""ONNX import: an ONNX model as a gradserve Graph message, the one converter that the SDK
(``gs.Graph.from_onnx``) and the server (the ``onnx_model`` graph source) both use.

    graph = to_graph("model.onnx")        # also bytes or an onnx.ModelProto -> graph_pb2.Graph

The model's graph inputs become inputs, its float initializers inputs with defaults (the
weights), its outputs keep their names. Shape arithmetic (Shape, Gather, Concat, Cast,
Constant, ...) is folded at import. See docs/onnx.md.
"""

from .convert import (
    OPSETS,
    STATIC_OPERANDS,
    SUPPORTED_OPS,
    OnnxImportError,
    load_model,
    to_graph,
)

__all__ = [
    "OPSETS",
    "STATIC_OPERANDS",
    "SUPPORTED_OPS",
    "OnnxImportError",
    "load_model",
    "to_graph",
]
