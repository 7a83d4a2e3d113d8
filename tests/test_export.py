"""``lit-dl export``: ONNX and TorchScript files that compute what the PyTorch model computes, their
metadata, served without lit_dl (examples/serve_onnx.py), and one-line errors."""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest
import torch

from lit_dl import __version__
from lit_dl.checkpoints import restore
from lit_dl.cli import main
from lit_dl.data.batching import batch_loader
from lit_dl.data.churn import make_churn_frame
from lit_dl.errors import ConfigError, DataError
from lit_dl.nets.rnn import RecurrentClassifier
from lit_dl.verbs import export as export_verb

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "debug=limit",
    "trainer.max_epochs=1",
    "callbacks.progress_bar=null",
    "callbacks.model_summary=null",
    "callbacks.plots=null",
]
MODELS = {
    "mlp": ["experiment=churn_mlp", "data.n_rows=400", "model.net.hidden_sizes=[16]"],
    # Category indices for embeddings: a second graph input, x_cat.
    "mlp_embedding": [
        "experiment=churn_mlp",
        "data.n_rows=400",
        "model.net.hidden_sizes=[16]",
        "data.categorical_encoding=embedding",
    ],
    "cnn": ["experiment=digits_cnn", "model.net.channels=[4,8]"],
    "lstm": [
        "experiment=churn_lstm",
        "data.n_customers=120",
        "data.max_months=12",
        "model.net.hidden_size=8",
    ],
}

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings(r"ignore:.*isinstance\(treespec, LeafSpec\).*"),
]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``checkpoints(name)``: the best checkpoint of a tiny run of that model, trained on first use."""
    root, made = tmp_path_factory.mktemp("export_runs"), {}

    def checkpoint(name: str) -> Path:
        if name not in made:
            main(["train", *MODELS[name], *TINY, f"hydra.run.dir={root / name}"])
            made[name] = root / name / "checkpoints" / "best.ckpt"
        return made[name]

    return checkpoint


@pytest.fixture(scope="module")
def onnx_exports(
    checkpoints: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], Path]:
    """``onnx_exports(name)``: the folder of that model's ``lit-dl export format=onnx``, made on first use."""
    root, made = tmp_path_factory.mktemp("onnx_exports"), {}

    def exported(name: str) -> Path:
        if name not in made:
            made[name] = export(checkpoints(name), root / name, "format=onnx")
        return made[name]

    return exported


def export(ckpt: Path, run_dir: Path, *overrides: str) -> Path:
    main(["export", f"ckpt_path={ckpt}", *overrides, f"hydra.run.dir={run_dir}"])
    return run_dir


def check_batches(ckpt: Path) -> tuple[list[tuple[torch.Tensor, ...]], list[torch.Tensor]]:
    """Two test batches of other sizes than the verb's own check uses (sequences: one padded longer)
    as the graph's inputs, and the restored PyTorch model's outputs on them."""
    task, datamodule = restore(ckpt)
    datamodule.setup("test")
    full, _ = task.split_batch(next(iter(batch_loader(datamodule.datasets["test"], 7, shuffle=False))))
    small = tuple(t[:3] for t in full)
    if task.data_spec.modality == "sequences":
        x, lengths = small
        small = (torch.cat([x, torch.zeros(3, 5, x.shape[2])], dim=1), lengths)  # 5 steps after every end
    with torch.no_grad():
        expected = [task.predict_output(task(*inputs)) for inputs in (full, small)]
    # A table with one-hot categories has an empty x_cat (width 0): the graph has no such input.
    graph_inputs = [tuple(t for t in inputs if t.shape[-1] != 0) for inputs in (full, small)]
    return graph_inputs, expected


