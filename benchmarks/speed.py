"""Training speed of lit_dl against a plain PyTorch loop and the ideal loop, for every model family.

For each family (``--families``; an experiment of ``lit-dl train``), in one process, one after another,
on the same prepared training data, the same network (identical initial weights), batch size,
optimiser settings, number of steps and seed:

(a) plain: the loop a user writes: ``DataLoader(TensorDataset(...), batch_size, shuffle=True)``
    (one sample at a time, default collate), ``.to(device)`` per batch, the loss written by hand,
    the configured optimiser with torch's defaults;
(b) ideal: the tensors moved to the device once, ``randperm(n, device=...)`` each epoch, whole
    batches taken by index (text: the streams sliced on the device), the optimiser as lit_dl
    builds it (fused where torch has the kernel: :func:`~lit_dl.tasks.base.fuses_by_default`);
(c) lit_dl: ``train_job`` (what ``lit-dl train`` runs) with the experiment's default callbacks and
    logger, the test split off (``test=false``) and :class:`~lit_dl.callbacks.throughput.StepStats`.

Beside them, "bare L": (b)'s hand-written step and batches inside a bare ``LightningModule``
(manual optimisation, no callbacks, no logger): Lightning's own loop with nothing of lit_dl, the
floor of any framework on Lightning's Trainer. ``vs bare L`` is lit_dl's speed over it.

The four loops take turns, ``--repeats`` rounds (default: the family's own, 3 to 9: more for the
families whose loops take a second or two), and each loop's median round is reported; the ratios
("vs plain", ...) are the medians of each round's own ratios, with their range over the rounds
below the table. On a 2-core virtual machine one loop's speed moved by up to 35% between rounds:
rounds in turn spread that drift over all four, and a round's loops run within seconds of each
other, so a round's ratio is less touched by it than the ratio of two medians.

Steps/s count training steps only, timed the way ``StepStats`` times them in (c): from the end of
one training batch to the end of the next in the same epoch (the first step of every epoch and the
first ``--warmup`` steps are left out; on a GPU every step ends with a synchronisation). lit_dl's
whole fit time is printed beside it, with the per-epoch work it does besides training steps
(validation, checkpoints, sample grids, FID), which (a) and (b) do not do.

The loss is the mean training loss of the last epoch (the GAN: the discriminator's); the three
runs see the batches in different orders (and draw other dropout masks), so their losses differ
by that noise only: "same loss" means within the family's tolerance (:data:`FAMILIES`, from the
spread over seeds). Peak memory: on a GPU ``torch.cuda.max_memory_allocated`` (reset before each
run); on the CPU the peak resident set size above the run's starting one, sampled every 5 ms by
a background thread reading ``/proc/self/statm``.

(a) and (b) have no validation, so they do not step a ``ReduceLROnPlateau`` scheduler; the default
epoch counts are below the experiments' scheduler patience, and the table says when lit_dl's
learning rate did change.

    make bench                                           # every family, CPU, ~9 minutes on 2 cores
    make bench ARGS="--accelerator gpu"                  # on a GPU
    python benchmarks/speed.py --families churn_mlp digits_cnn --epochs 3 --json speed.json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import math
import os
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lit_dl.callbacks.throughput import StepStats
from lit_dl.cli import CONFIG_DIR
from lit_dl.compat import skip_repeated_cuda_probe
from lit_dl.data.batching import TensorBatchDataset
from lit_dl.data.images import InMemoryImageDataset
from lit_dl.data.sequences import PaddedSequenceDataset
from lit_dl.data.text import CharTextDataModule
from lit_dl.errors import ConfigError, LitDLError
from lit_dl.tasks.adversarial import discriminator_loss, generator_loss
from lit_dl.verbs.common import build_datamodule, build_task
from lit_dl.verbs.train import train_job


@dataclass(frozen=True)
class Family:
    """One model family: the experiment, its step, what keeps the default run short, the loss tolerance.

    ``tolerance``: the largest relative spread ``(max - min) / mean`` of the three last-epoch losses
    still called "the same": four standard deviations of the loss over seeds (the range of three
    draws exceeds 4 sigma about once in a hundred). Measured with the ideal loop at the default
    epochs, seeds 1-5 (text_lstm 1-3), relative std: churn_mlp 0.24%, digits_cnn 27% (the CNN fits
    the training digits within a few epochs: its last-epoch loss, ~0.05, is the noise of a few hard
    batches, so only a gross difference fails), churn_lstm 2.2%, text_lstm 0.9%, digits_vae 0.5%,
    digits_gan 6.2%. With other ``--epochs`` the tolerance is a rougher guide.
    """

    experiment: str
    kind: str  # classifier | language_model | vae | gan
    epochs: int
    tolerance: float
    overrides: tuple[str, ...] = ()
    loss_name: str = "train/loss"
    rounds: int = 3  # default rounds: a family whose loops take 1-5 s each gets more


FAMILIES: dict[str, Family] = {
    f.experiment: f
    for f in (
        Family(
            "churn_mlp", "classifier", epochs=5, tolerance=0.01, overrides=("data.n_rows=50000",), rounds=5
        ),
        Family("digits_cnn", "classifier", epochs=5, tolerance=1.1, rounds=7),
        Family("churn_lstm", "classifier", epochs=3, tolerance=0.09),
        Family("text_lstm", "language_model", epochs=1, tolerance=0.04),
        Family("digits_vae", "vae", epochs=10, tolerance=0.02, rounds=9),
        Family("digits_gan", "gan", epochs=5, tolerance=0.25, loss_name="train/d_loss", rounds=5),
    )
}
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed")
LOOPS = ("plain", "ideal", "bare L", "lit_dl")


# ---------------------------------------------------------------- measuring
class StepTimer:
    """Training steps per second, timed as :class:`StepStats` times lit_dl's: from the end of one step
    to the end of the next within an epoch, after ``warmup`` steps; on a GPU each step end synchronises."""

    def __init__(self, device: torch.device, warmup: int) -> None:
        self.device, self.warmup = device, warmup
        self.steps, self.seconds, self.seen = 0, 0.0, 0
        self._last: float | None = None

    def epoch_start(self) -> None:
        self._last = None

    def step_end(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.seen += 1
        if self._last is not None and self.seen > self.warmup:
            self.steps += 1
            self.seconds += now - self._last
        self._last = now

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else float("nan")


class PeakMemory:
    """Peak memory of one run in MiB: on a GPU ``max_memory_allocated`` (its peak statistics reset at
    the start); on the CPU the peak resident set size above the one at the start, sampled every 5 ms
    by a background thread reading ``/proc/self/statm``. ``restart`` moves the start (lit_dl: to the
    start of training, after its data preparation), ``stop`` ends the measurement early."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.start_rss = self.peak_rss = 0
        self.peak_mib: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _rss(self) -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * self.page

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak_rss = max(self.peak_rss, self._rss())

    def restart(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.start_rss = self.peak_rss = self._rss()

    def stop(self) -> None:
        if self.peak_mib is not None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mib = torch.cuda.max_memory_allocated(self.device) / 2**20
            return
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        self.peak_rss = max(self.peak_rss, self._rss())
        self.peak_mib = (self.peak_rss - self.start_rss) / 2**20

    def __enter__(self) -> PeakMemory:
        self.restart()
        if self.device.type != "cuda":
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def mib(self) -> float:
        return self.peak_mib if self.peak_mib is not None else float("nan")


@dataclass
class Result:
    """One loop's figures."""

    family: str
    loop: str
    steps: int
    timed_steps: int
    steps_per_s: float
    peak_mib: float
    loss: float
    seconds: float  # the whole loop (lit_dl: the whole fit, validation and checkpoints included)
    initial_checksum: float = float("nan")  # of the weights the loop started from
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- precision
class Precision:
    """Autocast and loss scaling as Lightning's ``precision`` setting does them, for (a) and (b)."""

    def __init__(self, precision: str, device: torch.device) -> None:
        self.device = device
        self.dtype = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}.get(precision)
        self.scaler = torch.amp.GradScaler(device.type) if precision == "16-mixed" else None

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def step(self, loss: Tensor, optimizer: torch.optim.Optimizer, params: Any, clip: float | None) -> None:
        """Zero the gradients, back-propagate ``loss``, clip the gradient norm (if ``clip``), step."""
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            if clip:
                nn.utils.clip_grad_norm_(params, clip)
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        if clip:
            self.scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(params, clip)
        self.scaler.step(optimizer)
        self.scaler.update()


