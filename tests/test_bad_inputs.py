"""Bad inputs a new user gives: each is one ``error:`` line naming the fix, exit code 2, no traceback.

A table of cases over tables, images, series, text, checkpoints, outputs, config and run folders,
each run through the real CLI entry point on tiny inputs made in ``tmp_path``. Every case also
checks that no file of the user's (the inputs, the trained runs it reads) was changed.
Most cases fail before training starts; the few that train use a handful of batches.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from lit_dl.cli import main
from lit_dl.data.churn import make_churn_frame


def _shared_helpers():
    """tests/conftest.py's table writers (``import conftest`` finds whichever conftest pytest loaded last)."""
    path = Path(__file__).parent / "conftest.py"
    spec = importlib.util.spec_from_file_location("lit_dl_tests_conftest", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_messy_frame, module.write_frame


make_messy_frame, write_frame = _shared_helpers()

pytestmark = pytest.mark.usefixtures("one_thread")

QUIET = ["callbacks.progress_bar=null", "callbacks.model_summary=null"]


# ---------------------------------------------------------------------------------------- inputs
def table(tmp: Path) -> None:
    """``t.csv``: the messy customer table (300 rows, target ``churn``, id ``customer_id``)."""
    write_frame(make_messy_frame(), tmp / "t.csv")


def write(name: str, content: str | bytes) -> Callable[[Path], None]:
    def make(tmp: Path) -> None:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())

    return make


def frame_file(name: str, make_frame: Callable[[], pd.DataFrame]) -> Callable[[Path], None]:
    def make(tmp: Path) -> None:
        write_frame(make_frame(), tmp / name)

    return make


def messy(**changes: object) -> Callable[[], pd.DataFrame]:
    def make() -> pd.DataFrame:
        return make_messy_frame().assign(**changes)

    return make


def duplicate_columns() -> str:
    frame = make_messy_frame()[["tenure", "age", "churn"]]
    return frame.to_csv(index=False).replace("tenure,age,churn", "tenure, tenure ,churn", 1)


def series(stamps: list[str] | None = None, steps: int = 120) -> Callable[[Path], None]:
    """``s.csv``: a daily series ``date``, ``y`` (``stamps`` replace the dates)."""

    def make(tmp: Path) -> None:
        t = np.arange(steps)
        dates = pd.date_range("2020-01-01", periods=steps, freq="D").strftime("%Y-%m-%d").tolist()
        frame = pd.DataFrame({"date": stamps or dates, "y": 10 + np.sin(t / 7) + 0.01 * t})
        frame.to_csv(tmp / "s.csv", index=False)

    return make


def outlier_date() -> list[str]:
    dates = pd.date_range("2020-01-01", periods=120, freq="D").strftime("%Y-%m-%d").tolist()
    return [*dates[:-1], "9999-12-31"]


def images(classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 6, bad: bool = False) -> Callable:
    """``img/<class>/<i>.png``: tiny RGB images (and one corrupt PNG with ``bad``)."""

    def make(tmp: Path) -> None:
        rng = np.random.default_rng(0)
        for name in classes:
            folder = tmp / "img" / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
        if bad:
            (tmp / "img" / classes[-1] / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)

    return make


def flat_images(tmp: Path) -> None:
    """``img/*.png``: images without class sub-folders."""
    (tmp / "img").mkdir()
    for i in range(4):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp / "img" / f"{i}.png")


def empty_folder(tmp: Path) -> None:
    (tmp / "img").mkdir()


def checkpoint_dict(content: dict) -> Callable[[Path], None]:
    def make(tmp: Path) -> None:
        torch.save(content, tmp / "c.ckpt")

    return make


class Pickled:
    """Not plain data: ``torch.load(weights_only=True)`` must refuse it."""


# ----------------------------------------------------------------------------------------- cases
TAB = ["data=tabular", "data.path={tmp}/t.csv", "data.target=churn", "data.drop=[customer_id]"]
IMG = ["data=image_folder", "data.root={tmp}/img", "data.image_size=[8,8]", "model=cnn_classifier"]
SERIES = [
    "experiment=forecast_lstm",
    "data.path={tmp}/s.csv",
    "data.time_column=date",
    "data.target=y",
    "data.window=7",
    "data.horizon=3",
    "data.season=7",
]
TEXT = ["experiment=text_lstm", "data.path={tmp}/book.txt"]
TINY_TRAIN = ["debug=limit", "trainer.max_epochs=1", "data.n_rows=300", *QUIET]


