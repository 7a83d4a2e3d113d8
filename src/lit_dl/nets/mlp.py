"""Feed-forward networks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
}


def activation_layer(name: str) -> nn.Module:
    """An activation module by name (relu, gelu, tanh, sigmoid, silu, leaky_relu)."""
    try:
        return ACTIVATIONS[name.lower()]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}") from None


class MLP(nn.Module):
    """A multi-layer perceptron: ``[Linear -> (BatchNorm) -> activation -> (Dropout)] * n -> Linear``.

    Args:
        in_features: width of the input ``(B, in_features)``.
        out_features: width of the output ``(B, out_features)``.
        hidden_sizes: widths of the hidden layers; empty gives a linear model.
        activation: relu, gelu, tanh, sigmoid, silu or leaky_relu.
        dropout: dropout probability after each hidden activation.
        batch_norm: batch normalisation before each hidden activation.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden_sizes: Sequence[int] = (128, 64),
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(f"MLP needs positive sizes, got in={in_features} out={out_features}")
        layers: list[nn.Module] = []
        width = in_features
        for hidden in hidden_sizes:
            layers.append(nn.Linear(width, hidden, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden))
            layers.append(activation_layer(activation))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hidden
        layers.append(nn.Linear(width, out_features))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_features) -> (B, out_features)``."""
        return self.layers(x)


class TabularMLP(nn.Module):
    """An MLP over tabular rows: numeric (and one-hot) features plus optional category embeddings.

    Each categorical column with cardinality ``k`` gets an embedding of width
    ``min(embedding_dim, (k + 1) // 2)``; embeddings are concatenated to the
    float features and fed to an :class:`MLP`. With ``linear_skip`` a linear
    layer on the same inputs is added to the MLP's output ("wide and deep",
    Cheng et al. 2016): the model contains logistic/linear regression as a special
    case, and the MLP learns what the linear part misses, which on small tables
    keeps it from falling below a linear baseline.

    Args:
        in_features: width of the float features ``x_num`` ``(B, in_features)``.
        out_features: output width (1 for binary classification or regression).
        cat_cardinalities: table sizes of the categorical columns of ``x_cat`` ``(B, C)``.
        embedding_dim: largest embedding width.
        hidden_sizes, activation, dropout, batch_norm: as in :class:`MLP`.
        linear_skip: add a linear path from the inputs to the output.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        cat_cardinalities: Sequence[int] = (),
        embedding_dim: int = 16,
        hidden_sizes: Sequence[int] = (128, 64),
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        linear_skip: bool = False,
    ) -> None:
        super().__init__()
        self.embeddings = nn.ModuleList(
            nn.Embedding(k, min(embedding_dim, (k + 1) // 2)) for k in cat_cardinalities
        )
        width = in_features + sum(e.embedding_dim for e in self.embeddings)
        self.mlp = MLP(width, out_features, hidden_sizes, activation, dropout, batch_norm)
        self.linear = nn.Linear(width, out_features) if linear_skip else None

    def forward(self, x_num: Tensor, x_cat: Tensor | None = None) -> Tensor:
        """``x_num (B, F)``, ``x_cat (B, C)`` long -> ``(B, out_features)``."""
        if self.embeddings:
            if x_cat is None:
                raise ValueError("this TabularMLP has embeddings and needs x_cat")
            embedded = [emb(x_cat[:, i]) for i, emb in enumerate(self.embeddings)]
            x_num = torch.cat([x_num, *embedded], dim=1)
        out = self.mlp(x_num)
        return out + self.linear(x_num) if self.linear is not None else out
