"""The decision threshold of binary classifiers: chosen on validation, kept in checkpoints, used by
the test metrics, ``predict`` and ``eval``; old checkpoints without it still load."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score
from torchmetrics.classification import BinaryPrecisionRecallCurve

from lit_dl.checkpoints import restore
from lit_dl.cli import main
from lit_dl.data import TensorBatchDataset, batch_loader
from lit_dl.data.churn import make_churn_frame
from lit_dl.data.spec import DataSpec
from lit_dl.errors import ConfigError
from lit_dl.tasks import ClassificationTask
from lit_dl.tasks.classification import THRESHOLD_GRID, choose_threshold, set_decision_threshold

NET = {"_target_": "lit_dl.nets.TabularMLP", "hidden_sizes": [8], "batch_norm": False}
ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.05}
LEGACY_CHURN = Path(__file__).parents[1] / "fixtures" / "checkpoints" / "v0.1.0" / "churn_mlp.ckpt"
GRID = torch.linspace(0, 1, THRESHOLD_GRID)

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings(r"ignore:.*isinstance\(treespec, LeafSpec\).*"),
    pytest.mark.filterwarnings("ignore:.*does not have many workers.*"),
]


def classifier(threshold: dict[str, Any] | None, classes: int = 2) -> ClassificationTask:
    spec = DataSpec(
        task_type="classification",
        modality="table",
        inputs={"in_features": 3, "cat_cardinalities": []},
        classes=[f"c{i}" for i in range(classes)],
    )
    return ClassificationTask(net=NET, optimizer=ADAM, data=spec, threshold=threshold)


def noisy_binary(n: int, seed: int) -> TensorBatchDataset:
    """About a quarter positive, overlapping classes: the best threshold is not 0.5."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=gen)
    y = (x[:, 0] + 0.8 * torch.randn(n, generator=gen) > 0.7).long()
    return TensorBatchDataset(x, torch.zeros(n, 0, dtype=torch.long), y)


def positive_probabilities(model: ClassificationTask, data: TensorBatchDataset) -> torch.Tensor:
    x, cats, _ = data.tensors
    model.eval()
    with torch.no_grad():
        return model.predictions(model(x, cats))


def grid_counts(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, np.ndarray]:
    """Precision, recall and F1 of ``probs >= t`` for every grid threshold, counted directly."""
    predicted = probs[:, None] >= GRID[None, :]
    positive = labels[:, None].bool()
    tp = (predicted & positive).sum(0).double()
    fp = (predicted & ~positive).sum(0).double()
    fn = (~predicted & positive).sum(0).double()
    precision = torch.where(tp + fp > 0, tp / (tp + fp), torch.nan)
    recall = tp / (tp + fn)
    return {
        "precision": precision.numpy(),
        "recall": recall.numpy(),
        "f1": (2 * tp / (2 * tp + fp + fn)).numpy(),
    }


