"""The generative tasks' base: one sampling API for images and tables (VAEs and GANs).

A generative task learns the distribution of its data's inputs and offers the same two methods
whatever the modality (:class:`SampleSource`): ``generate`` (what callbacks score: image batches
in [0, 1], or transformed table rows) and ``sample`` (what ``lit-dl sample`` writes: images, or
a table with the source's columns). :class:`ImageGenerativeTask` and
:class:`TableGenerativeTask` read what they need from the data spec: image geometry, classes and
pixel scale, or the table's fitted transform.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.functional.classification import binary_auroc

from lit_dl.data.spec import DataSpec
from lit_dl.data.table_transform import TableTransform, draw_rows
from lit_dl.errors import ConfigError
from lit_dl.tasks.base import Task

# How the synthetic-table datamodule draws training rows (``data.sampling``), as a task needs it.
SAMPLING_NEEDS = {
    "uniform": "rows drawn uniformly (a conditional draw would bias the distribution it learns)",
    "conditional": "rows drawn with a condition each (CTGAN's training-by-sampling)",
}


@runtime_checkable
class SampleSource(Protocol):
    """What a generative task offers callbacks (grids, sample quality, fidelity) and ``lit-dl sample``.

    ``generator`` seeds the draw (the same generator state gives the same samples); ``condition``
    asks for a kind of sample: a class name or index, or one class index per sample ``(n,)``
    (class-conditional image models), or ``"column=value"`` (tables, e.g. ``"churn=Yes"``).
    """

    def generate(
        self, n: int, *, generator: torch.Generator | None = None, condition: Any = None
    ) -> Tensor | np.ndarray:
        """``n`` samples for scoring: images ``(n, C, H, W)`` in [0, 1], or transformed rows ``(n, D)``."""
        ...

    def sample(
        self, n: int = ..., *, generator: torch.Generator | None = None, condition: Any = None, **options: Any
    ) -> Tensor | pd.DataFrame:
        """``n`` samples to write: images ``(n, C, H, W)`` in [0, 1] on the CPU, or a table."""
        ...


def ranking_auroc(scores: Tensor, labels: Tensor) -> Tensor:
    """AUROC ``()`` (float32) of anomaly scores ``(N,)`` of any range against 0/1 labels ``(N,)``.

    torchmetrics reads scores outside [0, 1] as logits and squashes them with a sigmoid, which ties
    every negative ELBO of tens of nats at 1.0; rescaling to [0, 1] keeps the ranking exact.
    """
    scores = scores.double()
    span = (scores.max() - scores.min()).clamp_min(1e-12)
    return binary_auroc((scores - scores.min()) / span, labels.long()).float()


def draw_categories(probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One category per row of probabilities ``(B, K)``: indices ``(B,)``, drawn on the generator's device."""
    device = generator.device if generator is not None else probs.device
    return torch.multinomial(probs.to(device), 1, generator=generator).squeeze(1).to(probs.device)


