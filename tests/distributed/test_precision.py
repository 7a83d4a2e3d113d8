"""Every shipped experiment runs one batch of each stage in reduced precision.

Parametrized over ``configs/experiment/*.yaml``, so a new experiment is covered the day it is
added. Experiments whose data is a download or a user's file run on tiny files written here.
bf16-mixed runs on CPU; 16-mixed needs a GPU (Lightning has no fp16 autocast on CPU).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from lit_dl.cli import CONFIG_DIR, main
from lit_dl.data.churn import make_churn_frame
from lit_dl.data.image_files import write_noise_idx_set

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
QUIET = ["callbacks.progress_bar=null", "callbacks.model_summary=null"]


def write_idx_files(root: Path, n_train: int = 60, n_test: int = 20) -> Path:
    """MNIST-style ``.gz`` IDX files (28x28, 10 classes), as MNIST and Fashion-MNIST ship them."""
    return write_noise_idx_set(root, n_train, n_test)


def local_data(experiment: str, folder: Path) -> list[str]:
    """Overrides that point an experiment at tiny local data; skips one whose data we cannot make."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}"], return_hydra_config=False)
    target = str(cfg.data._target_)
    if target.endswith("TorchvisionDataModule"):
        if cfg.data.dataset not in ("mnist", "fashion_mnist"):
            pytest.skip(f"{cfg.data.dataset}: no tiny offline files for it")
        root = write_idx_files(folder / "idx")
        return [f"data.root={root}", "data.download=false", "data.batch_size=16", "data.val_fraction=0.2"]
    if target.endswith("ForecastDataModule"):
        steps = np.arange(96)
        frame = pd.DataFrame(
            {"month": pd.date_range("2001-01", periods=96, freq="MS").strftime("%Y-%m"), "y": 100 + steps}
        )
        frame.to_csv(folder / "series.csv", index=False)
        return [f"data.path={folder / 'series.csv'}", "data.time_column=month", "data.target=y"]
    if "path" in _missing(cfg):
        # A table of the user's (UCI Adult, ...): the embedded churn table stands in for it.
        make_churn_frame(400, seed=0).to_csv(folder / "table.csv", index=False)
        overrides = [f"data.path={folder / 'table.csv'}", "data.target=churn", "data.drop=[customer_id]"]
        for key, value in (("positive_label", "Yes"), ("column_names", "null"), ("categorical", "[]")):
            if key in cfg.data:
                overrides.append(f"data.{key}={value}")
        return overrides
    return []


def _missing(cfg: DictConfig) -> set[str]:
    """The data keys a user must set (``???``), such as the path of their own file."""
    return {key.rpartition(".")[2] for key in OmegaConf.missing_keys(cfg.data)}


def fast_dev_run(experiment: str, precision: str, folder: Path) -> dict[str, float]:
    run_dir = folder / "run"
    overrides = [
        f"experiment={experiment}",
        *local_data(experiment, folder),
        "debug=fast_dev_run",
        f"trainer.precision={precision}",
        "trainer.accelerator=gpu" if precision == "16-mixed" else "trainer.accelerator=cpu",
        *QUIET,
        f"hydra.run.dir={run_dir}",
    ]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}"])
    if "sample_quality" in (cfg.get("callbacks") or {}):
        # Its feature classifier is trained (minutes) and cached outside the run; not what this checks.
        overrides.append("callbacks.sample_quality=null")
    if (cfg.model.get("nll_samples") or 0) > 10:
        # mnist_vae's 1,000 importance samples per test image took a minute here; 10 test the same code.
        overrides.append("model.nll_samples=10")
    main(["train", *overrides])
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_fast_dev_run_in_bf16_mixed_on_cpu(
    experiment: str, tmp_path: Path, one_thread: None
) -> None:
    metrics = fast_dev_run(experiment, "bf16-mixed", tmp_path)
    tested = {k: v for k, v in metrics.items() if k.startswith("test/")}
    assert tested and all(math.isfinite(v) for v in tested.values()), metrics


@pytest.mark.skipif(not torch.cuda.is_available(), reason="16-mixed needs a GPU")
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_fast_dev_run_in_16_mixed_on_gpu(experiment: str, tmp_path: Path) -> None:
    metrics = fast_dev_run(experiment, "16-mixed", tmp_path)
    assert any(k.startswith("test/") for k in metrics), metrics
