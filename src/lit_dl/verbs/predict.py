"""``lit-dl predict ckpt_path=... input=new.csv output=predictions.csv``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from lit_dl.data.batching import batch_loader
from lit_dl.errors import ConfigError
from lit_dl.utils import atomic_write_text
from lit_dl.verbs.common import build, check_required, restore_from_checkpoint


def prediction_frame(
    datamodule: L.LightningDataModule, ids: pd.DataFrame, outputs: torch.Tensor, model: Any = None
) -> pd.DataFrame:
    """The inputs' id columns, then class probabilities and the predicted label (or the predicted value).

    A model with a ``prediction_columns(outputs)`` method names its own columns (e.g. a VAE's
    anomaly score).
    """
    frame = ids.reset_index(drop=True).copy()
    named = getattr(model, "prediction_columns", None)
    if callable(named):
        for name, values in named(outputs).items():
            frame[name] = values
    elif datamodule.task_type == "classification":
        classes = list(datamodule.classes)
        for i, name in enumerate(classes):
            frame[f"prob_{name}"] = outputs[:, i].numpy()
        frame["prediction"] = [classes[i] for i in outputs.argmax(dim=1).tolist()]
    else:
        frame["prediction"] = outputs.numpy()
    return frame


TABLE_SUFFIXES = (".csv", ".parquet")


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """Write ``.csv`` or ``.parquet`` so a reader never sees a half-written file."""
    if path.suffix.lower() == ".parquet":
        tmp = path.with_name(f".{path.name}.tmp")
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(tmp, index=False)
        tmp.replace(path)
    else:
        atomic_write_text(path, frame.to_csv(index=False))


def predict(cfg: DictConfig) -> Path:
    """Predict every row of ``cfg.input`` and write ``cfg.output``; return the output path."""
    check_required(cfg)
    output = Path(cfg.output)
    if output.suffix.lower() not in TABLE_SUFFIXES:
        raise ConfigError(f"output must end in .csv or .parquet, got {output}")
    if int(cfg.batch_size) < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {cfg.batch_size}")
    model, datamodule = restore_from_checkpoint(cfg.ckpt_path)
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
        write_table(prediction_frame(datamodule, ids, outputs, model), output)
        atomic_write_text(Path(cfg.paths.output_dir) / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        print(f"wrote {len(ids)} predictions to {output}")
    return output
