"""Sliding windows over one encoded series: which origins make complete windows, and the dataset of them.

A window ending at step ``t`` (its *origin*) holds the inputs ``t-window+1 .. t``, the
seasonal-naive forecast and the targets ``t+1 .. t+horizon``. Seasonal lags add, beside the
target channel of each input step, the target some seasons earlier (see :class:`WindowDataset`).
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
        seasonal_lags: ``n`` channels inserted after the target: at input step ``s`` the target at
            ``s + horizon - k * season`` for ``k = 1 .. n``, so the window's last ``horizon`` steps
            carry the values ``k`` seasons before each step to forecast (``k = 1``: the
            seasonal-naive forecast) and the earlier steps what led up to them. The origins must
            leave ``window - 1 + n * season - horizon`` steps before them (see ``history``).
    """

    def __init__(
        self,
        series: Tensor,
        origins: Tensor,
        window: int,
        horizon: int,
        season: int,
        with_targets: bool = True,
        seasonal_lags: int = 0,
    ) -> None:
        if seasonal_lags and horizon > season:
            raise ValueError(f"seasonal lags need horizon <= season, got {horizon} > {season}")
        self.series = series
        self.origins = origins.long()
        self.input_offsets = torch.arange(1 - window, 1)
        # (W, n): offsets from the origin of each input step's lagged targets.
        self.lag_offsets = self.input_offsets[:, None] + horizon - season * torch.arange(1, seasonal_lags + 1)
        self.target_offsets = torch.arange(1, horizon + 1)
        self.naive_offsets = seasonal_naive_offsets(horizon, season)
        self.with_targets = with_targets

    def __len__(self) -> int:
        return len(self.origins)

    def __getitems__(self, indices: Sequence[int]) -> tuple[Tensor, ...]:
        """``x (B, window, F + lags)``, ``naive (B, horizon)`` and, with targets, ``y (B, horizon)``."""
        origin = self.origins[torch.as_tensor(indices, dtype=torch.long)][:, None]
        x = self.series[origin + self.input_offsets]
        if self.lag_offsets.shape[1]:
            lags = self.series[origin[..., None] + self.lag_offsets, 0]  # (B, W, n)
            x = torch.cat([x[..., :1], lags, x[..., 1:]], dim=-1)
        naive = self.series[origin + self.naive_offsets, 0]
        if not self.with_targets:
            return x, naive
        return x, naive, self.series[origin + self.target_offsets, 0]

    def __getitem__(self, index: int) -> tuple[Tensor, ...]:
        return tuple(t[0] for t in self.__getitems__([index]))


def window_origins(observed: np.ndarray, start: int, end: int, history: int, horizon: int) -> Tensor:
    """Origins of the windows whose targets all lie in ``[start, end)`` and were observed.

    ``history`` is the number of steps before the origin a window needs (inputs, seasonal lags
    and one season for the baseline); ``observed`` marks the steps whose target was in the file.
    """
    origins = np.arange(max(start - 1, history - 1), end - horizon)
    missing = np.concatenate([[0], np.cumsum(~observed)])
    complete = missing[origins + horizon + 1] == missing[origins + 1]
    return torch.from_numpy(origins[complete])
