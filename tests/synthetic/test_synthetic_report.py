"""Each report metric against a small case worked out by hand; the files the report writes."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict
from sklearn.linear_model import LogisticRegression

from lit_dl.callbacks.synthetic_report import stratified_sample
from lit_dl.cli import CONFIG_DIR
from lit_dl.evaluation.synthetic import build_report, fidelity, write_report
from lit_dl.evaluation.synthetic.efficacy import ml_efficacy
from lit_dl.evaluation.synthetic.features import BenchmarkScaler
from lit_dl.evaluation.synthetic.fidelity import (
    categorical_shape,
    column_kinds,
    contingency_similarity,
    correlation_similarity,
    numeric_shape,
)
from lit_dl.evaluation.synthetic.privacy import exact_copies, privacy
from lit_dl.evaluation.synthetic.render import markdown, number, summary_lines


def test_numeric_shape_is_one_minus_ks() -> None:
    # ECDFs differ most just below 10: real has all 4 values <= 4, synthetic 3 of 4 -> KS 0.25.
    assert numeric_shape(pd.Series([1.0, 2, 3, 4]), pd.Series([1.0, 2, 3, 10])) == pytest.approx(0.75)
    assert numeric_shape(pd.Series([1.0, 2, np.nan]), pd.Series([1.0, 2])) == pytest.approx(
        1.0
    )  # gaps ignored


def test_categorical_shape_is_one_minus_tvd_with_missing_as_a_category() -> None:
    # p = (a .5, b .5), q = (a .75, b .25): TVD = (.25 + .25) / 2 = .25.
    assert categorical_shape(pd.Series(list("aabb")), pd.Series(list("aaab"))) == pytest.approx(0.75)
    # p = (a .5, missing .5), q = (a 1): TVD .5.
    assert categorical_shape(pd.Series(["a", None, "a", None]), pd.Series(["a"] * 4)) == pytest.approx(0.5)


def test_correlation_similarity() -> None:
    real = pd.DataFrame({"x": [1.0, 2, 3, 4], "y": [2.0, 4, 6, 8]})  # r = 1
    flipped = pd.DataFrame({"x": [1.0, 2, 3, 4], "y": [8.0, 6, 4, 2]})  # r = -1
    assert correlation_similarity(real, flipped, "x", "y") == pytest.approx(0.0)
    assert correlation_similarity(real, real, "x", "y") == pytest.approx(1.0)


def test_contingency_similarity() -> None:
    kinds = {"a": "categorical", "b": "categorical"}
    real = pd.DataFrame({"a": list("xxyy"), "b": list("uuvv")})  # xu .5, yv .5
    half = pd.DataFrame({"a": list("xxyy"), "b": list("uuuv")})  # xu .5, yu .25, yv .25
    assert contingency_similarity(real, half, "a", "b", kinds) == pytest.approx(0.75)
    swapped = pd.DataFrame({"a": list("xxyy"), "b": list("vvuu")})
    assert contingency_similarity(real, swapped, "a", "b", kinds) == pytest.approx(0.0)


def test_exact_copies_count_rows_equal_in_every_column() -> None:
    kinds = {"n": "numeric", "c": "categorical"}
    train = pd.DataFrame({"n": [1.0, 2.0, np.nan], "c": ["a", "b", None]})
    other = pd.DataFrame({"n": [1.0, 2.0, np.nan, 1.0], "c": ["a", "a", None, "a"]})
    assert exact_copies(train, other, kinds) == 3  # (1, a) twice and (missing, missing)


def test_privacy_distances_by_hand() -> None:
    kinds = {"x": "numeric"}
    train = pd.DataFrame({"x": [0.0, 10.0]})  # min-max scaled to 0 and 1
    holdout = pd.DataFrame({"x": [4.0, 6.0]})  # 0.4 and 0.6: 0.4 from training either way
    synthetic = pd.DataFrame({"x": [0.0, 9.0]})  # 0 and 0.1 from training; 0.4 and 0.3 from held-out rows
    result = privacy(train, synthetic, holdout, kinds)
    assert result["dcr_synthetic"]["median"] == pytest.approx(0.05)
    assert result["dcr_holdout"]["median"] == pytest.approx(0.4)
    assert result["closer_to_train_share"] == pytest.approx(1.0)
    assert result["exact_copies"] == 1
    assert result["dcr_no_closer_direct"] is False and result["no_closer_like_with_like"] is False
    assert result["no_closer_than_holdout"] is False
    far = pd.DataFrame({"x": [5.0, 5.0]})  # 0.5 from training, 0.1 from held-out rows
    far_result = privacy(train, far, holdout, kinds)
    assert far_result["dcr_no_closer_direct"] is True  # 0.5 against the held-out rows' 0.4
    assert far_result["no_closer_than_holdout"] is True


def test_ml_efficacy_tstr_against_trtr() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, 200)
    real = pd.DataFrame({"x": x, "y": np.where(x > 0, "pos", "neg")})
    holdout = real.sample(80, random_state=1)
    wrong = real.assign(y=np.where(real["x"] > 0, "neg", "pos"))  # a generator that flipped the label
    kinds = {"x": "numeric", "y": "categorical"}
    result = ml_efficacy(real, wrong, holdout, "y", "pos", kinds, {"lr": LogisticRegression()})
    assert result["classifiers"]["lr"]["trtr"]["f1"] == pytest.approx(1.0)
    assert result["classifiers"]["lr"]["trtr"]["auroc"] == pytest.approx(1.0)
    assert result["classifiers"]["lr"]["tstr"]["f1"] == pytest.approx(0.0)
    assert result["classifiers"]["lr"]["tstr"]["auroc"] == pytest.approx(0.0)
    assert result["mean"]["tstr"]["f1"] == pytest.approx(0.0)
    one_class = real.assign(y="neg")
    assert ml_efficacy(real, one_class, holdout, "y", "pos", kinds, {"lr": LogisticRegression()})["mean"][
        "tstr"
    ]["f1"] == pytest.approx(0.0)


def small_tables() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(3)

    def table(n: int) -> pd.DataFrame:
        x = rng.normal(0, 1, n)
        return pd.DataFrame(
            {
                "id": np.arange(n),
                "x": np.round(x, 6),
                "plan": rng.choice(["a", "b", "c"], n),
                "y": np.where(x + rng.normal(0, 0.5, n) > 0, "yes", "no"),
            }
        )

    return table(120), table(100), table(60)


def test_fidelity_pairs_are_the_contingency_and_correlation_similarities() -> None:
    """The report's fast pair scores (integer codes, scored every validation epoch) equal the plain ones."""
    train, synthetic, _ = small_tables()
    train = train.assign(z=train["x"] * 2 + 1, plan=train["plan"].where(train.index % 7 > 0))  # gaps too
    synthetic = synthetic.assign(z=-synthetic["x"], plan=synthetic["plan"].where(synthetic.index % 5 > 0))
    kinds = column_kinds(train.drop(columns="id"), ["y"])
    pairs = fidelity(train, synthetic, kinds)["column_pairs"]
    assert len(pairs) == 6
    for pair in pairs:
        a, b = pair["columns"]
        plain = (
            correlation_similarity(train, synthetic, a, b)
            if pair["metric"] == "correlation"
            else contingency_similarity(train, synthetic, a, b, kinds)
        )
        assert pair["score"] == pytest.approx(plain, abs=1e-12), pair
    assert {p["metric"] for p in pairs} == {"correlation", "contingency"}


