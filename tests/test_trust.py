"""Untrusted files are data, never code; nothing of the user's is overwritten or deleted unasked.

Checkpoints, config files and data files handed to ``lit-dl`` may come from someone else. A
checkpoint or config naming ``subprocess.Popen``, ``numpy.savetxt`` or ``pandas.DataFrame.to_csv``
(anywhere: as a class, a nested argument, a transform, the optimiser) is refused in one line that
names the key and the target, and the payload never runs: each points at a file under ``tmp_path``
that must not appear. Outputs never replace a file unasked, never the input; CSV cells a
spreadsheet would run as formulas are neutralised.

Checkpoints are the 0.1.0 fixtures (``tests/fixtures/checkpoints/v0.1.0``) with their dicts edited,
so nothing here trains except the one run that checks secrets stay out of a run folder.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from lit_dl.cli import main
from lit_dl.data.image_files import read_cifar_batches
from lit_dl.errors import DataError
from lit_dl.utils import neutralize_formulas
from lit_dl.verbs.sample import write_samples

pytestmark = pytest.mark.usefixtures("one_thread")

FIXTURES = Path(__file__).parent / "fixtures" / "checkpoints" / "v0.1.0"
CHURN_ROWS = FIXTURES / "inputs" / "churn_rows.csv"
QUIET = ["callbacks.progress_bar=null", "callbacks.model_summary=null"]
TINY_TRAIN = ["debug=limit", "trainer.max_epochs=1", "data.n_rows=300", *QUIET]
# The file every payload below would write; its absence proves the payload never ran.
PWNED = "pwned.txt"


def payload(target: str, tmp: Path) -> dict[str, Any]:
    """A config node that, if built, would write ``tmp/pwned.txt``."""
    pwned = str(tmp / PWNED)
    arguments = {
        "subprocess.Popen": {"args": ["touch", pwned]},
        "numpy.savetxt": {"fname": pwned, "X": [1.0, 2.0]},
        "pandas.DataFrame.to_csv": {"self": {"a": [1]}, "path_or_buf": pwned},
        # Under an allowed prefix, but a function (not a class) that writes a file.
        "lit_dl.utils.atomic_write_text": {"path": pwned, "text": "owned"},
        "lightning.pytorch.core.saving.save_hparams_to_yaml": {"config_yaml": pwned, "hparams": {"a": 1}},
    }[target]
    return {"_target_": target, **arguments}


# Where a tampered checkpoint names the payload: (edit of the checkpoint dict, key in the error line).
def as_datamodule(ckpt: dict, node: dict) -> None:
    ckpt["lit_dl"]["datamodule"] = node["_target_"]


def as_task(ckpt: dict, node: dict) -> None:
    ckpt["lit_dl"]["task"] = node["_target_"]


def in_net(ckpt: dict, node: dict) -> None:
    ckpt["hyper_parameters"]["net"]["activation"] = node  # a net argument that is itself a _target_ node


def as_augment(ckpt: dict, node: dict) -> None:
    ckpt["lit_dl"]["datamodule_hparams"]["augment"] = [node]


def as_optimizer(ckpt: dict, node: dict) -> None:
    ckpt["hyper_parameters"]["optimizer"] = {**node, "_partial_": True}


PLACES = {
    "datamodule-class": (as_datamodule, "checkpoint datamodule"),
    "task-class": (as_task, "checkpoint task"),
    "net-argument": (in_net, "model.net.activation"),
    "data-augment": (as_augment, "data.augment[0]"),
    "optimizer": (as_optimizer, "model.optimizer"),
}
TARGETS = ["subprocess.Popen", "pandas.DataFrame.to_csv", "numpy.savetxt"]


def tampered(tmp: Path, fixture: str, edit: Callable[[dict, dict], None], target: str) -> Path:
    """The fixture checkpoint with ``edit`` applied (plain data still: it loads with weights_only)."""
    checkpoint = torch.load(FIXTURES / f"{fixture}.ckpt", weights_only=True)
    edit(checkpoint, payload(target, tmp))
    path = tmp / f"tampered_{fixture}.ckpt"
    torch.save(checkpoint, path)
    return path


def verb_args(verb: str, ckpt: Path, tmp: Path) -> list[str]:
    run = f"hydra.run.dir={tmp / 'run'}"
    return {
        "eval": ["eval", f"ckpt_path={ckpt}", "callbacks.progress_bar=null", run],
        "predict": ["predict", f"ckpt_path={ckpt}", f"input={CHURN_ROWS}", f"output={tmp / 'p.csv'}", run],
        "sample": ["sample", f"ckpt_path={ckpt}", "n=8", f"output={tmp / 's.csv'}", run],
        "train": ["train", f"ckpt_path={ckpt}", *TINY_TRAIN, run],
    }[verb]


# Every verb that reads a checkpoint, every place in it: the three targets take turns.
MATRIX = [
    pytest.param(verb, place, TARGETS[(i + j) % len(TARGETS)], id=f"{verb}-{place}")
    for i, verb in enumerate(["eval", "predict", "sample", "train"])
    for j, place in enumerate(PLACES)
]


@pytest.mark.parametrize(("verb", "place", "target"), MATRIX)
def test_tampered_checkpoint_is_refused_and_runs_nothing(
    verb: str, place: str, target: str, tmp_path: Path, fail_cli: Callable[..., str]
) -> None:
    edit, key = PLACES[place]
    fixture = "churn_tvae" if verb == "sample" else "churn_mlp"  # sample: a model that can sample
    ckpt = tampered(tmp_path, fixture, edit, target)
    line = fail_cli(*verb_args(verb, ckpt, tmp_path))
    assert f"{key}._target_={target}" in line or f"{key}._target_ '{target}'" in line, line
    assert "not allowed" in line
    assert not (tmp_path / PWNED).exists()
    assert not (tmp_path / "p.csv").exists() and not (tmp_path / "s.csv").exists()
    assert not (tmp_path / "run" / "checkpoints").exists()  # train stopped before Lightning loaded it


@pytest.mark.parametrize(
    "target", ["lit_dl.utils.atomic_write_text", "lightning.pytorch.core.saving.save_hparams_to_yaml"]
)
def test_functions_under_allowed_packages_are_refused(
    target: str, tmp_path: Path, fail_cli: Callable[..., str]
) -> None:
    # The allow-list names packages; under the built-in ones only classes may be built.
    ckpt = tampered(tmp_path, "churn_mlp", in_net, target)
    line = fail_cli(*verb_args("predict", ckpt, tmp_path))
    assert f"model.net.activation._target_={target} is not allowed" in line and "function" in line
    assert not (tmp_path / PWNED).exists()


class Payload:
    """A pickled object whose unpickling would create ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


