"""The networks a model config can name with `_target_` (conf/model/*.yaml)."""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}
NORMS = ("batch", "layer", "none")
EMBEDDING_KEYS = {"frequencies", "dim", "scale"}


def frequency_scale(scale: float | str, training_rows: int | None) -> float:
    """The standard deviation the embedding's frequencies start from.

    `auto` grows it with the training split: training rows / 10,000, between 0.3 and 3. High
    frequencies let a number's effect change within a fraction of its standard deviation (a
    capital gain just above a threshold), which a large table supports and a small one only
    overfits. Measured with benchmarks/model_quality.py (docs/pipeline.md): on Adult's 34,152
    training rows, test AUROC 0.914 at 0.1, 0.918 at 1 and 0.921 at 3; on 700 training rows
    (four splits each of Adult and German Credit), 3 is on average 0.008 below logistic
    regression and 0.3 within 0.004 of it.
    """
    if scale == "auto":
        rows = training_rows if training_rows is not None else 10_000
        return min(3.0, max(0.3, rows / 10_000))
    value = float(scale)
    if not value > 0:
        raise ValueError(f"model.numeric_embedding.scale: use auto or a positive number, got {scale!r}")
    return value


class PeriodicEmbedding(nn.Module):
    """Periodic embeddings of numeric features (Gorishniy et al., 2022, "On Embeddings for
    Numerical Features in Tabular Deep Learning", PLR): each standardised number x_i becomes
    ReLU(W_i [cos(2 pi c_i x_i), sin(2 pi c_i x_i)] + b_i), with k trained frequencies c_i
    and a linear map of its own per feature."""

    def __init__(self, features: int, frequencies: int, dim: int, scale: float) -> None:
        super().__init__()
        self.frequencies = nn.Parameter(torch.randn(features, frequencies) * scale)
        bound = 1 / math.sqrt(2 * frequencies)
        self.weight = nn.Parameter(torch.empty(features, 2 * frequencies, dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(features, dim).uniform_(-bound, bound))
        self.width = features * dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, features) -> (batch, features * dim)."""
        angles = 2 * math.pi * self.frequencies * x.unsqueeze(-1)
        periodic = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
        embedded = torch.einsum("bfk,fkd->bfd", periodic, self.weight) + self.bias
        return torch.relu(embedded).flatten(1)


class MLP(nn.Module):
    """Linear -> norm -> activation -> dropout per hidden width, then one logit.

    With `numeric_embedding`, the standardised numeric columns of the matrix (`numeric_columns`,
    which the train stage passes from the preprocessing spec) enter through a PeriodicEmbedding
    and every other column (one-hot categories, missing indicators) as it is.
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int] = (128, 64),
        dropout: float = 0.1,
        norm: str = "batch",
        activation: str = "relu",
        numeric_embedding: Mapping[str, Any] | None = None,
        numeric_columns: Sequence[int] = (),
        training_rows: int | None = None,
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
        numeric = sorted({int(c) for c in numeric_columns})
        if any(not 0 <= c < in_features for c in numeric):
            raise ValueError(f"numeric_columns: {numeric} must be columns of the {in_features}-wide matrix")
        self.embedding: PeriodicEmbedding | None = None
        width = in_features
        if numeric_embedding is not None and numeric:
            unknown = set(numeric_embedding) - EMBEDDING_KEYS
            if unknown:
                raise ValueError(
                    f"model.numeric_embedding: unknown key(s) {', '.join(sorted(unknown))}; "
                    f"the keys are {', '.join(sorted(EMBEDDING_KEYS))}"
                )
            frequencies, dim = int(numeric_embedding.get("frequencies", 48)), int(numeric_embedding.get("dim", 24))
            if frequencies < 1 or dim < 1:
                raise ValueError(
                    f"model.numeric_embedding: frequencies and dim must be positive, got {frequencies}, {dim}"
                )
            scale = frequency_scale(numeric_embedding.get("scale", "auto"), training_rows)
            self.embedding = PeriodicEmbedding(len(numeric), frequencies, dim, scale)
            kept = [c for c in range(in_features) if c not in set(numeric)]
            width = self.embedding.width + len(kept)
        else:
            numeric, kept = [], list(range(in_features))
        self.numeric: torch.Tensor
        self.kept: torch.Tensor
        self.register_buffer("numeric", torch.tensor(numeric, dtype=torch.long), persistent=False)
        self.register_buffer("kept", torch.tensor(kept, dtype=torch.long), persistent=False)
        layers: list[nn.Module] = []
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
        if self.embedding is not None:
            x = torch.cat([self.embedding(x[:, self.numeric]), x[:, self.kept]], dim=1)
        logits: torch.Tensor = self.layers(x).squeeze(-1)
        return logits


# Keys of a model config that configure training, not the network's constructor.
TRAINING_KEYS = ("optimizer", "scheduler")


def build_network(
    model: Mapping[str, Any],
    in_features: int,
    numeric_columns: Sequence[int] = (),
    training_rows: int | None = None,
) -> nn.Module:
    """Instantiate the network a model config names with `_target_`.

    What the data tells about the matrix (which columns are standardised numbers, how many rows
    train it) is passed to a network whose constructor takes `numeric_columns` / `training_rows`;
    a network of your own that does not name them is built without them.
    """
    from hydra.utils import get_class, instantiate

    network = {k: v for k, v in model.items() if k not in TRAINING_KEYS}
    layout: dict[str, Any] = {"numeric_columns": list(numeric_columns), "training_rows": training_rows}
    accepted: Mapping[str, inspect.Parameter]
    try:
        accepted = inspect.signature(get_class(str(network["_target_"]))).parameters
    except (ImportError, KeyError, ValueError, TypeError):
        accepted = {}  # instantiate below reports what is wrong with the target
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    extra = {k: v for k, v in layout.items() if takes_any or k in accepted}
    built: nn.Module = instantiate(network, in_features=in_features, **extra, _convert_="all")
    return built


def numeric_positions(spec: Any) -> list[int]:
    """The matrix columns that hold a standardised number (not its missing indicator) of a
    preprocessing spec (gitml.data.features.PreprocessSpec)."""
    from gitml.data.features import NumericFeature

    positions, position = [], 0
    for feature in spec.features:
        if isinstance(feature, NumericFeature):
            positions.append(position)
        position += len(feature.outputs)
    return positions


class Probability(nn.Module):
    """What is exported: the network followed by a sigmoid, (batch, features) -> (batch,)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.network(features))
