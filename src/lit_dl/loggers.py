"""The run's loggers: their config entries, a CSV logger that continues a resumed run's log, and
images sent to every logger that shows them.

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when it starts; a run resumed in its
own folder (``lit-dl train resume=...``) would lose its history. :class:`CSVLogger` keeps the
file, appends to it, and can cut it back to the rows written when a checkpoint was saved
(:class:`~lit_dl.callbacks.run_state.RunState` asks it for that number and hands it back).

:class:`WandbLogger` is Lightning's, except that a run without a W&B login or network goes offline
by itself (never a login prompt), the run's config is logged once, and checkpoints are uploaded as
one artifact per checkpoint file, offline runs included (docs/wandb.md).
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import secrets
import socket
import threading
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from lit_dl.distributed import launch_rank
from lit_dl.errors import ConfigError
from lit_dl.utils import atomic_write_text

log = logging.getLogger(__name__)

# The W&B run id of a run, kept in its folder so that a resumed run continues the same W&B run.
WANDB_ID_FILE = "wandb_run_id.txt"


class _ContinuingWriter(ExperimentWriter):
    """Lightning's writer, except that an existing ``metrics.csv`` is kept and appended to."""

    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir)
        self.rows = 0
        header, rows = self._read()
        self.metrics_keys = header
        self.rows = len(rows)

    def _check_log_dir_exists(self) -> None:
        pass  # (Lightning's deletes metrics.csv here)

    def _read(self) -> tuple[list[str], list[dict[str, str]]]:
        if not self._fs.isfile(self.metrics_file_path):
            return [], []
        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            reader = csv.DictReader(file)
            rows = list(reader)
            return list(reader.fieldnames or []), rows

    def save(self) -> None:
        pending = len(self.metrics)
        super().save()
        self.rows += pending

    def truncate(self, rows: int, keep_epoch: int | None = None) -> None:
        """Keep the first ``rows`` rows, and later ones of epoch ``keep_epoch`` (replaced atomically)."""
        self.save()
        header, found = self._read()
        if len(found) <= rows:
            return
        later = [r for r in found[rows:] if keep_epoch is not None and r.get("epoch") == str(keep_epoch)]
        kept = found[:rows] + later
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=header)  # (\r\n line ends, as Lightning's writer)
        writer.writeheader()
        writer.writerows(kept)
        atomic_write_text(self.metrics_file_path, text.getvalue())
        self.rows = len(kept)


class CSVLogger(LightningCSVLogger):
    """Lightning's ``CSVLogger`` (same arguments) that continues an existing ``metrics.csv``."""

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        if self._experiment is not None:
            return self._experiment
        self._fs.makedirs(self.root_dir, exist_ok=True)
        self._experiment = _ContinuingWriter(log_dir=self.log_dir)
        return self._experiment

    @rank_zero_only
    def rows_written(self) -> int:
        """Rows of ``metrics.csv`` so far (all on disk: this writes what is pending)."""
        self.experiment.save()
        return self.experiment.rows

    @rank_zero_only
    def truncate(self, rows: int, keep_epoch: int | None = None) -> None:
        """Cut ``metrics.csv`` back to its first ``rows`` rows; later rows of epoch ``keep_epoch`` stay
        (the epoch-end rows of a checkpoint written at an epoch's end, which a resumed run does not
        write again)."""
        self.experiment.truncate(rows, keep_epoch)


# ----------------------------------------------------------------------------------- W&B
# How long the start of a run waits to learn that the W&B server cannot be reached.
WANDB_REACH_TIMEOUT_S = 2.0
# WANDB_MODE values that ask for an online run, and those wandb itself runs without a server.
_ONLINE_MODES = ("online", "run", "shared")
_LOCAL_MODES = ("offline", "dryrun", "disabled")
# The W&B logger whose run is open in this process (tune and cv train many models in one process:
# the next one ends it). A strong reference: the trainer that held the logger may be gone.
_open_run_logger: WandbLogger | None = None


