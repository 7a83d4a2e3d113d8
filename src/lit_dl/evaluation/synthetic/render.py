"""The synthetic-data report written out: headline sentences, ``report.json``, ``report.md`` and plots."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lit_dl.evaluation.synthetic.fidelity import as_categories
from lit_dl.utils import atomic_write_text, format_number, write_json

MAX_PLOTS = 40
# Characters of a column name kept in its plot's file name (a file name has at most 255 bytes).
MAX_STEM = 80


def number(value: float, spec: str = ".3f") -> str:
    """A report's figure: three decimals, zero never signed (:func:`lit_dl.utils.format_number`)."""
    return format_number(value, spec)


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The report's headline figures, one sentence each."""
    fid = report["fidelity"]
    # Named by what it compares with: a training run's test/fidelity (callbacks.table_fidelity) is the
    # same measure of another sample against the held-out test rows, a different figure.
    lines = [
        f"fidelity to the training rows {number(fid['score'])} (column shapes "
        f"{number(fid['column_shapes_mean'])}, column pairs {number(fid['column_pairs_mean'])}; "
        f"{report['rows']['synthetic']} synthetic rows against {report['rows']['train']})"
    ]
    if "ml_efficacy" in report:
        mean = report["ml_efficacy"]["mean"]
        lines.append(
            f"ML efficacy F1 {number(mean['tstr']['f1'])} trained on synthetic vs "
            f"{number(mean['trtr']['f1'])} on real (AUROC {number(mean['tstr']['auroc'])} vs "
            f"{number(mean['trtr']['auroc'])}), tested on real held-out rows; synthetic rows drawn "
            f"{report.get('sampling', 'unconditioned')}"
        )
    if "ml_efficacy_unconditioned" in report:
        plain = report["ml_efficacy_unconditioned"]["mean"]["tstr"]
        lines.append(
            f"ML efficacy of an unconditioned sample: F1 {number(plain['f1'])}, "
            f"AUROC {number(plain['auroc'])}"
        )
    if "privacy" in report:
        p = report["privacy"]
        verdict = "no closer" if p["no_closer_than_holdout"] else "CLOSER"
        lines.append(
            f"privacy: {p['exact_copies']} exact copies of training rows; synthetic rows are {verdict} to "
            "training rows than to real held-out rows (median distance "
            f"{number(p['dcr_synthetic_to_train_matched']['median'])} vs "
            f"{number(p['dcr_synthetic_to_holdout_matched']['median'])} over equally many rows; "
            f"{number(p['closer_to_train_share'], '.1%')} closer to training, 50% expected); median "
            f"distance to the closest training row: synthetic {number(p['dcr_synthetic']['median'])}, "
            f"real held-out {number(p['dcr_holdout']['median'])}"
        )
    if "privacy_unconditioned" in report or "unconditioned" in report.get("target_rate", {}):
        lines.append(f"unconditioned sample: {unconditioned_summary(report)}")
    return lines


