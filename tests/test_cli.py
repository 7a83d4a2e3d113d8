"""End-to-end tests of the ``lit-dl`` verbs, driven through the real CLI entry point."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch

from lit_dl.cli import main
from lit_dl.data.churn import make_churn_frame
from lit_dl.nets import TabularMLP

EPOCHS = 3
SMALL = [
    "data.n_rows=1000",
    f"trainer.max_epochs={EPOCHS}",
    "callbacks.progress_bar=null",
    "callbacks.model_summary=null",
]


def run_cli(*args: str) -> None:
    main(list(args))


@pytest.fixture
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "train"
    run_cli("train", *SMALL, f"hydra.run.dir={run_dir}")
    return run_dir


def test_train_writes_outputs_and_eval_reproduces_test_metrics(trained_run: Path, tmp_path: Path) -> None:
    metrics = json.loads((trained_run / "metrics.json").read_text())
    for name in ("test/auroc", "test/accuracy", "test/f1", "test/precision", "test/recall", "val/loss"):
        assert isinstance(metrics[name], float) and math.isfinite(metrics[name])
    assert all(isinstance(v, float) for v in metrics.values())  # flat name -> number
    assert 0.6 < metrics["test/auroc"] <= 1.0  # churn is learnable from these features
    assert (trained_run / "config.yaml").is_file()
    best, last = trained_run / "checkpoints" / "best.ckpt", trained_run / "checkpoints" / "last.ckpt"
    assert best.is_file() and last.is_file()

    # The checkpoint holds only plain data: it loads with weights_only and carries the preprocessing.
    checkpoint = torch.load(best, weights_only=True)
    assert checkpoint["lit_dl"]["datamodule"] == "lit_dl.data.churn_datamodule.ChurnDataModule"
    assert checkpoint["ChurnDataModule"]["preprocessor"]["numeric"]

    eval_dir = tmp_path / "eval"
    run_cli("eval", f"ckpt_path={best}", f"hydra.run.dir={eval_dir}")
    evaluated = json.loads((eval_dir / "metrics.json").read_text())
    for name, value in evaluated.items():
        assert value == pytest.approx(metrics[name], abs=1e-6), name


def test_predict_applies_saved_preprocessing(trained_run: Path, tmp_path: Path) -> None:
    new_rows = make_churn_frame(60, seed=7).drop(columns=["churn"])
    new_rows.loc[0, "contract"] = "Three year"  # a category never seen in training
    new_rows.loc[1, "monthly_charges"] = float("nan")
    source = tmp_path / "new.csv"
    new_rows.to_csv(source, index=False)
    output = tmp_path / "out" / "predictions.csv"
    run_cli(
        "predict",
        f"ckpt_path={trained_run / 'checkpoints' / 'best.ckpt'}",
        f"input={source}",
        f"output={output}",
        f"hydra.run.dir={tmp_path / 'predict'}",
    )
    predictions = pd.read_csv(output)
    assert len(predictions) == len(new_rows)
    assert list(predictions.columns) == ["customer_id", "prob_No", "prob_Yes", "prediction"]
    assert predictions["customer_id"].tolist() == new_rows["customer_id"].tolist()
    assert (predictions["prob_No"] + predictions["prob_Yes"]).to_numpy() == pytest.approx(1.0, abs=1e-5)
    checkpoint = torch.load(trained_run / "checkpoints" / "best.ckpt", weights_only=True)
    threshold = float(checkpoint["state_dict"]["decision_threshold"])  # chosen on validation
    expected = (predictions["prob_Yes"] > threshold).map({True: "Yes", False: "No"})
    assert predictions["prediction"].tolist() == expected.tolist()

    parquet = tmp_path / "predictions.parquet"
    run_cli(
        "predict",
        f"ckpt_path={trained_run / 'checkpoints' / 'last.ckpt'}",
        f"input={source}",
        f"output={parquet}",
        f"hydra.run.dir={tmp_path / 'predict2'}",
    )
    assert len(pd.read_parquet(parquet)) == len(new_rows)


def test_train_on_user_csv_regression(tmp_path: Path) -> None:
    frame = make_churn_frame(400, seed=1)
    frame["value"] = frame["monthly_charges"] * 2 + frame["tenure_months"]
    source = tmp_path / "table.parquet"
    frame.to_parquet(source, index=False)
    run_dir = tmp_path / "run"
    run_cli(
        "train",
        "data=tabular",
        f"data.path={source}",
        "data.target=value",
        "data.drop=[customer_id,churn]",
        "model=mlp_regressor",
        "trainer.max_epochs=3",
        "callbacks.progress_bar=null",
        f"hydra.run.dir={run_dir}",
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"test/mse", "test/rmse", "test/mae", "test/r2"} <= set(metrics)
    assert metrics["test/rmse"] == pytest.approx(math.sqrt(metrics["test/mse"]), rel=1e-4)


def test_classifier_on_regression_data_is_rejected(fail_cli: Callable[..., str], tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": range(100), "y": [i * 0.37 for i in range(100)]})
    frame.to_csv(tmp_path / "t.csv", index=False)
    line = fail_cli(
        "train",
        "data=tabular",
        f"data.path={tmp_path / 't.csv'}",
        "data.target=y",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert "regression" in line and "model=mlp_regressor" in line


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["trainer.max_epchs=3"], "unknown config key 'trainer.max_epchs'"),
        (["model=transformer"], "no config 'transformer' in group 'model'"),
        (["trainer.max_epochs=ten"], "'trainer.max_epochs' expects an integer"),
        (["data=tabular"], "data.path"),
        (["data=tabular", "data.path={tmp}/missing.csv", "data.target=churn"], "data file not found"),
        (["data=tabular", "data.path={tmp}/empty.csv", "data.target=churn"], "empty"),
        (["data=tabular", "data.path={tmp}/good.csv", "data.target=nope"], "target column 'nope' not in"),
        (["data=tabular", "data.path={tmp}/oneclass.csv", "data.target=churn"], "single class"),
        (["ckpt_path={tmp}/corrupt.ckpt"], "corrupted"),
    ],
)
def test_bad_input_one_line_and_no_run_left(
    fail_cli: Callable[..., str], tmp_path: Path, overrides: list[str], expected: str
) -> None:
    (tmp_path / "empty.csv").write_text("")
    good = make_churn_frame(100, seed=0)
    good.to_csv(tmp_path / "good.csv", index=False)
    good.assign(churn="No").to_csv(tmp_path / "oneclass.csv", index=False)
    (tmp_path / "corrupt.ckpt").write_bytes(b"PK\x03\x04 this is not a checkpoint")
    overrides = [o.format(tmp=tmp_path) for o in overrides]
    run_dir = tmp_path / "run"
    line = fail_cli("train", *overrides, f"hydra.run.dir={run_dir}")
    assert expected in line
    assert not run_dir.exists()  # nothing left that looks like a run


def test_eval_of_corrupted_checkpoint(fail_cli: Callable[..., str], tmp_path: Path) -> None:
    ckpt = tmp_path / "broken.ckpt"
    ckpt.write_bytes(b"\x00" * 64)
    assert "corrupted" in fail_cli("eval", f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'e'}")
    assert "not found" in fail_cli(
        "eval", f"ckpt_path={tmp_path / 'nope.ckpt'}", f"hydra.run.dir={tmp_path / 'e'}"
    )


class NaNAfterSteps(TabularMLP):
    """A TabularMLP whose training outputs turn NaN after ``steps`` forward passes (to test divergence)."""

    def __init__(self, *args, steps: int = 10, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.steps = steps
        self.calls = 0

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor | None = None) -> torch.Tensor:
        out = super().forward(x_num, x_cat)
        if self.training:
            self.calls += 1
            if self.calls > self.steps:
                return out * float("nan")
        return out


def test_nan_loss_stops_run_and_keeps_earlier_checkpoints(
    fail_cli: Callable[..., str], tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    # 420 training rows / 64 per batch = 7 steps per epoch: epochs 0 and 1 finish, epoch 2 diverges.
    line = fail_cli(
        "train",
        "data.n_rows=600",
        "data.batch_size=64",
        "trainer.max_epochs=5",
        f"model.net._target_={__name__}.NaNAfterSteps",
        "+model.net.steps=16",
        f"allow_targets=[{__name__.split('.')[0]}]",
        "callbacks.progress_bar=null",
        f"hydra.run.dir={run_dir}",
    )
    assert "nan" in line.lower() and "epoch 2" in line
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values() if t.is_floating_point())
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert not (run_dir / "metrics.json").exists()


def test_console_script_reports_errors_without_traceback(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("lit-dl")
    result = subprocess.run(
        [str(script), "train", "trainer.bogus=1"], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "unknown config key 'trainer.bogus'" in result.stderr
    assert not (tmp_path / "logs").exists()


def test_all_loggers_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = tmp_path / "run"
    run_cli(
        "train",
        "debug=limit",
        "logger=[csv,tensorboard,wandb]",
        "logger.wandb.offline=true",
        "callbacks.progress_bar=null",
        f"hydra.run.dir={run_dir}",
    )
    assert "val/loss" in (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    offline_runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1 and list(offline_runs[0].glob("run-*.wandb"))


@pytest.mark.parametrize(
    "overrides", [["trainer.precision=bf16-mixed"], ["data.categorical_encoding=embedding"]]
)
def test_train_variants_run(overrides: list[str], tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_cli(
        "train",
        "debug=limit",
        "data.n_rows=600",
        *overrides,
        "callbacks.progress_bar=null",
        f"hydra.run.dir={run_dir}",
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert math.isfinite(metrics["test/loss"]) and 0.0 <= metrics["test/auroc"] <= 1.0


def test_resume_from_last_checkpoint(trained_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "resumed"
    run_cli(
        "train",
        *SMALL[:1],
        f"trainer.max_epochs={EPOCHS + 1}",
        "callbacks.progress_bar=null",
        f"ckpt_path={trained_run / 'checkpoints' / 'last.ckpt'}",
        f"hydra.run.dir={run_dir}",
    )
    first = torch.load(trained_run / "checkpoints" / "last.ckpt", weights_only=True)
    resumed = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert (first["epoch"], resumed["epoch"]) == (EPOCHS - 1, EPOCHS)  # continued where the first run stopped
    assert resumed["global_step"] == first["global_step"] * (EPOCHS + 1) // EPOCHS


def test_metrics_json_describes_the_best_checkpoint(trained_run: Path) -> None:
    metrics = json.loads((trained_run / "metrics.json").read_text())
    checkpoint = torch.load(trained_run / "checkpoints" / "best.ckpt", weights_only=True)
    state = next(v for k, v in checkpoint["callbacks"].items() if k.startswith("ModelCheckpoint"))
    assert metrics["val/loss"] == pytest.approx(float(state["best_model_score"]), abs=1e-6)
    assert not [k for k in metrics if not k.startswith(("val/", "test/"))]


def test_library_errors_are_one_line_too(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "train",
                "debug=limit",
                "data.n_rows=300",
                "model.optimizer.lr=-1",
                f"hydra.run.dir={tmp_path / 'r'}",
            ]
        )
    # The optimiser's own ValueError, reported as a config error that names the key (exit 2).
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [err.strip()]
    assert "model.optimizer" in err and "learning rate" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_eval_on_another_labelled_file_and_predict_writes_config(trained_run: Path, tmp_path: Path) -> None:
    holdout = tmp_path / "holdout.csv"
    make_churn_frame(300, seed=11).to_csv(holdout, index=False)
    best = trained_run / "checkpoints" / "best.ckpt"
    run_cli("eval", f"ckpt_path={best}", f"data.test_path={holdout}", f"hydra.run.dir={tmp_path / 'e'}")
    assert (tmp_path / "e" / "plots" / "confusion_matrix.png").is_file()
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    original = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["test/auroc"] != original["test/auroc"]  # another test set, another number
    run_cli(
        "predict",
        f"ckpt_path={best}",
        f"input={holdout}",
        f"output={tmp_path / 'p.csv'}",
        f"hydra.run.dir={tmp_path / 'p'}",
    )
    assert (tmp_path / "p" / "config.yaml").is_file()
    assert len(pd.read_csv(tmp_path / "p.csv")) == 300


def test_table_quirks_excel_bom_decimal_commas_bare_list(tmp_path: Path) -> None:
    frame = make_churn_frame(400, seed=2)
    source = tmp_path / "excel.csv"
    frame.to_csv(source, index=False, sep=";", decimal=",", encoding="utf-8-sig")
    run_dir = tmp_path / "run"
    run_cli(
        "train",
        "data=tabular",
        f"data.path={source}",
        "data.target=churn",
        "data.drop=customer_id",
        "debug=limit",
        "callbacks.progress_bar=null",
        f"hydra.run.dir={run_dir}",
    )
    checkpoint = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    preprocessor = checkpoint["TabularDataModule"]["preprocessor"]
    assert "monthly_charges" in preprocessor["numeric"]  # "29,85" read as 29.85
    assert "customer_id" not in preprocessor["numeric"] + preprocessor["categorical"]


def test_last_checkpoint_is_the_latest_epoch_even_when_the_best_is_older(tmp_path: Path) -> None:
    # Lightning 2.6 refreshes ModelCheckpoint's own last.ckpt only when the best one improves; a run
    # whose best is its first epoch (here: "best" = highest validation loss) must still resume from
    # its latest epoch.
    run_dir = tmp_path / "run"
    run_cli(
        "train",
        *SMALL,
        "callbacks.model_checkpoint.mode=max",
        "callbacks.early_stopping=null",
        f"hydra.run.dir={run_dir}",
    )
    best = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert best["epoch"] < last["epoch"] == EPOCHS - 1  # (a checkpoint's epoch counts epochs done)