def wandb_base_url() -> str:
    """The W&B server this process would talk to: ``WANDB_BASE_URL``, else W&B's settings (whose
    default is W&B's cloud)."""
    if os.environ.get("WANDB_BASE_URL"):
        return os.environ["WANDB_BASE_URL"]
    from wandb.sdk import wandb_setup
    from wandb.sdk.lib import urls

    try:
        return str(wandb_setup.singleton().settings.base_url or urls.DEFAULT_BASE_URL)
    except Exception:  # (settings W&B cannot read: wandb.init reports them itself)
        return urls.DEFAULT_BASE_URL


def wandb_login_problem(base_url: str) -> str | None:
    """Why there is no usable W&B login for ``base_url`` (None: there is one), found the way
    ``wandb.init`` finds it (``WANDB_API_KEY``, the netrc entry, W&B's settings) but never prompting."""
    from wandb.errors import AuthenticationError

    try:  # (wandb's own key lookup; a private module of wandb >= 0.31, the release this is tested with)
        from wandb.sdk.lib import wbauth
    except ImportError:
        return "this wandb cannot be asked for the login without a prompt (pip install 'wandb>=0.31')"

    try:
        auth = wbauth.authenticate_session(host=base_url, source="lit_dl", prompt=False, update_session=False)
    except (AuthenticationError, ValueError) as error:
        return f"the W&B login for {base_url} is unusable ({error})"
    if auth is not None:
        return None
    return (
        f"no W&B login for {base_url} (no WANDB_API_KEY, no entry for its host in ~/.netrc, no key in "
        "W&B's settings; `wandb login` makes one)"
    )


