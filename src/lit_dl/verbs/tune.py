"""``lit-dl tune``: hyperparameter search with Optuna.

Each trial is one complete ``train`` run (:func:`~lit_dl.verbs.train.train_job`) in
``<run>/trials/<NNNN>/``, with the values Optuna chose for the keys of ``tune.search_space`` (set by
``hparams_search=NAME``). Optuna's pruner stops a trial whose validation metric falls behind
(``optuna_integration.PyTorchLightningPruningCallback``, reporting after every validation); its
folder's ``trial.json`` says ``pruned`` and the search goes on.

The study lives in ``<run>/study.db`` (SQLite): ``lit-dl tune resume=<run>`` continues a stopped
search in its folder. Finished trials are kept; a trial that was running when the search died is
marked failed and ``interrupted`` and its parameters are tried again; ``tune.n_trials`` counts every
finished trial of every session. ``tune.n_jobs=N`` runs N trials at once in worker processes that
share the study.

At the end: ``trials.csv``, ``metrics.json`` (best value, parameters and the best trial's metrics),
``plots/optimization_history.png`` and ``plots/param_importances.png``, and the best parameters as
an experiment that ``lit-dl train`` runs as is (``best/experiment/best.yaml``; the command is printed).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import lightning as L
import optuna
import torch
from lightning.pytorch.trainer.states import TrainerFn
from omegaconf import DictConfig, OmegaConf, open_dict
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState
from optuna_integration import PyTorchLightningPruningCallback

from lit_dl.errors import ConfigError, LitDLError, TrainingError
from lit_dl.loggers import wandb_job_updates
from lit_dl.runs import check_resumed_config
from lit_dl.utils import atomic_write_text, to_plain, write_csv, write_json
from lit_dl.verbs.common import start, write_run_config
from lit_dl.verbs.train import train_job

log = logging.getLogger(__name__)

STUDY_FILE = "study.db"
TRIALS_DIR = "trials"
TRIAL_FILE = "trial.json"
BEST_DIR = "best"
# The search-space files shipped with lit_dl (hparams_search=NAME).
SEARCH_SPACES = Path(__file__).resolve().parent.parent / "configs" / "hparams_search"
# User attributes of a trial: cut off by a stopped search (then tried again), and the trial it retries.
INTERRUPTED = "interrupted"
RETRY_OF = "retry_of"

SAMPLERS: dict[str, type[optuna.samplers.BaseSampler]] = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "qmc": optuna.samplers.QMCSampler,
}
PRUNERS: dict[str, type[optuna.pruners.BasePruner]] = {
    "median": optuna.pruners.MedianPruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "threshold": optuna.pruners.ThresholdPruner,
    "none": optuna.pruners.NopPruner,
}
# Trials that raise these fail and the search goes on (the next settings may train); any other
# error (a config or data problem, which every trial would meet) stops the search.
TRIAL_ERRORS: tuple[type[Exception], ...] = (TrainingError, torch.OutOfMemoryError)


# ---------------------------------------------------------------------------------------- search space
@dataclass(frozen=True)
class Dimension:
    """One searched config key: its Optuna distribution and, for categorical choices Optuna cannot
    store (lists, mappings), the label it stores for each."""

    key: str
    distribution: BaseDistribution
    add: bool = False  # "+key": a key the config lacks, added on purpose
    labels: Mapping[str, Any] = field(default_factory=dict)

    @property
    def override(self) -> str:
        """The key as :func:`~lit_dl.verbs.train.train_job` takes it."""
        return f"+{self.key}" if self.add else self.key

    def value(self, stored: Any) -> Any:
        """The config value of what Optuna stored for this key."""
        return self.labels.get(stored, stored) if isinstance(stored, str) else stored


_FIELDS = {
    "float": {"low", "high", "log", "step"},
    "int": {"low", "high", "log", "step"},
    "categorical": {"choices"},
}
_ABSENT = object()


def parse_search_space(node: Any, cfg: DictConfig) -> list[Dimension]:
    """Check ``tune.search_space`` against the config; every problem is one line naming the key.

    Each entry maps a dotted config key to ``{type: float|int, low, high, log, step}`` or
    ``{type: categorical, choices: [...]}``; ``+key`` adds a key the config lacks.
    """
    entries = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    if not entries:
        shipped = ", ".join(sorted(p.stem for p in SEARCH_SPACES.glob("*.yaml")))
        raise ConfigError(
            f"tune.search_space is empty: choose one with hparams_search=NAME ({shipped}), "
            "or write your own (docs/tuning.md)"
        )
    if not isinstance(entries, Mapping):
        raise ConfigError(f"tune.search_space must map config keys to distributions, got {entries!r}")
    return [_dimension(str(key), spec, cfg) for key, spec in entries.items()]


def _dimension(key: str, spec: Any, cfg: DictConfig) -> Dimension:
    where = f"tune.search_space['{key}']"
    name, add = key.removeprefix("+"), key.startswith("+")
    current = OmegaConf.select(cfg, name, default=_ABSENT, throw_on_resolution_failure=False)
    if not add and current is _ABSENT:
        raise ConfigError(
            f"{where}: '{name}' is not a config key; check its spelling (lit-dl train --cfg job lists "
            f"every key), or write '+{name}' to add it on purpose"
        )
    if name.split(".")[0] in ("tune", "hydra"):
        raise ConfigError(f"{where}: the search cannot change tune.* or hydra.* keys")
    if not isinstance(spec, Mapping) or spec.get("type") not in _FIELDS:
        kind = spec.get("type") if isinstance(spec, Mapping) else None
        raise ConfigError(
            f"{where}: type must be float, int or categorical"
            + (
                f", got {kind!r}"
                if kind is not None
                else f" (as in {{type: float, low: 0.0001, high: 0.1}}), got {spec!r}"
            )
        )
    kind = str(spec["type"])
    unknown = sorted(set(spec) - _FIELDS[kind] - {"type"})
    if unknown:
        raise ConfigError(
            f"{where}: unknown field '{unknown[0]}' (a {kind} takes {', '.join(sorted(_FIELDS[kind]))})"
        )
    if kind == "categorical":
        return _categorical(name, add, spec.get("choices"), where)
    if isinstance(current, Mapping | Sequence) and not isinstance(current, str):
        raise ConfigError(
            f"{where}: '{name}' holds a {'mapping' if isinstance(current, Mapping) else 'list'}, not a "
            "number: search it with {type: categorical, choices: [...]}"
        )
    low, high = (_number(spec.get(bound), f"{where}.{bound}", kind) for bound in ("low", "high"))
    log_scale = spec.get("log", False)
    if not isinstance(log_scale, bool):
        raise ConfigError(f"{where}.log must be true or false, got {log_scale!r}")
    step = spec.get("step")
    if step is not None:
        step = _number(step, f"{where}.step", kind)
        if step <= 0 or log_scale:
            raise ConfigError(f"{where}.step must be > 0, and cannot go with log: true")
    if low >= high:
        raise ConfigError(f"{where}: low ({low}) must be below high ({high})")
    if log_scale and low <= 0:
        raise ConfigError(f"{where}: log: true needs low > 0, got {low}")
    if kind == "int":
        return Dimension(name, IntDistribution(int(low), int(high), log=log_scale, step=int(step or 1)), add)
    return Dimension(name, FloatDistribution(float(low), float(high), log=log_scale, step=step), add)


def _number(value: Any, where: str, kind: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if kind == "int" and not float(value).is_integer():
        raise ConfigError(f"{where} must be a whole number for type: int, got {value!r}")
    return value


def _categorical(name: str, add: bool, choices: Any, where: str) -> Dimension:
    if not isinstance(choices, Sequence) or isinstance(choices, str) or not choices:
        raise ConfigError(f"{where}.choices must be a non-empty list, got {choices!r}")
    labels: dict[str, Any] = {}
    stored: list[Any] = []
    for choice in choices:
        if choice is None or isinstance(choice, bool | int | float | str):
            stored.append(choice)
        else:  # Optuna stores numbers, text, booleans and None; a list or mapping is stored as its JSON
            label = json.dumps(choice)
            labels[label] = choice
            stored.append(label)
    if len(set(map(repr, stored))) < len(stored):
        raise ConfigError(f"{where}.choices holds a value twice: {choices!r}")
    return Dimension(name, CategoricalDistribution(stored), add, labels)


def suggest(trial: optuna.Trial, dimension: Dimension) -> Any:
    """The value the trial's sampler chooses for one key."""
    d = dimension.distribution
    if isinstance(d, FloatDistribution):
        return trial.suggest_float(dimension.key, d.low, d.high, step=d.step, log=d.log)
    if isinstance(d, IntDistribution):
        return trial.suggest_int(dimension.key, d.low, d.high, step=d.step, log=d.log)
    return dimension.value(trial.suggest_categorical(dimension.key, d.choices))  # type: ignore[attr-defined]


