"""Run folders: one run, one folder, and a run that can be continued in its own folder.

Every run of a verb gets a folder of its own: ``logs/<verb>/runs/<date>_<time>_<microseconds>_<id>/``
by default, where ``<id>`` is random per process (the ``${lit_dl.run_id:}`` resolver), so two runs
started in the same instant never share one. While it lives, a run holds its folder:

- ``.lock`` is locked (``flock``) by the live run's rank-zero process, from before Hydra writes
  anything there until the process ends. A second run started in that folder (``hydra.run.dir=``
  chosen twice) stops with one line; so does a new run in a folder that holds an earlier run
  (continue that one with ``resume=``). Other processes of a distributed run share the folder
  and take no lock.
- ``status.json`` (replaced atomically): ``{"status": "running" | "completed" | "failed",
  "reason": one line, "started": ..., "finished": ..., "pid": ..., "verb": ..., ...}``. A run
  killed outright stays ``running``; its ``.lock``, no longer locked, tells that it is dead.
- A run that fails before it wrote a checkpoint removes what this process created there, and
  nothing else (not a folder the user made, not another run's files). A run that wrote
  checkpoints keeps them, and ``status.json`` says ``failed`` and why.

``lit-dl train resume=auto`` (or ``resume=<run dir>``) continues a run in place:
:func:`resume_overrides` rewrites the command line before Hydra composes it, so that the run's
own overrides (``.hydra/overrides.yaml``) give back its config, its folder is the run folder and
its last checkpoint is ``ckpt_path``. Only limits (:data:`CHANGEABLE_ON_RESUME`) may change.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import socket
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lit_dl.distributed import externally_launched, launch_rank
from lit_dl.errors import ConfigError, LitDLError
from lit_dl.utils import write_json

# Random per process: with the time to the microsecond, the default run folder's name.
RUN_ID = secrets.token_hex(3)
OmegaConf.register_new_resolver("lit_dl.run_id", lambda: RUN_ID, replace=True)

LOCK = ".lock"
STATUS = "status.json"
# What tells that a folder already holds a run (of this or an earlier lit_dl).
RUN_MARKS = (STATUS, "checkpoints", "metrics.json", "study.db")
# What a failed run keeps (with status.json saying why): its checkpoints, a search's trials.
KEPT_ON_FAILURE = ("checkpoints", "study.db")
# Keys `resume=` lets the command line change: how long to train, and what is shown.
CHANGEABLE_ON_RESUME = (
    "trainer.max_epochs",
    "trainer.min_epochs",
    "trainer.max_steps",
    "trainer.min_steps",
    "trainer.max_time",
    "test",
    "callbacks.progress_bar",
    "callbacks.model_summary",
    "tune.n_trials",
    "tune.timeout",
    "tune.n_jobs",
)
# Written by a resumed run, replaced by a later one: never replayed.
RESUME_KEYS = ("resume", "ckpt_path")

_claims: dict[str, RunFolder] = {}


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def _key(path: str | Path) -> str:
    return os.path.abspath(os.path.expanduser(str(path)))


def read_status(run_dir: str | Path) -> dict[str, Any]:
    """The run's ``status.json`` ({} when there is none or it cannot be read)."""
    try:
        status = json.loads((Path(run_dir) / STATUS).read_text())
    except (OSError, ValueError):
        return {}
    return status if isinstance(status, dict) else {}


def live_pid(run_dir: str | Path) -> int | None:
    """The pid of the live process that holds ``run_dir`` (0 if unknown), or None when none holds it."""
    path = Path(run_dir) / LOCK
    if _key(run_dir) in _claims:
        return os.getpid()
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        text = path.read_text().strip()
        return int(text) if text.isdigit() else 0
    finally:
        os.close(fd)  # (closing releases a lock it got)
    return None


