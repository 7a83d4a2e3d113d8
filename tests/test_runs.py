"""One run, one folder: unique names, a lock held by the live run, ``status.json``, a clean-up that
removes only what a failed run created, the choice ``resume=auto`` makes, atomic checkpoint writes,
the data order and the CSV log a resumed run continues."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from lit_dl.callbacks.checkpoint_io import AtomicCheckpointIO, remove_partial_files
from lit_dl.cli import CONFIG_DIR, main
from lit_dl.data.batching import EpochShuffleSampler
from lit_dl.errors import ConfigError
from lit_dl.loggers import CSVLogger
from lit_dl.nets import TabularMLP
from lit_dl.runs import (
    RUN_ID,
    RunFolder,
    check_resumed_config,
    planned_run_dir,
    read_status,
    resume_overrides,
)

QUIET = ["callbacks.progress_bar=null", "callbacks.model_summary=null", "callbacks.plots=null"]


# ---------------------------------------------------------------------------------------- folders
def test_default_run_folders_are_unique(tmp_path: Path) -> None:
    first = planned_run_dir(CONFIG_DIR, "train", [f"paths.log_dir={tmp_path}"])
    second = planned_run_dir(CONFIG_DIR, "train", [f"paths.log_dir={tmp_path}"])
    assert first != second and first.parent == second.parent == tmp_path / "train" / "runs"
    # date_time_microseconds_id: runs started in the same instant by two processes differ by the id
    assert re.fullmatch(rf"\d{{4}}-\d\d-\d\d_\d\d-\d\d-\d\d_\d{{6}}_{RUN_ID}", first.name), first.name
    assert re.fullmatch(r"[0-9a-f]{6}", RUN_ID)


def hold_lock(run_dir: Path) -> subprocess.Popen[str]:
    """Another process holding ``run_dir`` as a live run does (its lock, its pid in ``.lock``)."""
    script = (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(run_dir / '.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.write(fd, f'{os.getpid()}\\n'.encode())\n"
        "print('locked', flush=True)\n"
        "time.sleep(120)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    return holder


def test_a_folder_held_by_a_live_run_is_refused(fail_cli: Callable[..., str], tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = hold_lock(run_dir)
    try:
        line = fail_cli("train", f"hydra.run.dir={run_dir}")
        assert "in use by a live run" in line and f"pid {holder.pid}" in line
        assert sorted(os.listdir(run_dir)) == [".lock"]  # Hydra wrote nothing there
        fail_cli("train", f"resume={run_dir}")  # (nor resumed)
    finally:
        holder.kill()
        holder.wait()


def test_a_new_run_is_refused_in_a_folder_that_holds_a_run(
    fail_cli: Callable[..., str], tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "status.json").write_text(json.dumps({"status": "completed"}))
    (run_dir / "metrics.json").write_text("{}")
    line = fail_cli("train", f"hydra.run.dir={run_dir}")
    assert "already holds a run (status: completed" in line and f"resume={run_dir}" in line
    assert sorted(os.listdir(run_dir)) == ["metrics.json", "status.json"]  # untouched


def test_a_failed_start_removes_only_what_it_created(fail_cli: Callable[..., str], tmp_path: Path) -> None:
    bad_data = ["data=tabular", f"data.path={tmp_path / 'missing.csv'}", "data.target=y"]
    mine = tmp_path / "mine"  # a folder the user made, with a file of theirs
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    assert "data file not found" in fail_cli("train", *bad_data, f"hydra.run.dir={mine}")
    assert sorted(os.listdir(mine)) == ["notes.txt"]  # .hydra/, train.log, status.json, .lock: gone
    fresh = tmp_path / "fresh"
    fail_cli("train", *bad_data, f"hydra.run.dir={fresh}")
    assert not fresh.exists()


class FailAfterSteps(TabularMLP):
    """A TabularMLP that raises in its 8th training forward pass (epoch 1 under debug=limit)."""

    calls = 0

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor | None = None) -> torch.Tensor:
        if self.training:
            FailAfterSteps.calls += 1
            if FailAfterSteps.calls == 8:
                raise RuntimeError("boom")
        return super().forward(x_num, x_cat)


def test_status_json_says_how_a_run_ended(tmp_path: Path) -> None:
    done = tmp_path / "done"
    main(["train", "debug=limit", "data.n_rows=300", *QUIET, f"hydra.run.dir={done}"])
    status = read_status(done)
    assert status["status"] == "completed" and status["pid"] == os.getpid() and status["verb"] == "train"
    assert status["started"] <= status["finished"] and (done / "metrics.json").is_file()

    failed = tmp_path / "failed"
    FailAfterSteps.calls = 0
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "train",
                "debug=limit",
                "data.n_rows=300",
                "data.batch_size=32",  # 5 batches an epoch (debug=limit)
                *QUIET,
                f"model.net._target_={__name__}.FailAfterSteps",
                f"allow_targets=[{__name__}]",
                f"hydra.run.dir={failed}",
            ]
        )
    assert exit_info.value.code == 1
    status = read_status(failed)
    assert status["status"] == "failed" and status["reason"] == "RuntimeError: boom", status
    assert (failed / "checkpoints" / "last.ckpt").is_file() and not (failed / "metrics.json").exists()


# ---------------------------------------------------------------------------------------- resume=
def fake_run(root: Path, name: str, overrides: list[str], status: str | None, age: float) -> Path:
    """A run folder as a stopped run leaves it (its last checkpoint ``age`` seconds old)."""
    run_dir = root / name
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(overrides)))
    if status is not None:
        (run_dir / "status.json").write_text(json.dumps({"status": status}))
    if age >= 0:
        (run_dir / "checkpoints").mkdir()
        last = run_dir / "checkpoints" / "last.ckpt"
        last.write_bytes(b"stand-in")
        os.utime(last, (time.time() - age, time.time() - age))
    return run_dir


def test_resume_auto_picks_the_newest_unfinished_run_of_the_same_command(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    root = logs / "train" / "runs"
    same = [f"paths.log_dir={logs}", "data.n_rows=400"]
    fake_run(root, "completed", same, "completed", age=1)
    fake_run(root, "older", same, "failed", age=30)
    chosen = fake_run(root, "killed", [*same, "resume=x", "ckpt_path=y"], "running", age=20)
    fake_run(root, "other_data", [f"paths.log_dir={logs}", "data.n_rows=500"], "failed", age=2)
    fake_run(root, "no_checkpoint", same, "failed", age=-1)
    live = fake_run(root, "live", same, "running", age=3)
    holder = RunFolder(live)
    holder.lock(resuming=True)
    try:
        rewritten = resume_overrides(
            "train",
            ["resume=auto", *same, "trainer.max_epochs=9"],
            config_dir=CONFIG_DIR,
            config_name="train",
        )
    finally:
        holder.release()
    assert rewritten == [
        *same,
        "trainer.max_epochs=9",
        f"resume={chosen}",
        f"ckpt_path={chosen / 'checkpoints' / 'last.ckpt'}",
        f"hydra.run.dir={chosen}",
    ]
    with pytest.raises(
        ConfigError, match=r"holds a checkpoint \(among those started with .*data\.n_rows=600\)"
    ):
        resume_overrides(
            "train",
            ["resume=auto", f"paths.log_dir={logs}", "data.n_rows=600"],
            config_dir=CONFIG_DIR,
            config_name="train",
        )


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["hydra.run.dir=/elsewhere"], "drop hydra.run.dir"),
        (["data.n_rows=500"], "data.n_rows=500 would change it"),
        (["-m"], "cannot be combined with a sweep"),
    ],
)
def test_resume_refusals(tmp_path: Path, extra: list[str], expected: str) -> None:
    run_dir = fake_run(tmp_path, "run", ["data.n_rows=400"], "failed", age=1)
    with pytest.raises(ConfigError, match=expected):
        resume_overrides("train", [f"resume={run_dir}", *extra], config_dir=CONFIG_DIR, config_name="train")
    empty = fake_run(tmp_path, "empty", ["data.n_rows=400"], "failed", age=-1)
    with pytest.raises(ConfigError, match="holds no checkpoint"):
        resume_overrides("train", [f"resume={empty}"], config_dir=CONFIG_DIR, config_name="train")


def test_a_resumed_config_must_match_the_runs_own(tmp_path: Path) -> None:
    old = {"seed": 1, "trainer": {"max_epochs": 3}, "model": {"lr": 0.1}, "resume": None}
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(old))
    check_resumed_config(OmegaConf.create({**old, "trainer": {"max_epochs": 9}, "resume": "x"}), tmp_path)
    with pytest.raises(ConfigError, match=r"'model\.lr' differs"):
        check_resumed_config(OmegaConf.create({**old, "model": {"lr": 0.2}}), tmp_path)


# ---------------------------------------------------------------------------------------- pieces
def test_checkpoint_writes_are_atomic(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"w": torch.ones(3)}, path)

    class DiskFull(AtomicCheckpointIO):
        def write(self, checkpoint, file) -> None:  # type: ignore[no-untyped-def]
            file.write(b"half a checkpoint")
            raise OSError("No space left on device")

    with pytest.raises(OSError):
        DiskFull().save_checkpoint({"w": torch.zeros(3)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(3))  # the old one, whole
    assert os.listdir(path.parent) == ["last.ckpt"]
    # A write killed outright leaves its temporary file; a resumed run removes it.
    (path.parent / ".last.ckpt.x1y2.partial").write_bytes(b"half")
    assert [p.name for p in remove_partial_files(path.parent)] == [".last.ckpt.x1y2.partial"]
    assert os.listdir(path.parent) == ["last.ckpt"]


def test_data_order_depends_on_seed_and_epoch_only() -> None:
    def order(seed: int, epoch: int, sampler: EpochShuffleSampler | None = None) -> list[int]:
        sampler = sampler or EpochShuffleSampler(range(50), seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    running = EpochShuffleSampler(range(50), 7)
    orders = [order(7, epoch, running) for epoch in range(3)]
    assert orders == [order(7, epoch) for epoch in range(3)]  # epoch 2 as after a restart at 2
    assert orders[0] != orders[1] and sorted(orders[1]) == list(range(50))
    assert order(8, 0) != orders[0]


def test_csv_log_is_continued_and_cut_back_to_a_checkpoint(tmp_path: Path) -> None:
    def rows() -> list[tuple[int, int]]:
        frame = pd.read_csv(tmp_path / "csv" / "metrics.csv")
        return [(int(e), int(s)) for e, s in zip(frame["epoch"], frame["step"], strict=True)]

    first = CSVLogger(tmp_path, name="csv", version="")
    for epoch, step in [(0, 1), (0, 1), (1, 3)]:
        first.log_metrics({"epoch": epoch, "val/loss": 1.0 / (step + 1)}, step=step)
    assert first.rows_written() == 3  # (a checkpoint of epoch 0 would record 2)
    first.log_metrics({"epoch": 1, "train/loss": 0.5}, step=3)
    first.save()

    again = CSVLogger(tmp_path, name="csv", version="")  # a resumed run: Lightning's would delete the file
    again.log_metrics({"epoch": 1, "extra": 2.0}, step=3)
    again.save()
    assert rows() == [(0, 1), (0, 1), (1, 3), (1, 3), (1, 3)]
    again.truncate(1, keep_epoch=0)  # a checkpoint at the end of epoch 0, written after its first row
    assert rows() == [(0, 1), (0, 1)]
    first_rows = pd.read_csv(tmp_path / "csv" / "metrics.csv")
    assert "extra" in first_rows.columns  # the header keeps every column
