"""The op table. Importing this package registers every op in `registry.OPS`."""

from gradserve.autodiff.ops import elementwise, internal, linalg, nn, reductions, structure

__all__ = ["elementwise", "internal", "linalg", "nn", "reductions", "structure"]
