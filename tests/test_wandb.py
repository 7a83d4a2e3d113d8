"""Weights & Biases without an account or network: the run goes offline by itself, and everything
(config once, tags, metrics by step, images, checkpoints) is in its offline run, read back with
wandb's own reader of the ``.wandb`` transaction log (``wandb leet inspect --json``). Real wandb,
never online: no login here and WANDB_BASE_URL points at a port nothing listens on."""

from __future__ import annotations

import csv
import logging
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
import wandb
import yaml
from hydra import compose, initialize_config_dir
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import open_dict
from PIL import Image

from lit_dl.cli import CONFIG_DIR, main, validate_overrides
from lit_dl.errors import ConfigError
from lit_dl.loggers import (
    WandbLogger,
    finish_loggers,
    log_images,
    logger_entries,
    wandb_login_problem,
    wandb_server_problem,
)
from lit_dl.verbs.common import build_loggers

NOWHERE = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused at once
OFFLINE_LINE = "W&B runs offline:"
END_LINE = "W&B run recorded offline; upload it with: wandb sync "
SWEEP_FILE = Path(__file__).resolve().parents[1] / "scripts" / "wandb_sweep.yaml"


@pytest.fixture
def wandb_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A user without a W&B login (a fresh HOME: no netrc, no W&B settings) whose W&B server is
    unreachable; W&B's process-wide settings read afresh from this environment."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in (
        "WANDB_API_KEY",
        "WANDB_IDENTITY_TOKEN_FILE",
        "WANDB_MODE",
        "WANDB_DIR",
        "WANDB_CONFIG_DIR",
        "WANDB_CACHE_DIR",
        "WANDB_DATA_DIR",
        "WANDB_SWEEP_ID",
        "WANDB_RUN_ID",
        "NETRC",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_BASE_URL", NOWHERE)
    wandb.finish()  # (a run an earlier test of this process left open)
    wandb.teardown()
    yield home
    wandb.finish()
    wandb.teardown()


