"""A tabular VAE's anomaly score beside IsolationForest and one-class baselines: same split, same rows.

Every method learns from the same normal training rows and scores the same labelled test rows;
the figure is the test ROC-AUC of telling anomalies from normal rows (higher score = more unusual).

Tables:

- ``churn``: lit_dl's embedded churn generator (:func:`lit_dl.data.churn.make_churn_frame`). Training
  file: 10,000 customers (data seed 0; the VAE keeps 10% of them for validation). Test file: 2,000
  other customers (data seed 1) and 200 anomalies made from 200 more (data seed 2), 50 of each kind,
  drawn with ``numpy.random.default_rng(seed)``:

  * ``extreme``: one number far out of its range: ``monthly_charges`` x 3-5, ``support_calls``
    + 10-20, ``days_inactive`` + 150-300 or ``usage_change_pct`` +-(120-200);
  * ``charges``: ``total_charges`` 3-6 times, or a sixth to a third of, ``monthly_charges`` x
    ``tenure_months`` (customers of 6 months or more);
  * ``swapped``: ``internet_service`` swapped (a customer with internet gets ``No``, one without gets
    ``Fiber optic``), the other answers and the charges left as they were (``streaming`` and
    ``tech_support`` then contradict it);
  * ``combination``: ``dependents=Yes`` with ``partner=No`` (the generator never writes both).

- ``breast_cancer``: scikit-learn's bundled Wisconsin diagnostic set (569 tumours, 30 numbers). The
  benign tumours are the normal rows: 70% train, 30% test; malignant tumours are added to the test
  rows as the anomalies, drawn so that they are 10% of them (a standard anomaly benchmark).

Methods:

- ``VAE``: ``lit-dl train experiment=churn_tvae data=table_synthetic data.path=train.csv
  data.test_path=test.csv data.target=label data.exclude_classes=[anomaly]`` (through
  :func:`lit_dl.verbs.train.train_job`, without the fidelity callback and the report); the score is
  ``lit-dl predict``'s ``anomaly_score`` (the row's negative ELBO, decoder read at the posterior
  mean), the same ranking as the run's ``test/anomaly_auroc``. Two other readings of the same model
  are printed for comparison: the negative ELBO averaged over 16 posterior draws, and the
  reconstruction error alone (no KL term).
- ``IsolationForest`` (200 trees), ``Mahalanobis`` (Ledoit-Wolf covariance of the training rows) and
  ``OneClassSVM`` (RBF, ``gamma="scale"``, ``nu=0.1``, fitted on at most 2,000 training rows), all on
  the same prepared features: numbers imputed with the training median and standardised, categories
  one-hot with missing as a category (fitted on the training rows).

    python benchmarks/tabular_anomaly.py                       # both tables, seeds 0 1 2
    python benchmarks/tabular_anomaly.py --tables churn --seeds 0 --epochs 30

``--seeds``: each seeds the VAE and the baselines (and, for breast_cancer, the split and the draw
of the malignant rows); ``--epochs``: the VAE's ``trainer.max_epochs``; ``--runs DIR``: run folders.
Any other argument is a Hydra override of the VAE's ``lit-dl train`` (``model.net.latent_dim=16``).
"""

from __future__ import annotations

import argparse
import json
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
from sklearn.compose import ColumnTransformer
from sklearn.covariance import LedoitWolf
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import IsolationForest
from sklearn.impute import SimpleImputer
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import OneClassSVM

from lit_dl.cli import CONFIG_DIR
from lit_dl.data.churn import make_churn_frame
from lit_dl.verbs.common import restore_from_checkpoint
from lit_dl.verbs.train import train_job

LABEL, NORMAL, ANOMALY = "label", "normal", "anomaly"
KINDS = ("extreme", "charges", "swapped", "combination")
# The VAE run: no fidelity callback or synthetic-data report (they judge samples, not scores).
VAE_OVERRIDES = [
    "experiment=churn_tvae",
    "data=table_synthetic",
    f"data.target={LABEL}",
    f"data.exclude_classes=[{ANOMALY}]",
    "data.val_fraction=0.1",
    "callbacks.table_fidelity=null",
    "callbacks.synthetic_report=null",
    "callbacks.progress_bar=null",
    "callbacks.model_summary=null",
]
# Per table: extra overrides (the churn ids are not modelled; a small table takes smaller batches).
TABLE_OVERRIDES = {
    "churn": ["data.drop=[customer_id]"],
    "breast_cancer": ["data.batch_size=64"],
}


