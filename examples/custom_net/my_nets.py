"""A network of your own for lit_dl: any nn.Module whose constructor takes the data's sizes."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class GatedMLP(nn.Module):
    """A gated feed-forward net for tables (GLU blocks).

    lit_dl hands a tabular network ``in_features`` (numeric and one-hot columns),
    ``cat_cardinalities`` (embedded categories; empty with one-hot encoding) and
    ``out_features``; every other argument comes from the config entry.

    Args:
        in_features: width of ``x_num``.
        out_features: outputs (one logit for two classes).
        cat_cardinalities: categories per embedded column (unused here: one-hot data).
        width: hidden width.
        depth: gated blocks.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        cat_cardinalities: Sequence[int] = (),
        width: int = 128,
        depth: int = 2,
    ) -> None:
        super().__init__()
        if cat_cardinalities:
            raise ValueError("GatedMLP reads one-hot categories: use data.categorical_encoding=onehot")
        layers: list[nn.Module] = []
        size = in_features
        for _ in range(depth):
            layers += [nn.Linear(size, 2 * width), nn.GLU(), nn.LayerNorm(width)]
            size = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(size, out_features)

    def forward(self, x_num: Tensor, x_cat: Tensor | None = None) -> Tensor:
        """``x_num (B, F)`` (and unused ``x_cat (B, 0)``) -> ``(B, out_features)``."""
        return self.head(self.body(x_num.float()))


__all__ = ["GatedMLP"]