# ---------------------------------------------------------------- data of (a) and (b)
@dataclass
class RowData:
    """Prepared training rows (tables, images, padded sequences) and how a batch of them is read.

    ``resample_binary``: stochastically binarised images take a fresh 0/1 draw each batch
    (as lit_dl's image dataset does). ``drop_last``: lit_dl's rule, a last batch of one row is left
    out (batch norm cannot train on it).
    """

    tensors: tuple[Tensor, ...]
    batch_size: int
    resample_binary: bool = False

    @property
    def n(self) -> int:
        return len(self.tensors[0])

    @property
    def drop_last(self) -> bool:
        return self.n > self.batch_size and self.n % self.batch_size == 1

    def steps_per_epoch(self) -> int:
        return self.n // self.batch_size if self.drop_last else math.ceil(self.n / self.batch_size)

    def read(self, batch: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        if self.resample_binary:
            return (torch.bernoulli(batch[0]), *batch[1:])
        return batch

    def plain(self, device: torch.device) -> Callable[[], Iterator[tuple[Tensor, ...]]]:
        """(a): a shuffling per-sample DataLoader, each batch copied to the device."""
        loader = DataLoader(
            TensorDataset(*self.tensors), batch_size=self.batch_size, shuffle=True, drop_last=self.drop_last
        )

        def epoch() -> Iterator[tuple[Tensor, ...]]:
            for batch in loader:
                yield self.read(tuple(t.to(device) for t in batch))

        return epoch

    def ideal(self, device: torch.device) -> Callable[[], Iterator[tuple[Tensor, ...]]]:
        """(b): the tensors on the device once; a device permutation per epoch, batches by index."""
        tensors = tuple(t.to(device) for t in self.tensors)
        steps, size = self.steps_per_epoch(), self.batch_size

        def epoch() -> Iterator[tuple[Tensor, ...]]:
            order = torch.randperm(self.n, device=device)
            for k in range(steps):
                index = order[k * size : (k + 1) * size]
                yield self.read(tuple(t[index] for t in tensors))

        return epoch


@dataclass
class StreamData:
    """A language model's training text as lit_dl reads it: ``streams`` parallel rows of the characters,
    consecutive ``seq_len`` chunks, every epoch starting at a random offset below ``seq_len``."""

    tokens: Tensor
    streams: int
    seq_len: int

    @property
    def length(self) -> int:
        return (len(self.tokens) - 1 - (self.seq_len - 1)) // self.streams

    def steps_per_epoch(self) -> int:
        return self.length // self.seq_len

    def _epoch(self, tokens: Tensor, device: torch.device) -> Iterator[tuple[Tensor, Tensor]]:
        offset = int(torch.randint(self.seq_len, (1,)))
        size = self.streams * self.length
        inputs = tokens[offset : offset + size].view(self.streams, self.length)
        targets = tokens[offset + 1 : offset + 1 + size].view(self.streams, self.length)
        for k in range(self.steps_per_epoch()):
            columns = slice(k * self.seq_len, (k + 1) * self.seq_len)
            yield inputs[:, columns].contiguous().to(device), targets[:, columns].contiguous().to(device)

    def plain(self, device: torch.device) -> Callable[[], Iterator[tuple[Tensor, Tensor]]]:
        """(a): chunks sliced from the text in host memory, each copied to the device
        (PyTorch's word_language_model example)."""
        return lambda: self._epoch(self.tokens, device)

    def ideal(self, device: torch.device) -> Callable[[], Iterator[tuple[Tensor, Tensor]]]:
        """(b): the text on the device once, chunks sliced there."""
        tokens = self.tokens.to(device)
        return lambda: self._epoch(tokens, device)


def training_data(datamodule: L.LightningDataModule) -> RowData | StreamData:
    """The datamodule's prepared training split as tensors, read as its own loader reads them."""
    if isinstance(datamodule, CharTextDataModule):
        return StreamData(datamodule.datasets["train"], datamodule.batch_size, datamodule.seq_len)
    dataset = datamodule.datasets["train"]
    batch_size = int(datamodule.batch_size)
    if isinstance(dataset, TensorBatchDataset):
        tensors = tuple(dataset.tensors)
        if len(tensors) == 3 and tensors[1].ndim == 2 and tensors[1].shape[1] == 0:
            tensors = (tensors[0], tensors[2])  # tables without category codes: (x, y), as a user has them
        return RowData(tensors, batch_size)
    if isinstance(dataset, PaddedSequenceDataset):
        return RowData((dataset.x, dataset.lengths, dataset.y), batch_size)
    if isinstance(dataset, InMemoryImageDataset):
        if dataset.transform is not None:
            raise ConfigError("data.augment is set: the benchmark compares training loops without it")
        images = dataset.images.float() / 255.0
        if dataset.resample_binary:  # binary pixels are modelled in [0, 1]: no normalisation after the draw
            return RowData((images, dataset.labels), batch_size, resample_binary=True)
        return RowData(((images - dataset.mean) / dataset.std, dataset.labels), batch_size)
    raise ConfigError(f"no plain loop for the training dataset {type(dataset).__name__}")


# ---------------------------------------------------------------- the steps of (a) and (b), by hand
class Step:
    """One training step of a family, written out by hand on the task's networks (a copy of them)."""

    def __init__(
        self, task: L.LightningModule, precision: Precision, clip: float | None, fused: bool | None
    ) -> None:
        self.task, self.precision, self.clip, self.fused = task, precision, clip, fused

    def epoch_start(self) -> None:
        """Called before each epoch (the language model starts its state afresh)."""

    def __call__(self, batch: tuple[Tensor, ...]) -> tuple[Tensor, int]:
        """Train on one batch; return its (detached) loss and its weight in the epoch mean."""
        raise NotImplementedError


class ClassifierStep(Step):
    """BCE on one logit (two classes) or cross-entropy, as ClassificationTask's default loss."""

    def __init__(
        self, task: L.LightningModule, precision: Precision, clip: float | None, fused: bool | None
    ) -> None:
        super().__init__(task, precision, clip, fused)
        hp = task.hparams
        if hp.get("loss") or hp.get("class_weights") is not None or hp.get("label_smoothing"):
            raise ConfigError("the plain loop writes the default loss: leave model.loss, class_weights unset")
        self.net, self.binary = task.net, task.num_classes == 2
        self.optimizer = task.build_optimizer("optimizer", task.parameters(), fused=self.fused)

    def __call__(self, batch: tuple[Tensor, ...]) -> tuple[Tensor, int]:
        *inputs, target = batch
        with self.precision.autocast():
            output = self.net(*inputs)
        if self.binary:
            loss = F.binary_cross_entropy_with_logits(output.squeeze(-1).float(), target.float())
        else:
            loss = F.cross_entropy(output.float(), target)
        self.precision.step(loss, self.optimizer, self.net.parameters(), self.clip)
        return loss.detach(), len(target)


class LanguageModelStep(Step):
    """Next-character cross-entropy, the recurrent state carried from chunk to chunk (detached)."""

    def __init__(
        self, task: L.LightningModule, precision: Precision, clip: float | None, fused: bool | None
    ) -> None:
        super().__init__(task, precision, clip, fused)
        self.net = task.net
        self.optimizer = task.build_optimizer("optimizer", task.parameters(), fused=self.fused)
        self.state: Any = None

    def epoch_start(self) -> None:
        self.state = None

    def __call__(self, batch: tuple[Tensor, ...]) -> tuple[Tensor, int]:
        inputs, targets = batch
        with self.precision.autocast():
            logits, state = self.net(inputs, self.state)
        self.state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
        self.precision.step(loss, self.optimizer, self.net.parameters(), self.clip)
        return loss.detach(), targets.numel()


class VAEStep(Step):
    """The negative ELBO with a Bernoulli decoder: reconstruction (one reparameterised draw) + KL."""

    def __init__(
        self, task: L.LightningModule, precision: Precision, clip: float | None, fused: bool | None
    ) -> None:
        super().__init__(task, precision, clip, fused)
        hp = task.hparams
        if hp.likelihood != "bernoulli" or hp.kl_warmup_epochs or float(hp.beta) != 1.0:
            raise ConfigError("the plain VAE loop writes a Bernoulli decoder's ELBO (beta 1, no warm-up)")
        self.encoder, self.decoder = task.encoder, task.decoder
        self.optimizer = task.build_optimizer("optimizer", task.parameters(), fused=self.fused)

    def __call__(self, batch: tuple[Tensor, ...]) -> tuple[Tensor, int]:
        x = batch[0]
        with self.precision.autocast():
            mean, log_var = self.encoder(x)
            mean, log_var = mean.float(), log_var.float()
            z = mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)
            logits = self.decoder(z)
        recon = F.binary_cross_entropy_with_logits(logits.float(), x, reduction="none").flatten(1).sum(1)
        kl = 0.5 * (mean.pow(2) + log_var.exp() - 1 - log_var).sum(1)
        loss = (recon + kl).mean()
        self.precision.step(loss, self.optimizer, self.task.parameters(), self.clip)
        return loss.detach(), len(x)


