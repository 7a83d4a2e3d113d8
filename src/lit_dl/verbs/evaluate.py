"""``lit-dl eval ckpt_path=...``: test a checkpoint on the test split of its data."""

from __future__ import annotations

import lightning as L
from omegaconf import DictConfig

from lit_dl.distributed import check_launch
from lit_dl.tasks.classification import set_decision_threshold
from lit_dl.utils import to_plain
from lit_dl.verbs.common import (
    build,
    build_callbacks,
    build_loggers,
    print_metrics,
    restore_from_checkpoint,
    scalar_metrics,
    start,
    write_run_outputs,
)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Rebuild model, data and preprocessing from the checkpoint; return the test metrics."""
    start(cfg)
    L.seed_everything(cfg.seed, workers=True)
    model, datamodule = restore_from_checkpoint(cfg.ckpt_path, to_plain(cfg.get("data") or {}))
    if cfg.get("threshold") is not None:
        set_decision_threshold(model, cfg.threshold)
    trainer: L.Trainer = build(
        cfg.trainer,
        "trainer",
        logger=build_loggers(cfg.get("logger")) or False,
        callbacks=build_callbacks(cfg.get("callbacks")),
    )
    check_launch(trainer, "eval")
    trainer.test(model, datamodule=datamodule, verbose=False)
    metrics = scalar_metrics(trainer.callback_metrics)
    if trainer.is_global_zero:
        write_run_outputs(cfg.paths.output_dir, cfg, metrics)
        print_metrics(metrics, f"test metrics of {cfg.ckpt_path}")
        summary = model.summarize(metrics)
        if summary:
            print(summary)
        print(f"output directory: {cfg.paths.output_dir}")
    return metrics
