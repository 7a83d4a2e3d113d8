"""Character language model: next-character cross-entropy, bits per character, sampling."""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from torchmetrics import MeanMetric, MetricCollection

from lit_dl.data.spec import DataSpec
from lit_dl.data.text import UNKNOWN
from lit_dl.errors import ConfigError, DataError
from lit_dl.tasks.base import STAGES
from lit_dl.tasks.supervised import SupervisedTask

log = logging.getLogger(__name__)

State = Tensor | tuple[Tensor, ...]
UNKNOWN_PROMPT_CHARS = ("replace", "error")
# The most characters one `lit-dl sample` call writes (n texts x length): all are held in memory.
MAX_SAMPLE_CHARS = 10_000_000


class BitsPerCharacter(MeanMetric):
    """Mean cross-entropy in bits of the per-character losses (in nats) it is given."""

    def update(self, nll: Tensor) -> None:  # type: ignore[override]
        super().update(nll.float() / math.log(2))


def detach_state(state: State) -> State:
    """The recurrent state without its history, so the next batch back-propagates only through itself."""
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


class LanguageModelTask(SupervisedTask):
    """Predict the next character; carries the recurrent state across batches (truncated BPTT).

    Batches are consecutive chunks of parallel text streams (see
    :class:`~lit_dl.data.text.TextStreams`): the state left by one batch is the start of
    the next, detached for training, so gradients flow back one chunk while the model
    reads each stream as one long text. The state is reset at the start of every epoch
    of each stage, so validation and test bits per character are measured with context.

    Metrics: ``loss`` (cross-entropy in nats) and ``bpc`` (bits per character, the loss
    divided by ln 2), for train, val and test.

    The vocabulary comes from the data spec (``options["vocabulary"]``): the characters the
    model knows, index ``i + 1`` for ``vocabulary[i]``; index 0 is the unknown character.

    Args:
        gradient_clip_val: clip the gradient norm to this when ``trainer.gradient_clip_val``
            is not set (recurrent nets need clipping: one long-range gradient can explode);
            null or 0: no clipping of our own.
        **kwargs: see :class:`~lit_dl.tasks.supervised.SupervisedTask`.
    """

    task_type = "language_model"

    def __init__(
        self,
        net: dict[str, Any],
        optimizer: dict[str, Any],
        gradient_clip_val: float | None = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(net, optimizer, **kwargs)
        self._states: dict[str, State | None] = dict.fromkeys(STAGES)

    def check_data(self, spec: DataSpec | None) -> None:
        super().check_data(spec)
        assert spec is not None
        if not spec.options.get("vocabulary"):
            raise ConfigError("a language model needs a vocabulary of at least one character")

    # ------------------------------------------------------------ building
    @property
    def vocabulary(self) -> str:
        return str(self.data_spec.options["vocabulary"])

    @property
    def char_index(self) -> dict[str, int]:
        if not hasattr(self, "_char_index"):
            self._char_index = {c: i + 1 for i, c in enumerate(self.vocabulary)}
        return self._char_index

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary) + 1  # + the unknown character

    def net_kwargs(self) -> dict[str, Any]:
        # A language model's output size is its input vocabulary: no out_features.
        sizes = {"vocab_size": self.vocab_size, **self.data_spec.inputs}
        if sizes["vocab_size"] != self.vocab_size:
            raise ConfigError(
                f"the data's vocab_size={sizes['vocab_size']} but the vocabulary has {self.vocab_size} "
                "entries (characters + unknown)"
            )
        return sizes

    def default_loss(self) -> nn.Module:
        return nn.CrossEntropyLoss()

    def default_metrics(self) -> MetricCollection:
        return MetricCollection({"bpc": BitsPerCharacter()})

    def configure_gradient_clipping(
        self,
        optimizer: Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        if gradient_clip_val is None and self.hparams.gradient_clip_val:
            gradient_clip_val = float(self.hparams.gradient_clip_val)  # our default: trainer sets none
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    # ------------------------------------------------------------ steps
    def updates_metrics(self, stage: str) -> bool:
        """Every batch: bits per character is the loss over ln 2, as cheap to sum as the loss."""
        return True

    def compute_loss(self, output: Tensor, target: Tensor) -> Tensor:
        """Mean cross-entropy (nats) of logits ``(B, T, V)`` against next characters ``(B, T)``."""
        return self.criterion(output.flatten(0, 1).float(), target.flatten())

    def shared_step(self, batch: tuple[Tensor, ...], stage: str) -> tuple[Tensor, Tensor]:
        """Loss and per-character losses ``(B * T,)`` of one chunk, reading on from the last chunk's state."""
        inputs, target = batch
        state = self._states[stage]
        if state is not None and (state[0] if isinstance(state, tuple) else state).shape[1] != len(inputs):
            state = None  # another stream layout (e.g. a dataloader of another batch size)
        logits, state = self(inputs, state)
        self._states[stage] = detach_state(state)
        nll = F.cross_entropy(logits.flatten(0, 1).float(), target.flatten(), reduction="none")
        loss = nll.mean()
        metrics = self.metric_collection(stage)
        if len(metrics) and self.updates_metrics(stage):
            metrics.update(nll.detach())
        # Weighted by characters: a shorter last chunk counts for what it holds.
        self.log_step(stage, loss, metrics, batch_size=target.numel(), metrics_on_bar=True)
        return loss, nll.detach()

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self._states["train"] = None

    def on_validation_epoch_start(self) -> None:
        self._states["val"] = None

    def on_test_epoch_start(self) -> None:
        self._states["test"] = None

    def summarize(self, metrics: dict[str, float]) -> str | None:
        parts = [
            f"{name} {metrics[f'{name}/bpc']:.3f}" for name in ("val", "test") if f"{name}/bpc" in metrics
        ]
        if not parts:
            return None
        return (
            f"bits per character: {', '.join(parts)} (guessing uniformly among the "
            f"{len(self.vocabulary)} characters: {math.log2(len(self.vocabulary)):.2f})"
        )

    # ------------------------------------------------------------ sampling
    def encode_prompt(self, prompt: str, unknown: str = "replace") -> Tensor:
        """Indices ``(P,)`` of the prompt's characters.

        Characters outside the vocabulary are read as the unknown character with a
        warning (``unknown="replace"``), or raise :class:`DataError` (``unknown="error"``).
        """
        if unknown not in UNKNOWN_PROMPT_CHARS:
            raise ConfigError(f"unknown must be one of {', '.join(UNKNOWN_PROMPT_CHARS)}, got {unknown!r}")
        missing = sorted({c for c in prompt if c not in self.char_index})
        if missing:
            listed = ", ".join(repr(c) for c in missing[:20]) + (", ..." if len(missing) > 20 else "")
            if unknown == "error":
                raise DataError(
                    f"the prompt has {len(missing)} character(s) the model never saw in training: {listed} "
                    "(remove them, or pass unknown=replace to read them as an unknown character)"
                )
            log.warning("prompt characters not in the vocabulary, read as an unknown character: %s", listed)
        return torch.tensor([self.char_index.get(c, UNKNOWN) for c in prompt], dtype=torch.long)

    def next_characters(
        self, logits: Tensor, temperature: float, top_k: int | None, generator: torch.Generator | None
    ) -> Tensor:
        """One character index per row of ``logits (n, V)``; never the unknown character."""
        logits = logits.float().clone()
        logits[:, UNKNOWN] = -math.inf
        if temperature == 0 or top_k == 1:
            return logits.argmax(dim=-1)
        if top_k is not None and top_k < logits.shape[-1] - 1:
            kth = logits.topk(top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, -math.inf)
        probs = torch.softmax(logits / temperature, dim=-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)

    @torch.no_grad()
    def sample(
        self,
        prompt: str = "",
        length: int = 500,
        temperature: float = 0.8,
        top_k: int | None = None,
        n: int = 1,
        unknown: str = "replace",
        generator: torch.Generator | None = None,
    ) -> list[str]:
        """``n`` continuations of ``prompt``, ``length`` characters each (the prompt not included).

        The prompt is read first, so the recurrent state holds its context; an empty
        prompt starts as after a line break. Each next character is drawn from the
        softmax of the logits divided by ``temperature`` (below 1: safer, above 1: more
        surprising; 0: always the most likely character), among the ``top_k`` most likely
        characters only when ``top_k`` is set (1: the most likely). ``generator`` (on the
        model's device) makes the draw reproducible. See :meth:`encode_prompt` for
        ``unknown``.
        """
        if isinstance(length, bool) or not isinstance(length, int) or length < 0:
            raise ConfigError(f"length must be a non-negative integer, got {length!r}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"n must be a positive integer, got {n!r}")
        if n * length > MAX_SAMPLE_CHARS:
            raise ConfigError(
                f"n={n:,} texts of length={length:,} are {n * length:,} characters, more than one call "
                f"writes (at most {MAX_SAMPLE_CHARS:,}): ask for fewer or shorter texts"
            )
        if not isinstance(temperature, int | float) or not math.isfinite(temperature) or temperature < 0:
            raise ConfigError(f"temperature must be a number >= 0, got {temperature!r}")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ConfigError(f"top_k must be null or a positive integer, got {top_k!r}")
        tokens = self.encode_prompt(str(prompt), unknown)
        if not len(tokens):
            tokens = torch.tensor([self.char_index.get("\n", UNKNOWN)])
        training = self.training
        self.eval()
        try:
            logits, state = self(tokens.to(self.device).expand(n, -1))
            out = torch.empty(n, length, dtype=torch.long)
            for i in range(length):
                chars = self.next_characters(logits[:, -1], float(temperature), top_k, generator)
                out[:, i] = chars.cpu()
                if i + 1 < length:
                    logits, state = self(chars[:, None], state)
        finally:
            self.train(training)
        return ["".join(self.vocabulary[t - 1] for t in row) for row in out.tolist()]
