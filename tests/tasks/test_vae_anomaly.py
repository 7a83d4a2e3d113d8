"""The VAE's complexity-corrected anomaly score: the background model by hand, its weight, the test
metrics and predict columns, and checkpoints from before it existed."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lit_dl.data.spec import DataSpec
from lit_dl.nets.generative import LocalPixelModel
from lit_dl.tasks import VAETask

pytestmark = pytest.mark.usefixtures("one_thread")

ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3}


def image_spec(size: int = 4, anomaly_classes: list[int] | None = None) -> DataSpec:
    return DataSpec(
        task_type="classification",
        modality="images",
        inputs={"in_channels": 1, "image_size": [size, size]},
        classes=["0", "1"],
        scale="unit",
        anomaly_classes=anomaly_classes,
    )


def tiny_vae(anomaly_classes: list[int] | None = None, nll_samples: int = 0) -> VAETask:
    return VAETask(
        encoder={"_target_": "lit_dl.nets.MLPEncoder", "hidden_sizes": []},
        decoder={"_target_": "lit_dl.nets.MLPDecoder", "hidden_sizes": []},
        optimizer=ADAM,
        latent_dim=2,
        nll_samples=nll_samples,
        data=image_spec(anomaly_classes=anomaly_classes),
    )


def test_binary_background_counts_each_neighbour_pattern() -> None:
    # One 2x2 image [[1, 0], [1, 1]]. Contexts (W, NW, N, NE as bits 1, 2, 4, 8; zero outside):
    # (0,0): none -> 0; (0,1): W=1 -> 1; (1,0): N=1, NE=0 -> 4; (1,1): W=1, NW=1, N=0 -> 3.
    image = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])
    model = LocalPixelModel(channels=1)
    assert not model.fitted
    model.update(image)
    assert model.fitted
    counts = model.stats[0]
    assert counts[:, 0].tolist() == [1, 1, 0, 1, 1] + [0] * 11  # pixels per context
    assert counts[:, 1].tolist() == [1, 0, 0, 1, 1] + [0] * 11  # ones per context
    # One pseudo-count per outcome: each seen context says p(1) = 2/3 or 1/3.
    expected = -(math.log(2 / 3) + math.log(1 - 1 / 3) + math.log(2 / 3) + math.log(2 / 3))
    assert model.nll(image).item() == pytest.approx(expected, rel=1e-6)
    # [[0, 1], [0, 0]]: contexts 0, 0, 8 (NE=1: never seen, p(1) = 1/2) and 4.
    other = torch.tensor([[[[0.0, 1.0], [0.0, 0.0]]]])
    assert model.nll(other).item() == pytest.approx(
        -(math.log(1 / 3) + math.log(2 / 3) + math.log(1 / 2) + math.log(1 / 3)), rel=1e-6
    )


def test_background_counts_stay_float64_when_the_model_is_cast() -> None:
    # trainer.precision=bf16-true casts every floating buffer; in bf16 a count above 256 stops growing.
    vae = tiny_vae().to(torch.bfloat16)
    assert vae.background.stats.dtype == torch.float64
    image = torch.ones(1, 1, 4, 4)
    for _ in range(300):
        vae.background.update(image)
    assert vae.background.stats[..., 0].sum().item() == 300 * 16


def test_gaussian_background_is_the_least_squares_predictor_from_the_neighbours() -> None:
    # Rows of an autoregressive image: x = 0.6 * west + 0.2 + noise (sd 0.05).
    torch.manual_seed(0)
    images = torch.zeros(200, 1, 6, 6)
    for column in range(6):
        west = images[..., column - 1] if column else torch.zeros(200, 1, 6)
        images[..., column] = 0.6 * west + 0.2 + 0.05 * torch.randn(200, 1, 6)
    model = LocalPixelModel(channels=1, likelihood="gaussian")
    model.update(images)
    nll = model.nll(images).mean().item()
    # The exact Gaussian cost of that noise: 36 pixels of -log N(e; 0, 0.05^2).
    exact = 36 * 0.5 * (math.log(2 * math.pi * 0.05**2) + 1)
    assert nll == pytest.approx(exact, abs=0.05 * 36)


def test_simple_anomalies_rank_low_raw_and_high_corrected() -> None:
    # The trained class: sparse random ink; the held-out class: blank images (simpler), which the
    # stand-in likelihood scores lower than any trained image (the bias of likelihoods). The background
    # model, which learnt that blank neighbours are mostly followed by blank pixels, prices them lower
    # by more than that, so the corrected score ranks them first.
    torch.manual_seed(0)
    vae = tiny_vae(anomaly_classes=[1])
    drawn = (torch.rand(80, 1, 4, 4) < 0.2).float()
    normal = drawn[drawn.flatten(1).sum(1) > 0][:40]  # at least one ink pixel each
    blank = torch.zeros(10, 1, 4, 4)
    vae.background.update(normal)  # what training counts
    vae.complexity_weight.fill_(1.0)

    def fake_terms(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return 5.0 + 0.5 * x.flatten(1).sum(1), torch.zeros(len(x))

    vae.elbo_terms = fake_terms  # type: ignore[method-assign]
    images = torch.cat([normal, blank])
    labels = torch.cat([torch.zeros(40), torch.ones(10)]).long()
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.test(vae, DataLoader(TensorDataset(images, labels), batch_size=16), verbose=False)
    metrics = trainer.callback_metrics
    assert metrics["test/anomaly_auroc"].item() == pytest.approx(0.0)  # every blank image looks normal
    assert metrics["test/anomaly_auroc_nll"].item() == pytest.approx(0.0)  # (nll_samples=0: the ELBO)
    assert metrics["test/anomaly_auroc_corrected"].item() == pytest.approx(1.0)
    assert metrics["test/complexity_weight"].item() == pytest.approx(1.0)


def test_weight_is_the_validation_slope_of_the_likelihood_on_the_complexity() -> None:
    # Stand-in ELBO = 3 + 0.4 * background cost (+ a trainable zero): the fitted weight is 0.4.
    torch.manual_seed(0)
    vae = tiny_vae()

    def fake_terms(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        anchor = 0.0 * vae.decoder.net.layers[0].weight.sum()  # something to train
        cost = vae.background.nll(x) if vae.background.fitted else torch.zeros(len(x))
        return 3.0 + 0.4 * cost + anchor, torch.zeros(len(x))

    vae.elbo_terms = fake_terms  # type: ignore[method-assign]
    images = (torch.rand(64, 1, 4, 4) < torch.rand(64, 1, 1, 1)).float()  # images of varied ink
    loader = DataLoader(TensorDataset(images), batch_size=16)
    quiet = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False}
    trainer = L.Trainer(max_epochs=2, num_sanity_val_steps=0, **quiet)
    trainer.fit(vae, loader, loader)
    assert vae.background.fitted
    assert vae.complexity_weight.item() == pytest.approx(0.4, abs=1e-4)
    # Counted in the first epoch only: 64 images of 16 pixels.
    assert vae.background.stats[..., 0].sum().item() == 64 * 16
    # A later validation of the trained model (lit-dl train validates the best checkpoint) keeps the
    # weight it was saved with: the test and lit-dl predict use the same one.
    vae.complexity_weight.fill_(0.9)
    trainer.validate(vae, loader, verbose=False)
    assert vae.complexity_weight.item() == pytest.approx(0.9)


def test_predict_writes_both_scores_and_older_weights_load_without_the_background() -> None:
    torch.manual_seed(0)
    vae = tiny_vae(nll_samples=5)
    images = (torch.rand(6, 1, 4, 4) < 0.4).float()
    vae.background.update(images)
    vae.complexity_weight.fill_(0.5)
    vae.eval()
    with torch.no_grad():
        columns = vae.prediction_columns(vae.predict_step(images, 0))
    assert set(columns) == {"negative_elbo", "anomaly_score_corrected"}
    assert len(columns["anomaly_score_corrected"]) == 6

    # A checkpoint of release 0.1: no background statistics and no weight.
    state = {k: v for k, v in vae.state_dict().items() if not k.startswith(("background.", "complexity"))}
    old = tiny_vae(nll_samples=5)
    old.load_state_dict(state)  # strict: the missing buffers are filled in
    assert not old.background.fitted and old.complexity_weight.item() == 1.0
    checkpoint = {"state_dict": dict(state)}
    old.on_load_checkpoint(checkpoint)  # a resumed run's check of the weights passes too
    old.eval()

    def no_importance_samples(x: torch.Tensor, samples: int) -> torch.Tensor:
        raise AssertionError("no background model: predict draws no importance samples")

    old.importance_nll = no_importance_samples  # type: ignore[method-assign]
    with torch.no_grad():
        outputs = old.predict_step(images, 0)
    assert outputs.shape == (6, 1)
    assert set(old.prediction_columns(outputs)) == {"negative_elbo"}
    # A reloaded background knows it was fitted.
    again = tiny_vae(nll_samples=5)
    again.load_state_dict(vae.state_dict())
    assert again.background.fitted and again.complexity_weight.item() == 0.5