@pytest.mark.parametrize("verb", ["train", "predict"])
def test_checkpoint_with_pickled_objects_is_refused(
    verb: str, tmp_path: Path, fail_cli: Callable[..., str]
) -> None:
    checkpoint = torch.load(FIXTURES / "churn_mlp.ckpt", weights_only=True)
    checkpoint["callbacks"]["evil"] = Payload(tmp_path / PWNED)
    ckpt = tmp_path / "pickled.ckpt"
    torch.save(checkpoint, ckpt)
    line = fail_cli(*verb_args(verb, ckpt, tmp_path))
    assert "cannot read checkpoint" in line and str(ckpt) in line
    assert not (tmp_path / PWNED).exists()


def test_resume_refuses_callback_paths_outside_their_folder(
    tmp_path: Path, fail_cli: Callable[..., str]
) -> None:
    # Resumed in its run folder, such a checkpoint made Lightning delete precious.txt: a resumed
    # ModelCheckpoint removes the worst of best_k_models, checking only that the path starts
    # with its folder (``checkpoints/../../precious.txt`` does).
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    folder = tmp_path / "old" / "checkpoints"
    folder.mkdir(parents=True)
    checkpoint = torch.load(FIXTURES / "churn_mlp.ckpt", weights_only=True)
    outside = f"{folder}/../../{victim.name}"
    for state in checkpoint["callbacks"].values():
        if "dirpath" in state:
            state.update(dirpath=str(folder), best_model_path=outside, kth_best_model_path=outside)
            state["best_k_models"] = {outside: torch.tensor(1e9)}
    ckpt = folder / "last.ckpt"
    torch.save(checkpoint, ckpt)
    line = fail_cli("train", f"ckpt_path={ckpt}", *TINY_TRAIN, f"hydra.run.dir={tmp_path / 'run'}")
    assert "outside its folder" in line and outside in line
    assert victim.read_text() == "keep me"


