"""``lit-dl cv``: k-fold cross-validation of a supervised experiment.

Each fold is one complete ``train`` run (:func:`~lit_dl.verbs.train.train_job`) in ``<run>/fold_<i>/``
with ``data.cv_folds=k data.cv_fold=i``: the datamodule holds out fold ``i`` as its test set and
carves the validation set from the other folds with its own split logic, so early stopping and the
choice of the best checkpoint never see the test fold (how folds are made per kind of data:
``cv_kind`` of the datamodule, docs/cv.md). Every fold's checkpoint records its fold in the
datamodule's config, so ``lit-dl eval``/``predict`` on it see that fold's split.

At the end: a table of each metric's mean, standard deviation (sample, n-1) and per-fold values;
``<run>/metrics.json`` as ``{metric: {"mean": m, "std": s, "folds": [v_0, ..., v_k-1]}}`` (``null``
for a fold that failed, and for the std of a single completed fold); ``<run>/folds.csv`` with one row
per fold (status, seconds, error, metrics). A failed fold is one line; the other folds' results are
still written. Only when every fold fails does ``cv`` fail (with the first fold's error).
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from lit_dl.builder import import_class
from lit_dl.errors import ConfigError, LitDLError, TrainingError
from lit_dl.loggers import wandb_job_updates
from lit_dl.tasks.base import Task
from lit_dl.tasks.supervised import SupervisedTask
from lit_dl.utils import atomic_write_text, write_csv, write_json
from lit_dl.verbs.common import start, write_run_config
from lit_dl.verbs.train import train_job

log = logging.getLogger(__name__)

# The unresolved config the fold workers of cv.parallel > 1 start from (in the run folder).
WORKER_CONFIG = "job.yaml"
WORKER_LOG = "worker.log"


@dataclass
class FoldResult:
    """What one fold gave: its metrics, or why it failed."""

    fold: int
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0
    exception: BaseException | None = None


def cross_validate(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """Train and test every fold; return (and write to ``metrics.json``) each metric's mean, std and folds."""
    start(cfg)
    folds, parallel = check_cv(cfg)
    kind = check_supported(cfg)
    run_dir = Path(cfg.paths.output_dir)
    write_run_config(run_dir, cfg)
    log.info("cross-validation: %d folds, %s; %d at a time", folds, kind, min(parallel, folds))

    if parallel > 1:
        results = run_folds_in_workers(cfg, run_dir, folds, parallel)
    else:
        results = [run_fold_in_process(cfg, run_dir, folds, fold) for fold in range(folds)]
    failed = [r for r in results if r.error is not None]
    if len(failed) == folds:
        first = failed[0]
        if first.exception is not None:
            raise first.exception
        raise TrainingError(f"every fold failed; fold 0: {first.error}")

    table = fold_table(results)
    summary = summarize(table)
    write_csv(table, run_dir / "folds.csv")
    write_json(run_dir / "metrics.json", summary)
    print_summary(summary, folds, folds - len(failed))
    for result in failed:
        log.error("fold %d failed: %s", result.fold, result.error)
    log.info("%d of %d folds completed; output directory: %s", folds - len(failed), folds, run_dir)
    return summary


# ---------------------------------------------------------------------------------------- checks
def check_cv(cfg: DictConfig) -> tuple[int, int]:
    """``(folds, parallel)`` from ``cfg.cv``; one-line errors for values that cannot work."""
    node = cfg.get("cv") or {}
    values = {}
    for key, least in (("folds", 2), ("parallel", 1)):
        value = node.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"cv.{key} must be an integer of at least {least}, got {value!r}")
        values[key] = value
    if cfg.get("test") is False:
        raise ConfigError("cv tests every fold on its held-out part: drop test=false")
    if cfg.get("resume"):
        raise ConfigError(
            "resume= continues one train run; cv trains every fold afresh (drop resume=, or continue one "
            "fold with lit-dl train)"
        )
    return values["folds"], values["parallel"]


def check_supported(cfg: DictConfig) -> str:
    """How the configured datamodule makes folds (its ``cv_kind``); a ConfigError when it cannot, or when
    the model is not supervised (a generative model has no held-out score to average)."""
    task = str(cfg.model.get("_target_"))
    if not issubclass(import_class(task, "model", Task), SupervisedTask):
        raise ConfigError(
            f"cv cross-validates supervised models (classification, regression, forecasting); "
            f"{task} is not one"
        )
    data = str(cfg.data.get("_target_"))
    kind = getattr(import_class(data, "data", L.LightningDataModule), "cv_kind", None)
    if not kind:
        raise ConfigError(
            f"cv supports tables, sequences and time series (datamodules with data.cv_folds); {data} "
            "has no cross-validation folds"
        )
    return str(kind)


# ---------------------------------------------------------------------------------------- folds
def fold_dir(run_dir: Path, fold: int) -> Path:
    return run_dir / f"fold_{fold}"


def fold_updates(cfg: DictConfig, folds: int, fold: int, group: str) -> dict[str, Any]:
    """The data keys that select one fold ("+": a datamodule config without the keys gets them), and
    for W&B the fold as run ``fold-<i>`` of the cross-validation's group."""
    return {"+data.cv_folds": folds, "+data.cv_fold": fold, **wandb_job_updates(cfg, group, f"fold-{fold}")}


def one_line(err: BaseException) -> str:
    """A failure in one line: a user error's own message, else the exception's type and first line."""
    if isinstance(err, LitDLError):
        return " ".join(str(err).split())
    first = next((line for line in str(err).splitlines() if line.strip()), "")
    return f"{type(err).__name__}: {first.strip()}" if first else type(err).__name__


