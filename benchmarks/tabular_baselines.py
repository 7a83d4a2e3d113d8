"""lit_dl's tabular MLP beside logistic regression and gradient boosting, same splits, same preprocessing.

For each split seed, in one process: the config ``lit-dl train`` would compose with the given
overrides is built with ``data.split_seed=S seed=S``; its datamodule prepares the table (one-hot
encoding); scikit-learn's ``LogisticRegression`` and ``HistGradientBoostingClassifier`` (both with
their defaults) are fitted on exactly that training split; then lit_dl trains through its own train
path (:func:`lit_dl.verbs.train.train_job`, what ``lit-dl train`` runs) once per variant:

- ``mlp``: the shipped defaults (``model=mlp_classifier``);
- ``mlp_plr``: ``model=mlp_plr_classifier data.categorical_encoding=embedding`` (periodic
  embeddings of the numbers, embeddings of the categories).

Every model is scored on the same test rows: accuracy (at probability 0.5) and ROC-AUC (one-vs-rest
macro average for more than two classes), printed as mean ± standard deviation over the seeds with
the mean wall time of a fit (for lit_dl: the whole train run, data preparation and test included).

    python benchmarks/tabular_baselines.py --table adult            # ../shared/data/adult (UCI Adult)
    python benchmarks/tabular_baselines.py --table churn            # lit_dl's embedded churn table
    python benchmarks/tabular_baselines.py --table fair             # statsmodels' bundled "fair" survey
    python benchmarks/tabular_baselines.py --table randhie          # statsmodels' bundled RAND HIE table
    python benchmarks/tabular_baselines.py data=tabular data.path=FILE data.target=COL data.drop=[ID]

Options: ``--seeds 0 1 2`` (split seeds; each also seeds training), ``--variants mlp mlp_plr``,
``--runs DIR`` (run folders; default a temporary folder), ``--threads N`` (CPU threads of torch and
scikit-learn alike; on cores that other processes share, 1 is fastest). Any other argument is a Hydra override
of ``lit-dl train`` (``trainer.max_epochs=5``, ``model.net.dropout=0.2``, ...), applied to every
lit_dl variant (after the variant's own overrides) and to the data the baselines see.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from threadpoolctl import threadpool_limits

from lit_dl.cli import CONFIG_DIR
from lit_dl.verbs.train import train_job

ADULT_COLUMNS = (
    "[age,workclass,fnlwgt,education,education_num,marital_status,occupation,relationship,race,sex,"
    "capital_gain,capital_loss,hours_per_week,native_country,income]"
)
VARIANTS: dict[str, list[str]] = {
    "mlp": [],
    "mlp_plr": ["model=mlp_plr_classifier", "data.categorical_encoding=embedding"],
}
# Quiet runs: no progress bar or model table per run (they change nothing that is measured).
QUIET = ["callbacks.progress_bar=null", "callbacks.model_summary=null"]


def statsmodels_table(name: str, folder: Path) -> Path:
    """Write one of statsmodels' bundled data sets as a CSV with a binary target column ``target``."""
    from statsmodels import datasets

    if name == "fair":  # 6,366 women surveyed in 1974 (Fair 1978): any extramarital affair?
        frame = datasets.fair.load_pandas().data
        frame = frame.assign(target=(frame.pop("affairs") > 0).astype(int))
    else:  # randhie: 20,190 person-years of the RAND Health Insurance Experiment: any doctor visit?
        frame = datasets.randhie.load_pandas().data
        frame = frame.assign(target=(frame.pop("mdvis") > 0).astype(int))
    path = folder / f"{name}.csv"
    frame.to_csv(path, index=False)
    return path


def table_overrides(table: str | None, adult_dir: Path, folder: Path) -> list[str]:
    """The ``lit-dl train`` overrides that read a named table (none: the caller gives them)."""
    if table is None:
        return []
    if table == "adult":
        return [
            "data=tabular",
            f"data.path={adult_dir / 'adult-train.csv'}",
            f"data.test_path={adult_dir / 'adult-test.csv'}",
            "data.target=income",
            "data.positive_label='>50K'",
            f"data.column_names={ADULT_COLUMNS}",
        ]
    if table == "churn":
        return ["data=churn"]
    path = statsmodels_table(table, folder)
    return ["data=tabular", f"data.path={path}", "data.target=target"]


