"""Real exports from PyTorch, through a real server: the models of scripts/make_onnx_models.py
(an MLP, a CNN, a transformer block; TorchScript and dynamo exporters; opsets 17 and 18), whose
.onnx files are committed in tests/data/onnx. Outputs equal torch's, gradients with respect to
the input and to every initializer equal torch autograd's (float32 tolerances), and the MLP
trains through Train with the losses of torch.optim.SGD."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import gradserve_client as gs
import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "make_onnx_models.py"
_spec = importlib.util.spec_from_file_location("make_onnx_models", SCRIPT)
assert _spec and _spec.loader
models = importlib.util.module_from_spec(_spec)
sys.modules["make_onnx_models"] = models
_spec.loader.exec_module(models)

RTOL, ATOL = 1e-4, 1e-5
CASES = [
    pytest.param(name, exporter, opset, id=f"{name}-{exporter}-{opset}")
    for name in models.MODELS
    for exporter in models.EXPORTERS
    for opset in models.OPSETS
]


def torch_reference(name: str, x: torch.Tensor, ct: np.ndarray):
    """torch's output, and the gradients of sum(ct * output) by the input and every param."""
    module = models.build(name)
    if x.is_floating_point():
        x = x.clone().requires_grad_(True)
    out = module(x)
    (out * torch.from_numpy(ct)).sum().backward()
    grads = {k: p.grad.numpy() for k, p in module.named_parameters()}
    return out.detach().numpy(), grads, (x.grad.numpy() if x.grad is not None else None)


@pytest.fixture(scope="module")
def client(server):
    with gs.Client(server.address) as c:
        yield c


@pytest.mark.parametrize(("name", "exporter", "opset"), CASES)
def test_outputs_and_gradients_equal_torch(client, name, exporter, opset) -> None:
    _, _, input_name, output_name, dynamic = models.MODELS[name]
    g = gs.Graph.from_onnx(models.path(name, exporter, opset))
    x = models.example(name)
    if dynamic:  # another batch size than the export's
        x = torch.cat([x, x[:2] * 0.5])
    with torch.no_grad():
        shape = models.build(name)(x).shape
    ct = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    expected, param_grads, input_grad = torch_reference(name, x, ct)
    assert set(g.defaults) == set(param_grads)  # every initializer is a torch parameter

    feeds = {input_name: x.numpy()}
    got = client.evaluate(g, feeds)[output_name]
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)
    wrt = list(g.defaults) + ([input_name] if input_grad is not None else [])
    grads = client.vjp(g, feeds, {output_name: ct}, wrt=wrt)
    for key, want in param_grads.items():
        np.testing.assert_allclose(grads[key], want, rtol=RTOL, atol=ATOL, err_msg=key)
    if input_grad is not None:
        np.testing.assert_allclose(grads[input_name], input_grad, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("exporter", models.EXPORTERS)
def test_the_mlp_trains_with_the_losses_of_torch_sgd(client, exporter) -> None:
    g = gs.Graph.from_onnx(models.path("mlp", exporter, 18))
    labels = g.input("labels", shape=(-1,), dtype="int64")
    g.output("loss", gs.cross_entropy(g.var("logits"), labels))
    rng = np.random.default_rng(3)
    X = rng.normal(size=(20, 4)).astype(np.float32)
    Y = rng.integers(0, 3, size=20)
    run = client.train(
        g, loss="loss", params=g.defaults, data={"input": X, "labels": Y},
        optimizer=gs.SGD(lr=0.1, momentum=0.9), batch_size=8, epochs=2, shuffle=False,
    )  # fmt: skip
    losses = [step.loss for step in run]

    module = models.build("mlp")
    opt = torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9)
    expected = []
    for _ in range(2):
        for start in range(0, 20, 8):  # in order; the last partial batch is used
            xb, yb = torch.from_numpy(X[start : start + 8]), torch.from_numpy(Y[start : start + 8])
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(module(xb), yb)
            loss.backward()
            opt.step()
            expected.append(loss.item())
    np.testing.assert_allclose(losses, expected, rtol=1e-5)
    for key, p in module.named_parameters():
        np.testing.assert_allclose(run.params[key], p.detach().numpy(), rtol=1e-4, atol=1e-6)