class GANStep(Step):
    """GANTask's step: a discriminator update on real and detached generated images, then a generator
    update through the frozen discriminator (the configured loss: hinge or non-saturating), then the
    generator's moving average."""

    def __init__(
        self, task: L.LightningModule, precision: Precision, clip: float | None, fused: bool | None
    ) -> None:
        super().__init__(task, precision, clip, fused)
        hp = task.hparams
        if hp.conditional or hp.loss == "wgan_gp" or hp.n_critic != 1:
            raise ConfigError("the plain GAN loop is unconditional, one critic step, no gradient penalty")
        self.kind, self.latent_dim, self.clip = hp.loss, int(hp.latent_dim), hp.gradient_clip_val
        self.generator, self.discriminator, self.ema = task.generator, task.discriminator, task.generator_ema
        self.optimizer_g = task.build_optimizer("optimizer_g", self.generator.parameters(), fused=self.fused)
        self.optimizer_d = task.build_optimizer(
            "optimizer_d", self.discriminator.parameters(), fused=self.fused
        )

    def __call__(self, batch: tuple[Tensor, ...]) -> tuple[Tensor, int]:
        real = batch[0] * 2 - 1  # [0, 1] -> [-1, 1], the generator's range
        n = len(real)
        self.generator.requires_grad_(False)
        with self.precision.autocast():
            with torch.no_grad():
                fake = self.generator(torch.randn(n, self.latent_dim, device=real.device), None)
            d_loss = discriminator_loss(
                self.kind, self.discriminator(real, None), self.discriminator(fake, None)
            )
        self.precision.step(d_loss, self.optimizer_d, self.discriminator.parameters(), self.clip)
        self.generator.requires_grad_(True)
        self.discriminator.requires_grad_(False)
        with self.precision.autocast():
            fake = self.generator(torch.randn(n, self.latent_dim, device=real.device), None)
            g_loss = generator_loss(self.kind, self.discriminator(fake, None))
        self.precision.step(g_loss, self.optimizer_g, self.generator.parameters(), self.clip)
        self.discriminator.requires_grad_(True)
        if self.ema is not None:
            self.ema.update_parameters(self.generator)
        return d_loss.detach(), n


