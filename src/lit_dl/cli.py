"""``lit-dl VERB [overrides]``: one Hydra entry point per verb.

Each verb composes its own top-level config (``configs/<verb>.yaml``) with Hydra,
so every value can be overridden on the command line and ``hydra.run.dir=DIR``
puts the run where you want. Before Hydra runs, the overrides are checked once
with Hydra's compose API so that an unknown key, a missing config option or a
value of the wrong type is reported in one line that names the key.

Distributed runs (``trainer=ddp``, torchrun, srun) start several processes of ``lit-dl``;
:mod:`lit_dl.distributed` makes them share one run directory in which only rank zero writes.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import OverrideType
from omegaconf import DictConfig, OmegaConf

from lit_dl import runs
from lit_dl.builder import allow_targets, check_hydra
from lit_dl.distributed import launch_rank, rank_overrides, relaunch_argv
from lit_dl.errors import ConfigError, LitDLError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

USAGE = """usage: lit-dl VERB [key=value ...] [hydra options]

verbs:
  train     fit a model, test its best checkpoint, write metrics.json, config.yaml, checkpoints/
  eval      test a checkpoint:            lit-dl eval ckpt_path=RUN/checkpoints/best.ckpt
  predict   predict new rows:             lit-dl predict ckpt_path=... input=new.csv output=out.csv
  sample    generate from a model:        lit-dl sample ckpt_path=... n=64 output=samples.png
  embed     a VAE's codes and segments:   lit-dl embed ckpt_path=... input=new.csv segments=auto
  report    judge a synthetic table:      lit-dl report real=a.csv synthetic=s.csv holdout=b.csv target=COL
  tune      search hyperparameters:       lit-dl tune hparams_search=churn_mlp tune.n_trials=20
  cv        k-fold cross-validation:      lit-dl cv experiment=churn_mlp cv.folds=5
  export    ONNX or TorchScript:          lit-dl export ckpt_path=... format=onnx
  list      what exists:                  lit-dl list [experiment|data|model|trainer|logger|...]

examples:
  lit-dl train                                      # default experiment: churn MLP on built-in data
  lit-dl train data=tabular data.path=customers.csv data.target=churn data.drop=[customer_id]
  lit-dl train trainer.max_epochs=5 logger=wandb logger.wandb.offline=true
  lit-dl train experiment=fashion_gan data.root=DIR  # a GAN; experiment=churn_tvae: synthetic customers
  lit-dl train experiment=churn_mlp trainer=ddp_cpu  # two processes (trainer=ddp: every GPU)
  lit-dl train resume=auto                          # continue the newest unfinished run, in its folder
  lit-dl train --cfg job                            # print the composed config and exit