def test_classifier_features_follow_the_benchmark() -> None:
    """SDGym's features: log of never-negative columns that reach 1000, else min-max scaled to [0, 5]."""
    wide = np.array([0.0, 10.0, 5000.0])
    narrow = np.array([-1.0, 0.0, 3.0])
    scaled = BenchmarkScaler().fit(np.c_[wide, narrow]).transform(np.c_[wide, narrow])
    np.testing.assert_allclose(scaled[:, 0], np.log([1e-2, 10.0, 5000.0]))
    np.testing.assert_allclose(scaled[:, 1], [0.0, 1.25, 5.0])


def test_stratified_sample_draws_each_class_at_its_training_rate() -> None:
    class Conditional:
        def sample(self, n: int, condition: str, generator: object = None) -> pd.DataFrame:
            name, _, value = condition.partition("=")
            return pd.DataFrame({name: [value] * n, "x": np.arange(n)})

    labels = pd.Series([">50K"] * 24 + ["<=50K"] * 76, name="income")
    sample = stratified_sample(Conditional(), labels, 37, torch.Generator())
    assert len(sample) == 37 and sample["income"].eq(">50K").sum() == 8  # floor(8.88); the rest to <=50K
    blocks = (sample["income"] != sample["income"].shift()).sum()
    assert blocks > 2  # shuffled, not one block per class (classifiers and plots see mixed rows)


def test_report_writes_json_markdown_and_plots(tmp_path: Path) -> None:
    train, synthetic, holdout = small_tables()
    report = build_report(
        train, synthetic, holdout, target="y", ignore=["id"], classifiers={"lr": LogisticRegression()}
    )
    assert set(report["fidelity"]["column_shapes"]) == {"x", "plan", "y"}
    assert len(report["fidelity"]["column_pairs"]) == 3
    assert report["ml_efficacy"]["positive_label"] in ("yes", "no")
    path = write_report(report, tmp_path, train, synthetic)
    assert json.loads((tmp_path / "report.json").read_text())["privacy"]["exact_copies"] == 0
    text = path.read_text()
    assert "TSTR" in text and "Verdict" in text and "plots/x.png" in text
    assert {p.name for p in (tmp_path / "plots").glob("*.png")} == {"x.png", "plan.png", "y.png"}
    assert report["plots"] == {name: f"plots/{name}.png" for name in ("x", "plan", "y")}  # for the loggers


