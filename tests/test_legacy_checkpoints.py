"""Checkpoints written by lit_dl 0.1.0 still load in eval, predict and sample, with the same numbers.

The fixtures and what 0.1.0 computed from them are in tests/fixtures/checkpoints/v0.1.0 (its
README says how they were made).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from lit_dl.checkpoints import FORMAT, read_checkpoint, restore
from lit_dl.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "checkpoints" / "v0.1.0"
SERIES = FIXTURES / "forecast_series.csv"
PREDICT_INPUTS = {
    "churn_mlp": "inputs/churn_rows.csv",
    "churn_regression": "inputs/churn_rows_regression.csv",
    "digits_cnn": "inputs/digits",
    "churn_lstm": "inputs/activity.csv",
    "forecast_lstm": "forecast_series.csv",
}
# Their metrics come from seeded random draws (posterior samples, fake images, sampled rows).
DRAWN = {"digits_vae", "digits_gan", "churn_tvae", "churn_ctgan"}
ALL = sorted(p.stem for p in FIXTURES.glob("*.ckpt"))


def test_every_family_has_a_fixture() -> None:
    assert set(ALL) == set(PREDICT_INPUTS) | DRAWN | {"text_lstm"}


@pytest.mark.parametrize("name", ALL)
def test_legacy_checkpoint_restores_model_and_data(name: str) -> None:
    checkpoint = read_checkpoint(FIXTURES / f"{name}.ckpt")
    assert checkpoint["lit_dl"]["version"] == "0.1.0" and "format" not in checkpoint["lit_dl"]
    overrides = {"path": str(SERIES)} if name == "forecast_lstm" else {}
    model, datamodule = restore(FIXTURES / f"{name}.ckpt", overrides)
    spec = datamodule.data_spec()
    assert model.data_spec == spec
    # Nothing of the data is left among the task's hyperparameters.
    assert not {"input_spec", "class_names", "transform", "vocabulary"} & set(model.hparams)


@pytest.mark.parametrize("name", ALL)
def test_legacy_eval_reproduces_its_metrics(name: str, tmp_path: Path) -> None:
    if name == "text_lstm" and sys.version_info[:3] != (3, 11, 7):
        pytest.skip("the built-in text is this Python's own pydoc topics (fixture made on 3.11.7)")
    extra = [f"data.path={SERIES}"] if name == "forecast_lstm" else []
    if name in ("churn_tvae", "churn_ctgan"):
        extra.append("callbacks.table_fidelity.rows=200")  # 0.1's model.fidelity_rows of these fixtures
    run = tmp_path / "eval"
    main(
        [
            "eval",
            f"ckpt_path={FIXTURES / f'{name}.ckpt'}",
            "logger=csv",
            "callbacks.progress_bar=null",
            *extra,
            f"hydra.run.dir={run}",
        ]
    )
    expected = json.loads((FIXTURES / f"{name}.eval_metrics.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) >= set(expected)
    # rel 1e-4: float32 sums of a CNN's convolutions differ by ~1e-5 between installs of the same
    # torch; a migration that lost or changed a weight moves these metrics by far more. A VAE's test
    # loss is a one-draw Monte-Carlo ELBO from the global random stream, which 0.1's evaluation
    # loaders also drew from (a DataLoader takes a number for its workers) and today's do not: 1%.
    rel = 1e-2 if name in DRAWN else 1e-4
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, rel=rel, abs=1e-6, nan_ok=True), key


@pytest.mark.parametrize("name", sorted(PREDICT_INPUTS))
def test_legacy_predict_writes_the_same_predictions(name: str, tmp_path: Path) -> None:
    out = tmp_path / "predictions.csv"
    main(
        [
            "predict",
            f"ckpt_path={FIXTURES / f'{name}.ckpt'}",
            f"input={FIXTURES / PREDICT_INPUTS[name]}",
            f"output={out}",
            f"hydra.run.dir={tmp_path / 'p'}",
        ]
    )
    expected = pd.read_csv(FIXTURES / f"{name}.predictions.csv")
    got = pd.read_csv(out)
    if name == "digits_cnn":  # file names are absolute paths of the machine that wrote them
        expected["file"] = expected["file"].map(lambda f: Path(f).name)
        got["file"] = got["file"].map(lambda f: Path(f).name)
    pd.testing.assert_frame_equal(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "output"),
    [("digits_vae", "pt"), ("digits_gan", "pt"), ("churn_tvae", "csv"), ("churn_ctgan", "csv")],
)
def test_legacy_generators_sample(name: str, output: str, tmp_path: Path) -> None:
    out = tmp_path / f"samples.{output}"
    main(
        [
            "sample",
            f"ckpt_path={FIXTURES / f'{name}.ckpt'}",
            "seed=0",
            "n=8",
            f"output={out}",
            f"hydra.run.dir={tmp_path / 's'}",
        ]
    )
    expected_path = FIXTURES / f"{name}.samples.{output}"
    if output == "pt":
        torch.testing.assert_close(
            torch.load(out, weights_only=True), torch.load(expected_path, weights_only=True)
        )
    else:
        pd.testing.assert_frame_equal(pd.read_csv(out), pd.read_csv(expected_path), rtol=1e-5)


def test_legacy_text_model_samples_the_same_text(tmp_path: Path) -> None:
    out = tmp_path / "samples.txt"
    main(
        [
            "sample",
            f"ckpt_path={FIXTURES / 'text_lstm.ckpt'}",
            "seed=0",
            'prompt="The "',
            "length=50",
            f"output={out}",
            f"hydra.run.dir={tmp_path / 's'}",
        ]
    )
    assert out.read_text(encoding="utf-8") == (FIXTURES / "text_lstm.samples.txt").read_text(encoding="utf-8")


def test_checkpoint_of_a_newer_release_says_how_to_read_it(tmp_path: Path, fail_cli) -> None:
    checkpoint = torch.load(FIXTURES / "churn_mlp.ckpt", weights_only=True)
    checkpoint["lit_dl"] = {**checkpoint["lit_dl"], "version": "9.0.0", "format": FORMAT + 1}
    path = tmp_path / "future.ckpt"
    torch.save(checkpoint, path)
    line = fail_cli("eval", f"ckpt_path={path}", f"hydra.run.dir={tmp_path / 'e'}")
    assert "lit_dl 9.0.0" in line and "upgrade lit_dl" in line


def test_legacy_checkpoint_resumes_training(tmp_path: Path) -> None:
    """Resuming a 0.1.0 checkpoint continues its epochs with the current code."""
    ckpt = tmp_path / "churn_mlp.ckpt"
    shutil.copy(FIXTURES / "churn_mlp.ckpt", ckpt)
    run = tmp_path / "resumed"
    main(
        [
            "train",
            f"ckpt_path={ckpt}",
            "trainer.max_epochs=2",
            "debug=limit",
            "callbacks.progress_bar=null",
            f"hydra.run.dir={run}",
        ]
    )
    assert read_checkpoint(ckpt)["epoch"] == 0  # the fixture ran one epoch
    # Only epoch 1 was trained here: the loop counters came from the 0.1.0 checkpoint.
    history = pd.read_csv(run / "csv" / "metrics.csv")
    assert set(history.dropna(subset=["train/loss_epoch"])["epoch"]) == {1}
    assert read_checkpoint(run / "checkpoints" / "last.ckpt")["epoch"] == 1
    assert math.isfinite(json.loads((run / "metrics.json").read_text())["test/auroc"])