# ----------------------------------------------------------------------------- config files
@pytest.mark.parametrize(
    ("override", "key", "target"),
    [
        ("model.optimizer._target_=numpy.savetxt", "model.optimizer", "numpy.savetxt"),
        ("+callbacks.x={_target_:subprocess.Popen,args:[touch,'PWNED']}", "callbacks.x", "subprocess.Popen"),
        ("+logger.x={_target_:numpy.savetxt,fname:'PWNED',X:[1]}", "logger.x", "numpy.savetxt"),
        ("+data.augment=[{_target_:numpy.savetxt,fname:'PWNED',X:[1]}]", "data.augment[0]", "numpy.savetxt"),
        (
            "+trainer.plugins=[{_target_:pandas.DataFrame.to_csv,path_or_buf:'PWNED'}]",
            "trainer.plugins[0]",
            "pandas.DataFrame.to_csv",
        ),
        (
            "model.net.activation={_target_:lit_dl.utils.atomic_write_text,path:'PWNED',text:x}",
            "model.net.activation",
            "lit_dl.utils.atomic_write_text",
        ),
    ],
    ids=["optimizer", "callback", "logger", "augment", "trainer-plugin", "lit-dl-function"],
)
def test_config_naming_foreign_code_is_refused(
    override: str, key: str, target: str, tmp_path: Path, fail_cli: Callable[..., str]
) -> None:
    override = override.replace("PWNED", str(tmp_path / PWNED))
    line = fail_cli("train", override, *TINY_TRAIN, f"hydra.run.dir={tmp_path / 'run'}")
    assert f"{key}._target_={target} is not allowed" in line
    assert not (tmp_path / PWNED).exists()


# Hydra instantiates its callbacks and configures logging from the config before the verb runs.
HYDRA_PAYLOADS = {
    "hydra-callbacks": (
        "callbacks:\n    evil: {_target_: numpy.savetxt, fname: 'PWNED', X: [1]}",
        "hydra.callbacks.evil._target_=numpy.savetxt",
    ),
    "logging-factory": (
        "job_logging:\n    filters:\n      evil: {'()': numpy.savetxt, fname: 'PWNED', X: [1]}",
        "hydra.job_logging.filters.evil.()=numpy.savetxt",
    ),
    "log-file-outside-run": (
        "job_logging:\n    handlers:\n      file: {filename: 'VICTIM', mode: w}",
        "hydra.job_logging.handlers.file.filename=VICTIM",
    ),
}


@pytest.mark.parametrize("case", sorted(HYDRA_PAYLOADS))
def test_config_file_cannot_use_hydra_itself(case: str, tmp_path: Path, fail_cli: Callable[..., str]) -> None:
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    pwned = tmp_path / PWNED
    node, key = (
        text.replace("PWNED", str(pwned)).replace("VICTIM", str(victim)) for text in HYDRA_PAYLOADS[case]
    )
    folder = tmp_path / "configs" / "experiment"
    folder.mkdir(parents=True)
    (folder / "evil.yaml").write_text(f"# @package _global_\nhydra:\n  {node}\n")
    line = fail_cli(
        "train",
        f"hydra.searchpath=[file://{tmp_path / 'configs'}]",
        "experiment=evil",
        *TINY_TRAIN,
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert key in line and "not allowed" in line
    assert not pwned.exists()
    assert victim.read_text() == "keep me"


# ------------------------------------------------------------------------------ data files
def write_cifar_batch(path: Path, content: Any) -> Path:
    with open(path, "wb") as handle:
        pickle.dump(content, handle, protocol=2)
    return path


def test_cifar_batch_in_the_real_format_is_read(tmp_path: Path) -> None:
    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    batch = {
        b"data": data,
        b"labels": [3, 7],
        b"batch_label": b"training batch 1 of 5",
        b"filenames": [b"a.png", b"b.png"],
    }
    images, labels = read_cifar_batches([write_cifar_batch(tmp_path / "data_batch_1", batch)])
    assert images.shape == (2, 3, 32, 32) and images.dtype == np.uint8
    assert np.array_equal(images.reshape(2, 3072), data)
    assert labels.tolist() == [3, 7]


class Reduce:
    """A pickle payload: unpickling calls ``function(*args)``."""

    def __init__(self, function: Any, *args: Any) -> None:
        self.function, self.args = function, args

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.function, self.args)


