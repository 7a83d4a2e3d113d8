"""Synthetic-data report: fidelity, machine-learning efficacy and privacy of a synthetic table.

* Fidelity: per column, ``1 - KS statistic`` (numbers) or ``1 - total variation distance``
  (categories, missing counted as a category); per pair of columns, correlation similarity
  ``1 - |r_real - r_synthetic| / 2`` (two numbers) or contingency similarity ``1 - TVD`` of the
  joint frequency table (numbers cut at the real data's quantiles).
* Machine-learning efficacy: the same classifiers trained on synthetic rows (TSTR) and on real
  training rows (TRTR), both tested on real held-out rows; F1 of the positive class and AUROC.
  The classifiers are those of Xu et al. (2019) on UCI Adult, so the figures compare with theirs.
* Privacy: distance to the closest training record (DCR) of synthetic rows beside that of real
  held-out rows; the share of synthetic rows closer to training than to held-out rows (0.5 when
  the generator does not favour the rows it saw); exact copies of training rows (must be zero).

``build_report`` returns plain data (written as ``report.json``); ``write_report`` adds
``report.md`` and PNG plots (real beside synthetic) for each column.
"""

from __future__ import annotations

import itertools
import math
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import AdaBoostClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, roc_auc_score
from sklearn.neighbors import NearestNeighbors
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler
from sklearn.tree import DecisionTreeClassifier

from lit_dl.errors import DataError
from lit_dl.utils import atomic_write_text, write_json

MISSING = "__missing__"
CONTINGENCY_BINS = 10
MAX_PRIVACY_ROWS = 5000  # rows per side of the nearest-neighbour searches (a seeded sample)
MAX_PLOTS = 40
# Synthetic rows may be this much closer (relative, median) to training rows than to held-out rows.
DCR_TOLERANCE = 0.05


def column_kinds(frame: pd.DataFrame, categorical: Sequence[str] = ()) -> dict[str, str]:
    """``numeric`` or ``categorical`` per column (numbers are numeric unless listed in ``categorical``)."""
    return {
        str(c): "numeric"
        if pd.api.types.is_numeric_dtype(frame[c])
        and not pd.api.types.is_bool_dtype(frame[c])
        and c not in categorical
        else "categorical"
        for c in frame.columns
    }


def as_categories(series: pd.Series) -> pd.Series:
    """Values as text with missing as its own category, so that real and synthetic tables compare."""
    from lit_dl.data.preprocessing import as_text

    text = as_text(series)
    return text.where(text.notna(), MISSING).astype(str)


# ---------------------------------------------------------------------- fidelity
def numeric_shape(real: pd.Series, synthetic: pd.Series) -> float:
    """``1 - KS statistic`` of the present values (0 when one side has none)."""
    a, b = real.dropna().to_numpy(float), pd.to_numeric(synthetic, errors="coerce").dropna().to_numpy(float)
    if not len(a) or not len(b):
        return 0.0
    return float(1.0 - ks_2samp(a, b).statistic)


def total_variation(real: pd.Series, synthetic: pd.Series) -> float:
    """Total variation distance between the category frequencies of two columns."""
    p = real.value_counts(normalize=True)
    q = synthetic.value_counts(normalize=True)
    p, q = p.align(q, fill_value=0.0)
    return float(0.5 * np.abs(p - q).sum())


def categorical_shape(real: pd.Series, synthetic: pd.Series) -> float:
    """``1 - total variation distance`` of the category frequencies (missing is a category)."""
    return 1.0 - total_variation(as_categories(real), as_categories(synthetic))


def correlation_similarity(real: pd.DataFrame, synthetic: pd.DataFrame, a: str, b: str) -> float:
    """``1 - |r_real - r_synthetic| / 2`` with Pearson's r (rows where both are present)."""

    def corr(frame: pd.DataFrame) -> float:
        pair = frame[[a, b]].apply(pd.to_numeric, errors="coerce").dropna()
        if len(pair) < 2 or pair[a].std() == 0 or pair[b].std() == 0:
            return 0.0
        return float(pair[a].corr(pair[b]))

    return 1.0 - abs(corr(real) - corr(synthetic)) / 2.0