STEPS: dict[str, type[Step]] = {
    "classifier": ClassifierStep,
    "language_model": LanguageModelStep,
    "vae": VAEStep,
    "gan": GANStep,
}


def hand_step(
    family: Family, task: L.LightningModule, cfg: DictConfig, device: torch.device, plain: bool = False
) -> tuple[L.LightningModule, Any, float]:
    """A copy of ``task`` on ``device``, the family's hand-written step over it, and its starting weights.

    ``plain``: the optimiser as a user writes it (torch's defaults); otherwise as lit_dl builds it
    (fused where :func:`~lit_dl.tasks.base.fuses_by_default` allows: not with mixed precision and
    gradient clipping).
    """
    task = copy.deepcopy(task).to(device).train()
    clip = cfg.trainer.get("gradient_clip_val") or task.hparams.get("gradient_clip_val")
    precision = str(cfg.trainer.precision)
    fused = False if plain or (clip and precision.endswith("-mixed")) else None
    step = STEPS[family.kind](task, Precision(precision, device), clip, fused)
    return task, step, weights_checksum(task)


def hand_loop(
    family: Family,
    loop: str,
    task: L.LightningModule,
    data: RowData | StreamData,
    cfg: DictConfig,
    device: torch.device,
    warmup: int,
) -> Result:
    """(a) or (b): ``cfg.trainer.max_epochs`` epochs of the hand-written step on a copy of ``task``."""
    task, step, initial_checksum = hand_step(family, task, cfg, device, plain=loop == "plain")
    epochs = int(cfg.trainer.max_epochs)
    timer = StepTimer(device, warmup)
    with PeakMemory(device) as memory:
        start = time.perf_counter()
        batches = data.plain(device) if loop == "plain" else data.ideal(device)
        for _ in range(epochs):
            step.epoch_start()
            timer.epoch_start()
            total = torch.zeros((), device=device)
            weight = 0
            for batch in batches():
                loss, n = step(batch)
                total += loss.float() * n
                weight += n
                timer.step_end()
        last_loss = float(total) / max(weight, 1)
        seconds = time.perf_counter() - start
    return Result(
        family.experiment,
        loop,
        timer.seen,
        timer.steps,
        timer.steps_per_s,
        memory.mib,
        last_loss,
        seconds,
        initial_checksum,
    )


