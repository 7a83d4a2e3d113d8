"""Write the synthetic-data report of a tabular generative model after testing (rank zero only)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only

from lit_dl.evaluation.synthetic_report import build_report, summary_lines, write_report

log = logging.getLogger(__name__)


class SyntheticReport(L.Callback):
    """After testing: sample a table, compare it with the real training and test rows, write the report.

    Writes ``report.json``, ``report.md``, ``plots/*.png`` and (with ``save_sample``)
    ``synthetic.csv`` in ``dirpath``. Needs a task with ``sample`` and a datamodule that keeps
    its raw splits in ``frames`` (:class:`~lit_dl.data.synthetic_tables.SyntheticTableDataModule`);
    does nothing for other runs and under ``fast_dev_run``.

    Args:
        dirpath: output folder (default: ``<trainer.default_root_dir>/report``).
        n: synthetic rows (default: as many as training rows, at most ``max_rows``).
        max_rows: cap of the default ``n``.
        seed: seed of the sample.
        save_sample: also write the sample as ``synthetic.csv``.
    """

    def __init__(
        self,
        dirpath: str | None = None,
        n: int | None = None,
        max_rows: int = 50000,
        seed: int = 0,
        save_sample: bool = True,
    ) -> None:
        self.dirpath = dirpath
        self.n = n
        self.max_rows = max_rows
        self.seed = seed
        self.save_sample = save_sample

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        frames = getattr(datamodule, "frames", None)
        if trainer.fast_dev_run or not callable(getattr(pl_module, "sample", None)) or not frames:
            return
        self._write(trainer, pl_module, datamodule)

    @rank_zero_only
    def _write(
        self, trainer: L.Trainer, pl_module: L.LightningModule, datamodule: L.LightningDataModule
    ) -> None:
        folder = Path(self.dirpath or Path(trainer.default_root_dir) / "report")
        train, test = datamodule.frames["train"], datamodule.frames["test"]
        n = int(self.n or min(len(train), self.max_rows))
        start = time.perf_counter()
        generator = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        synthetic = pl_module.sample(n=n, generator=generator)
        sample_seconds = time.perf_counter() - start
        report = build_report(
            train,
            synthetic,
            holdout=test,
            target=datamodule.target,
            positive_label=datamodule.resolved_positive_label(),
            categorical=datamodule.categorical,
            ignore=datamodule.drop,
            seed=self.seed,
        )
        report["sample_seconds"] = sample_seconds
        folder.mkdir(parents=True, exist_ok=True)
        if self.save_sample:
            synthetic.to_csv(folder / "synthetic.csv", index=False)
        path = write_report(report, folder, train, synthetic)
        for line in summary_lines(report):
            log.info(line)
        log.info("synthetic-data report: %s", path)
