"""Pieces every verb shares: building components from config, checkpoints, run outputs."""

from __future__ import annotations

import io
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping
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
from lit_dl.utils import atomic_write_text, format_number, write_json

log = logging.getLogger(__name__)

__all__ = [
    "build",
    "build_callbacks",
    "build_datamodule",
    "build_loggers",
    "build_task",
    "check_output",
    "check_required",
    "load_checkpoint",
    "print_metrics",
    "restore_from_checkpoint",
    "scalar_metrics",
    "start",
    "write_run_config",
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


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file (also through a link, or spelled differently)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return Path(a).resolve() == Path(b).resolve()


def check_output(
    output: str | Path,
    *,
    suffixes: Iterable[str],
    what: str,
    overwrite: bool,
    inputs: Mapping[str, Any] | None = None,
    key: str = "output",
) -> Path:
    """Refuse, in one line and before any work, an output that would destroy something of the user's.

    The suffix must be one of ``suffixes`` (the kinds of file ``what`` is written as); a file that
    exists is replaced only with ``overwrite=true``; an input (``inputs``: key -> path, e.g. the
    checkpoint) is never written over, whatever ``overwrite`` says. Returns the absolute path
    (a relative one is taken from the working directory).
    """
    path = Path(str(output))
    suffixes = tuple(suffixes)
    if path.suffix.lower() not in suffixes:
        raise ConfigError(
            f"{key}={output} : {what} are written as {', '.join(suffixes)}; "
            "name a file with one of these suffixes"
        )
    if path.is_dir():
        raise ConfigError(
            f"{key}={output} is a folder: name a file in it, e.g. {key}={path / ('out' + suffixes[0])}"
        )
    for name, source in (inputs or {}).items():
        if source is not None and str(source) and same_file(path, str(source)):
            raise ConfigError(
                f"{key}={output} is the {name} file: lit-dl never writes over its inputs (also not with "
                f"overwrite=true); choose another {key}="
            )
    if path.exists() and not overwrite:
        raise ConfigError(
            f"{key}={output} exists: add overwrite=true to replace it, or choose another {key}="
        )
    return path.absolute()


def start(cfg: DictConfig) -> None:
    """What every verb does first: required keys set, the user's extra ``_target_`` packages allowed,
    an accelerator that exists."""
    check_required(cfg)
    allow_targets(cfg.get("allow_targets"), replace=True)
    check_accelerator(cfg.get("trainer"))


def check_accelerator(trainer_cfg: Mapping[str, Any] | None) -> None:
    """``trainer.accelerator=gpu`` where torch sees no GPU: one line with the way out (Lightning's own
    message, "No supported gpu backend found!", gives none)."""
    accelerator = str((trainer_cfg or {}).get("accelerator", "auto")).lower()
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        build_note = (
            "" if torch.version.cuda else f" (this torch, {torch.__version__}, is built without CUDA)"
        )
        raise ConfigError(
            f"trainer.accelerator={accelerator} but torch sees no GPU{build_note}: use trainer=cpu, or "
            "trainer.accelerator=auto to use a GPU only where there is one"
        )


def build_datamodule(cfg: DictConfig) -> L.LightningDataModule:
    """The configured datamodule. Not recursive: nested entries (e.g. ``data.augment`` transforms)
    stay plain config, are saved as such in checkpoints, and the datamodule builds them in setup()."""
    datamodule = build(cfg.data, "data", _recursive_=False)
    if not isinstance(datamodule, DataSource):
        raise ConfigError(
            f"data._target_ {cfg.data.get('_target_')} is not a lit_dl datamodule: it must offer "
            "data_spec(), state_dict() and load_state_dict() (see lit_dl.data.spec.DataSource)"
        )
    return datamodule


def build_task(model_cfg: DictConfig, datamodule: DataSource) -> Task:
    """Instantiate the task with the (set-up) datamodule's :class:`~lit_dl.data.spec.DataSpec`."""
    import_class(str(model_cfg.get("_target_")), "model", Task)
    return build(model_cfg, "model", _recursive_=False, data=datamodule.data_spec().to_dict())


def build_callbacks(cfg: DictConfig | None) -> list[L.Callback]:
    """The configured callbacks; two that a checkpoint could not tell apart are refused naming both keys.

    An entry with settings but no ``_target_`` is what an experiment's tweaks of a callback leave when
    the chosen group does not have it (``experiment=digits_vae callbacks=none``): skipped with a warning.
    """
    built = {}
    for name, node in (cfg or {}).items():
        if node is None:
            continue
        if isinstance(node, Mapping | DictConfig) and "_target_" not in node:
            log.warning(
                "callbacks.%s has settings (%s) but no _target_: the callbacks group in use does not "
                "define it, so it is left out",
                name,
                ", ".join(map(str, node)),
            )
            continue
        built[name] = build(node, f"callbacks.{name}")
    check_callback_state_keys(built)
    return list(built.values())


def check_callback_state_keys(callbacks: Mapping[str, L.Callback]) -> None:
    """Refuse two stateful callbacks with one ``state_key``, as Lightning's Trainer does, but naming the
    config keys (e.g. ``callbacks.model_checkpoint.monitor=step`` beside ``callbacks.last_checkpoint``)."""
    seen: dict[str, str] = {}
    for name, callback in callbacks.items():
        if type(callback).state_dict is L.Callback.state_dict:  # no state: Lightning does not check it
            continue
        key = callback.state_key
        if key in seen:
            hint = (
                " (to keep the last weights as best.ckpt: callbacks.model_checkpoint.monitor=null)"
                if isinstance(callback, L.pytorch.callbacks.ModelCheckpoint)
                else ""
            )
            raise ConfigError(
                f"callbacks.{seen[key]} and callbacks.{name} are the same {type(callback).__name__} "
                f"({key}), which a checkpoint cannot hold twice: change the settings of one or set it to "
                f"null{hint}"
            )
        seen[key] = name


def configured_monitors(cfg: DictConfig) -> list[tuple[str, str, int]]:
    """``(config key, metric, every n epochs)`` of every metric the run's callbacks and its
    ``ReduceLROnPlateau`` scheduler watch (``every_n_epochs``: a checkpoint's own, else 1)."""
    monitors = [
        (f"callbacks.{name}.monitor", str(node.monitor), int(node.get("every_n_epochs") or 1))
        for name, node in (cfg.get("callbacks") or {}).items()
        if isinstance(node, Mapping | DictConfig) and node.get("monitor")
    ]
    model = cfg.get("model") or {}
    scheduler = model.get("scheduler") or {}
    if str(scheduler.get("_target_", "")).endswith("ReduceLROnPlateau") and model.get("scheduler_monitor"):
        monitors.append(("model.scheduler_monitor", str(model.scheduler_monitor), 1))
    return monitors


def check_monitors(cfg: DictConfig, trainer: L.Trainer) -> None:
    """Refuse, before training, a monitor of a metric that only a callback logs when the run does not
    have that callback (``experiment=digits_gan callbacks.sample_quality=null`` keeps ``monitor:
    val/fid``), or has it measure on fewer epochs than the metric is watched. Lightning would stop
    at the first validation without it. Runs whose monitors never look (``fast_dev_run``, no
    validation batches) are left alone, as Lightning leaves them."""
    from lit_dl.callbacks.sample_quality import SampleQuality
    from lit_dl.callbacks.table_fidelity import TableFidelity

    if trainer.fast_dev_run or trainer.limit_val_batches == 0:
        return
    validate_every = trainer.check_val_every_n_epoch
    for producer, entry in ((SampleQuality, "sample_quality"), (TableFidelity, "table_fidelity")):
        found = next((c for c in trainer.callbacks if isinstance(c, producer)), None)
        for key, metric, watch_every in configured_monitors(cfg):
            if metric not in producer.validation_metrics:
                continue
            if found is None:
                raise ConfigError(
                    f"{key}={metric} watches a metric of the {producer.__name__} callback, which this run "
                    f"does not have (callbacks.{entry}): put it back, or set {key} to a metric the model "
                    "logs (its metrics.csv lists them) or to null"
                )
            every = int(getattr(found, "every_n_epochs", 1))
            # watched on the epochs that are validated and (a checkpoint's every_n_epochs) saved
            watched = math.lcm(validate_every, watch_every) if validate_every else None
            if watched and watched % every:
                raise ConfigError(
                    f"{key}={metric} is measured every {every} epochs (callbacks.{entry}.every_n_epochs) "
                    f"but watched every {watched} (trainer.check_val_every_n_epoch={validate_every}): "
                    f"make the second a multiple of the first, or watch another metric"
                )


# Lightning's words when a monitored metric was never logged (2.6): ModelCheckpoint, EarlyStopping,
# and a ReduceLROnPlateau scheduler.
_MISSING_MONITOR = (
    re.compile(r"ModelCheckpoint\(monitor='(?P<metric>[^']+)'\) could not find the monitored key"),
    re.compile(r"Early stopping conditioned on metric `(?P<metric>[^`]+)` which is not available"),
    re.compile(r"ReduceLROnPlateau conditioned on metric (?P<metric>\S+) which is not available"),
)


def missing_monitor_error(err: Exception, cfg: DictConfig, logged: Iterable[str]) -> ConfigError | None:
    """Lightning's error about a monitored metric nobody logs, as one line naming the config key and
    the metrics the run does log (``logged``: ``trainer.callback_metrics``); None for other errors."""
    text = str(err)
    match = next((m for pattern in _MISSING_MONITOR if (m := pattern.search(text))), None)
    if match is None:
        return None
    metric = match.group("metric")
    keys = [key for key, watched, _ in configured_monitors(cfg) if watched == metric] or ["the monitor"]
    names = sorted(
        {n.removesuffix("_step").removesuffix("_epoch") for n in logged if n not in ("epoch", "step")}
    )
    return ConfigError(
        f"{keys[0]}={metric} is not a metric this run logs ({', '.join(names) or 'none'}): set it to one "
        "of them, or to null"
    )


def build_loggers(cfg: DictConfig | None) -> list[Any]:
    return [build(node, f"logger.{name}") for name, node in (cfg or {}).items() if node is not None]


# The verbs' name for lit_dl.checkpoints.restore: the task and its datamodule from a checkpoint alone.
restore_from_checkpoint = restore


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
    """The metrics as a table, through logging: on the console and in the run's log file."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name in sorted(metrics):
        table.add_row(name, format_number(metrics[name]))
    text = io.StringIO()
    Console(file=text, width=100, color_system=None).print(table)
    log.info(text.getvalue().rstrip())


def write_run_config(output_dir: str | Path, cfg: DictConfig) -> None:
    """``config.yaml``: the resolved config (``train`` writes it first: ``resume=`` checks against it)."""
    atomic_write_text(Path(output_dir) / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))


def write_run_outputs(output_dir: str | Path, cfg: DictConfig, metrics: Mapping[str, float]) -> None:
    """``config.yaml`` (resolved) and ``metrics.json``, written by a run that completed, and last.

    (``status.json``, written by the CLI, says whether the run completed; see :mod:`lit_dl.runs`.)
    """
    output_dir = Path(output_dir)
    write_run_config(output_dir, cfg)
    write_json(output_dir / "metrics.json", metrics)
