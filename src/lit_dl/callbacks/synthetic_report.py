"""Write the synthetic-data report of a tabular generative model after testing (rank zero only)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.utilities import rank_zero_only

from lit_dl.errors import DataError
from lit_dl.evaluation.synthetic import build_report, summary_lines, write_report
from lit_dl.loggers import log_images
from lit_dl.utils import write_csv

log = logging.getLogger(__name__)


class SyntheticReport(L.Callback):
    """After testing: sample a table, compare it with the real training and test rows, write the report.

    Writes ``report.json``, ``report.md``, ``plots/*.png`` (also sent to the run's loggers as
    ``report/<column>``) and (with ``save_sample``) ``synthetic.csv`` in ``dirpath``. Its fidelity
    compares the sample with the training rows (the run's ``test/fidelity`` compares another sample
    with the test rows). Needs a task with ``sample`` and a datamodule that keeps its raw splits in
    ``frames`` (:class:`~lit_dl.data.synthetic_tables.SyntheticTableDataModule`); does nothing for
    other runs and under ``fast_dev_run``.

    Args:
        dirpath: output folder (default: ``<trainer.default_root_dir>/report``).
        n: synthetic rows (default: as many as training rows, at most ``max_rows``).
        max_rows: cap of the default ``n``.
        seed: seed of the sample.
        save_sample: also write the sample as ``synthetic.csv``.
        stratify: with a target, draw each class's rows with that class as the condition, as many
            as its share of the training rows (conditional sampling: the class balance is the real
            one, the rest of each row the model's). An unconditioned sample is scored beside it.
    """

    def __init__(
        self,
        dirpath: str | None = None,
        n: int | None = None,
        max_rows: int = 50000,
        seed: int = 0,
        save_sample: bool = True,
        stratify: bool = True,
    ) -> None:
        self.dirpath = dirpath
        self.n = n
        self.max_rows = max_rows
        self.seed = seed
        self.save_sample = save_sample
        self.stratify = stratify

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
        sampling, unconditioned = None, None
        target = datamodule.target
        if self.stratify and target and train[target].notna().all():
            try:
                unconditioned = synthetic
                synthetic = stratified_sample(pl_module, train[target], n, generator, self.seed)
                sampling = f"per class of `{target}` at its training rate (conditional sampling)"
            except DataError as err:  # the model writes too few rows of a class: report it unconditioned
                log.warning("stratified sample failed (%s); the report uses an unconditioned one", err)
                synthetic, unconditioned = unconditioned, None
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
            sampling=sampling,
            unconditioned=unconditioned,
        )
        report["sample_seconds"] = sample_seconds
        folder.mkdir(parents=True, exist_ok=True)
        if self.save_sample:
            write_csv(synthetic, folder / "synthetic.csv")  # formula-like text cells neutralised
        path = write_report(report, folder, train, synthetic)
        plots = {f"report/{name}": folder / file for name, file in report["plots"].items()}
        log_images(trainer, plots, step=trainer.global_step)
        for line in summary_lines(report):
            log.info(line)
        log.info("synthetic-data report: %s", path)


def stratified_sample(
    model: L.LightningModule, labels: pd.Series, n: int, generator: torch.Generator, seed: int = 0
) -> pd.DataFrame:
    """``n`` rows, each class of ``labels`` conditioned on in proportion to its count, in shuffled order."""
    counts = labels.astype(str).value_counts()
    sizes = np.floor(counts.to_numpy() * n / counts.sum()).astype(int)
    sizes[0] += n - sizes.sum()  # the rounding remainder goes to the largest class
    name = str(labels.name)
    parts = [
        model.sample(n=int(size), condition=f"{name}={label}", generator=generator)
        for label, size in zip(counts.index, sizes, strict=True)
        if size > 0
    ]
    order = np.random.default_rng(seed).permutation(n)
    return pd.concat(parts, ignore_index=True).iloc[order].reset_index(drop=True)
