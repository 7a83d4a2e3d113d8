"""Pieces every verb shares: building components from config, checkpoints, run outputs."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from lit_dl.errors import CheckpointError, ConfigError, LitDLError
from lit_dl.tasks.base import BaseTask
from lit_dl.tasks.generative import GenerativeTask
from lit_dl.utils import atomic_write_text, to_plain, write_json

log = logging.getLogger(__name__)

EXAMPLE_MODEL = {
    "classification": "mlp_classifier",
    "regression": "mlp_regressor",
    "forecasting": "lstm_forecaster",
    "language_model": "char_lstm",
    "tabular_generative": "tvae",
}
# Tasks are LightningModules of one of these bases (they write the checkpoint metadata verbs read).
TASK_BASES = (BaseTask, GenerativeTask)


def check_required(cfg: DictConfig) -> None:
    """Fail with one line naming every required key (``???``) left unset."""
    missing = sorted(k for k in OmegaConf.missing_keys(cfg) if not k.startswith("hydra"))
    if missing:
        example = missing[0]
        raise ConfigError(
            f"required config key(s) not set: {', '.join(missing)} (set them, e.g. {example}=...)"
        )


def build(node: Any, key: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that turns a failure into one line naming the config key."""
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, LitDLError):
            raise cause from None
        target = node.get("_target_") if isinstance(node, Mapping | DictConfig) else node
        detail = str(cause or err).splitlines()[0]
        raise ConfigError(f"cannot build '{key}' ({target}): {detail}") from err


def build_datamodule(cfg: DictConfig) -> L.LightningDataModule:
    # Not recursive: nested entries (e.g. data.augment transforms) stay plain config, are saved as
    # such in checkpoints, and the datamodule builds them in setup().
    return build(cfg.data, "data", _recursive_=False)


def task_class(target: str) -> type[BaseTask | GenerativeTask]:
    try:
        cls = get_class(target)
    except Exception as err:
        raise ConfigError(f"model._target_ {target!r} cannot be imported: {err}") from err
    if not (isinstance(cls, type) and issubclass(cls, TASK_BASES)):
        raise ConfigError(
            f"model._target_ {target!r} is not a lit_dl task "
            "(a subclass of lit_dl.tasks.BaseTask or lit_dl.tasks.GenerativeTask)"
        )
    return cls


def build_task(model_cfg: DictConfig, datamodule: Any) -> BaseTask | GenerativeTask:
    """Instantiate the task, handing it what the (set-up) datamodule knows about the data."""
    cls = task_class(model_cfg._target_)
    kwargs = datamodule.task_kwargs()
    modality = getattr(cls, "data_modality", None)
    if modality is not None:  # generative models care about the kind of data, not its labels
        data_modality = getattr(datamodule, "modality", None)
        if data_modality != modality:
            raise ConfigError(
                f"model={cls.__name__} needs {modality} data but data={type(datamodule).__name__} "
                f"gives {data_modality or 'something else'} (e.g. data=digits or data=fashion_mnist)"
            )
        return build(model_cfg, "model", _recursive_=False, **kwargs)
    if "anomaly_classes" in kwargs:
        raise ConfigError(
            "data.exclude_classes is for generative models (a VAE scores the held-out classes as "
            f"anomalies); {cls.__name__} is a classifier: set data.exclude_classes=[]"
        )
    data_type = getattr(datamodule, "task_type", None)
    if data_type and cls.task_type and data_type != cls.task_type:
        raise ConfigError(
            f"the data is a {data_type} problem but model={cls.__name__} does {cls.task_type}; "
            f"pick a {data_type} model (e.g. model={EXAMPLE_MODEL.get(data_type, '...')})"
            + (" or set data.task" if data_type in ("classification", "regression") else "")
        )
    return build(model_cfg, "model", _recursive_=False, **kwargs)


def build_callbacks(cfg: DictConfig | None) -> list[L.Callback]:
    return [build(node, f"callbacks.{name}") for name, node in (cfg or {}).items() if node is not None]


def build_loggers(cfg: DictConfig | None) -> list[Any]:
    return [build(node, f"logger.{name}") for name, node in (cfg or {}).items() if node is not None]


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a lit_dl checkpoint (plain data only: ``weights_only=True``)."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(
            f"ckpt_path is a folder: {path} (point it at a file, e.g. checkpoints/best.ckpt)"
        )
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path} (check ckpt_path)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"cannot read checkpoint {path}: it is corrupted or not a PyTorch checkpoint "
            f"({type(err).__name__}: {str(err).splitlines()[0].split('. ')[0][:100]})"
        ) from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no state_dict)")
    return checkpoint


def restore_from_checkpoint(
    path: str | Path, data_overrides: Mapping[str, Any] | None = None
) -> tuple[BaseTask | GenerativeTask, L.LightningDataModule]:
    """Rebuild the task and its datamodule (with fitted preprocessing) from a checkpoint alone."""
    checkpoint = load_checkpoint(path)
    meta = checkpoint.get("lit_dl")
    if not meta or "datamodule" not in meta:
        raise CheckpointError(f"{path} was not written by `lit-dl train` (no lit_dl metadata)")
    cls = task_class(meta["task"])
    try:
        model = cls.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    except LitDLError:
        raise
    except Exception as err:
        raise CheckpointError(f"cannot rebuild the model from {path}: {str(err).splitlines()[0]}") from err
    dm_cls = get_class(meta["datamodule"])
    hparams = {**meta["datamodule_hparams"], **to_plain(dict(data_overrides or {}))}
    datamodule = build({"_target_": meta["datamodule"], **hparams}, "data", _recursive_=False)
    datamodule.load_state_dict(checkpoint.get(dm_cls.__qualname__, {}))
    model.eval()
    return model, datamodule


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