# ----------------------------------------------------------------- tables
def inject_anomalies(rows: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """``rows`` (churn customers) made anomalous, an equal share of each of :data:`KINDS`; column ``kind``."""
    rows = rows.reset_index(drop=True).copy()
    kinds = np.resize(np.array(KINDS), len(rows))
    for i, kind in enumerate(kinds):
        if kind == "extreme":
            column = rng.choice(["monthly_charges", "support_calls", "days_inactive", "usage_change_pct"])
            value = rows.at[i, column]
            rows.at[i, column] = {
                "monthly_charges": round(value * rng.uniform(3, 5), 2),
                "support_calls": value + rng.integers(10, 21),
                "days_inactive": value + rng.integers(150, 301),
                "usage_change_pct": round(rng.choice([-1, 1]) * rng.uniform(120, 200), 1),
            }[column]
        elif kind == "charges":
            tenure = max(int(rows.at[i, "tenure_months"]), 6)
            rows.at[i, "tenure_months"] = tenure
            factor = rng.uniform(3, 6) if rng.random() < 0.5 else 1 / rng.uniform(3, 6)
            rows.at[i, "total_charges"] = f"{rows.at[i, 'monthly_charges'] * tenure * factor:.2f}"
        elif kind == "swapped":
            rows.at[i, "internet_service"] = "Fiber optic" if rows.at[i, "internet_service"] == "No" else "No"
        else:
            rows.at[i, "partner"], rows.at[i, "dependents"] = "No", "Yes"
    return rows.assign(kind=kinds)


def churn_files(folder: Path, seed: int) -> tuple[Path, Path]:
    """Training file (normal customers) and labelled test file; the test file's ``kind`` says how each
    anomaly was made (``normal`` for the others)."""
    train = make_churn_frame(10_000, seed=0).assign(**{LABEL: NORMAL})
    normal = make_churn_frame(2_000, seed=1).assign(**{LABEL: NORMAL, "kind": NORMAL})
    source = make_churn_frame(200, seed=2)
    source["customer_id"] = [f"X{i:06d}" for i in range(len(source))]
    anomalies = inject_anomalies(source, np.random.default_rng(seed)).assign(**{LABEL: ANOMALY})
    test = pd.concat([normal, anomalies], ignore_index=True)
    test = test.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    return write(train, folder / "churn_train.csv"), write(test, folder / "churn_test.csv")


def breast_cancer_files(folder: Path, seed: int) -> tuple[Path, Path]:
    """Benign tumours split 70/30 into training and test rows; malignant ones added as 10% of the test."""
    data = load_breast_cancer(as_frame=True)
    frame = data.frame.drop(columns=["target"])
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    benign = frame[data.target == 1].assign(**{LABEL: NORMAL})
    malignant = frame[data.target == 0].assign(**{LABEL: ANOMALY})
    train, test_normal = train_test_split(benign, test_size=0.3, random_state=seed)
    n_anomalies = round(len(test_normal) / 9)  # 10% of the test rows
    test = pd.concat([test_normal, malignant.sample(n_anomalies, random_state=seed)], ignore_index=True)
    test = test.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    return write(train, folder / "breast_cancer_train.csv"), write(test, folder / "breast_cancer_test.csv")


def write(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


# ----------------------------------------------------------------- the VAE
def train_vae(train: Path, test: Path, overrides: list[str], run_dir: Path) -> tuple[Any, Any, dict]:
    """Train the TVAE on the normal rows of ``train``; the restored best model, its datamodule, metrics."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            "train", overrides=[*VAE_OVERRIDES, f"data.path={train}", f"data.test_path={test}", *overrides]
        )
    metrics = train_job(cfg, run_dir)
    model, datamodule = restore_from_checkpoint(run_dir / "checkpoints" / "best.ckpt")
    datamodule.setup()  # the splits again (the checkpoint holds the fitted transform only)
    return model, datamodule, metrics


@torch.no_grad()
def vae_scores(model: Any, rows: torch.Tensor, seed: int) -> dict[str, np.ndarray]:
    """The anomaly score ``lit-dl predict`` writes, and two other readings of the same model."""
    score, errors = model.anomaly_terms(rows)
    posterior = model.encode(rows)
    kl = 0.5 * (posterior.loc**2 + posterior.scale**2 - 1 - 2 * torch.log(posterior.scale)).sum(dim=1)
    generator = torch.Generator().manual_seed(seed)
    draws = []
    for _ in range(16):
        z = posterior.loc + posterior.scale * torch.randn(posterior.loc.shape, generator=generator)
        draws.append(model.column_errors(rows, model.net.decode(z)).sum(dim=1) + kl)
    return {
        "VAE (negative ELBO, posterior mean)": score.numpy(),
        "VAE (negative ELBO, mean of 16 draws)": torch.stack(draws).mean(0).numpy(),
        "VAE (reconstruction error only)": errors.sum(dim=1).numpy(),
    }


# ----------------------------------------------------------------- baselines
def prepared_features(train: pd.DataFrame, numeric: list[str], categorical: list[str]) -> ColumnTransformer:
    """Median-imputed, standardised numbers and one-hot categories (missing as one), fitted on ``train``."""
    parts = [("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric)]
    if categorical:
        encoder = make_pipeline(
            SimpleImputer(strategy="constant", fill_value="missing"),
            OneHotEncoder(handle_unknown="ignore", sparse_output=False),
        )
        parts.append(("categorical", encoder, categorical))
    return ColumnTransformer(parts).fit(train)


def baseline_scores(train: np.ndarray, test: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Anomaly scores (higher: more unusual) of the test rows by each baseline fitted on ``train``."""
    forest = IsolationForest(n_estimators=200, random_state=seed).fit(train)
    covariance = LedoitWolf().fit(train)
    rng = np.random.default_rng(seed)
    subsample = train[rng.choice(len(train), min(len(train), 2000), replace=False)]
    svm = OneClassSVM(kernel="rbf", gamma="scale", nu=0.1).fit(subsample)
    return {
        "IsolationForest": -forest.score_samples(test),
        "Mahalanobis (Ledoit-Wolf)": covariance.mahalanobis(test),
        "OneClassSVM": -svm.score_samples(test),
    }


# ----------------------------------------------------------------- one table, one seed
Scores = dict[str, float]  # method -> ROC-AUC


def run(table: str, seed: int, epochs: int, runs: Path, extra: list[str]) -> tuple[Scores, dict[str, Scores]]:
    """ROC-AUC per method (and per anomaly kind, churn) on one table with one seed."""
    folder = runs / f"{table}_seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    make: Callable[[Path, int], tuple[Path, Path]] = churn_files if table == "churn" else breast_cancer_files
    train_file, test_file = make(folder, seed)
    overrides = [*TABLE_OVERRIDES[table], f"seed={seed}", f"trainer.max_epochs={epochs}", *extra]
    start = time.perf_counter()
    model, datamodule, metrics = train_vae(train_file, test_file, overrides, folder / "vae")
    seconds = time.perf_counter() - start
    # The same rows for every method: the test file as lit-dl predict reads it.
    test = datamodule.read_inputs(str(test_file))
    dataset, _ = datamodule.inputs_from_frame(test)
    labels = (test[LABEL] == ANOMALY).to_numpy()
    scores = vae_scores(model, dataset.tensors[0], seed)

    train = datamodule.frames["train"]  # the normal training rows the VAE learnt from, cleaned
    kinds = {c["name"]: c["kind"] for c in datamodule.transform.modelled}
    numeric = [name for name, kind in kinds.items() if kind == "numeric"]
    categorical = [name for name, kind in kinds.items() if kind == "categorical"]
    features = prepared_features(train, numeric, categorical)
    scores.update(baseline_scores(features.transform(train), features.transform(test), seed))

    aurocs = {name: float(roc_auc_score(labels, score)) for name, score in scores.items()}
    by_kind: dict[str, Scores] = {}
    if "kind" in test.columns:
        for kind in KINDS:
            rows = (test["kind"] == kind).to_numpy() | ~labels
            by_kind[kind] = {name: float(roc_auc_score(labels[rows], s[rows])) for name, s in scores.items()}
    print(
        f"{table} seed {seed}: {int(labels.sum())} anomalies in {len(labels)} test rows; VAE trained in "
        f"{seconds:.0f} s, its test/anomaly_auroc {metrics.get('test/anomaly_auroc', float('nan')):.4f}",
        flush=True,
    )
    for name, value in aurocs.items():
        print(f"  {name:40s} {value:.4f}", flush=True)
    (folder / "aurocs.json").write_text(json.dumps({"all": aurocs, "by_kind": by_kind}, indent=2))
    return aurocs, by_kind


def spread(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4f} ± {std:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    tables = ["churn", "breast_cancer"]
    parser.add_argument("--tables", nargs="+", choices=tables, default=tables)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=100, help="the VAE's trainer.max_epochs")
    parser.add_argument("--runs", type=Path, default=None, help="run folders (default: a temporary one)")
    args, extra = parser.parse_known_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    runs = args.runs or Path(tempfile.mkdtemp(prefix="lit_dl_tabular_anomaly_"))

    for table in args.tables:
        results: dict[str, list[float]] = {}
        kinds: dict[str, dict[str, list[float]]] = {}
        for seed in args.seeds:
            aurocs, by_kind = run(table, seed, args.epochs, runs, extra)
            for name, value in aurocs.items():
                results.setdefault(name, []).append(value)
            for kind, values in by_kind.items():
                for name, value in values.items():
                    kinds.setdefault(kind, {}).setdefault(name, []).append(value)
        print(f"\n{table}: test ROC-AUC, mean ± std over seeds {args.seeds}, {' '.join(extra)} ({runs})")
        columns = {"all anomalies": {name: spread(v) for name, v in results.items()}}
        columns.update({kind: {name: spread(v) for name, v in by.items()} for kind, by in kinds.items()})
        print(pd.DataFrame(columns).to_string(), "\n", flush=True)


if __name__ == "__main__":
    main()