"""


def _train(cfg: DictConfig) -> Any:
    from lit_dl.verbs.train import train

    return train(cfg)


def _eval(cfg: DictConfig) -> Any:
    from lit_dl.verbs.evaluate import evaluate

    return evaluate(cfg)


def _predict(cfg: DictConfig) -> Any:
    from lit_dl.verbs.predict import predict

    return predict(cfg)


def _sample(cfg: DictConfig) -> Any:
    from lit_dl.verbs.sample import sample

    return sample(cfg)


def _embed(cfg: DictConfig) -> Any:
    from lit_dl.verbs.embed import embed

    return embed(cfg)


def _tune(cfg: DictConfig) -> Any:
    from lit_dl.verbs.tune import tune

    return tune(cfg)


def _cross_validate(cfg: DictConfig) -> Any:
    from lit_dl.verbs.cv import cross_validate

    return cross_validate(cfg)


def _export(cfg: DictConfig) -> Any:
    from lit_dl.verbs.export import export

    return export(cfg)


def _synthetic_report(cfg: DictConfig) -> Any:
    from lit_dl.verbs.report import report

    return report(cfg)


# verb -> (top-level config name, function). Imports stay lazy so `lit-dl --help` is instant.
VERBS: dict[str, tuple[str, Callable[[DictConfig], Any]]] = {
    "train": ("train", _train),
    "eval": ("eval", _eval),
    "predict": ("predict", _predict),
    "sample": ("sample", _sample),
    "embed": ("embed", _embed),
    "report": ("report", _synthetic_report),
    "tune": ("tune", _tune),
    "cv": ("cv", _cross_validate),
    "export": ("export", _export),
}


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _explain_compose_error(err: Exception, verb: str) -> str:
    message = str(err)
    cause = str(err.__cause__ or "")
    if message.startswith("Could not override '") and "not in struct" in cause:
        key = message.split("'")[1]
        return (
            f"unknown config key '{key}': check its spelling (`lit-dl {verb} --cfg job` lists every key), "
            f"or add a new key on purpose with +{key}=..."
        )
    if "Could not find '" in message and "Available options in" in message:
        missing = message.split("Could not find '")[1].split("'")[0]
        group, _, option = missing.rpartition("/")
        listing = message.split("Available options in")[1].split("Config search path")[0]
        options = [line.strip() for line in listing.splitlines()[1:] if line.strip()]
        return f"no config '{option}' in group '{group}'; available: {', '.join(options)}"
    return _one_line(message + (f" ({cause})" if cause else ""))


def _type_errors(reference: DictConfig, overrides: list[Any]) -> None:
    """A string given for a key whose default is a number or a boolean is a typo (``max_epochs=ten``)."""
    for override in overrides:
        key = override.key_or_group
        value = override.value()
        old = OmegaConf.select(reference, key, default=None, throw_on_resolution_failure=False)
        if isinstance(old, bool) and not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' expects true or false, got {value!r}")
        if isinstance(old, int | float) and not isinstance(old, bool) and not isinstance(value, int | float):
            kind = "an integer" if isinstance(old, int) else "a number"
            raise ConfigError(f"config key '{key}' expects {kind}, got {value!r}")


def validate_overrides(verb: str, overrides: list[str]) -> None:
    """Compose the config once with Hydra's compose API; raise ConfigError in one line on any problem."""
    config_name = VERBS[verb][0]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as err:
        raise ConfigError(f"cannot parse the overrides: {_one_line(err)}") from None
    if any(o.key_or_group == "paths.output_dir" for o in parsed):
        # It follows the run folder; set apart, the run's files would go where its claim, status and
        # clean-up on failure (runs.py) do not look.
        raise ConfigError("paths.output_dir follows the run folder: set hydra.run.dir=DIR instead")
    if any(o.is_sweep_override() for o in parsed):
        return  # a multirun sweep: Hydra checks each job itself
    try:
        composed = runs.compose_job(CONFIG_DIR, config_name, overrides)
    except Exception as err:
        raise ConfigError(_explain_compose_error(err, verb)) from None
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3", job_name=verb):
        # Hydra builds its callbacks and logging from the config before the verb runs: check them now.
        allow_targets(composed.get("allow_targets"), replace=True)
        check_hydra(composed)
        # Text given for a value (not a config-group choice such as data=tabular): compare with the default.
        text_values = [
            o
            for o in parsed
            if o.type == OverrideType.CHANGE
            and isinstance(o.value(), str)
            and not (CONFIG_DIR / o.key_or_group).is_dir()
            and not o.key_or_group.startswith("hydra")
        ]
        if text_values:
            try:
                reference = compose(
                    config_name, overrides=[o.input_line for o in parsed if o not in text_values]
                )
            except Exception:
                return  # the default cannot be composed alone; Hydra and the verb check the rest
            _type_errors(reference, text_values)


def _discard_failed_run(output_dir: Path, before: runs.RunFolder) -> None:
    """Remove what this process created in its run folder (``before`` knows what it found there, and
    whether the folder was new); never anything else, and nothing once a checkpoint was written
    (then ``status.json`` says that the run failed, and why)."""
    before.discard()


def _report(message: str) -> None:
    """One ``error:`` line on stderr; processes other than rank zero name their rank."""
    rank = launch_rank()
    print(f"error: {f'[rank {rank}] ' if rank else ''}{message}", file=sys.stderr, flush=True)


