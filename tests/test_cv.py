"""``lit-dl cv``: the config composes train's, every fold is a train run, the summary, failures, workers.

(How each kind of data is cut into folds is tested with its datamodule: tests/data/test_tabular.py,
test_sequences.py and test_forecast.py.)
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from lit_dl import checkpoints
from lit_dl.cli import CONFIG_DIR, main
from lit_dl.errors import TrainingError
from lit_dl.verbs import cv

TINY = [
    "data.n_rows=300",
    "trainer.max_epochs=1",
    "callbacks.progress_bar=null",
    "callbacks.model_summary=null",
    "callbacks.plots=null",
]


def test_cv_config_is_train_config_with_a_cv_node() -> None:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        default = compose("cv")
        train = compose("train")
        lstm = compose("cv", overrides=["experiment=churn_lstm", "cv.folds=3", "trainer.max_epochs=2"])
        table = compose("cv", overrides=["data=tabular", "model=mlp_regressor", "data.path=x.csv"])
    assert default.task_name == "cv" and default.cv.folds == 5 and default.cv.parallel == 1
    assert default.data == train.data and default.model == train.model and default.trainer == train.trainer
    assert lstm.data._target_ == "lit_dl.data.ActivitySequenceDataModule" and lstm.tags == [
        "churn",
        "sequences",
        "lstm",
    ]
    assert lstm.cv.folds == 3 and lstm.trainer.max_epochs == 2
    assert table.data._target_ == "lit_dl.data.TabularDataModule" and table.model._target_.endswith(
        "RegressionTask"
    )
    assert table.data.cv_folds is None and table.data.cv_fold is None  # off unless cv sets them


def test_cv_trains_every_fold_and_writes_mean_std_and_folds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], one_thread: None
) -> None:
    real_job = cv.train_job

    def fold_1_fails(cfg: Any, output_dir: Any, updates: dict, *args: Any) -> dict[str, float]:
        if updates["+data.cv_fold"] == 1:
            raise TrainingError("the loss became NaN at step 3")
        return real_job(cfg, output_dir, updates, *args)

    monkeypatch.setattr(cv, "train_job", fold_1_fails)
    run = tmp_path / "cv"
    main(["cv", *TINY, "cv.folds=3", f"hydra.run.dir={run}"])
    out = capsys.readouterr().out

    # A failed fold is one line; the others are complete train runs.
    assert "fold 1 failed: the loss became NaN at step 3" in out
    assert "2 of 3 folds completed" in out
    per_fold = {i: json.loads((run / f"fold_{i}" / "metrics.json").read_text()) for i in (0, 2)}
    assert not (run / "fold_1" / "metrics.json").exists()

    summary = json.loads((run / "metrics.json").read_text())
    assert {"test/auroc", "test/loss", "val/loss"} <= set(summary)
    for name, entry in summary.items():
        values = [per_fold[0][name], per_fold[2][name]]
        assert entry["folds"] == [values[0], None, values[1]], name
        assert entry["mean"] == pytest.approx(statistics.mean(values)), name
        assert entry["std"] == pytest.approx(statistics.stdev(values)), name  # sample std (n-1)
    assert "cross-validation: 2 of 3 folds" in out and "test/auroc" in out

    folds = pd.read_csv(run / "folds.csv")
    assert folds["fold"].tolist() == [0, 1, 2]
    assert folds["status"].tolist() == ["completed", "failed", "completed"]
    assert folds.loc[1, "error"] == "the loss became NaN at step 3"
    assert folds.loc[2, "test/auroc"] == pytest.approx(per_fold[2]["test/auroc"])

    # The fold's checkpoint carries its fold: eval/predict rebuild that very split from it.
    best = run / "fold_2" / "checkpoints" / "best.ckpt"
    hparams = torch.load(best, weights_only=True)["lit_dl"]["datamodule_hparams"]
    assert (hparams["cv_folds"], hparams["cv_fold"]) == (3, 2)
    _, datamodule = checkpoints.restore(best)
    datamodule.setup("test")
    assert len(datamodule.datasets["test"]) == 100  # fold 2 of 3 of 300 rows


@pytest.mark.slow  # two worker processes each import torch and Lightning (~5 s on a quiet machine)
def test_parallel_workers_give_the_in_process_results(tmp_path: Path, one_thread: None) -> None:
    main(["cv", *TINY, "cv.folds=2", f"hydra.run.dir={tmp_path / 'one'}"])
    main(["cv", *TINY, "cv.folds=2", "cv.parallel=2", f"hydra.run.dir={tmp_path / 'two'}"])
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert one.keys() == two.keys()
    for name in one:
        assert two[name]["folds"] == pytest.approx(one[name]["folds"], abs=1e-6), name
    assert (tmp_path / "two" / "fold_1" / cv.WORKER_LOG).is_file()


def test_every_fold_failing_fails_cv_with_the_first_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_cli: Callable[..., str]
) -> None:
    def always_fails(*args: Any) -> dict[str, float]:
        raise TrainingError("the loss became NaN at step 3")

    monkeypatch.setattr(cv, "train_job", always_fails)
    assert fail_cli("cv", *TINY, "cv.folds=2", f"hydra.run.dir={tmp_path / 'cv'}") == (
        "error: the loss became NaN at step 3"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["cv.folds=1"], "cv.folds must be an integer of at least 2, got 1"),
        (["cv.parallel=0"], "cv.parallel must be an integer of at least 1"),
        (["test=false"], "drop test=false"),
        (["experiment=churn_tvae"], "cv cross-validates supervised models"),
        (["experiment=digits_cnn"], "cv supports tables, sequences and time series"),
    ],
)
def test_settings_cv_cannot_run_are_one_line(
    tmp_path: Path, fail_cli: Callable[..., str], args: list[str], message: str
) -> None:
    line = fail_cli("cv", *args, f"hydra.run.dir={tmp_path / 'cv'}")
    assert message in line
    assert not (tmp_path / "cv").exists()  # nothing was trained, nothing is left


def test_a_fold_out_of_range_is_one_line(tmp_path: Path, fail_cli: Callable[..., str]) -> None:
    line = fail_cli("train", "data.cv_folds=3", "data.cv_fold=3", f"hydra.run.dir={tmp_path / 'train'}")
    assert "data.cv_fold must be one of 0 .. 2 (data.cv_folds=3), got 3" in line