def compose_train(overrides: list[str]) -> DictConfig:
    """The config ``lit-dl train`` composes with these overrides."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=overrides)


def scores(y_true: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """Accuracy (the most probable class) and ROC-AUC of ``(N, K)`` class probabilities."""
    auroc = (
        roc_auc_score(y_true, probabilities[:, 1])
        if probabilities.shape[1] == 2
        else roc_auc_score(y_true, probabilities, multi_class="ovr", average="macro")
    )
    return {"accuracy": float(accuracy_score(y_true, probabilities.argmax(1))), "auroc": float(auroc)}


def sklearn_models(seed: int) -> dict[str, Callable[[], Any]]:
    """The scikit-learn baselines by name, each a factory of an unfitted model (defaults)."""
    return {
        "logistic regression": lambda: LogisticRegression(max_iter=5000),
        "HistGradientBoosting": lambda: HistGradientBoostingClassifier(random_state=seed),
    }


def baselines(overrides: list[str], seed: int) -> dict[str, dict[str, float]]:
    """Each scikit-learn model fitted on the datamodule's prepared (one-hot) training split."""
    cfg = compose_train([*overrides, "data.categorical_encoding=onehot"])
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    train, test = datamodule.datasets["train"].tensors, datamodule.datasets["test"].tensors
    results = {}
    for name, make in sklearn_models(seed).items():
        start = time.perf_counter()
        model = make().fit(train[0].numpy(), train[2].numpy())
        probabilities = model.predict_proba(test[0].numpy())
        results[name] = {**scores(test[2].numpy(), probabilities), "seconds": time.perf_counter() - start}
    return results


def lit_dl_run(overrides: list[str], output_dir: Path) -> dict[str, float]:
    """One ``lit-dl train`` run; its test accuracy and ROC-AUC (best checkpoint) and wall time."""
    cfg = compose_train([*overrides, *QUIET])
    start = time.perf_counter()
    metrics = train_job(cfg, output_dir)
    return {
        "accuracy": metrics["test/accuracy"],
        "auroc": metrics["test/auroc"],
        "seconds": time.perf_counter() - start,
    }


def summary(results: dict[str, list[dict[str, float]]]) -> pd.DataFrame:
    """One row per model: mean ± std of accuracy and ROC-AUC, and the mean seconds per fit."""

    def spread(values: list[float]) -> str:
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.fmean(values):.4f} ± {std:.4f}"

    rows = []
    for model, runs in results.items():
        rows.append(
            {
                "model": model,
                "accuracy": spread([r["accuracy"] for r in runs]),
                "ROC-AUC": spread([r["auroc"] for r in runs]),
                "seconds": f"{statistics.fmean(r['seconds'] for r in runs):.1f}",
                "per seed ROC-AUC": " ".join(f"{r['auroc']:.4f}" for r in runs),
            }
        )
    return pd.DataFrame(rows).set_index("model")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", choices=["adult", "churn", "fair", "randhie"], default=None)
    parser.add_argument("--adult-dir", type=Path, default=Path("../shared/data/adult"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--no-baselines", action="store_true", help="lit_dl variants only")
    parser.add_argument("--runs", type=Path, default=None, help="run folders (default: a temporary one)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    args, overrides = parser.parse_known_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)  # scikit-learn's OpenMP and BLAS threads
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    runs = args.runs or Path(tempfile.mkdtemp(prefix="lit_dl_tabular_baselines_"))
    runs.mkdir(parents=True, exist_ok=True)
    data = table_overrides(args.table, args.adult_dir.resolve(), runs)

    results: dict[str, list[dict[str, float]]] = {}
    for seed in args.seeds:
        seeded = [*data, f"data.split_seed={seed}", f"seed={seed}"]
        if not args.no_baselines:
            for name, result in baselines([*seeded, *overrides], seed).items():
                results.setdefault(name, []).append(result)
                print(
                    f"seed {seed} {name}: accuracy {result['accuracy']:.4f} ROC-AUC {result['auroc']:.4f} "
                    f"{result['seconds']:.1f} s",
                    flush=True,
                )
        for variant in args.variants:
            run = lit_dl_run([*seeded, *VARIANTS[variant], *overrides], runs / f"{variant}_seed{seed}")
            results.setdefault(f"lit_dl {variant}", []).append(run)
            print(
                f"seed {seed} lit_dl {variant}: accuracy {run['accuracy']:.4f} ROC-AUC {run['auroc']:.4f} "
                f"{run['seconds']:.1f} s",
                flush=True,
            )
    print(f"\n{args.table or ' '.join(overrides)}: test set, split seeds {args.seeds}, {runs}")
    print(summary(results).to_string())


if __name__ == "__main__":
    main()
