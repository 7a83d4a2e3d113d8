"""ClassificationPlots: confusion matrix, ROC and precision-recall curves and labelled test images,
written as PNG and sent to loggers (W&B also as charts, checked in a real offline W&B run)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from PIL import Image
from sklearn.metrics import precision_score, recall_score, roc_auc_score

from lit_dl.callbacks import ClassificationPlots
from lit_dl.callbacks import plots as plots_module
from lit_dl.data import TensorBatchDataset, batch_loader
from lit_dl.data.spec import DataSpec
from lit_dl.tasks import ClassificationTask, RegressionTask

N_TEST = 22  # not a multiple of the batch size: the last batch is smaller
BATCH = 8
CNN_NET = {"_target_": "lit_dl.nets.CNN", "channels": [4, 8], "dropout": 0.0}
MLP_NET = {"_target_": "lit_dl.nets.TabularMLP", "hidden_sizes": [8]}
ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.01}
IMAGE_SPEC = {"in_channels": 1, "image_size": [8, 8]}
TABLE_SPEC = {"in_features": 4, "cat_cardinalities": []}
N_BINARY = 200

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings(r"ignore:.*isinstance\(treespec, LeafSpec\).*"),
]


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """Spy on the figure builders: the matrices and image samples the callback plots."""
    seen: dict[str, list[Any]] = {"matrices": [], "samples": [], "curves": []}
    confusion, grid = plots_module.confusion_figure, plots_module.image_grid
    roc = plots_module.roc_figure

    def spy_confusion(matrix: torch.Tensor, names: list[str], threshold: float | None = None) -> Any:
        seen["matrices"].append((matrix.clone(), list(names)))
        return confusion(matrix, names, threshold)

    def spy_roc(curves: Any, point: dict[str, float], threshold: float, positive: str) -> Any:
        seen["curves"].append((curves, dict(point), threshold, positive))
        return roc(curves, point, threshold, positive)

    def spy_grid(samples: list[Any], names: list[str]) -> Any:
        seen["samples"].append(list(samples))
        return grid(samples, names)

    monkeypatch.setattr(plots_module, "confusion_figure", spy_confusion)
    monkeypatch.setattr(plots_module, "image_grid", spy_grid)
    monkeypatch.setattr(plots_module, "roc_figure", spy_roc)
    return seen


def image_classifier(num_classes: int = 3) -> ClassificationTask:
    return ClassificationTask(
        net=CNN_NET,
        optimizer=ADAM,
        data=DataSpec(
            task_type="classification",
            modality="images",
            inputs=IMAGE_SPEC,
            classes=[f"class {i}" for i in range(num_classes)],
        ),
    )


def image_data(num_classes: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(N_TEST, 1, 8, 8, generator=gen), torch.arange(N_TEST) % num_classes


def run_test(
    model: L.LightningModule, dataset: Any, tmp_path: Path, logger: Any = None, **plot_args: Any
) -> L.Trainer:
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=logger if logger is not None else CSVLogger(tmp_path, name="csv"),
        callbacks=[ClassificationPlots(**plot_args)],
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.test(model, dataloaders=batch_loader(dataset, BATCH, shuffle=False), verbose=False)
    return trainer


def expected_confusion(model: ClassificationTask, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        probs = model.predictions(model(images))
    predicted = probs.argmax(dim=1) if probs.ndim == 2 else (probs > 0.5).long()
    k = model.num_classes
    return torch.bincount(labels * k + predicted, minlength=k * k).view(k, k)


def assert_png(path: Path) -> None:
    assert path.is_file(), path
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size[0] > 100 and image.size[1] > 100
        image.verify()


def test_image_classifier_writes_both_plots(tmp_path: Path, recorded: dict[str, list[Any]]) -> None:
    torch.manual_seed(0)
    model = image_classifier()
    images, labels = image_data()
    folder = tmp_path / "plots"
    run_test(model, TensorBatchDataset(images, labels), tmp_path, dirpath=str(folder), max_images=10)

    assert sorted(p.name for p in folder.iterdir()) == ["confusion_matrix.png", "test_predictions.png"]
    assert_png(folder / "confusion_matrix.png")
    assert_png(folder / "test_predictions.png")

    [(matrix, names)] = recorded["matrices"]
    assert names == ["class 0", "class 1", "class 2"]
    assert matrix.shape == (3, 3) and int(matrix.sum()) == N_TEST
    assert matrix.sum(dim=1).tolist() == torch.bincount(labels, minlength=3).tolist()  # rows: true class
    assert torch.equal(matrix, expected_confusion(model, images, labels))

    [samples] = recorded["samples"]
    assert len(samples) == 10  # max_images, taken across the first two batches
    with torch.no_grad():
        predicted = model.eval().predictions(model(images)).argmax(dim=1)
    for i, (image, pred, true) in enumerate(samples):  # the first test images, in order
        assert torch.equal(image, images[i])
        assert (pred, true) == (int(predicted[i]), int(labels[i]))


def test_binary_classifier_confusion_matrix(tmp_path: Path, recorded: dict[str, list[Any]]) -> None:
    torch.manual_seed(1)
    model = image_classifier(num_classes=2)
    images, labels = image_data(num_classes=2, seed=1)
    run_test(model, TensorBatchDataset(images, labels), tmp_path, max_images=0)
    assert_png(tmp_path / "plots" / "confusion_matrix.png")  # default folder: <default_root_dir>/plots
    [(matrix, _)] = recorded["matrices"]
    assert matrix.shape == (2, 2) and int(matrix.sum()) == N_TEST
    assert torch.equal(matrix, expected_confusion(model, images, labels))


def binary_table_case(threshold: float) -> tuple[ClassificationTask, TensorBatchDataset, np.ndarray]:
    """An untrained binary table classifier with wide probabilities, labels that follow them (with
    noise), and the given decision threshold; returns the positive-class probabilities too."""
    torch.manual_seed(0)
    spec = DataSpec(
        task_type="classification", modality="table", inputs=TABLE_SPEC, classes=["stay", "churn"]
    )
    model = ClassificationTask(net=MLP_NET, optimizer=ADAM, data=spec, threshold={"strategy": "f1"})
    model.decision_threshold.fill_(threshold)
    gen = torch.Generator().manual_seed(2)
    x, cats = 6 * torch.randn(N_BINARY, 4, generator=gen), torch.zeros(N_BINARY, 0, dtype=torch.long)
    with torch.no_grad():
        probs = model.eval().predictions(model(x, cats))
    labels = (probs + 0.3 * torch.rand(N_BINARY, generator=gen) > 0.6).long()
    return model, TensorBatchDataset(x, cats, labels), probs.numpy()


def test_binary_classifier_curves_mark_the_decision_threshold(
    tmp_path: Path, recorded: dict[str, list[Any]]
) -> None:
    model, dataset, probs = binary_table_case(threshold=0.35)
    labels = dataset.tensors[-1].numpy()
    run_test(model, dataset, tmp_path)
    folder = tmp_path / "plots"
    assert sorted(p.name for p in folder.iterdir()) == [
        "confusion_matrix.png",
        "pr_curve.png",
        "roc_curve.png",
    ]
    for name in ("confusion_matrix.png", "pr_curve.png", "roc_curve.png"):
        assert_png(folder / name)

    predicted = (probs > 0.35).astype(int)  # the decision threshold's predictions, not 0.5's
    assert predicted.sum() != (probs > 0.5).sum()
    [(matrix, names)] = recorded["matrices"]
    assert names == ["stay", "churn"]
    assert matrix.tolist() == np.bincount(labels * 2 + predicted, minlength=4).reshape(2, 2).tolist()

    [(curves, point, threshold, positive)] = recorded["curves"]
    assert threshold == pytest.approx(0.35) and positive == "churn"
    assert point["recall"] == pytest.approx(recall_score(labels, predicted))
    assert point["precision"] == pytest.approx(precision_score(labels, predicted))
    assert point["fpr"] == pytest.approx(((predicted == 1) & (labels == 0)).sum() / (labels == 0).sum())
    order = np.argsort(curves.fpr, kind="stable")
    grid_auc = np.trapezoid(curves.tpr[order], curves.fpr[order])
    assert grid_auc == pytest.approx(roc_auc_score(labels, probs), abs=0.01)
    assert curves.recall[0] == 1.0 and curves.precision[0] == pytest.approx(labels.mean())  # threshold 0


def test_confusion_figure_and_class_indices() -> None:
    matrix = torch.tensor([[5, 1, 0], [0, 3, 2], [1, 0, 7]])
    figure = plots_module.confusion_figure(matrix, ["a", "b", "c"])
    axes = figure.axes[0]
    texts = [t.get_text() for t in axes.texts]
    assert sorted(int(t) for t in texts) == sorted(matrix.flatten().tolist())
    assert sum(int(t) for t in texts) == 19
    assert "0.789" in axes.get_title()  # 15 of 19 on the diagonal
    assert [t.get_text() for t in axes.get_xticklabels()] == ["a", "b", "c"]
    plots_module.plt.close(figure)

    assert plots_module.class_indices(torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]])).tolist() == [1, 0]
    assert plots_module.class_indices(torch.tensor([0.2, 0.9, 0.51])).tolist() == [0, 1, 1]


def test_tensorboard_receives_the_images(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(tmp_path, name="tb", version="")
    torch.manual_seed(0)
    images, labels = image_data()
    run_test(image_classifier(), TensorBatchDataset(images, labels), tmp_path, logger=logger)

    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0})
    events.Reload()
    assert {"test/confusion_matrix", "test/predictions"} <= set(events.Tags()["images"])
    assert (tmp_path / "plots" / "confusion_matrix.png").is_file()


@pytest.fixture
def offline_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Real W&B, offline, with its settings and caches inside ``tmp_path``."""
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb_home"))
    yield
    wandb.finish()


