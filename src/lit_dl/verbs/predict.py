"""``lit-dl predict ckpt_path=... input=new.csv output=predictions.csv``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from lit_dl.data.batching import batch_loader
from lit_dl.data.spec import PredictionSource
from lit_dl.errors import ConfigError
from lit_dl.tasks.classification import set_decision_threshold
from lit_dl.utils import atomic_write, atomic_write_text, write_csv
from lit_dl.verbs.common import build, check_output, restore_from_checkpoint, start


def prediction_frame(ids: pd.DataFrame, outputs: torch.Tensor, model: Any) -> pd.DataFrame:
    """The inputs' pass-through columns, then the model's own columns (``model.prediction_columns``):
    class probabilities and the predicted label, a predicted value, a VAE's anomaly score, ..."""
    frame = ids.reset_index(drop=True).copy()
    for name, values in model.prediction_columns(outputs).items():
        frame[name] = values
    return frame


TABLE_SUFFIXES = (".csv", ".parquet")


def write_table(frame: pd.DataFrame, path: Path, *, csv_raw: bool = False) -> None:
    """Write ``.csv`` or ``.parquet`` so a reader never sees a half-written file.

    In a CSV, text cells a spreadsheet would run as a formula (``=...``) get a leading ``'``
    unless ``csv_raw`` (:func:`lit_dl.utils.neutralize_formulas`).
    """
    if path.suffix.lower() == ".parquet":
        atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))
    else:
        write_csv(frame, path, raw=csv_raw)


def predict(cfg: DictConfig) -> Path:
    """Predict every row of ``cfg.input`` and write ``cfg.output``; return the output path."""
    start(cfg)
    output = check_output(
        cfg.output,
        suffixes=TABLE_SUFFIXES,
        what="predictions",
        overwrite=bool(cfg.get("overwrite", False)),
        inputs={"input": cfg.input, "ckpt_path": cfg.ckpt_path},
    )
    if int(cfg.batch_size) < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {cfg.batch_size}")
    model, datamodule = restore_from_checkpoint(cfg.ckpt_path)
    if not isinstance(datamodule, PredictionSource) or not callable(
        getattr(model, "prediction_columns", None)
    ):
        raise ConfigError(
            f"lit-dl predict does not apply to {type(model).__name__} on {type(datamodule).__name__}: "
            "use lit-dl sample for generative models and lit-dl eval for test metrics"
        )
    if cfg.get("threshold") is not None:
        set_decision_threshold(model, cfg.threshold)
    dataset, ids = datamodule.load_inputs(cfg.input)
    trainer: L.Trainer = build(cfg.trainer, "trainer")
    if trainer.world_size > 1:
        raise ConfigError(
            f"lit-dl predict runs in one process (got {trainer.world_size}): leave trainer.devices=1 "
            "and trainer.num_nodes=1; predictions are cheap next to training"
        )
    batches = trainer.predict(model, dataloaders=batch_loader(dataset, int(cfg.batch_size), shuffle=False))
    outputs = torch.cat([b.float().cpu() for b in batches])
    if trainer.is_global_zero:
        write_table(prediction_frame(ids, outputs, model), output, csv_raw=bool(cfg.get("csv_raw", False)))
        atomic_write_text(Path(cfg.paths.output_dir) / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        print(f"wrote {len(ids)} predictions to {output}")
    return output
