"""ClassificationPlots: confusion matrix and labelled test images, written as PNG and sent to loggers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from PIL import Image

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

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings(r"ignore:.*isinstance\(treespec, LeafSpec\).*"),
]


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """Spy on the figure builders: the matrices and image samples the callback plots."""
    seen: dict[str, list[Any]] = {"matrices": [], "samples": []}
    confusion, grid = plots_module.confusion_figure, plots_module.image_grid

    def spy_confusion(matrix: torch.Tensor, names: list[str]) -> Any:
        seen["matrices"].append((matrix.clone(), list(names)))
        return confusion(matrix, names)

    def spy_grid(samples: list[Any], names: list[str]) -> Any:
        seen["samples"].append(list(samples))
        return grid(samples, names)

    monkeypatch.setattr(plots_module, "confusion_figure", spy_confusion)
    monkeypatch.setattr(plots_module, "image_grid", spy_grid)
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
    run_test(model, TensorBatchDataset(images, labels), tmp_path)
    assert_png(tmp_path / "plots" / "confusion_matrix.png")  # default folder: <default_root_dir>/plots
    [(matrix, _)] = recorded["matrices"]
    assert matrix.shape == (2, 2) and int(matrix.sum()) == N_TEST
    assert torch.equal(matrix, expected_confusion(model, images, labels))


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


def test_tensorboard_receives_the_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(tmp_path, name="tb", version="")
    calls: list[str] = []
    add_figure = logger.experiment.add_figure

    def spy(tag: str, figure: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(tag)
        return add_figure(tag, figure, *args, **kwargs)

    monkeypatch.setattr(logger.experiment, "add_figure", spy)
    torch.manual_seed(0)
    images, labels = image_data()
    run_test(image_classifier(), TensorBatchDataset(images, labels), tmp_path, logger=logger)

    assert calls == ["test/confusion_matrix", "test/predictions"]
    event_files = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert event_files
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0})
    events.Reload()
    assert {"test/confusion_matrix", "test/predictions"} <= set(events.Tags()["images"])
    assert (tmp_path / "plots" / "confusion_matrix.png").is_file()


def test_wandb_loggers_get_the_saved_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeWandb:
        def __init__(self) -> None:
            self.images: list[dict[str, Any]] = []

        def log_image(self, **kwargs: Any) -> None:
            self.images.append(kwargs)

    class FakeTrainer:
        global_step = 17

        def __init__(self, loggers: list[Any]) -> None:
            self.loggers = loggers

    monkeypatch.setattr(plots_module, "WandbLogger", FakeWandb)
    wandb, csv = FakeWandb(), CSVLogger(tmp_path)
    figure = plots_module.confusion_figure(torch.eye(2, dtype=torch.long), ["x", "y"])
    path = tmp_path / "cm.png"
    figure.savefig(path)
    plots_module.log_figure(FakeTrainer([csv, wandb]), "test/confusion_matrix", figure, path)  # type: ignore[arg-type]
    plots_module.plt.close(figure)
    assert wandb.images == [{"key": "test/confusion_matrix", "images": [str(path)], "step": 17}]


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
    assert recorded == {"matrices": [], "samples": []}


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
