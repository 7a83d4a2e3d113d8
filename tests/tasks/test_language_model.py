"""LanguageModelTask on tiny texts: state carried across chunks, bits per character, clipping, sampling."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from lit_dl.data.text import UNKNOWN, CharTextDataModule
from lit_dl.errors import ConfigError, DataError
from lit_dl.tasks.language_model import BitsPerCharacter, LanguageModelTask

NET = {
    "_target_": "lit_dl.nets.CharRNN",
    "embedding_dim": 8,
    "hidden_size": 32,
    "num_layers": 2,
    "dropout": 0.0,
}
ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.02}
PERIODIC = "abcdefgh " * 150  # 1,350 characters with an obvious next character everywhere

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings(r"ignore:.*isinstance\(treespec, LeafSpec\).*"),
]


def datamodule(tmp_path: Path, text: str = PERIODIC, **kwargs: Any) -> CharTextDataModule:
    path = tmp_path / "text.txt"
    path.write_text(text)
    kwargs.setdefault("seq_len", 16)
    kwargs.setdefault("batch_size", 4)
    kwargs.setdefault("eval_streams", 2)
    dm = CharTextDataModule(path=str(path), **kwargs)
    dm.setup("fit")
    return dm


def task(dm: CharTextDataModule, **kwargs: Any) -> LanguageModelTask:
    kwargs.setdefault("net", NET)
    kwargs.setdefault("optimizer", ADAM)
    return LanguageModelTask(data=dm.data_spec(), **kwargs)


def trainer(max_epochs: int, **kwargs: Any) -> L.Trainer:
    return L.Trainer(
        max_epochs=max_epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kwargs,
    )


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[LanguageModelTask, CharTextDataModule, L.Trainer]:
    """A tiny LSTM that has learned the periodic text (a few seconds on one core)."""
    L.seed_everything(0)
    dm = datamodule(tmp_path_factory.mktemp("lm"))
    model = task(dm)
    fit = trainer(max_epochs=12)
    fit.fit(model, datamodule=dm)
    return model.eval(), dm, fit


def test_learns_the_periodic_text_and_bpc_is_loss_over_ln2(
    trained: tuple[LanguageModelTask, CharTextDataModule, L.Trainer],
) -> None:
    model, dm, fit = trained
    metrics = fit.callback_metrics
    assert metrics["val/bpc"] < 0.5  # uniform guessing among 9 characters: 3.17
    assert metrics["val/bpc"].item() == pytest.approx(metrics["val/loss"].item() / math.log(2), rel=1e-5)
    assert metrics["train/bpc"].item() == pytest.approx(
        metrics["train/loss_epoch"].item() / math.log(2), rel=1e-5
    )
    tested = trainer(max_epochs=1).test(model, datamodule=dm, verbose=False)[0]
    assert tested["test/bpc"] == pytest.approx(tested["test/loss"] / math.log(2), rel=1e-5)


def test_bits_per_character_metric_is_the_mean_loss_in_bits() -> None:
    metric = BitsPerCharacter()
    metric.update(torch.tensor([math.log(2), 3 * math.log(2)]))
    metric.update(torch.tensor([2 * math.log(2)]))
    assert metric.compute().item() == pytest.approx(2.0)


def test_validation_carries_the_state_so_chunks_equal_one_long_read(
    trained: tuple[LanguageModelTask, CharTextDataModule, L.Trainer],
) -> None:
    """Validating chunk by chunk with the carried state scores the val rows as if read in one go."""
    model, dm, fit = trained
    loader = dm.val_dataloader()
    assert len(loader) > 2
    inputs, targets = loader.dataset.rows()
    with torch.no_grad():
        logits, _ = model(inputs)
        whole = F.cross_entropy(logits.flatten(0, 1), targets.flatten()).item()
        # Without the carried state (each chunk read cold) the loss is higher: context matters.
        cold = (
            sum(
                F.cross_entropy(model(x)[0].flatten(0, 1), y.flatten(), reduction="sum").item()
                for x, y in loader
            )
            / targets.numel()
        )
    chunked = fit.validate(model, datamodule=dm, verbose=False)[0]["val/loss"]
    assert chunked == pytest.approx(whole, rel=1e-4)
    assert cold > 2 * chunked
    assert model._states["val"] is not None
    model.on_validation_epoch_start()
    assert model._states["val"] is None


@pytest.mark.filterwarnings(r"ignore:You are trying to `self.log\(\)`")  # steps called without a Trainer
def test_training_state_is_carried_detached_and_reset_each_epoch(tmp_path: Path) -> None:
    dm = datamodule(tmp_path)
    model = task(dm)
    batches = iter(dm.train_dataloader())
    model.training_step(next(batches), 0)
    first = model._states["train"]
    assert all(s.grad_fn is None and s.shape[1] == 4 for s in first)
    loss = model.training_step(next(batches), 1)
    loss.backward()  # back-propagates through this chunk only: the carried state is a leaf
    assert model._states["train"][0] is not first[0]
    model.on_train_epoch_start()
    assert model._states["train"] is None


class GradientNorms(L.Callback):
    """Gradient norms as the optimiser used them (after clipping)."""

    def __init__(self) -> None:
        self.norms: list[float] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        self.norms.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())


@pytest.mark.parametrize(("clip", "trainer_clip"), [(1e-3, None), (None, None), (5.0, 1e-3)])
def test_gradients_are_clipped_by_default(
    tmp_path: Path, clip: float | None, trainer_clip: float | None
) -> None:
    dm = datamodule(tmp_path)
    model = task(dm, gradient_clip_val=clip)
    norms = GradientNorms()
    trainer(
        max_epochs=1,
        limit_train_batches=3,
        limit_val_batches=0,
        callbacks=[norms],
        gradient_clip_val=trainer_clip,
    ).fit(model, datamodule=dm)
    assert len(norms.norms) == 3
    if clip is None and trainer_clip is None:
        assert max(norms.norms) > 0.01  # not clipped
    else:
        assert max(norms.norms) <= 1e-3 * 1.01  # the trainer's setting wins over the task's default


def test_sampling_with_a_seed_is_reproducible(
    trained: tuple[LanguageModelTask, CharTextDataModule, L.Trainer],
) -> None:
    model, _, _ = trained

    def draw(seed: int, **kwargs: Any) -> list[str]:
        return model.sample(
            "ab", 60, temperature=3.0, n=2, generator=torch.Generator().manual_seed(seed), **kwargs
        )

    first = draw(1)
    assert first == draw(1)
    assert first != draw(2)
    assert len(first) == 2 and all(len(text) == 60 and set(text) <= set(model.vocabulary) for text in first)
    assert first[0] != first[1]  # n samples are independent draws


def test_greedy_sampling_continues_the_pattern(
    trained: tuple[LanguageModelTask, CharTextDataModule, L.Trainer],
) -> None:
    model, _, _ = trained
    greedy = model.sample("abc", 20, temperature=0.0)[0]
    assert greedy == "defgh abcdefgh abcde"
    assert model.sample("abc", 20, temperature=1e-4, generator=torch.Generator().manual_seed(3))[0] == greedy
    assert model.sample("abc", 20, top_k=1, temperature=5.0)[0] == greedy
    assert model.sample("", 9, temperature=0.0)[0]  # an empty prompt starts as after a line break


def test_top_k_restricts_the_choice(trained: tuple[LanguageModelTask, CharTextDataModule, L.Trainer]) -> None:
    model, _, _ = trained
    logits = torch.tensor([[9.0, 1.0, 3.0, 2.0, 0.5]])  # index 0 is the unknown character
    generator = torch.Generator().manual_seed(0)
    drawn = {model.next_characters(logits, 100.0, 2, generator).item() for _ in range(200)}
    assert drawn == {2, 3}  # the two most likely known characters, never the unknown one


def test_the_unknown_character_is_never_generated(
    trained: tuple[LanguageModelTask, CharTextDataModule, L.Trainer],
) -> None:
    model, _, _ = trained
    before = model.sample("abc", 30, temperature=0.0)[0]
    with torch.no_grad():
        model.net.head.bias[UNKNOWN] += 1000.0  # the unknown character would win every argmax
    try:
        assert model.sample("abc", 30, temperature=0.0)[0] == before
    finally:
        with torch.no_grad():
            model.net.head.bias[UNKNOWN] -= 1000.0


def test_unknown_prompt_characters_warn_or_fail(
    trained: tuple[LanguageModelTask, CharTextDataModule, L.Trainer], caplog: pytest.LogCaptureFixture
) -> None:
    model, _, _ = trained
    assert model.encode_prompt("ab\u20acz", "replace").tolist() == [
        1 + model.vocabulary.index("a"),
        2 + 1,
        UNKNOWN,
        UNKNOWN,
    ]
    with caplog.at_level(logging.WARNING):
        text = model.sample("Q\u20ac", 5, temperature=0.0)[0]
    assert len(text) == 5 and "'Q', '\u20ac'" in caplog.text
    with pytest.raises(DataError, match=r"2 character\(s\) the model never saw in training: 'Q', '\u20ac'"):
        model.sample("abQ\u20ac", 5, unknown="error")
    with pytest.raises(ConfigError, match="unknown must be"):
        model.sample("ab", 5, unknown="ignore")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"length": -1}, "length"),
        ({"temperature": -0.5}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"n": 0}, "n must be"),
    ],
)
def test_bad_sampling_options(
    trained: tuple[LanguageModelTask, CharTextDataModule, L.Trainer], options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        trained[0].sample("ab", **options)


def test_checkpoint_rebuilds_the_model_with_its_vocabulary(
    trained: tuple[LanguageModelTask, CharTextDataModule, L.Trainer], tmp_path: Path
) -> None:
    model, dm, fit = trained
    path = tmp_path / "lm.ckpt"
    fit.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["CharTextDataModule"] == dm.state_dict()
    # The vocabulary is stored once, in the datamodule's state, which gives the data spec back.
    fresh = CharTextDataModule(**dict(dm.hparams))
    fresh.load_state_dict(checkpoint["CharTextDataModule"])
    restored = LanguageModelTask.load_from_checkpoint(path, weights_only=True, data=fresh.data_spec()).eval()
    assert restored.vocabulary == dm.vocabulary
    assert restored.sample("abc", 20, temperature=0.0) == model.sample("abc", 20, temperature=0.0)


def test_summary_names_both_numbers(trained: tuple[LanguageModelTask, CharTextDataModule, L.Trainer]) -> None:
    summary = trained[0].summarize({"val/bpc": 1.5, "test/bpc": 1.625})
    assert "val 1.500" in summary and "test 1.625" in summary and "9 characters: 3.17" in summary
    assert trained[0].summarize({}) is None
