"""Per-epoch fidelity of a tabular generator's rows to the held-out rows: ``val/fidelity`` (model
selection) and ``test/fidelity``; a warning when the best checkpoint is still the first epoch."""

from __future__ import annotations

from typing import Any, ClassVar

import lightning as L
import torch
from torch import Tensor

from lit_dl.callbacks.samples import FirstEpochBest
from lit_dl.data.table_transform import TableTransform
from lit_dl.errors import ConfigError
from lit_dl.evaluation.synthetic import fidelity


class TableFidelity(L.Callback):
    """Log ``{stage}/fidelity``, ``/column_shapes`` and ``/column_pairs`` after validation and test.

    Keeps the first ``rows`` real rows each validation (or test) epoch sees, then generates as
    many rows from a generator seeded with ``seed`` (the same draw every epoch) and scores both
    after the inverse transform: ``fidelity`` is the mean of the column-shape and column-pair
    scores (:func:`~lit_dl.evaluation.synthetic.fidelity.fidelity`; 1 = identical) of an
    unconditioned sample against the held-out validation (test) rows. The synthetic-data
    report's "fidelity to the training rows" is another figure: the same measure of its own,
    larger sample (drawn per class) against the rows the model was trained on. Model selection
    needs rows that hang together, not only columns that look right: a GAN matches the column
    shapes within a few epochs, long before its rows do.
    Logged through the module (``sync_dist``: the mean over processes), so
    ``ModelCheckpoint(monitor="val/fidelity", mode="max")`` and early stopping can watch it.
    Nothing is scored in the sanity check. After fitting, one warning line when the best
    checkpoint is still epoch 0 (:class:`~lit_dl.callbacks.samples.FirstEpochBest`).

    Needs a tabular generative task (``model=tvae``, ``model=ctgan``): its ``table`` (the fitted
    transform) and ``generate(n, generator=...)`` returning transformed rows.

    Args:
        rows: real rows kept, and rows generated, per epoch.
        seed: seed of the generated rows.
        skip_other_models: do nothing for a model that is not a tabular generator, instead of
            refusing it (for callback lists shared by every family, such as ``lit-dl eval``'s).
    """

    # What it logs in validation (a checkpoint or early stopping may monitor them).
    validation_metrics: ClassVar[tuple[str, ...]] = ("val/fidelity", "val/column_shapes", "val/column_pairs")

    def __init__(self, rows: int = 2000, seed: int = 0, skip_other_models: bool = False) -> None:
        if int(rows) < 2:
            raise ConfigError(f"callbacks.table_fidelity.rows must be at least 2, got {rows}")
        self.rows = int(rows)
        self.seed = int(seed)
        self.skip_other_models = bool(skip_other_models)
        self.active = True
        self.kept: list[Tensor] = []
        self.first_epoch_best = FirstEpochBest()

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.active = isinstance(getattr(pl_module, "table", None), TableTransform) and callable(
            getattr(pl_module, "generate", None)
        )
        if not self.active and not self.skip_other_models:
            raise ConfigError(
                f"callbacks.table_fidelity needs a tabular generative model (model=tvae or model=ctgan); "
                f"{type(pl_module).__name__} is not one (drop it with callbacks.table_fidelity=null)"
            )

    # ------------------------------------------------------------ keeping real rows
    def keep(self, batch: Any) -> None:
        """Keep a batch's rows ``(B, D)`` until :attr:`rows` are kept."""
        rows = batch[0] if isinstance(batch, tuple | list) else batch
        if self.active and sum(len(r) for r in self.kept) < self.rows:
            self.kept.append(rows.detach().float().cpu())

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.kept = []

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.kept = []

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not trainer.sanity_checking:
            self.keep(batch)

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self.keep(batch)

    # ------------------------------------------------------------ scoring
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.log_scores(pl_module, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.log_scores(pl_module, "test")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.active:
            self.first_epoch_best.record(trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.active:
            self.first_epoch_best.warn(trainer)

    def state_dict(self) -> dict[str, Any]:
        return self.first_epoch_best.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.first_epoch_best.load_state_dict(state_dict)

    def scores(self, pl_module: Any, real: Tensor) -> dict[str, float]:
        """Fidelity of as many rows generated from the fixed seed as ``real`` transformed rows ``(N, D)``."""
        table: TableTransform = pl_module.table
        # The same draw each epoch, so epochs are compared on one sample.
        generator = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        fake = pl_module.generate(len(real), generator=generator)
        kinds = {c["name"]: c["kind"] for c in table.modelled}
        return fidelity(table.inverse_transform(real.numpy()), table.inverse_transform(fake), kinds)

    def log_scores(self, pl_module: Any, stage: str) -> None:
        if not self.kept:
            return
        real = torch.cat(self.kept)[: self.rows]
        self.kept = []
        scores = self.scores(pl_module, real)
        # Model selection needs rows that hang together, not only columns that look right: the score
        # is the mean of the column shapes and the pair trends (correlations, contingency tables).
        pl_module.log(f"{stage}/fidelity", scores["score"], prog_bar=True, sync_dist=True)
        pl_module.log(f"{stage}/column_shapes", scores["column_shapes_mean"], sync_dist=True)
        pl_module.log(f"{stage}/column_pairs", scores["column_pairs_mean"], sync_dist=True)


__all__ = ["TableFidelity"]