class GenerativeTask(Task):
    """Base of the generative tasks: learn the inputs' distribution, then generate and sample.

    Labels are not predicted, so any data of the task's modality serves (an image classification
    set trains an image VAE; its classes may condition a GAN). Subclasses implement
    :meth:`generate` and :meth:`sample` with the signatures of :class:`SampleSource`.
    """

    task_type: ClassVar[str] = "generative"

    def check_data(self, spec: DataSpec | None) -> None:
        # The kind of problem the data poses (its labels) does not matter: only the modality.
        super().check_data(None if spec is None else dataclasses.replace(spec, task_type=self.task_type))

    # ------------------------------------------------------------ noise
    @property
    def latent_dim(self) -> int:
        """Width of the latent (noise) variable ``z``."""
        return int(self.hparams.latent_dim)

    def randn(self, *size: int, generator: torch.Generator | None = None) -> Tensor:
        """Standard normal draws on the module's device.

        With a seeded ``generator`` they are drawn on its device (the CPU, as a rule) and moved, so
        the same generator gives the same draws whatever device the model is on; without one (the
        noise of training steps) they are drawn on the module's device: no copy, no wait, each step.
        """
        if generator is None:
            return torch.randn(*size, device=self.device)
        return torch.randn(*size, generator=generator, device=generator.device).to(self.device)

    def latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` draws of the standard normal latent variable ``(n, latent_dim)``, seeded by ``generator``."""
        return self.randn(n, self.latent_dim, generator=generator)

    # ------------------------------------------------------------ sampling
    def generate(
        self, n: int, *, generator: torch.Generator | None = None, condition: Any = None
    ) -> Tensor | np.ndarray:
        """``n`` samples for scoring (see :class:`SampleSource`)."""
        raise NotImplementedError(f"{type(self).__name__} must implement generate()")

    def sample(
        self, n: int = 64, *, generator: torch.Generator | None = None, condition: Any = None, **options: Any
    ) -> Tensor | pd.DataFrame:
        """``n`` samples to write (``lit-dl sample``; see :class:`SampleSource`)."""
        raise NotImplementedError(f"{type(self).__name__} must implement sample()")

    def check_options(self, options: dict[str, Any]) -> None:
        """Refuse sampling options this task does not know, in one line."""
        if options:
            raise ConfigError(f"{type(self).__name__}.sample takes no option(s) {', '.join(sorted(options))}")


class ImageGenerativeTask(GenerativeTask):
    """Base of the image VAE and GAN: pixels in [0, 1], image geometry and classes from the data spec.

    The spec's ``inputs`` give ``in_channels`` and ``image_size``; its ``classes`` label the
    samples of a conditional model; its ``anomaly_classes`` (``data.exclude_classes``) are kept out
    of training, and the test reports how well the model tells them apart.
    """

    modalities: ClassVar[tuple[str, ...]] = ("images",)

    def check_data(self, spec: DataSpec | None) -> None:
        super().check_data(spec)
        assert spec is not None
        if "in_channels" not in spec.inputs or "image_size" not in spec.inputs:
            raise ConfigError("this model needs image data (e.g. data=digits, data=fashion_mnist)")
        if spec.scale is not None and spec.scale != "unit":  # None: the datamodule does not say
            raise ConfigError(
                f"model={type(self).__name__} models pixels in [0, 1] but the data is standardised; "
                "set data.scale=unit (the generative experiments do)"
            )

    def image_geometry(self) -> dict[str, Any]:
        """``in_channels`` and ``image_size`` ``[H, W]``, handed to the networks."""
        inputs = self.data_spec.inputs
        return {"in_channels": int(inputs["in_channels"]), "image_size": list(inputs["image_size"])}

    @property
    def classes(self) -> list[str]:
        """The data's class names (empty for unlabelled images)."""
        return [str(c) for c in self.data_spec.classes or []]

    @property
    def anomaly_classes(self) -> list[int]:
        """Indices of the classes kept out of training (``data.exclude_classes``)."""
        return list(self.data_spec.anomaly_classes or [])

    def condition_labels(self, condition: Any, n: int) -> Tensor | None:
        """Class indices ``(n,)`` for a condition; models that cannot condition refuse one."""
        if condition is None or (isinstance(condition, str) and not condition):
            return None
        raise ConfigError(f"{type(self).__name__} cannot sample a given class; leave condition unset")

    def sample(
        self, n: int = 64, *, generator: torch.Generator | None = None, condition: Any = None, **options: Any
    ) -> Tensor:
        """``lit-dl sample``: ``n`` images ``(n, C, H, W)`` in [0, 1] on the CPU, 1024 at a time.

        ``condition``: a class name or index (class-conditional models).
        """
        self.check_options(options)
        n = check_count(n, MAX_IMAGES, "images")
        labels = self.condition_labels(condition, n)
        images = [
            self.generate(
                len(chunk), generator=generator, condition=None if labels is None else labels[chunk]
            )
            for chunk in torch.arange(n).split(1024)
        ]
        return torch.cat(images).cpu()


# The most samples one `lit-dl sample` call makes: every one is held in memory until written, and a
# larger n is more often an extra zero than a wish (sample again with another seed for more).
MAX_IMAGES = 100_000
MAX_ROWS = 10_000_000


def check_count(n: Any, limit: int, what: str) -> int:
    """``n`` as a positive number of samples up to ``limit``, or a one-line error naming the bound."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"n must be a positive integer ({what} to generate), got {n!r}")
    if n > limit:
        raise ConfigError(
            f"n={n:,} {what} is more than one call makes (at most {limit:,}): sample in several calls "
            "with different seeds (seed=1, seed=2, ...)"
        )
    return n


def check_rows(n: Any) -> int:
    """``n`` as a positive number of table rows (at most :data:`MAX_ROWS`), or a one-line error."""
    return check_count(n, MAX_ROWS, "rows")


class TableGenerativeTask(GenerativeTask):
    """Base of the tabular VAE and GAN: rows transformed by the datamodule's fitted :class:`TableTransform`.

    The transform comes with the data spec (``options["table"]``; the datamodule keeps it in the
    checkpoint), so it is not a hyperparameter. :attr:`data_sampling` is the way of drawing
    training rows the task needs (``data.sampling``), checked when the task is built.
    Subclasses implement :meth:`generate_batch`; :meth:`generate` and :meth:`sample` batch it and
    keep the rows that meet a condition.
    """

    modalities: ClassVar[tuple[str, ...]] = ("table",)
    data_sampling: ClassVar[str] = "uniform"

    def check_data(self, spec: DataSpec | None) -> None:
        super().check_data(spec)
        assert spec is not None
        name = type(self).__name__
        if "table" not in spec.options:
            raise ConfigError(
                f"model={name} needs a table prepared for generative models "
                "(data=churn_synthetic, or data=table_synthetic data.path=FILE)"
            )
        sampling = spec.options.get("sampling", "uniform")
        if sampling != self.data_sampling:
            raise ConfigError(
                f"model={name} trains on {SAMPLING_NEEDS[self.data_sampling]} but data.sampling={sampling}; "
                f"set data.sampling={self.data_sampling}"
            )

    def configure_models(self) -> None:
        """The fitted transform and its span layout; subclasses then build their networks."""
        self.table = TableTransform.from_state_dict(self.data_spec.options["table"])
        offsets, spans = self.table.span_index()
        self.register_buffer("offset_index", offsets, persistent=False)  # (T,) columns of the mode offsets
        self.register_buffer("span_index", spans, persistent=False)  # (S, K_max) one-hot spans, padded with D

    # ------------------------------------------------------------ sampling
    def generate_batch(
        self, n: int, generator: torch.Generator | None, slot: tuple[int, int] | None
    ) -> np.ndarray:
        """One batch of ``n`` transformed rows ``(n, D)`` (``slot``: the asked category, if any)."""
        raise NotImplementedError(f"{type(self).__name__} must implement generate_batch()")

    def rows_from_outputs(
        self,
        raw: Tensor,
        generator: torch.Generator | None,
        offset_noise: Tensor | None = None,
        draw: bool = True,
    ) -> Tensor:
        """Transformed rows ``(B, D)`` from a network's raw outputs ``(B, D)``.

        Offsets: ``tanh`` (plus ``offset_noise``, if given); one-hot spans: a category drawn from
        each span's softmax (``draw``), or the logits left as they are (the inverse transform
        reads the largest entry).
        """
        rows = raw.clone()
        offsets = torch.tanh(raw[:, self.offset_index])
        rows[:, self.offset_index] = (
            offsets if offset_noise is None else offsets + offset_noise[:, self.offset_index]
        )
        if draw:
            for start, size in self.table.one_hot_spans():
                pick = draw_categories(torch.softmax(raw[:, start : start + size], dim=1), generator)
                rows[:, start : start + size] = F.one_hot(pick, size).float()
        return rows

    @torch.no_grad()
    def generate(
        self, n: int, *, generator: torch.Generator | None = None, condition: Any = None
    ) -> np.ndarray:
        """``n`` transformed rows ``(n, D)``; with ``condition="column=value"``, rows with that category."""
        slot = self.table.condition_slot(condition) if condition else None
        training = self.training
        self.eval()
        try:
            return draw_rows(lambda size: self.generate_batch(size, generator, slot), self.table, n, slot)
        finally:
            self.train(training)

    def sample(
        self,
        n: int = 1000,
        *,
        generator: torch.Generator | None = None,
        condition: Any = None,
        **options: Any,
    ) -> pd.DataFrame:
        """``n`` synthetic rows with the original columns, order and dtypes.

        ``condition="column=value"`` (e.g. ``churn=Yes``) keeps only rows with that category (a
        conditional GAN is also asked for it).
        """
        self.check_options(options)
        n = check_rows(n)
        return self.table.inverse_transform(self.generate(n, generator=generator, condition=condition))

    def summarize(self, metrics: dict[str, float]) -> str | None:
        """The test fidelity and how to sample, printed after the metrics table."""
        if "test/fidelity" not in metrics:
            return None
        return (
            f"fidelity to the test rows (column shapes and pairs of an unconditioned sample): "
            f"{metrics['test/fidelity']:.3f} "
            "(1 = identical); "
            "lit-dl sample ckpt_path=... n=10000 output=synthetic.csv writes a table"
        )


__all__ = [
    "GenerativeTask",
    "ImageGenerativeTask",
    "SampleSource",
    "TableGenerativeTask",
    "check_count",
    "check_rows",
    "draw_categories",
]
