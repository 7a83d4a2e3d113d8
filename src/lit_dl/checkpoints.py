"""Checkpoints: the metadata lit_dl writes, reading them safely, migrating old ones, rebuilding a run.

A lit_dl checkpoint is a Lightning checkpoint holding plain data only (it loads with
``torch.load(weights_only=True)``):

- ``state_dict``: the task's weights; ``hyper_parameters``: the task's config (no data);
- the datamodule's fitted preparation under its class name (Lightning stores
  ``datamodule.state_dict()``), from which the datamodule gives the :class:`DataSpec` back;
- ``lit_dl``: written by :class:`CheckpointMetadata`, the one place that writes metadata:
  the lit_dl version and checkpoint ``format``, the task's class, the datamodule's class and
  its config.

:func:`restore` rebuilds task and datamodule from a checkpoint alone; every class and config
entry it reads goes through the allow-list of :mod:`lit_dl.builder`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch

import lit_dl
from lit_dl.builder import build, check_node, import_class
from lit_dl.compat import datamodule_state
from lit_dl.errors import CheckpointError, ConfigError, LitDLError
from lit_dl.utils import class_path, to_plain

# 1: lit_dl 0.1 (the data's sizes, classes and fitted transforms were also task hyperparameters).
# 2: the task's hyperparameters hold no data; the datamodule's state gives the DataSpec.
FORMAT = 2

# Hyperparameters of 0.1 tasks that described the data; format 2 reads them from the DataSpec.
LEGACY_DATA_HPARAMS = (
    "input_spec",
    "class_names",
    "class_counts",
    "anomaly_classes",
    "target_mean",
    "target_std",
    "horizon",
    "log_target",
    "vocabulary",
    "transform",
)
TABLE_GENERATORS_0_1 = ("lit_dl.tasks.tabular_vae.TabularVAETask", "lit_dl.tasks.tabular_gan.TabularGANTask")


class CheckpointMetadata(L.Callback):
    """Writes ``checkpoint["lit_dl"]``: what ``eval``/``predict``/``sample`` need to rebuild a run.

    The train verb always adds it (it is not a config choice): a checkpoint without it cannot be
    rebuilt from its file alone.
    """

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        meta: dict[str, Any] = {
            "version": lit_dl.__version__,
            "format": FORMAT,
            "task": class_path(pl_module),
        }
        datamodule = trainer.datamodule
        if datamodule is not None:
            meta["datamodule"] = class_path(datamodule)
            meta["datamodule_hparams"] = to_plain(dict(datamodule.hparams))
        checkpoint["lit_dl"] = meta


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint file as plain data only (``weights_only=True``), unchecked and unmigrated;
    :func:`load_checkpoint` is what a verb reads with."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(
            f"ckpt_path is a folder: {path} (point it at a file, e.g. checkpoints/best.ckpt)"
        )
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path} (check ckpt_path)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): it was cut off while being written")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"cannot read checkpoint {path}: it is corrupted or not a PyTorch checkpoint "
            f"({type(err).__name__}: {str(err).splitlines()[0].split('. ')[0][:100]})"
        ) from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no state_dict)")
    return checkpoint


def migrate(checkpoint: dict[str, Any], path: str | Path = "checkpoint") -> dict[str, Any]:
    """Bring a checkpoint of an earlier lit_dl release to the current format (in place, and returned)."""
    meta = checkpoint.get("lit_dl")
    if not isinstance(meta, Mapping) or "task" not in meta or "datamodule" not in meta:
        raise CheckpointError(f"{path} was not written by `lit-dl train` (no lit_dl metadata)")
    found = int(meta.get("format", 1))
    if found > FORMAT:
        raise CheckpointError(
            f"{path} was written by lit_dl {meta.get('version', '?')} (checkpoint format {found}); "
            f"this is lit_dl {lit_dl.__version__} (format {FORMAT}): upgrade lit_dl to read it"
        )
    if found == 1:
        hparams = dict(checkpoint.get("hyper_parameters") or {})
        for key in LEGACY_DATA_HPARAMS:
            hparams.pop(key, None)
        hparams.pop("fidelity_rows", None)  # table fidelity is a callback now (callbacks.table_fidelity)
        task = str(meta["task"])
        if task in TABLE_GENERATORS_0_1:
            # 0.1 put the tabular generators on the supervised base, whose switches they ignored.
            for key in ("train_metrics", "channels_last", "compile"):
                hparams.pop(key, None)
        if "discriminator_optimizer" in hparams and "optimizer_d" not in hparams:
            hparams["optimizer_d"] = hparams.pop("discriminator_optimizer")  # tabular GAN, 0.1
        meta = {**meta, "format": FORMAT}
        if task == TABLE_GENERATORS_0_1[1]:
            # CTGAN's training-by-sampling was the task's choice in 0.1; now it is a data option.
            meta["datamodule_hparams"] = {**(meta.get("datamodule_hparams") or {}), "sampling": "conditional"}
        checkpoint["hyper_parameters"] = hparams
        checkpoint["lit_dl"] = meta
    return checkpoint


# Paths a ModelCheckpoint callback keeps in its state, which Lightning loads, deletes (when a better
# checkpoint replaces them) and tests on a resumed run.
CHECKPOINT_CALLBACK_PATHS = ("best_model_path", "kth_best_model_path", "last_model_path")


def check_callback_paths(checkpoint: Mapping[str, Any], path: str | Path = "checkpoint") -> None:
    """Refuse callback states naming a file outside their own ``dirpath``.

    A resumed ModelCheckpoint deletes the worst of its ``best_k_models`` when a better one is
    saved (Lightning checks the file is under ``dirpath`` without resolving ``..``) and the train
    verb tests ``best_model_path``: a tampered checkpoint must not point them at the user's files.
    """
    for name, state in (checkpoint.get("callbacks") or {}).items():
        if not isinstance(state, Mapping) or "dirpath" not in state:
            continue
        folder = os.path.normpath(str(state["dirpath"]))
        files = [state.get(key) for key in CHECKPOINT_CALLBACK_PATHS]
        files += list(state.get("best_k_models") or {})
        for file in files:
            if not file:
                continue
            file = str(file)
            if ".." in Path(file).parts or os.path.dirname(os.path.normpath(file)) != folder:
                raise CheckpointError(
                    f"{path}: callback {str(name).split('{')[0]} names {file}, outside its folder {folder}; "
                    "the checkpoint was tampered with"
                )


def check_checkpoint(checkpoint: dict[str, Any], path: str | Path = "checkpoint") -> dict[str, Any]:
    """Every class and config entry a checkpoint names, checked before anything is built or loaded.

    The task and datamodule classes must be allowed lit_dl classes (:func:`~lit_dl.builder.import_class`
    with their base class); the datamodule config and the task's hyperparameters may hold no private
    key and only allowed ``_target_``s at any depth (``data.augment`` entries, a net's arguments,
    the optimiser); callback states only files in their own folder. Returns the checkpoint migrated
    to the current format (a copy: ``checkpoint`` itself is left as it was read).
    """
    from lit_dl.tasks.base import Task

    checkpoint = migrate(dict(checkpoint), path)
    meta = checkpoint["lit_dl"]
    try:
        import_class(str(meta["task"]), "checkpoint task", Task)
        dm_cls = import_class(str(meta["datamodule"]), "checkpoint datamodule", L.LightningDataModule)
        for key, node in (
            ("data", meta.get("datamodule_hparams")),
            ("model", checkpoint.get("hyper_parameters")),
        ):
            node = to_plain(node or {})
            if not isinstance(node, Mapping):
                raise CheckpointError(
                    f"{path}: the {key} config is not a mapping; the checkpoint was tampered with"
                )
            private = sorted(str(k) for k in node if str(k).startswith("_"))
            if private:
                raise CheckpointError(
                    f"{path}: the {key} config holds the private key {key}.{private[0]}; "
                    "the checkpoint was tampered with"
                )
            check_node(node, key)
    except ConfigError as err:
        raise CheckpointError(f"{path}: {err}") from err
    if not callable(getattr(dm_cls, "data_spec", None)):
        raise CheckpointError(
            f"{path}: datamodule {meta['datamodule']} does not describe its data (no data_spec)"
        )
    check_callback_paths(checkpoint, path)
    return checkpoint


def task_class(checkpoint: dict[str, Any], path: str | Path = "checkpoint") -> type:
    """The (allowed) lit_dl task class a checkpoint names, without building anything."""
    from lit_dl.tasks.base import Task

    meta = migrate(checkpoint, path)["lit_dl"]
    return import_class(str(meta["task"]), "checkpoint task", Task)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint handed to lit_dl (``ckpt_path=``), checked before anything loads it: plain data
    only, allowed classes and config entries, callback paths in their folder
    (:func:`check_checkpoint`). Returned migrated to the current format."""
    return check_checkpoint(read_checkpoint(path), path)