def param_values(space: Sequence[Dimension], params: Mapping[str, Any]) -> dict[str, Any]:
    """A finished trial's parameters as config values (categorical labels turned back into values)."""
    return {d.key: d.value(params[d.key]) for d in space if d.key in params}


# ---------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Settings:
    """``tune.*`` checked: what to optimise, how many trials, how the trials are chosen and pruned."""

    metric: str
    direction: str
    n_trials: int
    n_jobs: int
    timeout: float | None
    max_epochs: int | None
    seed: int | None


def read_settings(cfg: DictConfig) -> Settings:
    """``tune.*`` as :class:`Settings`; a wrong value is one line naming its key."""
    node = cfg.tune
    metric = node.get("metric")
    if not metric:
        raise ConfigError(
            "tune.metric is not set (the checkpoint callback monitors nothing): name a validation metric, "
            "e.g. tune.metric=val/loss tune.direction=minimize"
        )
    direction = node.get("direction")
    if direction is None:
        monitor = OmegaConf.select(cfg, "callbacks.model_checkpoint.monitor", default=None)
        mode = OmegaConf.select(cfg, "callbacks.model_checkpoint.mode", default=None)
        if metric != monitor or mode not in ("min", "max"):
            raise ConfigError(
                f"tune.direction: say whether tune.metric={metric} is to be minimized or maximized "
                "(tune.direction=minimize|maximize)"
            )
        direction = {"min": "minimize", "max": "maximize"}[mode]
    if direction not in ("minimize", "maximize"):
        raise ConfigError(f"tune.direction must be minimize or maximize, got {direction!r}")
    for key in ("n_trials", "n_jobs"):
        value = node.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"tune.{key} must be a whole number >= 1, got {value!r}")
    timeout = node.get("timeout")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
    ):
        raise ConfigError(f"tune.timeout must be a number of seconds > 0 (or null), got {timeout!r}")
    max_epochs = node.get("max_epochs")
    if max_epochs is not None and (
        isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 1
    ):
        raise ConfigError(f"tune.max_epochs must be a whole number >= 1 (or null), got {max_epochs!r}")
    trainer = cfg.get("trainer") or {}
    devices, strategy = trainer.get("devices", 1), str(trainer.get("strategy", "auto"))
    if "ddp" in strategy or "fsdp" in strategy or (isinstance(devices, int) and devices > 1):
        raise ConfigError(
            "tune runs each trial in one process on one device: drop trainer.strategy/devices "
            "(tune.n_jobs=N runs N trials at once)"
        )
    return Settings(
        metric=str(metric),
        direction=str(direction),
        n_trials=int(node.n_trials),
        n_jobs=int(node.n_jobs),
        timeout=float(timeout) if timeout is not None else None,
        max_epochs=max_epochs,
        seed=node.get("seed"),
    )