@pytest.mark.parametrize("how", ["os.system", "pathlib.Path.touch"])
def test_cifar_batch_with_a_payload_is_refused_and_runs_nothing(how: str, tmp_path: Path) -> None:
    pwned = tmp_path / PWNED
    evil = Reduce(os.system, f"touch {pwned}") if how == "os.system" else Reduce(Path.touch, pwned)
    path = write_cifar_batch(tmp_path / "data_batch_1", {b"data": evil, b"labels": [0]})
    with pytest.raises(DataError) as info:
        read_cifar_batches([path])
    message = str(info.value)
    assert str(path) in message and len(message.splitlines()) == 1
    assert not pwned.exists()


# ----------------------------------------------------------------------------------- secrets
def test_secrets_in_the_environment_never_reach_the_run_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "secret-123")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-456")
    run = tmp_path / "run"
    main(["train", *TINY_TRAIN, "logger=many", f"hydra.run.dir={run}"])
    files = [p for p in run.rglob("*") if p.is_file()]
    assert {"config.yaml", "hparams.yaml", "train.log"} <= {p.name for p in files}
    assert list(run.glob("tensorboard/events.out.tfevents.*"))
    for path in files:
        content = path.read_bytes()
        assert b"secret-123" not in content and b"secret-456" not in content, path


# ----------------------------------------------------------------------------------- outputs
def predict_args(tmp: Path, *extra: str, source: Path = CHURN_ROWS) -> list[str]:
    return ["predict", f"ckpt_path={FIXTURES / 'churn_mlp.ckpt'}", f"input={source}", *extra]


def test_predict_never_replaces_a_file_unasked(
    tmp_path: Path, fail_cli: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "p.csv"
    out.write_text("the user's own file\n")
    line = fail_cli(*predict_args(tmp_path, f"output={out}", f"hydra.run.dir={tmp_path / 'a'}"))
    assert "exists" in line and "overwrite=true" in line and str(out) in line
    assert out.read_text() == "the user's own file\n"
    main(predict_args(tmp_path, f"output={out}", "overwrite=true", f"hydra.run.dir={tmp_path / 'b'}"))
    assert len(pd.read_csv(out)) == len(pd.read_csv(CHURN_ROWS))


def test_output_is_never_the_input(tmp_path: Path, fail_cli: Callable[..., str]) -> None:
    source = tmp_path / "rows.csv"
    source.write_bytes(CHURN_ROWS.read_bytes())
    link = tmp_path / "link.csv"
    link.symlink_to(source)
    for spelling in (source, tmp_path / "." / "rows.csv", link):
        line = fail_cli(
            *predict_args(
                tmp_path,
                f"output={spelling}",
                "overwrite=true",
                f"hydra.run.dir={tmp_path / 'r'}",
                source=source,
            )
        )
        assert "is the input file" in line and "also not with overwrite=true" in line
    assert source.read_bytes() == CHURN_ROWS.read_bytes()
    # Nor the checkpoint (a .pt sample over a checkpoint named .pt).
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes((FIXTURES / "digits_vae.ckpt").read_bytes())
    line = fail_cli(
        "sample", f"ckpt_path={ckpt}", f"output={ckpt}", "overwrite=true", f"hydra.run.dir={tmp_path / 's'}"
    )
    assert "is the ckpt_path file" in line
    assert ckpt.read_bytes() == (FIXTURES / "digits_vae.ckpt").read_bytes()


@pytest.mark.parametrize("name", ["README.md", "notes", "run.sh", "samples.csv"])
def test_text_samples_are_written_as_txt_only(
    name: str, tmp_path: Path, fail_cli: Callable[..., str]
) -> None:
    target = tmp_path / name
    target.write_text("the user's own file\n")
    line = fail_cli(
        "sample",
        f"ckpt_path={FIXTURES / 'text_lstm.ckpt'}",
        f"output={target}",
        f"hydra.run.dir={tmp_path / 'r'}",
    )
    assert "text samples are written as .txt" in line
    assert target.read_text() == "the user's own file\n"


def test_relative_output_is_reported_with_its_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    main(predict_args(tmp_path, "output=rel/p.csv", f"hydra.run.dir={tmp_path / 'r'}"))
    assert (tmp_path / "rel" / "p.csv").is_file()
    assert f"to {Path.cwd() / 'rel' / 'p.csv'}" in capsys.readouterr().out


def test_report_never_replaces_a_report_unasked(tmp_path: Path, fail_cli: Callable[..., str]) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "report.md").write_text("an earlier report\n")
    args = ["report", f"real={CHURN_ROWS}", f"synthetic={CHURN_ROWS}", f"output_dir={folder}"]
    line = fail_cli(*args, f"hydra.run.dir={tmp_path / 'r'}")
    assert "already holds a report" in line and "overwrite=true" in line
    assert (folder / "report.md").read_text() == "an earlier report\n"
    # Inputs are never written over, not even with overwrite=true.
    line = fail_cli(
        "report",
        f"real={folder / 'report.md'}",
        f"synthetic={CHURN_ROWS}",
        f"output_dir={folder}",
        "overwrite=true",
        f"hydra.run.dir={tmp_path / 's'}",
    )
    assert "over the real file" in line
    assert (folder / "report.md").read_text() == "an earlier report\n"