def expected_choice(probs: torch.Tensor, labels: torch.Tensor, strategy: str, target: float | None) -> float:
    """The grid threshold ``strategy`` asks for, by brute force (only thresholds strictly between 0 and 1;
    ties: the middle one of the tied thresholds)."""
    counts = grid_counts(probs, labels)
    precision = np.nan_to_num(counts["precision"], nan=-1.0)
    if strategy == "f1":
        score = counts["f1"]
    elif strategy == "recall":
        score = np.where(counts["recall"] >= target, precision, -2.0)
    else:
        score = np.where(precision >= target, counts["recall"], -2.0)
    inside = (GRID > 0) & (GRID < 1)
    score, grid = score[inside], GRID[inside]
    tied = np.flatnonzero(score == score.max())
    return float(grid[tied[len(tied) // 2]])


def curve(probs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    metric = BinaryPrecisionRecallCurve(thresholds=THRESHOLD_GRID)
    metric.update(probs, labels)
    return metric.compute()


@pytest.mark.parametrize(("strategy", "target"), [("f1", None), ("recall", 0.8), ("precision", 0.6)])
def test_choose_threshold_meets_the_target_with_the_best_other_metric(
    strategy: str, target: float | None
) -> None:
    gen = torch.Generator().manual_seed(3)
    labels = (torch.rand(2000, generator=gen) < 0.3).long()
    probs = torch.sigmoid(1.5 * labels + torch.randn(2000, generator=gen) - 1.0)
    choice = choose_threshold(*curve(probs, labels), strategy, target)
    assert choice is not None and choice.reached
    assert choice.threshold == pytest.approx(expected_choice(probs, labels, strategy, target), abs=1e-6)
    chosen = probs >= choice.threshold
    tp = int((chosen & labels.bool()).sum())
    assert choice.recall == pytest.approx(tp / int(labels.sum()))
    assert choice.precision == pytest.approx(tp / int(chosen.sum()))
    if strategy == "recall":
        assert choice.recall >= 0.8
    if strategy == "precision":
        assert choice.precision >= 0.6


def test_choose_threshold_edge_cases() -> None:
    # Perfectly separated: every threshold in (0.2, 0.8] has F1 1; ties go to the middle one.
    probs, labels = torch.tensor([0.1, 0.2, 0.8, 0.9]), torch.tensor([0, 0, 1, 1])
    assert choose_threshold(*curve(probs, labels), "f1", None).threshold == pytest.approx(0.5, abs=1e-3)
    # Saturated sigmoids (exactly 1.0 in float32): never a threshold of 1, which calls no row positive.
    probs, labels = torch.tensor([1.0, 1.0, 1.0, 0.2, 0.1, 0.3]), torch.tensor([1, 1, 1, 0, 0, 0])
    for strategy, target in (("f1", None), ("precision", 0.9), ("recall", 0.8)):
        choice = choose_threshold(*curve(probs, labels), strategy, target)
        assert choice is not None and 0.3 < choice.threshold < 1.0
        assert int((probs > choice.threshold).sum()) == 3
    # A precision nothing reaches: the best precision there is, flagged.
    probs, labels = torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([0, 1, 0, 1])
    choice = choose_threshold(*curve(probs, labels), "precision", 0.9)
    assert choice is not None and not choice.reached and choice.precision == pytest.approx(0.5)
    # No positive example: nothing to choose.
    assert choose_threshold(*curve(torch.rand(8), torch.zeros(8, dtype=torch.long)), "f1", None) is None


@pytest.mark.parametrize(
    ("threshold", "message"),
    [
        (
            {"strategy": "youden"},
            "model.threshold.strategy must be f1, recall, precision or fixed, got 'youden'",
        ),
        ({"strategy": "recall"}, "model.threshold.strategy=recall needs model.threshold.target in (0, 1)"),
        ({"strategy": "precision", "target": 1.5}, "model.threshold.target in (0, 1)"),
        ({"strategy": "fixed", "target": "high"}, "(the threshold itself), got 'high'"),
        ({"strategy": "f1", "target": 0.3}, "with strategy=f1 leave it null"),
        ({"strategy": "f1", "trget": 0.3}, "model.threshold.trget is not a key of model.threshold"),
        ("f1", "model.threshold must be {strategy:"),
    ],
)
def test_bad_threshold_entries_are_one_line_errors(threshold: Any, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        classifier(threshold)
    assert message in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(ConfigError):  # multi-class models ignore the entry, but not its typos
        classifier(threshold, classes=3)


def test_train_cli_names_the_bad_key(fail_cli: Callable[..., str], tmp_path: Path) -> None:
    line = fail_cli(
        "train", "data.n_rows=300", "model.threshold.strategy=recall", f"hydra.run.dir={tmp_path / 'r'}"
    )
    assert "model.threshold.strategy=recall needs model.threshold.target in (0, 1)" in line


def test_every_checkpoint_carries_the_threshold_of_its_own_validation(tmp_path: Path) -> None:
    torch.manual_seed(0)
    train, val = noisy_binary(256, seed=1), noisy_binary(300, seed=2)
    model = classifier({"strategy": "recall", "target": 0.8})
    epochs = ModelCheckpoint(
        dirpath=tmp_path,
        filename="e{epoch}",
        save_top_k=-1,
        monitor="val/loss",
        auto_insert_metric_name=False,
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=3,
        logger=False,
        callbacks=[epochs],
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=1,
    )
    trainer.fit(model, batch_loader(train, 64, shuffle=True), batch_loader(val, 64, shuffle=False))
    assert float(trainer.callback_metrics["val/threshold"]) == pytest.approx(float(model.decision_threshold))

    chosen = []
    for epoch in range(3):
        checkpoint = torch.load(tmp_path / f"e{epoch}.ckpt", weights_only=True)
        stored = checkpoint["state_dict"]["decision_threshold"]
        assert stored.ndim == 0 and stored.dtype == torch.float32
        weights = classifier({"strategy": "recall", "target": 0.8})
        weights.load_state_dict(checkpoint["state_dict"])
        probs = positive_probabilities(weights, val)
        expected = expected_choice(probs, val.tensors[-1], "recall", 0.8)
        assert float(stored) == pytest.approx(expected, abs=1e-6), epoch
        chosen.append(float(stored))
    assert chosen[-1] == pytest.approx(float(model.decision_threshold))
    assert all(0.0 < t < 0.5 for t in chosen)  # a quarter positive: reaching 80% recall needs < 0.5


def test_test_metrics_at_the_threshold_and_at_one_half() -> None:
    torch.manual_seed(0)
    model = classifier({"strategy": "f1"})
    model.decision_threshold.fill_(0.3)
    data = noisy_binary(150, seed=5)
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.test(model, batch_loader(data, 64, shuffle=False), verbose=False)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}

    probs, labels = positive_probabilities(model, data).numpy(), data.tensors[-1].numpy()
    for threshold, suffix in ((0.5, ""), (0.3, "_at_threshold")):
        predicted = (probs > threshold).astype(int)
        assert metrics[f"test/accuracy{suffix}"] == pytest.approx(accuracy_score(labels, predicted), abs=1e-6)
        assert metrics[f"test/recall{suffix}"] == pytest.approx(recall_score(labels, predicted), abs=1e-6)
        assert metrics[f"test/f1{suffix}"] == pytest.approx(f1_score(labels, predicted), abs=1e-6)
        assert metrics[f"test/precision{suffix}"] == pytest.approx(
            precision_score(labels, predicted, zero_division=0), abs=1e-6
        )
    assert metrics["test/threshold"] == pytest.approx(0.3)


def test_fixed_threshold_and_prediction_columns() -> None:
    model = classifier({"strategy": "fixed", "target": 0.25})
    assert float(model.decision_threshold) == 0.25
    assert model.threshold_curve is None  # nothing to choose: no validation counts kept
    outputs = torch.tensor([[0.8, 0.2], [0.7, 0.3], [0.4, 0.6]])
    columns = model.prediction_columns(outputs)
    assert list(columns) == ["prob_c0", "prob_c1", "prediction"]
    assert columns["prediction"].tolist() == ["c0", "c1", "c1"]  # 0.3 > 0.25 although c0 is likelier

    multi = classifier({"strategy": "recall", "target": 0.9}, classes=3)
    assert not hasattr(multi, "decision_threshold") and "decision_threshold" not in multi.state_dict()
    outputs = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.3, 0.6]])
    assert multi.prediction_columns(outputs)["prediction"].tolist() == ["c0", "c2"]
    with pytest.raises(ConfigError, match=r"threshold= applies to binary classifiers.*with 3 classes"):
        set_decision_threshold(multi, 0.4)
    with pytest.raises(ConfigError, match=r"threshold must be a number in \(0, 1\)"):
        set_decision_threshold(model, 1.0)


def test_weights_without_the_threshold_still_load() -> None:
    model = classifier({"strategy": "f1"})
    model.decision_threshold.fill_(0.7)
    old = {k: v for k, v in model.state_dict().items() if k != "decision_threshold"}
    model.load_state_dict(old)  # strict, as checkpoints.restore loads
    assert float(model.decision_threshold) == 0.5
    checkpoint = {"state_dict": dict(old)}
    model.on_load_checkpoint(checkpoint)  # a resumed run: checked, then given 0.5
    assert float(checkpoint["state_dict"]["decision_threshold"]) == 0.5

    legacy, _ = restore(LEGACY_CHURN)  # lit_dl 0.1.0, before thresholds existed
    assert float(legacy.decision_threshold) == 0.5
    assert legacy.hparams.get("threshold") is None


def test_train_eval_predict_use_the_chosen_threshold(tmp_path: Path) -> None:
    run = tmp_path / "train"
    common = ["callbacks.progress_bar=null", "callbacks.model_summary=null", "callbacks.plots=null"]
    main(
        [
            "train",
            "data.n_rows=600",
            "trainer.max_epochs=1",
            "model.threshold.strategy=recall",
            "model.threshold.target=0.8",
            *common,
            f"hydra.run.dir={run}",
        ]
    )
    metrics = json.loads((run / "metrics.json").read_text())
    best = run / "checkpoints" / "best.ckpt"
    threshold = float(torch.load(best, weights_only=True)["state_dict"]["decision_threshold"])
    assert threshold != 0.5 and metrics["test/threshold"] == pytest.approx(threshold)
    for name in ("accuracy", "precision", "recall", "f1"):
        assert 0.0 <= metrics[f"test/{name}_at_threshold"] <= 1.0 and f"test/{name}" in metrics

    eval_dir = tmp_path / "eval"
    main(
        [
            "eval",
            f"ckpt_path={best}",
            "threshold=0.9",
            "callbacks.progress_bar=null",
            f"hydra.run.dir={eval_dir}",
        ]
    )
    assert {"roc_curve.png", "pr_curve.png"} <= {p.name for p in (eval_dir / "plots").iterdir()}
    evaluated = json.loads((eval_dir / "metrics.json").read_text())
    assert evaluated["test/threshold"] == pytest.approx(0.9)
    assert evaluated["test/recall_at_threshold"] <= metrics["test/recall_at_threshold"]
    assert evaluated["test/auroc"] == pytest.approx(metrics["test/auroc"], abs=1e-6)

    source = tmp_path / "rows.csv"
    make_churn_frame(80, seed=3).drop(columns=["churn"]).to_csv(source, index=False)
    output = tmp_path / "predictions.csv"
    main(
        [
            "predict",
            f"ckpt_path={best}",
            f"input={source}",
            f"output={output}",
            f"hydra.run.dir={tmp_path / 'p'}",
        ]
    )
    frame = pd.read_csv(output)
    assert frame["prediction"].tolist() == np.where(frame["prob_Yes"] > threshold, "Yes", "No").tolist()
    assert (frame["prob_Yes"] > 0.5).sum() < (frame["prob_Yes"] > threshold).sum()  # the threshold mattered