def build_sampler(node: DictConfig, seed: int | None) -> optuna.samplers.BaseSampler:
    """``tune.sampler`` (a name) with its arguments ``tune.samplers.<name>``, seeded."""
    name = str(node.get("sampler"))
    if name not in SAMPLERS:
        raise ConfigError(f"tune.sampler={name}: choose one of {', '.join(SAMPLERS)}")
    options = OmegaConf.to_container(node.get("samplers", {}).get(name) or {}, resolve=True)
    try:
        return SAMPLERS[name](seed=seed, **options)  # type: ignore[arg-type]
    except (TypeError, ValueError) as err:
        raise ConfigError(f"tune.samplers.{name}: {err}") from None


def build_pruner(node: DictConfig) -> optuna.pruners.BasePruner:
    """``tune.pruner`` (a name; ``none`` or null: no pruning) with its arguments ``tune.pruners.<name>``."""
    name = str(node.get("pruner") or "none")
    if name not in PRUNERS:
        raise ConfigError(f"tune.pruner={name}: choose one of {', '.join(PRUNERS)}")
    options = OmegaConf.to_container(node.get("pruners", {}).get(name) or {}, resolve=True)
    try:
        return PRUNERS[name](**options)  # type: ignore[arg-type]
    except (TypeError, ValueError) as err:
        raise ConfigError(f"tune.pruners.{name}: {' '.join(str(err).split())}") from None