def run_verb(function: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run a verb; user errors become one line on stderr and exit code 2."""
    _route_lightning_logs()
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    # Only rank zero owns the folder (lock, status.json, clean-up): the other processes of a
    # distributed run share it. `before`: the claim, and what this process found there (runs.py).
    owner = launch_rank() == 0
    before = runs.enter(output_dir, cfg, owner=owner)
    try:
        with before.recording():  # status.json: completed, or failed and why
            return function(cfg)
    except LitDLError as err:
        if owner:
            _discard_failed_run(output_dir, before)
        _traceback_if_verbose()
        _report(str(err))
        sys.exit(2)
    except Exception as err:
        # Anything else is a bug of ours (or a bad value nothing of ours checked, which a library
        # rejected deep down): one line too, but exit code 1; LIT_DL_VERBOSE=1 shows the traceback.
        if owner:
            _discard_failed_run(output_dir, before)
        _traceback_if_verbose()
        first = next((line for line in str(err).splitlines() if line.strip()), "")
        _report(f"{type(err).__name__}: {first} (a bug? {VERBOSE}=1 shows the traceback)")
        sys.exit(1)


# Set to 1 to see the traceback behind an `error:` line (Hydra's HYDRA_FULL_ERROR=1 does too).
VERBOSE = "LIT_DL_VERBOSE"


def _traceback_if_verbose() -> None:
    """The traceback of the error being handled, on stderr, when LIT_DL_VERBOSE=1 or HYDRA_FULL_ERROR=1."""
    if any(os.environ.get(name) == "1" for name in (VERBOSE, "HYDRA_FULL_ERROR")):
        traceback.print_exc(file=sys.stderr)


def _silence_known_warnings() -> None:
    # Our datasets live in memory and are indexed a whole batch at a time: loader workers would only
    # add process start-up and IPC, so Lightning's advice to add workers does not apply.
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    # Raised inside Lightning itself (its pytree helper on torch >= 2.10); nothing a user can act on.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


def _route_lightning_logs() -> None:
    """Send Lightning's messages through Hydra's handlers once (console and the run's log file),
    without the lines a user can do nothing with (see :func:`_drop_noise`)."""
    import lightning.pytorch  # noqa: F401  (registers Lightning's loggers and handlers first)

    names = [
        n for n in logging.root.manager.loggerDict if n.split(".")[0] in ("lightning", "pytorch_lightning")
    ]
    quiet = launch_rank() > 0  # the other processes of a distributed run: warnings only
    for name in names:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        if _drop_noise not in logger.filters:
            logger.addFilter(_drop_noise)
        if quiet and logger.level and logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)


# Lightning's start-up lines that carry nothing for a lit_dl user: its cloud adverts, which
# accelerators exist (the start banner says which one is used), the seed (the banner says it), and
# the note that our model-summary callback replaces its default one.
_NOISE = (
    "litlogger",
    "litmodels",
    "GPU available:",
    "TPU available:",
    "HPU available:",
    "Seed set to",
    "Trainer already configured with model summary callbacks",
)


def _drop_noise(record: logging.LogRecord) -> bool:
    return not any(word in str(record.msg) for word in _NOISE)


def main(argv: list[str] | None = None) -> Any:
    """Console entry point of ``lit-dl``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return None
    verb, overrides = args[0], args[1:]
    if verb == "list":  # no run, no Hydra: read the config folder
        from lit_dl.verbs.listing import listing

        try:
            print(listing(CONFIG_DIR, overrides[0] if overrides else None))
        except ConfigError as err:
            _report(str(err))
            sys.exit(2)
        return None
    runs.forget_compositions()  # config files may have changed since the last command in this process
    if verb in ("eval", "predict", "sample", "export", "embed"):
        # The data config comes from the checkpoint; data.KEY=VALUE changes one of its keys.
        overrides = [f"++{o}" if o.startswith("data.") else o for o in overrides]
    if verb not in VERBS:
        verbs = ", ".join([*VERBS, "list"])
        print(f"error: unknown verb {verb!r}; choose one of {verbs} (lit-dl --help)", file=sys.stderr)
        sys.exit(2)
    # The first process checks the overrides; processes Lightning starts for a distributed run
    # repeat a command line that already passed.
    if launch_rank() == 0 and not any(arg.startswith("-") for arg in overrides):
        try:
            validate_overrides(verb, overrides)
        except ConfigError as err:
            _report(str(err))
            sys.exit(2)
    try:
        # resume=: the run's own overrides, in its folder; then this run's folder fixed and locked
        # before Hydra writes there (runs.py).
        overrides = runs.resume_overrides(verb, overrides, config_dir=CONFIG_DIR, config_name=VERBS[verb][0])
        overrides = [*overrides, *rank_overrides(overrides)]
        overrides = runs.claim_run_dir(verb, overrides, config_dir=CONFIG_DIR, config_name=VERBS[verb][0])
    except ConfigError as err:
        _report(str(err))
        sys.exit(2)
    _silence_known_warnings()
    config_name, function = VERBS[verb]
    saved_argv = sys.argv

    @hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name=config_name)
    def entry(cfg: DictConfig) -> Any:
        # What Lightning's DDP launcher re-runs for each extra device (see lit_dl.distributed).
        sys.argv = relaunch_argv(saved_argv[0] if saved_argv else "lit-dl", verb)
        return run_verb(function, cfg)

    sys.argv = [f"lit-dl {verb}", *overrides]
    try:
        return entry()
    finally:
        sys.argv = saved_argv
        runs.release_all()  # (the lock; a folder claimed for a run that never started is removed)


if __name__ == "__main__":
    main()
