"""Shared fixtures: small, seeded, deliberately messy tables written into ``tmp_path``."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

MESSY_ROWS = 300
MESSY_SEED = 1234


def make_messy_frame(n_rows: int = MESSY_ROWS, seed: int = MESSY_SEED) -> pd.DataFrame:
    """A Telco-like customer table with the usual dirt.

    * ``customer_id``: an id column (unique text).
    * ``total_charges``: numbers stored as text, ``" "`` where nothing was billed yet.
    * ``partner`` (Yes/No), ``contract`` and ``payment_method`` (multi-valued): some missing cells.
    * ``age``: numbers with NaNs.
    * ``monthly_charges``: unique numbers without gaps (lets tests find a row by its value).
    * ``churn``: Yes/No target, about 30% Yes, depending on contract and tenure.
    """
    rng = np.random.default_rng(seed)
    n = n_rows
    contract = rng.choice(["Month-to-month", "One year", "Two year"], n, p=[0.5, 0.25, 0.25]).astype(object)
    partner = rng.choice(["Yes", "No"], n).astype(object)
    payment = rng.choice(["Electronic check", "Mailed check", "Bank transfer", "Credit card"], n).astype(
        object
    )
    gender = rng.choice(["Female", "Male"], n)
    tenure = rng.integers(0, 73, n)
    monthly = rng.choice(np.arange(2000, 12000), n, replace=False) / 100.0
    total = [" " if t == 0 else f"{m * t:.2f}" for m, t in zip(monthly, tenure, strict=True)]
    for i in rng.choice(n, 6, replace=False):
        total[i] = " "
    age = rng.integers(18, 85, n).astype(float)
    age[rng.choice(n, 20, replace=False)] = np.nan
    partner[rng.choice(n, 15, replace=False)] = None
    contract[rng.choice(n, 12, replace=False)] = None
    payment[rng.choice(n, 10, replace=False)] = None

    base = np.where(contract == "Month-to-month", 0.3, np.where(contract == "One year", -1.6, -2.4))
    logit = base - 0.03 * (tenure - 36) + rng.normal(0.0, 0.5, n)
    churn = np.where(rng.random(n) < 1.0 / (1.0 + np.exp(-logit)), "Yes", "No")
    return pd.DataFrame(
        {
            "customer_id": [f"CUST-{i:04d}" for i in range(n)],
            "gender": gender,
            "partner": partner,
            "contract": contract,
            "payment_method": payment,
            "tenure": tenure,
            "monthly_charges": monthly,
            "total_charges": total,
            "age": age,
            "churn": churn,
        }
    )


def write_frame(frame: pd.DataFrame, path: Path, header: bool = True) -> Path:
    """Write a CSV (text cells quoted, so numbers-as-text stay text) or Parquet file by suffix."""
    path = Path(path)
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False, header=header, quoting=csv.QUOTE_NONNUMERIC)
    return path


@pytest.fixture
def messy_frame() -> pd.DataFrame:
    """The raw messy customer table (a fresh copy per test)."""
    return make_messy_frame()


@pytest.fixture
def messy_csv(tmp_path: Path, messy_frame: pd.DataFrame) -> Path:
    """The messy customer table as a CSV file."""
    return write_frame(messy_frame, tmp_path / "customers.csv")


@pytest.fixture
def write_table(tmp_path: Path) -> Callable[..., Path]:
    """``write_table(frame, "name.csv" | "name.parquet", header=True)`` -> path in ``tmp_path``."""

    def write(frame: pd.DataFrame, name: str, header: bool = True) -> Path:
        return write_frame(frame, tmp_path / name, header=header)

    return write


def make_regression_frame(n_rows: int = 160, seed: int = 7) -> pd.DataFrame:
    """``y = 3 x1 - 2 x2 + effect(group) + noise`` with a float target of many distinct values."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(0.0, 1.0, n_rows)
    x2 = rng.uniform(-1.0, 1.0, n_rows)
    group = rng.choice(["a", "b", "c"], n_rows)
    effect = np.select([group == "a", group == "b"], [1.0, -1.0], 0.0)
    y = 50.0 + 3.0 * x1 - 2.0 * x2 + effect + rng.normal(0.0, 0.1, n_rows)
    return pd.DataFrame({"x1": x1, "x2": x2, "group": group, "y": np.round(y, 4)})


@pytest.fixture
def regression_frame() -> pd.DataFrame:
    return make_regression_frame()


@pytest.fixture
def regression_csv(tmp_path: Path, regression_frame: pd.DataFrame) -> Path:
    """A tiny regression table (float target ``y``) as a CSV file."""
    return write_frame(regression_frame, tmp_path / "regression.csv")


@pytest.fixture
def fail_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., str]:
    """Run a ``lit-dl`` command that must fail: exit code 2, one ``error:`` line, no traceback.

    Returns that line.
    """
    from lit_dl.cli import main

    def run(*args: str) -> str:
        with pytest.raises(SystemExit) as exit_info:
            main(list(args))
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        error_lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(error_lines) == 1, err
        assert "Traceback" not in err
        return error_lines[0]

    return run


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models: one torch thread is as fast, and far faster when other processes share the cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def read_wandb_offline_run(save_dir: Path) -> tuple[Path, list[dict]]:
    """The one offline W&B run under ``save_dir/wandb`` and its records, read by wandb's own reader of
    the ``.wandb`` log (``python -m wandb leet inspect --json``): no mock, no grepping of binary files."""
    import json
    import os
    import subprocess
    import sys

    (run,) = (save_dir / "wandb").glob("offline-run-*")
    result = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "WANDB_MODE": "offline"},
    )
    assert result.returncode == 0, result.stderr
    return run, [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


@pytest.fixture
def wandb_offline_run() -> Callable[[Path], tuple[Path, list[dict]]]:
    """:func:`read_wandb_offline_run`, for tests."""
    return read_wandb_offline_run