# ---------------------------------------------------------------------------------------- trials
def trial_dir(run_dir: Path, number: int) -> Path:
    return run_dir / TRIALS_DIR / f"{number:04d}"


def write_trial_record(folder: Path, number: int, state: str, **fields: Any) -> None:
    """``<trial>/trial.json``: the trial's number, state (running, completed, pruned, failed) and why."""
    path = folder / TRIAL_FILE
    try:
        record = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        record = {}
    record.update(
        number=number, state=state, updated=datetime.now().astimezone().isoformat(timespec="seconds")
    )
    record.update(to_plain(fields))
    folder.mkdir(parents=True, exist_ok=True)
    write_json(path, record)


def wandb_updates(cfg: DictConfig, study_name: str, number: int) -> dict[str, Any]:
    """Every W&B logger of a trial logs into one group (the study's, unless the config names one) as
    run ``trial-<number>``."""
    return wandb_job_updates(cfg, study_name, f"trial-{number}")


def epoch_cap(cfg: DictConfig, max_epochs: int | None) -> dict[str, Any]:
    """``trainer.max_epochs`` of a trial: at most ``tune.max_epochs``."""
    current = OmegaConf.select(cfg, "trainer.max_epochs", default=None)
    if max_epochs is None or (isinstance(current, int) and 0 < current <= max_epochs):
        return {}
    return {"trainer.max_epochs": max_epochs}


class FitPruning(PyTorchLightningPruningCallback):
    """Optuna's Lightning pruning callback (it works with ``lightning.pytorch`` 2.6 as it is), reporting
    the validations of ``fit`` only: ``train`` validates the best checkpoint again after fitting, and
    that is no epoch of the trial (reported, it would add a step after the last and could prune a
    trial that finished)."""

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_validation_end(trainer, pl_module)


class Objective:
    """One trial: the sampled values applied to the config, trained with pruning, scored by the metric."""

    def __init__(
        self, cfg: DictConfig, run_dir: Path, space: Sequence[Dimension], settings: Settings, study_name: str
    ) -> None:
        self.cfg, self.run_dir, self.space = cfg, run_dir, list(space)
        self.settings, self.study_name = settings, study_name

    def __call__(self, trial: optuna.Trial) -> float:
        values = {d.override: suggest(trial, d) for d in self.space}
        folder = trial_dir(self.run_dir, trial.number)
        params = {key.removeprefix("+"): value for key, value in values.items()}
        write_trial_record(folder, trial.number, "running", params=params, **retry_fields(trial))
        updates = {
            **values,
            # Trials are chosen on validation; the test split is left to the best config's own run.
            "test": False,
            **epoch_cap(self.cfg, self.settings.max_epochs),
            **wandb_updates(self.cfg, self.study_name, trial.number),
        }
        again = f" (trial {trial.user_attrs[RETRY_OF]} again)" if RETRY_OF in trial.user_attrs else ""
        log.info("trial %d%s: %s", trial.number, again, ", ".join(f"{k}={v}" for k, v in params.items()))
        pruning = FitPruning(trial, monitor=self.settings.metric)
        try:
            metrics = train_job(self.cfg, folder, updates, [pruning])
        except optuna.TrialPruned as err:
            write_trial_record(folder, trial.number, "pruned", reason=str(err))
            log.info("trial %d pruned: %s", trial.number, err)
            raise
        except Exception as err:
            write_trial_record(folder, trial.number, "failed", reason=" ".join(str(err).split()))
            raise
        except BaseException:  # Ctrl-C, SystemExit: the search stops; a resumed one tries it again
            trial.set_user_attr(INTERRUPTED, True)
            write_trial_record(folder, trial.number, "failed", reason="interrupted: the search was stopped")
            raise
        value = metrics.get(self.settings.metric)
        if value is None:
            logged = ", ".join(sorted(k for k in metrics if k.startswith("val/"))) or "none"
            write_trial_record(
                folder, trial.number, "failed", reason=f"{self.settings.metric} was not logged"
            )
            raise ConfigError(
                f"tune.metric={self.settings.metric} was not logged by trial {trial.number} "
                f"(validation metrics: {logged}): name one of them"
            )
        if not math.isfinite(value):
            write_trial_record(folder, trial.number, "failed", reason=f"{self.settings.metric} is {value}")
            return float("nan")  # (Optuna records the trial as failed; the search goes on)
        write_trial_record(folder, trial.number, "completed", value=value, metric=self.settings.metric)
        return float(value)


