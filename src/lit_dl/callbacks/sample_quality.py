"""Sample quality of a generative model while it trains and after testing: FID, KID, precision, recall.

The model provides ``generate(n, generator=...) -> (n, C, H, W)`` images in [0, 1] on its
device, ``generator`` being a seeded CPU ``torch.Generator``. Generated images are
compared with real ones of the datamodule in the feature space of a classifier of the
same data set (see :mod:`lit_dl.evaluation.feature_classifier`), beside the floor: the
same figures between two disjoint sets of real images.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from lit_dl.data.batching import batch_loader
from lit_dl.errors import CheckpointError, ConfigError
from lit_dl.evaluation.feature_classifier import FeatureExtractor, feature_classifier_path, locate_or_train
from lit_dl.evaluation.sample_quality import extract_features, quality_figures
from lit_dl.utils import write_json

log = logging.getLogger(__name__)


class SampleQuality(L.Callback):
    """Log ``val/fid``, ``val/kid``, ``val/precision``, ``val/recall`` (and ``test/...``) of generated images.

    Each validation (every ``every_n_epochs`` epochs, never in the sanity check) draws
    ``n_samples`` images from the model with a generator seeded by ``seed`` (the same
    latent noise every time) and compares them with as many validation images. After
    testing it does the same with up to ``test_samples`` test images and logs the floor,
    ``test/fid_real`` and ``test/kid_real``: test images against as many training images
    (``val/fid_real`` and ``val/kid_real`` likewise). Every process computes the same
    figures, so ``ModelCheckpoint(monitor="val/fid")`` works under DDP; monitor it only
    when ``every_n_epochs`` divides ``trainer.check_val_every_n_epoch`` (``train`` refuses other
    settings before it starts). Real features are
    computed once. ``sample_quality.json`` (epoch -> figures, and the test figures) is
    written to ``dirpath`` by global rank zero.

    Args:
        feature_ckpt: a lit_dl image classifier checkpoint of the same data set; None: the
            classifier in ``cache_dir`` (``<data set>.ckpt``), trained there when missing (one
            log line says so, with the time it will take).
        cache_dir: folder of the cached feature classifiers; None: the user's cache,
            ``$XDG_CACHE_HOME/lit_dl/feature_classifiers`` (``~/.cache/...`` without it).
        n_samples: generated (and real) images per validation.
        test_samples: generated images after testing (capped at the test set's size).
        every_n_epochs: validations between two measurements.
        k: nearest neighbours of the precision/recall manifolds.
        seed: seed of the generated samples, the real subsets and the KID subsets.
        batch_size: images generated and passed through the feature network at a time.
        kid_subsets, kid_subset_size: KID's random subsets (the size is capped at the sample count;
            at the cap every subset is the whole set and the KID spread is 0).
        train_epochs: epochs of a feature classifier trained by this callback.
        dirpath: folder of ``sample_quality.json`` (default: ``trainer.default_root_dir``).
    """

    # What it logs in validation (a checkpoint or early stopping may monitor them).
    validation_metrics: ClassVar[tuple[str, ...]] = tuple(
        f"val/{name}" for name in ("fid", "kid", "precision", "recall", "fid_real", "kid_real")
    )

    def __init__(
        self,
        feature_ckpt: str | None = None,
        cache_dir: str | None = None,
        n_samples: int = 2000,
        test_samples: int = 10000,
        every_n_epochs: int = 1,
        k: int = 3,
        seed: int = 0,
        batch_size: int = 500,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        train_epochs: int = 5,
        dirpath: str | None = None,
    ) -> None:
        if min(n_samples, test_samples) <= k:
            raise ConfigError(f"sample_quality: n_samples and test_samples must exceed k={k}")
        self.feature_ckpt = feature_ckpt
        self.cache_dir = cache_dir
        self.n_samples = int(n_samples)
        self.test_samples = int(test_samples)
        self.every_n_epochs = max(1, int(every_n_epochs))
        self.k = int(k)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.kid_subsets = int(kid_subsets)
        self.kid_subset_size = int(kid_subset_size)
        self.train_epochs = int(train_epochs)
        self.dirpath = dirpath
        self.extractor: FeatureExtractor | None = None
        self.real: dict[str, Tensor] = {}  # stage -> features of its real images
        self.floor: dict[str, dict[str, float]] = {}  # stage -> real-versus-real figures
        self.history: dict[int, dict[str, float]] = {}  # epoch -> validation figures
        self.test_figures: dict[str, float] = {}

    # ------------------------------------------------------------ set-up
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        spec = getattr(pl_module, "data_spec", None)
        images = spec is None or spec.modality == "images"
        if not callable(getattr(pl_module, "generate", None)) or not images:
            raise ConfigError(
                "callbacks.sample_quality needs a generative model with generate(n, generator) of images; "
                f"{type(pl_module).__name__} has none (drop it with callbacks.sample_quality=null)"
            )
        if trainer.datamodule is None:
            raise ConfigError("callbacks.sample_quality needs a datamodule for its real images")
        if self.extractor is None:
            self.extractor = FeatureExtractor.from_checkpoint(self._feature_path(trainer))

    def _feature_path(self, trainer: L.Trainer) -> Path:
        if self.feature_ckpt:
            path = Path(self.feature_ckpt)
            if not path.is_file():
                raise CheckpointError(
                    f"feature classifier not found: {path} (set callbacks.sample_quality.feature_ckpt "
                    "to a classifier checkpoint, or to null to train one)"
                )
            return path
        path = feature_classifier_path(self.cache_dir, trainer.datamodule)
        if path.is_file():
            return path
        if trainer.world_size > 1:
            raise ConfigError(
                f"no feature classifier at {path}; train it before a multi-process run: "
                "python -m lit_dl.evaluation.feature_classifier data=... "
                f"out={path}"
            )
        return locate_or_train(trainer.datamodule, path, max_epochs=self.train_epochs, seed=self.seed)

    # ------------------------------------------------------------ hooks
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = time.perf_counter()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        start = getattr(self, "_epoch_start", None)
        self._training_seconds = time.perf_counter() - start if start is not None else None

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        fitting = trainer.state.fn == "fit"
        if fitting and (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        started = time.perf_counter()
        figures = self._measure(trainer, pl_module, "val")
        self._log(pl_module, "val", figures)
        # What measuring costs beside training (budget: a tenth of an epoch's training time).
        seconds, training = time.perf_counter() - started, getattr(self, "_training_seconds", None)
        pl_module.log("val/sample_quality_seconds", seconds, on_epoch=True, sync_dist=False)
        if fitting and training:
            log.info(
                "sample quality took %.2f s, %.0f%% of the epoch's %.1f s of training",
                seconds,
                100 * seconds / training,
                training,
            )
        if fitting:
            self.history[trainer.current_epoch] = figures
            self._write(trainer)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.test_figures = self._measure(trainer, pl_module, "test")
        self._log(pl_module, "test", self.test_figures)
        self._write(trainer)

    def _log(self, pl_module: L.LightningModule, stage: str, figures: dict[str, float]) -> None:
        # Every rank logs the same numbers (no rank_zero_only), so callbacks can monitor them.
        for name in ("fid", "kid", "precision", "recall", "fid_real", "kid_real"):
            pl_module.log(f"{stage}/{name}", figures[name], on_epoch=True, sync_dist=False)

    # ------------------------------------------------------------ measuring
    @torch.no_grad()
    def _measure(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> dict[str, float]:
        assert self.extractor is not None
        self.extractor.to(pl_module.device)
        real = self._real_features(trainer, stage, pl_module.device)
        fake = extract_features(self.extractor, self._generated(pl_module, len(real)))
        figures = quality_figures(real, fake, self.k, self.kid_subsets, self.kid_subset_size, self.seed)
        floor = self.floor[stage]
        figures.update({f"{name}_real": value for name, value in floor.items()})
        log.info(
            "%s sample quality: FID %.3f (real-vs-real %.3f), KID %.4f, precision %.3f, recall %.3f",
            stage,
            figures["fid"],
            floor["fid"],
            figures["kid"],
            figures["precision"],
            figures["recall"],
        )
        return figures

    def _real_features(self, trainer: L.Trainer, stage: str, device: torch.device) -> Tensor:
        """Features of a seeded subset of the stage's real images; the floor from as many training images."""
        if stage not in self.real:
            datamodule = trainer.datamodule
            dataset = self._dataset(datamodule, stage)
            limit = self.n_samples if stage == "val" else self.test_samples
            real = self._features_of(datamodule, dataset, min(limit, len(dataset)), device)
            train = self._dataset(datamodule, "train")
            reference = self._features_of(datamodule, train, min(len(real), len(train)), device)
            self.real[stage] = real
            self.floor[stage] = quality_figures(
                real, reference, self.k, self.kid_subsets, self.kid_subset_size, self.seed
            )
        return self.real[stage].to(device)

    @staticmethod
    def _dataset(datamodule: L.LightningDataModule, stage: str) -> Dataset:
        loader = getattr(datamodule, f"{stage}_dataloader")()
        dataset = loader.dataset
        if len(dataset) <= 1:
            raise ConfigError(f"callbacks.sample_quality: the {stage} split has {len(dataset)} image(s)")
        return dataset

    def _features_of(
        self, datamodule: L.LightningDataModule, dataset: Dataset, n: int, device: torch.device
    ) -> Tensor:
        generator = torch.Generator().manual_seed(self.seed)
        index = torch.randperm(len(dataset), generator=generator)[:n].sort().values.tolist()
        subset = Subset(dataset, index)
        if callable(getattr(dataset, "__getitems__", None)):
            loader = batch_loader(subset, self.batch_size, shuffle=False)
        else:
            loader = DataLoader(subset, batch_size=self.batch_size)
        mean, std = getattr(datamodule, "mean", None), getattr(datamodule, "std", None)

        def pixels() -> Iterator[Tensor]:
            for batch in loader:
                images = (batch[0] if isinstance(batch, tuple | list) else batch).to(device).float()
                if mean is not None and std is not None:  # undo standardisation (identity for scale=unit)
                    shape = (1, -1, 1, 1)
                    images = images * images.new_tensor(std).view(shape) + images.new_tensor(mean).view(shape)
                yield images.clamp(0.0, 1.0)

        assert self.extractor is not None
        return extract_features(self.extractor, pixels())

    def _generated(self, pl_module: L.LightningModule, n: int) -> Iterator[Tensor]:
        """``n`` generated images, ``batch_size`` at a time, from a freshly seeded generator."""
        # A CPU generator, as the tasks draw their latent noise on the CPU: the same samples on any device.
        generator = torch.Generator().manual_seed(self.seed)
        for start in range(0, n, self.batch_size):
            count = min(self.batch_size, n - start)
            images = pl_module.generate(count, generator=generator)
            if images.ndim != 4 or len(images) != count:
                raise ConfigError(
                    f"{type(pl_module).__name__}.generate({count}, generator=...) returned shape "
                    f"{list(images.shape)}; expected ({count}, C, H, W) images in [0, 1]"
                )
            yield images.float().clamp(0.0, 1.0)

    # ------------------------------------------------------------ outputs and state
    def _write(self, trainer: L.Trainer) -> None:
        if not trainer.is_global_zero:
            return
        folder = Path(self.dirpath or trainer.default_root_dir)
        write_json(
            folder / "sample_quality.json",
            {
                "val": {str(epoch): figures for epoch, figures in sorted(self.history.items())},
                "test": self.test_figures,
                "floor": self.floor,
            },
        )

    def state_dict(self) -> dict[str, Any]:
        return {"history": dict(self.history)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Merged, not replaced: validating or testing an earlier (best) checkpoint after fitting
        # restores callback states too, and must not drop the epochs measured since.
        restored = {int(epoch): figures for epoch, figures in state_dict.get("history", {}).items()}
        self.history = {**restored, **self.history}


__all__ = ["SampleQuality"]
