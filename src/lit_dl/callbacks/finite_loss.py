"""Stop a run whose loss is no longer a number, before it writes a bad checkpoint."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from lit_dl.errors import TrainingError


class FiniteLossGuard(L.Callback):
    """Raise :class:`~lit_dl.errors.TrainingError` when the training loss becomes NaN or infinite.

    Raising inside ``fit`` stops Lightning without saving a checkpoint, so the
    checkpoints written before the divergence stay as they were. Under DDP the processes
    agree first (a loss that is not finite in any process stops all of them).

    Args:
        check_every_n_steps: how often to look (each look syncs the device with the host).
    """

    def __init__(self, check_every_n_steps: int = 1) -> None:
        self.check_every_n_steps = max(1, int(check_every_n_steps))

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step % self.check_every_n_steps:
            return
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        here = not bool(torch.isfinite(loss).all())
        bad = here
        if trainer.world_size > 1:
            # Every process stops together (one that stopped alone would leave the others waiting).
            bad = trainer.strategy.reduce_boolean_decision(here, all=False)
        if bad:
            value = loss.item() if here else "NaN or infinite in another process"
            raise TrainingError(
                f"training loss became {value} at epoch {trainer.current_epoch}, "
                f"step {trainer.global_step}; "
                "lower model.optimizer.lr or set trainer.gradient_clip_val (earlier checkpoints are kept)"
            )