def of_type(records: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [record[kind] for record in records if record["type"] == kind]


def history(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [row["item"] for row in of_type(records, "history")]


def artifacts(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [a for a in of_type(records, "artifact") if a["type"] == "model"]


def compose_train(overrides: list[str], output_dir: Path) -> Any:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


# ----------------------------------------------------------------------------------- lit-dl train
def test_offline_train_run_holds_config_once_tags_metrics_images_checkpoints_and_csv(
    wandb_home: Path,
    tmp_path: Path,
    one_thread: None,
    wandb_offline_run: Callable[[Path], tuple[Path, list[dict]]],
) -> None:
    run_dir = tmp_path / "run"
    main(
        [
            "train",
            "experiment=churn_mlp",
            "debug=limit",
            "data.n_rows=300",
            "trainer.max_epochs=2",
            "trainer.log_every_n_steps=1",
            "logger=wandb",  # no login, no network: offline by itself
            "logger.wandb.log_model=true",
            "callbacks.progress_bar=null",
            "callbacks.model_summary=null",
            f"hydra.run.dir={run_dir}",
        ]
    )
    wandb.finish()  # (what the end of the process does: the run's last records written)
    records = wandb_offline_run(run_dir)[1]
    run_id = (run_dir / "wandb_run_id.txt").read_text().strip()
    (run,) = of_type(records, "run")
    assert run["run_id"] == run_id and run["tags"] == ["churn", "mlp"] and run["job_type"] == "train"

    # The resolved config once: in the run's record, and the task's hyperparameters not again.
    config = run["config"]["update"]
    assert config["tags"] == ["churn", "mlp"]
    assert config["model"]["optimizer"]["lr"] == 0.001 and config["trainer"]["max_epochs"] == 2
    updates = [c["update"] for c in of_type(records, "config")]
    assert not [u for u in updates if "optimizer" in u or "model" in u or "net" in u], updates

    # Metrics by step: train loss at every step, validation at every epoch's end, and the same numbers
    # as the CSV history the run keeps beside W&B.
    rows = history(records)
    train_steps = [r["trainer/global_step"] for r in rows if "train/loss_step" in r]
    assert train_steps == sorted(train_steps) and len(train_steps) >= 2
    val_by_step = {
        (r["trainer/global_step"], r["epoch"], round(r["val/loss"], 6)) for r in rows if "val/loss" in r
    }
    with (run_dir / "csv" / "metrics.csv").open(newline="") as file:
        csv_val = {
            (int(r["step"]), int(r["epoch"]), round(float(r["val/loss"]), 6))
            for r in csv.DictReader(file)
            if r["val/loss"]
        }
    assert val_by_step == csv_val and {epoch for _, epoch, _ in csv_val} >= {0, 1}
    assert any("test/auroc" in r for r in rows) and any(
        "val/auroc" in r for r in rows
    )  # (the sweep's metric)

    # An image (the confusion matrix the plots callback hands to W&B), its file in the run.
    offline_run = next((run_dir / "wandb").glob("offline-run-*"))
    images = [f for r in rows for k, v in r.items() if k.endswith(".filenames") for f in v]
    assert images and all((offline_run / "files" / name).is_file() for name in images)

    # log_model=true: each checkpoint file once, at the end of training, in its own artifact.
    uploaded = {a["name"]: a for a in artifacts(records)}
    assert set(uploaded) == {f"model-{run_id}-best", f"model-{run_id}-last"}
    assert set(uploaded[f"model-{run_id}-best"]["aliases"]) == {"latest", "best"}
    assert uploaded[f"model-{run_id}-last"]["aliases"] == ["latest"]
    assert [c["path"] for c in uploaded[f"model-{run_id}-best"]["manifest"]["contents"]] == ["best.ckpt"]

    # One line at the start says why and how to upload; training's end says it again.
    log_text = (run_dir / "train.log").read_text()
    (start,) = [line for line in log_text.splitlines() if OFFLINE_LINE in line]
    assert "no W&B login" in start and f"wandb sync {offline_run}" in start
    assert f"{END_LINE}{offline_run}" in log_text


# ----------------------------------------------------------------------------------- going offline
# A login prompt never returns, and an online start without network waits 90 s (wandb's init_timeout);
# the fallback takes 1-2 s on a quiet machine (two W&B runs start here).
@pytest.mark.timeout(60)
def test_no_login_and_no_network_goes_offline_in_seconds_without_a_prompt(
    wandb_home: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    wandb_offline_run: Callable[[Path], tuple[Path, list[dict]]],
) -> None:
    cfg = compose_train(["logger=wandb", "logger.wandb.group=study-1", "logger.wandb.name=trial-0"], tmp_path)
    entries = logger_entries(cfg, tmp_path, resuming=False)
    assert entries is not None and list(entries) == ["csv", "wandb"]
    _csv_logger, wandb_logger = build_loggers(entries)  # type: ignore[arg-type]
    assert isinstance(wandb_logger, WandbLogger)
    with caplog.at_level(logging.INFO, logger="lit_dl.loggers"):
        run = wandb_logger.experiment  # (a prompt would fail here: pytest's stdin is no terminal)
        wandb_logger.log_metrics({"val/loss": 0.5}, step=0)
    lines = [r.getMessage() for r in caplog.records if OFFLINE_LINE in r.getMessage()]
    assert len(lines) == 1, lines
    assert "no W&B login for http://127.0.0.1:9" in lines[0]
    assert f"wandb sync {tmp_path / 'wandb' / 'offline-run-'}" in lines[0]
    assert run.id == (tmp_path / "wandb_run_id.txt").read_text().strip()

    # The next training of this process (tune's next trial) starts its own run and ends this one,
    # although the trainer that held this logger is gone.
    del wandb_logger
    next_trial = WandbLogger(save_dir=str(tmp_path / "next"), offline=True, project="lit-dl")
    assert next_trial.experiment.id != run.id
    records = wandb_offline_run(tmp_path)[1]
    (record,) = of_type(records, "run")
    assert record["run_group"] == "study-1" and record["display_name"] == "trial-0"
    assert of_type(records, "exit") and [r["val/loss"] for r in history(records)] == [0.5]
    next_trial.finish()
    assert of_type(wandb_offline_run(tmp_path / "next")[1], "exit")


def test_unreachable_server_is_found_quickly_and_a_listening_one_is_not_refused(
    wandb_home: Path,
) -> None:
    problem = wandb_server_problem(NOWHERE, timeout=2.0)
    assert problem is not None and "127.0.0.1:9" in problem
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        assert wandb_server_problem(f"http://127.0.0.1:{port}", timeout=2.0) is None


def test_login_is_found_where_wandb_finds_it_and_an_explicit_online_mode_is_obeyed(
    wandb_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "no W&B login" in str(wandb_login_problem(NOWHERE))
    (wandb_home / ".netrc").write_text(f"machine 127.0.0.1:9 login user password {'k' * 40}\n")
    (wandb_home / ".netrc").chmod(0o600)
    assert wandb_login_problem(NOWHERE) is None
    # A login but no server: offline, and the reason is the network.
    assert "cannot be reached" in str(WandbLogger(save_dir=str(tmp_path))._offline_reason())

    (wandb_home / ".netrc").unlink()
    monkeypatch.setenv("WANDB_MODE", "online")
    with pytest.raises(ConfigError, match=r"WANDB_MODE=online .* no W&B login .* unset WANDB_MODE"):
        _ = WandbLogger(save_dir=str(tmp_path)).experiment
    assert not (tmp_path / "wandb").exists()


def test_wandb_config_keeps_csv_once_and_lightnings_class_still_works(tmp_path: Path) -> None:
    for overrides in (["logger=wandb"], ["logger=[csv,wandb]"], ["logger=[many,wandb]"]):
        cfg = compose_train(overrides, tmp_path)
        assert list(cfg.logger).count("csv") == 1 and "wandb" in cfg.logger, overrides
    cfg = compose_train(
        ["logger=wandb", "logger.wandb._target_=lightning.pytorch.loggers.WandbLogger"], tmp_path
    )
    entries = logger_entries(cfg, tmp_path, resuming=False)
    assert entries is not None and entries["wandb"]["_target_"] == "lit_dl.loggers.WandbLogger"


# ----------------------------------------------------------------------------------- the sweep file
def test_sweep_file_runs_lit_dl_train_with_hydra_overrides_of_existing_keys(tmp_path: Path) -> None:
    sweep = yaml.safe_load(SWEEP_FILE.read_text())
    assert sweep["metric"] == {"name": "val/auroc", "goal": "maximize"}
    chosen = {
        name: spec["values"][-1] if "values" in spec else spec["min"]
        for name, spec in sweep["parameters"].items()
    }
    # The agent's expansion (wandb_agent.Agent._command_run): ${env} is /usr/bin/env, ${program} the
    # program, ${args_no_hyphens} one name=value per parameter. (wandb's helper for the last lives in
    # wandb.sdk.launch, 5 s to import.)
    macros = {
        "env": [],
        "program": [sweep["program"]],
        "args_no_hyphens": [f"{k}={v}" for k, v in chosen.items()],
    }
    command: list[str] = []
    for chunk in sweep["command"]:
        command += macros[chunk[2:-1]] if chunk.startswith("${") else [chunk]
    assert command[:2] == ["lit-dl", "train"] and "logger=wandb" in command
    validate_overrides("train", command[2:])  # unknown keys and mistyped values: ConfigError
    cfg = compose_train(command[2:], tmp_path)
    assert cfg.model.optimizer.lr == 0.0001 and cfg.model.net.dropout == 0.5 and cfg.data.batch_size == 256


# ----------------------------------------------------------------------------------- images, checkpoints
class _LoggedBoringModel(BoringModel):
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val/loss", self.step(batch))


def test_log_images_reaches_wandb_and_tensorboard_and_log_model_all_uploads_every_write(
    wandb_home: Path, tmp_path: Path, wandb_offline_run: Callable[[Path], tuple[Path, list[dict]]]
) -> None:
    png = tmp_path / "grid.png"
    Image.fromarray(np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)).save(png)

    class ShowImage(L.Callback):
        def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            log_images(trainer, {"samples/grid": png}, step=trainer.global_step)

    wandb_logger = WandbLogger(save_dir=str(tmp_path), offline=True, log_model="all", project="lit-dl")
    tensorboard = TensorBoardLogger(str(tmp_path), name="tensorboard", version="")
    checkpoints = tmp_path / "checkpoints"
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        limit_train_batches=2,
        limit_val_batches=1,
        log_every_n_steps=1,
        logger=[wandb_logger, tensorboard],
        callbacks=[
            ModelCheckpoint(
                dirpath=checkpoints, filename="best", monitor="val/loss", enable_version_counter=False
            ),
            ModelCheckpoint(
                dirpath=checkpoints, filename="last", monitor="step", mode="max", enable_version_counter=False
            ),
            ShowImage(),
        ],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    torch.manual_seed(0)
    trainer.fit(_LoggedBoringModel())
    finish_loggers(trainer.loggers)

    records = wandb_offline_run(tmp_path)[1]
    (row,) = [r for r in history(records) if "samples/grid._type" in r]
    assert row["trainer/global_step"] == 4 and row["samples/grid.count"] == 1
    offline_run = next((tmp_path / "wandb").glob("offline-run-*"))
    assert (offline_run / "files" / row["samples/grid.filenames"][0]).is_file()

    # "all": a version each time a checkpoint is written (last.ckpt: at both epochs' ends).
    versions: dict[str, int] = {}
    for artifact in artifacts(records):
        versions[artifact["name"]] = versions.get(artifact["name"], 0) + 1
    run_id = wandb_logger.version
    assert versions[f"model-{run_id}-last"] == 2 and 1 <= versions[f"model-{run_id}-best"] <= 2

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(tensorboard.log_dir, size_guidance={"images": 0})
    events.Reload()
    assert "samples/grid" in events.Tags()["images"]
    (image,) = events.Images("samples/grid")
    assert (image.width, image.height, image.step) == (8, 8, 4)