# ---------------------------------------------------------------- Lightning's floor
class BareStep(L.LightningModule):
    """(b)'s step as a ``LightningModule``: Lightning's loop runs it, nothing else does."""

    def __init__(self, task: nn.Module, step: Callable[[Any], tuple[Tensor, int]], timer: StepTimer) -> None:
        super().__init__()
        self.task, self.step, self.timer = task, step, timer
        self.automatic_optimization = False  # the step does its own backward and optimiser step
        self.total: Tensor | None = None
        self.weight = 0

    def on_train_epoch_start(self) -> None:
        self.step.epoch_start()
        self.timer.epoch_start()
        self.total, self.weight = torch.zeros((), device=self.device), 0

    def training_step(self, batch: Any, batch_idx: int) -> None:
        loss, n = self.step(batch)
        self.total += loss.float() * n
        self.weight += n

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.timer.step_end()

    def configure_optimizers(self) -> None:
        return None


class Batches:
    """(b)'s epochs of batches as a sized iterable for Lightning."""

    def __init__(self, epoch: Callable[[], Iterator[Any]], steps: int) -> None:
        self.epoch, self.steps = epoch, steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[Any]:
        return self.epoch()


def bare_lightning_loop(
    family: Family,
    task: L.LightningModule,
    data: RowData | StreamData,
    cfg: DictConfig,
    device: torch.device,
    warmup: int,
) -> Result:
    """Bare L: (b)'s step and batches run by ``Trainer.fit`` with no callbacks, logger or validation."""
    task, step, initial_checksum = hand_step(family, task, cfg, device)
    timer = StepTimer(device, warmup)
    module = BareStep(task, step, timer)
    trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        max_epochs=int(cfg.trainer.max_epochs),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    with PeakMemory(device) as memory:
        start = time.perf_counter()
        trainer.fit(module, train_dataloaders=Batches(data.ideal(device), data.steps_per_epoch()))
        seconds = time.perf_counter() - start
    loss = float(module.total) / max(module.weight, 1) if module.total is not None else float("nan")
    return Result(
        family.experiment,
        "bare L",
        timer.seen,
        timer.steps,
        timer.steps_per_s,
        memory.mib,
        loss,
        seconds,
        initial_checksum,
    )


