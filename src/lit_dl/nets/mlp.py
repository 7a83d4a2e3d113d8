"""Feed-forward networks."""

from __future__ import annotations

import math
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


class PeriodicEmbeddings(nn.Module):
    """Periodic embeddings of numbers, "PLR" (Gorishniy et al. 2022, "On Embeddings for Numerical
    Features in Tabular Deep Learning"): each feature ``x_j`` becomes
    ``ReLU(Linear_j([cos(2π c_j x_j), sin(2π c_j x_j)]))``, with trained frequencies ``c_j``.

    An MLP on raw numbers draws smooth, nearly linear functions of each feature; the periodic
    basis lets it draw the step-like ones trees draw (thresholds, bumps) without data statistics:
    the features only need to be on a common scale (lit_dl standardises them).

    Args:
        n_features: numeric features ``F`` of ``x`` ``(B, F)``.
        embedding_dim: width ``d`` of each feature's embedding; the output is ``(B, F, d)``.
        n_frequencies: frequencies ``k`` per feature.
        frequency_scale: standard deviation of the initial frequencies (sigma in the paper), the
            most important setting: larger values let the net draw sharper functions of each
            feature (and overfit sooner). With ``min_frequency_scale`` the largest of a range.
        min_frequency_scale: the ``k`` frequencies of each feature start at standard deviations
            spread evenly on a log scale from this to ``frequency_scale``, so every feature has
            smooth and sharp waves to choose from and no single sigma needs tuning per table;
            None: all at ``frequency_scale`` (the paper's initialisation).
        lite: one linear layer shared by all features instead of one per feature
            ("PLR(lite)": fewer parameters, slightly weaker).
    """

    def __init__(
        self,
        n_features: int,
        embedding_dim: int = 16,
        n_frequencies: int = 16,
        frequency_scale: float = 30.0,
        min_frequency_scale: float | None = 0.1,
        lite: bool = False,
    ) -> None:
        super().__init__()
        if n_features < 1 or embedding_dim < 1 or n_frequencies < 1:
            raise ValueError(
                f"PeriodicEmbeddings needs positive sizes, got n_features={n_features}, "
                f"embedding_dim={embedding_dim}, n_frequencies={n_frequencies}"
            )
        low = frequency_scale if min_frequency_scale is None else min_frequency_scale
        if not 0 < low <= frequency_scale:
            raise ValueError(
                "frequency scales must be positive with min_frequency_scale <= frequency_scale, got "
                f"min_frequency_scale={min_frequency_scale}, frequency_scale={frequency_scale}"
            )
        self.n_features, self.embedding_dim, self.lite = n_features, embedding_dim, lite
        # (k,): the standard deviation each frequency starts at.
        scales = torch.logspace(math.log10(low), math.log10(frequency_scale), n_frequencies)
        # Truncated at 3 sigma as in the paper's code: no feature starts with an outlying frequency.
        standard = nn.init.trunc_normal_(torch.empty(n_features, n_frequencies), 0.0, 1.0, -3.0, 3.0)
        self.frequencies = nn.Parameter(standard * scales)
        rows = 1 if lite else n_features
        bound = 1 / math.sqrt(2 * n_frequencies)  # nn.Linear's initialisation, per feature
        self.weight = nn.Parameter(
            torch.empty(rows, 2 * n_frequencies, embedding_dim).uniform_(-bound, bound)
        )
        self.bias = nn.Parameter(torch.empty(rows, embedding_dim).uniform_(-bound, bound))

    def forward(self, x: Tensor) -> Tensor:
        """``(B, F) -> (B, F, embedding_dim)``."""
        angles = 2 * math.pi * self.frequencies * x[..., None]  # (B, F, k)
        periodic = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)  # (B, F, 2k)
        weight = self.weight.expand(self.n_features, -1, -1) if self.lite else self.weight
        return torch.relu(torch.einsum("bfi,fid->bfd", periodic, weight) + self.bias)


NUMERIC_EMBEDDINGS = ("none", "periodic")


class TabularMLP(nn.Module):
    """An MLP over tabular rows: numeric (and one-hot) features plus optional category embeddings.

    Each categorical column with cardinality ``k`` gets an embedding of width
    ``min(embedding_dim, (k + 1) // 2)``; embeddings are concatenated to the
    float features and fed to an :class:`MLP`. With ``linear_skip`` a linear
    layer on the same inputs is added to the MLP's output ("wide and deep",
    Cheng et al. 2016): the model contains logistic/linear regression as a special
    case, and the MLP learns what the linear part misses, which on small tables
    keeps it from falling below a linear baseline. With ``numeric_embedding="periodic"``
    each float feature is first embedded by :class:`PeriodicEmbeddings` (the MLP then sees
    ``F * numeric_embedding_dim`` numbers for them; the linear path keeps the raw values).
    Use it with ``data.categorical_encoding=embedding``, where ``x_num`` holds only the
    standardised numbers (with one-hot encoding the indicator columns are embedded too).

    Args:
        in_features: width of the float features ``x_num`` ``(B, in_features)``.
        out_features: output width (1 for binary classification or regression).
        cat_cardinalities: table sizes of the categorical columns of ``x_cat`` ``(B, C)``.
        embedding_dim: largest embedding width.
        hidden_sizes, activation, dropout, batch_norm: as in :class:`MLP`.
        linear_skip: add a linear path from the inputs to the output.
        numeric_embedding: ``none`` (the numbers as they are) or ``periodic`` (PLR embeddings).
        numeric_embedding_dim, n_frequencies, frequency_scale, min_frequency_scale: see
            :class:`PeriodicEmbeddings`.
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
        numeric_embedding: str = "none",
        numeric_embedding_dim: int = 16,
        n_frequencies: int = 16,
        frequency_scale: float = 30.0,
        min_frequency_scale: float | None = 0.1,
    ) -> None:
        super().__init__()
        if numeric_embedding not in NUMERIC_EMBEDDINGS:
            raise ValueError(
                f"numeric_embedding must be one of {', '.join(NUMERIC_EMBEDDINGS)}, got {numeric_embedding!r}"
            )
        self.embeddings = nn.ModuleList(
            nn.Embedding(k, min(embedding_dim, (k + 1) // 2)) for k in cat_cardinalities
        )
        self.numeric_embeddings = (
            PeriodicEmbeddings(
                in_features, numeric_embedding_dim, n_frequencies, frequency_scale, min_frequency_scale
            )
            if numeric_embedding == "periodic" and in_features > 0
            else None
        )
        categorical_width = sum(e.embedding_dim for e in self.embeddings)
        numeric_width = in_features * (numeric_embedding_dim if self.numeric_embeddings is not None else 1)
        self.mlp = MLP(
            numeric_width + categorical_width, out_features, hidden_sizes, activation, dropout, batch_norm
        )
        self.linear = nn.Linear(in_features + categorical_width, out_features) if linear_skip else None

    def forward(self, x_num: Tensor, x_cat: Tensor | None = None) -> Tensor:
        """``x_num (B, F)``, ``x_cat (B, C)`` long -> ``(B, out_features)``."""
        categories: list[Tensor] = []
        if self.embeddings:
            if x_cat is None:
                raise ValueError("this TabularMLP has embeddings and needs x_cat")
            categories = [emb(x_cat[:, i]) for i, emb in enumerate(self.embeddings)]
        numbers = x_num if self.numeric_embeddings is None else self.numeric_embeddings(x_num).flatten(1)
        out = self.mlp(torch.cat([numbers, *categories], dim=1) if categories else numbers)
        if self.linear is None:
            return out
        return out + self.linear(torch.cat([x_num, *categories], dim=1) if categories else x_num)
