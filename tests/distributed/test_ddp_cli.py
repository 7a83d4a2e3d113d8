"""DDP end to end on 2 CPU processes (gloo): the real ``lit-dl`` command, as users start it.

Each test starts ``lit-dl`` in subprocesses (Lightning's ``ddp`` re-runs the command line
for its second process, which a test runner cannot be); one thread per process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

LIT_DL = [sys.executable, "-m", "lit_dl.cli"]
CONSOLE_SCRIPT = Path(sys.executable).with_name("lit-dl")
QUIET = ["callbacks.progress_bar=null", "callbacks.model_summary=null"]
# 1020 rows: 714 train (357 per process), 153 val and 153 test, odd, so that a padded
# sampler would count a row twice; batch 76: 77 and 76 evaluation rows make 2 and 1 batches.
CHURN = [
    "data.n_rows=1020",
    "trainer.max_epochs=2",
    "model.net.dropout=0",  # no random masks, which differ between processes
    "model.net.batch_norm=false",  # per-process batch statistics differ from the global batch's
    "model.optimizer.lr=0.01",
    *QUIET,
]
TIMEOUT = 240


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, env=env(), capture_output=True, text=True, timeout=TIMEOUT, **kwargs)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def outputs(run_dir: Path) -> dict[str, list[str]]:
    """What a run directory holds, by kind, as paths relative to it."""
    files = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*"))
    return {
        "metrics": [f for f in files if f.endswith("metrics.json")],
        "config": [f for f in files if f.endswith("config.yaml") and not f.startswith(".hydra")],
        "checkpoints": [f for f in files if Path(f).name == "checkpoints"],
        "hydra": [f for f in files if Path(f).name == ".hydra"],
        "logs": [f for f in files if f.endswith(".log")],
    }


def assert_one_run(run_dir: Path) -> None:
    found = outputs(run_dir)
    assert found == {
        "metrics": ["metrics.json"],
        "config": ["config.yaml"],
        "checkpoints": ["checkpoints"],
        "hydra": [".hydra"],
        "logs": ["train.log"],
    }, found
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert not list(run_dir.parent.glob("*/train_ddp_process_*")), "a second process made its own run"


def test_ddp_cpu_matches_one_process_and_writes_one_run(tmp_path: Path) -> None:
    # One process over the same global batches: DDP with one process uses the same distributed
    # sampler (one permutation per epoch, from the seed), so batch 152 there is the union of the
    # two batches of 76 of the two processes.
    one, two = tmp_path / "one", tmp_path / "two"
    run([*LIT_DL, "train", *CHURN, "trainer=ddp_cpu", "data.batch_size=76", f"hydra.run.dir={two}"])
    run(
        [
            *LIT_DL,
            "train",
            *CHURN,
            "trainer=cpu",
            "trainer.strategy=ddp",
            "data.batch_size=152",
            f"hydra.run.dir={one}",
        ]
    )
    assert_one_run(two)
    single = json.loads((one / "metrics.json").read_text())
    ddp = json.loads((two / "metrics.json").read_text())
    assert set(single) == set(ddp)
    assert single["test/auroc"] > 0.6  # it learned something, so the comparison means something
    for name in single:
        assert ddp[name] == pytest.approx(single[name], abs=1e-4), name
    # One CSV log with the rows of one process, not one per process.
    assert (two / "csv" / "metrics.csv").is_file() and not list(two.glob("csv/version_*"))


def test_two_nodes_simulated_on_one_machine_write_one_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [
        str(CONSOLE_SCRIPT),
        "train",
        "data.n_rows=600",
        "trainer.max_epochs=1",
        *QUIET,
        "trainer=cpu",
        "trainer.strategy=ddp",
        "trainer.num_nodes=2",
        f"hydra.run.dir={run_dir}",
    ]
    port = str(free_port())
    nodes = []
    for node_rank in (1, 0):
        node_env = {**env(), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "NODE_RANK": str(node_rank)}
        pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
        nodes.append(subprocess.Popen(args, env=node_env, text=True, **pipes))
    try:
        results = [(*node.communicate(timeout=TIMEOUT), node.returncode) for node in nodes]
    finally:
        for node in nodes:
            node.kill()
    for _, err, code in results:
        assert code == 0, err[-3000:]
    node1_out, node0_out = results[0][0], results[1][0]
    assert "output directory" in node0_out and "output directory" not in node1_out  # rank zero prints
    assert_one_run(run_dir)
    assert json.loads((run_dir / "metrics.json").read_text())["test/auroc"] > 0.5


def test_gan_trains_under_ddp_cpu(tmp_path: Path) -> None:
    # Manual optimisation (two optimisers, toggle_optimizer, manual_backward) under DDP.
    run_dir = tmp_path / "gan"
    run(
        [
            *LIT_DL,
            "train",
            "experiment=digits_gan",
            "trainer=ddp_cpu",
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=4",
            "+trainer.limit_val_batches=2",
            "+trainer.limit_test_batches=2",
            "callbacks.sample_quality=null",  # its feature classifier is trained and cached outside the run
            "callbacks.model_checkpoint.monitor=null",
            *QUIET,
            f"hydra.run.dir={run_dir}",
        ]
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert all(v == v for v in metrics.values()) and "test/d_loss" in metrics, metrics
    assert [p.name for p in run_dir.rglob("metrics.json")] == ["metrics.json"]


def test_tabular_gan_trains_under_ddp_cpu(tmp_path: Path) -> None:
    # CTGAN's updates each reach one network; DDP must be told (it failed here before the task did).
    run_dir = tmp_path / "ctgan"
    run(
        [
            *LIT_DL,
            "train",
            "experiment=churn_ctgan",
            "trainer=ddp_cpu",
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=3",
            "+trainer.limit_val_batches=2",
            "+trainer.limit_test_batches=2",
            "callbacks.synthetic_report=null",
            *QUIET,
            f"hydra.run.dir={run_dir}",
        ]
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "test/fidelity" in metrics and 0 < metrics["test/fidelity"] <= 1, metrics


def test_vae_anomaly_scores_under_ddp_cpu(tmp_path: Path) -> None:
    # The background counts and reference images of the corrected anomaly score are taken per process in
    # the first epoch, outside the buffers DDP copies from rank 0 at every forward; at the first validation
    # the counts are summed over the processes and rank 0's references sent to every process (collectives:
    # a process left out would hang the run). What a checkpoint can show of it is checked here.
    run_dir = tmp_path / "vae"
    run(
        [
            *LIT_DL,
            "train",
            "experiment=digits_vae",
            "data.exclude_classes=[1]",
            "trainer=ddp_cpu",
            "trainer.max_epochs=2",
            "+trainer.limit_train_batches=3",
            "+trainer.limit_val_batches=2",
            "model.nll_samples=4",
            "callbacks.samples=null",
            *QUIET,
            f"hydra.run.dir={run_dir}",
        ]
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 <= metrics["test/anomaly_auroc_corrected"] <= 1, metrics
    assert 0 <= metrics["test/complexity_weight"] <= 1, metrics
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    state = checkpoint["state_dict"]
    batch = 64  # data=digits' batch size; 8x8 images
    assert int(state["reference_count"]) == 3 * batch  # rank 0's three batches of the first epoch
    assert state["background.stats"][..., 0].sum().item() == 2 * 3 * batch * 64  # both processes' pixels
