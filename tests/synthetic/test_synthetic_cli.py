"""Tabular VAE and GAN through the ``lit-dl`` CLI on tiny generated CSVs: train, report, restore, sample."""

from __future__ import annotations

import inspect
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
from lit_dl.data.synthetic_tables import SyntheticTableDataModule, TrainingBySampling
from lit_dl.errors import ConfigError
from lit_dl.verbs.common import restore_from_checkpoint

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings(r"ignore:.*isinstance\(treespec, LeafSpec\).*"),
    pytest.mark.filterwarnings("ignore:.*smaller than the logging interval.*"),
    pytest.mark.filterwarnings("ignore:Precision bf16-mixed is not supported by the model summary"),
]

QUIET = ["callbacks.progress_bar=null", "callbacks.model_summary=null", "trainer.log_every_n_steps=1"]
SMALL_VAE = ["model.net.latent_dim=8", "model.net.encoder_sizes=[32]", "model.net.decoder_sizes=[32]"]
SMALL_GAN = [
    "model.net.noise_dim=8",
    "model.net.generator_sizes=[32]",
    "model.net.discriminator_sizes=[32]",
    "model.net.pac=5",
]
SHORT = [
    "trainer.max_epochs=2",
    "data.batch_size=100",
    "callbacks.table_fidelity.rows=100",
    "data.max_modes=3",
]