def test_wandb_gets_the_images_and_charts(
    tmp_path: Path, offline_wandb: None, wandb_offline_run: Callable[[Path], tuple[Path, list[dict]]]
) -> None:
    model, dataset, probs = binary_table_case(threshold=0.4)
    labels = dataset.tensors[-1].numpy()
    logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="lit-dl-test")
    run_test(model, dataset, tmp_path, logger=logger)
    logger.experiment.finish()

    run, records = wandb_offline_run(tmp_path)
    logged: dict[str, Any] = {}
    for record in records:
        if record["type"] == "history":
            logged.update(record["history"]["item"])
    for key in ("test/confusion_matrix", "test/roc_curve", "test/pr_curve"):  # the PNGs, as images
        [filename] = logged[f"{key}.filenames"]
        assert_png(run / "files" / filename)
    panels = {
        key.removeprefix("_wandb.visualize."): value["panel_config"]["panelDefId"]
        for record in records
        if record["type"] == "config"
        for key, value in record["config"]["update"].items()
        if key.startswith("_wandb.visualize.")
    }
    assert panels == {
        "test/confusion_matrix_chart": "wandb/confusion_matrix/v1",
        "test/roc_curve_chart": "wandb/area-under-curve/v0",
        "test/pr_curve_chart": "wandb/area-under-curve/v0",
    }

    def table(key: str) -> dict[str, Any]:
        return json.loads((run / "files" / logged[f"{key}_table.path"]).read_text())

    predicted = (probs > 0.4).astype(int)
    counts = {(a, p): 0 for a in ("stay", "churn") for p in ("stay", "churn")}
    for actual, guess in zip(labels, predicted, strict=True):
        counts[(["stay", "churn"][actual], ["stay", "churn"][guess])] += 1
    confusion = table("test/confusion_matrix_chart")
    assert confusion["columns"] == ["Actual", "Predicted", "nPredictions"]
    assert {(a, p): n for a, p, n in confusion["data"]} == counts
    roc = table("test/roc_curve_chart")
    assert roc["columns"] == ["class", "fpr", "tpr", "threshold"] and len(roc["data"]) == 1001
    fpr, tpr = np.array([row[1] for row in roc["data"]]), np.array([row[2] for row in roc["data"]])
    order = np.argsort(fpr, kind="stable")
    assert np.trapezoid(tpr[order], fpr[order]) == pytest.approx(roc_auc_score(labels, probs), abs=0.01)
    pr = table("test/pr_curve_chart")
    assert pr["columns"] == ["class", "recall", "precision", "threshold"]
    assert {row[0] for row in pr["data"]} == {"churn"}