def _binned(real: pd.Series, synthetic: pd.Series, bins: int) -> tuple[pd.Series, pd.Series]:
    """Numbers cut at the real column's quantiles, as categories (missing is a category)."""
    values = real.dropna().to_numpy(float)
    edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1))) if len(values) else np.array([0.0])

    def cut(series: pd.Series) -> pd.Series:
        numbers = pd.to_numeric(series, errors="coerce").to_numpy(float)
        codes = np.searchsorted(edges[1:-1], numbers, side="right").astype(str)
        return pd.Series(np.where(np.isnan(numbers), MISSING, codes), index=series.index)

    return cut(real), cut(synthetic)


def contingency_similarity(
    real: pd.DataFrame,
    synthetic: pd.DataFrame,
    a: str,
    b: str,
    kinds: dict[str, str],
    bins: int = CONTINGENCY_BINS,
) -> float:
    """``1 - total variation distance`` between the joint frequency tables of two columns."""
    columns = {}
    for name in (a, b):
        if kinds[name] == "numeric":
            columns[name] = _binned(real[name], synthetic[name], bins)
        else:
            columns[name] = (as_categories(real[name]), as_categories(synthetic[name]))
    joint_real = columns[a][0] + "\x1f" + columns[b][0]
    joint_synthetic = columns[a][1] + "\x1f" + columns[b][1]
    return 1.0 - total_variation(joint_real, joint_synthetic)


def column_shapes(real: pd.DataFrame, synthetic: pd.DataFrame, kinds: dict[str, str]) -> dict[str, float]:
    """Shape similarity per column (1 is identical)."""
    return {
        name: numeric_shape(real[name], synthetic[name])
        if kind == "numeric"
        else categorical_shape(real[name], synthetic[name])
        for name, kind in kinds.items()
    }


