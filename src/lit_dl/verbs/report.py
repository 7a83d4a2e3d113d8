"""``lit-dl report real=train.csv synthetic=s.csv holdout=test.csv target=COL``: judge a synthetic table."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig

from lit_dl.data.tables import (
    as_list,
    clean_frame,
    looks_like_id,
    numeric_text_columns,
    parse_numbers,
    read_table,
)
from lit_dl.errors import ConfigError, DataError
from lit_dl.evaluation.synthetic import build_report, summary_lines, write_report
from lit_dl.evaluation.synthetic.fidelity import column_kinds
from lit_dl.utils import to_plain
from lit_dl.verbs.common import check_required, same_file

log = logging.getLogger(__name__)

# What write_report puts in output_dir.
REPORT_FILES = ("report.md", "report.json", "plots")


def load(path: str, column_names: list[str] | None, na_values: list[str], key: str) -> pd.DataFrame:
    if not Path(path).is_file():
        raise DataError(f"{key} file not found: {path} (check {key}=)")
    return clean_frame(read_table(path, column_names, na_values), na_values)


def align_labels(frame: pd.DataFrame, reference: pd.DataFrame, target: str) -> pd.DataFrame:
    """Labels written with a trailing period (UCI Adult's test file: ``>50K.``) as in ``reference``."""
    known = set(reference[target].dropna().astype(str))
    frame = frame.copy()
    frame[target] = frame[target].map(
        lambda v: v[:-1] if isinstance(v, str) and v not in known and v.rstrip(".") in known else v
    )
    return frame


def id_like_columns(frame: pd.DataFrame, categorical: Sequence[str], keep: Sequence[str] = ()) -> list[str]:
    """Columns of ``frame`` (but ``keep``) that look like row keys: text with a distinct value in
    (nearly) every row, or whole numbers all distinct (:func:`lit_dl.data.tables.looks_like_id`, the
    test the tabular datamodule warns with)."""
    kinds = column_kinds(frame, categorical)
    return [
        str(c)
        for c in frame.columns
        if c not in keep and looks_like_id(frame[c], categorical=kinds[str(c)] == "categorical")
    ]


def dropped_columns(cfg: DictConfig, real: pd.DataFrame, categorical: Sequence[str]) -> list[str]:
    """``drop``: the listed columns; ``auto`` (the default): the id-like ones, named in one warning.

    An identifier scored as a category is a category per row: it only lowers fidelity (no sample can
    match it), and as one-hot features it makes efficacy and privacy slow (the churn table's 7,000
    training rows with their ``customer_id``: 870 s and fidelity 0.854, against 41 s and 0.926 without
    it, on 2 busy CPU cores). Left out with a warning rather than refused:
    the rest of the report is what was asked for, and ``drop=[]`` keeps every column.
    """
    drop = to_plain(cfg.get("drop", "auto"))
    if drop != "auto":
        return as_list("drop", drop)
    found = id_like_columns(real, categorical, keep=[cfg.target] if cfg.target else [])
    if found:
        log.warning(
            "report: left out id-like column(s) %s (a value of its own in nearly every row: scored as a "
            "category it only lowers fidelity and slows the report); drop=[] keeps every column, "
            "drop=[a,b] leaves out exactly those",
            ", ".join(found),
        )
    return found


def check_output_dir(cfg: DictConfig) -> Path:
    """``output_dir`` (absolute), refused in one line if a report there would replace the user's files:
    an earlier report (unless ``overwrite=true``) or one of the input tables (always)."""
    folder = Path(str(cfg.output_dir))
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"output_dir={cfg.output_dir} is a file: name a folder for the report")
    for key in ("real", "synthetic", "holdout"):
        source = cfg.get(key)
        for name in REPORT_FILES[:2]:
            if source and same_file(folder / name, str(source)):
                raise ConfigError(
                    f"output_dir={cfg.output_dir} would write {name} over the {key} file; "
                    "choose another output_dir="
                )
    found = [name for name in REPORT_FILES if (folder / name).exists()]
    if found and not cfg.get("overwrite", False):
        raise ConfigError(
            f"output_dir={cfg.output_dir} already holds a report ({', '.join(found)}): add overwrite=true to "
            "replace it, or choose another output_dir="
        )
    return folder.absolute()


def report(cfg: DictConfig) -> dict[str, Any]:
    """Compare ``cfg.synthetic`` with real rows; write report.json, report.md and plots in ``output_dir``."""
    check_required(cfg)
    output_dir = check_output_dir(cfg)
    na_values = [str(v) for v in cfg.na_values]
    names = as_list("column_names", to_plain(cfg.column_names)) or None
    real = load(cfg.real, names, na_values, "real")
    synthetic = load(cfg.synthetic, None, na_values, "synthetic")
    holdout = load(cfg.holdout, names, na_values, "holdout") if cfg.holdout else None
    target = cfg.target
    if target and target not in real.columns:
        raise ConfigError(
            f"target {target!r} is not a column of {cfg.real}; columns are: {', '.join(real.columns)}"
        )
    # Numbers stored as text in the real table are compared as numbers, as the generator modelled them.
    frames = [real, synthetic] + ([holdout] if holdout is not None else [])
    for column in numeric_text_columns(real, [c for c in real.columns if c != target]):
        for frame in frames:
            if column in frame.columns:
                frame[column] = parse_numbers(frame[column])
    if holdout is not None and target:
        holdout = align_labels(holdout, real, target)
    categorical = as_list("categorical", to_plain(cfg.categorical))
    drop = dropped_columns(cfg, real, categorical)
    result = build_report(
        real,
        synthetic,
        holdout=holdout,
        target=target,
        positive_label=None if cfg.positive_label is None else str(cfg.positive_label),
        categorical=categorical,
        ignore=drop,
        seed=int(cfg.seed),
    )
    path = write_report(result, output_dir, real, synthetic)
    for line in summary_lines(result):
        print(line)
    if holdout is None:
        print(
            "no holdout= file: ML efficacy and the privacy comparison need real rows the generator never saw"
        )
    print(f"report: {path}")
    return result