# ---------------------------------------------------------------- (c) lit_dl
class FitRecord(L.Callback):
    """What the benchmark reads from lit_dl's fit: training batches run, the last epoch's training loss,
    the fit's wall time, the initial weights (to check all three start alike) and the learning rates."""

    def __init__(self, loss_name: str, memory: PeakMemory) -> None:
        self.loss_name, self.memory = loss_name, memory
        self.batches = 0
        self.loss = float("nan")
        self.fit_seconds = 0.0
        self.initial_checksum = float("nan")
        self.first_lrs: list[float] = []
        self.last_lrs: list[float] = []
        self.val_batches = 0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()
        self.initial_checksum = weights_checksum(pl_module)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.memory.restart()  # after the data preparation, as for (a) and (b)
        self.first_lrs = [g["lr"] for o in trainer.optimizers for g in o.param_groups]

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.batches += 1

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:  # not the best checkpoint's re-run
            self.val_batches += 1

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = trainer.callback_metrics
        value = metrics.get(f"{self.loss_name}_epoch", metrics.get(self.loss_name))
        self.loss = float(value) if value is not None else float("nan")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.memory.stop()
        self.fit_seconds = time.perf_counter() - self._start
        self.last_lrs = [g["lr"] for o in trainer.optimizers for g in o.param_groups]


def weights_checksum(module: nn.Module) -> float:
    """A number that changes with any weight: the sum of every parameter's mean absolute value and sum."""
    with torch.no_grad():
        return float(sum(p.double().abs().mean() + p.double().sum() for p in module.parameters()))


def lit_dl_loop(family: Family, cfg: DictConfig, run_dir: Path, device: torch.device, warmup: int) -> Result:
    """(c): ``train_job`` with the composed config, StepStats and the benchmark's record added."""
    stats = StepStats(path=str(run_dir / "step_stats.json"), warmup_steps=warmup)
    memory = PeakMemory(device)
    record = FitRecord(family.loss_name, memory)
    with memory:
        start = time.perf_counter()
        train_job(cfg, run_dir, extra_callbacks=[stats, record])
        seconds = time.perf_counter() - start
    timed = json.loads((run_dir / "step_stats.json").read_text())
    result = Result(
        family.experiment,
        "lit_dl",
        record.batches,
        timed["steps"],
        timed["steps_per_s"] or float("nan"),
        memory.mib,
        record.loss,
        record.fit_seconds,
        record.initial_checksum,
    )
    stepping = result.steps / result.steps_per_s if result.steps_per_s > 0 else float("nan")
    result.notes.append(
        f"fit {record.fit_seconds:.1f} s, of which training steps ~{stepping:.1f} s; "
        f"{record.val_batches} validation batches; train_job {seconds:.1f} s in all"
    )
    if record.first_lrs != record.last_lrs:
        result.notes.append(f"lr changed by the scheduler: {record.first_lrs} -> {record.last_lrs}")
    return result


def per_epoch_work(cfg: DictConfig) -> str:
    """What lit_dl does each epoch besides training steps, read from the config."""
    names = {
        "model_checkpoint": "best.ckpt when it improves",
        "last_checkpoint": "last.ckpt",
        "early_stopping": "early-stopping check",
        "lr_monitor": "LR log",
        "samples": "sample grid PNG",
        "sample_quality": "FID/KID/precision/recall of {n} samples",
        "plots": None,  # after testing only
        "finite_loss": None,  # per step: part of the training steps
        "model_summary": None,
        "progress_bar": None,
    }
    work = ["validation", f"CSV log every {cfg.trainer.log_every_n_steps} steps and at epoch ends"]
    for key, node in (cfg.get("callbacks") or {}).items():
        if node is None or names.get(key, key) is None:
            continue
        text = names.get(key, key)
        if key == "sample_quality":
            text = text.format(n=node.get("n_samples", "?"))
        work.append(text)
    return ", ".join(work)


# ---------------------------------------------------------------- one family
def compose_config(family: Family, args: argparse.Namespace) -> DictConfig:
    overrides = [
        f"experiment={family.experiment}",
        *family.overrides,
        f"trainer.max_epochs={args.epochs or family.epochs}",
        f"trainer.accelerator={args.accelerator}",
        f"trainer.precision={args.precision}",
        f"seed={args.seed}",
        "test=false",  # the test split is no training machinery
        *args.overrides,
    ]
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("train", overrides=overrides)
            if cfg.data.get("augment"):  # data augmentation is no training machinery either
                cfg = compose("train", overrides=[*overrides, "data.augment=[]"])
    except Exception as err:  # Hydra's composition errors: one line, not a traceback
        first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise ConfigError(
            f"cannot compose experiment={family.experiment} with {' '.join(args.overrides)}: {first}"
        ) from None
    return cfg