def _codes(real: pd.Series, synthetic: pd.Series, kind: str, bins: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Integer codes of two columns over their shared categories (numbers binned as in the contingency)."""
    if kind == "numeric":
        a, b = _binned(real, synthetic, bins)
    else:
        a, b = as_categories(real), as_categories(synthetic)
    labels = pd.Index(pd.concat([a, b], ignore_index=True).unique())
    return labels.get_indexer(a), labels.get_indexer(b), len(labels)


def _joint_tvd(
    codes_real: tuple[np.ndarray, np.ndarray], codes_synthetic: tuple[np.ndarray, np.ndarray], k: int
):
    """Total variation distance of the joint frequencies of two coded columns (``k`` codes of the second)."""
    joint_real = np.bincount(codes_real[0] * k + codes_real[1])
    joint_synthetic = np.bincount(codes_synthetic[0] * k + codes_synthetic[1])
    size = max(len(joint_real), len(joint_synthetic))
    p = np.pad(joint_real, (0, size - len(joint_real))) / max(len(codes_real[0]), 1)
    q = np.pad(joint_synthetic, (0, size - len(joint_synthetic))) / max(len(codes_synthetic[0]), 1)
    return float(0.5 * np.abs(p - q).sum())


def fidelity(real: pd.DataFrame, synthetic: pd.DataFrame, kinds: dict[str, str]) -> dict[str, Any]:
    """Column shapes, pair trends and their means (``score`` is the mean of the two means).

    Pair trends are :func:`correlation_similarity` for two numbers and
    :func:`contingency_similarity` otherwise, computed here on integer codes made once per column
    (fast enough to score a sample every validation epoch).
    """
    shapes = column_shapes(real, synthetic, kinds)
    codes = {
        name: _codes(real[name], synthetic[name], kind, CONTINGENCY_BINS) for name, kind in kinds.items()
    }
    pairs: list[dict[str, Any]] = []
    for a, b in itertools.combinations(kinds, 2):
        if kinds[a] == kinds[b] == "numeric":
            metric, score = "correlation", correlation_similarity(real, synthetic, a, b)
        else:
            (ra, sa, _), (rb, sb, kb) = codes[a], codes[b]
            metric, score = "contingency", 1.0 - _joint_tvd((ra, rb), (sa, sb), kb)
        pairs.append({"columns": [a, b], "metric": metric, "score": score})
    shape_mean = float(np.mean(list(shapes.values()))) if shapes else float("nan")
    pair_mean = float(np.mean([p["score"] for p in pairs])) if pairs else shape_mean
    return {
        "column_shapes": shapes,
        "column_shapes_mean": shape_mean,
        "column_pairs": pairs,
        "column_pairs_mean": pair_mean,
        "score": (shape_mean + pair_mean) / 2.0,
    }


# ---------------------------------------------------------------------- features for sklearn
class BenchmarkScaler(BaseEstimator, TransformerMixin):
    """SDGym's numeric features (the benchmark behind Xu et al.'s figures): the log of a column that is
    never negative and reaches 1000 (``fnlwgt``, ``capital_gain``), else min-max scaled to ``[0, 5]``."""

    def fit(self, x: np.ndarray, y: Any = None) -> BenchmarkScaler:
        x = np.asarray(x, dtype=np.float64)
        self.min_, self.max_ = x.min(axis=0), x.max(axis=0)
        self.log_ = (self.min_ >= 0) & (self.max_ >= 1e3)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        span = np.where(self.max_ > self.min_, self.max_ - self.min_, 1.0)
        return np.where(self.log_, np.log(np.maximum(x, 1e-2)), (x - self.min_) / span * 5.0)


def feature_encoder(kinds: dict[str, str], scale: str = "benchmark") -> ColumnTransformer:
    """Numbers imputed (median) and scaled; categories one-hot (missing a category of its own).

    ``scale`` is ``benchmark`` (:class:`BenchmarkScaler`, for the classifiers), ``standard`` or ``minmax``.
    """
    numeric = [c for c, k in kinds.items() if k == "numeric"]
    categorical = [c for c, k in kinds.items() if k == "categorical"]
    scaler = {"benchmark": BenchmarkScaler, "standard": StandardScaler, "minmax": MinMaxScaler}[scale]()
    parts = []
    if numeric:
        parts.append(
            ("num", make_pipeline(SimpleImputer(strategy="median", add_indicator=True), scaler), numeric)
        )
    if categorical:
        parts.append(("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), categorical))
    return ColumnTransformer(parts)


def prepared(frame: pd.DataFrame, kinds: dict[str, str]) -> pd.DataFrame:
    """The columns of ``kinds``: numbers as floats, categories as text."""
    out = {}
    for name, kind in kinds.items():
        column = frame[name]
        out[name] = (
            pd.to_numeric(column, errors="coerce").astype(float)
            if kind == "numeric"
            else as_categories(column)
        )
    return pd.DataFrame(out, index=frame.index)


# ---------------------------------------------------------------------- machine-learning efficacy
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


# ---------------------------------------------------------------------- privacy
def _row_keys(frame: pd.DataFrame, kinds: dict[str, str]) -> pd.Series:
    """One text key per row over the compared columns (numbers rounded to 9 significant digits)."""
    parts = []
    for name, kind in kinds.items():
        if kind == "numeric":
            numbers = pd.to_numeric(frame[name], errors="coerce")
            parts.append(numbers.map(lambda v: MISSING if pd.isna(v) else f"{v:.9g}"))
        else:
            parts.append(as_categories(frame[name]))
    return pd.concat(parts, axis=1).astype(str).agg("\x1f".join, axis=1)


def exact_copies(train: pd.DataFrame, other: pd.DataFrame, kinds: dict[str, str]) -> int:
    """Rows of ``other`` equal to some training row in every compared column."""
    return int(_row_keys(other, kinds).isin(set(_row_keys(train, kinds))).sum())


def _nearest(reference: np.ndarray, queries: np.ndarray) -> np.ndarray:
    return NearestNeighbors(n_neighbors=1).fit(reference).kneighbors(queries)[0][:, 0]


def privacy(
    train: pd.DataFrame, synthetic: pd.DataFrame, holdout: pd.DataFrame, kinds: dict[str, str], seed: int = 0
) -> dict[str, Any]:
    """Distances to the closest training record, closer-to-training share, exact copies.

    Rows are compared as numbers min-max scaled on the training rows and one-hot categories
    scaled by ``1/sqrt(2)`` (a different category adds 1 to the squared distance, as a number
    at the other end of its range does). Train is cut to the held-out size for the share, so
    0.5 is what a generator that did not memorise its rows gets.
    """
    rng = np.random.default_rng(seed)

    def sample(frame: pd.DataFrame, size: int) -> pd.DataFrame:
        return (
            frame if len(frame) <= size else frame.iloc[np.sort(rng.choice(len(frame), size, replace=False))]
        )

    numeric = {c: k for c, k in kinds.items() if k == "numeric"}
    categorical = {c: k for c, k in kinds.items() if k == "categorical"}
    scalers = [
        feature_encoder(part, scale="minmax").fit(prepared(train, part))
        for part in (numeric, categorical)
        if part
    ]
    weights = [1.0 if part is numeric else 1.0 / math.sqrt(2.0) for part in (numeric, categorical) if part]

    def encode(frame: pd.DataFrame) -> np.ndarray:
        return np.hstack(
            [
                w * s.transform(prepared(frame, part)).astype(np.float64)
                for s, w, part in zip(scalers, weights, [p for p in (numeric, categorical) if p], strict=True)
            ]
        )

    synth = sample(synthetic, MAX_PRIVACY_ROWS)
    held = sample(holdout, MAX_PRIVACY_ROWS)
    train_x = encode(train)
    dcr_synthetic = _nearest(train_x, encode(synth))
    dcr_holdout = _nearest(train_x, encode(held))
    # Closer to training than to held-out rows: the training side cut to the held-out size, so a
    # generator that learned the distribution and not its rows is as close to either (share 0.5).
    train_cut = encode(sample(train, len(holdout)))
    to_train = _nearest(train_cut, encode(synth))
    to_holdout = _nearest(encode(holdout), encode(synth))
    closer = float(np.mean(np.where(np.isclose(to_train, to_holdout), 0.5, to_train < to_holdout)))
    # Two binomial standard errors above 0.5 still count as "no closer".
    margin = 2.0 * math.sqrt(0.25 / max(len(synth), 1))
    copies = exact_copies(train, synthetic, kinds)

    def stats(d: np.ndarray) -> dict[str, float]:
        return {"median": float(np.median(d)), "p05": float(np.quantile(d, 0.05)), "mean": float(np.mean(d))}

    syn_stats, hold_stats = stats(dcr_synthetic), stats(dcr_holdout)
    matched_train, matched_holdout = stats(to_train), stats(to_holdout)
    # The verdict compares like with like: the same synthetic rows against equally many training and
    # held-out rows. (Synthetic rows gather where the data is dense, so their distance to training rows
    # can be below that of real held-out rows without their being near any row in particular.)
    not_memorised = bool(
        closer <= 0.5 + margin
        and matched_train["median"] >= matched_holdout["median"] * (1.0 - DCR_TOLERANCE)
    )
    # The direct reading: synthetic rows are not nearer their closest training row than unseen real rows are.
    direct = bool(syn_stats["median"] >= hold_stats["median"] * (1.0 - DCR_TOLERANCE))
    no_closer = bool(copies == 0 and direct and not_memorised)
    return {
        "dcr_synthetic": syn_stats,
        "dcr_holdout": hold_stats,
        "dcr_synthetic_to_train_matched": matched_train,
        "dcr_synthetic_to_holdout_matched": matched_holdout,
        "closer_to_train_share": closer,
        "closer_to_train_margin": margin,
        "exact_copies": copies,
        "exact_copies_share": copies / max(len(synthetic), 1),
        "holdout_exact_copies": exact_copies(train, holdout, kinds),
        "dcr_no_closer_direct": direct,
        "no_closer_like_with_like": not_memorised,
        "no_closer_than_holdout": no_closer,
        "rows_compared": {
            "synthetic": len(synth),
            "holdout": len(held),
            "train": len(train),
            "holdout_full": len(holdout),
        },
    }


# ---------------------------------------------------------------------- the whole report
def build_report(
    train: pd.DataFrame,
    synthetic: pd.DataFrame,
    holdout: pd.DataFrame | None = None,
    target: str | None = None,
    positive_label: str | None = None,
    categorical: Sequence[str] = (),
    ignore: Sequence[str] = (),
    classifiers: dict[str, Any] | None = None,
    seed: int = 0,
    sampling: str | None = None,
    unconditioned: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """The report as plain data; efficacy needs ``target`` and ``holdout``, privacy needs ``holdout``.

    Args:
        train: the real rows the generator was trained on.
        synthetic: the generated rows.
        holdout: real rows the generator never saw.
        target: label column for machine-learning efficacy.
        positive_label: the label whose F1 is reported (default: the rarer of two in ``train``).
        categorical: numeric columns to compare as categories.
        ignore: columns left out (identifiers).
        sampling: how ``synthetic`` was drawn, in words (e.g. per class of the target), for the text.
        unconditioned: a sample drawn without conditions, when ``synthetic`` was drawn per class:
            its TSTR efficacy is reported beside (``ml_efficacy_unconditioned``).
    """
    missing = [c for c in train.columns if c not in ignore and c not in synthetic.columns]
    if missing:
        raise DataError(f"the synthetic table lacks column(s) of the real one: {', '.join(missing)}")
    columns = [c for c in train.columns if c not in ignore]
    kinds = column_kinds(train[columns], [*categorical, *([target] if target else [])])
    report: dict[str, Any] = {
        "rows": {
            "train": len(train),
            "synthetic": len(synthetic),
            "holdout": None if holdout is None else len(holdout),
        },
        "missing_rate": {
            c: {"real": float(train[c].isna().mean()), "synthetic": float(synthetic[c].isna().mean())}
            for c in columns
        },
        "fidelity": fidelity(train, synthetic, kinds),
        "kinds": kinds,
        "sampling": sampling or "unconditioned",
    }
    if holdout is not None and target:
        if positive_label is None:
            counts = as_categories(train[target]).value_counts()
            if len(counts) != 2:
                raise DataError(f"target {target!r} has {len(counts)} classes; set the positive label")
            positive_label = str(counts.index[-1])
        report["ml_efficacy"] = ml_efficacy(
            train, synthetic, holdout, target, str(positive_label), kinds, classifiers
        )
        if unconditioned is not None:
            report["ml_efficacy_unconditioned"] = ml_efficacy(
                train, unconditioned, holdout, target, str(positive_label), kinds, classifiers, real_too=False
            )
    if holdout is not None:
        report["privacy"] = privacy(train, synthetic, holdout, kinds, seed)
    return report


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The report's headline figures, one sentence each."""
    fid = report["fidelity"]
    lines = [
        f"fidelity {fid['score']:.3f} (column shapes {fid['column_shapes_mean']:.3f}, "
        f"column pairs {fid['column_pairs_mean']:.3f})"
    ]
    if "ml_efficacy" in report:
        mean = report["ml_efficacy"]["mean"]
        lines.append(
            f"ML efficacy F1 {mean['tstr']['f1']:.3f} trained on synthetic vs "
            f"{mean['trtr']['f1']:.3f} on real (AUROC {mean['tstr']['auroc']:.3f} vs "
            f"{mean['trtr']['auroc']:.3f}), tested on real held-out rows; synthetic rows drawn "
            f"{report.get('sampling', 'unconditioned')}"
        )
    if "ml_efficacy_unconditioned" in report:
        plain = report["ml_efficacy_unconditioned"]["mean"]["tstr"]
        lines.append(
            f"ML efficacy of an unconditioned sample: F1 {plain['f1']:.3f}, AUROC {plain['auroc']:.3f}"
        )
    if "privacy" in report:
        p = report["privacy"]
        verdict = "no closer" if p["no_closer_than_holdout"] else "CLOSER"
        lines.append(
            f"privacy: {p['exact_copies']} exact copies of training rows; synthetic rows are {verdict} to "
            "training rows than to real held-out rows (median distance "
            f"{p['dcr_synthetic_to_train_matched']['median']:.3f} vs "
            f"{p['dcr_synthetic_to_holdout_matched']['median']:.3f} over equally many rows; "
            f"{p['closer_to_train_share']:.1%} closer to training, 50% expected); median distance to the "
            f"closest training row: synthetic {p['dcr_synthetic']['median']:.3f}, "
            f"real held-out {p['dcr_holdout']['median']:.3f}"
        )
    return lines


