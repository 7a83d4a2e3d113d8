"""Resume with nothing lost: a run killed at any point and resumed in its folder ends as one never stopped.

One run trains without interruption; the same run is killed (SIGKILL, as by the OOM killer or a
pre-empted node) at a random training step, or in the middle of writing a checkpoint, and then
continued with ``resume=<run dir>``. Both must end with the same weights in ``best.ckpt`` and
``last.ckpt`` (``torch.equal``), the same test metrics (exact floats) and the same ``metrics.csv``
(every row once, steps continuous).

The killed runs are subprocesses; the uninterrupted run and the resumes run here, on one thread
like the subprocesses (``OMP_NUM_THREADS=1``), so the arithmetic is the same. The faults come from
:class:`KillAtStep` and :class:`KillingCheckpointIO`, which every run is configured with (so the
configs are equal) and which act only when their environment variable is set.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

import lightning as L
import pandas as pd
import pytest
import torch

from lit_dl.callbacks.checkpoint_io import AtomicCheckpointIO
from lit_dl.cli import main
from lit_dl.runs import read_status

EPOCHS = 5
STEPS_PER_EPOCH = 2  # 400 rows: 280 for training, batches of 256
KILL_AT_STEP = "LIT_DL_TEST_KILL_AT_STEP"
KILL_IN_SAVE = "LIT_DL_TEST_KILL_IN_SAVE"
HERE = Path(__file__).resolve().parent
RUN = [
    "data.n_rows=400",
    f"trainer.max_epochs={EPOCHS}",
    "trainer.deterministic=true",
    "callbacks.progress_bar=null",
    "callbacks.model_summary=null",
    "callbacks.plots=null",
    f"+callbacks.fault._target_={__name__}.KillAtStep",
    f"checkpoint_io._target_={__name__}.KillingCheckpointIO",
    f"allow_targets=[{__name__}]",
]


class KillAtStep(L.Callback):
    """SIGKILL this process before training step ``$LIT_DL_TEST_KILL_AT_STEP`` (if set)."""

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if str(trainer.global_step) == os.environ.get(KILL_AT_STEP):
            os.kill(os.getpid(), signal.SIGKILL)


class KillingCheckpointIO(AtomicCheckpointIO):
    """SIGKILL this process halfway through checkpoint write number ``$LIT_DL_TEST_KILL_IN_SAVE`` (if set)."""

    saves = 0

    def write(self, checkpoint: dict[str, Any], file: IO[bytes]) -> None:
        KillingCheckpointIO.saves += 1
        if str(KillingCheckpointIO.saves) != os.environ.get(KILL_IN_SAVE):
            super().write(checkpoint, file)
            return
        import io

        whole = io.BytesIO()
        torch.save(checkpoint, whole)
        file.write(whole.getvalue()[: len(whole.getvalue()) // 2])
        file.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def killed_run(run_dir: Path, **fault: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        **fault,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-m", "lit_dl.cli", "train", *RUN, f"hydra.run.dir={run_dir}"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    return done


def outcome(run_dir: Path) -> dict[str, Any]:
    checkpoints = {
        name: torch.load(run_dir / "checkpoints" / name, weights_only=True)["state_dict"]
        for name in ("best.ckpt", "last.ckpt")
    }
    return {
        "weights": checkpoints,
        "metrics": json.loads((run_dir / "metrics.json").read_text()),
        "csv": pd.read_csv(run_dir / "csv" / "metrics.csv"),
        "checkpoint_files": sorted(p.name for p in (run_dir / "checkpoints").iterdir()),
        "status": read_status(run_dir)["status"],
    }


def assert_same(resumed: dict[str, Any], reference: dict[str, Any], what: str) -> None:
    for name, weights in reference["weights"].items():
        assert weights.keys() == resumed["weights"][name].keys()
        for key, tensor in weights.items():
            assert torch.equal(tensor, resumed["weights"][name][key]), f"{what}: {name} {key} differs"
    test = {k: v for k, v in reference["metrics"].items() if k.startswith("test/")}
    assert test and {k: resumed["metrics"][k] for k in test} == test, what
    assert resumed["metrics"] == reference["metrics"], what
    pd.testing.assert_frame_equal(resumed["csv"], reference["csv"], check_exact=True, obj=what)
    assert resumed["checkpoint_files"] == ["best.ckpt", "last.ckpt"], what  # no partial file left
    assert resumed["status"] == "completed", what


@pytest.fixture(scope="module")
def single_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, single_thread: None) -> dict[str, Any]:
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    main(["train", *RUN, f"hydra.run.dir={run_dir}"])
    reference = outcome(run_dir)
    csv = reference["csv"]
    validation = csv.dropna(subset=["val/loss"])
    fit_rows = validation[validation["epoch"] < EPOCHS]
    assert list(fit_rows["epoch"]) == list(range(EPOCHS))  # one validation row per epoch
    assert list(fit_rows["step"]) == [STEPS_PER_EPOCH * (e + 1) - 1 for e in range(EPOCHS)]
    return reference


def test_killed_at_a_random_step_then_resumed(
    uninterrupted: dict[str, Any], tmp_path: Path, single_thread: None
) -> None:
    step = random.randint(STEPS_PER_EPOCH + 1, EPOCHS * STEPS_PER_EPOCH - 1)
    run_dir = tmp_path / "run"
    killed_run(run_dir, **{KILL_AT_STEP: str(step)})
    assert read_status(run_dir)["status"] == "running"  # killed outright: nothing could say otherwise
    assert not (run_dir / "metrics.json").exists()

    main(["train", f"resume={run_dir}"])
    assert_same(outcome(run_dir), uninterrupted, f"killed before step {step}")
    assert read_status(run_dir)["resumed_from"] == str(run_dir / "checkpoints" / "last.ckpt")


def test_killed_while_writing_a_checkpoint_then_resumed(
    uninterrupted: dict[str, Any], tmp_path: Path, single_thread: None
) -> None:
    # Writes 1 and 2 are epoch 0's best.ckpt and last.ckpt; then last.ckpt each epoch, best.ckpt
    # before it when the validation loss improved. (Killed in write 2, the run resumes from best.ckpt
    # and metrics.csv lacks epoch 0's training row, logged after the checkpoint: see docs/index.md.)
    write = random.randint(3, 2 * EPOCHS)
    run_dir = tmp_path / "run"
    killed_run(run_dir, **{KILL_IN_SAVE: str(write)})
    checkpoints = run_dir / "checkpoints"
    partial = [p.name for p in checkpoints.iterdir() if p.name.endswith(".partial")]
    assert len(partial) == 1, partial  # the cut-off write, beside the previous checkpoints, whole:
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["epoch"] < EPOCHS - 1

    main(["train", f"resume={run_dir}"])
    assert_same(outcome(run_dir), uninterrupted, f"killed in checkpoint write {write}")


def test_resume_refuses_to_change_the_model(fail_cli: Any, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "overrides.yaml").write_text("- data.n_rows=400\n")
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"stand-in")
    line = fail_cli("train", f"resume={run_dir}", "model.optimizer.lr=0.1")
    assert "model.optimizer.lr=0.1 would change it" in line and "trainer.max_epochs" in line
    assert sorted(p.name for p in run_dir.iterdir()) == [".hydra", "checkpoints"]  # nothing written
