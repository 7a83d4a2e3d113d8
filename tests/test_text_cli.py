"""The character language model through the ``lit-dl`` CLI: train, eval, sample; bad inputs."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import lightning
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from lit_dl.cli import CONFIG_DIR, main
from lit_dl.data.spec import DataSpec
from lit_dl.tasks import ClassificationTask

TEXT = "the cat sat on the mat and the dog sat on the log. " * 40  # 2,040 characters
TINY = [
    "experiment=text_lstm",
    "data.seq_len=16",
    "data.batch_size=4",
    "data.eval_streams=2",
    "model.net.hidden_size=24",
    "model.net.embedding_dim=8",
    "model.optimizer.lr=0.02",
    "trainer.max_epochs=2",
    "trainer.log_every_n_steps=4",
    "+trainer.limit_train_batches=8",
    "callbacks.progress_bar=null",
    "callbacks.model_summary=null",
]

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings(r"ignore:.*isinstance\(treespec, LeafSpec\).*"),
]


@pytest.fixture(scope="module")
def text_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("text")
    source = root / "text.txt"
    source.write_text(TEXT)
    run_dir = root / "train"
    main(["train", *TINY, f"data.path={source}", f"hydra.run.dir={run_dir}"])
    return run_dir


def sample_file(run: Path, out: Path, *args: str) -> str:
    output = out / "samples.txt"
    main(["sample", f"ckpt_path={run / 'checkpoints' / 'best.ckpt'}", f"hydra.run.dir={out}", *args])
    return output.read_text()


def test_train_writes_bpc_and_eval_reproduces_it(text_run: Path, tmp_path: Path) -> None:
    metrics = json.loads((text_run / "metrics.json").read_text())
    for stage in ("val", "test"):
        assert math.isfinite(metrics[f"{stage}/bpc"])
        assert metrics[f"{stage}/bpc"] == pytest.approx(metrics[f"{stage}/loss"] / math.log(2), rel=1e-5)
    assert metrics["val/bpc"] < math.log2(14)  # better than guessing among the 14 characters
    checkpoint = torch.load(text_run / "checkpoints" / "best.ckpt", weights_only=True)
    assert checkpoint["CharTextDataModule"]["vocabulary"] == " .acdeghlmnost"
    assert checkpoint["hyper_parameters"]["gradient_clip_val"] == 1.0

    main(
        ["eval", f"ckpt_path={text_run / 'checkpoints' / 'best.ckpt'}", f"hydra.run.dir={tmp_path / 'eval'}"]
    )
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert evaluated["test/bpc"] == pytest.approx(metrics["test/bpc"], abs=1e-6)


def test_sample_writes_the_prompt_and_its_continuation(
    text_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = sample_file(text_run, tmp_path / "a", 'prompt="the cat "', "length=80", "seed=1")
    assert text.startswith("the cat ") and len(text) == len("the cat ") + 80 + 1
    assert set(text) <= set(" .acdeghlmnost\n")
    printed = capsys.readouterr().out
    assert text in printed and "wrote 1 sample(s)" in printed
    config = OmegaConf.load(tmp_path / "a" / "config.yaml")
    assert config.prompt == "the cat " and config.length == 80

    assert sample_file(text_run, tmp_path / "b", 'prompt="the cat "', "length=80", "seed=1") == text
    assert sample_file(text_run, tmp_path / "c", 'prompt="the cat "', "length=80", "seed=2") != text
    greedy = sample_file(text_run, tmp_path / "d", "prompt=the", "length=40", "temperature=0")
    assert sample_file(text_run, tmp_path / "e", "prompt=the", "length=40", "top_k=1", "seed=9") == greedy

    several = sample_file(text_run, tmp_path / "f", "n=3", "length=30", "temperature=1.5")
    assert [line for line in several.splitlines() if line.startswith("---")] == [
        f"--- sample {i} ---" for i in (1, 2, 3)
    ]


def test_sample_with_unknown_prompt_characters(
    fail_cli: Callable[..., str], text_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = sample_file(text_run, tmp_path / "r", "prompt=The_Cat", "length=20")
    assert text.startswith("The_Cat") and len(text) == len("The_Cat") + 20 + 1  # read as unknown: a warning
    assert "'C', 'T', '_'" in capsys.readouterr().out
    ckpt = text_run / "checkpoints" / "best.ckpt"
    line = fail_cli(
        "sample",
        f"ckpt_path={ckpt}",
        "prompt=The_Cat",
        "unknown=error",
        f"hydra.run.dir={tmp_path / 'x'}",
    )
    assert "never saw in training: 'C', 'T', '_'" in line
    assert not (tmp_path / "x" / "samples.txt").exists()
    line = fail_cli("sample", f"ckpt_path={ckpt}", "temperature=-1", f"hydra.run.dir={tmp_path / 'y'}")
    assert "temperature must be a number >= 0" in line


def test_predict_on_a_language_model_points_to_sample(
    text_run: Path, tmp_path: Path, fail_cli: Callable[..., str]
) -> None:
    rows = tmp_path / "rows.csv"
    rows.write_text("a,b\n1,2\n")
    ckpt = text_run / "checkpoints" / "best.ckpt"
    line = fail_cli("predict", f"ckpt_path={ckpt}", f"input={rows}", f"hydra.run.dir={tmp_path / 'p'}")
    assert "lit-dl sample" in line


def test_a_classifier_cannot_sample(tmp_path: Path, fail_cli: Callable[..., str]) -> None:
    classifier = ClassificationTask(
        net={"_target_": "lit_dl.nets.TabularMLP", "hidden_sizes": [4]},
        optimizer={"_target_": "torch.optim.Adam", "_partial_": True},
        data=DataSpec(
            task_type="classification",
            modality="table",
            inputs={"in_features": 3, "cat_cardinalities": []},
            classes=["no", "yes"],
        ),
    )
    ckpt = tmp_path / "classifier.ckpt"
    torch.save(
        {
            "state_dict": classifier.state_dict(),
            "hyper_parameters": dict(classifier.hparams),
            "pytorch-lightning_version": lightning.__version__,
            "lit_dl": {
                "task": "lit_dl.tasks.classification.ClassificationTask",
                "datamodule": "lit_dl.data.tabular.TabularDataModule",
                "datamodule_hparams": {"path": str(tmp_path / "t.csv"), "target": "y"},
            },
        },
        ckpt,
    )
    line = fail_cli("sample", f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 's'}")
    assert "this model cannot sample" in line


def test_empty_text_file_is_one_clear_error(tmp_path: Path, fail_cli: Callable[..., str]) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    line = fail_cli("train", *TINY, f"data.path={empty}", f"hydra.run.dir={tmp_path / 'run'}")
    assert line == f"error: text file is empty: {empty}"
    assert not (tmp_path / "run").exists()


def test_sample_config_requires_a_checkpoint(tmp_path: Path) -> None:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("sample")
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)  # ${hydra:runtime.output_dir} exists only inside a Hydra run
    assert OmegaConf.missing_keys(cfg) == {"ckpt_path"}
    assert cfg.output is None  # chosen by what the model samples: samples.txt for text
    assert cfg.length == 500 and cfg.temperature == 0.8 and cfg.top_k is None
