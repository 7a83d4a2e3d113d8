"""Step and time limits shorter than an epoch end a run like any other: validated and checkpointed.

Lightning validates at the end of each epoch, or earlier when a callback sets
``trainer.should_stop`` (as early stopping and ``max_time``'s timer do). ``max_steps`` is
different: the loop simply ends after that step, so a limit shorter than an epoch leaves a run
without validation metrics (early stopping then fails on a missing ``val/loss``) and without a
best checkpoint. :class:`StopAtMaxSteps` turns the last step into a ``should_stop`` request,
which Lightning answers with a validation before it ends the epoch.
"""

from __future__ import annotations

from typing import Any

import lightning as L


class StopAtMaxSteps(L.Callback):
    """Ask the trainer to stop (and so to validate first) after the step ``max_steps`` allows."""

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        max_steps = trainer.max_steps
        if max_steps is not None and max_steps >= 0 and trainer.global_step >= max_steps:
            trainer.should_stop = True