def test_report_verb_reads_files_and_aligns_held_out_labels(tmp_path: Path) -> None:
    from lit_dl.verbs.report import report

    train, synthetic, holdout = small_tables()
    train.to_csv(tmp_path / "real.csv", index=False, header=False)
    holdout.assign(y=holdout["y"] + ".").to_csv(tmp_path / "test.csv", index=False, header=False)  # "yes."
    synthetic.to_csv(tmp_path / "synthetic.csv", index=False)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            "report",
            overrides=[
                f"real={tmp_path / 'real.csv'}",
                f"synthetic={tmp_path / 'synthetic.csv'}",
                f"holdout={tmp_path / 'test.csv'}",
                "target=y",
                "positive_label=yes",
                "drop=[id]",
                "column_names=[id,x,plan,y]",
            ],
        )
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "out")
    result = report(cfg)
    assert result["ml_efficacy"]["mean"]["trtr"]["f1"] > 0.7  # labels of the held-out file matched
    assert (tmp_path / "out" / "report.md").is_file()


def test_numbers_never_show_a_signed_zero() -> None:
    assert [number(v) for v in (-0.0004, -0.0, 0.0, -0.5, 0.1234)] == [
        "0.000",
        "0.000",
        "0.000",
        "-0.500",
        "0.123",
    ]
    assert number(-0.00001, ".1%") == "0.0%" and number(-1e-9, ".4f") == "0.0000"
    assert [number(v) for v in (float("nan"), float("-inf"))] == ["nan", "-inf"]
    train, synthetic, holdout = small_tables()
    report = build_report(
        train, synthetic, holdout, target="y", ignore=["id"], classifiers={"lr": LogisticRegression()}
    )
    report["fidelity"]["column_shapes"]["x"] = -1e-9  # rounding noise below zero
    report["privacy"]["dcr_synthetic"]["p05"] = -1e-12
    text = markdown(report, {})
    assert "-0.0" not in text and "| x | numeric | 0.000 |" in text


def test_the_reports_fidelity_is_named_by_the_rows_it_compares_with() -> None:
    """The run's test/fidelity compares a sample with the test rows; the report's with the training rows."""
    train, synthetic, _ = small_tables()
    report = build_report(train, synthetic, ignore=["id"])
    kinds = column_kinds(train.drop(columns="id"))
    assert report["fidelity"]["score"] == fidelity(train, synthetic, kinds)["score"]
    assert report["fidelity"]["compared_with"] == "training rows"
    headline = summary_lines(report)[0]
    assert headline.startswith(f"fidelity to the training rows {report['fidelity']['score']:.3f} (")
    assert headline.endswith("100 synthetic rows against 120)")
    assert "## Fidelity to the training rows" in markdown(report, {})


def test_report_verb_leaves_out_id_like_columns_in_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from lit_dl.verbs.report import report

    train, synthetic, _ = small_tables()
    keys = {"key": lambda frame: [f"K{i:05d}-{len(frame)}" for i in range(len(frame))]}
    train, synthetic = train.assign(**keys), synthetic.assign(**keys)
    train.to_csv(tmp_path / "real.csv", index=False)
    synthetic.to_csv(tmp_path / "synthetic.csv", index=False)

    def run(*overrides: str) -> dict:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(
                "report",
                overrides=[
                    f"real={tmp_path / 'real.csv'}",
                    f"synthetic={tmp_path / 'synthetic.csv'}",
                    *overrides,
                ],
            )
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / f"out_{len(list(tmp_path.glob('out_*')))}")
        return report(cfg)

    with caplog.at_level(logging.WARNING, logger="lit_dl.verbs.report"):
        result = run()  # drop=auto: the distinct whole numbers and the text keys are left out
    assert set(result["kinds"]) == {"x", "plan", "y"}
    lines = [r.getMessage() for r in caplog.records if r.name == "lit_dl.verbs.report"]
    assert len(lines) == 1 and lines[0].startswith("report: left out id-like column(s) id, key (")
    assert "drop=[] keeps every column" in lines[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lit_dl.verbs.report"):
        assert set(run("drop=[]")["kinds"]) == {"id", "x", "plan", "y", "key"}  # kept as asked
        assert set(run("drop=[key]")["kinds"]) == {"id", "x", "plan", "y"}  # exactly the listed ones
    assert not [r for r in caplog.records if r.name == "lit_dl.verbs.report"]


def test_summary_lines_are_filled_in() -> None:
    """Every figure of the printed summary is formatted (no template text such as ``{number(...)}``)."""
    train, synthetic, holdout = small_tables()
    report = build_report(train, synthetic, holdout, ignore=["id"])
    lines = summary_lines(report)
    privacy_line = next(line for line in lines if line.startswith("privacy:"))
    median = report["privacy"]["dcr_synthetic"]["median"]
    assert f"synthetic {number(median)}," in privacy_line
    assert not any("{" in line or "}" in line for line in lines)
