"""Losses a config can name: short names for PyTorch's, and the ones PyTorch lacks as modules.

``model.loss`` is a config entry (``model.loss._target_=lit_dl.losses.FocalLoss``) or one of the
short names in :data:`LOSS_NAMES` (``model.loss=huber``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Short names accepted for model.loss (and written by lit_dl 0.1 checkpoints).
LOSS_NAMES: dict[str, str] = {
    "mse": "torch.nn.MSELoss",
    "l1": "torch.nn.L1Loss",
    "huber": "torch.nn.HuberLoss",
    "smooth_l1": "torch.nn.SmoothL1Loss",
    "cross_entropy": "torch.nn.CrossEntropyLoss",
    "bce": "torch.nn.BCEWithLogitsLoss",
    "focal": "lit_dl.losses.FocalLoss",
}


def loss_node(value: Any, key: str = "model.loss") -> dict[str, Any] | None:
    """A loss setting as a ``_target_`` entry: short names expanded, entries passed through."""
    from lit_dl.errors import ConfigError

    if value is None or isinstance(value, dict):
        return value
    if isinstance(value, str) and value in LOSS_NAMES:
        return {"_target_": LOSS_NAMES[value]}
    raise ConfigError(
        f"{key} must be a config entry with _target_ or one of {', '.join(LOSS_NAMES)}, got {value!r}"
    )


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017): cross-entropy that down-weights examples already classified well.

    Works on binary logits ``(B,)`` with float targets ``(B,)`` (as ``BCEWithLogitsLoss``),
    multi-label logits ``(B, L)`` with 0/1 targets ``(B, L)``, and multi-class logits ``(B, K)``
    with class indices ``(B,)`` (as ``CrossEntropyLoss``). torchvision ships only a binary
    function (``sigmoid_focal_loss``), not a module for all three, hence this one.

    Args:
        gamma: focusing strength (0: plain cross-entropy).
        alpha: weight of the positive class for sigmoid outputs (None: no weighting).
    """

    def __init__(self, gamma: float = 2.0, alpha: float | None = None) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)
        self.alpha = alpha

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        logits = logits.float()
        if target.dtype in (torch.long, torch.int) and logits.ndim == target.ndim + 1:
            log_p = F.log_softmax(logits, dim=-1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
            return (-((1 - log_p.exp()) ** self.gamma) * log_p).mean()
        target = target.float()
        ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        p_t = torch.exp(-ce)  # probability given to the true label
        loss = (1 - p_t) ** self.gamma * ce
        if self.alpha is not None:
            loss = (self.alpha * target + (1 - self.alpha) * (1 - target)) * loss
        return loss.mean()