@dataclass(frozen=True)
class Case:
    """``lit-dl *args`` (``{tmp}``: the test's folder; ``{clf}``/``{tvae}``: trained checkpoints)
    must fail in one line holding every word of ``expected`` (case-insensitive)."""

    id: str
    args: tuple[str, ...]
    expected: tuple[str, ...]
    make: tuple[Callable[[Path], None], ...] = ()


def case(id: str, args: list[str], expected: str | tuple[str, ...], *make: Callable[[Path], None]) -> Case:
    return Case(id, tuple(args), (expected,) if isinstance(expected, str) else expected, make)


CASES = [
    # --- tables
    case("table-missing-file", ["train", *TAB], ("not found", "data.path")),
    case("table-path-is-folder", ["train", *TAB[:1], "data.path={tmp}", *TAB[2:]], "folder"),
    case("table-empty-file", ["train", *TAB], "empty", write("t.csv", "")),
    case("table-header-only", ["train", *TAB], "no rows", write("t.csv", "customer_id,age,churn\n")),
    case("table-missing-target", ["train", *TAB[:2], "data.target=nope"], ("'nope'", "data.target"), table),
    case(
        "table-missing-feature", ["train", *TAB, "data.features=[age,nope]"], ("'nope'", "not found"), table
    ),
    case("table-missing-drop", ["train", *TAB[:3], "data.drop=[nope]"], ("'nope'", "not found"), table),
    case(
        "table-duplicate-columns-after-stripping",
        ["train", *TAB[:3]],
        ("duplicate", "tenure"),
        write("t.csv", duplicate_columns()),
    ),
    case(
        "table-text-regression-target",
        ["train", *TAB, "data.task=regression", "model=mlp_regressor"],
        ("regression target", "'churn'"),
        table,
    ),
    case("table-single-class", ["train", *TAB], "single class", frame_file("t.csv", messy(churn="No"))),
    case("table-all-nan-target", ["train", *TAB], "no values", frame_file("t.csv", messy(churn=np.nan))),
    case(
        "table-only-feature-all-nan",
        ["train", *TAB, "data.features=[age]"],
        ("age", "no values"),
        frame_file("t.csv", messy(age=np.nan)),
    ),
    case("table-target-also-feature", ["train", *TAB, "data.features=[age,churn]"], "also listed", table),
    case(
        "table-wrong-delimiter",
        ["train", *TAB],
        ("one column", "delimited by a colon"),
        write(
            "t.csv",
            "customer_id:age:churn\n"
            + "".join(f"C{i}:{20 + i}:{'Yes' if i % 3 else 'No'}\n" for i in range(60)),
        ),
    ),
    case("table-binary-garbage", ["train", *TAB], "cannot read", write("t.csv", bytes(range(256)) * 40)),
    case(
        "table-not-utf8",
        ["train", *TAB],
        ("utf-8",),
        write("t.csv", ("customer_id,city,churn\n" + "C1,Malmö,Yes\nC2,Zürich,No\n" * 40).encode("latin-1")),
    ),
    case(
        "table-parquet-corrupted",
        ["train", *TAB[:1], "data.path={tmp}/t.parquet", *TAB[2:]],
        "cannot read",
        write("t.parquet", b"PAR1" + b"\x00" * 100),
    ),
    case(
        "table-too-few-rows",
        ["train", *TAB],
        "cannot split",
        frame_file("t.csv", lambda: make_messy_frame().head(4)),
    ),
    case(
        "table-test-path-missing",
        ["train", *TAB, "data.test_path={tmp}/nope.csv"],
        ("data.test_path", "not found"),
        table,
    ),
    case("table-val-fraction-1.5", ["train", *TAB, "data.val_fraction=1.5"], "data.val_fraction", table),
    case(
        "eval-unseen-label",
        ["eval", "ckpt_path={clf}", "data.test_path={tmp}/new.csv"],
        "not seen in training",
        frame_file("new.csv", lambda: make_churn_frame(60, seed=3).assign(churn="Maybe")),
    ),
    case(
        "predict-input-lacks-feature",
        ["predict", "ckpt_path={clf}", "input={tmp}/new.csv", "output={tmp}/p.csv"],
        ("lacks", "tenure_months"),
        frame_file("new.csv", lambda: make_churn_frame(20, seed=3).drop(columns=["tenure_months", "churn"])),
    ),
    case(
        "predict-input-missing",
        ["predict", "ckpt_path={clf}", "input={tmp}/nope.csv", "output={tmp}/p.csv"],
        "not found",
    ),
    # --- images
    case("images-root-missing", ["train", *IMG], ("not found", "data.root")),
    case("images-empty-folder", ["train", *IMG], "sub-folder per class", empty_folder),
    case("images-no-class-folders", ["train", *IMG], "sub-folder per class", flat_images),
    case("images-corrupt-png", ["train", *IMG], ("broken.png", "skip_bad_files"), images(bad=True)),
    case("images-wrong-channels", ["train", *IMG, "data.channels=2"], ("data.channels", "1 or 3"), images()),
    case("images-one-class", ["train", *IMG], ("at least 2 classes", "cat"), images(classes=("cat",))),
    case(
        "images-size-not-a-list",
        ["train", *IMG[:2], "data.image_size=8", IMG[3]],
        "data.image_size",
        images(),
    ),
    case(
        "images-zero-size", ["train", *IMG[:2], "data.image_size=[0,8]", IMG[3]], "data.image_size", images()
    ),
    # --- series
    case(
        "series-no-time-column",
        ["train", *SERIES[:2], "data.time_column=when", *SERIES[3:]],
        ("'when'", "data.time_column"),
        series(),
    ),
    case(
        "series-unparseable-times",
        ["train", *SERIES],
        ("cannot read time", "date"),
        series(["someday"] * 120),
    ),
    case(
        "series-outlier-timestamp",
        ["train", *SERIES],
        ("9999-12-31", "wrong time stamp"),
        series(outlier_date()),
    ),
    case("series-duplicate-times", ["train", *SERIES], "duplicate time", series(["2020-01-01"] * 120)),
    case(
        "series-horizon-longer-than-series",
        ["train", *SERIES, "data.horizon=500"],
        "data.horizon=500",
        series(),
    ),
    case(
        "series-window-longer-than-series", ["train", *SERIES, "data.window=500"], "data.window=500", series()
    ),
    case(
        "series-target-not-numbers",
        ["train", *SERIES],
        "no numbers",
        write("s.csv", "date,y\n" + "".join(f"2020-01-{d:02d},high\n" for d in range(1, 29))),
    ),
    # --- text
    case("text-missing-file", ["train", *TEXT], ("not found", "data.path")),
    case("text-empty-file", ["train", *TEXT], "empty", write("book.txt", "")),
    case(
        "text-binary-file", ["train", *TEXT], ("book.txt", "text"), write("book.txt", bytes(range(256)) * 40)
    ),
    case(
        "text-seq-len-too-long",
        ["train", *TEXT, "data.seq_len=100000"],
        "data.seq_len",
        write("book.txt", "a short book. " * 200),
    ),
    # --- checkpoints
    case("ckpt-missing", ["eval", "ckpt_path={tmp}/nope.ckpt"], ("not found", "ckpt_path")),
    case("ckpt-folder", ["eval", "ckpt_path={tmp}"], "folder"),
    case("ckpt-zero-bytes", ["eval", "ckpt_path={tmp}/c.ckpt"], "empty", write("c.ckpt", b"")),
    case(
        "ckpt-random-bytes",
        ["eval", "ckpt_path={tmp}/c.ckpt"],
        "corrupted",
        write("c.ckpt", bytes(range(256)) * 8),
    ),
    case(
        "ckpt-truncated", ["eval", "ckpt_path={tmp}/c.ckpt"], "corrupted", lambda tmp: None
    ),  # made from {clf}
    case(
        "ckpt-pickled-object",
        ["eval", "ckpt_path={tmp}/c.ckpt"],
        "corrupted",
        checkpoint_dict({"state_dict": Pickled()}),
    ),
    case(
        "ckpt-not-lightning",
        ["eval", "ckpt_path={tmp}/c.ckpt"],
        "not a lightning checkpoint",
        checkpoint_dict({"weights": torch.zeros(2)}),
    ),
    case(
        "ckpt-not-lit-dl",
        ["eval", "ckpt_path={tmp}/c.ckpt"],
        "not written by",
        checkpoint_dict({"state_dict": {}}),
    ),
    case(
        "ckpt-newer-format", ["eval", "ckpt_path={tmp}/c.ckpt"], "upgrade lit_dl", lambda tmp: None
    ),  # from {clf}
    case("resume-missing-ckpt", ["train", "ckpt_path={tmp}/nope.ckpt", *TINY_TRAIN], "not found"),
    case(
        "resume-other-family",
        ["train", "ckpt_path={tvae}", *TINY_TRAIN],
        ("tabularvaetask", "classificationtask"),
    ),
    case(
        "resume-resized-model",
        ["train", "ckpt_path={clf}", *TINY_TRAIN, "model.net.hidden_sizes=[8]"],
        ("do not fit", "here", "config.yaml"),
    ),
    case(  # a tabular VAE's predict scores rows (anomaly scores): the rows need its columns
        "predict-tabular-vae-missing-columns",
        ["predict", "ckpt_path={tvae}", "input={tmp}/t.csv", "output={tmp}/p.csv"],
        "add them to the input",
        table,
    ),
    case("sample-from-classifier", ["sample", "ckpt_path={clf}"], "cannot sample"),
    # --- outputs
    case(
        "predict-output-bad-suffix",
        ["predict", "ckpt_path={clf}", "input={tmp}/new.csv", "output={tmp}/p.xlsx"],
        ".csv",
        frame_file("new.csv", lambda: make_churn_frame(20)),
    ),
    case("sample-table-as-png", ["sample", "ckpt_path={tvae}", "n=10", "output={tmp}/s.png"], ".csv"),
    case("sample-n-zero", ["sample", "ckpt_path={tvae}", "n=0"], "positive"),
    case("sample-n-over-bound", ["sample", "ckpt_path={tvae}", "n=20000000"], ("10,000,000", "n=")),
    # --- config
    case("config-unknown-verb", ["trian"], "unknown verb"),
    case("config-unknown-key", ["train", "trainer.max_epchs=3"], "unknown config key 'trainer.max_epchs'"),
    case("config-wrong-type", ["train", "trainer.max_epochs=ten"], "expects an integer"),
    case("config-missing-required", ["predict", "ckpt_path={clf}"], ("not set", "input")),
    case("config-bad-group-option", ["train", "model=transformer"], ("no config 'transformer'", "model")),
    case("config-unparseable-override", ["train", "data.batch_size=[1,"], "cannot parse"),
    case("config-target-not-allowed", ["train", "model.net._target_=os.system"], "not allowed"),
    case("config-output-dir-apart", ["train", "paths.output_dir={tmp}/out"], ("hydra.run.dir", "follows")),
    case(
        "config-negative-lr",
        ["train", *TINY_TRAIN, "model.optimizer.lr=-1"],
        ("model.optimizer", "learning rate"),
    ),
    case(
        "config-negative-epochs", ["train", *TINY_TRAIN, "trainer.max_epochs=-5"], ("trainer", "max_epochs")
    ),
    case("config-batch-size-0", ["train", *TINY_TRAIN, "data.batch_size=0"], "data.batch_size"),
    # a monitored metric: of a callback left out (refused before training), or that nothing logs
    case(
        "config-monitor-of-a-callback-left-out",
        ["train", "experiment=digits_gan", "callbacks.sample_quality=null", *QUIET],
        ("callbacks.model_checkpoint.monitor=val/fid", "callbacks.sample_quality"),
    ),
    case(
        "config-monitor-measured-on-fewer-epochs",
        ["train", "experiment=digits_gan", "callbacks.sample_quality.every_n_epochs=2", *QUIET],
        ("callbacks.model_checkpoint.monitor=val/fid", "every 2 epochs", "watched every 1"),
    ),
    case(
        "config-checkpoint-monitor-nobody-logs",
        ["train", *TINY_TRAIN, "callbacks.model_checkpoint.monitor=val/acc"],
        ("callbacks.model_checkpoint.monitor=val/acc", "not a metric this run logs", "val/accuracy"),
    ),
    case(
        "config-early-stopping-monitor-nobody-logs",
        ["train", *TINY_TRAIN, "callbacks.early_stopping.monitor=val/acc"],
        ("callbacks.early_stopping.monitor=val/acc", "val/loss"),
    ),
    case(
        "config-scheduler-monitor-nobody-logs",
        ["train", *TINY_TRAIN, "model.scheduler_monitor=val/acc"],
        ("model.scheduler_monitor=val/acc", "val/loss"),
    ),
    case(
        "config-batch-size-1-batch-norm",
        ["train", *TINY_TRAIN, "data.batch_size=1"],
        ("data.batch_size", "batch norm"),
    ),
    case("config-val-fraction-1.5", ["train", *TINY_TRAIN, "data.val_fraction=1.5"], "data.val_fraction"),
    # --- run folders
    case(
        "rundir-existing-file",
        ["train", *TINY_TRAIN, "hydra.run.dir={tmp}/taken"],
        ("hydra.run.dir", "taken"),
        write("taken", "mine"),
    ),
    case(
        "rundir-under-a-file",
        ["train", *TINY_TRAIN, "hydra.run.dir={tmp}/taken/run"],
        ("hydra.run.dir", "taken"),
        write("taken", "mine"),
    ),
]


