"""What a checkpoint holds besides Lightning's state, so that a resumed run goes on as if never stopped."""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.trainer.states import TrainerFn


class RunState(L.Callback):
    """Saves with every checkpoint what Lightning's does not hold; restores it when ``fit`` resumes.

    Lightning restores weights, optimisers, schedulers, loop counters and callback states (best
    score, early-stopping patience), and lit_dl's data order is a function of seed and epoch
    (:class:`~lit_dl.data.batching.EpochShuffleSampler`, under DDP Lightning's ``DistributedSampler``).
    The rest is here, as plain data (the checkpoint loads with ``weights_only=True``):

    - the global generators of Python, NumPy and PyTorch (CPU and CUDA) as they were when the
      checkpoint was written, put back when training restarts (after Lightning's sanity check,
      which draws from them); under DDP every process takes rank zero's;
    - whether training was to stop (early stopping decides before the checkpoint is written);
    - the end of the epoch, when the checkpoint was written at it (lit_dl's checkpoints are): Lightning
      steps ``ReduceLROnPlateau`` schedulers after the checkpoint and, resuming, skips that step (the
      metric it needs is not in the checkpoint), so the metric is saved here and the step taken here;
    - for each logger that can continue its log (:class:`lit_dl.loggers.CSVLogger`), the rows it had
      written: a resumed run cuts the log back to them (keeping the epoch-end rows the stopped run
      wrote after the checkpoint, which Lightning does not write again), so no row is lost or doubled.

    The train verb always adds it; it acts only when ``fit`` resumes from a checkpoint.
    """

    def __init__(self) -> None:
        self._trainer: L.Trainer | None = None
        self._epoch_end = False  # between the epoch's last batch and the next epoch's start
        self._pending: dict[str, Any] | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_end = False

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx + 1 >= trainer.num_training_batches:
            self._epoch_end = True

    # ------------------------------------------------------------------ saving
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"rng": collect_rng_states()}
        trainer = self._trainer
        if trainer is None or trainer.state.fn != TrainerFn.FITTING:
            return state
        state["should_stop"] = bool(trainer.should_stop)
        state["epoch"] = int(trainer.current_epoch)
        state["epoch_end"] = self._epoch_end
        if self._epoch_end:
            state["plateau"] = _pending_plateau_steps(trainer)
        if trainer.is_global_zero:
            state["log_rows"] = {
                _logger_key(i, logger): logger.rows_written()
                for i, logger in enumerate(trainer.loggers)
                if callable(getattr(logger, "rows_written", None))
            }
        return state

    # ------------------------------------------------------------------ resuming
    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if trainer.state.fn != TrainerFn.FITTING:
            return  # validating or testing a checkpoint: nothing to continue
        state = (checkpoint.get("callbacks") or {}).get(self.state_key)
        if not isinstance(state, dict):
            return  # a checkpoint of an earlier lit_dl
        self._pending = state
        if trainer.is_global_zero:
            rows = state.get("log_rows") or {}
            keep_epoch = state.get("epoch") if state.get("epoch_end") else None
            for i, logger in enumerate(trainer.loggers):
                key = _logger_key(i, logger)
                if key in rows and callable(getattr(logger, "truncate", None)):
                    logger.truncate(int(rows[key]), keep_epoch=keep_epoch)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state, self._pending = self._pending, None
        if state is None:
            return
        for index, value in (state.get("plateau") or {}).items():
            configs = trainer.lr_scheduler_configs
            if int(index) < len(configs):
                pl_module.lr_scheduler_step(configs[int(index)].scheduler, value)
        if state.get("should_stop"):
            trainer.should_stop = True
        if "rng" in state:
            restore_rng_states(state["rng"])  # last: nothing here may draw after it


def _logger_key(index: int, logger: Any) -> str:
    return f"{index}:{type(logger).__name__}"


def _pending_plateau_steps(trainer: L.Trainer) -> dict[int, float]:
    """The ``ReduceLROnPlateau`` steps Lightning takes at the end of this epoch, after checkpointing:
    scheduler index -> the monitored value (as Lightning decides which step, in its fit loop)."""
    module = trainer.lightning_module
    if not module.automatic_optimization:
        return {}
    steps: dict[int, float] = {}
    for index, config in enumerate(trainer.lr_scheduler_configs):
        if not config.reduce_on_plateau or config.interval != "epoch":
            continue
        if (trainer.current_epoch + 1) % config.frequency:
            continue
        value = trainer.callback_metrics.get(str(config.monitor))
        if value is not None:
            steps[index] = float(value)
    return steps


def collect_rng_states() -> dict[str, Any]:
    """The global generators' states as tensors and lists (no NumPy arrays: ``weights_only`` loads them)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": int(version), "state": list(internal), "gauss": gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Put back what :func:`collect_rng_states` saved."""
    torch.set_rng_state(states["torch"])
    numpy = states["numpy"]
    np.random.set_state(
        (
            numpy["kind"],
            numpy["keys"].numpy().astype(np.uint32),
            numpy["pos"],
            numpy["has_gauss"],
            numpy["cached_gaussian"],
        )
    )
    python = states["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss"]))
    cuda = states.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
