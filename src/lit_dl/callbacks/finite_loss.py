"""Stop a run whose loss is no longer a number, before it writes a bad checkpoint."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import Tensor

from lit_dl.errors import TrainingError


class FiniteLossGuard(L.Callback):
    """Raise :class:`~lit_dl.errors.TrainingError` when the training loss becomes NaN or infinite.

    Raising inside ``fit`` stops Lightning without saving a checkpoint, so the checkpoints
    written before the divergence stay as they were. Under DDP the processes agree first (a loss
    that is not finite in any process stops all of them).

    Looking at a loss on a GPU waits for the GPU (a host synchronisation), so there the first
    non-finite loss is only recorded on the device (step and value, no synchronisation) and
    looked at every ``check_every_n_steps`` steps and always before validation and at the end of
    the epoch, that is, before any checkpoint is written. On the CPU looking is free and every
    step is looked at.

    Args:
        check_every_n_steps: how often to look when deferred; None: ``trainer.log_every_n_steps``.
        defer: record on the device and look every ``check_every_n_steps`` steps; None: on
            accelerators only.
    """

    def __init__(self, check_every_n_steps: int | None = None, defer: bool | None = None) -> None:
        self.check_every_n_steps = None if check_every_n_steps is None else max(1, int(check_every_n_steps))
        self.defer = defer
        self._first_bad: tuple[Tensor, Tensor, int] | None = None  # (step, value, epoch) on the device

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if not isinstance(loss, Tensor):
            return
        if not (self.defer if self.defer is not None else loss.device.type != "cpu"):
            # One read of the number instead of four tensor operations (about 20 us a step here).
            finite = math.isfinite(loss.item()) if loss.numel() == 1 else bool(torch.isfinite(loss).all())
            if not finite or trainer.world_size > 1:  # (under DDP every process takes part in the vote)
                self._raise_if_bad(trainer, finite, loss.detach().float(), trainer.global_step)
            return
        loss = loss.detach().float()
        finite = torch.isfinite(loss).all()
        step = torch.tensor(trainer.global_step, device=loss.device)
        if self._first_bad is None:
            self._first_bad = (torch.full_like(step, -1), torch.zeros_like(loss), trainer.current_epoch)
        first_step, first_value, _ = self._first_bad
        new = ~finite & (first_step < 0)
        self._first_bad = (
            torch.where(new, step, first_step),
            torch.where(new, loss, first_value),
            trainer.current_epoch,
        )
        every = self.check_every_n_steps or max(1, trainer.log_every_n_steps)
        if trainer.global_step % every == 0:
            self._check_recorded(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check_recorded(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check_recorded(trainer)

    def _check_recorded(self, trainer: L.Trainer) -> None:
        if self._first_bad is None:
            return
        step, value, _ = self._first_bad
        self._raise_if_bad(trainer, int(step) < 0, value, int(step))

    def _raise_if_bad(self, trainer: L.Trainer, finite: bool, loss: Tensor, step: int) -> None:
        bad = not finite
        if trainer.world_size > 1:
            # Every process stops together (one that stopped alone would leave the others waiting).
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad:
            value = loss.item() if not finite else "NaN or infinite in another process"
            where = f"step {step}" if not finite else f"step {trainer.global_step}"
            raise TrainingError(
                f"training loss became {value} at epoch {trainer.current_epoch}, {where}; "
                "lower model.optimizer.lr or set trainer.gradient_clip_val (earlier checkpoints are kept)"
            )
