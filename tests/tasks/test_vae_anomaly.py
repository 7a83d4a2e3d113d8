"""The VAE's complexity-corrected anomaly score: the background model by hand, its weight, the test
metrics and predict columns, and checkpoints from before it existed."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lit_dl.data.spec import DataSpec
from lit_dl.errors import ConfigError
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


def tiny_vae(
    anomaly_classes: list[int] | None = None,
    nll_samples: int = 0,
    reference_images: int = 0,
    likelihood: str = "bernoulli",
) -> VAETask:
    return VAETask(
        encoder={"_target_": "lit_dl.nets.MLPEncoder", "hidden_sizes": []},
        decoder={"_target_": "lit_dl.nets.MLPDecoder", "hidden_sizes": []},
        optimizer=ADAM,
        latent_dim=2,
        likelihood=likelihood,
        nll_samples=nll_samples,
        reference_images=reference_images,
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
    # Stand-in ELBO = 3 + 0.4 * background cost (+ a trainable zero): the fitted weight is 0.4
    # (reference_images=0: the weight is fitted on the ELBO).
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
    trainer = L.Trainer(max_epochs=2, num_sanity_val_steps=0, enable_checkpointing=False, **quiet)
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


# ------------------------------------------------------------ reference codes (the empirical prior)
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_reference_nll_is_the_likelihood_under_the_reference_codes(likelihood: str) -> None:
    # -log (1/N sum_j p(x | z_j)), each p(x | z_j) from the task's own log_likelihood, one pair at a time.
    torch.manual_seed(0)
    vae = tiny_vae(reference_images=5, likelihood=likelihood)
    if vae.log_scale is not None:
        vae.log_scale.data.fill_(-0.7)
    codes = torch.randn(5, 2)
    vae.reference_codes.copy_(codes)
    vae.reference_count.fill_(3)  # only the first three are references
    vae._references = None
    images = torch.rand(4, 1, 4, 4)
    if likelihood == "bernoulli":
        images = (images < 0.5).float()
    with torch.no_grad():
        pairs = torch.tensor(
            [[vae.log_likelihood(vae.decoder(z[None]), x[None]).item() for z in codes[:3]] for x in images]
        )
        expected = -(torch.logsumexp(pairs, dim=1) - math.log(3))
        assert torch.allclose(vae.reference_nll(images, chunk=2), expected, atol=1e-4)


def test_references_are_the_first_epoch_images_and_checkpoints_hold_their_codes(tmp_path) -> None:
    torch.manual_seed(0)
    vae = tiny_vae(reference_images=20)
    images = (torch.rand(64, 1, 4, 4) < torch.rand(64, 1, 1, 1)).float()
    train = DataLoader(TensorDataset(images), batch_size=16, shuffle=True)
    val = DataLoader(TensorDataset(images[:32]), batch_size=16)
    quiet = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False}
    # Validation after the second epoch only: the third trains on past the codes it computed.
    trainer = L.Trainer(
        max_epochs=3, check_val_every_n_epoch=2, num_sanity_val_steps=0, default_root_dir=tmp_path, **quiet
    )
    validated = {}

    class AtValidation(L.Callback):
        def on_validation_epoch_end(self, trainer: L.Trainer, module: VAETask) -> None:
            validated["codes"] = module.reference_codes.clone()
            with torch.no_grad():
                validated["score"] = module.reference_nll(images[:32]).double()
                validated["cost"] = module.background.nll(images[:32]).double()

    trainer.callbacks.append(AtValidation())
    trainer.fit(vae, train, val)
    kept = torch.cat(vae.reference_pixels)
    assert kept.shape == (20, 1, 4, 4)  # 16 of the first batch, 4 of the second, and no more later
    assert all(any(torch.equal(k, image) for image in images) for k in kept)  # training images as served
    assert vae.references == 20
    # The weight is the least-squares slope of the reference NLL on the background cost over validation.
    score, cost = validated["score"], validated["cost"]
    slope = ((cost - cost.mean()) * (score - score.mean())).sum() / (cost - cost.mean()).square().sum()
    assert vae.complexity_weight.item() == pytest.approx(min(max(slope.item(), 0.0), 1.0), abs=1e-5)

    # A checkpoint written after the third epoch holds the codes of its own weights, not the validation's.
    path = tmp_path / "after.ckpt"
    trainer.save_checkpoint(path)
    saved = torch.load(path, weights_only=False)["state_dict"]
    vae.eval()
    with torch.no_grad():
        expected = vae.encoder(kept)[0]
    assert not torch.allclose(validated["codes"], expected, atol=1e-3)
    assert torch.allclose(saved["reference_codes"], expected, atol=1e-6)
    assert int(saved["reference_count"]) == 20
    # A fresh model loads them and scores as the trained one does.
    again = VAETask.load_from_checkpoint(path, data=image_spec())
    again.eval()
    with torch.no_grad():
        assert torch.allclose(again.reference_nll(images), vae.reference_nll(images), atol=1e-5)
        columns = again.prediction_columns(again.predict_step(images, 0))
    assert set(columns) == {"negative_elbo", "anomaly_score_corrected"}


def test_checkpoints_from_before_the_reference_codes_score_the_nll() -> None:
    # The previous release's checkpoint: background and weight, no reference codes. It loads (strict),
    # and its corrected score is nll - w * background (the weight it was fitted for), with importance samples.
    torch.manual_seed(0)
    images = (torch.rand(6, 1, 4, 4) < 0.4).float()
    before = tiny_vae(nll_samples=5)
    before.background.update(images)
    before.complexity_weight.fill_(0.5)
    state = {k: v for k, v in before.state_dict().items() if not k.startswith("reference")}
    vae = tiny_vae(nll_samples=5, reference_images=1024)
    vae.load_state_dict(state)
    assert vae.references == 0 and vae.reference_codes.shape == (1024, 2)
    vae.eval()
    drawn = []

    def importance_nll(x: torch.Tensor, samples: int) -> torch.Tensor:
        drawn.append(samples)
        return torch.full((len(x),), 30.0)

    vae.importance_nll = importance_nll  # type: ignore[method-assign]
    with torch.no_grad():
        outputs = vae.predict_step(images, 0)
        expected = 30.0 - 0.5 * vae.background.nll(images)
    assert drawn == [5]
    assert torch.allclose(outputs[:, 1], expected, atol=1e-5)


def test_reference_images_must_not_be_negative() -> None:
    with pytest.raises(ConfigError, match=r"model\.reference_images"):
        tiny_vae(reference_images=-1)


def test_reference_codes_are_decoded_once_until_the_codes_or_weights_change() -> None:
    torch.manual_seed(0)
    vae = tiny_vae(reference_images=4)
    vae.reference_codes.copy_(torch.randn(4, 2))
    vae.reference_count.fill_(4)
    vae._references = None
    vae.eval()
    decoded = []
    vae.decoder.register_forward_hook(lambda module, args, output: decoded.append(len(args[0])))
    images = (torch.rand(8, 1, 4, 4) < 0.5).float()
    first = vae.reference_nll(images)
    assert torch.allclose(vae.reference_nll(images[:3]), first[:3]) and decoded == [4]  # one decode for both
    optimizer = torch.optim.SGD(vae.decoder.parameters(), lr=0.1)
    vae.decoder(torch.randn(5, 2)).sum().backward()
    optimizer.step()  # new weights: decoded again, and the score moves
    decoded.clear()
    assert not torch.allclose(vae.reference_nll(images), first) and decoded == [4]
    vae.reference_codes.mul_(2)  # new codes
    decoded.clear()
    vae.reference_nll(images)
    assert decoded == [4]


def test_reference_nll_is_computed_in_float32_under_autocast() -> None:
    # bf16-mixed / 16-mixed evaluate inside autocast; a 16-bit product of hundreds of nats would be off
    # by whole nats, so the score leaves autocast (and the cached decoding is the float32 one).
    torch.manual_seed(0)
    vae = tiny_vae(reference_images=8)
    vae.reference_codes.copy_(torch.randn(8, 2) * 3)
    vae.reference_count.fill_(8)
    vae._references = None
    vae.eval()
    images = (torch.rand(16, 1, 4, 4) < 0.5).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = vae.reference_nll(images)
    assert mixed.dtype == torch.float32
    vae._reference_params = None
    assert torch.allclose(mixed, vae.reference_nll(images), rtol=0, atol=1e-5)
