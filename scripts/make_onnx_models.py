"""Export the small PyTorch models of the ONNX tests to tests/data/onnx/.

    .venv/bin/python scripts/make_onnx_models.py

Three models (an MLP, a CNN, a transformer block), each with both torch.onnx exporters (the
TorchScript one and the dynamo one, which needs onnxscript) at opsets 17 and 18. The weights
come from a fixed seed, so `build(name)` rebuilds the same torch module for the tests, which
compute their reference outputs and gradients with torch at test time.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "onnx"
EXPORTERS = ("torchscript", "dynamo")
OPSETS = (17, 18)
SEED = 0


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 16)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


class CNN(nn.Module):
    """Conv, ReLU, MaxPool, a strided Conv, AvgPool, Flatten, Linear on 1x20x20 images."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 8, 3, stride=2)
        self.pool2 = nn.AvgPool2d(2)
        self.fc = nn.Linear(8 * 2 * 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(torch.relu(self.conv1(x)))
        x = self.pool2(torch.relu(self.conv2(x)))
        return self.fc(torch.flatten(x, 1))


class TransformerBlock(nn.Module):
    """Embedding, then a pre-norm block: LayerNorm, MultiheadAttention, LayerNorm, GELU MLP."""

    def __init__(self, vocab: int = 50, dim: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


#: name -> (module class, example input, input name, output name, dynamic batch axis)
MODELS = {
    "mlp": (MLP, lambda: torch.randn(5, 4), "input", "logits", True),
    "cnn": (CNN, lambda: torch.randn(2, 1, 20, 20), "input", "logits", False),
    "transformer": (TransformerBlock, lambda: torch.randint(0, 50, (2, 6)), "ids", "out", False),
}


def build(name: str) -> nn.Module:
    """The torch module of ``name``, with its seeded weights, in eval mode. Every parameter is
    drawn at random (LayerNorm's ones and zeros too), so no two are equal: the TorchScript
    exporter would merge equal initializers into one."""
    torch.manual_seed(SEED)
    module = MODELS[name][0]().eval()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return module


def example(name: str) -> torch.Tensor:
    torch.manual_seed(SEED + 1)
    return MODELS[name][1]()


def export(name: str, exporter: str, opset: int) -> bytes:
    """The ONNX bytes of model ``name``; parameters stay initializers named as in torch."""
    _, _, input_name, output_name, dynamic = MODELS[name]
    module, x = build(name), example(name)
    f = io.BytesIO()
    if exporter == "torchscript":
        torch.onnx.export(
            module, (x,), f, input_names=[input_name], output_names=[output_name],
            opset_version=opset, dynamo=False, do_constant_folding=False,
            dynamic_axes={input_name: {0: "batch"}} if dynamic else None,
        )  # fmt: skip
        return f.getvalue()
    shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
    program = torch.onnx.export(
        module, (x,), input_names=[input_name], output_names=[output_name],
        opset_version=opset, dynamo=True, dynamic_shapes=shapes, optimize=False,
    )  # fmt: skip
    return program.model_proto.SerializeToString()


def path(name: str, exporter: str, opset: int) -> Path:
    return OUT / f"{name}_{exporter}_opset{opset}.onnx"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    for name in MODELS:
        for exporter in EXPORTERS:
            for opset in OPSETS:
                target = path(name, exporter, opset)
                target.write_bytes(export(name, exporter, opset))
                print(f"{target.relative_to(ROOT)}: {target.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