def unconditioned_summary(report: dict[str, Any]) -> str:
    """The unconditioned sample's target rate, largest missing and zero-share gaps and privacy verdict."""
    parts = []
    rate = report.get("target_rate", {})
    if "unconditioned" in rate:
        parts.append(
            f"`{rate['label']}` in {number(rate['unconditioned'], '.1%')} of rows "
            f"(real {number(rate['real'], '.1%')})"
        )
    for what, key in (("missing", "missing_rate"), ("exact zeros", "zero_share")):
        shares = {c: r for c, r in report.get(key, {}).items() if "unconditioned" in r}
        if shares:
            name, r = max(shares.items(), key=lambda item: abs(item[1]["unconditioned"] - item[1]["real"]))
            parts.append(
                f"{what} furthest from real in `{name}`: {number(r['unconditioned'], '.1%')} "
                f"(real {number(r['real'], '.1%')})"
            )
    if "privacy_unconditioned" in report:
        p = report["privacy_unconditioned"]
        verdict = "no closer" if p["no_closer_than_holdout"] else "CLOSER"
        parts.append(
            f"privacy: {verdict} to training rows than real held-out rows "
            f"({number(p['closer_to_train_share'], '.1%')} closer to training, "
            f"{p['exact_copies']} exact copies)"
        )
    return "; ".join(parts)


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
        "## Fidelity to the training rows",
        "",
        "The synthetic rows against the real rows the generator was trained on (1 = identical): "
        "per column 1 - KS statistic (numbers) or 1 - total variation distance (categories), per pair "
        "of columns correlation or contingency similarity; the figure is the mean of the two means.",
        "",
        "| column | kind | shape similarity | missing real | missing synthetic | missing unconditioned |",
        "|---|---|---|---|---|---|",
    ]
    for name, score in report["fidelity"]["column_shapes"].items():
        miss = report["missing_rate"][name]
        plain = number(miss["unconditioned"], ".2%") if "unconditioned" in miss else "-"
        out.append(
            f"| {name} | {report['kinds'][name]} | {number(score)} | "
            f"{number(miss['real'], '.2%')} | {number(miss['synthetic'], '.2%')} | {plain} |"
        )
    if report.get("zero_share"):
        out += ["", "Exact zeros (share of rows):", "", "| column | real | synthetic | unconditioned |"]
        out.append("|---|---|---|---|")
        for name, r in report["zero_share"].items():
            plain = number(r["unconditioned"], ".2%") if "unconditioned" in r else "-"
            out.append(f"| {name} | {number(r['real'], '.2%')} | {number(r['synthetic'], '.2%')} | {plain} |")
    if "target_rate" in report:
        rate = report["target_rate"]
        plain = f", unconditioned {number(rate['unconditioned'], '.2%')}" if "unconditioned" in rate else ""
        out += [
            "",
            f"Rows with `{rate['label']}`: real {number(rate['real'], '.2%')}, "
            f"synthetic {number(rate['synthetic'], '.2%')}{plain}.",
        ]
    worst = sorted(report["fidelity"]["column_pairs"], key=lambda p: p["score"])[:10]
    if worst:
        out += ["", "Least similar column pairs:", "", "| columns | metric | similarity |", "|---|---|---|"]
        out += [f"| {' / '.join(p['columns'])} | {p['metric']} | {number(p['score'])} |" for p in worst]
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
                f"| {name} | {number(r['tstr']['f1'])} | {number(r['trtr']['f1'])} | "
                f"{number(r['tstr']['auroc'])} | {number(r['trtr']['auroc'])} |"
            )
        if "ml_efficacy_unconditioned" in report:
            plain = report["ml_efficacy_unconditioned"]
            out += ["", "The same classifiers trained on an unconditioned sample of as many rows:", ""]
            out += ["| classifier | F1 | AUROC |", "|---|---|---|"]
            out += [
                f"| {name} | {number(r['tstr']['f1'])} | {number(r['tstr']['auroc'])} |"
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
            f"| synthetic rows | {number(p['dcr_synthetic']['median'], '.4f')} | "
            f"{number(p['dcr_synthetic']['p05'], '.4f')} |",
            f"| real held-out rows | {number(p['dcr_holdout']['median'], '.4f')} | "
            f"{number(p['dcr_holdout']['p05'], '.4f')} |",
            "",
            f"Synthetic rows against {p['rows_compared']['holdout_full']} training rows and as many held-out "
            "rows (like with like):",
            "",
            "| distance of synthetic rows to the closest | median | 5th percentile |",
            "|---|---|---|",
            f"| training row | {number(p['dcr_synthetic_to_train_matched']['median'], '.4f')} | "
            f"{number(p['dcr_synthetic_to_train_matched']['p05'], '.4f')} |",
            f"| held-out row | {number(p['dcr_synthetic_to_holdout_matched']['median'], '.4f')} | "
            f"{number(p['dcr_synthetic_to_holdout_matched']['p05'], '.4f')} |",
            "",
            f"- Closer to training than to held-out rows: {number(p['closer_to_train_share'], '.1%')} "
            f"(50% expected; up to {number(0.5 + p['closer_to_train_margin'], '.1%')} passes).",
            f"- Exact copies of training rows: {p['exact_copies']} "
            "(real held-out rows that equal a training row: "
            f"{p['holdout_exact_copies']}).",
            "- Direct measure: median distance to the closest training row "
            f"{number(p['dcr_synthetic']['median'], '.4f')} for synthetic rows, "
            f"{number(p['dcr_holdout']['median'], '.4f')} for real held-out rows: synthetic rows "
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
        if "privacy_unconditioned" in report:
            q = report["privacy_unconditioned"]
            out.append(
                f"- The unconditioned sample: {'no closer' if q['no_closer_than_holdout'] else 'CLOSER'} "
                f"({number(q['closer_to_train_share'], '.1%')} closer to training; median distance "
                f"{number(q['dcr_synthetic_to_train_matched']['median'], '.4f')} to training vs "
                f"{number(q['dcr_synthetic_to_holdout_matched']['median'], '.4f')} to held-out rows; "
                f"{q['exact_copies']} exact copies)."
            )
    if plots:
        out += ["", "## Plots (real beside synthetic)", ""]
        out += [f"![{name}]({path})" for name, path in plots.items()]
    return "\n".join(out) + "\n"


def plot_stem(name: str, taken: set[str]) -> str:
    """A file name (without suffix) for a column's plot: its letters, digits, - and _, at most
    :data:`MAX_STEM` of them; a long name, or one that another column's stem already took, ends in a hash."""
    stem = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in str(name))
    if len(stem) > MAX_STEM or stem in taken:
        stem = f"{stem[:MAX_STEM]}_{hashlib.sha256(str(name).encode()).hexdigest()[:8]}"
    return stem


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
        file = f"{plot_stem(name, {Path(f).stem for f in written.values()})}.png"
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
    """Write ``report.json``, ``report.md`` and (given the tables) ``plots/*.png``; return the .md path.

    The plots written are listed in ``report["plots"]`` (column -> path relative to ``folder``).
    """
    folder = Path(folder)
    plots = {}
    if train is not None and synthetic is not None:
        plots = plot_columns(train, synthetic, report["kinds"], folder / "plots")
    report["plots"] = plots
    write_json(folder / "report.json", report)
    atomic_write_text(folder / "report.md", markdown(report, plots))
    return folder / "report.md"
