"""A tabular VAE as an anomaly detector: held-out classes, per-column errors, ``lit-dl predict`` scores."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lit_dl.cli import main
from lit_dl.data.churn import make_churn_frame
from lit_dl.data.spec import DataSpec
from lit_dl.data.synthetic_tables import ChurnSyntheticDataModule
from lit_dl.data.table_transform import TableTransform
from lit_dl.errors import DataError
from lit_dl.tasks.tabular_vae import TabularVAETask

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings(r"ignore:.*isinstance\(treespec, LeafSpec\).*"),
    pytest.mark.filterwarnings("ignore:.*smaller than the logging interval.*"),
]

TINY_VAE = [
    "experiment=churn_tvae",
    "model.net.latent_dim=4",
    "model.net.encoder_sizes=[16]",
    "model.net.decoder_sizes=[16]",
    "trainer.max_epochs=2",
    "data.batch_size=100",
    "data.max_modes=3",
    "callbacks.table_fidelity=null",
    "callbacks.synthetic_report=null",
    "callbacks.progress_bar=null",
    "callbacks.model_summary=null",
]


@pytest.fixture(scope="module")
def churn_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "churn.csv"
    make_churn_frame(400, seed=5).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def anomaly_run(churn_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TVAE of the customers who stayed (churn=No); the churners are the test's anomalies."""
    run_dir = tmp_path_factory.mktemp("runs") / "anomaly"
    main(
        [
            "train",
            *TINY_VAE,
            f"data.path={churn_csv}",
            "data.exclude_classes=[Yes]",
            f"hydra.run.dir={run_dir}",
        ]
    )
    return run_dir


def test_held_out_classes_stay_out_of_training_and_label_the_test_rows() -> None:
    dm = ChurnSyntheticDataModule(n_rows=300, max_modes=2, exclude_classes=["Yes"])
    dm.setup()
    assert dm.target is None and dm.label_column == "churn" and dm.classes == ["No", "Yes"]
    assert "churn" not in [c["name"] for c in dm.transform.modelled]  # a label, not a column of the model
    assert all("churn" not in frame.columns for frame in dm.frames.values())
    rows, labels = dm.datasets["test"].tensors
    assert len(rows) == len(labels) and set(labels.tolist()) == {0, 1}
    assert len(dm.frames["test"]) == int((labels == 0).sum())  # the report's test rows: the normal ones
    spec = dm.data_spec()
    assert spec.classes == ["No", "Yes"] and spec.anomaly_classes == [1]
    restored = ChurnSyntheticDataModule(n_rows=300, max_modes=2, exclude_classes=["Yes"])
    restored.load_state_dict(dm.state_dict())
    assert restored.data_spec() == spec  # a checkpoint rebuilds the same task

    with pytest.raises(DataError, match=r"no value 'Maybe' in column 'churn'; its values are: No, Yes"):
        ChurnSyntheticDataModule(n_rows=300, max_modes=2, exclude_classes=["Maybe"]).setup()
    with pytest.raises(DataError, match="leaves no training or validation rows"):
        ChurnSyntheticDataModule(n_rows=300, max_modes=2, exclude_classes=["Yes", "No"]).setup()
    with pytest.raises(DataError, match=r"data\.target, which is not set"):
        ChurnSyntheticDataModule(n_rows=300, target=None, exclude_classes=["Yes"])