def test_tabular_classifier_writes_only_the_confusion_matrix(
    tmp_path: Path, recorded: dict[str, list[Any]]
) -> None:
    torch.manual_seed(0)
    spec = DataSpec(
        task_type="classification", modality="table", inputs=TABLE_SPEC, classes=["no", "yes", "maybe"]
    )
    model = ClassificationTask(net=MLP_NET, optimizer=ADAM, data=spec)
    x = torch.randn(N_TEST, 4)
    labels = torch.arange(N_TEST) % 3
    dataset = TensorBatchDataset(x, torch.zeros(N_TEST, 0, dtype=torch.long), labels)
    folder = tmp_path / "out"
    run_test(model, dataset, tmp_path, dirpath=str(folder))
    assert [p.name for p in folder.iterdir()] == ["confusion_matrix.png"]
    assert_png(folder / "confusion_matrix.png")
    [(matrix, names)] = recorded["matrices"]
    assert names == ["no", "yes", "maybe"] and int(matrix.sum()) == N_TEST
    assert recorded["samples"] == []


def test_regression_writes_nothing(tmp_path: Path, recorded: dict[str, list[Any]]) -> None:
    model = RegressionTask(
        net=MLP_NET,
        optimizer=ADAM,
        data=DataSpec(task_type="regression", modality="table", inputs=TABLE_SPEC),
    )
    x = torch.randn(N_TEST, 4)
    dataset = TensorBatchDataset(x, torch.zeros(N_TEST, 0, dtype=torch.long), torch.randn(N_TEST))
    folder = tmp_path / "plots"
    trainer = run_test(model, dataset, tmp_path, dirpath=str(folder))
    assert "test/mse" in trainer.callback_metrics
    assert not folder.exists()
    assert recorded == {"matrices": [], "samples": [], "curves": []}


def test_plots_after_fit_are_those_of_the_test_only(tmp_path: Path, recorded: dict[str, list[Any]]) -> None:
    """Validation during fit draws nothing; each test run draws its own, complete matrix."""
    torch.manual_seed(0)
    images, labels = image_data()
    loader = batch_loader(TensorBatchDataset(images, labels), BATCH, shuffle=False)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        callbacks=[ClassificationPlots(dirpath=str(tmp_path / "p"))],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    model = image_classifier()
    trainer.fit(model, train_dataloaders=loader, val_dataloaders=loader)
    assert recorded["matrices"] == [] and not (tmp_path / "p").exists()
    trainer.test(model, dataloaders=loader, verbose=False)
    trainer.test(model, dataloaders=loader, verbose=False)
    assert [int(m.sum()) for m, _ in recorded["matrices"]] == [N_TEST, N_TEST]  # reset between runs