def reference_parts(cfg: DictConfig) -> tuple[L.LightningModule, RowData | StreamData]:
    """The task and training data exactly as ``train`` builds them (same seed, same order of calls),
    so the networks of (a) and (b) start from lit_dl's initial weights."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    task = build_task(cfg.model, datamodule)
    return task, training_data(datamodule)


def run_family(
    family: Family, args: argparse.Namespace, runs: Path
) -> tuple[list[Result], dict[str, Any], dict[str, list[Result]]]:
    """The family's loops, ``--repeats`` (or the family's) rounds in turn: each loop's median round,
    what the table says of the run, and every round's results by loop."""
    cfg = compose_config(family, args)
    device = torch.device("cuda" if args.accelerator == "gpu" else "cpu")
    task, data = reference_parts(cfg)
    rounds: dict[str, list[Result]] = {loop: [] for loop in LOOPS}
    # The loops take turns, round after round: a slow spell of a shared machine hits every loop
    # alike, and each loop's median round is reported.
    for round_ in range(args.repeats or family.rounds):
        for loop in LOOPS:
            L.seed_everything(cfg.seed, workers=True, verbose=False)
            if loop in ("plain", "ideal"):
                result = hand_loop(family, loop, task, data, cfg, device, args.warmup)
            elif loop == "bare L":
                result = bare_lightning_loop(family, task, data, cfg, device, args.warmup)
            else:
                result = lit_dl_loop(family, cfg, runs / f"{family.experiment}-{round_}", device, args.warmup)
            rounds[loop].append(result)
            print(f"  {family.experiment:<11} {loop:<6} {result.steps_per_s:8.1f} steps/s", flush=True)
    results = [median_round(rounds[loop]) for loop in LOOPS]
    info = {
        "steps_per_epoch": data.steps_per_epoch(),
        "epochs": int(cfg.trainer.max_epochs),
        "batch_size": int(cfg.data.batch_size),
        "same_initial_weights": all(
            math.isclose(r.initial_checksum, results[0].initial_checksum, rel_tol=1e-9) for r in results
        ),
        "per_epoch_work": per_epoch_work(cfg),
    }
    return results, info, rounds