def retry_fields(trial: optuna.Trial) -> dict[str, Any]:
    """``retry_of`` when this trial tries again the parameters of one a stopped search cut off."""
    retried = trial.user_attrs.get(RETRY_OF)
    return {RETRY_OF: retried} if retried is not None else {}


def counted(trial: FrozenTrial) -> bool:
    """Whether a trial counts towards ``tune.n_trials``: finished, and not cut off by a stopped search."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and not trial.user_attrs.get(INTERRUPTED)


def recover_interrupted(storage: optuna.storages.BaseStorage, study_name: str, run_dir: Path) -> list[int]:
    """After a stopped search: trials still marked running are failed and ``interrupted``, and every
    interrupted trial not yet retried is queued again with its parameters. Returns their numbers.

    Only one search holds the run folder (its lock), so a running trial here is one whose process died.
    (Optuna's own heartbeat-based recovery would wait out a grace period to learn the same.)
    """
    study_id = storage.get_study_id_from_name(study_name)
    for t in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        storage.set_trial_user_attr(trial_id, INTERRUPTED, True)
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
    study = optuna.load_study(study_name=study_name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get(RETRY_OF) for t in trials}
    queued = []
    for t in trials:
        if t.state == TrialState.FAIL and t.user_attrs.get(INTERRUPTED) and t.number not in retried:
            study.enqueue_trial(dict(t.params), user_attrs={RETRY_OF: t.number})
            write_trial_record(
                trial_dir(run_dir, t.number),
                t.number,
                "failed",
                reason="interrupted: the search stopped while this trial ran; its parameters are tried again",
            )
            queued.append(t.number)
    return queued


# ---------------------------------------------------------------------------------------- the verb
def tune(cfg: DictConfig) -> dict[str, Any]:
    """Search ``tune.search_space`` with Optuna; return (and write to ``metrics.json``) the best result."""
    start(cfg)
    run_dir = Path(cfg.paths.output_dir).absolute()
    settings = read_settings(cfg)
    space = parse_search_space(cfg.tune.get("search_space"), cfg)
    sampler, pruner = build_sampler(cfg.tune, settings.seed), build_pruner(cfg.tune)
    resuming = bool(cfg.get("resume"))
    if resuming:
        check_resume(cfg, run_dir)
    write_run_config(run_dir, cfg)
    _quiet_optuna()

    storage = study_storage(run_dir)
    # (a resumed search keeps its study's name, also in a folder renamed since)
    study_name = optuna.get_all_study_names(storage)[0] if resuming else run_dir.name
    if resuming:
        for number in recover_interrupted(storage, study_name, run_dir):
            log.info("trial %d was cut off when the search stopped: its parameters are tried again", number)
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=study_name,
            direction=settings.direction,
            sampler=sampler,
            pruner=pruner,
            load_if_exists=resuming,
        )
    except optuna.exceptions.DuplicatedStudyError:
        raise ConfigError(f"{run_dir / STUDY_FILE} holds a study already: continue it with resume=") from None
    done = sum(counted(t) for t in study.get_trials(deepcopy=False))
    remaining = settings.n_trials - done
    log.info(
        "tune: %s %s over %d key(s); %d of %d trials done, %d to run%s; study %s",
        settings.direction,
        settings.metric,
        len(space),
        done,
        settings.n_trials,
        max(remaining, 0),
        f", {settings.n_jobs} at a time" if settings.n_jobs > 1 and remaining > 1 else "",
        run_dir / STUDY_FILE,
    )
    if remaining > 0:
        # Each session's sampler starts from its own seed: a resumed search does not repeat the
        # random start-up trials of the first session.
        seed = None if settings.seed is None else int(settings.seed) + len(study.trials)
        if settings.n_jobs == 1 or remaining == 1:
            study.sampler = build_sampler(cfg.tune, seed)
            optimize(study, Objective(cfg, run_dir, space, settings, study_name), remaining, settings.timeout)
        else:
            run_workers(cfg, run_dir, study_name, settings, remaining, seed)
        study = optuna.load_study(study_name=study_name, storage=storage)
    return write_results(cfg, study, run_dir, space, settings)


def optimize(study: optuna.Study, objective: Objective, n_trials: int, timeout: float | None) -> None:
    """``study.optimize``: a trial that raises :data:`TRIAL_ERRORS` fails and the search goes on."""
    study.optimize(objective, n_trials=n_trials, timeout=timeout, catch=TRIAL_ERRORS, gc_after_trial=True)


def study_storage(run_dir: Path) -> optuna.storages.RDBStorage:
    """The study's SQLite file in the run folder; writers wait for each other (parallel trials)."""
    return optuna.storages.RDBStorage(
        f"sqlite:///{run_dir / STUDY_FILE}", engine_kwargs={"connect_args": {"timeout": 60}}
    )


def check_resume(cfg: DictConfig, run_dir: Path) -> None:
    """A resumed search continues in its own folder, with its own config (limits and trial counts aside)."""
    if Path(str(cfg.resume)).absolute().resolve() != run_dir.resolve():
        raise ConfigError(
            f"resume={cfg.resume} continues a search in its own folder, but this one runs in {run_dir}: "
            "give resume= on the command line (lit-dl tune resume=DIR)"
        )
    if not (run_dir / STUDY_FILE).is_file():
        raise ConfigError(f"{run_dir} holds no {STUDY_FILE}: start a new search instead (drop resume=)")
    # (runs.CHANGEABLE_ON_RESUME lets tune.n_trials, tune.timeout and tune.n_jobs change.)
    check_resumed_config(cfg, run_dir)


# ---------------------------------------------------------------------------------------- parallel trials
def run_workers(
    cfg: DictConfig, run_dir: Path, study_name: str, settings: Settings, remaining: int, seed: int | None
) -> None:
    """``tune.n_jobs`` worker processes on the same study, each running its share of the trials.

    Processes, not threads: a training run holds process-wide state (the global generators that
    ``seed_everything`` sets, torch's thread pool, Lightning's and logging's globals) and its Python
    loop holds the GIL, so threads would mix trials' seeds and not run at once. Spawned, not forked:
    a fork of a process whose torch thread pools are running can deadlock. Each worker gets an equal
    share of the CPU threads and its own sampler seed (else they would draw the same values).
    """
    workers = min(settings.n_jobs, remaining)
    shares = [remaining // workers + (i < remaining % workers) for i in range(workers)]
    threads = max(1, torch.get_num_threads() // workers)
    config = OmegaConf.to_container(cfg, resolve=False)
    jobs = [
        {
            "config": config,
            "run_dir": str(run_dir),
            "study_name": study_name,
            "n_trials": share,
            "seed": None if seed is None else seed + 1000 * i,
            "threads": threads,
            "log": str(run_dir / f"worker_{i}.log"),
            "parent": os.getpid(),
        }
        for i, share in enumerate(shares)
    ]
    log.info(
        "%d worker processes, %d threads each; their logs: %s", workers, threads, run_dir / "worker_*.log"
    )
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(worker_main, job) for job in jobs]
        errors = [f.exception() for f in futures]
    first = next((e for e in errors if e is not None), None)
    if first is not None:
        raise first


def worker_main(job: Mapping[str, Any]) -> None:
    """One worker of ``tune.n_jobs > 1``: its share of the trials on the shared study."""
    with open(job["log"], "a", buffering=1) as stream:
        os.dup2(stream.fileno(), 1)  # the trials' console output (progress, tables) into the worker's log
        os.dup2(stream.fileno(), 2)
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr, force=True)
        threading.Thread(target=_exit_with_parent, args=(int(job["parent"]),), daemon=True).start()
        torch.set_num_threads(int(job["threads"]))
        _quiet_optuna()
        cfg = OmegaConf.create(job["config"])
        run_dir = Path(job["run_dir"])
        settings = read_settings(cfg)
        space = parse_search_space(cfg.tune.get("search_space"), cfg)
        study = optuna.load_study(
            study_name=job["study_name"],
            storage=study_storage(run_dir),
            sampler=build_sampler(cfg.tune, job["seed"]),
            pruner=build_pruner(cfg.tune),
        )
        objective = Objective(cfg, run_dir, space, settings, job["study_name"])
        optimize(study, objective, int(job["n_trials"]), settings.timeout)


def _exit_with_parent(parent: int) -> None:
    # A worker would outlive a search killed outright (SIGKILL runs no clean-up) and go on writing to
    # a study that a resumed search then owns; Python has no portable parent-death signal, so each
    # worker checks once a second that its parent lives.
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _quiet_optuna() -> None:
    # Optuna's messages ("Trial 3 finished with value ...") through the run's log handlers, once;
    # the matplotlib plots and multivariate TPE are marked experimental: nothing a user can act on.
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    optuna_log = logging.getLogger("optuna")
    if _no_user_error_traceback not in optuna_log.filters:
        optuna_log.addFilter(_no_user_error_traceback)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def _no_user_error_traceback(record: logging.LogRecord) -> bool:
    # Optuna logs a failed trial's traceback; a user error (a config or data problem, a diverged
    # training) is its one line, already in the message.
    if record.exc_info and isinstance(record.exc_info[1], LitDLError):
        record.exc_info = None
    return True


# ---------------------------------------------------------------------------------------- results
def write_results(
    cfg: DictConfig, study: optuna.Study, run_dir: Path, space: Sequence[Dimension], settings: Settings
) -> dict[str, Any]:
    """``trials.csv``, the plots, the best experiment and ``metrics.json``; returns what it holds."""
    trials = study.get_trials(deepcopy=False)
    frame = study.trials_dataframe(attrs=("number", "state", "value", "duration", "params", "user_attrs"))
    write_csv(frame, run_dir / "trials.csv")
    states = {
        s.name.lower(): sum(t.state == s for t in trials)
        for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    }
    result: dict[str, Any] = {
        "metric": settings.metric,
        "direction": settings.direction,
        "trials": {"completed": states["complete"], "pruned": states["pruned"], "failed": states["fail"]},
        "study": str(run_dir / STUDY_FILE),
    }
    for picture in write_plots(study, run_dir / "plots", len(space)):
        log.info("plot: %s", picture)
    if not states["complete"]:
        log.warning(
            "no trial completed (pruned: %d, failed: %d): no best parameters",
            states["pruned"],
            states["fail"],
        )
        write_json(run_dir / "metrics.json", result)
        return result
    best = study.best_trial
    params = param_values(space, best.params)
    best_metrics_path = trial_dir(run_dir, best.number) / "metrics.json"
    best_metrics = json.loads(best_metrics_path.read_text()) if best_metrics_path.is_file() else {}
    experiment = write_best_experiment(cfg, run_dir, space, params, best, settings)
    result.update(
        best_value=best.value,
        best_trial=best.number,
        best_params=params,
        best_trial_metrics=best_metrics,
        best_experiment=str(experiment),
    )
    write_json(run_dir / "metrics.json", result)
    log.info(
        "best: trial %d, %s = %.6g with %s",
        best.number,
        settings.metric,
        best.value,
        ", ".join(f"{k}={v}" for k, v in params.items()),
    )
    log.info("trials: %s", ", ".join(f"{n} {state}" for state, n in result["trials"].items()))
    log.info("train with the best parameters:\n  %s", best_command(run_dir))
    return result


def write_plots(study: optuna.Study, folder: Path, n_params: int) -> Iterator[Path]:
    """Optimisation history and (from 2 completed trials and 2 parameters) parameter importance, as PNG."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    completed = sum(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False))
    folder.mkdir(parents=True, exist_ok=True)
    plots = {"optimization_history.png": optuna_plots.plot_optimization_history}
    if completed >= 2 and n_params >= 2:
        plots["param_importances.png"] = optuna_plots.plot_param_importances
    else:
        log.info(
            "no parameter-importance plot: it needs 2 completed trials and 2 searched keys (have %d and %d)",
            completed,
            n_params,
        )
    for name, plot in plots.items():
        try:
            axes = plot(study)
        except (ValueError, RuntimeError) as err:  # e.g. every completed trial with the same value
            log.warning("no %s: %s", name, " ".join(str(err).split()))
            continue
        figure = axes.figure
        figure.set_size_inches(8, 5)
        figure.tight_layout()
        figure.savefig(folder / name, dpi=100)
        plt.close(figure)
        yield folder / name


# ---------------------------------------------------------------------------------------- best experiment
# Keys of the tune config that are not train's (or that train sets itself).
_NOT_TRAIN_KEYS = ("tune", "task_name", "resume")
# Config groups of train.yaml that an experiment file may override (experiment: the base it includes).
_GROUPS = ("data", "model", "trainer", "logger", "callbacks", "paths")


def best_command(run_dir: Path) -> str:
    """The command that trains the best trial's config (its experiment file on Hydra's search path)."""
    return f"lit-dl train {_searchpath_override(run_dir / BEST_DIR)[0]} experiment=best"


def _user_searchpath() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    return [str(p) for p in (HydraConfig.get().searchpath or [])]


def write_best_experiment(
    cfg: DictConfig,
    run_dir: Path,
    space: Sequence[Dimension],
    params: Mapping[str, Any],
    best: FrozenTrial,
    settings: Settings,
) -> Path:
    """``<run>/best/experiment/best.yaml``: the search's base experiment, its config groups, and every
    value that differs from them in the best trial's config (the searched keys, the epoch cap, the
    command line's values), so that ``lit-dl train ... experiment=best`` trains that config."""
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    base = hydra_cfg.runtime.choices.get("experiment")
    groups = _group_choices(hydra_cfg)
    reference = compose(
        "train",
        overrides=[
            *_searchpath_override(),
            *(f"{group}={choice}" for group, choice in groups.items()),
            *([f"experiment={base}"] if base else []),
        ],
    )
    trained = copy.deepcopy(cfg)
    updates = {
        **{d.override: params[d.key] for d in space if d.key in params},
        **epoch_cap(cfg, settings.max_epochs),
    }
    with open_dict(trained):
        for key, value in updates.items():
            OmegaConf.update(trained, key.removeprefix("+"), value, merge=False, force_add=True)
    new = _train_part(trained)
    values = OmegaConf.create()
    for key, value in _changed(new, _train_part(reference)):
        OmegaConf.update(values, key, value, merge=False, force_add=True)
    header = [
        "# @package _global_",
        f"# The best trial ({best.number}) of the search {run_dir.name}: "
        f"{settings.metric} = {best.value:.6g}.",
        f"#   {best_command(run_dir)}",
        "defaults:",
        *([f"  - {base}   # the search's base experiment"] if base else []),
        *(f"  - override /{group}: {choice}" for group, choice in groups.items()),
        "  - _self_",
        "",
    ]
    path = run_dir / BEST_DIR / "experiment" / "best.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "\n".join(header) + OmegaConf.to_yaml(values))
    # Check the file: composed the way `lit-dl train` will, it must give the best trial's config.
    replayed = compose("train", overrides=[*_searchpath_override(run_dir / BEST_DIR), "experiment=best"])
    for key, _ in _changed(_train_part(replayed), new):
        log.warning("%s: config key %s differs from the best trial's (set it by hand)", path, key)
    return path


