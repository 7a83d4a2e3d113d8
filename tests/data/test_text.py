"""CharTextDataModule: contiguous splits, training-only vocabulary, TBPTT stream layout, errors."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from lit_dl.data.text import (
    UNKNOWN,
    CharTextDataModule,
    EpochOffsetSampler,
    TextStreams,
    default_text,
    encode,
    fit_vocabulary,
)
from lit_dl.errors import DataError

# 1,000 characters; "Z" and "#" appear only in the last fifth (the val and test spans).
TEXT = ("the cat sat on the mat. " * 40)[:800] + ("a dog ran to the log Z# " * 9)[:200]


def write(tmp_path: Path, text: str | bytes, name: str = "text.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def prepared(path: Path, **kwargs: Any) -> CharTextDataModule:
    kwargs.setdefault("seq_len", 8)
    kwargs.setdefault("batch_size", 4)
    kwargs.setdefault("eval_streams", 3)
    dm = CharTextDataModule(path=str(path), **kwargs)
    dm.setup("fit")
    return dm


def decode(tokens: torch.Tensor, vocabulary: str) -> str:
    return "".join("\x00" if t == UNKNOWN else vocabulary[t - 1] for t in tokens.tolist())


def test_splits_are_contiguous_in_order_and_do_not_overlap(tmp_path: Path) -> None:
    dm = prepared(write(tmp_path, TEXT))
    spans = dm.split(TEXT)
    assert [len(spans[s]) for s in ("train", "val", "test")] == [800, 100, 100]
    assert spans["train"] + spans["val"] + spans["test"] == TEXT  # by position: nothing shuffled or shared
    assert decode(dm.datasets["train"], dm.vocabulary) == TEXT[:800]
    assert len(dm.datasets["val"]) == len(dm.datasets["test"]) == 100


def test_vocabulary_comes_from_training_text_only(tmp_path: Path) -> None:
    dm = prepared(write(tmp_path, TEXT))
    assert dm.vocabulary == "".join(sorted(set(TEXT[:800])))
    assert "Z" not in dm.vocabulary and "#" not in dm.vocabulary and "d" not in dm.vocabulary
    val = dm.datasets["val"]
    expected_unknown = [c not in dm.vocabulary for c in TEXT[800:900]]
    assert (val == UNKNOWN).tolist() == expected_unknown and any(expected_unknown)
    assert (dm.datasets["train"] != UNKNOWN).all()
    spec = dm.data_spec()
    assert spec.options == {"vocabulary": dm.vocabulary}
    assert spec.inputs == {"vocab_size": len(dm.vocabulary) + 1}


def test_rare_characters_count_as_unknown(tmp_path: Path) -> None:
    text = "x" + TEXT[1:]  # one "x" in the training span
    assert fit_vocabulary(text[:800], min_count=2) == "".join(sorted(set(TEXT[1:800])))
    dm = prepared(write(tmp_path, text), min_char_count=2)
    assert "x" not in dm.vocabulary and dm.datasets["train"][0] == UNKNOWN


def test_encode_maps_every_character_and_unknowns() -> None:
    vocabulary = fit_vocabulary("hello world")
    assert vocabulary == " dehlorw"
    assert encode("hold!", vocabulary).tolist() == [4, 6, 5, 2, UNKNOWN]


def test_training_rows_continue_from_batch_to_batch(tmp_path: Path) -> None:
    """Row j of batch k + 1 starts where row j of batch k ended, and targets are the next characters."""
    dm = prepared(write(tmp_path, TEXT), seq_len=8, batch_size=4)
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(batches) == len(loader) > 2
    train = dm.datasets["train"]
    for inputs, targets in batches:
        assert inputs.shape == targets.shape == (4, 8)
    rows = [torch.cat([inputs[j] for inputs, _ in batches]) for j in range(4)]
    row_targets = [torch.cat([targets[j] for _, targets in batches]) for j in range(4)]
    offset = loader.dataset.offset
    length = loader.dataset.length
    for j in range(4):
        start = offset + j * length
        assert torch.equal(rows[j], train[start : start + len(rows[j])])  # contiguous across batches
        assert torch.equal(row_targets[j], train[start + 1 : start + 1 + len(rows[j])])


def test_each_epoch_moves_the_offset_and_keeps_the_batch_count() -> None:
    tokens = torch.arange(1000)
    streams = TextStreams(tokens, streams=4, seq_len=10, max_offset=9, drop_last=True)
    sampler = EpochOffsetSampler(streams, torch.Generator().manual_seed(0))
    offsets, counts = set(), set()
    for _ in range(8):
        indices = list(sampler)
        offsets.add(streams.offset)
        counts.add(len(indices))
        assert indices == list(range(len(streams)))
        inputs, targets = streams[len(streams) - 1]  # the last chunk fits at this offset
        assert torch.equal(targets, inputs + 1)
    assert len(offsets) > 1 and offsets <= set(range(10))
    assert counts == {len(streams)} == {(1000 - 1 - 9) // 4 // 10}


def test_evaluation_reads_every_row_in_order_including_a_short_last_chunk(tmp_path: Path) -> None:
    dm = prepared(write(tmp_path, TEXT), seq_len=8, eval_streams=3)
    batches = list(dm.val_dataloader())
    val = dm.datasets["val"]
    length = (len(val) - 1) // 3  # 33 characters a row: four chunks of 8 and one of 1
    assert [b[0].shape[1] for b in batches] == [8, 8, 8, 8, 1]
    for j in range(3):
        row = torch.cat([inputs[j] for inputs, _ in batches])
        assert torch.equal(row, val[j * length : (j + 1) * length])
    # A short span gets fewer streams, so each still holds a whole chunk.
    few = prepared(write(tmp_path, TEXT, "b.txt"), seq_len=40, batch_size=2, eval_streams=16)
    assert next(iter(few.val_dataloader()))[0].shape == (2, 40)


def test_state_is_plain_data_and_restores_the_vocabulary(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, TEXT)
    dm = prepared(path)
    state = dm.state_dict()
    assert state == {"vocabulary": dm.vocabulary, "source_chars": len(TEXT)}
    assert isinstance(state["vocabulary"], str)
    # The file changes: a restored datamodule keeps the trained vocabulary and warns about the length.
    write(tmp_path, "Q" + TEXT)
    restored = CharTextDataModule(path=str(path), seq_len=8, batch_size=4, eval_streams=3)
    restored.load_state_dict(state)
    with caplog.at_level(logging.WARNING):
        restored.setup("test")
    assert restored.vocabulary == dm.vocabulary
    assert restored.datasets["train"][0] == UNKNOWN  # "Q" is not in the trained vocabulary
    assert "1001 characters, 1000 when the model was trained" in caplog.text


def test_default_text_is_the_cpython_documentation() -> None:
    text = default_text()
    assert len(text) > 100_000 and text == default_text()
    assert "statement" in text
    dm = CharTextDataModule()
    dm.setup("fit")
    assert dm.path is None and 60 < len(dm.vocabulary) < 200
    assert sum(len(t) for t in dm.datasets.values()) == len(text)


def test_bad_text_files_are_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="text file is empty"):
        prepared(write(tmp_path, b"", "empty.txt"))
    with pytest.raises(DataError, match="only whitespace"):
        prepared(write(tmp_path, "  \n\n \t", "blank.txt"))
    with pytest.raises(DataError, match="not found"):
        prepared(tmp_path / "missing.txt")
    with pytest.raises(DataError, match="folder"):
        prepared(tmp_path)
    with pytest.raises(DataError, match=r"data\.encoding"):
        prepared(write(tmp_path, b"caf\xe9 " * 300, "latin.txt"))
    latin = prepared(write(tmp_path, b"caf\xe9 " * 300, "latin1.txt"), encoding="latin-1")
    assert "\u00e9" in latin.vocabulary
    bom = prepared(write(tmp_path, "\ufeff" + TEXT.replace(". ", ".\r\n"), "bom.txt"))
    assert "\ufeff" not in bom.vocabulary and "\r" not in bom.vocabulary and "\n" in bom.vocabulary


def test_text_too_short_names_the_numbers(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        prepared(write(tmp_path, TEXT[:300]), seq_len=16, batch_size=16)
    message = str(info.value)
    assert "300 characters" in message and "240" in message and "272" in message  # 80% and 16*16+16
    with pytest.raises(DataError, match="val span"):
        prepared(write(tmp_path, TEXT, "t.txt"), val_fraction=0.001)


@pytest.mark.parametrize(
    ("key", "value"),
    [("seq_len", 0), ("batch_size", -1), ("val_fraction", 1.5), ("min_char_count", 0), ("seq_len", 2.5)],
)
def test_bad_settings_are_rejected(key: str, value: Any) -> None:
    with pytest.raises(DataError, match=f"data.{key}"):
        CharTextDataModule(**{key: value})


def test_predict_is_refused_with_a_pointer_to_sample(tmp_path: Path) -> None:
    dm = prepared(write(tmp_path, TEXT))
    with pytest.raises(DataError, match="lit-dl sample"):
        dm.load_inputs(str(tmp_path / "rows.csv"))
