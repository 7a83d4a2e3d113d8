"""``lit-dl embed ckpt_path=... input=FILE output=codes.csv [segments=k|auto]``: a VAE's latent codes.

Each row (tabular VAE) or image (image VAE) of the input gets the mean and variance of its latent
posterior ``q(z|x)``, after the id columns (or file names) of the input, as ``lit-dl predict``
passes them through. With ``segments``, the codes are clustered (scikit-learn k-means or a Gaussian
mixture, k given or chosen by silhouette or BIC) and three files are written:

- the codes with a ``segment`` column (segment 0 is the largest);
- ``<output>_segments.csv``: per segment its size and share, the rate of a target column when the
  input has one (churn, say), and the features that differ most from all rows, in original units
  (numbers: segment mean against the overall mean; categories: the most over-represented value's
  share against its overall share; both also as a standardised difference);
- ``<output>_map.png``: the codes in 2-D (PCA or t-SNE), coloured by segment and, in a second
  panel, by the target.

Clustering and the map use the *active* latent dimensions only, those whose posterior mean varies
over the rows (variance above 0.01, Burda et al. 2016): a VAE leaves the others at the prior, where
they carry no information about the row and only add noise to distances.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from lit_dl.checkpoints import task_class
from lit_dl.data.batching import batch_loader
from lit_dl.data.preprocessing import as_text
from lit_dl.errors import ConfigError, DataError
from lit_dl.loggers import finish_loggers, log_images, log_run_config, logger_entries
from lit_dl.utils import atomic_write, to_plain
from lit_dl.verbs.common import (
    build_loggers,
    check_output,
    load_checkpoint,
    restore_from_checkpoint,
    start,
    write_run_config,
)
from lit_dl.verbs.predict import TABLE_SUFFIXES, write_table

log = logging.getLogger(__name__)

METHODS = ("kmeans", "gmm")
MAPS = ("pca", "tsne")
# A latent dimension is active when its posterior mean varies over the rows more than this.
ACTIVE_VARIANCE = 0.01
# Rows the silhouette of segments=auto is measured on (a seeded sample: the score costs O(n^2)).
SILHOUETTE_ROWS = 5000
# Added to every variance of a Gaussian mixture's components (codes and features are of unit scale).
GMM_VARIANCE_FLOOR = 1e-3
# A target with more distinct values than this, all numbers, is summarised by its mean, not a rate.
MAX_TARGET_CLASSES = 20


# ----------------------------------------------------------------- options
def segment_setting(cfg: DictConfig) -> int | str | None:
    """``segments``: None, a whole number k >= 2, or ``"auto"``; anything else is a one-line error."""
    value = cfg.get("segments")
    if value is None or value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise ConfigError(
            f"segments={value} : give a number of segments of 2 or more, or segments=auto (the k in "
            "segments_range with the best silhouette (kmeans) or BIC (gmm)); null: codes only"
        )
    return value


def check_options(cfg: DictConfig) -> tuple[int | str | None, tuple[int, int]]:
    """Every option checked before any work: the segment setting and the range of k it may try."""
    segments = segment_setting(cfg)
    if cfg.segments_method not in METHODS:
        raise ConfigError(f"segments_method must be one of {', '.join(METHODS)}, got {cfg.segments_method!r}")
    if cfg.get("map") is not None and cfg.map not in MAPS:
        raise ConfigError(f"map must be one of {', '.join(MAPS)} or null (no map), got {cfg.map!r}")
    span = list(cfg.segments_range or [])
    if len(span) != 2 or not all(isinstance(k, int) and not isinstance(k, bool) for k in span):
        raise ConfigError(f"segments_range must be [lowest, highest] k, e.g. [2, 10], got {span}")
    if not 2 <= span[0] <= span[1]:
        raise ConfigError(f"segments_range must run from 2 or more up to at least its start, got {span}")
    for key in ("batch_size", "map_points"):
        if not isinstance(cfg[key], int) or isinstance(cfg[key], bool) or cfg[key] < 1:
            raise ConfigError(f"{key} must be a positive whole number, got {cfg[key]!r}")
    if not isinstance(cfg.profile_features, int) or cfg.profile_features < 0:
        raise ConfigError(f"profile_features must be a whole number >= 0, got {cfg.profile_features!r}")
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device must be auto, cpu or cuda, got {cfg.device!r}")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but torch sees no GPU: use device=auto or device=cpu")
    return segments, (int(span[0]), int(span[1]))


def side_file(output: Path, suffix: str) -> Path:
    """A file beside the codes named after them: ``codes.csv`` -> ``codes_segments.csv``."""
    return output.with_name(f"{output.stem}{suffix}")


# ----------------------------------------------------------------- codes
def vae_classes() -> tuple[type, ...]:
    """The task classes ``embed`` reads codes from (imported late: the verb's help stays fast)."""
    from lit_dl.tasks.tabular_vae import TabularVAETask
    from lit_dl.tasks.vae import VAETask

    return VAETask, TabularVAETask


@torch.no_grad()
def latent_codes(model: Any, dataset: Any, batch_size: int, device: str) -> tuple[np.ndarray, np.ndarray]:
    """Posterior means and variances ``(N, L)`` of every item of ``dataset``, in its order."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.to(device).eval()
    means, variances = [], []
    for batch in batch_loader(dataset, batch_size, shuffle=False):
        x = batch[0] if isinstance(batch, tuple | list) else batch
        posterior = model.encode(x.to(device))
        means.append(posterior.loc.float().cpu())
        variances.append(posterior.scale.float().pow(2).cpu())
    return torch.cat(means).numpy(), torch.cat(variances).numpy()


def codes_frame(ids: pd.DataFrame, means: np.ndarray, variances: np.ndarray | None) -> pd.DataFrame:
    """The ids, then ``latent_mean_<i>`` and (with variances) ``latent_var_<i>`` of each dimension."""
    columns = {f"latent_mean_{i}": means[:, i] for i in range(means.shape[1])}
    if variances is not None:
        columns.update({f"latent_var_{i}": variances[:, i] for i in range(variances.shape[1])})
    return pd.concat([ids.reset_index(drop=True), pd.DataFrame(columns)], axis=1)


def active_dimensions(means: np.ndarray) -> np.ndarray:
    """Indices of the latent dimensions whose mean varies over the rows (all of them when none does)."""
    active = np.flatnonzero(means.var(axis=0) > ACTIVE_VARIANCE)
    return active if len(active) else np.arange(means.shape[1])


# ----------------------------------------------------------------- segments
def cluster(codes: np.ndarray, k: int, method: str, seed: int) -> tuple[np.ndarray, Any]:
    """Segment of each row ``(N,)`` and the fitted scikit-learn model."""
    from sklearn.cluster import KMeans
    from sklearn.mixture import GaussianMixture

    codes = np.asarray(codes, dtype=np.float64)
    if method == "kmeans":
        model = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(codes)
        return model.labels_, model
    # A floor under each variance: a column constant within a component (a one-hot flag) has none.
    model = GaussianMixture(
        n_components=k, covariance_type="diag", reg_covar=GMM_VARIANCE_FLOOR, n_init=2, random_state=seed
    ).fit(codes)
    return model.predict(codes), model


def choose_segments(
    codes: np.ndarray, segments: int | str, method: str, k_range: tuple[int, int], seed: int
) -> tuple[np.ndarray, dict[int, float]]:
    """Segments of the codes, numbered by size (0: the largest); with ``auto``, the score of each k tried
    (silhouette for k-means: higher is better; BIC for a mixture: lower is better)."""
    from sklearn.metrics import silhouette_score

    n = len(codes)
    if segments != "auto":
        if int(segments) >= n:
            raise DataError(f"segments={segments} needs more rows than that; the input has {n}")
        labels, _ = cluster(codes, int(segments), method, seed)
        return by_size(labels), {}
    highest = min(k_range[1], n - 1)
    if highest < k_range[0]:
        raise DataError(f"segments=auto tries k from {k_range[0]}: the input has only {n} rows")
    scores: dict[int, float] = {}
    fitted: dict[int, np.ndarray] = {}
    for k in range(k_range[0], highest + 1):
        labels, model = cluster(codes, k, method, seed)
        fitted[k] = labels
        if method == "gmm":
            scores[k] = float(model.bic(codes))
        elif len(np.unique(labels)) < 2:
            scores[k] = -1.0  # identical codes: one cluster whatever k
        else:
            size = min(n, SILHOUETTE_ROWS)
            scores[k] = float(silhouette_score(codes, labels, sample_size=size, random_state=seed))
    best = min(scores, key=scores.get) if method == "gmm" else max(scores, key=scores.get)  # type: ignore[arg-type]
    return by_size(fitted[best]), scores


def by_size(labels: np.ndarray) -> np.ndarray:
    """Segment numbers renamed so that segment 0 is the largest (ties: the lower old number first)."""
    values, counts = np.unique(labels, return_counts=True)
    order = values[np.lexsort((values, -counts))]
    rename = {int(old): new for new, old in enumerate(order)}
    return np.array([rename[int(v)] for v in labels], dtype=np.int64)


# ----------------------------------------------------------------- profile
def resolve_target(cfg: DictConfig, datamodule: Any, frame: pd.DataFrame | None) -> str | None:
    """The column whose rate or mean the profile gives: ``target=``, else the data's target if present."""
    if cfg.get("target"):
        name = str(cfg.target)
        if frame is None:
            raise ConfigError(f"target={name} : image inputs have no columns; leave target unset")
        if name not in frame.columns:
            columns = ", ".join(map(str, frame.columns))
            raise DataError(
                f"target column {name!r} not in {cfg.input}; columns are: {columns} (check target=)"
            )
        return name
    if frame is None:
        return None
    for name in (getattr(datamodule, "target", None), getattr(datamodule, "label_column", None)):
        if name and name in frame.columns:
            return str(name)
    return None


@dataclass(frozen=True)
class TargetSummary:
    """What the profile and the map show of a target column.

    Args:
        column: the profile's column, ``<target>_rate`` or ``<target>_mean``.
        values: per row, what a segment averages: 1/0 for the positive label, or the number.
        label: the positive label (``churn=Yes``) of a two-valued target; None for a number.
    """

    column: str
    values: pd.Series
    label: str | None

    @property
    def meaning(self) -> str:
        name = self.column.rpartition("_")[0]
        return f"the share of {self.label}" if self.label else f"the mean of {name}"


def target_summary(values: pd.Series, positive: str | None) -> TargetSummary | None:
    """The rate of a two-valued target's positive label (``positive``, else the rarer value), or the mean
    of a numeric one; None for other targets (they are profiled like a category)."""
    name = str(values.name)
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if numeric and values.dropna().nunique() > MAX_TARGET_CLASSES:
        return TargetSummary(f"{name}_mean", pd.to_numeric(values, errors="coerce"), None)
    text = as_text(values)
    counts = text.dropna().value_counts()
    if len(counts) != 2:
        return None
    label = positive if positive in counts.index else str(counts.index[-1])  # else: the rarer value
    indicator = (text == label).astype(float).where(text.notna())
    return TargetSummary(f"{name}_rate", indicator, f"{name}={label}")


def feature_differences(
    segment: pd.DataFrame, everyone: pd.DataFrame, numeric: list[str], categorical: list[str]
) -> list[dict[str, Any]]:
    """Each feature's difference between a segment and all rows, most different first.

    Numbers: segment mean vs overall mean, the difference in overall standard deviations.
    Categories: the value most over-represented in the segment, its share vs its overall share, the
    difference in standard deviations of that value's indicator (``sqrt(p (1 - p))``).
    """
    found = []
    for column in numeric:
        values, inside = everyone[column], segment[column]
        std = float(values.std(ddof=0))
        mean, seg_mean = float(values.mean()), float(inside.mean())
        if not (math.isfinite(seg_mean) and math.isfinite(mean)):
            continue
        z = (seg_mean - mean) / std if std > 0 else 0.0
        found.append({"feature": column, "segment": seg_mean, "population": mean, "difference": z})
    for column in categorical:
        overall = everyone[column].value_counts(normalize=True)
        shares = segment[column].value_counts(normalize=True).reindex(overall.index, fill_value=0.0)
        spread = np.sqrt((overall * (1 - overall)).clip(lower=1e-12))
        z = (shares - overall) / spread
        value = z.idxmax()
        found.append(
            {
                "feature": f"{column}={value}",
                "segment": float(shares[value]),
                "population": float(overall[value]),
                "difference": float(z[value]),
                "share": True,
            }
        )
    return sorted(found, key=lambda f: -abs(f["difference"]))


def describe(entry: dict[str, Any]) -> str:
    """``tenure_months 5.2 vs 24.1 (-0.95 sd)`` or ``contract=Month-to-month 92% vs 55% (+0.74 sd)``."""
    if entry.get("share"):
        values = f"{entry['segment']:.0%} vs {entry['population']:.0%}"
    else:
        values = f"{entry['segment']:.4g} vs {entry['population']:.4g}"
    return f"{entry['feature']} {values} ({entry['difference']:+.2f} sd)"


def profile_table(
    segments: np.ndarray,
    frame: pd.DataFrame | None,
    numeric: list[str],
    categorical: list[str],
    target: TargetSummary | None,
    top: int,
) -> pd.DataFrame:
    """One row per segment (and ``all``): size, share, the target's rate or mean, the top features."""
    rows = []
    n = len(segments)
    features = None
    if frame is not None:
        features = frame[numeric + categorical].copy()
        for column in numeric:
            features[column] = pd.to_numeric(features[column], errors="coerce")
        for column in categorical:
            features[column] = as_text(features[column]).fillna("(missing)")
    for segment in [*range(int(segments.max()) + 1), "all"]:
        inside = np.ones(n, dtype=bool) if segment == "all" else segments == segment
        row: dict[str, Any] = {"segment": segment, "size": int(inside.sum()), "share": inside.mean()}
        if target is not None:
            row[target.column] = float(target.values[inside].mean())
        if features is not None and segment != "all" and top:
            found = feature_differences(features[inside], features, numeric, categorical)[:top]
            for i, entry in enumerate(found, start=1):
                row[f"feature_{i}"] = entry["feature"]
                row[f"segment_{i}"] = entry["segment"]
                row[f"population_{i}"] = entry["population"]
                row[f"difference_{i}"] = entry["difference"]
            row["description"] = "; ".join(describe(entry) for entry in found)
        rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------- map
def map_figure(
    codes: np.ndarray,
    segments: np.ndarray | None,
    target: TargetSummary | None,
    method: str,
    points: int,
    seed: int,
) -> Any:
    """The codes in 2-D (PCA or t-SNE of at most ``points`` rows), by segment and by the target."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    rng = np.random.default_rng(seed)
    rows = (
        np.sort(rng.choice(len(codes), points, replace=False))
        if len(codes) > points
        else np.arange(len(codes))
    )
    sample = codes[rows]
    if sample.shape[1] == 1:
        flat = np.column_stack([sample[:, 0], np.zeros(len(sample))])
        axes_names = ("latent dimension", "")
    elif method == "tsne" and len(sample) > 3:
        perplexity = min(30.0, (len(sample) - 1) / 3)
        flat = TSNE(2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(sample)
        axes_names = ("t-SNE 1", "t-SNE 2")
    else:
        pca = PCA(2, random_state=seed).fit(sample)
        flat = pca.transform(sample)
        axes_names = tuple(
            f"PC{i + 1} ({share:.0%} of the variance)"
            for i, share in enumerate(pca.explained_variance_ratio_)
        )
    panels = 2 if target is not None else 1
    figure, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 5.5), squeeze=False)
    left = axes[0, 0]
    if segments is None:
        left.scatter(flat[:, 0], flat[:, 1], s=4, alpha=0.5, color="tab:blue", linewidths=0)
        left.set_title(f"latent codes ({len(rows)} of {len(codes)})")
    else:
        colours = plt.get_cmap("tab20" if segments.max() >= 10 else "tab10")
        for segment in range(int(segments.max()) + 1):
            mine = segments[rows] == segment
            left.scatter(
                *flat[mine].T,
                s=4,
                alpha=0.6,
                color=colours(segment % colours.N),
                linewidths=0,
                label=str(segment),
            )
        left.legend(title="segment", markerscale=3, fontsize="small", loc="best")
        left.set_title(f"segments of the latent codes ({len(rows)} of {len(codes)})")
    if target is not None:
        right = axes[0, 1]
        values = target.values.to_numpy(dtype=float)[rows]
        if target.label:  # the positive rows drawn last, on top
            for value, colour, name in ((0.0, "tab:blue", "other"), (1.0, "tab:red", target.label)):
                mine = values == value
                right.scatter(*flat[mine].T, s=4, alpha=0.6, color=colour, linewidths=0, label=name)
            right.legend(markerscale=3, fontsize="small", loc="best")
        else:
            known = ~np.isnan(values)
            shown = right.scatter(
                *flat[known].T, c=values[known], s=4, alpha=0.6, cmap="viridis", linewidths=0
            )
            figure.colorbar(shown, ax=right, label=target.column.rpartition("_")[0])
        right.set_title(f"{target.column}: {target.meaning}")
    for axis in axes[0]:
        axis.set_xlabel(axes_names[0])
        axis.set_ylabel(axes_names[1])
    figure.tight_layout()
    return figure


def save_figure(figure: Any, path: Path) -> None:
    """Write ``figure`` to ``path`` as PNG, whole or not at all, and close it."""
    import matplotlib.pyplot as plt

    try:
        atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=110))
    finally:
        plt.close(figure)


# ----------------------------------------------------------------- the verb
def embed(cfg: DictConfig) -> Path:
    """Write the latent codes of ``cfg.input`` (and segments, profile, map); return the codes' path."""
    start(cfg)
    segments, k_range = check_options(cfg)
    output, profile_path, map_path = output_paths(cfg, with_profile=segments is not None)
    model, datamodule = restore_vae(cfg)
    frame = None
    if callable(getattr(datamodule, "read_inputs", None)):  # a table: its raw rows feed the profile
        frame = datamodule.read_inputs(str(cfg.input))
        dataset, ids = datamodule.inputs_from_frame(frame)
    else:  # images
        dataset, ids = datamodule.load_inputs(str(cfg.input))
    numeric, categorical, target = profile_columns(cfg, datamodule, frame)

    means, variances = latent_codes(model, dataset, int(cfg.batch_size), str(cfg.device))
    active = active_dimensions(means)
    log.info(
        "%d of %d latent dimensions are active (their mean varies over the rows)", len(active), means.shape[1]
    )
    codes = codes_frame(ids, means, variances if cfg.variance else None)
    labels = profile = figure = None
    if segments is not None:
        labels, scores = choose_segments(
            means[:, active], segments, cfg.segments_method, k_range, int(cfg.seed)
        )
        if scores:
            measure = (
                "BIC (lower is better)" if cfg.segments_method == "gmm" else "silhouette (higher is better)"
            )
            tried = ", ".join(f"k={k}: {v:.4g}" for k, v in scores.items())
            log.info("segments=auto: %s per k: %s; chose k=%d", measure, tried, int(labels.max()) + 1)
        codes["segment"] = labels
        profile = profile_table(labels, frame, numeric, categorical, target, int(cfg.profile_features))
    if map_path is not None:
        figure = map_figure(means[:, active], labels, target, cfg.map, int(cfg.map_points), int(cfg.seed))

    # Everything is computed: now the files, each written whole or not at all.
    csv_raw = bool(cfg.get("csv_raw", False))
    if figure is not None and map_path is not None:
        save_figure(figure, map_path)
    if profile is not None and profile_path is not None:
        write_table(profile, profile_path, csv_raw=csv_raw)
    write_table(codes, output, csv_raw=csv_raw)
    write_run_config(cfg.paths.output_dir, cfg)
    log_outputs(cfg, profile, map_path)
    print(f"wrote the latent codes of {len(codes)} {'rows' if frame is not None else 'images'} to {output}")
    if profile is not None:
        print(f"wrote {len(profile) - 1} segment profiles to {profile_path}")
        print_profile(profile, target)
    if map_path is not None:
        print(f"wrote the map to {map_path}")
    return output


def output_paths(cfg: DictConfig, with_profile: bool) -> tuple[Path, Path | None, Path | None]:
    """The codes, profile and map files, each checked before any work (:func:`check_output`)."""
    overwrite = bool(cfg.get("overwrite", False))
    inputs = {"input": cfg.input, "ckpt_path": cfg.ckpt_path}
    output = check_output(
        cfg.output, suffixes=TABLE_SUFFIXES, what="codes", overwrite=overwrite, inputs=inputs
    )
    profile = map_path = None
    if with_profile:
        profile = side_file(output, "_segments.csv")
        check_output(profile, suffixes=(".csv",), what="profiles", overwrite=overwrite, inputs=inputs)
    if cfg.get("map") is not None:
        map_path = side_file(output, "_map.png")
        check_output(map_path, suffixes=(".png",), what="maps", overwrite=overwrite, inputs=inputs)
    return output, profile, map_path


def restore_vae(cfg: DictConfig) -> tuple[Any, Any]:
    """The VAE of ``cfg.ckpt_path`` and its datamodule; any other model is a one-line error."""
    checkpoint = load_checkpoint(cfg.ckpt_path)
    stored = task_class(checkpoint, cfg.ckpt_path)
    if not issubclass(stored, vae_classes()):
        raise ConfigError(
            f"lit-dl embed needs a VAE checkpoint (model=tvae, or an image VAE such as "
            f"experiment=digits_vae); {cfg.ckpt_path} holds a {stored.__name__}"
        )
    data = to_plain(cfg.get("data") or {})  # data.KEY=VALUE: e.g. data.positive_label for the target rate
    return restore_from_checkpoint(cfg.ckpt_path, data, checkpoint=checkpoint)


def profile_columns(
    cfg: DictConfig, datamodule: Any, frame: pd.DataFrame | None
) -> tuple[list[str], list[str], TargetSummary | None]:
    """The numeric and categorical columns a profile compares (the modelled ones), and the target."""
    if frame is None:
        resolve_target(cfg, datamodule, frame)  # (refuses target= for images)
        return [], [], None
    name = resolve_target(cfg, datamodule, frame)
    kinds = {c["name"]: c["kind"] for c in datamodule.transform.modelled if c["name"] != name}
    numeric = [column for column, kind in kinds.items() if kind == "numeric"]
    categorical = [column for column, kind in kinds.items() if kind == "categorical"]
    target = None
    if name is not None:
        target = target_summary(frame[name], getattr(datamodule, "positive_label", None))
        if target is None:  # several classes: profiled as one more category
            categorical.append(name)
    return numeric, categorical, target


def print_profile(profile: pd.DataFrame, target: TargetSummary | None) -> None:
    """One line per segment: size, share, the target's rate or mean, what sets it apart."""
    for _, row in profile.iloc[:-1].iterrows():  # (the last row is everyone)
        rate = f", {target.column} {row[target.column]:.3f}" if target is not None else ""
        features = f": {row['description']}" if row.get("description") else ""
        print(f"  segment {row['segment']}: {row['size']} rows ({row['share']:.0%}){rate}{features}")


def log_outputs(cfg: DictConfig, profile: pd.DataFrame | None, map_path: Path | None) -> None:
    """Hand the map (and, to W&B, the profile table) to the configured loggers, if any."""
    entries = logger_entries(cfg, Path(cfg.paths.output_dir), resuming=False)
    if not entries:
        return
    loggers = build_loggers(entries)
    log_run_config(loggers, cfg)
    if map_path is not None:
        log_images(SimpleNamespace(loggers=loggers, is_global_zero=True), {"embed/map": map_path})
    if profile is not None:
        from lightning.pytorch.loggers import WandbLogger

        for logger in loggers:
            if isinstance(logger, WandbLogger):
                logger.log_table(key="embed/segments", dataframe=profile.astype({"segment": str}))
    for logger in loggers:
        logger.finalize("success")  # CSV: hparams.yaml written; W&B: the offline sync hint
    finish_loggers(loggers)
