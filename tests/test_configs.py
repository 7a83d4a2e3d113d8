"""Every shipped config composes, and its components instantiate."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from lit_dl.cli import CONFIG_DIR


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def compose_train(overrides: list[str], output_dir: Path, verb: str = "train"):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(verb, overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)  # ${hydra:runtime.output_dir} exists only inside a Hydra run
    return cfg


def test_configs_ship_inside_the_package() -> None:
    assert CONFIG_DIR.parent.name == "lit_dl"
    for name in ("train", "eval", "predict", "sample", "embed", "report"):
        assert (CONFIG_DIR / f"{name}.yaml").is_file()
    top_level = Path(__file__).resolve().parents[1] / "configs"
    assert top_level.resolve() == CONFIG_DIR.resolve()


# Experiments on the user's own file (forecast_lstm) leave these to the command line.
USER_DATA_KEYS = {"data.path", "data.time_column", "data.target"}


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiment_composes_and_builds(experiment: str, tmp_path: Path) -> None:
    cfg = compose_train([f"experiment={experiment}"], tmp_path)
    missing = OmegaConf.missing_keys(cfg)
    assert missing <= USER_DATA_KEYS, missing
    for key in missing:
        OmegaConf.update(cfg, key, "series.csv")  # any value: building reads no file
    datamodule = instantiate(cfg.data, _convert_="all")
    assert datamodule.batch_size > 0


@pytest.mark.parametrize("group", ["trainer", "logger", "callbacks", "debug", "model"])
def test_every_group_option_composes(group: str, tmp_path: Path) -> None:
    for option in options(group):
        cfg = compose_train([f"{group}={option}"], tmp_path)
        if group == "trainer":
            if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
                continue  # gpu, ddp, fsdp: need a GPU to instantiate
            trainer = instantiate(cfg.trainer, logger=False)
            assert trainer.max_epochs == cfg.trainer.max_epochs
        elif group in ("callbacks", "logger"):
            for name, node in (cfg.get(group) or {}).items():
                if name == "wandb" or node is None:
                    continue  # W&B starts a service (see test_cli.test_all_loggers_offline); null: removed
                assert instantiate(node) is not None


def test_default_train_config_is_the_churn_mlp_experiment(tmp_path: Path) -> None:
    plain = compose_train([], tmp_path)
    experiment = compose_train(["experiment=churn_mlp"], tmp_path)
    for key in ("data", "model", "trainer", "callbacks", "seed"):
        assert plain[key] == experiment[key], key


@pytest.mark.parametrize("verb", ["eval", "predict", "sample", "embed"])
def test_inference_configs_require_a_checkpoint(verb: str, tmp_path: Path) -> None:
    cfg = compose_train([], tmp_path, verb=verb)
    assert "ckpt_path" in OmegaConf.missing_keys(cfg)


@pytest.mark.parametrize("experiment", ["churn_mlp", "adult_ctgan", "churn_ctgan"])
def test_two_checkpoint_callbacks_a_checkpoint_cannot_tell_apart_are_refused_by_key(
    experiment: str, tmp_path: Path
) -> None:
    from lit_dl.errors import ConfigError
    from lit_dl.verbs.common import build_callbacks

    cfg = compose_train([f"experiment={experiment}", "callbacks.progress_bar=null"], tmp_path)
    names = [type(c).__name__ for c in build_callbacks(cfg.callbacks)]  # the experiment's own: accepted
    assert names.count("ModelCheckpoint") == 2
    clash = compose_train(
        [
            f"experiment={experiment}",
            "callbacks.model_checkpoint.monitor=step",  # what callbacks.last_checkpoint monitors
            "callbacks.model_checkpoint.mode=max",
            "callbacks.early_stopping=null",
        ],
        tmp_path,
    )
    with pytest.raises(
        ConfigError, match=r"callbacks\.model_checkpoint and callbacks\.last_checkpoint .*monitor=null"
    ):
        build_callbacks(clash.callbacks)


def test_callbacks_none_with_an_experiment_that_tunes_its_callbacks_builds_none(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # experiment=digits_vae sets model_checkpoint.monitor and early_stopping.patience; callbacks=none has
    # neither callback, so only those settings are left (no _target_): nothing to build, and it says so.
    from lit_dl.verbs.common import build_callbacks

    cfg = compose_train(["experiment=digits_vae", "callbacks=none"], tmp_path)
    with caplog.at_level("WARNING"):
        assert build_callbacks(cfg.callbacks) == []
    assert "callbacks.model_checkpoint has settings (monitor, mode) but no _target_" in caplog.text
