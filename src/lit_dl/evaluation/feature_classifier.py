"""The classifier whose feature space sample-quality metrics measure in: located in a cache, or trained once.

Frechet distance and friends compare two sets of images through a network's
features. Inception-v3 weights cannot be downloaded here, and ImageNet features are
a poor judge of 28x28 greyscale digits anyway, so lit_dl uses a classifier trained on
the same data set: any ``ClassificationTask`` checkpoint with a ``CNN`` or ``ResNet``
(``lit-dl train experiment=fashion_cnn`` writes one), or a small CNN trained here.

The trained classifiers are cached per user, as torch hub and Hugging Face cache their
downloads: ``$XDG_CACHE_HOME/lit_dl/feature_classifiers/<data set>.ckpt`` (``~/.cache/...``
without ``XDG_CACHE_HOME``; see :func:`default_cache_dir`). Not the working directory: a run
started anywhere, on any data set (the bundled digits have no data folder at all), finds the
classifier trained once, and nothing appears beside the user's files unannounced.

Command (trains into the cache unless the file is there)::

    python -m lit_dl.evaluation.feature_classifier data=fashion_mnist data.root=DIR [out=FILE] [epochs=5]
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from lit_dl.errors import CheckpointError, ConfigError, LitDLError
from lit_dl.utils import class_path, to_plain

log = logging.getLogger(__name__)

# Keys of this command itself; every other argument is a config override of the data.
OWN_KEYS = ("out", "epochs", "seed")


# ---------------------------------------------------------------- the feature network
def penultimate(net: nn.Module) -> tuple[nn.Module, int]:
    """The part of a classifier network before its linear head, and the width of its output.

    Shares the weights of ``net``: ``CNN`` -> its blocks and global pooling; ``ResNet``
    -> everything up to and including the average pooling.
    """
    from lit_dl.nets import CNN, ResNet

    if isinstance(net, CNN):
        return nn.Sequential(net.features, net.pool, nn.Flatten()), net.head[-1].in_features
    if isinstance(net, ResNet):
        body = [module for name, module in net.model.named_children() if name != "fc"]
        return nn.Sequential(*body, nn.Flatten()), net.model.fc.in_features
    raise ConfigError(
        f"the feature classifier's network is a {type(net).__name__}; sample quality needs a "
        "lit_dl.nets.CNN or ResNet classifier (e.g. one trained with experiment=fashion_cnn)"
    )


class FeatureExtractor(nn.Module):
    """Images in pixel scale -> penultimate features of a trained classifier.

    Input ``(B, C, H, W)``: float in [0, 1], or uint8 in [0, 255]; output ``(B, D)``
    float32. Images are standardised with the classifier's own training statistics
    first. Frozen and always in eval mode (``train()`` is a no-op), and run in
    float32 even inside a mixed-precision ``autocast`` region. Usable as torchmetrics'
    ``feature=`` module (it has the ``num_features`` attribute those metrics read).

    Args:
        net: a ``CNN`` or ``ResNet`` (see :func:`penultimate`).
        mean, std: per-channel statistics the classifier was trained with.
        image_shape: ``[C, H, W]`` the classifier expects; inputs are checked against it.
    """

    def __init__(
        self,
        net: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        image_shape: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.body, self.num_features = penultimate(net)
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))
        self.image_shape = list(image_shape) if image_shape is not None else None
        self.requires_grad_(False)
        super().train(False)

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> FeatureExtractor:
        """The extractor of a lit_dl classification checkpoint (its network and data statistics)."""
        from lit_dl.verbs.common import restore_from_checkpoint

        model, datamodule = restore_from_checkpoint(path)
        mean, std = getattr(datamodule, "mean", None), getattr(datamodule, "std", None)
        if mean is None or std is None or getattr(model, "task_type", "") != "classification":
            raise CheckpointError(
                f"{path} is not an image classifier checkpoint; point feature_ckpt at one "
                "(e.g. checkpoints/best.ckpt of `lit-dl train experiment=fashion_cnn`)"
            )
        return cls(model.net, mean, std, getattr(datamodule, "image_shape", None))

    def train(self, mode: bool = True) -> FeatureExtractor:
        return super().train(False)  # a fixed measuring device: dropout and batch norm stay in eval mode

    def forward(self, images: Tensor) -> Tensor:
        """``(B, C, H, W)`` pixels -> ``(B, num_features)`` float32."""
        if self.image_shape is not None and list(images.shape[1:]) != self.image_shape:
            raise ConfigError(
                f"images of shape {list(images.shape[1:])} given to a feature classifier trained on "
                f"{self.image_shape}; use a feature classifier of this data set"
            )
        pixels = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        with torch.autocast(device_type=images.device.type, enabled=False):
            return self.body((pixels - self.mean) / self.std).float()


# ---------------------------------------------------------------- locating and training
def data_spec(data: Mapping[str, Any] | L.LightningDataModule) -> dict[str, Any]:
    """A datamodule or its config entry as a plain ``{"_target_": ..., **hparams}`` dict."""
    if isinstance(data, L.LightningDataModule):
        return {"_target_": class_path(data), **to_plain(dict(data.hparams))}
    spec = to_plain(data)
    if not isinstance(spec, dict) or "_target_" not in spec:
        raise ConfigError(f"expected a datamodule or a data config with _target_, got {data!r}")
    return spec


def dataset_name(data: Mapping[str, Any] | L.LightningDataModule) -> str:
    """File-name stem of a data set's feature classifier, e.g. ``fashion_mnist`` or ``digits``.

    A folder of the user's images is named by the folder, its image size and a hash of its full
    path (``photos_64x64_1a2b3c4d``): two projects' ``images`` folders share no classifier in the cache.
    """
    spec = data_spec(data)
    if spec.get("dataset"):
        name = str(spec["dataset"])
    elif spec.get("root"):
        root = Path(str(spec["root"])).expanduser().resolve()
        name = root.name or "images"
        if spec.get("image_size"):
            name += "_" + "x".join(str(int(v)) for v in spec["image_size"])
        name += "_" + hashlib.sha256(str(root).encode()).hexdigest()[:8]
    else:
        name = spec["_target_"].rsplit(".", 1)[-1].removesuffix("DataModule").lower() or "data"
    binarize = spec.get("binarize")
    if binarize not in (None, False, "false", "none"):
        name += "_binary"  # binary pixels look unlike grey ones to a classifier trained on either
    return name


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/lit_dl/feature_classifiers`` (``~/.cache/lit_dl/feature_classifiers`` without it)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "lit_dl" / "feature_classifiers"


def feature_classifier_path(
    cache_dir: str | Path | None, data: Mapping[str, Any] | L.LightningDataModule
) -> Path:
    """``<cache_dir>/<dataset_name>.ckpt`` (None: :func:`default_cache_dir`; ``~`` is expanded)."""
    folder = default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()
    return folder / f"{dataset_name(data)}.ckpt"


def duration(seconds: float) -> str:
    """``40 s``, ``12 min`` or ``1.5 h``: a rough figure for a log line."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


