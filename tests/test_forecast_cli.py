"""The forecasting experiment end to end through the real CLI: train, eval, predict, bad inputs."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lit_dl.cli import main

STEPS, WINDOW, HORIZON, SEASON = 96, 12, 6, 12
PAIRS = [(f"test/{m}", f"test/naive_{m}") for m in ("mae", "rmse", "smape")]


def make_series(steps: int = STEPS) -> pd.DataFrame:
    """Monthly seasonal sine plus trend, positive, with a missing value, like a small sales series."""
    rng = np.random.default_rng(3)
    t = np.arange(steps)
    y = 100.0 + 1.5 * t + 20.0 * np.sin(2 * np.pi * t / SEASON) + rng.normal(0.0, 2.0, steps)
    frame = pd.DataFrame(
        {"month": pd.date_range("2001-01", periods=steps, freq="MS").strftime("%Y-%m"), "sales": y}
    )
    frame.loc[20, "sales"] = np.nan
    return frame


def data_args(path: Path, *extra: str) -> list[str]:
    return [
        "experiment=forecast_lstm",
        f"data.path={path}",
        "data.time_column=month",
        "data.target=sales",
        f"data.window={WINDOW}",
        f"data.horizon={HORIZON}",
        f"data.season={SEASON}",
        *extra,
    ]


FAST = [
    "trainer.max_epochs=3",
    "model.net.hidden_size=8",
    "callbacks.progress_bar=null",
    "callbacks.model_summary=null",
]


@pytest.fixture(scope="module")
def series_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("series") / "sales.csv"
    make_series().to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def trained(series_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A short training run: its directory and what it printed."""
    run_dir = tmp_path_factory.mktemp("runs") / "train"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        main(["train", *data_args(series_csv), *FAST, f"hydra.run.dir={run_dir}"])
    return run_dir, printed.getvalue()


def naive_test_mae(frame: pd.DataFrame) -> float:
    """Seasonal-naive MAE over the test windows, from the file (horizon <= season: one season back)."""
    y = frame["sales"].to_numpy()
    test_start = STEPS - round(0.15 * STEPS)
    errors = [
        abs(y[t + h] - y[t + h - SEASON])
        for t in range(test_start - 1, STEPS - HORIZON)
        for h in range(1, HORIZON + 1)
    ]
    return float(np.mean(errors))


def test_train_writes_model_and_baseline_metrics_side_by_side(trained: tuple[Path, str]) -> None:
    run_dir, printed = trained
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for ours, naive in PAIRS:
        assert math.isfinite(metrics[ours]) and math.isfinite(metrics[naive])
    assert {"val/mae", "val/naive_mae", "val/loss", "test/loss"} <= set(metrics)
    assert metrics["test/naive_mae"] == pytest.approx(naive_test_mae(make_series()), rel=1e-4)
    verdict = "beats" if metrics["test/mae"] < metrics["test/naive_mae"] else "does not beat"
    assert f"LSTM {verdict} seasonal-naive on test MAE: {metrics['test/mae']:.4g} vs" in printed
    checkpoint = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    assert checkpoint["lit_dl"]["datamodule"] == "lit_dl.data.forecast.ForecastDataModule"
    assert len(checkpoint["ForecastDataModule"]["scaler_mean"]) == 1
    assert checkpoint["lit_dl"]["datamodule_hparams"]["horizon"] == HORIZON
    assert "horizon" not in checkpoint["hyper_parameters"]  # data facts live with the datamodule, once


def test_eval_reproduces_and_predict_forecasts_after_the_end(
    trained: tuple[Path, str], series_csv: Path, tmp_path: Path
) -> None:
    run_dir, _ = trained
    best = run_dir / "checkpoints" / "best.ckpt"
    main(["eval", f"ckpt_path={best}", "callbacks.progress_bar=null", f"hydra.run.dir={tmp_path / 'eval'}"])
    original = json.loads((run_dir / "metrics.json").read_text())
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for ours, naive in PAIRS:
        assert evaluated[ours] == pytest.approx(original[ours], abs=1e-5)
        assert evaluated[naive] == pytest.approx(original[naive], abs=1e-5)

    output = tmp_path / "forecast.csv"
    main(
        [
            "predict",
            f"ckpt_path={best}",
            f"input={series_csv}",
            f"output={output}",
            f"hydra.run.dir={tmp_path / 'p'}",
        ]
    )
    forecast = pd.read_csv(output)
    assert list(forecast.columns) == ["month", "horizon", "prediction"]
    assert forecast["month"].tolist() == [f"2009-{m:02d}-01" for m in range(1, HORIZON + 1)]
    assert forecast["horizon"].tolist() == list(range(1, HORIZON + 1))
    assert np.isfinite(forecast["prediction"]).all() and (forecast["prediction"] > 0).all()


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["data.time_column=date"], "time column(s) 'date' not in"),
        (["data.target=revenue"], "target column 'revenue' not in"),
        (["data.window=100"], "fewer than one window needs"),
    ],
)
def test_bad_inputs_fail_in_one_line(
    capsys: pytest.CaptureFixture[str], series_csv: Path, tmp_path: Path, overrides: list[str], expected: str
) -> None:
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *data_args(series_csv), *overrides, f"hydra.run.dir={run_dir}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0] and "Traceback" not in err
    assert not run_dir.exists()
