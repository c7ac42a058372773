"""The networks a model config can name with `_target_` (conf/model/*.yaml)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}
NORMS = ("batch", "layer", "none")


class MLP(nn.Module):
    """Linear -> norm -> activation -> dropout per hidden width, then one logit."""

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int] = (128, 64),
        dropout: float = 0.1,
        norm: str = "batch",
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"model.activation: {activation!r} is not one of {', '.join(ACTIVATIONS)}")
        if norm not in NORMS:
            raise ValueError(f"model.norm: {norm!r} is not one of {', '.join(NORMS)}")
        if not hidden or any(int(w) < 1 for w in hidden):
            raise ValueError(f"model.hidden: give one or more positive layer widths, got {list(hidden)}")
        if not 0 <= dropout < 1:
            raise ValueError(f"model.dropout: must be in [0, 1), got {dropout}")
        layers: list[nn.Module] = []
        width = in_features
        for out in (int(w) for w in hidden):
            layers.append(nn.Linear(width, out))
            if norm == "batch":
                layers.append(nn.BatchNorm1d(out))
            elif norm == "layer":
                layers.append(nn.LayerNorm(out))
            layers.append(ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = out
        layers.append(nn.Linear(width, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, shape (batch,)."""
        logits: torch.Tensor = self.layers(x).squeeze(-1)
        return logits


# Keys of a model config that configure training, not the network's constructor.
TRAINING_KEYS = ("optimizer", "scheduler")


def build_network(model: Mapping[str, Any], in_features: int) -> nn.Module:
    """Instantiate the network a model config names with `_target_`."""
    from hydra.utils import instantiate

    network = {k: v for k, v in model.items() if k not in TRAINING_KEYS}
    built: nn.Module = instantiate(network, in_features=in_features, _convert_="all")
    return built


class Probability(nn.Module):
    """What is exported: the network followed by a sigmoid, (batch, features) -> (batch,)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.network(features))
