"""The one place lit_dl reaches into Lightning's private or undocumented API.

Each function wraps one such use, says what it relies on and why there is no public way,
and has a test in ``tests/test_compat.py`` that fails when Lightning changes it, so an
upgrade breaks here, by name, and not somewhere deep in a training run.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from torch.utils.data import Dataset, Sampler
from torchmetrics import Metric


def datamodule_state(checkpoint: Mapping[str, Any], datamodule_cls: type) -> dict[str, Any]:
    """The ``state_dict()`` Lightning saved for a datamodule of class ``datamodule_cls`` ({} if none).

    Wraps: Lightning's ``_CheckpointConnector`` stores ``datamodule.state_dict()`` under the
    key ``datamodule.__class__.__qualname__`` (and restores it from there only when the same
    datamodule is passed to ``fit``/``validate``). Rebuilding a datamodule from a checkpoint
    alone needs to read that key directly; the key's format is not documented.
    """
    return dict(checkpoint.get(datamodule_cls.__qualname__) or {})


def trainer_or_none(module: L.LightningModule) -> L.Trainer | None:
    """The trainer a module is attached to, or None (``module.trainer`` raises when there is none).

    Wraps: the private attribute ``LightningModule._trainer``; the public property raises a
    ``RuntimeError`` for a module used outside a trainer (e.g. called directly in a test).
    """
    return module._trainer


def spawns_processes(trainer: L.Trainer) -> bool:
    """Whether the trainer starts its processes by spawning/forking (``ddp_spawn``, ``ddp_fork``, ...).

    Wraps: the private launcher class
    ``lightning.pytorch.strategies.launchers._MultiProcessingLauncher`` of
    ``trainer.strategy.launcher``; Lightning has no public "how are processes started" flag.
    """
    from lightning.pytorch.strategies.launchers import _MultiProcessingLauncher

    return isinstance(getattr(trainer.strategy, "launcher", None), _MultiProcessingLauncher)


def script_launch_processes(trainer: L.Trainer) -> int:
    """Processes per node the trainer starts by re-running the command (``ddp``); 0 if it does not.

    Wraps: the private launcher class
    ``lightning.pytorch.strategies.launchers._SubprocessScriptLauncher`` and its
    ``num_processes`` attribute; used to refuse a ``ddp`` run whose main program cannot be re-run.
    """
    from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher

    launcher = getattr(trainer.strategy, "launcher", None)
    return int(launcher.num_processes) if isinstance(launcher, _SubprocessScriptLauncher) else 0


def unrepeated_sampler(dataset: Dataset, num_replicas: int, rank: int) -> Sampler:
    """Rows ``rank, rank + num_replicas, ...`` of ``dataset`` in order, each read by one process only.

    Wraps: ``lightning.pytorch.overrides.distributed.UnrepeatedDistributedSampler`` (an internal
    module, not in Lightning's API reference). PyTorch's ``DistributedSampler`` pads the set with
    repeated rows, which would count twice in evaluation metrics; Lightning keeps a sampler that
    already is a ``DistributedSampler``, so this one is not swapped out under DDP.
    """
    from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

    return UnrepeatedDistributedSampler(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)


def amp_grad_scaler(trainer: L.Trainer | None) -> Any | None:
    """The ``torch.amp.GradScaler`` of a ``16-mixed`` run, or None (other precisions, no trainer).

    Wraps: the undocumented attribute ``scaler`` of Lightning's precision plugin
    (``MixedPrecision.scaler``, reached through ``trainer.precision_plugin``). A gradient penalty
    computed with ``torch.autograd.grad`` must scale and unscale by hand, as PyTorch's AMP recipe
    does, and needs the scaler Lightning uses for the optimiser steps.
    """
    if trainer is None:
        return None
    return getattr(trainer.precision_plugin, "scaler", None)


def allow_unused_parameters(trainer: Any) -> None:
    """Let DDP accept backward passes that reach only some parameters (call from a task's ``setup``).

    A GAN's updates each back-propagate through one network, so under DDP the other's parameters
    get no gradient in that pass and DDP would fail, or wait for them (Lightning issue #20866).
    ``setup`` runs before the strategy wraps the model, so the flag takes effect. Other
    strategies are left alone.

    Touches a private Lightning attribute: ``DDPStrategy._ddp_kwargs``, the keyword arguments the
    strategy hands to ``DistributedDataParallel`` (Lightning 2.6 has no public way to change them
    once the trainer is built).
    """
    from lightning.pytorch.strategies import DDPStrategy

    strategy = getattr(trainer, "strategy", None)
    if isinstance(strategy, DDPStrategy):
        strategy._ddp_kwargs["find_unused_parameters"] = True


def logs_this_step(trainer: L.Trainer) -> bool:
    """Whether the loggers write step metrics after this training step (``log_every_n_steps``):
    step scalars are handed to Lightning only then (Lightning 2.6's own rule, a private property)."""
    if trainer.fast_dev_run:
        return True
    connector = getattr(trainer, "_logger_connector", None)
    try:
        return bool(connector.should_update_logs)
    except AttributeError:  # another Lightning release: log every step, as Lightning would accept
        return True


def epoch_ends_after_batch(trainer: L.Trainer, batch_idx: int) -> bool:
    """Whether the training epoch ends after batch ``batch_idx`` (called from ``on_train_batch_end``):
    its last batch, ``max_steps`` reached, or a stop request Lightning honours now.

    Wraps: Lightning 2.6's ``_TrainingEpochLoop.done``; a stop request (``trainer.should_stop``)
    ends the epoch only once ``min_epochs``/``min_steps`` allow it (the private
    ``fit_loop._can_stop_early``; another release without it: taken as allowed).
    """
    if batch_idx + 1 >= trainer.num_training_batches:
        return True
    if trainer.max_steps not in (None, -1) and trainer.global_step >= trainer.max_steps:
        return True
    return bool(trainer.should_stop and getattr(trainer.fit_loop, "_can_stop_early", True))


# Hooks Lightning calls for every batch, on callbacks and on the LightningModule.
BATCH_HOOKS = (
    "on_train_batch_start",
    "on_train_batch_end",
    "on_before_zero_grad",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_validation_batch_start",
    "on_validation_batch_end",
    "on_test_batch_start",
    "on_test_batch_end",
)

TRAINING_STEP_HOOKS = BATCH_HOOKS[:6]


def skip_noop_batch_hooks(obj: L.Callback | L.LightningModule) -> list[str]:
    """Make Lightning skip the per-batch hooks ``obj`` inherits as no-ops; returns their names.

    For every callback and every hook of every batch, Lightning enters a profiler context and
    formats the callback's ``state_key`` even when the hook is the base class's empty method: with
    a dozen callbacks that is about 80 profiler contexts a step (counted in a cProfile). Lightning
    skips a hook that is not callable (``_call_callback_hooks``, ``_call_lightning_module_hook``:
    ``if callable(fn)``), so an instance attribute ``None`` shadows each inherited no-op.
    """
    base = L.Callback if isinstance(obj, L.Callback) else L.LightningModule
    # Lightning reads the signatures of a module's evaluation batch hooks (dataloader_idx): kept.
    names = BATCH_HOOKS if base is L.Callback else TRAINING_STEP_HOOKS
    skipped = []
    for name in names:
        inherited = getattr(base, name, None)
        if inherited is not None and getattr(type(obj), name, None) is inherited:
            object.__setattr__(obj, name, None)
            skipped.append(name)
    if isinstance(obj, ModelCheckpoint) and saves_only_at_epoch_ends(obj):
        # Its on_train_batch_end then only finds, every step, that no step saves (two enum
        # comparisons and a modulo: about 20 us a step per checkpoint callback here).
        object.__setattr__(obj, "on_train_batch_end", None)
        skipped.append("on_train_batch_end")
    if (
        isinstance(obj, LearningRateMonitor)
        and getattr(obj, "logging_interval", None) == "epoch"
        and type(obj).on_train_batch_start is LearningRateMonitor.on_train_batch_start
    ):
        # Logging per epoch, its on_train_batch_start only looks whether a step logs.
        object.__setattr__(obj, "on_train_batch_start", None)
        skipped.append("on_train_batch_start")
    return skipped


def saves_only_at_epoch_ends(checkpoint: ModelCheckpoint) -> bool:
    """Whether a ``ModelCheckpoint`` never saves within an epoch (no ``every_n_train_steps``, no
    ``train_time_interval``; Lightning 2.6's private fields, read where they exist)."""
    steps = getattr(checkpoint, "_every_n_train_steps", None)
    interval = getattr(checkpoint, "_train_time_interval", "unknown")
    return type(checkpoint).on_train_batch_end is ModelCheckpoint.on_train_batch_end and (
        steps is not None and steps < 1 and interval is None
    )


def skip_repeated_cuda_probe() -> bool:
    """On a machine without a visible GPU, stop every optimiser step from probing for one; returns
    whether it did.

    Lightning sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` when it is imported (``lightning.fabric``),
    so that looking for a GPU does not initialise CUDA before processes are forked. torch's Adam and
    AdamW call ``torch.cuda.is_available()`` in every step (a CUDA-graph health check); with that
    variable, a CUDA build of torch and no GPU, each call loads the NVML library, fails, and counts
    again (CUDA never initialises, so the count is never cached): about 90 microseconds a step on
    the 2-core VM, every step of every run on a CPU. Without a GPU there is nothing for the variable
    to protect, so it is set to ``0``: the check is then torch's cached C++ count (about 1 us).
    Processes started later (DDP's) inherit the setting.
    """
    if os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") != "1" or not torch.backends.cuda.is_built():
        return False
    if torch.cuda.device_count() > 0:
        return False
    os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "0"
    return True


def _replaced(original: Callable[..., Any]) -> bool:
    """Whether ``original`` is already one of lit_dl's replacements (the shims below are idempotent)."""
    return getattr(original, "_lit_dl_replacement", False)


def _replacement(function: Callable[..., Any], original: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` marked as lit_dl's replacement of ``original`` (``__wrapped__``: the original)."""
    function._lit_dl_replacement = True  # type: ignore[attr-defined]
    function.__wrapped__ = original  # type: ignore[attr-defined]
    return function


# How apply_to_collection treats an object, by its type (looked up once per type: isinstance against
# the collection ABCs costs a microsecond each, and a logged metric holds about 50 values).
_COLLECTION_KINDS: dict[type, str] = {}


def _collection_kind(kind: type) -> str:
    # In apply_to_collection's order (lightning_utilities 0.15): the wanted types, dataclasses,
    # mappings, then sequences other than text.
    if issubclass(kind, torch.Tensor):
        return "tensor"
    if issubclass(kind, Metric):
        return "metric"
    if dataclasses.is_dataclass(kind):
        return "dataclass"
    if issubclass(kind, Mapping):
        return "mapping"
    if issubclass(kind, Sequence) and not issubclass(kind, str | bytes):
        return "sequence"
    return "leaf"


def _all_tensors_on(obj: Any, device: torch.device) -> bool:
    """Whether every tensor ``apply_to_collection`` would reach in ``obj`` lies on ``device``; False
    where it would meet a torchmetrics ``Metric`` (moved by its own ``to``) or a container twice
    (a cycle, on which Lightning's own walk fails: left to it)."""
    kinds = _COLLECTION_KINDS
    pending, seen = [obj], set()
    while pending:
        item = pending.pop()
        kind = kinds.get(type(item))
        if kind is None:
            kind = kinds[type(item)] = _collection_kind(type(item))
        if kind == "leaf":
            continue
        if kind == "tensor":
            if item.device != device:
                return False
            continue
        if kind == "metric" or id(item) in seen:
            return False
        seen.add(id(item))
        if kind == "mapping":
            pending.extend(item.values())
        elif kind == "sequence":
            pending.extend(item)
        else:  # a dataclass
            pending.extend(getattr(item, f.name) for f in dataclasses.fields(item))
    return True


def skip_noop_result_moves() -> bool:
    """Make ``self.log`` skip moving a logged value's state to the device it is already on; returns
    whether Lightning's class is patched (now or before).

    Every ``self.log`` call moves the metric that holds the value to the value's device
    (``_ResultMetric.to``, Lightning 2.6): ``apply_to_collection`` over the metric's ``__dict__``,
    which deep-copies its metadata dataclass each time. That is about 280 of the 330 us a call costs
    on the 2-core VM (``benchmarks/log_cost.py``), at every logged step and for every metric at every
    epoch end. Nothing moves once the state is on the device, so the patched ``to`` returns the
    metric as it is when every tensor it holds is there already, and otherwise does what Lightning
    does. Idempotent; another Lightning release without the private class is left alone.
    """
    try:
        from lightning.pytorch.trainer.connectors.logger_connector.result import _ResultMetric
    except ImportError:
        return False
    moves = _ResultMetric.to
    if _replaced(moves):
        return True

    def to(self: Any, *args: Any, **kwargs: Any) -> Any:
        device = args[0] if len(args) == 1 and not kwargs else None
        if isinstance(device, torch.device) and _all_tensors_on(self.__dict__, device):
            return self
        return moves(self, *args, **kwargs)

    _ResultMetric.to = _replacement(to, moves)
    return True


# torchmetrics modules that bind its ``_bincount`` by name (1.x): each gets the replacement below.
_BINCOUNT_USERS = (
    "torchmetrics.utilities.data",
    "torchmetrics.functional.classification.stat_scores",
    "torchmetrics.functional.classification.confusion_matrix",
    "torchmetrics.functional.classification.auroc",
    "torchmetrics.functional.classification.average_precision",
    "torchmetrics.functional.classification.precision_recall_curve",
    "torchmetrics.functional.regression.kendall",
)


def sorted_bincount(x: torch.Tensor, minlength: int | None = None) -> torch.Tensor:
    """``torch.bincount(x, minlength)`` that is deterministic on every device, in O(n log n) time and O(n)
    memory: the sorted values, cut at each bin's edge (``torch.searchsorted``)."""
    size = max(minlength or 0, int(x.max()) + 1 if x.numel() else 0)
    edges = torch.searchsorted(torch.sort(x.flatten()).values, torch.arange(size + 1, device=x.device))
    return edges.diff()


def deterministic_bincount_without_a_mesh() -> bool:
    """Make torchmetrics count bins without its (n x bins) comparison table under deterministic
    algorithms; returns whether it did (now or before).

    With ``torch.use_deterministic_algorithms(True)`` (``trainer.deterministic=true``) torchmetrics'
    ``_bincount`` (1.x) compares every value with every bin: a binned precision-recall curve of 1,001
    thresholds (lit_dl's decision threshold) fed a batch of under 50 rows (torchmetrics counts those;
    larger ones take another path) builds an int64 table of 4 x 1,001 x 1,001 x rows: 1.3 GB and 3 s
    on the 2-core VM for each 40-row validation batch of a 400-row churn run.
    ``torch.bincount`` is deterministic on the CPU, so there it is used as torchmetrics does without
    the flag; on other devices :func:`sorted_bincount` counts the same deterministically. MPS and XLA
    keep torchmetrics' own way.
    """
    import importlib

    try:
        from torchmetrics.utilities import data
    except ImportError:
        return False
    original = data._bincount
    if _replaced(original):
        return True

    def bincount(x: torch.Tensor, minlength: int | None = None) -> torch.Tensor:
        if not torch.are_deterministic_algorithms_enabled() or x.is_mps or x.device.type == "xla":
            return original(x, minlength=minlength)
        if minlength is None:
            minlength = len(torch.unique(x))  # torchmetrics' rule
        if x.device.type == "cpu":
            return torch.bincount(x, minlength=minlength)
        return sorted_bincount(x, minlength)

    _replacement(bincount, original)
    for name in _BINCOUNT_USERS:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if getattr(module, "_bincount", None) is original:
            module._bincount = bincount
    return True
