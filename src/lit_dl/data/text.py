"""Characters of a text for a language model: a vocabulary from the training span, streams for TBPTT.

The text is split by position into three contiguous spans, ``train | val | test``
(never shuffled: a random split of characters would leak the neighbours of every
test character into training). The vocabulary holds the characters of the training
span only; index :data:`UNKNOWN` stands for every other character.

Truncated back-propagation through time (TBPTT): each span is laid out as ``B``
parallel rows ("streams") and served as consecutive ``(B, seq_len)`` chunks, so row
``j`` of batch ``k + 1`` continues row ``j`` of batch ``k``. The task carries its
recurrent state from one batch to the next (detached for training), so the model
reads each row as one long text while gradients flow back ``seq_len`` characters.

Under DDP the streams are shared out, not the chunks: with ``W`` processes the training
text is laid out as ``W * batch_size`` rows and process ``r`` reads rows ``r, r + W, ...``
(the evaluation rows likewise), each in order. Every process reads as many chunks, one
global batch is the same text as ``batch_size * W`` streams in one process, and every
character of the validation and test spans is scored exactly once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from lit_dl.data.base import check_split_arguments, device_for_data, on_device_setting, world
from lit_dl.data.spec import DataSpec
from lit_dl.data.tables import absolute
from lit_dl.errors import DataError

log = logging.getLogger(__name__)

# Index of characters outside the vocabulary; vocabulary character i (0-based) has index i + 1.
UNKNOWN = 0
DEFAULT_SOURCE = "the CPython documentation text (pydoc_data.topics)"


def default_text() -> str:
    """The documentation text that ships with every CPython: ``pydoc_data.topics`` in key order.

    About 465,000 characters of English prose and code examples on Python 3.11; no download.
    """
    from pydoc_data.topics import topics

    return "".join(topics[key] for key in sorted(topics))


def read_text(path: str | Path, encoding: str = "utf-8") -> str:
    """A text file as a string (byte-order mark dropped, Windows line ends as ``\\n``)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"text file not found: {path} (check data.path)")
    if path.is_dir():
        raise DataError(f"data.path is a folder, not a text file: {path}")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from err
    if not raw:
        raise DataError(f"text file is empty: {path}")
    try:
        text = raw.decode(encoding)
    except LookupError as err:
        raise DataError(f"unknown text encoding data.encoding={encoding!r}") from err
    except UnicodeDecodeError as err:
        raise DataError(
            f"{path} is not {encoding} text (byte {err.start} is {raw[err.start : err.start + 1]!r}); "
            "set data.encoding, e.g. data.encoding=latin-1"
        ) from err
    text = text.removeprefix("\ufeff").replace("\r\n", "\n")
    if not text.strip():
        raise DataError(f"text file holds only whitespace: {path}")
    return text


def encode(text: str, vocabulary: str) -> Tensor:
    """Character indices ``(N,)`` of ``text``: ``i + 1`` for ``vocabulary[i]``, :data:`UNKNOWN` otherwise.

    ``vocabulary`` must be sorted by code point (as :func:`fit_vocabulary` returns it).
    """
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    known = np.frombuffer(vocabulary.encode("utf-32-le"), dtype=np.uint32)
    position = np.searchsorted(known, codes)
    found = position < len(known)
    found[found] = known[position[found]] == codes[found]
    return torch.from_numpy(np.where(found, position + 1, UNKNOWN).astype(np.int64))


def fit_vocabulary(text: str, min_count: int = 1) -> str:
    """The characters seen at least ``min_count`` times in ``text``, sorted by code point."""
    codes, counts = np.unique(np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32), return_counts=True)
    return "".join(chr(c) for c in codes[counts >= min_count])


