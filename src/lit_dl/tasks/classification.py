"""Classification: binary (one logit, BCE) and multi-class (K logits, cross-entropy).

Binary classifiers also carry a decision threshold (the ``decision_threshold`` buffer): the
positive-class probability above which a row is predicted positive. It is chosen on the
validation set at the end of every validation epoch of training (``model.threshold``), so each
checkpoint holds the threshold chosen on its own validation, and ``lit-dl predict`` and the
``*_at_threshold`` test metrics use it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    AUROC,
    Accuracy,
    AveragePrecision,
    BinaryAccuracy,
    BinaryF1Score,
    BinaryPrecision,
    BinaryPrecisionRecallCurve,
    BinaryRecall,
    F1Score,
    Precision,
    Recall,
)

from lit_dl.data.spec import DataSpec
from lit_dl.errors import ConfigError
from lit_dl.tasks.base import softmax_or_sigmoid
from lit_dl.tasks.supervised import SupervisedTask

log = logging.getLogger(__name__)

THRESHOLD_STRATEGIES = ("f1", "recall", "precision", "fixed")
# Candidate thresholds 0, 0.001, ..., 1: torchmetrics then keeps one 2x2 count per candidate instead
# of every validation probability (bounded memory, exact under DDP).
THRESHOLD_GRID = 1001
DEFAULT_THRESHOLD = 0.5
THRESHOLD_BUFFER = "decision_threshold"
# What model.threshold.target means for each strategy that needs one.
TARGET_MEANING = {
    "recall": "the validation recall to reach",
    "precision": "the validation precision to reach",
    "fixed": "the threshold itself",
}


class ThresholdChoice(NamedTuple):
    """A threshold chosen on validation counts, with its validation precision and recall."""

    threshold: float
    precision: float
    recall: float
    reached: bool  # False: the target precision was out of reach; the best precision was taken


def threshold_setting(
    node: Mapping[str, Any] | None, key: str = "model.threshold"
) -> tuple[str, float | None]:
    """``(strategy, target)`` of a ``model.threshold`` entry, checked; null means the fixed 0.5."""
    if node is None:
        return "fixed", DEFAULT_THRESHOLD
    if not isinstance(node, Mapping):
        raise ConfigError(
            f"{key} must be {{strategy: f1|recall|precision|fixed, target: ...}} or null, got {node!r}"
        )
    unknown = sorted(str(k) for k in node if k not in ("strategy", "target"))
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]} is not a key of {key} (it has strategy and target)")
    strategy, target = node.get("strategy", "f1"), node.get("target")
    if strategy not in THRESHOLD_STRATEGIES:
        raise ConfigError(f"{key}.strategy must be f1, recall, precision or fixed, got {strategy!r}")
    if strategy == "f1":
        if target is not None:
            raise ConfigError(
                f"{key}.target is for strategy recall, precision or fixed; with strategy=f1 leave it null"
            )
        return strategy, None
    if isinstance(target, bool) or not isinstance(target, int | float) or not 0 < target < 1:
        raise ConfigError(
            f"{key}.strategy={strategy} needs {key}.target in (0, 1) ({TARGET_MEANING[strategy]}), "
            f"got {target!r}"
        )
    return strategy, float(target)


def _middle_argmax(values: Tensor) -> int:
    """Index of the largest value; on ties (a plateau of thresholds that score the same) the middle
    one, the threshold farthest from both ends of the plateau, so new data near its edges is not
    decided by how the validation set happened to fall."""
    best = torch.nonzero(values == values.max()).flatten()
    return int(best[len(best) // 2])


def choose_threshold(
    precision: Tensor, recall: Tensor, thresholds: Tensor, strategy: str, target: float | None
) -> ThresholdChoice | None:
    """Pick a threshold from a precision-recall curve on a threshold grid (torchmetrics'
    ``BinaryPrecisionRecallCurve(thresholds=...)`` output; its appended end point is ignored).

    - ``f1``: the highest F1;
    - ``recall``: among thresholds whose recall reaches ``target``, the best precision;
    - ``precision``: among thresholds whose precision reaches ``target``, the best recall; if none
      does, the best precision (``reached=False``).

    Only thresholds strictly between 0 and 1 compete: a sigmoid saturates to exactly 1.0 in float32,
    and a threshold of 1 (or 0) would then call no row (every row) positive. Ties go to the middle
    of the tied thresholds. None when the curve is undefined (no positive example).
    """
    inside = (thresholds > 0) & (thresholds < 1)
    precision, recall = (
        precision[: len(thresholds)][inside].double(),
        recall[: len(thresholds)][inside].double(),
    )
    thresholds = thresholds[inside]
    if not len(thresholds) or not torch.isfinite(recall).any():
        return None
    reached = True
    if strategy == "f1":
        f1 = torch.nan_to_num(2 * precision * recall / (precision + recall), nan=-1.0)
        index = _middle_argmax(f1)
    elif strategy == "recall":
        assert target is not None
        meets = torch.nan_to_num(recall, nan=-1.0) >= target
        index = _middle_argmax(torch.where(meets, torch.nan_to_num(precision, nan=-1.0), -2.0))
    elif strategy == "precision":
        assert target is not None
        best = torch.nan_to_num(precision, nan=-1.0)
        meets = best >= target
        if meets.any():
            index = _middle_argmax(torch.where(meets, torch.nan_to_num(recall, nan=-1.0), -2.0))
        else:
            index, reached = _middle_argmax(best), False
    else:
        raise ValueError(f"no threshold to choose for strategy {strategy!r}")
    return ThresholdChoice(float(thresholds[index]), float(precision[index]), float(recall[index]), reached)


def set_decision_threshold(model: Any, value: Any, key: str = "threshold") -> None:
    """Make a restored binary classifier predict with ``value`` instead of its checkpoint's threshold
    (``lit-dl eval/predict threshold=...``)."""
    if not isinstance(model, ClassificationTask) or not model.is_binary:
        raise ConfigError(
            f"{key}= applies to binary classifiers; the checkpoint holds a {type(model).__name__}"
            + (f" with {model.num_classes} classes" if isinstance(model, ClassificationTask) else "")
            + f": leave {key}=null"
        )
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise ConfigError(f"{key} must be a number in (0, 1) (the positive-class probability), got {value!r}")
    model.decision_threshold.fill_(float(value))


class ClassificationTask(SupervisedTask):
    """Classify inputs into the data's classes (``data_spec.classes``).

    Binary problems use one logit and ``BCEWithLogitsLoss``; multi-class problems use
    cross-entropy. A ``model.loss`` entry replaces either; it receives ``(logits (B,), float
    targets (B,))`` for two classes and ``(logits (B, K), class indices (B,))`` otherwise.
    Metrics: accuracy, precision, recall, F1 (macro for multi-class), AUROC and average
    precision.

    Binary problems predict positive when the positive-class probability exceeds the
    ``decision_threshold`` buffer (0.5 until chosen), which ``threshold`` chooses on the
    validation set after every validation epoch of training; the test reports accuracy,
    precision, recall and F1 at 0.5 under their own names and at the chosen threshold as
    ``test/<name>_at_threshold``, with ``test/threshold``.

    Args:
        class_weights: None, ``balanced`` (inverse class frequency) or one weight per class
            (for the default loss).
        label_smoothing: cross-entropy label smoothing (multi-class, default loss).
        threshold: ``{strategy, target}``: ``f1`` (the best validation F1), ``recall`` or
            ``precision`` (reach ``target`` on validation, best of the other), ``fixed``
            (``target`` is the threshold); None: 0.5. Multi-class problems ignore it.
        **kwargs: see :class:`~lit_dl.tasks.supervised.SupervisedTask`.
    """

    task_type = "classification"

    def __init__(
        self,
        net: dict[str, Any],
        optimizer: dict[str, Any],
        class_weights: str | list[float] | None = None,
        label_smoothing: float = 0.0,
        threshold: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(net, optimizer, **kwargs)

    @property
    def num_classes(self) -> int:
        assert self.data_spec is not None
        return self.data_spec.num_classes

    @property
    def is_binary(self) -> bool:
        """Two classes: one logit and a decision threshold."""
        return self.num_classes == 2

    def check_data(self, spec: DataSpec | None) -> None:
        super().check_data(spec)
        assert spec is not None
        if spec.num_classes < 2:
            raise ConfigError(
                f"a classifier needs at least 2 classes, the data has {spec.classes}: give it labelled "
                "examples of another class (images: one sub-folder of data.root per class)"
            )
        if spec.anomaly_classes:
            raise ConfigError(
                "data.exclude_classes is for generative models (a VAE scores the held-out classes as "
                f"anomalies); {type(self).__name__} is a classifier: set data.exclude_classes=[]"
            )
        if self.hparams.get("loss") and self.hparams.get("class_weights") is not None:
            raise ConfigError(
                "model.class_weights applies to the default loss; with model.loss set, leave it null"
            )
        threshold_setting(self.hparams.get("threshold"))  # refuse a bad entry, also where it is unused

    def output_size(self) -> int:
        return 1 if self.num_classes == 2 else self.num_classes

    def configure_models(self) -> None:
        super().configure_models()
        if not self.is_binary:
            return
        strategy, target = threshold_setting(self.hparams.get("threshold"))
        start = target if strategy == "fixed" and target is not None else DEFAULT_THRESHOLD
        # A buffer: saved in every checkpoint (the best one carries the threshold chosen on its own
        # validation) and read by `lit-dl export` as model.decision_threshold.
        self.register_buffer(THRESHOLD_BUFFER, torch.tensor(start, dtype=torch.float32))
        self.register_load_state_dict_pre_hook(_fill_missing_threshold)

    def class_weight_tensor(self) -> Tensor | None:
        spec, counts = self.hparams.get("class_weights"), self.data_spec.class_counts
        if spec is None:
            return None
        if spec == "balanced":
            if not counts:
                raise ConfigError("model.class_weights=balanced needs class counts from the datamodule")
            counts_t = torch.tensor(counts, dtype=torch.float32).clamp_min(1)
            return counts_t.sum() / (len(counts) * counts_t)
        if isinstance(spec, str) or len(spec) != self.num_classes:
            raise ConfigError(
                f"model.class_weights must be null, 'balanced' or {self.num_classes} numbers, got {spec!r}"
            )
        return torch.tensor(spec, dtype=torch.float32)

    def default_loss(self) -> nn.Module:
        weights = self.class_weight_tensor()
        if self.num_classes == 2:
            return nn.BCEWithLogitsLoss(pos_weight=None if weights is None else weights[1:] / weights[0])
        return nn.CrossEntropyLoss(weight=weights, label_smoothing=float(self.hparams.label_smoothing))

    def default_metrics(self) -> MetricCollection:
        if self.num_classes == 2:
            args: dict[str, Any] = {"task": "binary"}
        else:
            args = {"task": "multiclass", "num_classes": self.num_classes, "average": "macro"}
        return MetricCollection(
            {
                "accuracy": Accuracy(**{**args, "average": "micro"} if self.num_classes > 2 else args),
                "precision": Precision(**args),
                "recall": Recall(**args),
                "f1": F1Score(**args),
                "auroc": AUROC(**args),
                "average_precision": AveragePrecision(**args),
            }
        )

    def configure_metrics(self) -> None:
        super().configure_metrics()
        if not self.is_binary:
            return
        strategy, _ = threshold_setting(self.hparams.get("threshold"))
        # Validation counts per candidate threshold, from which the threshold is chosen.
        self.threshold_curve = (
            BinaryPrecisionRecallCurve(thresholds=THRESHOLD_GRID) if strategy != "fixed" else None
        )
        self.test_threshold_metrics = MetricCollection(
            {
                "accuracy": BinaryAccuracy(),
                "precision": BinaryPrecision(),
                "recall": BinaryRecall(),
                "f1": BinaryF1Score(),
            }
        ).clone(prefix="test/", postfix="_at_threshold")
        self.threshold_warnings: set[str] = set()  # each said once per run

    def decide(self, positive_probability: Tensor) -> Tensor:
        """Predicted class (0/1) of positive-class probabilities at the decision threshold."""
        # ">" as torchmetrics' binary metrics at their 0.5, so *_at_threshold equals them at 0.5.
        return (positive_probability > self.decision_threshold.float()).long()

    def train_metric_names(self, metrics: MetricCollection) -> list[str]:
        # AUROC and average precision keep every prediction of the epoch: too costly for training.
        cheap = [n for n in ("accuracy", "f1") if n in metrics]
        return cheap if cheap else super().train_metric_names(metrics)

    def compute_loss(self, output: Tensor, target: Tensor) -> Tensor:
        if self.num_classes == 2:
            return self.criterion(output.squeeze(-1), target.to(output.dtype))
        return self.criterion(output, target)

    def predict_output(self, output: Tensor) -> Tensor:
        """Class probabilities ``(B, K)``, also for binary problems."""
        return softmax_or_sigmoid(output)

    def predictions(self, output: Tensor) -> Tensor:
        probs = softmax_or_sigmoid(output)
        # Binary torchmetrics want the positive-class probability (B,), multi-class the matrix (B, K).
        return probs[:, 1] if self.num_classes == 2 else probs

    # ------------------------------------------------------------ decision threshold
    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        _, predictions = self.shared_step(batch, "val")
        if self.is_binary and self.threshold_curve is not None:
            self.threshold_curve.update(predictions, self.split_batch(batch)[1].long())

    def on_validation_epoch_end(self) -> None:
        """Choose the decision threshold on this validation epoch (in training, after the sanity check)."""
        super().on_validation_epoch_end()
        if not self.is_binary or self.threshold_curve is None:
            return
        fitting = self.trainer.state.fn == TrainerFn.FITTING and not self.trainer.sanity_checking
        if fitting:
            strategy, target = threshold_setting(self.hparams.get("threshold"))
            precision, recall, thresholds = self.threshold_curve.compute()  # every rank takes part
            choice = choose_threshold(precision, recall, thresholds, strategy, target)
            if choice is None:
                self._warn_once("no positive example in the validation set: the decision threshold stays")
            else:
                if not choice.reached:
                    self._warn_once(
                        f"no threshold reaches validation precision {target} (the best is "
                        f"{choice.precision:.3f}): the decision threshold is that of the best precision"
                    )
                self.decision_threshold.fill_(choice.threshold)
            self.log("val/threshold", self.decision_threshold.float(), sync_dist=True)
        self.threshold_curve.reset()

    def _warn_once(self, message: str) -> None:
        if message not in self.threshold_warnings:
            self.threshold_warnings.add(message)
            if self.trainer.is_global_zero:
                log.warning(message)

    def test_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> dict[str, Tensor]:
        outputs = super().test_step(batch, batch_idx)
        if self.is_binary:
            target = self.split_batch(batch)[1]
            self.test_threshold_metrics.update(self.decide(outputs["predictions"]), target.long())
            self.log_epoch_metrics("test", self.test_threshold_metrics)
        return outputs

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        if self.is_binary:
            self.log("test/threshold", self.decision_threshold.float(), sync_dist=True)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Checkpoints written before the decision threshold existed resume with 0.5."""
        if self.is_binary and isinstance(checkpoint.get("state_dict"), dict):
            _fill_missing_threshold(self, checkpoint["state_dict"], "")
        super().on_load_checkpoint(checkpoint)

    # ------------------------------------------------------------ prediction
    def prediction_columns(self, outputs: Tensor) -> dict[str, Any]:
        """``prob_<class>`` for every class, then the predicted class as ``prediction``: the most
        probable one, or for two classes the positive one when its probability exceeds the
        decision threshold."""
        classes = list(self.data_spec.classes or [])
        columns: dict[str, Any] = {
            f"prob_{name}": outputs[:, i].float().numpy() for i, name in enumerate(classes)
        }
        if self.is_binary:
            predicted = self.decide(outputs[:, 1].float().to(self.decision_threshold.device)).cpu()
        else:
            predicted = outputs.argmax(dim=1)
        columns["prediction"] = np.asarray(classes, dtype=object)[predicted.numpy()]
        return columns


def _fill_missing_threshold(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """Load-state-dict pre-hook: weights saved before the decision threshold existed get 0.5."""
    key = prefix + THRESHOLD_BUFFER
    if key not in state_dict:
        state_dict[key] = torch.tensor(DEFAULT_THRESHOLD, dtype=torch.float32)
