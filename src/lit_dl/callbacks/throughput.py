"""Training speed and peak accelerator memory of a run, for checks and benchmarks.

Add it to any run from the command line (``scripts/gpu_check.sh`` does):

    lit-dl train +callbacks.step_stats._target_=lit_dl.callbacks.throughput.StepStats \\
        +callbacks.step_stats.path=stats.json
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from lit_dl.utils import atomic_write_text


class StepStats(L.Callback):
    """Training steps per second (after a warm-up) and peak GPU memory; written as JSON by rank zero.

    The time of a step runs from the end of one training batch to the end of the next one
    in the same epoch, so it includes loading the batch but not validation or checkpointing.
    The GPU is synchronised at each batch end, so the numbers are real (at a small cost).
    Peak memory is ``torch.cuda.max_memory_allocated``, the largest over the processes.

    Args:
        path: the JSON file (``{"steps": ..., "steps_per_s": ..., "peak_memory_mib": ...}``);
            default ``<trainer.default_root_dir>/step_stats.json``.
        warmup_steps: first training steps left out (CUDA start-up, cuDNN autotuning, compilation).
    """

    def __init__(self, path: str | None = None, warmup_steps: int = 3) -> None:
        self.path = path
        self.warmup_steps = warmup_steps
        self.steps = 0
        self.seconds = 0.0
        self._last: float | None = None
        self._seen = 0

    @staticmethod
    def _now(pl_module: L.LightningModule) -> float:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        return time.perf_counter()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last = None  # the gap across validation and the epoch boundary is not a step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = self._now(pl_module)
        self._seen += 1
        if self._last is not None and self._seen > self.warmup_steps:
            self.steps += 1
            self.seconds += now - self._last
        self._last = now

    def summary(self, pl_module: L.LightningModule) -> dict[str, float | int | None]:
        """This process's numbers so far (peak memory None off GPU)."""
        peak = None
        if pl_module.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(pl_module.device) / 2**20
        rate = self.steps / self.seconds if self.seconds > 0 else None
        return {"steps": self.steps, "steps_per_s": rate, "peak_memory_mib": peak}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        stats = self.summary(pl_module)
        if stats["peak_memory_mib"] is not None and trainer.world_size > 1:
            peak = torch.tensor(float(stats["peak_memory_mib"]), device=pl_module.device)
            stats["peak_memory_mib"] = float(trainer.strategy.reduce(peak, reduce_op="max"))
        stats["devices"] = trainer.world_size
        stats["precision"] = str(trainer.precision)
        if trainer.is_global_zero:
            path = Path(self.path or Path(trainer.default_root_dir) / "step_stats.json")
            atomic_write_text(path, json.dumps(stats, indent=2) + "\n")
