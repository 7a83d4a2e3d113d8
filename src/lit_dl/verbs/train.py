"""``lit-dl train``: fit, test the best checkpoint, write the run's outputs.

``lit-dl train resume=auto|DIR`` continues a run in its own folder: the CLI turns it into the run's
own overrides, ``ckpt_path=<its newest checkpoint>`` and ``hydra.run.dir=DIR`` (:mod:`lit_dl.runs`);
here the checkpoint restores everything the run had (:class:`~lit_dl.callbacks.run_state.RunState`).
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import ModelSummary, ProgressBar
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.model_summary import get_human_readable_count
from omegaconf import DictConfig, OmegaConf, open_dict
from torch.nn.parameter import UninitializedParameter

from lit_dl.callbacks.checkpoint_io import remove_partial_files
from lit_dl.callbacks.run_limits import StopAtMaxSteps
from lit_dl.callbacks.run_state import RunState
from lit_dl.checkpoints import CheckpointMetadata
from lit_dl.compat import skip_noop_batch_hooks, skip_repeated_cuda_probe
from lit_dl.distributed import check_launch, launch_rank
from lit_dl.errors import ConfigError
from lit_dl.loggers import finish_loggers, log_run_config, logger_entries
from lit_dl.runs import check_resumed_config
from lit_dl.verbs.common import (
    build,
    build_callbacks,
    build_datamodule,
    build_loggers,
    build_task,
    check_monitors,
    load_checkpoint,
    missing_monitor_error,
    print_metrics,
    scalar_metrics,
    start,
    write_run_config,
    write_run_outputs,
)

log = logging.getLogger(__name__)


def train(cfg: DictConfig, extra_callbacks: Sequence[L.Callback] = ()) -> dict[str, float]:
    """Train the configured model; return the final metrics (also written to ``metrics.json``).

    ``extra_callbacks``: callbacks of a verb that runs ``train`` as one of many jobs (``tune``'s
    pruning, for example), added to the configured ones.
    """
    start(cfg)
    output_dir = Path(cfg.paths.output_dir)
    resuming = bool(cfg.get("resume"))
    if resuming:
        check_resume(cfg, output_dir)
    if cfg.get("ckpt_path"):
        load_checkpoint(cfg.ckpt_path)  # fail early, and in one line, on a missing or corrupted file
    L.seed_everything(cfg.seed, workers=True)

    # Data first: the datamodule describes the prepared data (DataSpec) and the task is sized by it.
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    model = build_task(cfg.model, datamodule)

    loggers = build_loggers(logger_entries(cfg, output_dir, resuming))
    # Always added: checkpoint metadata (eval/predict/sample rebuild the run from it) and what a
    # resumed run needs besides Lightning's own state (generators, the log's length).
    callbacks = [
        *build_callbacks(cfg.get("callbacks")),
        *extra_callbacks,
        CheckpointMetadata(),
        RunState(),
        StopAtMaxSteps(),  # a step limit shorter than an epoch still ends validated and checkpointed
    ]
    # Checkpoints written whole or not at all (configs: checkpoint_io).
    plugins: dict[str, Any] = (
        {"plugins": [build(cfg.checkpoint_io, "checkpoint_io")]} if cfg.get("checkpoint_io") else {}
    )
    # callbacks.model_summary=null / callbacks.progress_bar=null: none (not Lightning's default one).
    if "enable_model_summary" not in cfg.trainer and not any(isinstance(c, ModelSummary) for c in callbacks):
        plugins["enable_model_summary"] = False
    if "enable_progress_bar" not in cfg.trainer and not any(isinstance(c, ProgressBar) for c in callbacks):
        plugins["enable_progress_bar"] = False
    skip_repeated_cuda_probe()  # without a GPU, every optimiser step would look for one (compat)
    trainer: L.Trainer = build(
        cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False, **plugins
    )
    check_launch(trainer, "train")
    check_monitors(cfg, trainer)
    for hooked in (*trainer.callbacks, model):
        skip_noop_batch_hooks(hooked)  # Lightning's per-callback cost of every empty hook, every step
    if launch_rank() == 0:
        write_run_config(output_dir, cfg)  # first: resume= checks the config it resumes with against it
    log_run_config(trainer.loggers, cfg)
    if trainer.is_global_zero:
        log.info(start_banner(cfg, datamodule, model, trainer))

    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    except (MisconfigurationException, RuntimeError) as err:
        # A monitored metric nobody logs: Lightning finds out at the first epoch's end.
        error = missing_monitor_error(err, cfg, trainer.callback_metrics)
        if error is None:
            raise
        raise error from None
    metrics = scalar_metrics(trainer.callback_metrics)

    # Validate and test the best checkpoint, so every number in metrics.json describes one model.
    checkpoint = trainer.checkpoint_callback
    best = checkpoint.best_model_path if checkpoint is not None else ""
    if best:
        trainer.validate(model, datamodule=datamodule, ckpt_path=best, verbose=False, weights_only=True)
        metrics = scalar_metrics(trainer.callback_metrics)
    else:
        log.warning("no best checkpoint (checkpointing off?): the metrics are those of the last weights")
    if cfg.get("test", True):
        # The model holds the best weights now (validate loaded them): test them without a second load.
        trainer.test(model, datamodule=datamodule, verbose=False)
        metrics.update(scalar_metrics(trainer.callback_metrics))

    finish_loggers(trainer.loggers)  # W&B: summary and artifacts written, the run closed

    if trainer.is_global_zero:
        write_run_outputs(output_dir, cfg, metrics)
        # model_checkpoint.monitor=null keeps the latest epoch as best.ckpt (churn_ctgan, adult_ctgan)
        kept = "best" if checkpoint is not None and checkpoint.monitor else "last"
        tested = f"test metrics ({kept} checkpoint)" if best else "test metrics (last weights)"
        test_metrics = {k: v for k, v in metrics.items() if k.startswith("test/")}
        print_metrics(
            test_metrics or metrics,
            tested if test_metrics else "metrics",
        )
        summary = model.summarize(metrics)
        if summary:
            log.info(summary)
        for picture in pictures_written(output_dir):
            log.info("plot: %s", picture)
        log.info("output directory: %s", output_dir)
    return metrics


def start_banner(cfg: DictConfig, datamodule: Any, model: L.LightningModule, trainer: L.Trainer) -> str:
    """One line: what is trained, on how much data, where, how precisely, and where it is written."""
    try:
        choices = dict(HydraConfig.get().runtime.choices)
    except ValueError:  # (not started by Hydra: a script calling train() itself)
        choices = {}
    experiment = choices.get("experiment") or (
        f"data={choices['data']} model={choices['model']}" if "data" in choices and "model" in choices else ""
    )
    parameters = sum(p.numel() for p in model.parameters() if not isinstance(p, UninitializedParameter))
    net = type(getattr(model, "net", None)).__name__ if hasattr(model, "net") else ""
    try:
        samples = f"{len(datamodule.train_dataloader().dataset):,} training samples"
    except (TypeError, AttributeError, NotImplementedError):
        samples = "training data"
    device = trainer.strategy.root_device.type
    if trainer.world_size > 1:
        device = f"{trainer.world_size} x {device} ({type(trainer.strategy).__name__})"
    return (
        f"train{' ' + experiment if experiment else ''}: "
        f"{type(model).__name__}{f'({net})' if net else ''} with "
        f"{get_human_readable_count(parameters)} parameters on {samples}; {device}, "
        f"precision {trainer.precision}, seed {cfg.seed}; writing to {cfg.paths.output_dir}"
    )


def pictures_written(output_dir: Path) -> list[Path]:
    """The PNG files a run wrote into its folder (plots, sample grids), newest last; not the copies
    that loggers keep in their own folders."""
    copies = {"wandb", "tensorboard", "csv"}
    found = [p for p in output_dir.rglob("*.png") if not copies & set(p.relative_to(output_dir).parts)]
    return sorted(found, key=lambda p: p.stat().st_mtime)


def train_job(
    cfg: DictConfig,
    output_dir: str | Path,
    updates: Mapping[str, Any] | None = None,
    extra_callbacks: Sequence[L.Callback] = (),
) -> dict[str, float]:
    """Run :func:`train` as one job of a verb that trains many models (``tune``'s trials, ``cv``'s
    folds): a copy of ``cfg`` with ``updates`` (dotted key -> value, e.g. ``{"model.optimizer.lr":
    0.01}``) applied, writing everything into ``output_dir`` (a sub-folder of the verb's run).
    A key that the config does not have is a ConfigError naming it (``+key`` adds one on purpose)."""
    job = copy.deepcopy(cfg)
    for key, value in (updates or {}).items():
        name = key.removeprefix("+")
        if not key.startswith("+") and OmegaConf.select(job, name, default=_ABSENT) is _ABSENT:
            raise ConfigError(
                f"unknown config key '{name}': check its spelling, or add it on purpose with +{name}"
            )
        with open_dict(job):
            OmegaConf.update(job, name, value, merge=False, force_add=True)
    with open_dict(job):
        job.paths.output_dir = str(Path(output_dir).absolute())
        job.resume = None
    Path(job.paths.output_dir).mkdir(parents=True, exist_ok=True)
    return train(job, extra_callbacks)


_ABSENT = object()


def check_resume(cfg: DictConfig, output_dir: Path) -> None:
    """A resume continues the run in its own folder, with its own config; clears cut-off checkpoint writes."""
    if Path(str(cfg.resume)).resolve() != output_dir.resolve():
        raise ConfigError(
            f"resume={cfg.resume} runs in {output_dir}: give resume= on the command line "
            "(lit-dl train resume=DIR), where it also chooses the run folder"
        )
    check_resumed_config(cfg, output_dir)
    # (Lightning warns that checkpoints/ is not empty: in place, that is the point.)
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    if launch_rank() == 0:
        for path in remove_partial_files(output_dir / "checkpoints"):
            log.info("removed %s: a checkpoint write the stopped run did not finish", path.name)
