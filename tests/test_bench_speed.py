"""``benchmarks/speed.py`` (``make bench``): the three loops of a family run the same steps from the
same weights and reach close losses. Tiny data and one epoch; nothing here is timed."""

from __future__ import annotations

import importlib.util
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from lit_dl.errors import ConfigError

SPEED = Path(__file__).resolve().parents[1] / "benchmarks" / "speed.py"


@pytest.fixture(scope="module")
def speed() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_speed", SPEED)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread: these tests check the loops, not their speed, and CPUs are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_family(speed: ModuleType, tmp_path: Path, family: str, *overrides: str) -> list[dict[str, Any]]:
    options = ["--epochs", "1", "--warmup", "0", "--repeats", "2", "--runs", str(tmp_path)]
    args = speed.parse_args(["--families", family, *options, *overrides])
    return speed.run(args)


def check_rows(rows: list[dict[str, Any]], tolerance: float) -> None:
    assert [row["loop"] for row in rows] == ["plain", "ideal", "bare L", "lit_dl"]
    steps = {row["steps"] for row in rows}
    assert steps == {rows[0]["steps_per_epoch"]}, steps
    assert all(row["same_initial_weights"] for row in rows)
    losses = [row["loss"] for row in rows]
    assert all(math.isfinite(loss) for loss in losses), losses
    assert max(losses) - min(losses) <= tolerance * abs(sum(losses) / 3), losses
    # the ratios are the medians of the two rounds' own ratios, each round's loops side by side
    lit = rows[-1]
    for name in ("vs_plain", "vs_ideal", "vs_bare_lightning"):
        by_round = lit["ratios_by_round"][name]
        assert len(by_round) == 2 and all(r > 0 for r in by_round), by_round
        assert lit[name] == pytest.approx(sum(by_round) / 2)
    assert "ratios by round" in lit["notes"][1]


def test_mlp_loops_agree(speed: ModuleType, tmp_path: Path) -> None:
    # 600 customers: 420 training rows, two batches of 256 (the last holds 164).
    rows = run_family(speed, tmp_path, "churn_mlp", "data.n_rows=600")
    assert rows[0]["steps"] == 2
    check_rows(rows, tolerance=0.05)


def test_vae_loops_agree(speed: ModuleType, tmp_path: Path) -> None:
    rows = run_family(speed, tmp_path, "digits_vae")
    check_rows(rows, tolerance=0.05)
    assert "sample grid" in rows[-1]["per_epoch_work"]


def test_language_model_loops_agree(speed: ModuleType, tmp_path: Path) -> None:
    # A small text (720 training characters): 5 chunks of 8 streams x 16 characters per epoch, the
    # state carried across them.
    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 20)
    rows = run_family(
        speed,
        tmp_path,
        "text_lstm",
        f"data.path={text}",
        "data.batch_size=8",
        "data.seq_len=16",
        "data.eval_streams=2",
        "model.net.hidden_size=32",
        "model.net.embedding_dim=8",
    )
    check_rows(rows, tolerance=0.02)
    # lit_dl's own count of chunks in an epoch, which the hand loops mirror
    assert rows[0]["steps"] == 5


def test_bad_override_is_one_line(speed: ModuleType) -> None:
    args = speed.parse_args(["--families", "churn_mlp", "data.no_such_key=1"])
    with pytest.raises(ConfigError, match=r"data\.no_such_key"):
        speed.compose_config(speed.FAMILIES["churn_mlp"], args)
