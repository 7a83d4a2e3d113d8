"""Pieces every verb shares: building components from config, checkpoints, run outputs."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from lit_dl.builder import allow_targets, build, import_class
from lit_dl.checkpoints import load_checkpoint, restore
from lit_dl.data.spec import DataSource
from lit_dl.errors import ConfigError
from lit_dl.tasks.base import Task
from lit_dl.utils import atomic_write_text, write_json

log = logging.getLogger(__name__)

__all__ = [
    "build",
    "build_callbacks",
    "build_datamodule",
    "build_loggers",
    "build_task",
    "check_required",
    "load_checkpoint",
    "print_metrics",
    "restore_from_checkpoint",
    "scalar_metrics",
    "start",
    "write_run_outputs",
]


def check_required(cfg: DictConfig) -> None:
    """Fail with one line naming every required key (``???``) left unset."""
    missing = sorted(k for k in OmegaConf.missing_keys(cfg) if not k.startswith("hydra"))
    if missing:
        example = missing[0]
        raise ConfigError(
            f"required config key(s) not set: {', '.join(missing)} (set them, e.g. {example}=...)"
        )


def start(cfg: DictConfig) -> None:
    """What every verb does first: required keys set, the user's extra ``_target_`` packages allowed."""
    check_required(cfg)
    allow_targets(cfg.get("allow_targets"), replace=True)


def build_datamodule(cfg: DictConfig) -> L.LightningDataModule:
    """The configured datamodule. Not recursive: nested entries (e.g. ``data.augment`` transforms)
    stay plain config, are saved as such in checkpoints, and the datamodule builds them in setup()."""
    datamodule = build(cfg.data, "data", _recursive_=False)
    if not isinstance(datamodule, DataSource):
        raise ConfigError(
            f"data._target_ {cfg.data.get('_target_')} is not a lit_dl datamodule: it must offer "
            "data_spec(), state_dict(), load_state_dict() and load_inputs() (see lit_dl.data.spec.DataSource)"
        )
    return datamodule


def build_task(model_cfg: DictConfig, datamodule: DataSource) -> Task:
    """Instantiate the task with the (set-up) datamodule's :class:`~lit_dl.data.spec.DataSpec`."""
    import_class(str(model_cfg.get("_target_")), "model", Task)
    return build(model_cfg, "model", _recursive_=False, data=datamodule.data_spec().to_dict())


def build_callbacks(cfg: DictConfig | None) -> list[L.Callback]:
    return [build(node, f"callbacks.{name}") for name, node in (cfg or {}).items() if node is not None]


def build_loggers(cfg: DictConfig | None) -> list[Any]:
    return [build(node, f"logger.{name}") for name, node in (cfg or {}).items() if node is not None]


def restore_from_checkpoint(
    path: str | Path, data_overrides: Mapping[str, Any] | None = None
) -> tuple[Task, L.LightningDataModule]:
    """Rebuild the task and its datamodule (with fitted preprocessing) from a checkpoint alone."""
    return restore(path, data_overrides)


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Logged metrics as ``name -> float`` (Lightning's ``_step``/``_epoch`` twins reduced to one name)."""
    out: dict[str, float] = {}
    for name, value in metrics.items():
        if name.endswith("_step"):
            continue
        number = float(value.item() if isinstance(value, torch.Tensor) else value)
        out[name.removesuffix("_epoch")] = number if math.isfinite(number) else float("nan")
    return out


def print_metrics(metrics: Mapping[str, float], title: str) -> None:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name in sorted(metrics):
        table.add_row(name, f"{metrics[name]:.4f}")
    Console().print(table)


def write_run_outputs(output_dir: str | Path, cfg: DictConfig, metrics: Mapping[str, float]) -> None:
    """``config.yaml`` (resolved) and ``metrics.json``; metrics last, as the mark of a finished run."""
    output_dir = Path(output_dir)
    atomic_write_text(output_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    write_json(output_dir / "metrics.json", metrics)