# -------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A churn classifier and a tabular VAE, each trained for a few batches (made once per module)."""
    root = tmp_path_factory.mktemp("trained")
    main(["train", *TINY_TRAIN, f"hydra.run.dir={root / 'clf'}"])
    main(
        [
            "train",
            "experiment=churn_tvae",
            *TINY_TRAIN,
            "callbacks.synthetic_report=null",
            "callbacks.table_fidelity=null",
            f"hydra.run.dir={root / 'tvae'}",
        ]
    )
    return {name: root / name / "checkpoints" / "best.ckpt" for name in ("clf", "tvae")}


def snapshot(*folders: Path) -> dict[Path, tuple[int, str]]:
    """Every file under ``folders``: its modification time and the hash of its bytes."""
    return {
        path: (path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
        for folder in folders
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def from_classifier(case_id: str, tmp: Path, clf: Path) -> None:
    """The checkpoint cases made from a real checkpoint: cut in half, or from a future lit_dl."""
    if case_id == "ckpt-truncated":
        data = clf.read_bytes()
        (tmp / "c.ckpt").write_bytes(data[: len(data) // 2])
    elif case_id == "ckpt-newer-format":
        checkpoint = torch.load(clf, weights_only=True)
        checkpoint["lit_dl"] = {**checkpoint["lit_dl"], "format": 99, "version": "9.0"}
        torch.save(checkpoint, tmp / "c.ckpt")


@pytest.mark.parametrize("bad", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_exit_2(
    bad: Case, fail_cli: Callable[..., str], request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    tmp = tmp_path / "user"
    tmp.mkdir()
    joined = " ".join(bad.args)
    needs_model = "{clf}" in joined or "{tvae}" in joined or bad.id in ("ckpt-truncated", "ckpt-newer-format")
    models = request.getfixturevalue("trained") if needs_model else {}
    for make in bad.make:
        make(tmp)
    if models:
        from_classifier(bad.id, tmp, models["clf"])
    args = [a.format(tmp=tmp, **{k: str(v) for k, v in models.items()}) for a in bad.args]
    if not any(a.startswith("hydra.run.dir=") for a in args) and args[0] != "trian":
        args.append(f"hydra.run.dir={tmp_path / 'run'}")
    watched = [tmp, *(p.parent.parent for p in models.values())]
    before = snapshot(*watched)

    line = fail_cli(*args).lower()

    for word in bad.expected:
        assert word.lower() in line, f"{word!r} not in {line!r}"
    assert snapshot(*watched) == before, "a file of the user's was changed"
    assert not os.environ.get("LIT_DL_VERBOSE")


# ------------------------------------------------------------------------------ beyond one line
class Broken(torch.nn.Module):
    """A network with a bug: its forward pass fails (not the user's doing)."""

    def __init__(self, in_features: int, out_features: int, **options: object) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(in_features, out_features)

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor | None = None) -> torch.Tensor:
        raise RuntimeError("forward is broken")


@pytest.mark.parametrize("verbose", [False, True])
def test_a_bug_is_one_line_exit_1_and_verbose_shows_the_traceback(
    verbose: bool, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if verbose:
        monkeypatch.setenv("LIT_DL_VERBOSE", "1")
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "train",
                *TINY_TRAIN,
                f"model.net._target_={__name__}.Broken",
                f"allow_targets=[{__name__}]",
                f"hydra.run.dir={tmp_path / 'run'}",
            ]
        )
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert lines == ["error: RuntimeError: forward is broken (a bug? LIT_DL_VERBOSE=1 shows the traceback)"]
    assert ("Traceback" in err) == verbose


def test_outlier_time_stamp_is_refused_before_the_grid_is_made() -> None:
    from lit_dl.data.time_index import MAX_GRID_FACTOR, regular_grid
    from lit_dl.errors import DataError

    steps = [*range(100), 10**12]  # step numbers, and one typed with too many zeros
    frame = pd.DataFrame({"y": np.arange(101.0)}, index=pd.Index(steps, dtype="float64"))
    with pytest.raises(DataError, match=r"from 99\.0 to 1000000000000\.0"):
        regular_grid(frame, "number")
    # Gaps within the bound are filled as before: pairs of steps 10 apart, 1 step between the two.
    pairs = pd.Index([float(10 * k + i) for k in range(50) for i in (0, 1)])
    assert len(regular_grid(frame.iloc[:100].set_axis(pairs), "number").frame) == 492 < 100 * MAX_GRID_FACTOR


def test_confusion_matrix_of_many_classes_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from types import SimpleNamespace

    from lit_dl.callbacks import ClassificationPlots

    plots = ClassificationPlots(dirpath=str(tmp_path / "plots"))
    trainer = SimpleNamespace(is_global_zero=True)
    task = SimpleNamespace(task_type="classification", num_classes=1000, device=torch.device("cpu"))
    plots.on_test_epoch_start(trainer, task)  # type: ignore[arg-type]
    batch = (torch.zeros(4, 3), torch.tensor([0, 1, 2, 999]))
    plots.on_test_batch_end(trainer, task, {"predictions": torch.rand(4, 1000)}, batch, 0)  # type: ignore[arg-type]
    plots.on_test_epoch_end(trainer, task)  # type: ignore[arg-type]
    assert "1000 classes, more than callbacks.plots.max_classes=50" in caplog.text
    assert not (tmp_path / "plots").exists()


def test_sample_sizes_are_bounded() -> None:
    from types import SimpleNamespace

    from lit_dl.data.table_transform import draw_rows
    from lit_dl.errors import ConfigError
    from lit_dl.tasks import VAETask
    from lit_dl.tasks.generative import MAX_IMAGES, MAX_ROWS, check_rows
    from lit_dl.tasks.language_model import LanguageModelTask

    assert check_rows(MAX_ROWS) == MAX_ROWS
    with pytest.raises(ConfigError, match=r"n=10,000,001 rows .*at most 10,000,000"):
        check_rows(MAX_ROWS + 1)
    vae = VAETask(
        encoder={"_target_": "lit_dl.nets.MLPEncoder", "hidden_sizes": []},
        decoder={"_target_": "lit_dl.nets.MLPDecoder", "hidden_sizes": []},
        optimizer={"_target_": "torch.optim.Adam", "_partial_": True},
        latent_dim=2,
        data={
            "task_type": "classification",
            "modality": "images",
            "inputs": {"in_channels": 1, "image_size": [2, 2]},
            "classes": ["a", "b"],
            "scale": "unit",
        },
    )
    assert vae.sample(3).shape == (3, 1, 2, 2)
    with pytest.raises(ConfigError, match="at most 100,000"):
        vae.sample(MAX_IMAGES + 1)
    with pytest.raises(ConfigError, match="at most 10,000,000"):
        LanguageModelTask.sample(SimpleNamespace(), n=100_000, length=500)  # type: ignore[arg-type]
    # Below the bound, a draw without a condition is never cut short (it once stopped at 819,200 rows).
    rows = draw_rows(lambda size: np.zeros((size, 1), np.float32), SimpleNamespace(), 1_000_000)  # type: ignore[arg-type]
    assert rows.shape == (1_000_000, 1)


def test_a_one_column_file_is_not_split_at_a_letter(tmp_path: Path) -> None:
    from lit_dl.data.tables import read_table

    # Left to itself, the sniffer read "churn" as delimited by "u" and "1.5" by ".".
    (tmp_path / "a.csv").write_text("churn\n" + "Yes\nNo\n" * 20)
    (tmp_path / "b.csv").write_text("sales\n" + "1.5\n2.5\n" * 20)
    assert list(read_table(tmp_path / "a.csv").columns) == ["churn"]
    assert read_table(tmp_path / "b.csv")["sales"].tolist() == [1.5, 2.5] * 20


def test_a_long_column_name_gets_a_short_plot_file(tmp_path: Path) -> None:
    long = "how satisfied were you with " + "the service " * 30
    frame = make_messy_frame()[["age", "tenure", "churn"]].rename(columns={"tenure": long})
    write_frame(frame.iloc[:150], tmp_path / "real.csv")
    write_frame(frame.iloc[150:], tmp_path / "synthetic.csv")
    main(
        [
            "report",
            f"real={tmp_path / 'real.csv'}",
            f"synthetic={tmp_path / 'synthetic.csv'}",
            f"hydra.run.dir={tmp_path / 'r'}",
        ]
    )
    files = [p.name for p in (tmp_path / "r" / "plots").glob("*.png")]
    assert len(files) == 3 and max(len(f) for f in files) < 100
