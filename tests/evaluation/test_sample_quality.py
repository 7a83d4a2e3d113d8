"""Sample-quality figures: FID/KID by torchmetrics, k-NN precision/recall by hand, the feature network."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchmetrics.image.fid import FrechetInceptionDistance

from lit_dl.data import DigitsDataModule
from lit_dl.errors import ConfigError
from lit_dl.evaluation.feature_classifier import FeatureExtractor, penultimate
from lit_dl.evaluation.sample_quality import (
    coverage,
    extract_features,
    frechet_distance,
    image_quality,
    kernel_distance,
    knn_radii,
    precision_recall,
    quality_figures,
)
from lit_dl.nets import CNN, MLP, ResNet

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings(r"ignore:.*isinstance\(treespec, LeafSpec\).*"),
]


@pytest.fixture(scope="module")
def digits_pixels() -> torch.Tensor:
    """All training images of the digits datamodule, pixels in [0, 1], ``(N, 1, 8, 8)``."""
    datamodule = DigitsDataModule(scale="unit", batch_size=512)
    datamodule.setup("fit")
    return torch.cat([images for images, _ in datamodule.train_dataloader()])


@pytest.fixture(scope="module")
def extractor(digits_classifier: Path) -> FeatureExtractor:
    return FeatureExtractor.from_checkpoint(digits_classifier)


# ---------------------------------------------------------------- precision and recall
def test_precision_recall_of_a_hand_computed_case() -> None:
    # Real: the unit square's corners; with k=1 each ball reaches the next corner (radius 1).
    real = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # Fake: the centre (0.71 from a corner: inside), (1.2, 0) (0.2 from a corner: inside), (3, 3) (outside).
    fake = torch.tensor([[0.5, 0.5], [1.2, 0.0], [3.0, 3.0]])
    assert knn_radii(real, k=1).tolist() == pytest.approx([1.0] * 4)
    # Fake radii (k=1, squared): centre <-> (1.2, 0) is 0.74; the outlier's nearest is (1.2, 0) at 12.24.
    assert knn_radii(fake, k=1).tolist() == pytest.approx([0.74, 0.74, 12.24])
    precision, recall = precision_recall(real, fake, k=1)
    assert precision == pytest.approx(2 / 3)
    assert recall == 1.0  # every corner is within 0.86 of the centre or of (1.2, 0)
    # Mode collapse: two fakes 0.15 apart, next to one corner, are realistic but cover that corner only.
    assert precision_recall(real, torch.tensor([[0.05, 0.0], [0.2, 0.0]]), k=1) == (1.0, 0.25)


def test_precision_recall_match_brute_force_at_any_chunk_size() -> None:
    generator = torch.Generator().manual_seed(0)
    real = torch.randn(300, 5, generator=generator)
    fake = torch.randn(200, 5, generator=generator) * 1.2 + 1.0  # broader and shifted
    k = 3
    real_radius = torch.cdist(real, real).kthvalue(k + 1, dim=1).values
    fake_radius = torch.cdist(fake, fake).kthvalue(k + 1, dim=1).values
    precision = (torch.cdist(fake, real) <= real_radius).any(1).float().mean().item()
    recall = (torch.cdist(real, fake) <= fake_radius).any(1).float().mean().item()
    for chunk_size in (7, 64, 10_000):
        got = precision_recall(real, fake, k=k, chunk_size=chunk_size)
        assert got == pytest.approx((precision, recall), abs=1 / 200), chunk_size
    assert 0.2 < precision < 0.95 and 0.2 < recall < 0.95  # a case where neither is trivial


def test_knn_radii_need_more_points_than_k() -> None:
    with pytest.raises(ValueError, match="more than k=3"):
        knn_radii(torch.zeros(3, 2), k=3)
    assert coverage(torch.zeros(2, 2), torch.ones(1, 2), torch.tensor([1.0])) == 0.0


# ---------------------------------------------------------------- FID and KID
def test_fid_of_a_set_against_itself_is_zero_and_grows_with_a_shift() -> None:
    features = torch.randn(500, 8, generator=torch.Generator().manual_seed(1))
    assert abs(frechet_distance(features, features)) < 1e-6
    # Equal covariances: the distance is the squared shift of the mean (4 * 8 coordinates * 0.25).
    assert frechet_distance(features, features + 0.5) == pytest.approx(2.0, rel=1e-4)


def test_kid_is_seeded_and_leaves_the_global_random_state_alone() -> None:
    generator = torch.Generator().manual_seed(2)
    real, fake = torch.randn(200, 4, generator=generator), torch.randn(150, 4, generator=generator) + 1
    state = torch.get_rng_state()
    first = kernel_distance(real, fake, subsets=5, subset_size=1000, seed=3)  # subset size capped at 150
    assert torch.equal(torch.get_rng_state(), state)
    assert kernel_distance(real, fake, subsets=5, seed=3) == first
    assert first[0] > 0.1


def test_real_floor_is_far_below_noise(extractor: FeatureExtractor, digits_pixels: torch.Tensor) -> None:
    real, other = digits_pixels[:400], digits_pixels[400:800]
    settings = {"kid_subsets": 20, "kid_subset_size": 200}
    itself = image_quality(extractor, real, real, **settings)
    floor = image_quality(extractor, real, other, **settings)
    noise = image_quality(extractor, real, torch.rand_like(other), **settings)
    assert abs(itself["fid"]) < 1e-3 and itself["precision"] == itself["recall"] == 1.0
    assert floor["fid"] * 5 < noise["fid"]
    assert floor["kid"] < 0.1 * noise["kid"]
    assert floor["precision"] > 0.6 and floor["recall"] > 0.6
    assert noise["precision"] < 0.2 and noise["recall"] < 0.2


def test_figures_from_features_match_torchmetrics_with_the_extractor_as_feature(
    extractor: FeatureExtractor, digits_pixels: torch.Tensor
) -> None:
    real, fake = digits_pixels[:200], digits_pixels[200:400].flip(-1)
    metric = FrechetInceptionDistance(feature=extractor, normalize=True)  # the documented contract
    metric.update(real, real=True)
    metric.update(fake, real=False)
    features = [extract_features(extractor, images.split(64)) for images in (real, fake)]
    assert frechet_distance(*features) == pytest.approx(float(metric.compute()), rel=1e-5)
    assert set(quality_figures(*features, kid_subsets=3, kid_subset_size=50)) == {
        "fid",
        "kid",
        "kid_std",
        "precision",
        "recall",
    }


# ---------------------------------------------------------------- the feature network
def test_extractor_shape_dtypes_and_autocast(
    extractor: FeatureExtractor, digits_pixels: torch.Tensor
) -> None:
    images = digits_pixels[:16]
    features = extractor(images)
    assert features.shape == (16, extractor.num_features) and features.dtype == torch.float32
    assert extractor.num_features == 64  # the last block of the digits CNN
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(extractor(images), features)
    as_bytes = (images * 255).round().to(torch.uint8)
    assert torch.allclose(extractor(as_bytes), extractor(as_bytes.float() / 255))
    extractor.train()
    assert not extractor.training and not any(p.requires_grad for p in extractor.parameters())
    with pytest.raises(ConfigError, match=r"\[3, 8, 8\].*trained on \[1, 8, 8\]"):
        extractor(torch.rand(2, 3, 8, 8))


def test_penultimate_of_cnn_and_resnet_share_the_weights() -> None:
    cnn = CNN(in_channels=3, out_features=5, channels=[4, 8]).eval()
    body, width = penultimate(cnn)
    x = torch.rand(2, 3, 16, 16)
    assert width == 8 and torch.allclose(cnn.head(body(x)), cnn(x))
    resnet = ResNet(in_channels=1, out_features=3).eval()
    body, width = penultimate(resnet)
    x = torch.rand(2, 1, 8, 8)
    assert width == 512 and torch.allclose(resnet.model.fc(body(x)), resnet(x), atol=1e-5)
    with pytest.raises(ConfigError, match=r"needs a lit_dl\.nets\.CNN or ResNet"):
        penultimate(MLP(4, 2, [8]))
