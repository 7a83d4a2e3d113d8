"""Customer segments in a tabular VAE's latent space beside k-means on the prepared raw features.

1. Trains a TVAE of the embedded churn table (``experiment=churn_tvae``, through
   :func:`lit_dl.verbs.train.train_job`) on the training split of ``data=churn_synthetic``, with
   ``churn`` in ``data.drop``: the split is stratified by churn as usual, but the codes never see
   the label (segments are found without it; their churn rate is measured afterwards).
2. Segments the training customers in two spaces, with the same k and the same method:
   - ``latent``: the posterior means of the VAE's active dimensions (what ``lit-dl embed`` clusters);
   - ``raw``: the prepared features of ``data=churn`` (numbers median-imputed and standardised,
     categories one-hot), fitted on the same training rows.
3. Assigns the held-out test customers to the nearest segment of each space and reports, on them:
   - ``spread``: the highest minus the lowest segment churn rate, and the standard deviation of the
     segment churn rates weighted by segment size (how differently the segments churn);
   - ``ROC-AUC``: each test customer scored by the training churn rate of its segment;
   - ``MI``: the mutual information between segment and churn, in bits (of the churn entropy);
   beside a logistic regression on the raw features (what a supervised model reaches).

k: the one ``segments=auto`` picks in the latent space (silhouette, k = 2..10), and the ``--ks``
given. ``--method gmm`` clusters with a Gaussian mixture instead of k-means.

    python benchmarks/churn_segments.py [--epochs 20] [--seed 42] [--ks 4 8] [--method kmeans|gmm]

``--runs DIR`` keeps the TVAE's run there; a later call with the same folder reuses it.
"""

from __future__ import annotations

import argparse
import logging
import math
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from hydra import compose, initialize_config_dir
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import mutual_info_score, roc_auc_score

from lit_dl.cli import CONFIG_DIR
from lit_dl.data.churn_datamodule import ChurnDataModule
from lit_dl.verbs.common import restore_from_checkpoint
from lit_dl.verbs.embed import active_dimensions, choose_segments, cluster
from lit_dl.verbs.train import train_job

# The TVAE run: the label out of the model; no fidelity callback or synthetic-data report (they judge
# samples, and the report's classifiers need the label among the columns).
VAE_OVERRIDES = [
    "experiment=churn_tvae",
    "data.drop=[customer_id,churn]",
    "callbacks.table_fidelity=null",
    "callbacks.synthetic_report=null",
    "callbacks.progress_bar=null",
    "callbacks.model_summary=null",
]


def train_vae(run_dir: Path, epochs: int, seed: int) -> tuple[Any, Any]:
    """The trained TVAE (best checkpoint) and its datamodule, set up: the same splits as in training.

    A run folder that holds a best checkpoint already is reused (``--runs`` of an earlier call)."""
    if not (run_dir / "checkpoints" / "best.ckpt").is_file():
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            overrides = [*VAE_OVERRIDES, f"trainer.max_epochs={epochs}", f"seed={seed}"]
            train_job(compose("train", overrides=overrides), run_dir)
    model, datamodule = restore_from_checkpoint(run_dir / "checkpoints" / "best.ckpt")
    datamodule.setup()
    return model, datamodule


@torch.no_grad()
def latent_means(model: Any, datamodule: Any, frame: pd.DataFrame) -> np.ndarray:
    dataset, _ = datamodule.inputs_from_frame(frame)
    return model.encode(dataset.tensors[0]).loc.numpy()


