"""The whole synthetic-data report as plain data: fidelity, and with held-out rows efficacy and privacy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from lit_dl.errors import DataError
from lit_dl.evaluation.synthetic.efficacy import ml_efficacy
from lit_dl.evaluation.synthetic.fidelity import as_categories, column_kinds, fidelity
from lit_dl.evaluation.synthetic.privacy import privacy


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
            its TSTR efficacy, missing and zero shares, target rate and privacy are reported beside
            (``ml_efficacy_unconditioned``, ``privacy_unconditioned``, the ``unconditioned`` entries).
    """
    missing = [c for c in train.columns if c not in ignore and c not in synthetic.columns]
    if missing:
        raise DataError(f"the synthetic table lacks column(s) of the real one: {', '.join(missing)}")
    columns = [c for c in train.columns if c not in ignore]
    kinds = column_kinds(train[columns], [*categorical, *([target] if target else [])])
    samples = {"synthetic": synthetic}
    if unconditioned is not None:
        samples["unconditioned"] = unconditioned
    if target and positive_label is None:
        counts = as_categories(train[target]).value_counts()
        positive_label = str(counts.index[-1]) if len(counts) == 2 else None
    report: dict[str, Any] = {
        "rows": {
            "train": len(train),
            "synthetic": len(synthetic),
            "holdout": None if holdout is None else len(holdout),
        },
        "missing_rate": {
            c: {"real": float(train[c].isna().mean())}
            | {name: float(sample[c].isna().mean()) for name, sample in samples.items()}
            for c in columns
        },
        # Zero-inflated numbers (a capital gain): the share of exact zeros, real and generated.
        "zero_share": {
            c: {name: zero_share(frame[c]) for name, frame in {"real": train, **samples}.items()}
            for c, kind in kinds.items()
            if kind == "numeric" and zero_share(train[c]) > 0
        },
        # Against the training rows (a training run's test/fidelity is against its held-out test rows).
        "fidelity": {**fidelity(train, synthetic, kinds), "compared_with": "training rows"},
        "kinds": kinds,
        "sampling": sampling or "unconditioned",
    }
    if target and positive_label is not None:
        report["target_rate"] = {
            "label": str(positive_label),
            **{
                name: float((as_categories(frame[target]) == str(positive_label)).mean())
                for name, frame in {"real": train, **samples}.items()
            },
        }
    if holdout is not None and target:
        if positive_label is None:
            classes = as_categories(train[target]).nunique()
            raise DataError(f"target {target!r} has {classes} classes; set the positive label")
        report["ml_efficacy"] = ml_efficacy(
            train, synthetic, holdout, target, str(positive_label), kinds, classifiers
        )
        if unconditioned is not None:
            report["ml_efficacy_unconditioned"] = ml_efficacy(
                train, unconditioned, holdout, target, str(positive_label), kinds, classifiers, real_too=False
            )
    if holdout is not None:
        report["privacy"] = privacy(train, synthetic, holdout, kinds, seed)
        if unconditioned is not None:
            report["privacy_unconditioned"] = privacy(train, unconditioned, holdout, kinds, seed)
    return report


def zero_share(values: pd.Series) -> float:
    """Share of a column's cells that are exactly 0 (missing cells count as not zero)."""
    numbers = pd.to_numeric(values, errors="coerce")
    return float((numbers == 0).mean()) if len(numbers) else 0.0