def restore(
    path: str | Path,
    data_overrides: Mapping[str, Any] | None = None,
    checkpoint: dict[str, Any] | None = None,
) -> tuple[L.LightningModule, L.LightningDataModule]:
    """Rebuild the task and its datamodule (with fitted preparation) from a checkpoint alone.

    ``checkpoint``: the file as :func:`load_checkpoint` returned it, when the caller has read it already.
    """
    checkpoint = checkpoint if checkpoint is not None else load_checkpoint(path)
    meta = checkpoint["lit_dl"]
    task_cls = task_class(checkpoint, path)
    dm_cls = import_class(str(meta["datamodule"]), "checkpoint datamodule", L.LightningDataModule)
    dm_hparams = {
        **to_plain(dict(meta.get("datamodule_hparams") or {})),
        **to_plain(dict(data_overrides or {})),
    }
    private = sorted(str(k) for k in dm_hparams if str(k).startswith("_"))
    if private:  # the stored config has none (check_checkpoint): the user's data.* overrides
        raise ConfigError(
            f"data.{private[0]} cannot be set: the data's class and its config come from {path}"
        )
    state = datamodule_state(checkpoint, dm_cls)
    if not state:
        raise CheckpointError(
            f"{path} holds no fitted state of its datamodule ({dm_cls.__name__}): it was not saved by "
            "`lit-dl train` after set-up; retrain the model"
        )
    datamodule = build({"_target_": class_path(dm_cls), **dm_hparams}, "data", _recursive_=False)
    datamodule.load_state_dict(state)
    hparams = to_plain(dict(checkpoint.get("hyper_parameters") or {}))
    try:
        model = build(
            {"_target_": class_path(task_cls), **hparams},
            "model",
            _recursive_=False,
            data=datamodule.data_spec().to_dict(),
        )
        model.load_state_dict(checkpoint["state_dict"])
        model.on_load_checkpoint(checkpoint)
    except ConfigError as err:
        raise CheckpointError(f"cannot rebuild the model from {path}: {err}") from err
    except LitDLError:
        raise
    except Exception as err:
        raise CheckpointError(
            f"cannot rebuild the model from {path}: {str(err).splitlines()[0][:300]} "
            "(was it written by another model family or lit_dl version?)"
        ) from err
    model.eval()
    return model, datamodule