# ------------------------------------------------------------------------------ CSV formulas
FORMULA = '=HYPERLINK("http://x","y")'


def test_neutralize_formulas_touches_text_only() -> None:
    frame = pd.DataFrame(
        {
            "id": [FORMULA, "+cmd", "-2+3", "@SUM(A1)", "\tx", "\r=1", "-5", "plain", None],
            "value": [-5, 1, 2, 3, 4, 5, 6, 7, 8],
            "ratio": [-0.5] * 9,
        }
    )
    out = neutralize_formulas(frame)
    assert out["id"].tolist()[:-1] == [
        "'" + FORMULA,
        "'+cmd",
        "'-2+3",
        "'@SUM(A1)",
        "'\tx",
        "'\r=1",
        "-5",
        "plain",
    ]
    assert pd.isna(out["id"].iloc[-1])  # a missing cell stays missing
    assert out["value"].tolist()[0] == -5 and out["value"].dtype == frame["value"].dtype
    assert out["ratio"].tolist()[0] == -0.5
    assert frame["id"][0] == FORMULA  # the caller's frame is left as it was
    assert list(neutralize_formulas(pd.DataFrame(columns=["=cmd", "ok"])).columns) == ["'=cmd", "ok"]


def test_predictions_csv_neutralises_formulas_unless_raw(tmp_path: Path) -> None:
    rows = pd.read_csv(CHURN_ROWS)
    rows.loc[0, "customer_id"] = FORMULA
    source = tmp_path / "rows.csv"
    rows.to_csv(source, index=False)
    safe, raw = tmp_path / "safe.csv", tmp_path / "raw.csv"
    main(predict_args(tmp_path, f"output={safe}", f"hydra.run.dir={tmp_path / 'a'}", source=source))
    main(
        predict_args(
            tmp_path, f"output={raw}", "csv_raw=true", f"hydra.run.dir={tmp_path / 'b'}", source=source
        )
    )
    assert pd.read_csv(safe)["customer_id"][0] == "'" + FORMULA
    assert pd.read_csv(raw)["customer_id"][0] == FORMULA
    assert pd.read_csv(safe)["customer_id"][1:].tolist() == rows["customer_id"][1:].tolist()


def test_sampled_table_csv_neutralises_formulas_unless_raw(tmp_path: Path) -> None:
    samples = pd.DataFrame({"name": [FORMULA, "ok"], "balance": [-5, 3]})
    write_samples(samples, tmp_path / "safe.csv")
    write_samples(samples, tmp_path / "raw.csv", csv_raw=True)
    safe = pd.read_csv(tmp_path / "safe.csv")
    assert safe["name"].tolist() == ["'" + FORMULA, "ok"] and safe["balance"].tolist() == [-5, 3]
    assert pd.read_csv(tmp_path / "raw.csv")["name"][0] == FORMULA