def median_round(results: list[Result]) -> Result:
    """The round with the median speed (of an even number, the slower middle one), with every round's
    speed in its notes."""
    ordered = sorted(results, key=lambda r: r.steps_per_s)
    middle = ordered[(len(ordered) - 1) // 2]
    if len(results) > 1:
        speeds = ", ".join(f"{r.steps_per_s:.1f}" for r in results)
        middle.notes.insert(0, f"median of {len(results)} rounds ({speeds} steps/s)")
    return middle


def verdict(results: list[Result], tolerance: float) -> tuple[bool, float]:
    """Whether the last-epoch losses agree within ``tolerance`` (relative to their mean), and the spread."""
    losses = [r.loss for r in results]
    if not all(math.isfinite(v) for v in losses):
        return False, float("nan")
    mean = sum(losses) / len(losses)
    spread = (max(losses) - min(losses)) / abs(mean) if mean else float("inf")
    return spread <= tolerance, spread


# ---------------------------------------------------------------- report
def table(rows: list[dict[str, Any]]) -> str:
    header = (
        f"{'family':<11} {'loop':<7} {'steps':>6} {'steps/s':>9} {'vs plain':>9} {'vs ideal':>9} "
        f"{'vs bare L':>10} {'peak MiB':>9} {'loss':>9} {'seconds':>8}  verdict"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        ratio_a = f"{row['vs_plain']:.2f}x" if row["loop"] == "lit_dl" else ""
        ratio_b = f"{row['vs_ideal']:.2f}x" if row["loop"] == "lit_dl" else ""
        ratio_l = f"{row['vs_bare_lightning']:.2f}x" if row["loop"] == "lit_dl" else ""
        if row["loop"] == "bare L":
            ratio_b = f"({row['bare_vs_ideal']:.2f}x)"  # Lightning's own floor against the ideal loop
        lines.append(
            f"{row['family']:<11} {row['loop']:<7} {row['steps']:>6} {row['steps_per_s']:>9.1f} "
            f"{ratio_a:>9} {ratio_b:>9} {ratio_l:>10} {row['peak_mib']:>9.1f} {row['loss']:>9.4f} "
            f"{row['seconds']:>8.1f}  "
            f"{row['verdict'] if row['loop'] == 'lit_dl' else ''}"
        )
    return "\n".join(lines)


def paired_ratios(rounds: dict[str, list[Result]], loop: str, other: str) -> list[float]:
    """``loop``'s speed over ``other``'s in each round (the two ran within seconds of each other); a
    round in which either timed no steps is left out (none left: ``[nan]``)."""
    ratios = [a.steps_per_s / b.steps_per_s for a, b in zip(rounds[loop], rounds[other], strict=True)]
    return [r for r in ratios if math.isfinite(r)] or [float("nan")]


def family_rows(
    results: list[Result], info: dict[str, Any], family: Family, rounds: dict[str, list[Result]]
) -> list[dict[str, Any]]:
    by_loop = {r.loop: r for r in results}
    three = [r for r in results if r.loop != "bare L"]  # (a), (b), (c): the tolerance is for three
    same, spread = verdict(three, family.tolerance)
    steps = {r.steps for r in results}
    text = (
        f"same loss (spread {spread:.1%} <= {family.tolerance:.0%})"
        if same
        else f"losses differ by {spread:.1%} (> {family.tolerance:.0%})"
    )
    if len(steps) > 1:
        text += f"; steps differ: {', '.join(f'{r.loop} {r.steps}' for r in results)}"
    if not info["same_initial_weights"]:
        text += "; initial weights differ"
    rows = []
    ratios = {
        "vs_plain": paired_ratios(rounds, "lit_dl", "plain"),
        "vs_ideal": paired_ratios(rounds, "lit_dl", "ideal"),
        "vs_bare_lightning": paired_ratios(rounds, "lit_dl", "bare L"),
        "bare_vs_ideal": paired_ratios(rounds, "bare L", "ideal"),
    }
    if len(rounds["lit_dl"]) > 1:
        by_round = "; ".join(
            f"{name.replace('_', ' ').replace('lightning', 'L')} {min(r):.2f}-{max(r):.2f}x"
            for name, r in ratios.items()
            if name != "bare_vs_ideal"
        )
        by_loop["lit_dl"].notes.insert(1, f"ratios by round: {by_round}")
    for r in results:
        rows.append(
            {
                "family": r.family,
                "loop": r.loop,
                "steps": r.steps,
                "timed_steps": r.timed_steps,
                "steps_per_s": r.steps_per_s,
                **{name: median(values) for name, values in ratios.items()},
                "ratios_by_round": ratios,
                "peak_mib": r.peak_mib,
                "loss": r.loss,
                "seconds": r.seconds,
                "verdict": text,
                "same_loss": same,
                "loss_spread": spread,
                "notes": r.notes,
                **info,
            }
        )
    return rows


def finite_or_null(value: Any) -> Any:
    """``value`` with every NaN or infinite float (in lists and dicts too) as None: standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_null(v) for v in value]
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--families", nargs="+", default=list(FAMILIES), help=f"of {', '.join(FAMILIES)} (default: all)"
    )
    parser.add_argument("--epochs", type=int, default=None, help="every family (default: each its own)")
    parser.add_argument("--accelerator", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--precision", choices=PRECISIONS, default="32-true")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--warmup", type=int, default=5, help="first training steps not timed")
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="rounds of the four loops, taken in turn (default: the family's own, 3 to 9)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--runs", type=Path, default=None, help="lit_dl's run folders (default: temporary)")
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides for every family, e.g. data.batch_size=512"
    )
    args = parser.parse_args(argv)
    # Overrides after --families land in its list: KEY=VALUE entries are overrides.
    args.overrides = [*args.overrides, *(f for f in args.families if "=" in f)]
    args.families = [f for f in args.families if "=" not in f]
    unknown = [f for f in args.families if f not in FAMILIES]
    if unknown or not args.families:
        parser.error(f"--families: {' '.join(unknown) or 'none given'}; choose from {', '.join(FAMILIES)}")
    if args.accelerator == "gpu" and not torch.cuda.is_available():
        parser.error("--accelerator gpu: torch sees no GPU")
    if args.precision == "16-mixed" and args.accelerator == "cpu":
        parser.error("--precision 16-mixed needs --accelerator gpu (on the CPU use bf16-mixed)")
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.epochs is not None and args.epochs < 1:
        parser.error("--epochs must be at least 1")
    return args


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every family's three loops; the rows of the table."""
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("lightning.fabric").setLevel(logging.ERROR)  # "Seed set to ..."
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        runs = args.runs or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lit_dl_speed_")))
        for name in args.families:
            family = FAMILIES[name]
            results, info, rounds = run_family(family, args, runs)
            rows.extend(family_rows(results, info, family, rounds))
    return rows


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    # lit_dl's train does this before its first step; done here, every loop steps alike from the first round.
    skip_repeated_cuda_probe()
    device = (
        torch.cuda.get_device_name() if args.accelerator == "gpu" else f"{torch.get_num_threads()} threads"
    )
    print(
        f"lit_dl speed: {args.accelerator} ({device}), precision {args.precision}, seed {args.seed}",
        flush=True,
    )
    start = time.perf_counter()
    try:
        rows = run(args)
    except LitDLError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print()
    print(table(rows))
    memory = (
        "torch.cuda.max_memory_allocated"
        if args.accelerator == "gpu"
        else "resident set size above the run's start, /proc/self/statm sampled every 5 ms"
    )
    print(
        f"\nsteps/s: training steps only, after the first {args.warmup} and without each epoch's first; "
        f"peak MiB: {memory} (lit_dl: from the start of training)"
    )
    print(
        "seconds: plain, ideal: the whole loop; lit_dl: the whole fit, which besides training steps did, "
        "every epoch:"
    )
    for row in rows:
        if row["loop"] == "lit_dl":
            print(
                f"  {row['family']:<11} {row['epochs']} epochs x {row['steps_per_epoch']} steps, batch "
                f"{row['batch_size']}: {row['per_epoch_work']}"
            )
            print(f"  {'':<11} {'; '.join(row['notes'])}")
    print(f"total {time.perf_counter() - start:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(finite_or_null(rows), indent=2) + "\n")
        print(f"rows written to {args.json}")


if __name__ == "__main__":
    main()
