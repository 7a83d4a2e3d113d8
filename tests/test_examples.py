"""The examples in examples/ and the commands of docs/extending.md, run as a user runs them."""

from __future__ import annotations

import json
import re
import runpy
import shlex
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from lit_dl.cli import main
from lit_dl.data.churn import make_churn_frame
from lit_dl.losses import FocalLoss

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
LABELS = ["churn", "streaming", "tech_support"]


def test_multilabel_classifier_in_a_user_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES / "multilabel"))
    table = tmp_path / "churn.csv"
    make_churn_frame(800, seed=3).to_csv(table, index=False)
    run = tmp_path / "run"
    user = [
        f"hydra.searchpath=[file://{EXAMPLES / 'multilabel' / 'configs'}]",
        "allow_targets=[multilabel_example]",
    ]
    main(
        [
            "train",
            *user,
            "experiment=multilabel_churn",
            f"data.path={table}",
            "debug=limit",
            f"hydra.run.dir={run}",
        ]
    )

    metrics = json.loads((run / "metrics.json").read_text())
    assert {"test/f1", "test/auroc", "test/loss"} <= set(metrics)
    assert 0.0 <= metrics["test/f1"] <= 1.0
    checkpoint = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    assert checkpoint["lit_dl"]["task"] == "multilabel_example.task.MultiLabelTask"
    assert checkpoint["MultiLabelTable"]["classes"] == LABELS
    assert checkpoint["hyper_parameters"]["loss"] == {"_target_": "torch.nn.BCEWithLogitsLoss"}

    # predict writes one probability per label for every input row, ids passed through.
    rows = tmp_path / "new.csv"
    make_churn_frame(40, seed=9).drop(columns=LABELS).to_csv(rows, index=False)
    out = tmp_path / "predictions.csv"
    ckpt = run / "checkpoints" / "best.ckpt"
    main(
        [
            "predict",
            *user[1:],
            f"ckpt_path={ckpt}",
            f"input={rows}",
            f"output={out}",
            f"hydra.run.dir={tmp_path / 'p'}",
        ]
    )
    predictions = pd.read_csv(out)
    assert list(predictions.columns) == ["customer_id"] + [f"prob_{label}" for label in LABELS]
    assert len(predictions) == 40 and predictions.iloc[:, 1:].stack().between(0, 1).all()

    # The user's package must be allowed to rebuild the checkpoint: without it, one clear refusal.
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'e'}"])
    assert exit_info.value.code == 2


def test_multilabel_datamodule_encodes_labels_as_zero_one_columns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES / "multilabel"))
    from multilabel_example.data import MultiLabelTable

    frame = make_churn_frame(300, seed=4)
    table = tmp_path / "churn.csv"
    frame.to_csv(table, index=False)
    dm = MultiLabelTable(path=str(table), target=LABELS, drop=["customer_id"], batch_size=64)
    dm.setup("fit")
    spec = dm.data_spec()
    assert (spec.task_type, spec.classes) == ("multilabel", LABELS)
    y = torch.cat([dm.datasets[s].tensors[2] for s in ("train", "val", "test")])
    assert y.shape == (300, 3) and set(y.unique().tolist()) <= {0.0, 1.0}
    assert int(y[:, 0].sum()) == int((frame["churn"] == "Yes").sum())
    assert int(y[:, 1].sum()) == int((frame["streaming"] == "Yes").sum())  # "No internet service" is 0
    assert spec.class_counts == dm.datasets["train"].tensors[2].sum(dim=0).long().tolist()


def test_focal_loss_reduces_to_cross_entropy_and_down_weights_easy_examples() -> None:
    logits = torch.tensor([3.0, -2.0, 0.5, -0.1])
    target = torch.tensor([1.0, 0.0, 0.0, 1.0])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    torch.testing.assert_close(FocalLoss(gamma=0.0)(logits, target), bce)
    assert FocalLoss(gamma=2.0)(logits, target) < bce
    classes = torch.tensor([[2.0, 0.1, -1.0], [0.0, 0.2, 0.1]])
    labels = torch.tensor([0, 2])
    torch.testing.assert_close(
        FocalLoss(gamma=0.0)(classes, labels), torch.nn.functional.cross_entropy(classes, labels)
    )
    # An example classified well (p_t near 1) contributes almost nothing once gamma > 0.
    easy = FocalLoss(gamma=2.0)(torch.tensor([8.0]), torch.tensor([1.0]))
    assert easy < 1e-6


def test_plain_python_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import plain_python

    metrics = plain_python.main(["--epochs", "2", "--rows", "600", "--output", str(tmp_path / "out")])
    assert {"test/auroc", "test/accuracy", "test/loss"} <= set(metrics)
    assert metrics["test/auroc"] > 0.6  # the embedded churn signal is learnable in two epochs


def section_commands(path: Path, heading: str) -> list[str]:
    """The shell commands of the fenced ``bash`` blocks in one section of a Markdown file."""
    text = path.read_text()
    section = text.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return [
        line.strip()
        for block in blocks
        for line in block.splitlines()
        if line.strip() and not line.startswith("#")
    ]


def test_extending_page_commands_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each command as written, run in-process (a subprocess per command costs ~10 s of imports)."""
    commands = section_commands(ROOT / "docs" / "extending.md", "## The four examples")
    assert len(commands) >= 5
    # The commands name files relative to the project's root: run them in a scratch folder that links to it.
    for name in ("examples", "scripts"):
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)
    for i, command in enumerate(commands):
        words = shlex.split(command)
        while "=" in words[0] and not words[0].startswith("-"):
            name, _, value = words.pop(0).partition("=")
            assert name == "PYTHONPATH", command
            monkeypatch.syspath_prepend(str(tmp_path / value))
        if words[0] == "lit-dl":
            tiny = ["debug=limit", f"hydra.run.dir={tmp_path / f'run{i}'}", "callbacks.progress_bar=null"]
            if not any(w.startswith("data.path=") for w in words):
                tiny.append("data.n_rows=600")
            main([*words[1:], *tiny])
            assert (tmp_path / f"run{i}" / "metrics.json").is_file(), command
        else:
            assert words[0] == "python", command
            argv = words[1:]
            if argv[0].endswith("plain_python.py"):
                argv += ["--epochs", "1", "--rows", "600", "--output", str(tmp_path / "plain")]
            monkeypatch.setattr(sys, "argv", argv)
            runpy.run_path(argv[0], run_name="__main__")
    assert (tmp_path / "churn.csv").is_file()
    capsys.readouterr()