def _searchpath_override(*extra: Path) -> list[str]:
    """``hydra.searchpath=[...]``: the search's own (the user's config folders) and ``extra``."""
    paths = [*_user_searchpath(), *(f"file://{p}" for p in extra)]
    return [f"hydra.searchpath=[{','.join(paths)}]"] if paths else []


def _group_choices(hydra_cfg: Any) -> dict[str, str]:
    """The search's choice in each of :data:`_GROUPS` as an override value: the command line's (such
    as ``logger=[csv,wandb]``, which Hydra's choices leave out), else Hydra's (an experiment's)."""
    given = {}
    for line in hydra_cfg.overrides.task:
        key, _, value = str(line).partition("=")
        if key in _GROUPS:
            given[key] = value
    choices = hydra_cfg.runtime.choices
    return {
        group: given.get(group) or str(choices.get(group))
        for group in _GROUPS
        if group in given or choices.get(group) is not None
    }


def _train_part(cfg: DictConfig) -> dict[str, Any]:
    tree = OmegaConf.to_container(cfg, resolve=False)
    return {k: v for k, v in tree.items() if k not in (*_NOT_TRAIN_KEYS, "hydra")}  # type: ignore[union-attr]


def _changed(new: Any, old: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Dotted keys (and their new values) where ``new`` differs from ``old``; lists are compared whole."""
    if isinstance(new, dict) and isinstance(old, dict):
        for key, value in new.items():
            if key not in old:
                yield f"{prefix}{key}", value
            else:
                yield from _changed(value, old[key], f"{prefix}{key}.")
        for key in old.keys() - new.keys():
            yield f"{prefix}{key}", None  # (removed from the trial's config: null drops it)
    elif new != old:
        yield prefix.rstrip("."), new