class TrainingNotice(L.Callback):
    """Says in one line what is trained, why, about how long it takes and where it is cached.

    The time is measured, not guessed: the line is logged once the first ``timed_batches``
    batches of the first epoch have run, extrapolated to every batch of every epoch.
    """

    def __init__(self, name: str, path: Path, images: int, timed_batches: int = 5) -> None:
        self.name, self.path, self.images = name, path, images
        self.timed_batches = max(1, timed_batches)
        self.start = 0.0
        self.said = False

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.said:
            self.start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        per_epoch = int(trainer.num_training_batches)
        if self.said or batch_idx + 1 < min(self.timed_batches, per_epoch):
            return
        seconds = (time.perf_counter() - self.start) / (batch_idx + 1) * per_epoch * trainer.max_epochs
        log.info(
            "sample quality: training a feature classifier for %s (FID, KID, precision and recall compare "
            "images in its features; %d epoch(s) over %d images, about %s here) into %s, where later runs "
            "find it (callbacks.sample_quality.feature_ckpt=FILE brings your own, "
            "callbacks.sample_quality=null skips sample quality, and a checkpoint watching val/fid then "
            "needs another metric)",
            self.name,
            trainer.max_epochs,
            self.images,
            duration(seconds),
            self.path,
        )
        self.said = True


def _accepts(cls: type, name: str) -> bool:
    """Whether ``cls(...)`` takes keyword ``name``, following ``**kwargs`` up the class hierarchy."""
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters
        if name in params:
            return True
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return False
    return False


def classifier_net(image_shape: Sequence[int]) -> dict[str, Any]:
    """A small CNN for images of ``image_shape``: one block per halving down to about 2x2, at most 3."""
    height, width = image_shape[-2:]
    blocks = max(1, min(3, min(height, width).bit_length() - 2))  # 8x8: 2 blocks, 16x16 and up: 3
    return {"_target_": "lit_dl.nets.CNN", "channels": [32, 64, 128][:blocks], "dropout": 0.1}