def wandb_server_problem(base_url: str, timeout: float = WANDB_REACH_TIMEOUT_S) -> str | None:
    """Why the W&B server (or the proxy in front of it) cannot be reached (None: a TCP connection
    opened within ``timeout`` seconds). Name resolution counts towards the timeout."""
    parts = urlsplit(base_url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parts.scheme)
    what = "the W&B server"
    if proxy and host and not urllib.request.proxy_bypass(host):
        proxy_parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port, what = proxy_parts.hostname or "", proxy_parts.port or 80, "the proxy to W&B"
    if not host:
        return f"WANDB_BASE_URL={base_url} names no host"
    outcome: dict[str, BaseException | None] = {}

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome["error"] = None
        except OSError as error:
            outcome["error"] = error

    # A thread because name resolution has no timeout of its own; a daemon, so that a resolver
    # still waiting never holds up the end of the process.
    thread = threading.Thread(target=connect, name="wandb-reach", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    if "error" not in outcome:
        return f"{what} {host}:{port} did not answer within {timeout:g} s"
    error = outcome["error"]
    return None if error is None else f"{what} {host}:{port} cannot be reached ({error})"


class WandbLogger(LightningWandbLogger):
    """Lightning's ``WandbLogger`` (same arguments) that a run without an account or network cannot hang.

    * **Offline by itself.** Without a W&B login or without network (a TCP connection to the server of
      ``WANDB_BASE_URL`` within 2 s) the run is recorded offline, with one log line saying why and
      which ``wandb sync`` command uploads it; W&B's login prompt never appears. ``offline=true``,
      ``mode=...`` and ``WANDB_MODE`` are obeyed as given (``WANDB_MODE=online`` without a login is
      a one-line error instead of a prompt). The line is repeated when training ends.
    * **The config once.** :func:`log_run_config` hands over the run's resolved config, which
      becomes the W&B run's config; the task's hyperparameters, which Lightning logs at every
      fit/validate/test and which are already in it under ``model``, are not logged again.
    * **Checkpoints as artifacts** (``log_model``), offline too (W&B keeps them for ``wandb sync``):
      one artifact per checkpoint file, ``<checkpoint_name or model-<run id>>-<file stem>`` (our
      callbacks: ``...-best`` and ``...-last``), each new version aliased ``latest`` and, for the
      file a callback keeps for its monitored metric, ``best``. ``true``: every checkpoint file once,
      when training ends; ``"all"``: every time one is written.

    Lightning's own upload names the files of all checkpoint callbacks the same and gives ``best`` to
    whichever is uploaded last (with our two callbacks: ``last.ckpt``), and refuses ``log_model``
    offline; hence this class's own upload.
    """

    def __init__(
        self, *args: Any, offline: bool = False, log_model: bool | Literal["all"] = False, **kwargs: Any
    ) -> None:
        # (Lightning refuses log_model offline and turns offline into a process-wide WANDB_MODE:
        # both are handled here instead.)
        super().__init__(*args, offline=False, log_model=False, **kwargs)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)  # (W&B warns that the setting is deprecated)
        self._log_model = log_model
        self.offline_requested = offline
        self.offline_reason: str | None = None
        self._run_config: dict[str, Any] | None = None
        self._uploaded: dict[str, float] = {}  # checkpoint path -> modification time uploaded
        self._sync_hint_shown = False
        self._exit_code = 0
        self._finished = False

    # -------------------------------------------------------------------------- the run
    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        """The W&B run, started on first use (offline where it has to be)."""
        if self._experiment is None:
            self._start_run()
        return self._experiment

    def _start_run(self) -> None:
        global _open_run_logger
        import wandb

        earlier = _open_run_logger
        if earlier is not None and earlier is not self and wandb.run is earlier._experiment:
            earlier.finish()  # an earlier training of this process (a tune trial, a cv fold) left it open
        self.offline_reason = self._offline_reason()
        if self.offline_reason is not None:
            self._wandb_init["mode"] = "offline"
            # Our line says why, and how to upload; W&B's own offline banner would advise `wandb online`.
            self._wandb_init.setdefault("settings", wandb.Settings(silent=True))
        if self._run_config is not None:
            self._wandb_init["config"] = self._run_config
        # Lightning's start: attaching in spawned processes, trainer/global_step as the x-axis.
        self._experiment = LightningWandbLogger.experiment.fget(self)  # type: ignore[attr-defined]
        _open_run_logger = self
        if self.offline_reason is not None:
            log.log(
                self._offline_log_level(),
                "W&B runs offline: %s; upload it later with: %s",
                self.offline_reason,
                self.sync_command(),
            )

    def _offline_reason(self) -> str | None:
        """Why this run is recorded offline, or None for an online run."""
        source = "logger.wandb.mode" if self._wandb_init.get("mode") else "WANDB_MODE"
        mode = str(self._wandb_init.get("mode") or os.environ.get("WANDB_MODE") or "").strip().lower()
        if self.offline_requested:
            return "logger.wandb.offline=true"
        if mode in _LOCAL_MODES:
            return None if mode == "disabled" else f"{source}={mode}"
        base_url = wandb_base_url()
        login_problem = wandb_login_problem(base_url)
        if mode in _ONLINE_MODES:
            if login_problem is not None:
                raise ConfigError(
                    f"{source}={mode} asks for an online W&B run, but {login_problem}; "
                    f"unset {source} to record the run offline instead"
                )
            return None
        return login_problem or wandb_server_problem(base_url)

    def _offline_log_level(self) -> int:
        """Warning when the run went offline by itself; information when offline was asked for."""
        asked = (self.offline_reason or "").startswith(("logger.wandb.", "WANDB_MODE"))
        return logging.INFO if asked else logging.WARNING

    def sync_command(self) -> str:
        """The command that uploads this (offline) run: ``wandb sync <run dir>/wandb/offline-run-...``."""
        run = self._experiment
        sync_dir = getattr(getattr(run, "settings", None), "sync_dir", None)
        return f"wandb sync {Path(sync_dir).absolute() if sync_dir else Path(self.save_dir or '.') / 'wandb'}"

    @property
    def is_offline(self) -> bool:
        """Whether the run is recorded offline (on this machine only, until ``wandb sync``)."""
        mode = getattr(getattr(self._experiment, "settings", None), "mode", None)
        return mode in ("offline", "dryrun") or self.offline_reason is not None

    @rank_zero_only
    def finish(self) -> None:
        """End the W&B run (everything written, the run closed); the ``wandb sync`` line if offline."""
        if self._experiment is None or self._finished or not hasattr(self._experiment, "finish"):
            return
        global _open_run_logger
        self._finished = True
        if _open_run_logger is self:
            _open_run_logger = None
        self._experiment.finish(exit_code=self._exit_code)
        if self.is_offline and not self._sync_hint_shown:
            log.info("W&B run recorded offline; upload it with: %s", self.sync_command())

    # -------------------------------------------------------------------------- config
    @rank_zero_only
    def log_run_config(self, config: Mapping[str, Any]) -> None:
        """The run's resolved config as the W&B run's config (given to ``wandb.init`` when the run has
        not started yet); the task's hyperparameters are not logged again after it."""
        self._run_config = dict(config)
        if self._experiment is not None:
            self._experiment.config.update(self._run_config, allow_val_change=True)

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        if self._run_config is not None:
            return  # already in the run's config (under `model`)
        super().log_hyperparams(params)

    # -------------------------------------------------------------------------- end of a stage
    @rank_zero_only
    def finalize(self, status: str) -> None:
        """After each fit/validate/test: checkpoints uploaded (``log_model=true``, on success) and, for
        an offline run, the ``wandb sync`` line again when training ends (or a later stage fails)."""
        if status != "success":
            self._exit_code = 1
        elif self._experiment is not None:
            for callback in list(self._checkpoint_callbacks.values()):
                self._upload_checkpoints(callback)
        first_or_failed = not self._sync_hint_shown or status != "success"
        if self._experiment is not None and self.is_offline and first_or_failed:
            self._sync_hint_shown = True
            level, command = self._offline_log_level(), self.sync_command()
            log.log(level, "W&B run recorded offline; upload it with: %s", command)

    # -------------------------------------------------------------------------- checkpoints
    def after_save_checkpoint(self, checkpoint_callback: ModelCheckpoint) -> None:
        if self._log_model == "all":
            self._upload_checkpoints(checkpoint_callback)
        elif self._log_model:
            self._checkpoint_callbacks[id(checkpoint_callback)] = checkpoint_callback

    @rank_zero_only
    def _upload_checkpoints(self, callback: ModelCheckpoint) -> None:
        """Each of ``callback``'s checkpoint files not uploaded since it was last written, as a new
        version of its artifact."""
        import wandb

        scores = {str(path): score for path, score in getattr(callback, "best_k_models", {}).items()}
        paths = {str(callback.best_model_path), str(getattr(callback, "last_model_path", "")), *scores}
        base = self._checkpoint_name or f"model-{self.experiment.id}"
        # A checkpoint kept for a counter (our last_checkpoint monitors `step`) is the latest, not the best.
        ranks_by_metric = callback.monitor not in (None, "step", "epoch")
        for path in sorted(p for p in paths if p and Path(p).is_file()):
            written = Path(path).stat().st_mtime
            if self._uploaded.get(path) == written:
                continue
            score = scores.get(path, getattr(callback, "current_score", None))
            metadata = {
                "score": float(score) if score is not None else None,
                "monitor": callback.monitor,
                "mode": getattr(callback, "mode", None),
                "original_filename": Path(path).name,
            }
            name = re.sub(r"[^\w.-]", "_", f"{base}-{Path(path).stem}")
            artifact = wandb.Artifact(name=name, type="model", metadata=metadata)
            # (the "mutable" policy stages a copy: best.ckpt and last.ckpt are replaced in place later)
            artifact.add_file(path, name=Path(path).name, policy=self.add_file_policy)
            best = ranks_by_metric and path == str(callback.best_model_path)
            self.experiment.log_artifact(artifact, aliases=["latest", "best"] if best else ["latest"])
            self._uploaded[path] = written


