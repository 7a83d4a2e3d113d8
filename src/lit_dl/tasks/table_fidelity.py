"""Per-epoch fidelity of a tabular generator's rows, shared by the tabular VAE and GAN."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lit_dl.evaluation.synthetic_report import fidelity


class TableFidelity:
    """Mixin for tabular generator tasks: ``{stage}/fidelity`` at the end of validation and test.

    Keeps the first ``hparams.fidelity_rows`` real rows a stage sees (:meth:`keep_rows`), then
    generates as many rows from a fixed seed and scores both after the inverse transform: the
    mean of the column-shape and column-pair scores of the synthetic-data report.
    """

    table: Any
    hparams: Any
    device: torch.device
    log: Any
    generate: Any

    def keep_rows(self, rows: Tensor) -> None:
        kept = self.__dict__.setdefault("_fidelity_rows", [])
        if sum(len(r) for r in kept) < self.hparams.fidelity_rows:
            kept.append(rows.detach().float().cpu())

    def log_fidelity(self, stage: str) -> None:
        kept = self.__dict__.get("_fidelity_rows") or []
        if not kept:
            return
        real = torch.cat(kept)[: self.hparams.fidelity_rows].numpy()
        self.__dict__["_fidelity_rows"] = []
        generator = torch.Generator(device=self.device).manual_seed(0)  # the same draw each epoch
        fake = self.generate(len(real), generator)
        kinds = {c["name"]: c["kind"] for c in self.table.modelled}
        scores = fidelity(self.table.inverse_transform(real), self.table.inverse_transform(fake), kinds)
        # Model selection needs rows that hang together, not only columns that look right: the score
        # is the mean of the column shapes and the pair trends (correlations, contingency tables).
        self.log(f"{stage}/fidelity", scores["score"], prog_bar=True, sync_dist=True)
        self.log(f"{stage}/column_shapes", scores["column_shapes_mean"], sync_dist=True)
        self.log(f"{stage}/column_pairs", scores["column_pairs_mean"], sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self.log_fidelity("val")

    def on_test_epoch_end(self) -> None:
        self.log_fidelity("test")

    def summarize(self, metrics: dict[str, float]) -> str | None:
        """The test fidelity and how to sample, printed after the metrics table."""
        if "test/fidelity" not in metrics:
            return None
        return (
            f"fidelity (column shapes and pairs) of samples vs test rows: {metrics['test/fidelity']:.3f} "
            "(1 = identical); "
            "lit-dl sample ckpt_path=... n=10000 output=synthetic.csv writes a table"
        )