@pytest.fixture(scope="module")
def churn_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "churn.csv"
    make_churn_frame(400, seed=3).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def tiny_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small mixed table without a label: numbers, a count with gaps, text with gaps."""
    rng = np.random.default_rng(0)
    n = 120
    visits = rng.poisson(2, n).astype(float)
    visits[:6] = np.nan
    plan = rng.choice(["basic", "pro"], n).astype(object)
    plan[6:10] = None
    frame = pd.DataFrame({"amount": np.round(rng.gamma(2, 10, n), 2), "visits": visits, "plan": plan})
    path = tmp_path_factory.mktemp("tiny") / "tiny.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def vae_run(churn_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "vae"
    main(
        [
            "train",
            "experiment=churn_tvae",
            f"data.path={churn_csv}",
            *QUIET,
            *SMALL_VAE,
            *SHORT,
            f"hydra.run.dir={run_dir}",
        ]
    )
    return run_dir


@pytest.fixture(scope="module")
def gan_run(churn_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "gan"
    main(
        [
            "train",
            "experiment=churn_ctgan",
            f"data.path={churn_csv}",
            *QUIET,
            *SMALL_GAN,
            *SHORT,
            f"hydra.run.dir={run_dir}",
        ]
    )
    return run_dir


@pytest.mark.parametrize("model", ["tvae", "ctgan"])
def test_fast_dev_run(model: str, tiny_csv: Path, tmp_path: Path) -> None:
    small = SMALL_VAE if model == "tvae" else SMALL_GAN
    # The GAN's manual steps under bf16; it trains by conditional sampling.
    extra = ["trainer.precision=bf16-mixed", "data.sampling=conditional"] if model == "ctgan" else []
    main(
        ["train", "data=table_synthetic", f"model={model}", "callbacks=synthetic_table",
         f"data.path={tiny_csv}", "debug=fast_dev_run", "data.batch_size=20", *QUIET, *small, *extra,
         f"hydra.run.dir={tmp_path}"]
    )  # fmt: skip
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0.0 < metrics["test/fidelity"] <= 1.0
    assert not (tmp_path / "report").exists()  # no report for a debugging run


def test_the_gan_asks_for_conditional_sampling_in_one_line(
    tiny_csv: Path, tmp_path: Path, fail_cli: Callable[..., str]
) -> None:
    line = fail_cli(
        "train", "data=table_synthetic", "model=ctgan", f"data.path={tiny_csv}", f"hydra.run.dir={tmp_path}"
    )
    assert line.endswith("set data.sampling=conditional")


@pytest.mark.parametrize("run", ["vae_run", "gan_run"])
def test_training_writes_metrics_and_the_report(run: str, request: pytest.FixtureRequest) -> None:
    run_dir: Path = request.getfixturevalue(run)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 < metrics["val/fidelity"] <= 1.0 and 0.0 < metrics["test/fidelity"] <= 1.0
    if run == "vae_run":
        assert math.isfinite(metrics["test/loss"])
    report = json.loads((run_dir / "report" / "report.json").read_text())
    assert report["privacy"]["exact_copies"] == 0
    assert report["ml_efficacy"]["positive_label"] == "Yes"
    assert set(report["ml_efficacy"]["classifiers"]) == {
        "adaboost",
        "decision_tree",
        "logistic_regression",
        "mlp",
    }
    assert "customer_id" not in report["fidelity"]["column_shapes"]
    assert (run_dir / "report" / "plots" / "contract.png").is_file()
    assert report["plots"]["contract"] == "plots/contract.png"  # what the loggers are sent
    # Two figures, each named by its rows: test/fidelity against the test rows, the report's against training.
    assert report["fidelity"]["compared_with"] == "training rows"
    assert "## Fidelity to the training rows" in (run_dir / "report" / "report.md").read_text()
    assert "Machine-learning efficacy" in (run_dir / "report" / "report.md").read_text()
    # Drawn per class of the target at its training rate; an unconditioned sample scored beside it.
    assert "churn" in report["sampling"]
    assert set(report["ml_efficacy_unconditioned"]["mean"]) == {"tstr"}
    sample = pd.read_csv(run_dir / "report" / "synthetic.csv")
    frames = SyntheticTableDataModule(path=str(request.getfixturevalue("churn_csv")), target="churn")
    frames.setup()
    real_rate = frames.frames["train"]["churn"].eq("Yes").mean()
    assert sample["churn"].eq("Yes").mean() == pytest.approx(real_rate, abs=1.5 / len(sample))


@pytest.mark.parametrize("run", ["vae_run", "gan_run"])
def test_restored_model_samples_the_source_table(
    run: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    run_dir: Path = request.getfixturevalue(run)
    checkpoint = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    # The fitted transform is stored once: in the datamodule's state, not among the task's hparams.
    assert "transform" in checkpoint["ChurnSyntheticDataModule"]
    assert not {"transform", "input_spec"} & set(checkpoint["hyper_parameters"])
    model, datamodule = restore_from_checkpoint(run_dir / "checkpoints" / "best.ckpt")
    datamodule.setup()
    train = datamodule.frames["train"]
    sampled = model.sample(n=200, generator=torch.Generator().manual_seed(0))
    assert list(sampled.columns) == list(train.columns)
    assert (sampled.dtypes == train.dtypes).all()
    for column in ("contract", "payment_method", "churn"):
        assert set(sampled[column].dropna()) <= set(train[column].dropna())
    assert sampled["tenure_months"].between(train["tenure_months"].min(), train["tenure_months"].max()).all()
    # It reads back with pandas with the same columns and dtypes (CSV and Parquet).
    sampled.to_csv(tmp_path / "s.csv", index=False)
    sampled.to_parquet(tmp_path / "s.parquet", index=False)
    for back in (pd.read_csv(tmp_path / "s.csv"), pd.read_parquet(tmp_path / "s.parquet")):
        assert list(back.columns) == list(train.columns)
        assert (back.drop(columns="customer_id").dtypes == train.drop(columns="customer_id").dtypes).all()
    again = model.sample(n=200, generator=torch.Generator().manual_seed(0))
    pd.testing.assert_frame_equal(sampled, again)  # the same seed, the same table


@pytest.mark.parametrize("run", ["vae_run", "gan_run"])
def test_conditional_sampling_gives_the_asked_class(run: str, request: pytest.FixtureRequest) -> None:
    model, _ = restore_from_checkpoint(request.getfixturevalue(run) / "checkpoints" / "best.ckpt")
    churners = model.sample(n=50, condition="churn=Yes", generator=torch.Generator().manual_seed(1))
    assert len(churners) == 50 and (churners["churn"] == "Yes").all()
    with pytest.raises(ConfigError, match="No, Yes"):
        model.sample(n=5, condition="churn=maybe")
    with pytest.raises(ConfigError, match="contract"):
        model.sample(n=5, condition="tenure_months=3")


def sample_verb_writes_tables() -> bool:
    from lit_dl.verbs import sample

    return "DataFrame" in inspect.getsource(sample)


@pytest.mark.skipif(not sample_verb_writes_tables(), reason="lit-dl sample does not write tables yet")
def test_sample_verb_writes_csv_in_source_column_order(vae_run: Path, tmp_path: Path) -> None:
    output = tmp_path / "synthetic.csv"
    ckpt = vae_run / "checkpoints" / "best.ckpt"
    main(
        [
            "sample",
            f"ckpt_path={ckpt}",
            "n=40",
            'condition="churn=Yes"',
            f"output={output}",
            f"hydra.run.dir={tmp_path}",
        ]
    )
    table = pd.read_csv(output)
    assert len(table) == 40 and (table["churn"] == "Yes").all()
    assert list(table.columns) == list(make_churn_frame(20).columns)


def test_split_is_stratified_and_the_transform_sees_training_rows_only(churn_csv: Path) -> None:
    datamodule = SyntheticTableDataModule(
        path=str(churn_csv), target="churn", drop=["customer_id"], val_fraction=0.2, test_fraction=0.2
    )
    datamodule.setup()
    frames = datamodule.frames
    rates = [frames[s]["churn"].eq("Yes").mean() for s in ("train", "val", "test")]
    assert max(rates) - min(rates) < 0.03
    assert not set(frames["train"]["customer_id"]) & set(frames["test"]["customer_id"])
    usage = next(c for c in datamodule.transform.columns if c["name"] == "usage_change_pct")
    assert usage["min"] == frames["train"]["usage_change_pct"].min()
    assert usage["max"] == frames["train"]["usage_change_pct"].max()
    assert pd.api.types.is_float_dtype(frames["train"]["total_charges"])  # blanks read as gaps in numbers
    assert datamodule.datasets["train"].tensors[0].shape[1] == datamodule.transform.output_dim


def test_training_by_sampling_matches_rows_to_conditions_and_lifts_rare_categories() -> None:
    codes = np.zeros((1000, 1), dtype=np.int64)
    codes[:10, 0] = 1  # a category in 1% of the rows
    data = torch.arange(1000, dtype=torch.float32)[:, None]
    dataset = TrainingBySampling(data, codes, [2])
    rows, cond = dataset.__getitems__(list(range(2000)))
    picked = rows[:, 0].long()
    rare = cond[:, 1] == 1
    assert (picked[rare] < 10).all() and (picked[~rare] >= 10).all()  # each row has its condition
    # Log-frequency: log(11) / (log(11) + log(991)) = 0.258 of the draws, not 1%.
    assert rare.float().mean().item() == pytest.approx(0.258, abs=0.03)
    again_rows, _ = dataset.__getitems__(list(range(2000)))
    assert torch.equal(rows, again_rows)  # seeded by the batch's indices


def test_a_run_that_keeps_the_last_weights_says_so(gan_run: Path) -> None:
    # churn_ctgan: model_checkpoint.monitor=null, so best.ckpt is the last epoch's, and the title says so
    log = (gan_run / "train.log").read_text()
    assert "test metrics (last checkpoint)" in log and "(best checkpoint)" not in log