def run_fold_in_process(cfg: DictConfig, run_dir: Path, folds: int, fold: int) -> FoldResult:
    """Train and test one fold in this process; a failure is recorded, not raised."""
    log.info("fold %d of %d: %s", fold, folds, fold_dir(run_dir, fold))
    began = time.perf_counter()
    try:
        metrics = train_job(cfg, fold_dir(run_dir, fold), fold_updates(cfg, folds, fold, run_dir.name))
    except Exception as err:  # one fold's failure must not lose the others' results
        result = FoldResult(fold, error=one_line(err), exception=err)
        log.error("fold %d of %d failed: %s", fold, folds, result.error)
    else:
        result = FoldResult(fold, metrics=dict(metrics))
    result.seconds = time.perf_counter() - began
    return result


def run_folds_in_workers(cfg: DictConfig, run_dir: Path, folds: int, parallel: int) -> list[FoldResult]:
    """Each fold in a worker process, ``parallel`` at a time.

    Processes, not threads: a training run holds process-wide state (the global seeds that
    ``seed_everything`` sets, torch's thread pool, Lightning's and logging's globals) and holds the GIL
    in its Python loop; separate processes keep folds apart and really run at once. Each worker gets
    an equal share of the CPU cores for torch's threads (unless OMP_NUM_THREADS is set), so N folds
    do not each start a thread per core.
    """
    job = run_dir / WORKER_CONFIG
    atomic_write_text(job, OmegaConf.to_yaml(cfg, resolve=False))  # interpolations resolve per fold
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // min(parallel, folds))))

    def run(fold: int) -> FoldResult:
        out = fold_dir(run_dir, fold)
        out.mkdir(parents=True, exist_ok=True)
        began = time.perf_counter()
        command = [sys.executable, "-m", "lit_dl.verbs.cv", str(job), str(out), str(folds), str(fold)]
        with open(out / WORKER_LOG, "w") as worker_log:
            code = subprocess.run(command, stdout=worker_log, stderr=subprocess.STDOUT, env=env).returncode
        seconds = time.perf_counter() - began
        metrics_file = out / "metrics.json"
        if code == 0 and metrics_file.is_file():
            return FoldResult(fold, metrics=json.loads(metrics_file.read_text()), seconds=seconds)
        error = worker_error(out / WORKER_LOG) or f"the worker exited with code {code}"
        log.error("fold %d of %d failed: %s (log: %s)", fold, folds, error, out / WORKER_LOG)
        return FoldResult(fold, error=error, seconds=seconds)

    with ThreadPoolExecutor(max_workers=min(parallel, folds)) as pool:
        return list(pool.map(run, range(folds)))


def worker_error(log_path: Path) -> str | None:
    """The reason a worker gave: its ``error:`` line, else the last line of its log (a traceback's end)."""
    lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
    return errors[-1] if errors else (lines[-1] if lines else None)


def worker_main(argv: list[str]) -> None:
    """``python -m lit_dl.verbs.cv JOB.yaml OUTPUT_DIR FOLDS FOLD``: one fold of ``cv.parallel > 1``."""
    job, output_dir, folds, fold = argv
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        job_cfg = OmegaConf.load(job)
        group = Path(output_dir).parent.name  # (the cross-validation's run folder)
        train_job(job_cfg, output_dir, fold_updates(job_cfg, int(folds), int(fold), group))
    except LitDLError as err:
        print(f"error: {one_line(err)}", file=sys.stderr, flush=True)
        sys.exit(2)


# ---------------------------------------------------------------------------------------- results
def fold_table(results: list[FoldResult]) -> pd.DataFrame:
    """One row per fold: ``fold``, ``status``, ``seconds``, ``error`` and every metric (sorted)."""
    rows = [
        {
            "fold": r.fold,
            "status": "failed" if r.error else "completed",
            "seconds": round(r.seconds, 1),
            "error": r.error or "",
            **r.metrics,
        }
        for r in sorted(results, key=lambda r: r.fold)
    ]
    table = pd.DataFrame(rows)
    fixed = ["fold", "status", "seconds", "error"]
    return table[fixed + sorted(c for c in table.columns if c not in fixed)]


def _number(value: Any) -> float | None:
    return None if value is None or not math.isfinite(float(value)) else float(value)


def summarize(table: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """``{metric: {"mean", "std", "folds"}}`` over the completed folds (pandas: std with n-1)."""
    metrics = table.drop(columns=["fold", "status", "seconds", "error"])
    done = metrics[table["status"] == "completed"].astype(float)
    return {
        name: {
            "mean": _number(done[name].mean()),
            "std": _number(done[name].std()),
            "folds": [_number(v) if pd.notna(v) else None for v in metrics[name]],
        }
        for name in metrics.columns
    }


def _order(name: str) -> tuple[int, str]:
    return ({"test": 0, "val": 1}.get(name.split("/")[0], 2), name)


def print_summary(summary: Mapping[str, Mapping[str, Any]], folds: int, completed: int) -> None:
    """A rich table: each metric's mean and std over the completed folds, then its value per fold."""
    table = Table(title=f"cross-validation: {completed} of {folds} folds (mean, std over folds)")
    table.add_column("metric")
    for column in ("mean", "std", *(f"fold {i}" for i in range(folds))):
        table.add_column(column, justify="right")

    def text(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    for name in sorted(summary, key=_order):
        entry = summary[name]
        table.add_row(name, text(entry["mean"]), text(entry["std"]), *(text(v) for v in entry["folds"]))
    # Through logging (console and the run's cv.log), as wide as the table needs, not 80 columns.
    rendered = io.StringIO()
    Console(file=rendered, width=200, color_system=None).print(table)
    log.info(rendered.getvalue().rstrip())


if __name__ == "__main__":
    worker_main(sys.argv[1:])
