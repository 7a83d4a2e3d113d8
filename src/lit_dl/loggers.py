"""The run's loggers: their config entries, a CSV logger that continues a resumed run's log, and
images sent to every logger that shows them.

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when it starts; a run resumed in its
own folder (``lit-dl train resume=...``) would lose its history. :class:`CSVLogger` keeps the
file, appends to it, and can cut it back to the rows written when a checkpoint was saved
(:class:`~lit_dl.callbacks.run_state.RunState` asks it for that number and hands it back).
"""

from __future__ import annotations

import csv
import io
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from lit_dl.distributed import launch_rank
from lit_dl.utils import atomic_write_text

# The W&B run id of a run, kept in its folder so that a resumed run continues the same W&B run.
WANDB_ID_FILE = "wandb_run_id.txt"


class _ContinuingWriter(ExperimentWriter):
    """Lightning's writer, except that an existing ``metrics.csv`` is kept and appended to."""

    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir)
        self.rows = 0
        header, rows = self._read()
        self.metrics_keys = header
        self.rows = len(rows)

    def _check_log_dir_exists(self) -> None:
        pass  # (Lightning's deletes metrics.csv here)

    def _read(self) -> tuple[list[str], list[dict[str, str]]]:
        if not self._fs.isfile(self.metrics_file_path):
            return [], []
        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            reader = csv.DictReader(file)
            rows = list(reader)
            return list(reader.fieldnames or []), rows

    def save(self) -> None:
        pending = len(self.metrics)
        super().save()
        self.rows += pending

    def truncate(self, rows: int, keep_epoch: int | None = None) -> None:
        """Keep the first ``rows`` rows, and later ones of epoch ``keep_epoch`` (replaced atomically)."""
        self.save()
        header, found = self._read()
        if len(found) <= rows:
            return
        later = [r for r in found[rows:] if keep_epoch is not None and r.get("epoch") == str(keep_epoch)]
        kept = found[:rows] + later
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=header)  # (\r\n line ends, as Lightning's writer)
        writer.writeheader()
        writer.writerows(kept)
        atomic_write_text(self.metrics_file_path, text.getvalue())
        self.rows = len(kept)


class CSVLogger(LightningCSVLogger):
    """Lightning's ``CSVLogger`` (same arguments) that continues an existing ``metrics.csv``."""

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        if self._experiment is not None:
            return self._experiment
        self._fs.makedirs(self.root_dir, exist_ok=True)
        self._experiment = _ContinuingWriter(log_dir=self.log_dir)
        return self._experiment

    @rank_zero_only
    def rows_written(self) -> int:
        """Rows of ``metrics.csv`` so far (all on disk: this writes what is pending)."""
        self.experiment.save()
        return self.experiment.rows

    @rank_zero_only
    def truncate(self, rows: int, keep_epoch: int | None = None) -> None:
        """Cut ``metrics.csv`` back to its first ``rows`` rows; later rows of epoch ``keep_epoch`` stay
        (the epoch-end rows of a checkpoint written at an epoch's end, which a resumed run does not
        write again)."""
        self.experiment.truncate(rows, keep_epoch)


def logger_entries(cfg: DictConfig, output_dir: Path, resuming: bool) -> dict[str, Any] | None:
    """The ``logger`` entries; a W&B logger gets the run's W&B id (kept in the run folder), and a
    resumed run continues that W&B run (``resume="allow"``)."""
    node = cfg.get("logger")
    if not node:
        return None
    entries: dict[str, Any] = OmegaConf.to_container(node, resolve=True)  # type: ignore[assignment]
    for entry in entries.values():
        if not isinstance(entry, dict) or not str(entry.get("_target_", "")).endswith("WandbLogger"):
            continue
        path = output_dir / WANDB_ID_FILE
        known = path.read_text().strip() if resuming and path.is_file() else ""
        entry["id"] = entry.get("id") or known or secrets.token_hex(4)
        if resuming:
            entry["resume"] = "allow"
        if launch_rank() == 0:
            path.write_text(f"{entry['id']}\n")
    return entries


def log_run_config(loggers: Sequence[Any], cfg: DictConfig) -> None:
    """Send the run's resolved config to every logger (as its hyperparameters)."""
    from lit_dl.utils import to_plain

    for logger in loggers:
        logger.log_hyperparams(to_plain(cfg))


def log_images(trainer: Any, images: Mapping[str, str | Path], *, step: int | None = None) -> None:
    """Show PNG files written by a callback (``key -> path``) in every logger that shows images
    (W&B: ``log_image``; TensorBoard: ``add_image``). CSV has no place for them: the files stay in
    the run folder either way."""
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    if not images or not getattr(trainer, "is_global_zero", True):
        return
    for logger in getattr(trainer, "loggers", []):
        if isinstance(logger, WandbLogger):
            for key, path in images.items():
                logger.log_image(key=key, images=[str(path)], step=step)
        elif isinstance(logger, TensorBoardLogger):
            import numpy as np
            from PIL import Image

            for key, path in images.items():
                with Image.open(path) as image:
                    pixels = np.asarray(image.convert("RGB"))
                logger.experiment.add_image(key, pixels, global_step=step or 0, dataformats="HWC")