def markdown(report: dict[str, Any], plots: dict[str, str]) -> str:
    """The report as Markdown, with links to the plots."""
    out = ["# Synthetic-data report", ""]
    out += [f"- {line}" for line in summary_lines(report)]
    rows = report["rows"]
    out += [
        "",
        f"Rows: {rows['train']} real training, {rows['synthetic']} synthetic, "
        f"{rows['holdout']} real held-out.",
        "",
    ]
    out += [
        "## Fidelity",
        "",
        "| column | kind | shape similarity | missing real | missing synthetic |",
        "|---|---|---|---|---|",
    ]
    for name, score in report["fidelity"]["column_shapes"].items():
        miss = report["missing_rate"][name]
        out.append(
            f"| {name} | {report['kinds'][name]} | {score:.3f} | "
            f"{miss['real']:.2%} | {miss['synthetic']:.2%} |"
        )
    worst = sorted(report["fidelity"]["column_pairs"], key=lambda p: p["score"])[:10]
    if worst:
        out += ["", "Least similar column pairs:", "", "| columns | metric | similarity |", "|---|---|---|"]
        out += [f"| {' / '.join(p['columns'])} | {p['metric']} | {p['score']:.3f} |" for p in worst]
    if "ml_efficacy" in report:
        eff = report["ml_efficacy"]
        out += [
            "",
            "## Machine-learning efficacy",
            "",
            f"Target `{eff['target']}`, positive label `{eff['positive_label']}`; "
            f"tested on real held-out rows. Synthetic rows drawn {report.get('sampling', 'unconditioned')}.",
            "",
            "| classifier | F1 synthetic (TSTR) | F1 real (TRTR) | AUROC synthetic | AUROC real |",
            "|---|---|---|---|---|",
        ]
        for name, r in [*eff["classifiers"].items(), ("**mean**", eff["mean"])]:
            out.append(
                f"| {name} | {r['tstr']['f1']:.3f} | {r['trtr']['f1']:.3f} | "
                f"{r['tstr']['auroc']:.3f} | {r['trtr']['auroc']:.3f} |"
            )
        if "ml_efficacy_unconditioned" in report:
            plain = report["ml_efficacy_unconditioned"]
            out += ["", "The same classifiers trained on an unconditioned sample of as many rows:", ""]
            out += ["| classifier | F1 | AUROC |", "|---|---|---|"]
            out += [
                f"| {name} | {r['tstr']['f1']:.3f} | {r['tstr']['auroc']:.3f} |"
                for name, r in [*plain["classifiers"].items(), ("**mean**", plain["mean"])]
            ]
    if "privacy" in report:
        p = report["privacy"]
        out += [
            "",
            "## Privacy",
            "",
            "| distance to closest training row | median | 5th percentile |",
            "|---|---|---|",
            f"| synthetic rows | {p['dcr_synthetic']['median']:.4f} | {p['dcr_synthetic']['p05']:.4f} |",
            f"| real held-out rows | {p['dcr_holdout']['median']:.4f} | {p['dcr_holdout']['p05']:.4f} |",
            "",
            f"Synthetic rows against {p['rows_compared']['holdout_full']} training rows and as many held-out "
            "rows (like with like):",
            "",
            "| distance of synthetic rows to the closest | median | 5th percentile |",
            "|---|---|---|",
            f"| training row | {p['dcr_synthetic_to_train_matched']['median']:.4f} | "
            f"{p['dcr_synthetic_to_train_matched']['p05']:.4f} |",
            f"| held-out row | {p['dcr_synthetic_to_holdout_matched']['median']:.4f} | "
            f"{p['dcr_synthetic_to_holdout_matched']['p05']:.4f} |",
            "",
            f"- Closer to training than to held-out rows: {p['closer_to_train_share']:.1%} "
            f"(50% expected; up to {0.5 + p['closer_to_train_margin']:.1%} passes).",
            f"- Exact copies of training rows: {p['exact_copies']} "
            "(real held-out rows that equal a training row: "
            f"{p['holdout_exact_copies']}).",
            "- Direct measure: median distance to the closest training row "
            f"{p['dcr_synthetic']['median']:.4f} for synthetic rows, "
            f"{p['dcr_holdout']['median']:.4f} for real held-out rows: synthetic rows "
            f"are {'no closer' if p.get('dcr_no_closer_direct', True) else 'CLOSER'} to training rows than "
            "unseen real rows are.",
            "- Like with like: each synthetic row's distance to the closest of equally many training and "
            "held-out rows. A generator that copies or nearly copies its rows lands nearer the training "
            "side; one that learned the distribution is as near either (the direct measure alone can "
            "mislead both ways: synthetic rows crowd where the data is dense, or scatter where it is not).",
            f"- Verdict: synthetic rows are {'no closer' if p['no_closer_than_holdout'] else 'CLOSER'} "
            "to training rows than real held-out rows are (all of: no exact copies, the direct measure, "
            "and the like-with-like share and median within their margins).",
        ]
    if plots:
        out += ["", "## Plots (real beside synthetic)", ""]
        out += [f"![{name}]({path})" for name, path in plots.items()]
    return "\n".join(out) + "\n"


