"""``lit-dl train``: fit, test the best checkpoint, write the run's outputs."""

from __future__ import annotations

import logging

import lightning as L
from omegaconf import DictConfig

from lit_dl.checkpoints import CheckpointMetadata
from lit_dl.distributed import check_launch
from lit_dl.utils import to_plain
from lit_dl.verbs.common import (
    build,
    build_callbacks,
    build_datamodule,
    build_loggers,
    build_task,
    load_checkpoint,
    print_metrics,
    scalar_metrics,
    start,
    write_run_outputs,
)

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, float]:
    """Train the configured model; return the final metrics (also written to ``metrics.json``)."""
    start(cfg)
    if cfg.get("ckpt_path"):
        load_checkpoint(cfg.ckpt_path)  # fail early, and in one line, on a missing or corrupted file
    L.seed_everything(cfg.seed, workers=True)

    # Data first: the datamodule describes the prepared data (DataSpec) and the task is sized by it.
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    model = build_task(cfg.model, datamodule)

    loggers = build_loggers(cfg.get("logger"))
    callbacks = [*build_callbacks(cfg.get("callbacks")), CheckpointMetadata()]
    trainer: L.Trainer = build(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False)
    check_launch(trainer, "train")
    for logger in trainer.loggers:
        logger.log_hyperparams(to_plain(cfg))

    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = scalar_metrics(trainer.callback_metrics)

    # Validate and test the best checkpoint, so every number in metrics.json describes one model.
    checkpoint = trainer.checkpoint_callback
    best = checkpoint.best_model_path if checkpoint is not None else ""
    if best:
        trainer.validate(model, datamodule=datamodule, ckpt_path=best, verbose=False)
        metrics = scalar_metrics(trainer.callback_metrics)
    else:
        log.warning("no best checkpoint (checkpointing off?): the metrics are those of the last weights")
    if cfg.get("test", True):
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None, verbose=False)
        metrics.update(scalar_metrics(trainer.callback_metrics))

    if trainer.is_global_zero:
        output_dir = cfg.paths.output_dir
        write_run_outputs(output_dir, cfg, metrics)
        test_metrics = {k: v for k, v in metrics.items() if k.startswith("test/")}
        print_metrics(
            test_metrics or metrics,
            ("test metrics (best checkpoint)" if best else "test metrics (last weights)")
            if test_metrics
            else "metrics",
        )
        summary = model.summarize(metrics)
        if summary:
            print(summary)
        print(f"output directory: {output_dir}")
    return metrics