def raw_features(train: pd.DataFrame, test: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``data=churn``'s prepared features of the rows, fitted on its training split (the same rows)."""
    churn = ChurnDataModule(
        val_fraction=0.15, test_fraction=0.15, split_seed=42, categorical_encoding="onehot"
    )
    churn.setup("fit")
    return churn.transform_features(train)[0].numpy(), churn.transform_features(test)[0].numpy()


def segment_scores(
    train_codes: np.ndarray,
    test_codes: np.ndarray,
    y_train: np.ndarray,
    y_test: np.ndarray,
    k: int,
    method: str,
) -> dict[str, float]:
    """Segments fitted on the training rows, applied to the test rows; the churn figures of the test rows."""
    labels, model = cluster(train_codes, k, method, seed=0)
    rates = np.array(
        [y_train[labels == s].mean() if (labels == s).any() else y_train.mean() for s in range(k)]
    )
    test_labels = model.predict(np.asarray(test_codes, dtype=np.float64))  # the dtype it was fitted on
    shares = np.bincount(test_labels, minlength=k) / len(test_labels)
    test_rates = np.array([y_test[test_labels == s].mean() if shares[s] else np.nan for s in range(k)])
    present = shares > 0
    mean = float(np.sum(shares[present] * test_rates[present]))
    entropy = -sum(p * math.log(p) for p in (y_test.mean(), 1 - y_test.mean()) if p > 0)
    mutual = mutual_info_score(y_test, test_labels)
    return {
        "max-min": float(np.nanmax(test_rates) - np.nanmin(test_rates)),
        "weighted std": float(np.sqrt(np.sum(shares[present] * (test_rates[present] - mean) ** 2))),
        "ROC-AUC": float(roc_auc_score(y_test, rates[test_labels])),
        "MI (bits)": mutual / math.log(2),
        "MI / H(churn)": mutual / entropy,
        "smallest segment": float(shares.min()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20, help="the TVAE's trainer.max_epochs")
    parser.add_argument("--seed", type=int, default=42, help="training seed")
    parser.add_argument("--ks", type=int, nargs="*", default=[4, 8], help="k besides the automatic one")
    parser.add_argument("--method", choices=["kmeans", "gmm"], default="kmeans")
    parser.add_argument("--runs", type=Path, default=None, help="run folder (default: a temporary one)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    runs = args.runs or Path(tempfile.mkdtemp(prefix="lit_dl_churn_segments_"))

    start = time.perf_counter()
    model, datamodule = train_vae(runs / "tvae", args.epochs, args.seed)
    print(f"TVAE: {runs / 'tvae'} ({time.perf_counter() - start:.0f} s, at most {args.epochs} epochs)")
    train, test = datamodule.frames["train"], datamodule.frames["test"]
    y_train = (train["churn"] == "Yes").to_numpy(dtype=float)
    y_test = (test["churn"] == "Yes").to_numpy(dtype=float)
    latent_train, latent_test = latent_means(model, datamodule, train), latent_means(model, datamodule, test)
    active = active_dimensions(latent_train)
    spaces = {
        "latent": (latent_train[:, active], latent_test[:, active]),
        "raw": raw_features(train, test),
    }
    print(
        f"{len(train)} training and {len(test)} test customers (churn rate {y_train.mean():.3f} / "
        f"{y_test.mean():.3f}); {len(active)} of {latent_train.shape[1]} latent dimensions active; "
        f"{spaces['raw'][0].shape[1]} raw features"
    )
    chosen, scores = choose_segments(spaces["latent"][0], "auto", args.method, (2, 10), seed=0)
    auto_k = int(chosen.max()) + 1
    measure = "BIC" if args.method == "gmm" else "silhouette"
    print(
        f"segments=auto in the latent space: k={auto_k} ({measure}: "
        + ", ".join(f"{k}: {v:.3f}" for k, v in scores.items())
        + ")"
    )

    rows = []
    for k in dict.fromkeys([auto_k, *args.ks]):
        for space, (codes_train, codes_test) in spaces.items():
            rows.append(
                {
                    "k": k,
                    "space": space,
                    **segment_scores(codes_train, codes_test, y_train, y_test, k, args.method),
                }
            )
    table = pd.DataFrame(rows).set_index(["k", "space"])
    supervised = LogisticRegression(max_iter=5000).fit(spaces["raw"][0], y_train)
    reference = roc_auc_score(y_test, supervised.predict_proba(spaces["raw"][1])[:, 1])
    print(f"\nchurn across {args.method} segments of the test customers (fitted on the training customers)")
    print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    print(f"reference: logistic regression on the raw features, test ROC-AUC {reference:.4f}")


if __name__ == "__main__":
    main()