class TextStreams(Dataset):
    """Character indices laid out as ``streams`` parallel rows, served as consecutive chunks.

    Row ``j`` holds ``length`` consecutive characters starting at ``offset + j * length``;
    chunk ``k`` is columns ``[k * seq_len, (k + 1) * seq_len)`` of every row, so row ``j``
    of chunk ``k + 1`` continues row ``j`` of chunk ``k``. Items are ``(inputs, targets)``,
    both ``(streams / world_size, T)`` long, the targets being the inputs shifted by one
    character. Process ``rank`` of ``world_size`` serves rows ``rank, rank + world_size, ...``.
    Read the chunks in order (:class:`EpochOffsetSampler` or a sequential sampler): the
    continuity is what lets a model carry its state from one batch to the next.

    Args:
        tokens: character indices ``(N,)``.
        streams: rows ``B``.
        seq_len: columns ``T`` of a chunk.
        max_offset: the largest :attr:`offset` that will be used; every offset up to it gives
            the same row length, so every epoch has the same number of chunks.
        drop_last: drop a final chunk shorter than ``seq_len`` (training keeps shapes equal;
            evaluation keeps it so that every character of the rows is scored).
        rank, world_size: this process's share of the rows under DDP.
    """

    def __init__(
        self,
        tokens: Tensor,
        streams: int,
        seq_len: int,
        max_offset: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.tokens = tokens
        self.streams = streams
        self.seq_len = seq_len
        self.max_offset = max_offset
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.offset = 0
        self.length = (len(tokens) - 1 - max_offset) // streams
        if self.length < 1:
            raise ValueError(f"{len(tokens)} characters cannot fill {streams} rows")
        if not 0 <= rank < world_size <= streams:
            raise ValueError(f"{streams} rows cannot be shared by {world_size} processes (rank {rank})")

    def __len__(self) -> int:
        full, rest = divmod(self.length, self.seq_len)
        return full + (1 if rest and not self.drop_last else 0)

    def rows(self) -> tuple[Tensor, Tensor]:
        """This process's inputs and targets at the current offset as ``(rows, length)``."""
        size = self.streams * self.length
        start = self.offset
        inputs = self.tokens[start : start + size].view(self.streams, self.length)
        targets = self.tokens[start + 1 : start + 1 + size].view(self.streams, self.length)
        share = slice(self.rank, None, self.world_size)
        return inputs[share], targets[share]

    def __getitem__(self, k: int) -> tuple[Tensor, Tensor]:
        if not 0 <= k < len(self):
            raise IndexError(f"chunk {k} of {len(self)}")
        inputs, targets = self.rows()
        columns = slice(k * self.seq_len, (k + 1) * self.seq_len)
        return inputs[:, columns].contiguous(), targets[:, columns].contiguous()


class EpochOffsetSampler(DistributedSampler):
    """Chunks in order, each pass starting the rows at a new random offset in ``[0, max_offset]``.

    Moving the offset moves the chunk boundaries (where gradients stop) from epoch to epoch.
    The offset is set on the dataset when a pass begins, which is before any chunk of it is
    read as long as the chunks are read in this process (``num_workers=0``). Every process
    of a DDP run draws the same offset: Lightning seeds them alike.

    A ``DistributedSampler`` only so that Lightning keeps it under DDP: the dataset already
    holds this process's streams, and handing out its chunks among processes would break
    their order.
    """

    def __init__(self, dataset: TextStreams, generator: torch.Generator | None = None) -> None:
        super().__init__(dataset, num_replicas=dataset.world_size, rank=dataset.rank, shuffle=False)
        self.generator = generator

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self) -> Iterator[int]:
        high = self.dataset.max_offset + 1
        if high > 1:
            self.dataset.offset = int(torch.randint(high, (1,), generator=self.generator))
        return iter(range(len(self.dataset)))