class RunFolder:
    """This process's claim on its run folder, and a record of what it found there.

    ``owner=False`` (processes other than rank zero): a claim that does nothing.
    """

    def __init__(self, path: str | Path, *, owner: bool = True) -> None:
        self.path = Path(_key(path))
        self.owner = owner
        self.existed = True
        self.entries_before: set[str] = set()
        self.started: str | None = None
        self._fd: int | None = None

    # ------------------------------------------------------------------ lock
    def lock(self, *, resuming: bool = False, created: bool | None = None) -> None:
        """Lock the folder (made if missing); refuse a folder another live run holds, or (unless
        ``resuming``) one that holds an earlier run. ``created``: whether this process made it
        (None: it did if it is missing now)."""
        self.existed = self.path.exists() if created is None else not created
        self.entries_before = set(os.listdir(self.path)) if self.path.is_dir() and self.existed else set()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise ConfigError(
                f"cannot make the run folder {self.path} ({err.strerror}): choose another, hydra.run.dir=DIR"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            pid = (self.path / LOCK).read_text().strip()
            raise ConfigError(
                f"run folder {self.path} is in use by a live run (pid {pid or '?'}): wait for it to end, "
                "or choose another folder with hydra.run.dir=DIR"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        _claims[_key(self.path)] = self
        if not resuming:
            earlier = [name for name in RUN_MARKS if name in self.entries_before]
            if earlier:
                record = read_status(self.path)
                status, verb = record.get("status", "unknown"), record.get("verb") or "train"
                if LOCK not in self.entries_before:
                    (self.path / LOCK).unlink(missing_ok=True)
                self._unlock()
                raise ConfigError(
                    f"run folder {self.path} already holds a run (status: {status}; {', '.join(earlier)}): "
                    f"continue it with `lit-dl {verb} resume={self.path}`, or choose a new folder "
                    "(drop hydra.run.dir=, or give another)"
                )

    def release(self) -> None:
        """Unlock; a claim whose run never started leaves nothing behind."""
        if self._fd is None:
            return
        if self.started is None:
            self.discard()
        self._unlock()

    def _unlock(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = None
        _claims.pop(_key(self.path), None)

    # ------------------------------------------------------------------ status
    def start(self, verb: str, **extra: Any) -> None:
        """``status.json``: running (``first_started``: when the run first started, before any resume)."""
        self.started = _now()
        extra["first_started"] = extra.get("first_started") or self.started
        self._verb, self._extra = verb, extra
        self._write("running", str(extra.pop("reason", "started")))

    def _write(self, status: str, reason: str, finished: str | None = None) -> None:
        if not self.owner:
            return
        record = {
            "status": status,
            "reason": reason,
            "started": self.started,
            "finished": finished,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "verb": self._verb,
            **self._extra,
        }
        write_json(self.path / STATUS, record)

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        """``status.json`` says ``completed`` when the block ends, ``failed`` (and why) when it raises;
        then the folder is unlocked."""
        try:
            yield
        except BaseException as err:
            if isinstance(err, SystemExit) and err.code in (0, None):
                self._write("completed", "finished", _now())
            else:
                self._write("failed", _reason(err), _now())
            raise
        else:
            self._write("completed", "finished", _now())
        finally:
            self._unlock()

    # ------------------------------------------------------------------ clean-up
    def discard(self) -> None:
        """After a failed start: remove what this process created in the folder, nothing else.

        A run that wrote checkpoints keeps everything (``status.json`` says it failed).
        """
        if not self.owner or not self.path.is_dir():
            return
        if any((self.path / name).exists() for name in KEPT_ON_FAILURE):
            return
        if any(self.path.glob("*/checkpoints")):  # runs of sub-jobs (cv folds)
            return
        if not self.existed:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        for name in set(os.listdir(self.path)) - self.entries_before:
            path = self.path / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def _reason(err: BaseException) -> str:
    if isinstance(err, LitDLError):
        text = str(err)
    elif isinstance(err, SystemExit):
        text = f"exited with code {err.code}"
    else:
        first = next((line for line in str(err).splitlines() if line.strip()), "")
        text = f"{type(err).__name__}: {first}" if first else type(err).__name__
    return " ".join(text.split())


def enter(output_dir: str | Path, cfg: Mapping[str, Any], *, owner: bool) -> RunFolder:
    """The claim of the run that starts now in ``output_dir`` (Hydra has made it): locked, ``status.json``
    running. The folder was claimed before Hydra ran (:func:`claim_run_dir`) except for the jobs of a
    sweep, whose folders are new if their path holds this process's :data:`RUN_ID`."""
    if not owner:
        return RunFolder(output_dir, owner=False)
    run = _claims.get(_key(output_dir))
    if run is None:
        run = RunFolder(output_dir)
        run.lock(created=RUN_ID in str(run.path), resuming=True)
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    resumed = OmegaConf.select(cfg, "resume", default=None) and OmegaConf.select(
        cfg, "ckpt_path", default=None
    )
    before = read_status(run.path) if resumed else {}
    run.start(
        str(hydra_cfg.job.name),
        reason=f"resumed from {resumed}" if resumed else "started",
        experiment=hydra_cfg.runtime.choices.get("experiment"),
        resumed_from=str(resumed) if resumed else None,
        first_started=before.get("first_started") or before.get("started"),
    )
    return run


def release_all() -> None:
    for run in list(_claims.values()):
        run.release()


# ---------------------------------------------------------------------------------------- before Hydra
def _quote(value: str) -> str:
    """A Hydra override value: as it is when plain, else quoted."""
    if value and all(c.isalnum() or c in "/._-+:@" for c in value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _parse(overrides: list[str]) -> list[Any]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_overrides(overrides)
    except Exception as err:
        raise ConfigError(f"cannot parse the overrides: {' '.join(str(err).split())}") from None


_composed: dict[tuple[str, str, tuple[str, ...]], DictConfig] = {}


def compose_job(config_dir: Path, config_name: str, overrides: list[str]) -> DictConfig:
    """Hydra's composition of one job's config (with ``hydra``), kept for the same arguments.

    The CLI checks the overrides and plans the run folder before Hydra runs; composing costs ~0.4 s,
    so both use one composition when the overrides did not change in between. Read it, never change it.
    """
    from hydra import compose, initialize_config_dir

    key = (str(config_dir), config_name, tuple(overrides))
    if key not in _composed:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3", job_name=config_name):
            _composed.clear()  # one command line at a time
            _composed[key] = compose(config_name, overrides=overrides, return_hydra_config=True)
    return _composed[key]


def forget_compositions() -> None:
    _composed.clear()


def planned_run_dir(config_dir: Path, config_name: str, overrides: list[str]) -> Path:
    """The folder Hydra would run this (single) job in: ``hydra.run.dir``, resolved now."""
    try:
        cfg = compose_job(config_dir, config_name, overrides)
        _composed.clear()  # used once: resolvers such as ${now:} keep their first value in a config
        run_dir = OmegaConf.select(cfg, "hydra.run.dir")
    except Exception as err:
        first = next((line for line in str(err).splitlines() if line.strip()), "")
        raise ConfigError(f"cannot resolve the run folder (hydra.run.dir): {first}") from None
    return Path(_key(run_dir))


def claim_run_dir(verb: str, overrides: list[str], *, config_dir: Path, config_name: str) -> list[str]:
    """Fix this job's run folder and lock it before Hydra writes there; the overrides that name it.

    Rank zero of a single run only: Hydra's own flags (``--cfg``, ``-m``) and sweeps are left to
    Hydra (each sweep job claims its folder when it starts), and the other processes of a
    distributed run share rank zero's folder.
    """
    if launch_rank() > 0 or any(arg.startswith("-") for arg in overrides):
        return overrides
    parsed = _parse(overrides)
    if any(o.is_sweep_override() for o in parsed) or any(
        o.key_or_group == "hydra.mode" and str(o.value()).upper() == "MULTIRUN" for o in parsed
    ):
        return overrides
    run_dir = planned_run_dir(config_dir, config_name, overrides)
    resuming = any(o.key_or_group == "resume" and o.value() not in (None, "") for o in parsed)
    RunFolder(run_dir).lock(resuming=resuming)
    kept = [o.input_line for o in parsed if o.key_or_group != "hydra.run.dir"]
    return [*kept, f"hydra.run.dir={_quote(str(run_dir))}"]


# ---------------------------------------------------------------------------------------- resume
# Verbs that resume= continues in place: train from its checkpoint, tune from its study.
RESUMABLE_VERBS = ("train", "tune")


def resume_point(verb: str, run_dir: Path) -> Path | None:
    """What a stopped run of ``verb`` continues from: train's checkpoint, tune's ``study.db``."""
    if verb == "tune":
        study = run_dir / "study.db"
        return study if study.is_file() else None
    return resume_checkpoint(run_dir)


def resume_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint a run resumes from: ``checkpoints/last.ckpt`` (the end of its latest epoch), else
    its newest ``*.ckpt``. Each is whole: checkpoints are written to a temporary name first. (Not a
    newer ``best.ckpt``: a run stopped between writing it and ``last.ckpt`` redoes that epoch, so the
    epoch's log rows are written too.)"""
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        return last
    found = [
        p for p in (run_dir / "checkpoints").glob("*.ckpt") if p.is_file() and not p.name.startswith(".")
    ]
    return max(found, key=lambda p: p.stat().st_mtime, default=None)


def run_overrides(run_dir: Path) -> list[str] | None:
    """The task overrides a run was started with (``.hydra/overrides.yaml``), less those of a resume."""
    path = run_dir / ".hydra" / "overrides.yaml"
    try:
        loaded = OmegaConf.to_container(OmegaConf.load(path))
    except Exception:
        return None
    if not isinstance(loaded, list):
        return None
    return [str(o) for o in loaded if str(o).lstrip("+~").split("=", 1)[0] not in RESUME_KEYS]


def _resumable(run_dir: Path, verb: str = "train") -> bool:
    return (
        run_dir.is_dir()
        and read_status(run_dir).get("status") != "completed"
        and resume_point(verb, run_dir) is not None
        and run_overrides(run_dir) is not None
        # (the other processes of a torchrun/srun launch choose as rank zero, which may hold it now)
        and (launch_rank() > 0 or live_pid(run_dir) is None)
    )


def resume_overrides(verb: str, overrides: list[str], *, config_dir: Path, config_name: str) -> list[str]:
    """``resume=auto|DIR`` on ``lit-dl train``: the overrides that continue that run in its folder.

    ``resume=auto`` picks, under the folder new runs go to (``logs/train/runs``), the run whose newest
    checkpoint is the most recent among those not completed, not live, and started with every
    override given now (besides :data:`CHANGEABLE_ON_RESUME`), e.g. the same ``experiment=``.
    The result is the run's own overrides, the changed limits, ``resume=DIR``,
    ``ckpt_path=<its last checkpoint>`` and ``hydra.run.dir=DIR``.
    """
    if verb not in RESUMABLE_VERBS or (launch_rank() > 0 and not externally_launched()):
        return overrides  # (Lightning re-runs rank zero's command line, which was rewritten already)
    # Hydra's flags (--cfg job, -m) and their values stay as they are, after the overrides.
    flags = [arg for arg in overrides if arg.startswith("-") or "=" not in arg]
    parsed = _parse([arg for arg in overrides if arg not in flags])
    given = [o for o in parsed if o.key_or_group == "resume"]
    if not given or given[-1].value() in (None, ""):
        return overrides
    if any(arg in ("-m", "--multirun") for arg in flags):
        raise ConfigError("resume= continues one run: it cannot be combined with a sweep (-m)")
    value = str(given[-1].value())
    rest = [o for o in parsed if o.key_or_group != "resume"]
    if any(o.key_or_group == "hydra.run.dir" for o in rest):
        raise ConfigError("resume= continues a run in its own folder: drop hydra.run.dir=")
    changes = [
        o
        for o in rest
        if o.key_or_group in CHANGEABLE_ON_RESUME
        or (o.key_or_group.startswith(("hydra.", "hydra/")) and not o.key_or_group.startswith("hydra.sweep"))
    ]
    fixed = [o.input_line for o in rest if o not in changes]

    if value == "auto":
        root = planned_run_dir(config_dir, config_name, [o.input_line for o in rest]).parent
        runs = [d for d in root.iterdir() if _resumable(d, verb)] if root.is_dir() else []
        runs = [d for d in runs if set(fixed) <= set(run_overrides(d) or [])]
        if not runs:
            wanted = f" (among those started with {' '.join(fixed)})" if fixed else ""
            raise ConfigError(
                f"resume=auto: no run under {root} is unfinished, not live and holds a "
                f"{'study' if verb == 'tune' else 'checkpoint'}{wanted}: "
                "name the run folder (resume=DIR), or start a new run without resume="
            )
        run_dir = max(runs, key=lambda d: resume_point(verb, d).stat().st_mtime)  # type: ignore[union-attr]
    else:
        run_dir = Path(_key(value))
        if not run_dir.is_dir():
            raise ConfigError(
                f"resume={value}: no such run folder (give one such as logs/{verb}/runs/<run>, "
                "or resume=auto)"
            )
    old = run_overrides(run_dir)
    checkpoint = resume_point(verb, run_dir)
    if checkpoint is None:
        what = "study (study.db)" if verb == "tune" else "checkpoint to resume from (checkpoints/*.ckpt)"
        raise ConfigError(f"{run_dir} holds no {what}: start a new run instead")
    if old is None:
        raise ConfigError(
            f"{run_dir} has no readable .hydra/overrides.yaml, so its config is unknown: "
            + (
                f"resume it by hand with ckpt_path={checkpoint} and the overrides it was started with "
                "(in a new folder)"
                if verb == "train"
                else "start a new run"
            )
        )
    if launch_rank() == 0 and (pid := live_pid(run_dir)) is not None:
        raise ConfigError(f"{run_dir} is in use by a live run (pid {pid or '?'}): wait for it to end")
    if unknown := [line for line in fixed if line not in old]:
        raise ConfigError(
            f"resume= continues {run_dir} with the config it was started with: {unknown[0]} would change it; "
            f"only {', '.join(CHANGEABLE_ON_RESUME)} may change (start a new run to change anything else)"
        )
    changed = {o.key_or_group for o in changes}
    kept = [line for line in old if line.lstrip("+~").split("=", 1)[0] not in changed]
    return [
        *kept,
        *(o.input_line for o in changes),
        f"resume={_quote(str(run_dir))}",
        *([f"ckpt_path={_quote(str(checkpoint))}"] if verb == "train" else []),
        f"hydra.run.dir={_quote(str(run_dir))}",
        *flags,
    ]


def check_resumed_config(cfg: Mapping[str, Any], run_dir: str | Path) -> None:
    """A resumed run's config must be the one its folder's ``config.yaml`` records, limits aside."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return  # (a run of an earlier lit_dl wrote it only at the end)
    old = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    new = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    skip = (*CHANGEABLE_ON_RESUME, *RESUME_KEYS)
    for key in _differences(old, new):
        if not any(key == name or key.startswith(name + ".") for name in skip):
            raise ConfigError(
                f"resume={run_dir}: config key '{key}' differs from the run's config.yaml (lit_dl or its "
                "configs changed since the run started?): resume with the lit_dl it was started with, "
                "or start a new run"
            )


def _differences(old: Any, new: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            name = f"{prefix}{key}"
            if key not in old or key not in new:
                yield name
            else:
                yield from _differences(old[key], new[key], name + ".")
    elif old != new:
        yield prefix.rstrip(".")
