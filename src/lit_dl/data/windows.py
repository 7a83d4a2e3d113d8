"""Sliding windows over one encoded series: which origins make complete windows, and the dataset of them.

A window ending at step ``t`` (its *origin*) holds the inputs ``t-window+1 .. t``, the
seasonal-naive forecast and the targets ``t+1 .. t+horizon``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset


def seasonal_naive_offsets(horizon: int, season: int) -> Tensor:
    """Offsets from the origin ``t`` of the seasonal-naive forecast of ``t+1 .. t+horizon``.

    ``ŷ(t+h) = y(t+h - season·ceil(h/season))``: the value one (or, past the first season,
    several) seasons back, always at or before ``t``. Offsets lie in ``[1-season, 0]``.
    """
    steps = torch.arange(1, horizon + 1)
    return steps - season * torch.ceil(steps / season).long()


class WindowDataset(Dataset):
    """Sliding windows over one encoded series, gathered a whole batch at a time.

    The series is stored once; a batch is built by index arithmetic from the windows'
    origins, so memory does not grow with ``window``. Works with
    :func:`~lit_dl.data.batching.batch_loader` like a ``TensorBatchDataset``.

    Args:
        series: ``(T, F)`` scaled values, the target in channel 0.
        origins: ``(N,)`` index of each window's last input step.
        window, horizon, season: see :class:`~lit_dl.data.forecast.ForecastDataModule`.
        with_targets: also return the targets (False for prediction past the end of the data).
    """

    def __init__(
        self,
        series: Tensor,
        origins: Tensor,
        window: int,
        horizon: int,
        season: int,
        with_targets: bool = True,
    ) -> None:
        self.series = series
        self.origins = origins.long()
        self.input_offsets = torch.arange(1 - window, 1)
        self.target_offsets = torch.arange(1, horizon + 1)
        self.naive_offsets = seasonal_naive_offsets(horizon, season)
        self.with_targets = with_targets

    def __len__(self) -> int:
        return len(self.origins)

    def __getitems__(self, indices: Sequence[int]) -> tuple[Tensor, ...]:
        """``x (B, window, F)``, ``naive (B, horizon)`` and, with targets, ``y (B, horizon)``."""
        origin = self.origins[torch.as_tensor(indices, dtype=torch.long)][:, None]
        x = self.series[origin + self.input_offsets]
        naive = self.series[origin + self.naive_offsets, 0]
        if not self.with_targets:
            return x, naive
        return x, naive, self.series[origin + self.target_offsets, 0]

    def __getitem__(self, index: int) -> tuple[Tensor, ...]:
        return tuple(t[0] for t in self.__getitems__([index]))


def window_origins(observed: np.ndarray, start: int, end: int, history: int, horizon: int) -> Tensor:
    """Origins of the windows whose targets all lie in ``[start, end)`` and were observed.

    ``history`` is the number of steps before the origin a window needs (inputs, and one
    season for the baseline); ``observed`` marks the steps whose target was in the file.
    """
    origins = np.arange(max(start - 1, history - 1), end - horizon)
    missing = np.concatenate([[0], np.cumsum(~observed)])
    complete = missing[origins + horizon + 1] == missing[origins + 1]
    return torch.from_numpy(origins[complete])