def locate_or_train(
    data: Mapping[str, Any] | L.LightningDataModule,
    cache_path: str | Path,
    max_epochs: int = 5,
    seed: int = 0,
    net: Mapping[str, Any] | None = None,
    accelerator: str = "auto",
) -> Path:
    """The feature classifier at ``cache_path``; trained there first when the file is missing.

    Training uses the same datamodule class and hyperparameters as ``data`` but with
    standardised pixels and every class, a small CNN (:func:`classifier_net`, or ``net``),
    no logger and no checkpoint callback; the checkpoint is written atomically, and its
    test accuracy logged. The global torch random state is left as it was.

    Args:
        data: the datamodule, or its config entry (``_target_`` and arguments).
        cache_path: the checkpoint file.
        max_epochs: training epochs (3-5 reach about 90% test accuracy on Fashion-MNIST).
        seed: seed of the weights and batch order.
        net: ``_target_`` entry of the network instead of the default CNN.
        accelerator: Lightning accelerator.
    """
    from lit_dl.builder import build, import_class
    from lit_dl.checkpoints import CheckpointMetadata
    from lit_dl.tasks import ClassificationTask

    cache_path = Path(cache_path)
    if cache_path.is_file():
        log.info("feature classifier: %s", cache_path)
        return cache_path
    spec = data_spec(data)
    cls = import_class(spec["_target_"], "data", L.LightningDataModule)
    if _accepts(cls, "scale"):
        spec["scale"] = "standardize"
    if _accepts(cls, "exclude_classes"):
        spec["exclude_classes"] = []  # the feature space should know every class
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        datamodule = build(spec, "data", _recursive_=False)
        datamodule.prepare_data()
        datamodule.setup("fit")
        net_spec = dict(net) if net is not None else classifier_net(datamodule.image_shape)
        task = ClassificationTask(
            net=net_spec,
            optimizer={"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 2e-3, "weight_decay": 1e-4},
            data=datamodule.data_spec(),
        )
        trainer = L.Trainer(
            max_epochs=max_epochs,
            accelerator=accelerator,
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            callbacks=[
                CheckpointMetadata(),  # what restoring the classifier from its file alone needs
                TrainingNotice(
                    dataset_name(spec), cache_path, len(getattr(datamodule, "datasets", {}).get("train", ()))
                ),
            ],
        )
        trainer.fit(task, datamodule=datamodule)
        results = trainer.test(task, datamodule=datamodule, verbose=False)
    accuracy = results[0].get("test/accuracy", float("nan"))
    log.info(
        "feature classifier for %s: test accuracy %.4f, cached at %s",
        dataset_name(spec),
        accuracy,
        cache_path,
    )

    cache_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_path.with_name(f".{cache_path.name}.{os.getpid()}.tmp")
    try:
        trainer.save_checkpoint(tmp)
        os.replace(tmp, cache_path)  # readers see no checkpoint or a whole one
    finally:
        tmp.unlink(missing_ok=True)
    return cache_path


# ---------------------------------------------------------------- command
def main(argv: Sequence[str] | None = None) -> Path:
    """``python -m lit_dl.evaluation.feature_classifier data=NAME [data.KEY=...] [out=FILE] [epochs=N]``."""
    from hydra import compose, initialize_config_dir

    from lit_dl.cli import CONFIG_DIR

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = list(sys.argv[1:] if argv is None else argv)
    own = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in args if a.split("=", 1)[0] in OWN_KEYS}
    overrides = [a for a in args if a.split("=", 1)[0] not in OWN_KEYS]
    try:
        try:
            with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
                cfg = compose("train", overrides=overrides)
        except Exception as err:
            raise ConfigError(f"cannot compose the data config: {str(err).splitlines()[0]}") from None
        spec = data_spec(cfg.data)
        out = own.get("out") or feature_classifier_path(None, spec)
        path = locate_or_train(spec, out, max_epochs=int(own.get("epochs", 5)), seed=int(own.get("seed", 0)))
    except LitDLError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
    print(f"feature classifier: {path}")
    return path


__all__ = [
    "FeatureExtractor",
    "TrainingNotice",
    "classifier_net",
    "dataset_name",
    "default_cache_dir",
    "duration",
    "feature_classifier_path",
    "locate_or_train",
    "main",
    "penultimate",
]


if __name__ == "__main__":
    main()