class CharTextDataModule(L.LightningDataModule):
    """A text file (or the embedded CPython documentation) as characters for a language model.

    Batches are ``(inputs, targets)``, both ``(B, T)`` character indices, the targets
    shifted by one character; see the module docstring for the stream layout. The
    vocabulary is fitted on the training span and saved in checkpoints as a string.

    Args:
        path: a UTF-8 text file; None: :func:`default_text`.
        encoding: the file's encoding.
        seq_len: characters per chunk ``T``: how far back gradients flow (the state carries further).
        batch_size: parallel streams ``B`` of the training text.
        eval_streams: parallel streams of the validation and test text. Each stream starts
            without context, so fewer streams measure bits per character with more context
            (and take more sequential steps). Reduced for short spans, so each holds a chunk.
        val_fraction, test_fraction: shares of the text, taken from its end: ``train | val | test``.
        min_char_count: characters seen fewer times in the training span count as unknown.
        on_device: keep the text on the training device: ``auto`` (on a GPU when it fits in an
            eighth of its memory), ``true`` or ``false``.
    """

    task_type: ClassVar[str] = "language_model"

    def __init__(
        self,
        path: str | None = None,
        encoding: str = "utf-8",
        seq_len: int = 128,
        batch_size: int = 64,
        eval_streams: int = 16,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        min_char_count: int = 1,
        on_device: bool | str = "auto",
    ) -> None:
        super().__init__()
        for name, value in (
            ("seq_len", seq_len),
            ("batch_size", batch_size),
            ("eval_streams", eval_streams),
            ("min_char_count", min_char_count),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DataError(f"data.{name} must be a positive integer, got {value!r}")
        check_split_arguments(val_fraction, test_fraction)
        if val_fraction + test_fraction >= 0.9:
            raise DataError("data.val_fraction + data.test_fraction leave under 10% of the text for training")
        path = absolute(path)
        self.save_hyperparameters()
        self.path = path
        self.encoding = encoding
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.eval_streams = eval_streams
        self.val_fraction = float(val_fraction)
        self.test_fraction = float(test_fraction)
        self.min_char_count = min_char_count
        self.on_device = on_device_setting(on_device)

        # Fitted state (restored from a checkpoint by load_state_dict).
        self.vocabulary: str | None = None
        self.source_chars: int | None = None  # characters of the text when the vocabulary was fitted
        self.datasets: dict[str, Tensor] = {}

    # ------------------------------------------------------------------ loading
    @property
    def source(self) -> str:
        return self.path or DEFAULT_SOURCE

    def load_text(self) -> str:
        return read_text(self.path, self.encoding) if self.path else default_text()

    def split(self, text: str) -> dict[str, str]:
        """Contiguous spans by position: the first part trains, then validation, then test."""
        n_val = int(len(text) * self.val_fraction)
        n_test = int(len(text) * self.test_fraction)
        n_train = len(text) - n_val - n_test
        return {
            "train": text[:n_train],
            "val": text[n_train : n_train + n_val],
            "test": text[n_train + n_val :],
        }

    def _check_lengths(self, spans: dict[str, str], total: int) -> None:
        needed = self.batch_size * self.seq_len + self.seq_len  # one chunk per stream at any offset
        if len(spans["train"]) < needed:
            raise DataError(
                f"text too short: {self.source} has {total} characters, so the training span "
                f"({1 - self.val_fraction - self.test_fraction:.0%}) has {len(spans['train'])}; one batch of "
                f"data.batch_size={self.batch_size} streams x data.seq_len={self.seq_len} needs {needed}. "
                "Use a longer text or lower data.batch_size / data.seq_len"
            )
        for stage in ("val", "test"):
            if len(spans[stage]) < 2:
                raise DataError(
                    f"text too short: the {stage} span of {self.source} has {len(spans[stage])} "
                    f"character(s) (data.{stage}_fraction of {total}); it needs at least 2"
                )

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        text = self.load_text()
        spans = self.split(text)
        self._check_lengths(spans, len(text))
        if self.vocabulary is None:
            self.vocabulary = fit_vocabulary(spans["train"], self.min_char_count)
            self.source_chars = len(text)
        elif self.source_chars is not None and len(text) != self.source_chars:
            log.warning(
                "%s now has %d characters, %d when the model was trained: its validation and test "
                "spans are not the ones of the training run",
                self.source,
                len(text),
                self.source_chars,
            )
        self.datasets = {name: encode(span, self.vocabulary) for name, span in spans.items()}
        unknown = {name: int((tokens == UNKNOWN).sum()) for name, tokens in self.datasets.items()}
        log.info(
            "text: %d characters (%s train / %s val / %s test), vocabulary of %d characters; "
            "unknown characters: %d train, %d val, %d test",
            len(text),
            *(len(spans[s]) for s in ("train", "val", "test")),
            len(self.vocabulary),
            *(unknown[s] for s in ("train", "val", "test")),
        )

    def load_inputs(self, path: str) -> Any:
        """``lit-dl predict`` reads rows; a language model has none."""
        raise DataError(
            "a language model does not predict rows of a table: generate text with "
            "`lit-dl sample ckpt_path=... prompt=...`"
        )

    # ------------------------------------------------------------------ loaders
    def streams(self, stage: str) -> TextStreams:
        """This process's streams of one span (:class:`TextStreams`); ``batch_size`` rows in training."""
        tokens = self.datasets[stage]
        nbytes = sum(t.numel() * t.element_size() for t in self.datasets.values())
        device = device_for_data(self.trainer, self.on_device, nbytes)
        if device is not None:  # chunks are then cut on the device: no copy per step
            tokens = tokens.to(device)
        rank, world_size = world(self)
        if stage == "train":
            rows, max_offset, drop_last = self.batch_size * world_size, self.seq_len - 1, True
        else:
            rows = max(world_size, min(self.eval_streams, (len(tokens) - 1) // self.seq_len))
            max_offset, drop_last = 0, False
        try:
            return TextStreams(tokens, rows, self.seq_len, max_offset, drop_last, rank, world_size)
        except ValueError as err:
            raise DataError(
                f"text too short for {world_size} processes: the {stage} span of {self.source} ({err}); "
                "use a longer text, fewer devices or a lower data.batch_size / data.seq_len"
            ) from err

    # batch_size=None: each item of the dataset is a whole (B, T) chunk; no workers (see EpochOffsetSampler).
    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(torch.initial_seed() % 2**63)
        return self._loader(self.streams("train"), generator)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.streams("val"))

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.streams("test"))

    @staticmethod
    def _loader(streams: TextStreams, generator: torch.Generator | None = None) -> DataLoader:
        return DataLoader(streams, batch_size=None, sampler=EpochOffsetSampler(streams, generator))

    # ------------------------------------------------------------------ task wiring
    def data_spec(self) -> DataSpec:
        """The vocabulary (index 0 is the unknown character) and its size."""
        assert self.vocabulary is not None, "setup() or load_state_dict() first"
        return DataSpec(
            task_type="language_model",
            modality="text",
            inputs={"vocab_size": len(self.vocabulary) + 1},
            options={"vocabulary": self.vocabulary},
        )

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict[str, Any]:
        """The vocabulary as a string (plain data); Lightning stores it in every checkpoint."""
        if self.vocabulary is None:
            return {}
        return {"vocabulary": self.vocabulary, "source_chars": self.source_chars}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state or state == self.state_dict():
            return  # nothing new (e.g. testing the best checkpoint of this very run): keep the spans
        self.vocabulary = state["vocabulary"]
        self.source_chars = state.get("source_chars")
        self.datasets = {}