def plot_columns(
    real: pd.DataFrame, synthetic: pd.DataFrame, kinds: dict[str, str], folder: Path, max_categories: int = 20
) -> dict[str, str]:
    """One PNG per column: histograms or category bars, real beside synthetic. Returns name -> file name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, kind in list(kinds.items())[:MAX_PLOTS]:
        figure, ax = plt.subplots(figsize=(6, 3.2))
        if kind == "numeric":
            a = pd.to_numeric(real[name], errors="coerce").dropna().to_numpy(float)
            b = pd.to_numeric(synthetic[name], errors="coerce").dropna().to_numpy(float)
            both = np.concatenate([a, b])
            if len(both):
                bins = np.histogram_bin_edges(a if len(a) else both, bins=30)
                ax.hist(
                    [a, b], bins=bins, density=True, label=["real", "synthetic"], color=["#4c72b0", "#dd8452"]
                )
        else:
            p = as_categories(real[name]).value_counts(normalize=True)
            q = as_categories(synthetic[name]).value_counts(normalize=True)
            p, q = p.align(q, fill_value=0.0)
            top = p.sort_values(ascending=False).index[:max_categories]
            x = np.arange(len(top))
            ax.bar(x - 0.2, p[top], width=0.4, label="real", color="#4c72b0")
            ax.bar(x + 0.2, q[top], width=0.4, label="synthetic", color="#dd8452")
            ax.set_xticks(x, [str(t)[:18] for t in top], rotation=60, ha="right", fontsize=7)
        ax.set_title(name)
        ax.legend(fontsize=8)
        file = f"{''.join(ch if ch.isalnum() or ch in '-_' else '_' for ch in name)}.png"
        figure.savefig(folder / file, dpi=90, bbox_inches="tight")
        plt.close(figure)
        written[name] = f"plots/{file}"
    return written


def write_report(
    report: dict[str, Any],
    folder: str | Path,
    train: pd.DataFrame | None = None,
    synthetic: pd.DataFrame | None = None,
) -> Path:
    """Write ``report.json``, ``report.md`` and (given the tables) ``plots/*.png``; return the .md path."""
    folder = Path(folder)
    plots = {}
    if train is not None and synthetic is not None:
        plots = plot_columns(train, synthetic, report["kinds"], folder / "plots")
    write_json(folder / "report.json", report)
    atomic_write_text(folder / "report.md", markdown(report, plots))
    return folder / "report.md"


def shape_score(real: pd.DataFrame, synthetic: pd.DataFrame, columns: Sequence[str] | None = None) -> float:
    """Mean column-shape similarity of two tables (a cheap fidelity score for model selection)."""
    kinds = column_kinds(real[list(columns or real.columns)])
    return float(np.mean(list(column_shapes(real, synthetic, kinds).values())))
