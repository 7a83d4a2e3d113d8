"""``lit-dl tune``: trials, pruning, resume, the best experiment, search-space files; Hydra's multirun."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from omegaconf import DictConfig

from lit_dl import runs
from lit_dl.cli import CONFIG_DIR, main
from lit_dl.errors import ConfigError
from lit_dl.verbs.tune import param_values, parse_search_space, read_settings, suggest

# Tiny trials: 400 customers, at most 2 epochs, no plots or progress bars.
QUICK = [
    "data.n_rows=400",
    "tune.max_epochs=2",
    "callbacks.progress_bar=null",
    "callbacks.model_summary=null",
    "callbacks.plots=null",
]
SEARCH = ["hparams_search=churn_mlp", *QUICK]


def load_study(run_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name=None, storage=f"sqlite:///{run_dir / 'study.db'}")


def resume_args(run_dir: Path, *changes: str) -> list[str]:
    """The command line that continues the search in ``run_dir`` (runs.resume_overrides fills in the
    search's own overrides and folder)."""
    return ["tune", f"resume={run_dir}", *changes]


@pytest.fixture(scope="module")
def search(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> Path:
    """Two finished trials of the churn MLP search (the median pruner waits for two trials)."""
    run_dir = tmp_path_factory.mktemp("tune") / "search"
    main(["tune", *SEARCH, "tune.n_trials=2", f"hydra.run.dir={run_dir}"])
    return run_dir


def test_search_writes_results_and_the_best_experiment_retrains_its_score(search: Path) -> None:
    results = json.loads((search / "metrics.json").read_text())
    assert results["trials"] == {"completed": 2, "pruned": 0, "failed": 0}
    assert results["metric"] == "val/loss" and results["direction"] == "minimize"  # from model_checkpoint
    table = pd.read_csv(search / "trials.csv")
    assert table["number"].tolist() == [0, 1] and set(table["state"]) == {"COMPLETE"}
    assert results["best_value"] == pytest.approx(table["value"].min())
    best = search / "trials" / f"{results['best_trial']:04d}"
    assert json.loads((best / "trial.json").read_text())["state"] == "completed"
    # Categorical lists come back as lists; each trial trained the sampled values, within the epoch cap.
    params = results["best_params"]
    assert isinstance(params["model.net.hidden_sizes"], list)
    trained = yaml.safe_load((best / "config.yaml").read_text())
    assert trained["model"]["net"]["hidden_sizes"] == params["model.net.hidden_sizes"]
    assert trained["model"]["optimizer"]["lr"] == pytest.approx(params["model.optimizer.lr"])
    assert trained["trainer"]["max_epochs"] == 2
    # The pruner saw one value per epoch of fit (not the best checkpoint's validation after it).
    assert [sorted(t.intermediate_values) for t in load_study(search).trials] == [[0, 1], [0, 1]]
    assert (search / "plots" / "optimization_history.png").stat().st_size > 0
    assert (search / "plots" / "param_importances.png").stat().st_size > 0

    # The best experiment is an experiment file that `lit-dl train` runs as is: same config, same score.
    experiment = Path(results["best_experiment"])
    assert experiment == search / "best" / "experiment" / "best.yaml"
    text = experiment.read_text()
    assert text.startswith("# @package _global_") and "- churn_mlp" in text
    retrain = search.parent / "retrain"
    main(
        [
            "train",
            f"hydra.searchpath=[file://{search / 'best'}]",
            "experiment=best",
            f"hydra.run.dir={retrain}",
        ]
    )
    retrained = json.loads((retrain / "metrics.json").read_text())
    assert retrained["val/loss"] == pytest.approx(results["best_value"], rel=1e-4)


def test_resume_runs_only_the_missing_trials_and_retries_a_cut_off_one(search: Path) -> None:
    study = load_study(search)
    first = {t.number: t.datetime_complete for t in study.trials}
    # A trial that was running when its process died: still RUNNING in the study.
    cut_off = study.ask()
    cut_off.suggest_float("model.optimizer.lr", 3e-4, 3e-2, log=True)

    main(resume_args(search, "tune.n_trials=4"))

    trials = load_study(search).trials
    assert [t.datetime_complete for t in trials[:2]] == [first[0], first[1]]  # not run again
    interrupted = trials[cut_off.number]
    assert interrupted.state == optuna.trial.TrialState.FAIL and interrupted.user_attrs["interrupted"]
    retry = [t for t in trials if t.user_attrs.get("retry_of") == cut_off.number]
    assert len(retry) == 1 and retry[0].params["model.optimizer.lr"] == cut_off.params["model.optimizer.lr"]
    finished = [t for t in trials if t.state != optuna.trial.TrialState.FAIL]
    assert len(finished) == 4  # n_trials counts the finished trials of both sessions
    results = json.loads((search / "metrics.json").read_text())
    assert sum(results["trials"].values()) == 5


def test_pruned_trials_are_recorded_and_the_search_goes_on(tmp_path: Path) -> None:
    # val/loss is never below 0: a threshold pruner with upper=0 must prune every trial at its first
    # validation. W&B (offline, idle under fast_dev_run): every trial in the study's group.
    run_dir = tmp_path / "pruned"
    main(
        [
            "tune",
            *SEARCH,
            "tune.n_trials=2",
            "tune.pruner=threshold",
            "tune.pruners.threshold.upper=0.0",
            "logger=[csv,wandb]",
            "logger.wandb.offline=true",
            "debug=fast_dev_run",
            f"hydra.run.dir={run_dir}",
        ]
    )
    results = json.loads((run_dir / "metrics.json").read_text())
    assert results["trials"] == {"completed": 0, "pruned": 2, "failed": 0}
    assert "best_params" not in results and not (run_dir / "best").exists()
    for number in (0, 1):
        folder = run_dir / "trials" / f"{number:04d}"
        record = json.loads((folder / "trial.json").read_text())
        assert record["state"] == "pruned" and "epoch 0" in record["reason"]
        wandb = yaml.safe_load((folder / "config.yaml").read_text())["logger"]["wandb"]
        assert (wandb["group"], wandb["name"]) == (run_dir.name, f"trial-{number}")


def test_an_unknown_key_in_the_search_space_is_one_line(fail_cli: Callable[..., str], tmp_path: Path) -> None:
    space = "tune.search_space={model.optimizer.lrr:{type:float,low:0.001,high:0.1}}"
    line = fail_cli("tune", space, f"hydra.run.dir={tmp_path / 'run'}")
    assert "tune.search_space['model.optimizer.lrr']: 'model.optimizer.lrr' is not a config key" in line
    assert not (tmp_path / "run").exists()  # nothing left behind


@pytest.fixture(scope="module")
def tune_config() -> DictConfig:
    return runs.compose_job(CONFIG_DIR, "tune", [])


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"type": "flaot", "low": 0.001, "high": 0.1}, "type must be float, int or categorical, got 'flaot'"),
        ({"type": "float", "low": 0.1, "high": 0.001}, "low (0.1) must be below high (0.001)"),
        ({"type": "float", "low": 0, "high": 0.1, "log": True}, "log: true needs low > 0"),
        (
            {"type": "float", "lo": 0.1, "high": 0.2},
            "unknown field 'lo' (a float takes high, log, low, step)",
        ),
        ({"type": "int", "low": 1.5, "high": 4}, "must be a whole number"),
        ({"type": "categorical", "choices": []}, "choices must be a non-empty list"),
        (0.01, "type must be float, int or categorical (as in {type: float"),
    ],
)
def test_a_bad_distribution_is_named(tune_config: DictConfig, entry: object, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_search_space({"model.optimizer.lr": entry}, tune_config)
    assert str(error.value).startswith("tune.search_space['model.optimizer.lr']") and expected in str(
        error.value
    )
    with pytest.raises(ConfigError, match="holds a list, not a number"):
        parse_search_space({"model.net.hidden_sizes": {"type": "int", "low": 1, "high": 4}}, tune_config)


def test_search_values_reach_the_config(tune_config: DictConfig) -> None:
    space = parse_search_space(
        {
            "model.net.hidden_sizes": {"type": "categorical", "choices": [[64], [128, 64]]},
            "+model.net.extra": {"type": "int", "low": 1, "high": 8, "step": 1},
        },
        tune_config,
    )
    assert [d.override for d in space] == ["model.net.hidden_sizes", "+model.net.extra"]
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    values = [suggest(trial, d) for d in space]
    assert values[0] in ([64], [128, 64]) and 1 <= values[1] <= 8
    assert param_values(space, trial.params) == {
        "model.net.hidden_sizes": values[0],
        "model.net.extra": values[1],
    }


def test_every_search_space_file_composes_and_names_real_keys() -> None:
    # Nested defaults: tune.yaml includes train.yaml (and its experiment group); hparams_search picks
    # an experiment, which the command line's experiment= still overrides.
    files = sorted(p.stem for p in (CONFIG_DIR / "hparams_search").glob("*.yaml"))
    assert {
        "churn_mlp",
        "churn_lstm",
        "digits_cnn",
        "forecast_lstm",
        "text_lstm",
        "digits_vae",
        "digits_gan",
    } <= set(files)
    for name in files:
        cfg = runs.compose_job(CONFIG_DIR, "tune", [f"hparams_search={name}"])
        assert cfg.hydra.runtime.choices.experiment == name and cfg.task_name == "tune"
        assert parse_search_space(cfg.tune.search_space, cfg)
        assert read_settings(cfg).direction == "minimize"
    cfg = runs.compose_job(
        CONFIG_DIR, "tune", ["hparams_search=churn_lstm", "experiment=churn_rnn", "data.n_customers=50"]
    )
    assert cfg.model.net.cell == "rnn" and cfg.data.n_customers == 50
    assert str(cfg.hydra.run.dir).startswith("logs/tune/runs/")


def test_hydra_multirun_grid_of_train(tmp_path: Path, one_thread: None) -> None:
    sweep = tmp_path / "sweep"
    main(
        [
            "train",
            "-m",
            "model.optimizer.lr=0.001,0.01",
            "debug=fast_dev_run",
            *QUICK[:1],
            f"hydra.sweep.dir={sweep}",
        ]
    )
    rates = sorted(
        yaml.safe_load((sweep / str(job) / "config.yaml").read_text())["model"]["optimizer"]["lr"]
        for job in (0, 1)
    )
    assert rates == [0.001, 0.01]
    assert all((sweep / str(job) / "metrics.json").is_file() for job in (0, 1))