def wandb_job_updates(cfg: Any, group: str, name: str) -> dict[str, Any]:
    """``train_job`` updates that put one job of a verb (a ``tune`` trial, a ``cv`` fold) into W&B as
    run ``name`` of group ``group`` (unless the config names a group), each job with its own run id
    (a fixed ``logger.wandb.id`` would make every job continue one run)."""
    updates: dict[str, Any] = {}
    for key, entry in (cfg.get("logger") or {}).items():
        if entry is not None and str(entry.get("_target_", "")).endswith("WandbLogger"):
            updates[f"+logger.{key}.group"] = entry.get("group") or group
            updates[f"+logger.{key}.name"] = name
            updates[f"+logger.{key}.id"] = None
    return updates


def finish_loggers(loggers: Sequence[Any]) -> None:
    """End the runs of loggers that keep one open (W&B) once a verb is done with its trainer."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.finish()


# Lightning's class, named in configs written before lit_dl.loggers.WandbLogger: built as ours.
LIGHTNING_WANDB_TARGETS = (
    "lightning.pytorch.loggers.WandbLogger",
    "lightning.pytorch.loggers.wandb.WandbLogger",
    "pytorch_lightning.loggers.WandbLogger",
    "pytorch_lightning.loggers.wandb.WandbLogger",
)


def logger_entries(cfg: DictConfig, output_dir: Path, resuming: bool) -> dict[str, Any] | None:
    """The ``logger`` entries; a W&B logger gets the run's W&B id (kept in the run folder), and a
    resumed run continues that W&B run (``resume="allow"``). Lightning's ``WandbLogger`` named in
    an older config is built as :class:`WandbLogger` (a subclass with the same arguments)."""
    node = cfg.get("logger")
    if not node:
        return None
    entries: dict[str, Any] = OmegaConf.to_container(node, resolve=True)  # type: ignore[assignment]
    for entry in entries.values():
        if not isinstance(entry, dict) or not str(entry.get("_target_", "")).endswith("WandbLogger"):
            continue
        if entry["_target_"] in LIGHTNING_WANDB_TARGETS:
            entry["_target_"] = f"{__name__}.WandbLogger"  # same arguments; offline instead of a prompt
        path = output_dir / WANDB_ID_FILE
        known = path.read_text().strip() if resuming and path.is_file() else ""
        run_id = entry.get("id") or known or os.environ.get("WANDB_RUN_ID") or secrets.token_hex(4)
        # Under a W&B sweep's agent the agent names the run (WANDB_RUN_ID); wandb.init would ignore
        # an id given beside it, with a warning.
        entry["id"] = None if os.environ.get("WANDB_SWEEP_ID") else run_id
        if resuming:
            entry["resume"] = "allow"
        if launch_rank() == 0:
            path.write_text(f"{run_id}\n")
    return entries


def log_run_config(loggers: Sequence[Any], cfg: DictConfig) -> None:
    """Send the run's resolved config to every logger (as its hyperparameters; W&B: the run's config,
    logged once)."""
    from lit_dl.utils import to_plain

    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_run_config(to_plain(cfg))
        else:
            logger.log_hyperparams(to_plain(cfg))


def log_images(trainer: Any, images: Mapping[str, str | Path], *, step: int | None = None) -> None:
    """Show PNG files written by a callback (``key -> path``) in every logger that shows images
    (W&B: ``log_image``; TensorBoard: ``add_image``). CSV has no place for them: the files stay in
    the run folder either way."""
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    if not images or not getattr(trainer, "is_global_zero", True):
        return
    for logger in getattr(trainer, "loggers", []):
        if isinstance(logger, WandbLogger):
            for key, path in images.items():
                logger.log_image(key=key, images=[str(path)], step=step)
        elif isinstance(logger, TensorBoardLogger):
            import numpy as np
            from PIL import Image

            for key, path in images.items():
                with Image.open(path) as image:
                    pixels = np.asarray(image.convert("RGB"))
                logger.experiment.add_image(key, pixels, global_step=step or 0, dataformats="HWC")
