"""Does the MLP beat logistic regression on the same split? One run, both numbers.

Composes the same config ``lit-dl train`` would use (same overrides), fits
scikit-learn's LogisticRegression on exactly the datamodule's prepared training
split, then runs ``lit-dl train`` and prints both test ROC-AUCs side by side.

    python benchmarks/tabular_vs_logreg.py                       # embedded churn data
    python benchmarks/tabular_vs_logreg.py data=tabular data.path=FILE data.target=COL data.drop=[ID]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score

from lit_dl.cli import CONFIG_DIR, main


def logistic_regression(overrides: list[str]) -> dict[str, float]:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, "data.categorical_encoding=onehot"])
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    train, test = datamodule.datasets["train"], datamodule.datasets["test"]
    x_train, y_train = train.tensors[0].numpy(), train.tensors[2].numpy()
    x_test, y_test = test.tensors[0].numpy(), test.tensors[2].numpy()
    start = time.perf_counter()
    model = LogisticRegression(max_iter=5000).fit(x_train, y_train)
    probs = model.predict_proba(x_test)
    seconds = time.perf_counter() - start
    auroc = (
        roc_auc_score(y_test, probs[:, 1])
        if probs.shape[1] == 2
        else roc_auc_score(y_test, probs, multi_class="ovr", average="macro")
    )
    return {
        "auroc": float(auroc),
        "accuracy": float(accuracy_score(y_test, np.argmax(probs, 1))),
        "seconds": seconds,
    }


def lit_dl_mlp(overrides: list[str]) -> dict[str, float]:
    run_dir = Path(tempfile.mkdtemp(prefix="lit_dl_bench_"))
    start = time.perf_counter()
    main(
        [
            "train",
            *overrides,
            f"hydra.run.dir={run_dir}",
            "callbacks.progress_bar=null",
            "callbacks.model_summary=null",
        ]
    )
    seconds = time.perf_counter() - start
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {"auroc": metrics["test/auroc"], "accuracy": metrics["test/accuracy"], "seconds": seconds}


if __name__ == "__main__":
    overrides = sys.argv[1:]
    baseline = logistic_regression(overrides)
    mlp = lit_dl_mlp(overrides)
    print("\nsame split, same preprocessing, test set:")
    print(f"{'model':<22}{'ROC-AUC':>9}{'accuracy':>10}{'seconds':>9}")
    for name, result in (("logistic regression", baseline), ("lit_dl MLP", mlp)):
        print(f"{name:<22}{result['auroc']:>9.4f}{result['accuracy']:>10.4f}{result['seconds']:>9.1f}")
    verdict = "at or above" if mlp["auroc"] >= baseline["auroc"] else "BELOW"
    print(f"MLP ROC-AUC is {verdict} logistic regression ({mlp['auroc'] - baseline['auroc']:+.4f})")
