"""What a user sees and gets in the first hour: `lit-dl list`, the console of a run, limits shorter
than an epoch, experiment tags, and a GPU asked for where there is none."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from lit_dl.callbacks.console import BAR_BATCH_HOOKS, ModelSummary, ProgressBar
from lit_dl.cli import CONFIG_DIR, main
from lit_dl.verbs.listing import GROUPS, describe

TINY = ["data.n_rows=600", "data.batch_size=32"]


def test_list_shows_every_option_with_its_description(capsys: pytest.CaptureFixture[str]) -> None:
    main(["list"])
    blocks = {block.split(" (")[0]: block for block in capsys.readouterr().out.split("\n\n")}
    for group in GROUPS:
        if not (CONFIG_DIR / group).is_dir():
            continue
        for path in (CONFIG_DIR / group).glob("*.yaml"):
            line = next(x for x in blocks[group].splitlines() if x.strip().startswith(path.stem + " "))
            assert describe(path) and describe(path) in line, path  # every config says what it is

    main(["list", "trainer"])
    only = capsys.readouterr().out
    assert only.startswith("trainer (") and "experiment (" not in only


def test_list_of_an_unknown_group_is_one_line(fail_cli: Callable[..., str]) -> None:
    message = fail_cli("list", "experiments")
    assert "no config group 'experiments'" in message and "experiment" in message


def test_describe_takes_the_first_sentence_after_the_package_line(tmp_path: Path) -> None:
    config = tmp_path / "x.yaml"
    config.write_text("# @package _global_\n# A model (Xu et al. 2019) of\n# tables. More text.\nkey: 1\n")
    assert describe(config) == "A model (Xu et al. 2019) of tables"


def test_experiment_tags_reach_the_config() -> None:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        tagged = compose("train", overrides=["experiment=churn_lstm"])
        own = compose("train", overrides=["experiment=churn_lstm", "tags=[mine]"])
    assert "lstm" in tagged.tags  # (train.yaml's own `tags: []` used to win over every experiment)
    assert list(own.tags) == ["mine"]  # and the command line still wins over the experiment


def test_step_limit_shorter_than_an_epoch_ends_validated_with_a_quiet_console(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    main(["train", *TINY, "+trainer.max_steps=3", f"hydra.run.dir={run}"])
    out = capsys.readouterr().out
    metrics = json.loads((run / "metrics.json").read_text())
    assert "val/loss" in metrics and "test/auroc" in metrics  # validated and tested after 3 steps
    assert (run / "checkpoints" / "best.ckpt").is_file()
    assert json.loads((run / "status.json").read_text())["status"] == "completed"

    # One banner line; one line per epoch without a terminal; Lightning's noise filtered at the source.
    banner = [line for line in out.splitlines() if line.startswith("train ")]
    assert len(banner) == 1 and "ClassificationTask(TabularMLP)" in banner[0] and str(run) in banner[0]
    assert "precision 32-true" in banner[0] and "training samples" in banner[0]
    assert any(line.startswith("epoch 1") and "val/loss" in line for line in out.splitlines())
    for noise in ("GPU available", "TPU available", "Seed set to", "litlogger", "Trainer already configured"):
        assert noise not in out, noise
    assert out.count("Restoring states from the checkpoint") == 1  # the best weights, loaded once
    # The metrics table and the plots written, on the console and in the run's log file.
    log = (run / "train.log").read_text()
    for text in (out, log):
        assert "test metrics (best checkpoint)" in text and "test/auroc" in text
        assert f"plot: {run / 'plots' / 'confusion_matrix.png'}" in text


def test_time_limit_shorter_than_an_epoch_ends_validated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    # 1,400 training rows in batches of 2: an epoch takes several times the one-second limit.
    limits = [
        "trainer.max_epochs=50",
        "+trainer.max_time={seconds:1}",
        "callbacks.early_stopping.patience=100",
    ]
    few = ["+trainer.limit_val_batches=5", "+trainer.limit_test_batches=5"]
    quiet = ["callbacks.progress_bar=null", "callbacks.model_summary=null"]
    main(["train", "data.n_rows=2000", "data.batch_size=2", *limits, *few, *quiet, f"hydra.run.dir={run}"])
    out = capsys.readouterr().out
    assert "Params" not in out and "it/s" not in out  # null means none, not Lightning's default ones
    metrics = json.loads((run / "metrics.json").read_text())
    assert "val/loss" in metrics and "test/accuracy" in metrics
    history = (run / "csv" / "metrics.csv").read_text().splitlines()
    epochs = {int(row.split(",")[0]) for row in history[1:] if row.split(",")[0]}
    assert epochs and max(epochs) <= 1  # stopped within the first epoch or two, not after 50


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_gpu_preset_without_a_gpu_says_what_to_do(fail_cli: Callable[..., str]) -> None:
    message = fail_cli("train", "trainer=gpu")
    assert "torch sees no GPU" in message and "trainer=cpu" in message


def test_progress_bar_without_a_terminal_is_disabled_and_summary_drops_bookkeeping(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert ProgressBar(terminal=False).is_disabled
    assert not ProgressBar(terminal=True).is_disabled
    # Disabled, its batch hooks are not called at all (Lightning skips a hook that is None).
    assert all(getattr(ProgressBar(terminal=False), hook) is None for hook in BAR_BATCH_HOOKS)
    assert all(callable(getattr(ProgressBar(terminal=True), hook)) for hook in BAR_BATCH_HOOKS)
    ModelSummary.summarize(
        [
            (" ", ["0", "1"]),
            ("Name", ["net", "val_metrics"]),
            ("Type", ["TabularMLP", "MetricCollection"]),
            ("Params", ["13.4 K", "0"]),
            ("Mode", ["train", "train"]),
            ("FLOPs", ["0", "0"]),
        ],
        13400,
        13400,
        0.05,
        {"train": 2, "eval": 0},
        0,
    )
    out = capsys.readouterr().out
    assert "TabularMLP" in out and "MetricCollection" not in out and "FLOPs" not in out
    assert "13.4 K trainable parameters" in out