def test_test_rows_the_transform_cannot_encode_are_left_out_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Held-out rows may have gaps where the training rows had none: warned and left out, not a crash."""
    from lit_dl.data.synthetic_tables import SyntheticTableDataModule

    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"amount": rng.normal(10.0, 1.0, 200), "kind": ["ok"] * 160 + ["bad"] * 40})
    frame.loc[190:, "amount"] = np.nan  # ten "bad" rows without an amount
    path = tmp_path / "rows.csv"
    frame.to_csv(path, index=False)
    dm = SyntheticTableDataModule(path=str(path), target="kind", exclude_classes=["bad"], max_modes=2)
    dm.setup()
    rows, labels = dm.datasets["test"].tensors
    assert len(rows) == len(labels) and "left out" in caplog.text
    assert not torch.isnan(rows).any()


def test_column_errors_add_up_to_the_score_and_point_at_the_broken_column() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "amount": rng.normal(50.0, 5.0, 200),
            "plan": rng.choice(["a", "b"], 200),
            "visits": rng.poisson(3, 200),
        }
    )
    table = TableTransform.fit(frame, max_modes=2)
    spec = DataSpec(
        task_type="generative",
        modality="table",
        inputs={"data_dim": table.output_dim},
        options={"table": table.state_dict(), "sampling": "uniform"},
    )
    net = {"_target_": "lit_dl.nets.tabular_generative.TabularVAE", "latent_dim": 3, "encoder_sizes": [8],
           "decoder_sizes": [8]}  # fmt: skip
    task = TabularVAETask(net=net, optimizer={"_target_": "torch.optim.Adam", "_partial_": True}, data=spec)
    task.eval()
    assert task.column_names == ["amount", "plan", "visits"]
    broken = frame.head(4).copy()
    broken.loc[3, "amount"] = 5000.0  # a hundred standard deviations out
    rows = torch.from_numpy(table.transform(broken))
    score, errors = task.anomaly_terms(rows)
    assert errors.shape == (4, 3) and bool((errors >= 0).all())
    # The score is the negative ELBO: errors + the Gaussian constants of the offsets + the KL.
    posterior = task.encode(rows)
    kl = torch.distributions.kl_divergence(posterior, torch.distributions.Normal(0.0, 1.0)).sum(1)
    sigma = task.net.sigma[task.offset_index]
    constant = (torch.log(sigma) + 0.5 * math.log(2 * math.pi)).sum()
    assert torch.allclose(score, errors.sum(1) + constant + kl, atol=1e-4)
    assert int(score.argmax()) == 3
    outputs = task.predict_step((rows,), 0)
    columns = task.prediction_columns(outputs)
    assert list(columns) == ["anomaly_score", "error_amount", "error_plan", "error_visits", "top_column"]
    assert columns["top_column"][3] == "amount"
    assert np.allclose(columns["anomaly_score"], score.numpy())


def test_training_on_normal_rows_reports_the_anomaly_auroc(anomaly_run: Path) -> None:
    metrics = json.loads((anomaly_run / "metrics.json").read_text())
    assert 0.0 <= metrics["test/anomaly_auroc"] <= 1.0
    assert math.isfinite(metrics["test/loss"])


def test_predict_writes_scores_column_errors_and_the_top_column(
    anomaly_run: Path, churn_csv: Path, tmp_path: Path
) -> None:
    new = pd.read_csv(churn_csv).head(30)
    new.loc[0, "monthly_charges"] = 5000.0  # far outside anything seen in training
    path = tmp_path / "new.csv"
    new.to_csv(path, index=False)
    out = tmp_path / "scores.csv"
    ckpt = anomaly_run / "checkpoints" / "best.ckpt"
    main(
        ["predict", f"ckpt_path={ckpt}", f"input={path}", f"output={out}", f"hydra.run.dir={tmp_path / 'p'}"]
    )
    scores = pd.read_csv(out)
    assert len(scores) == 30
    assert scores["customer_id"].tolist() == new["customer_id"].tolist()
    assert scores["churn"].tolist() == new["churn"].tolist()  # the label passes through, as ids do
    errors = [c for c in scores.columns if c.startswith("error_")]
    assert "error_monthly_charges" in errors and "error_churn" not in errors
    assert scores.columns.tolist() == ["customer_id", "churn", "anomaly_score", *errors, "top_column"]
    assert scores.loc[0, "top_column"] == "monthly_charges"
    assert scores["anomaly_score"].idxmax() == 0
    picked = scores[errors].to_numpy().argmax(axis=1)
    assert scores["top_column"].tolist() == [errors[i].removeprefix("error_") for i in picked]


def test_predict_names_a_missing_column_in_one_line(
    anomaly_run: Path, churn_csv: Path, tmp_path: Path, fail_cli: Callable[..., str]
) -> None:
    path = tmp_path / "short.csv"
    pd.read_csv(churn_csv).head(5).drop(columns=["tenure_months"]).to_csv(path, index=False)
    ckpt = anomaly_run / "checkpoints" / "best.ckpt"
    out = tmp_path / "scores.csv"
    line = fail_cli(
        "predict", f"ckpt_path={ckpt}", f"input={path}", f"output={out}", f"hydra.run.dir={tmp_path}/p"
    )
    assert "'tenure_months' not in" in line and "add them to the input" in line
    assert not out.exists()
