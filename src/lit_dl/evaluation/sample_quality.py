"""Sample quality of a generative model: Frechet distance, KID, precision and recall in a feature space.

Every figure compares two sets of images through the same feature network (see
:mod:`lit_dl.evaluation.feature_classifier`): real images and generated ones, or two
disjoint sets of real images for the floor a perfect generator would reach with sets
of those sizes (the Frechet distance of finite samples is biased upwards, so the floor
is not 0).

* ``fid``: Frechet distance between Gaussians fitted to the two feature sets
  (torchmetrics ``FrechetInceptionDistance``); lower is better.
* ``kid`` / ``kid_std``: kernel (polynomial MMD) distance, mean and spread over random
  subsets (torchmetrics ``KernelInceptionDistance``); unbiased, so its floor is about 0.
* ``precision``: share of generated samples inside the real manifold (fidelity);
  ``recall``: share of real samples inside the generated manifold (diversity).
  Manifolds are unions of k-nearest-neighbour balls (Kynkaanniemi et al., 2019).

Features are computed once per image set and handed to the torchmetrics metrics through
:class:`PrecomputedFeatures`, since the network would otherwise run once per metric.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import torch
from torch import Tensor, nn

# The submodules, not torchmetrics.image: it exports these two only when torch-fidelity (for Inception) is
# installed, which a custom feature network does not need.
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

FIGURES = ("fid", "kid", "kid_std", "precision", "recall")


class PrecomputedFeatures(nn.Module):
    """Identity ``(N, D) -> (N, D)``: the ``feature=`` module of torchmetrics metrics fed with features."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, features: Tensor) -> Tensor:
        return features


@torch.no_grad()
def extract_features(extractor: nn.Module, batches: Iterable[Tensor]) -> Tensor:
    """Features ``(N, D)`` float32 of image batches ``(B, C, H, W)`` in [0, 1], one batch at a time."""
    parts = [extractor(images) for images in batches]
    if not parts:
        raise ValueError("no images to extract features from")
    return torch.cat(parts).float()


@torch.no_grad()
def frechet_distance(real: Tensor, fake: Tensor) -> float:
    """Frechet distance between feature sets ``(N, D)`` and ``(M, D)`` (torchmetrics, in float64)."""
    metric = FrechetInceptionDistance(
        feature=PrecomputedFeatures(real.shape[1]), normalize=True, sync_on_compute=False
    ).to(real.device)
    metric.update(real, real=True)
    metric.update(fake.to(real.device), real=False)
    return float(metric.compute())


@torch.no_grad()
def kernel_distance(
    real: Tensor, fake: Tensor, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Kernel Inception Distance (mean, std over ``subsets`` random subsets) between two feature sets.

    ``subset_size`` is capped at the smaller set. The subsets are drawn with ``seed`` (on a
    forked CPU random state: the caller's random numbers are not disturbed), so every call
    and every process gives the same figure for the same features.
    """
    size = min(subset_size, len(real), len(fake))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        metric = KernelInceptionDistance(
            feature=PrecomputedFeatures(real.shape[1]),
            subsets=subsets,
            subset_size=size,
            normalize=True,
            sync_on_compute=False,
        ).to(real.device)
    metric.update(real, real=True)
    metric.update(fake.to(real.device), real=False)
    with torch.random.fork_rng(devices=[]):  # torchmetrics draws the subsets with the global CPU generator
        torch.default_generator.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def _squared_distances(a: Tensor, b: Tensor) -> Tensor:
    """``(n, m)`` squared Euclidean distances (through one matrix product; clamped at 0)."""
    return ((a * a).sum(1, keepdim=True) + (b * b).sum(1) - 2.0 * a @ b.T).clamp_min_(0.0)


def knn_radii(features: Tensor, k: int = 3, chunk_size: int = 1024) -> Tensor:
    """Squared distance ``(N,)`` from each point to its k-th nearest other point, in row chunks."""
    if len(features) <= k:
        raise ValueError(f"k-nearest-neighbour radii need more than k={k} points, got {len(features)}")
    radii = []
    for chunk in features.split(chunk_size):
        nearest = torch.topk(_squared_distances(chunk, features), k + 1, dim=1, largest=False).values
        radii.append(nearest[:, k])  # column 0 is the point itself
    return torch.cat(radii)


def coverage(queries: Tensor, points: Tensor, radii: Tensor, chunk_size: int = 1024) -> float:
    """Share of ``queries`` inside at least one ball (``points``, squared ``radii``)."""
    inside = 0
    for chunk in queries.split(chunk_size):
        inside += int((_squared_distances(chunk, points) <= radii).any(dim=1).sum())
    return inside / len(queries)


@torch.no_grad()
def precision_recall(real: Tensor, fake: Tensor, k: int = 3, chunk_size: int = 1024) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al., 2019) of ``fake`` against ``real`` features.

    Written here because torchmetrics has no such metric. Each set's manifold is the union
    of balls around its points reaching their k-th nearest neighbour; precision is the
    share of fake points inside the real manifold, recall the share of real points inside
    the fake one. Distances are computed ``chunk_size`` rows at a time, so memory grows
    with ``chunk_size * N`` rather than ``N * M`` (10,000 x 10,000 fits easily).
    """
    fake = fake.to(real.device)
    centre = real.mean(dim=0)  # centred features: smaller numbers, less rounding in |a|^2 + |b|^2 - 2ab
    real, fake = real.float() - centre, fake.float() - centre
    precision = coverage(fake, real, knn_radii(real, k, chunk_size), chunk_size)
    recall = coverage(real, fake, knn_radii(fake, k, chunk_size), chunk_size)
    return precision, recall


def quality_figures(
    real: Tensor,
    fake: Tensor,
    k: int = 3,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """``fid``, ``kid``, ``kid_std``, ``precision``, ``recall`` of ``fake`` against ``real`` features.

    For the real-versus-real floor, pass two disjoint sets of real features of the sizes
    used for the generated comparison.
    """
    kid, kid_std = kernel_distance(real, fake, kid_subsets, kid_subset_size, seed)
    precision, recall = precision_recall(real, fake, k)
    return {
        "fid": frechet_distance(real, fake),
        "kid": kid,
        "kid_std": kid_std,
        "precision": precision,
        "recall": recall,
    }


def image_quality(
    extractor: nn.Module, real: Tensor, fake: Tensor, batch_size: int = 500, **kwargs: int
) -> dict[str, float]:
    """:func:`quality_figures` of two image sets ``(N, C, H, W)`` in [0, 1] (features extracted here)."""
    real_features = extract_features(extractor, real.split(batch_size))
    fake_features = extract_features(extractor, fake.split(batch_size))
    return quality_figures(real_features, fake_features, **kwargs)


__all__ = [
    "FIGURES",
    "PrecomputedFeatures",
    "coverage",
    "extract_features",
    "frechet_distance",
    "image_quality",
    "kernel_distance",
    "knn_radii",
    "precision_recall",
    "quality_figures",
]
