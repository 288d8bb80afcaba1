"""Optimizers: each is one pydantic model holding its hyper-parameters and its update rule.

An optimizer is stateless; its state is a flat `dict[str, np.ndarray]` that the loop owns,
so that a checkpoint is just tensors (`"step"`, `"momentum_buffer/W1"`, `"exp_avg/W1"`, ...)
and restores bit-exactly. The update formulas are those of `torch.optim.SGD` and
`torch.optim.Adam` (single-tensor, non-fused path), written in the parameter's dtype:
hyper-parameters are applied as Python floats, which NumPy 2 treats as "weak" scalars, so a
float32 parameter stays float32.

To add an optimizer: one class below with a unique `kind`, `init_state` and `update`, and
add it to the `OptimizerConfig` union.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

State = dict[str, np.ndarray]


def _step_state() -> State:
    return {"step": np.zeros((), dtype=np.int64)}


class _Optimizer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def init_state(self, params: Mapping[str, np.ndarray]) -> State:
        raise NotImplementedError

    def update(
        self,
        params: Mapping[str, np.ndarray],
        grads: Mapping[str, np.ndarray],
        state: State,
        lr: float,
    ) -> None:
        """Apply one step in place to `params` and `state`; `lr` is this step's scheduled lr."""
        raise NotImplementedError


class SgdConfig(_Optimizer):
    """`torch.optim.SGD`: the first step sets the momentum buffer to the gradient."""

    kind: Literal["sgd"] = "sgd"
    lr: float = Field(gt=0)
    momentum: float = Field(0.0, ge=0)
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _nesterov(self) -> SgdConfig:
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("nesterov requires momentum > 0 and dampening = 0")
        return self

    def init_state(self, params: Mapping[str, np.ndarray]) -> State:
        state = _step_state()
        if self.momentum != 0:
            for name, p in params.items():
                state[f"momentum_buffer/{name}"] = np.zeros_like(p)
        return state

    def update(self, params, grads, state, lr) -> None:
        lr, momentum, wd = float(lr), float(self.momentum), float(self.weight_decay)
        first = int(state["step"]) == 0
        for name, p in params.items():
            g = grads[name]
            if wd != 0:
                g = g + wd * p
            if momentum != 0:
                buf = state[f"momentum_buffer/{name}"]
                if first:
                    np.copyto(buf, g)
                else:
                    buf *= momentum
                    buf += (1.0 - float(self.dampening)) * g
                g = g + momentum * buf if self.nesterov else buf
            p -= lr * g
        state["step"] += 1


class AdamConfig(_Optimizer):
    """`torch.optim.Adam` (amsgrad=False); weight decay is L2 added to the gradient."""

    kind: Literal["adam"] = "adam"
    lr: float = Field(1e-3, gt=0)
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (
        0.9,
        0.999,
    )
    eps: float = Field(1e-8, ge=0)
    weight_decay: float = Field(0.0, ge=0)

    def init_state(self, params: Mapping[str, np.ndarray]) -> State:
        state = _step_state()
        for name, p in params.items():
            state[f"exp_avg/{name}"] = np.zeros_like(p)
            state[f"exp_avg_sq/{name}"] = np.zeros_like(p)
        return state

    def update(self, params, grads, state, lr) -> None:
        beta1, beta2 = float(self.betas[0]), float(self.betas[1])
        eps, wd = float(self.eps), float(self.weight_decay)
        step = int(state["step"]) + 1
        # As torch computes them: step_size = lr / bc1, denom = sqrt(v) / sqrt(bc2) + eps.
        step_size = float(lr) / (1.0 - beta1**step)
        bias_correction2_sqrt = math.sqrt(1.0 - beta2**step)
        w = 1.0 - beta1
        for name, p in params.items():
            g = grads[name]
            if wd != 0:
                g = g + wd * p
            m = state[f"exp_avg/{name}"]
            v = state[f"exp_avg_sq/{name}"]
            # m.lerp_(g, 1 - beta1), with torch's two-branch lerp for accuracy.
            if w < 0.5:
                m += w * (g - m)
            else:
                np.subtract(g, (g - m) * (1.0 - w), out=m)
            v *= beta2
            v += (1.0 - beta2) * g * g
            denom = np.sqrt(v)
            denom /= bias_correction2_sqrt
            denom += eps
            p -= (step_size * m) / denom
        state["step"] += 1


OptimizerConfig = Annotated[SgdConfig | AdamConfig, Field(discriminator="kind")]