# (The one-hot MLP's ONNX export is checked by serving it on raw rows, below.)
@pytest.mark.parametrize("model", ["mlp_embedding", "cnn", "lstm"])
def test_onnx_and_torchscript_exports_compute_the_pytorch_probabilities(
    model: str,
    checkpoints: Callable[[str], Path],
    onnx_exports: Callable[[str], Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for package in ("onnx", "onnxscript"):
        pytest.importorskip(package)
    onnxruntime = pytest.importorskip("onnxruntime")
    ckpt = checkpoints(model)
    batches, expected = check_batches(ckpt)
    for probs in expected:  # what the graphs must return: class probabilities, not logits
        assert torch.allclose(probs.sum(dim=1), torch.ones(len(probs)), atol=1e-5)

    capsys.readouterr()
    onnx_dir = onnx_exports(model)
    printed = capsys.readouterr().out
    assert "checked the onnx export against PyTorch on" in printed and "max difference" in printed
    session = onnxruntime.InferenceSession(str(onnx_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    for batch, probs in zip(batches, expected, strict=True):
        [got] = session.run(None, {n: t.numpy() for n, t in zip(names, batch, strict=True)})
        np.testing.assert_allclose(got, probs.numpy(), atol=1e-4)

    ts_dir = export(ckpt, tmp_path / "ts", "format=torchscript", "output=" + str(tmp_path / "ts" / "net.pt"))
    assert (ts_dir / "net.pt.json").is_file() and not (ts_dir / "model.pt").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated in torch 2.14
        loaded = torch.jit.load(str(ts_dir / "net.pt"))
    for batch, probs in zip(batches, expected, strict=True):
        np.testing.assert_allclose(loaded(*batch).numpy(), probs.numpy(), atol=1e-4)

    metadata = json.loads((onnx_dir / "model.onnx.json").read_text())
    assert [i["name"] for i in metadata["inputs"]] == names
    assert {"mlp_embedding": ["x_num", "x_cat"], "cnn": ["image"], "lstm": ["x", "lengths"]}[model] == names
    assert all(i["shape"][0] == "batch" for i in metadata["inputs"])
    assert metadata["outputs"][0]["name"] == "probabilities"
    assert metadata["outputs"][0]["columns"] == [f"prob_{c}" for c in metadata["classes"]]
    assert metadata["lit_dl_version"] == __version__ and metadata["format"] == "onnx"
    assert metadata["checkpoint"]["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    if model == "cnn":
        assert metadata["classes"] == [str(i) for i in range(10)] and "decision_threshold" not in metadata
        prep = metadata["preprocessing"]
        assert (prep["channels"], prep["height"], prep["width"]) == (1, 8, 8) and len(prep["mean"]) == 1
    else:
        # The threshold the checkpoint holds (chosen on validation), which lit-dl predict applies too.
        state = torch.load(ckpt, weights_only=True)["state_dict"]
        assert metadata["classes"] == ["No", "Yes"] and metadata["positive_class"] == "Yes"
        assert metadata["decision_threshold"] == float(state.get("decision_threshold", 0.5))
    if model == "lstm":
        assert metadata["inputs"][0]["shape"][:2] == ["batch", "time"]
        assert metadata["preprocessing"]["id_column"] == "customer_id"


def load_example() -> ModuleType:
    """examples/serve_onnx.py, imported by path as a user would run it (it does not import lit_dl)."""
    path = ROOT / "examples" / "serve_onnx.py"
    tree = ast.parse(path.read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not {name.split(".")[0] for name in imported} - {
        "__future__",
        "json",
        "sys",
        "pathlib",
        "typing",
        "numpy",
        "onnxruntime",
        "pandas",
    }
    spec = importlib.util.spec_from_file_location("serve_onnx", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("encoding", ["onehot", "embedding"])
def test_metadata_prepares_raw_csv_rows_as_lit_dl_predict_does(
    encoding: str, checkpoints: Callable[[str], Path], onnx_exports: Callable[[str], Path], tmp_path: Path
) -> None:
    for package in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(package)
    name = "mlp" if encoding == "onehot" else "mlp_embedding"
    ckpt = checkpoints(name)
    rows = make_churn_frame(40, seed=11).drop(columns=["churn"])
    rows.loc[0, "contract"] = "Three year"  # a category never seen in training
    rows.loc[1, "monthly_charges"] = np.nan  # a missing number: the training median
    rows.loc[2, "region"] = "?"  # a missing-value marker: the missing category
    rows.loc[3, "payment_method"] = "  Mailed check "  # blanks around a category
    rows.loc[4, "total_charges"] = " "  # numbers stored as text, one blank
    source = tmp_path / "new.csv"
    rows.to_csv(source, index=False)
    output = tmp_path / "predictions.csv"
    main(
        [
            "predict",
            f"ckpt_path={ckpt}",
            f"input={source}",
            f"output={output}",
            f"hydra.run.dir={tmp_path / 'p'}",
        ]
    )
    model = onnx_exports(name) / "model.onnx"

    serve = load_example()
    metadata = serve.read_metadata(model)
    assert [i["name"] for i in metadata["inputs"]] == (
        ["x_num"] if encoding == "onehot" else ["x_num", "x_cat"]
    )
    served = serve.predict_table(model, serve.read_rows(source, metadata))
    expected = pd.read_csv(output)
    assert (
        list(served.columns) == list(expected.columns) == ["customer_id", "prob_No", "prob_Yes", "prediction"]
    )
    assert served["customer_id"].tolist() == rows["customer_id"].tolist()
    np.testing.assert_allclose(served[["prob_No", "prob_Yes"]], expected[["prob_No", "prob_Yes"]], atol=1e-5)
    assert served["prediction"].tolist() == expected["prediction"].tolist()

    # The command-line entry of the example writes the same table.
    written = tmp_path / "served.csv"
    serve.main([str(model), str(source), str(written)])
    pd.testing.assert_frame_equal(pd.read_csv(written), served, check_dtype=False, atol=1e-6)


def test_a_mismatch_is_an_error_and_leaves_no_file(
    checkpoints: Callable[[str], Path],
    fail_cli: Callable[..., str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ckpt = checkpoints("mlp")
    real = export_verb.run_exported

    def off_by_a_little(*args, **kwargs):  # type: ignore[no-untyped-def]
        return [out + 1e-3 for out in real(*args, **kwargs)]

    monkeypatch.setattr(export_verb, "run_exported", off_by_a_little)
    output = tmp_path / "out" / "model.pt"
    line = fail_cli(
        "export",
        f"ckpt_path={ckpt}",
        "format=torchscript",
        f"output={output}",
        f"hydra.run.dir={tmp_path / 'r'}",
    )
    assert "differs from PyTorch by 0.001" in line and "nothing written" in line
    assert not output.parent.exists() or list(output.parent.iterdir()) == []

    # A looser tolerance accepts the same difference; threshold= sets the metadata's decision threshold.
    export(ckpt, tmp_path / "r2", "format=torchscript", f"output={output}", "tolerance=0.01", "threshold=0.3")
    assert output.is_file() and json.loads(Path(f"{output}.json").read_text())[
        "decision_threshold"
    ] == pytest.approx(0.3)


def test_random_inputs_check_the_export_when_the_training_data_is_gone(
    checkpoints: Callable[[str], Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ckpt = checkpoints("lstm")

    def gone(self, stage=None):  # type: ignore[no-untyped-def]
        raise DataError("data file not found: /somewhere/activity.csv (check data.path)")

    monkeypatch.setattr("lit_dl.data.sequences.SequenceDataModule.setup", gone)
    export(ckpt, tmp_path / "r", "format=torchscript", "check_rows=6")
    printed = capsys.readouterr().out
    assert "on 6 random inputs (data file not found" in printed and "batches of 6 and 3" in printed


def test_bad_requests_are_one_line(
    checkpoints: Callable[[str], Path],
    fail_cli: Callable[..., str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ckpt = checkpoints("mlp")
    run = f"hydra.run.dir={tmp_path / 'r'}"
    assert "choose format=onnx or format=torchscript" in fail_cli(
        "export", f"ckpt_path={ckpt}", "format=pmml", run
    )
    line = fail_cli("export", f"ckpt_path={ckpt}", "format=onnx", f"output={tmp_path / 'model.pt'}", run)
    assert "ONNX models are written as .onnx" in line
    taken = tmp_path / "taken.onnx"
    taken.write_bytes(b"mine")
    assert "add overwrite=true" in fail_cli("export", f"ckpt_path={ckpt}", f"output={taken}", run)
    assert taken.read_bytes() == b"mine"
    assert "check_rows must be" in fail_cli("export", f"ckpt_path={ckpt}", "check_rows=1", run)

    # A generative model is refused before anything is built, naming what export writes.
    checkpoint = torch.load(ckpt, weights_only=True)
    checkpoint["lit_dl"]["task"] = "lit_dl.tasks.vae.VAETask"
    vae = tmp_path / "vae.ckpt"
    torch.save(checkpoint, vae)
    line = fail_cli("export", f"ckpt_path={vae}", run)
    assert "generative model (VAETask)" in line and "lit-dl sample" in line

    monkeypatch.setattr(export_verb, "ONNX_PACKAGES", ("onnx", "onnx_runtime_not_installed"))
    line = fail_cli("export", f"ckpt_path={ckpt}", "format=onnx", run)
    assert "pip install 'lit-dl[export]'" in line and "onnx_runtime_not_installed" in line


def test_recurrent_nets_export_without_packing_and_get_it_back() -> None:
    net = RecurrentClassifier(3, 2, hidden_size=4, pooling="mean").eval()
    x, lengths = torch.randn(4, 6, 3), torch.tensor([6, 1, 3, 4])
    x[1, 1:] = 0.0
    packed = net(x, lengths)
    with export_verb.exportable(net):
        assert "forward" in vars(net.encoder)  # the packing-free forward is in place
        torch.testing.assert_close(net(x, lengths), packed)
    assert "forward" not in vars(net.encoder)  # and gone after the export
    bidirectional = RecurrentClassifier(3, 2, hidden_size=4, bidirectional=True)
    with pytest.raises(ConfigError, match="bidirectional"), export_verb.exportable(bidirectional):
        pass


def test_the_docs_show_the_serving_example_as_it_is() -> None:
    page = (ROOT / "docs" / "export.md").read_text()
    block = page.split("```python\n", 1)[1].split("```", 1)[0]
    assert block == (ROOT / "examples" / "serve_onnx.py").read_text()
