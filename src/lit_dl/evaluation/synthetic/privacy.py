"""Privacy of a synthetic table: how close its rows come to the training rows.

Distance to the closest training record (DCR) of synthetic rows beside that of real held-out
rows; the share of synthetic rows closer to training than to held-out rows (0.5 when the
generator does not favour the rows it saw); exact copies of training rows (must be zero).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from sklearn.neighbors import NearestNeighbors

from lit_dl.evaluation.synthetic.features import feature_encoder, prepared
from lit_dl.evaluation.synthetic.fidelity import MISSING, as_categories

MAX_PRIVACY_ROWS = 5000  # rows per side of the nearest-neighbour searches (a seeded sample)
# Synthetic rows may be this much closer (relative, median) to training rows than to held-out rows.
DCR_TOLERANCE = 0.05


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
