"""The networks a model config can name with `_target_` (conf/model/*.yaml)."""

from __future__ import annotations

from collections.abc import Sequence

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
