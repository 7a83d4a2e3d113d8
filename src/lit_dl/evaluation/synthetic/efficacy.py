"""Machine-learning efficacy of a synthetic table.

The same classifiers trained on synthetic rows (TSTR) and on real training rows (TRTR), both
tested on real held-out rows; F1 of the positive class and AUROC. The classifiers are those of
Xu et al. (2019) on UCI Adult, so the figures compare with theirs.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.ensemble import AdaBoostClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, roc_auc_score
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.tree import DecisionTreeClassifier

from lit_dl.evaluation.synthetic.features import feature_encoder, prepared
from lit_dl.evaluation.synthetic.fidelity import as_categories


def default_classifiers(seed: int = 0) -> dict[str, Any]:
    """Xu et al.'s (2019) evaluators of binary targets, as SDGym's ``evaluate.py`` (which produced their
    figures) sets them: AdaBoost (50 stumps), a decision tree of depth 15 and a logistic regression
    (50 iterations), both with balanced class weights, and an MLP (50 units, 50 iterations)."""
    return {
        "adaboost": AdaBoostClassifier(n_estimators=50, random_state=seed),
        "decision_tree": DecisionTreeClassifier(max_depth=15, class_weight="balanced", random_state=seed),
        "logistic_regression": LogisticRegression(class_weight="balanced", max_iter=50),
        "mlp": MLPClassifier(hidden_layer_sizes=(50,), max_iter=50, random_state=seed),
    }


def _fit_score(
    model: Any, train: pd.DataFrame, test: pd.DataFrame, target: str, positive: str, kinds: dict[str, str]
) -> dict[str, float]:
    y_train = (as_categories(train[target]) == positive).to_numpy(int)
    y_test = (as_categories(test[target]) == positive).to_numpy(int)
    start = time.perf_counter()
    if len(np.unique(y_train)) < 2:  # a generator that never writes one class: nothing to learn
        predicted, scores = np.full(len(test), y_train[0] if len(y_train) else 0), np.zeros(len(test))
    else:
        pipeline = make_pipeline(feature_encoder(kinds), clone(model))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # 50 iterations (MLP, LR), as in the paper
            pipeline.fit(prepared(train, kinds), y_train)
        features = prepared(test, kinds)
        predicted = pipeline.predict(features)
        scores = pipeline.predict_proba(features)[:, 1]
    auroc = float(roc_auc_score(y_test, scores)) if len(np.unique(y_test)) == 2 else float("nan")
    return {
        "f1": float(f1_score(y_test, predicted, zero_division=0)),
        "auroc": auroc,
        "seconds": time.perf_counter() - start,
    }


def ml_efficacy(
    train: pd.DataFrame,
    synthetic: pd.DataFrame,
    holdout: pd.DataFrame,
    target: str,
    positive: str,
    kinds: dict[str, str],
    classifiers: dict[str, Any] | None = None,
    real_too: bool = True,
) -> dict[str, Any]:
    """TSTR and (with ``real_too``) TRTR per classifier and on average (F1 of ``positive``, AUROC)."""
    features = {k: v for k, v in kinds.items() if k != target}
    classifiers = classifiers or default_classifiers()
    settings = {"tstr": synthetic, **({"trtr": train} if real_too else {})}
    rows: dict[str, Any] = {
        name: {
            setting: _fit_score(model, table, holdout, target, positive, features)
            for setting, table in settings.items()
        }
        for name, model in classifiers.items()
    }
    mean = {
        setting: {m: float(np.nanmean([r[setting][m] for r in rows.values()])) for m in ("f1", "auroc")}
        for setting in settings
    }
    return {"target": target, "positive_label": positive, "classifiers": rows, "mean": mean}
