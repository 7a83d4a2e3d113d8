"""``lit-dl export ckpt_path=... format=onnx|torchscript output=model.onnx``: a model to serve without lit_dl.

The exported graph is the task's network followed by its prediction head, so it returns what
``lit-dl predict`` collects: class probabilities (softmax or sigmoid inside the graph) for
classifiers, values in the target's units for regressors. The batch dimension is dynamic, and
so is the number of time steps of sequence models. Beside the model, ``<output>.json``
(:mod:`lit_dl.export_metadata`) says how to prepare raw inputs. Before anything is written, the
export is run on test rows of the checkpoint's data (random inputs when that data cannot be read),
on two batches of different sizes, and compared with PyTorch; a mismatch writes nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import types
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from lit_dl.checkpoints import task_class
from lit_dl.data.batching import batch_loader
from lit_dl.errors import ConfigError, LitDLError
from lit_dl.export_metadata import export_metadata
from lit_dl.nets.rnn import RecurrentEncoder, run_recurrent
from lit_dl.tasks.classification import set_decision_threshold
from lit_dl.utils import atomic_write, atomic_write_text, to_plain, write_json
from lit_dl.verbs.common import check_output, load_checkpoint, restore_from_checkpoint, start

log = logging.getLogger(__name__)

# format -> the suffixes its file may have (the first names the default output, model<suffix>).
FORMATS: dict[str, tuple[str, ...]] = {"onnx": (".onnx",), "torchscript": (".pt",)}
FORMAT_NAMES = {"onnx": "ONNX models", "torchscript": "TorchScript models"}
# What ONNX export and its check import; all three come with `pip install 'lit-dl[export]'`.
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
# The data whose preparation the metadata can describe (lit_dl.export_metadata).
MODALITIES = ("table", "images", "sequences")
SUPPORTED = "classifiers and regressors of tables, images and sequences (e.g. experiment=churn_mlp)"
# Time steps of zero padding added to the second check batch of a sequence model: the graph must
# accept another length, and padding after a sequence's end must not change its output.
EXTRA_STEPS = 3


class ExportMismatch(LitDLError):
    """The exported model does not compute what the PyTorch model computes."""


@dataclass(frozen=True)
class GraphInput:
    """One input of the exported graph: its name, dtype and shape (names for the dynamic axes)."""

    name: str
    dtype: torch.dtype
    shape: tuple[int | str, ...]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": str(self.dtype).removeprefix("torch."), "shape": list(self.shape)}


def graph_inputs(spec: Any) -> list[GraphInput]:
    """The graph's inputs for the data spec: ``x_num`` (+ ``x_cat``), ``image`` or ``x`` and ``lengths``.

    A table without category embeddings has no ``x_cat`` input (its width would be 0):
    :class:`InferenceModel` hands the network an empty one.
    """
    sizes = spec.inputs
    if spec.modality == "table":
        inputs = [GraphInput("x_num", torch.float32, ("batch", int(sizes["in_features"])))]
        cardinalities = list(sizes.get("cat_cardinalities") or [])
        if cardinalities:
            inputs.append(GraphInput("x_cat", torch.int64, ("batch", len(cardinalities))))
        return inputs
    if spec.modality == "images":
        height, width = sizes["image_size"]
        return [GraphInput("image", torch.float32, ("batch", int(sizes["in_channels"]), height, width))]
    return [
        GraphInput("x", torch.float32, ("batch", "time", int(sizes["in_features"]))),
        GraphInput("lengths", torch.int64, ("batch",)),
    ]


def output_name(task_type: str) -> str:
    return {"classification": "probabilities", "multilabel": "probabilities", "regression": "prediction"}.get(
        task_type, "output"
    )


def describe_output(spec: Any, example: Tensor) -> dict[str, Any]:
    """Name, dtype, shape and meaning of the graph's output (``example``: its value on a check batch)."""
    name = output_name(spec.task_type)
    described: dict[str, Any] = {
        "name": name,
        "dtype": str(example.dtype).removeprefix("torch."),
        "shape": ["batch", *example.shape[1:]],
    }
    if name == "probabilities":
        described["columns"] = [f"prob_{c}" for c in spec.classes or []]
        described["description"] = "one probability per class, in the order of classes"
    elif name == "prediction":
        described["description"] = "the predicted value in the target's units"
    return described


class InferenceModel(nn.Module):
    """The task's network and prediction head: graph inputs -> what ``lit-dl predict`` collects.

    Args:
        task: a restored :class:`~lit_dl.tasks.supervised.SupervisedTask` in eval mode.
        empty_categories: the network also takes ``x_cat`` but the table has no embedded
            categories: pass a ``(batch, 0)`` tensor, as the datamodule's batches do.
    """

    def __init__(self, task: nn.Module, empty_categories: bool = False) -> None:
        super().__init__()
        # The task's networks are children of this module (their weights become the graph's weights);
        # the task itself, a LightningModule, stays out of the module tree: TorchScript reads every
        # property of the modules it converts, and a LightningModule's `trainer` raises without one.
        object.__setattr__(self, "task", task)
        self.networks = nn.ModuleDict(
            {name: child for name, child in task.named_children() if any(True for _ in child.parameters())}
        )
        self.empty_categories = empty_categories

    def forward(self, *inputs: Tensor) -> Tensor:
        if self.empty_categories:
            inputs = (*inputs, inputs[0].new_zeros((inputs[0].shape[0], 0), dtype=torch.long))
        return self.task.predict_output(self.task(*inputs))


def _unpacked_forward(
    self: RecurrentEncoder, x: Tensor, lengths: Tensor | None = None, state: Any = None
) -> tuple[Tensor, Tensor, Any]:
    """:meth:`RecurrentEncoder.forward` without packing, for a one-directional layer.

    Packing sorts the batch by its length values, which neither ``torch.export`` (ONNX) nor
    tracing can keep dynamic. A one-directional layer run over the zero-padded batch computes
    the same outputs up to each sequence's end (the padding comes after it), so the state at
    ``lengths - 1`` is the packed one; steps after the end are masked by the classifier's mean
    pooling. The check against the packed PyTorch model in :func:`export` confirms it.
    """
    outputs, state = run_recurrent(self.rnn, x, state)
    if lengths is None:
        return outputs, outputs[:, -1], state
    index = (lengths.clamp_min(1) - 1).to(outputs.device)
    last = outputs.gather(1, index.view(-1, 1, 1).expand(-1, 1, outputs.shape[-1])).squeeze(1)
    return outputs, last, state


@contextlib.contextmanager
def exportable(model: nn.Module) -> Iterator[None]:
    """Within the block, recurrent encoders of ``model`` run without packing (:func:`_unpacked_forward`)."""
    encoders = [m for m in model.modules() if isinstance(m, RecurrentEncoder)]
    if any(e.rnn.bidirectional for e in encoders):
        raise ConfigError(
            "a bidirectional recurrent net needs packed sequences (its backward pass must start at each "
            "sequence's end), which torch.export cannot trace: export a model trained with "
            "model.net.bidirectional=false"
        )
    for encoder in encoders:
        encoder.forward = types.MethodType(_unpacked_forward, encoder)  # an instance attribute
    try:
        yield
    finally:
        for encoder in encoders:
            del encoder.forward  # back to the class's packing forward


@contextlib.contextmanager
def quiet_exporters() -> Iterator[None]:
    """Within the block, no warnings and only warnings of the ONNX graph optimiser's loggers.

    The exporters warn about tracing details (Python values read from tensors, torch.jit's
    deprecation, LSTM weights kept as attributes) that the check on another batch shape settles,
    and the optimiser logs each of its passes at INFO level, which Hydra would print.
    """
    loggers = [logging.getLogger(name) for name in ("onnx_ir", "onnxscript")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def check_format(name: Any) -> str:
    """The format, lower case; one line naming the choices, or the missing packages for ONNX."""
    fmt = str(name).lower()
    if fmt not in FORMATS:
        raise ConfigError(f"format={name} : choose format=onnx or format=torchscript")
    if fmt == "onnx":
        missing = [p for p in ONNX_PACKAGES if importlib.util.find_spec(p) is None]
        if missing:
            raise ConfigError(
                f"format=onnx needs {', '.join(missing)}: pip install 'lit-dl[export]' "
                "(or export with format=torchscript)"
            )
    return fmt


def check_exportable(task_cls: type, ckpt_path: str) -> None:
    """Refuse, before restoring it, a task class that predicts nothing to export (GANs, VAEs)."""
    from lit_dl.tasks.generative import GenerativeTask
    from lit_dl.tasks.supervised import SupervisedTask

    if issubclass(task_cls, GenerativeTask):
        raise ConfigError(
            f"{ckpt_path} holds a generative model ({task_cls.__name__}): lit-dl export writes {SUPPORTED}; "
            "generate samples with lit-dl sample"
        )
    if not issubclass(task_cls, SupervisedTask):
        raise ConfigError(f"{task_cls.__name__} cannot be exported: lit-dl export writes {SUPPORTED}")


def test_batch(
    task: Any, datamodule: Any, layout: Sequence[GraphInput], rows: int, seed: int
) -> tuple[tuple[Tensor, ...], str]:
    """Inputs of up to ``rows`` test rows of the checkpoint's data, and what they are.

    When that data cannot be read any more (a file moved), random inputs of the graph's shapes.
    """
    try:
        datamodule.setup("test")
        dataset = datamodule.datasets["test"]
        if len(dataset) >= 2:
            batch = next(iter(batch_loader(dataset, rows, shuffle=False)))
            inputs, _ = task.split_batch(batch)
            return tuple(inputs)[: len(layout)], f"{len(inputs[0])} test rows"
        reason = "its test split has fewer than 2 rows"
    except LitDLError as err:
        reason = str(err)
    return random_inputs(task.data_spec, layout, rows, seed), f"{rows} random inputs ({reason})"


def random_inputs(spec: Any, layout: Sequence[GraphInput], rows: int, seed: int) -> tuple[Tensor, ...]:
    """Inputs of the graph's shapes: standard-normal features, valid category indices and lengths."""
    generator = torch.Generator().manual_seed(seed)
    rows, steps = max(rows, 2), 12
    inputs = []
    for graph_input in layout:
        shape = [rows if d == "batch" else steps if d == "time" else int(d) for d in graph_input.shape]
        if graph_input.name == "x_cat":
            cards = torch.tensor(spec.inputs["cat_cardinalities"])
            inputs.append((torch.rand(shape, generator=generator) * cards).long())
        elif graph_input.name == "lengths":
            inputs.append(torch.randint(1, steps + 1, shape, generator=generator))
        else:
            inputs.append(torch.randn(shape, generator=generator))
    return tuple(inputs)


def second_batch(inputs: Sequence[Tensor], layout: Sequence[GraphInput]) -> tuple[Tensor, ...]:
    """Another batch shape from the same rows: half of them; sequences get zero steps after their end."""
    rows = max(1, len(inputs[0]) // 2)
    variant = []
    for tensor, graph_input in zip(inputs, layout, strict=True):
        tensor = tensor[:rows]
        if "time" in graph_input.shape:
            tensor = torch.cat([tensor, tensor.new_zeros((rows, EXTRA_STEPS, *tensor.shape[2:]))], dim=1)
        variant.append(tensor)
    return tuple(variant)


def dynamic_shapes(layout: Sequence[GraphInput]) -> tuple[tuple[dict[int, Any], ...]]:
    """``torch.export`` dims of the graph's named axes (one object per name: ``batch`` is shared)."""
    names = {d for g in layout for d in g.shape if isinstance(d, str)}
    dims = {name: torch.export.Dim(name) for name in sorted(names)}
    per_input = tuple({axis: dims[d] for axis, d in enumerate(g.shape) if isinstance(d, str)} for g in layout)
    return (per_input,)  # InferenceModel.forward(*inputs): one argument holding all inputs


def write_onnx(
    model: nn.Module, example: tuple[Tensor, ...], layout: Sequence[GraphInput], path: Path
) -> None:
    """ONNX by torch.export (``dynamo=True``, torch's default since 2.9); recurrent nets by the
    TorchScript-based exporter (``dynamo=False``), also the fallback when torch.export fails.

    torch.export cannot keep an LSTM's, GRU's or RNN's number of time steps dynamic: computing
    ``aten.lstm``'s output shape decomposes it step by step, which adds the guard
    ``time == <the example's length>`` (torch 2.14; whether the ONNX graph still accepts other
    lengths then depends on the example's sizes). The TorchScript-based exporter, deprecated but
    shipped with torch 2.14, writes one ONNX ``LSTM``/``GRU``/``RNN`` node whose time axis is
    dynamic. Either way the check in :func:`export` runs the file on another batch size and length.
    """
    names = {
        "input_names": [g.name for g in layout],
        "output_names": [output_name(model.task.data_spec.task_type)],
    }
    recurrent = any(isinstance(m, nn.RNNBase) for m in model.modules())
    if not recurrent:
        try:
            torch.onnx.export(
                model,
                example,
                str(path),
                **names,
                dynamic_shapes=dynamic_shapes(layout),
                dynamo=True,
                external_data=False,  # the weights inside the file: one file to hand on
                verbose=False,
            )
            return
        except Exception as err:  # whatever torch.export trips on; the check below judges the fallback
            first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
            log.warning(
                "torch.export could not export the network (%s); using the TorchScript-based exporter", first
            )
    axes = {g.name: {i: d for i, d in enumerate(g.shape) if isinstance(d, str)} for g in layout}
    torch.onnx.export(
        model,
        example,
        str(path),
        **names,
        dynamic_axes={**axes, names["output_names"][0]: {0: "batch"}},
        dynamo=False,
    )


def write_torchscript(
    model: nn.Module, example: tuple[Tensor, ...], layout: Sequence[GraphInput], path: Path
) -> None:
    """TorchScript by ``torch.jit.trace``.

    torch 2.14 deprecates ``torch.jit`` in favour of ``torch.export`` (``.pt2``), but an exported
    program fixes the number of time steps of an LSTM (``aten.lstm`` is specialised to the
    example's length), while a trace keeps it, and TorchScript files load in C++ (libtorch)
    without Python. The check on a batch of another size and length in :func:`export`
    catches anything a trace would have fixed.
    """
    traced = torch.jit.trace(model, example, check_trace=False)
    torch.jit.save(traced, str(path))


WRITERS: dict[str, Callable[[nn.Module, tuple[Tensor, ...], Sequence[GraphInput], Path], None]] = {
    "onnx": write_onnx,
    "torchscript": write_torchscript,
}


def run_exported(
    path: Path, fmt: str, layout: Sequence[GraphInput], batches: Sequence[tuple[Tensor, ...]]
) -> list[np.ndarray]:
    """The exported file's outputs on each batch, by onnxruntime (ONNX) or torch.jit.load (TorchScript)."""
    if fmt == "onnx":
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = (
            3  # errors only: its optimiser's notes on constant folding are noise here
        )
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return [
            session.run(None, {g.name: t.numpy() for g, t in zip(layout, batch, strict=True)})[0]
            for batch in batches
        ]
    loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return [loaded(*batch).numpy() for batch in batches]


def max_difference(expected: Sequence[Tensor], actual: Sequence[np.ndarray]) -> float:
    """The largest difference over all batches: absolute for values within +-1 (probabilities),
    relative beyond (a regressor's thousands carry float32's relative error); inf for another shape."""
    worst = 0.0
    for want, got in zip(expected, actual, strict=True):
        if tuple(got.shape) != tuple(want.shape):
            return float("inf")
        reference = want.double().numpy()
        scaled = np.abs(got.astype(np.float64) - reference) / np.maximum(1.0, np.abs(reference))
        worst = max(worst, float(scaled.max(initial=0.0)))
    return worst


def checkpoint_facts(path: str, checkpoint: dict[str, Any]) -> dict[str, Any]:
    """Where the model came from: the file, its SHA-256, and the lit_dl version and classes it names."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    meta = checkpoint.get("lit_dl") or {}
    return {
        "path": str(Path(path).absolute()),
        "sha256": digest.hexdigest(),
        "lit_dl_version": meta.get("version"),
        "task": meta.get("task"),
        "datamodule": meta.get("datamodule"),
    }


def write_checked(
    output: Path,
    fmt: str,
    model: InferenceModel,
    batches: Sequence[tuple[Tensor, ...]],
    expected: Sequence[Tensor],
    layout: Sequence[GraphInput],
    tolerance: float,
    source: str,
) -> float:
    """Export ``model`` to ``output`` (through a temporary file beside it) when the file's outputs on
    ``batches`` are within ``tolerance`` of ``expected``; else raise :class:`ExportMismatch` and leave
    nothing. Returns the largest absolute difference."""
    checked: dict[str, float] = {}

    def write(tmp: Path) -> None:
        with quiet_exporters():
            with exportable(model.task):
                WRITERS[fmt](model, batches[0], layout, tmp)
            try:
                outputs = run_exported(tmp, fmt, layout, batches)
            except Exception as err:  # e.g. a batch size or length the graph fixed to the example's
                first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
                raise ExportMismatch(
                    f"the {fmt} export fails on {source} ({first[:300]}): nothing written; report it"
                ) from err
        difference = max_difference(expected, outputs)
        if not difference <= tolerance:
            raise ExportMismatch(
                f"the {fmt} export differs from PyTorch by {difference:.3g} (tolerance={tolerance:g}) on "
                f"{source}: nothing written; report it, or accept the difference with a higher tolerance="
            )
        checked["difference"] = difference

    atomic_write(output, write)
    return checked["difference"]


def export(cfg: DictConfig) -> Path:
    """Export the model of ``cfg.ckpt_path`` as ``cfg.format`` to ``cfg.output`` (checked against
    PyTorch first) and its metadata to ``<output>.json``; return the model's path."""
    start(cfg)
    fmt = check_format(cfg.format)
    tolerance, rows = float(cfg.tolerance), cfg.check_rows
    if not isinstance(rows, int) or isinstance(rows, bool) or rows < 2:
        raise ConfigError(f"check_rows must be a whole number of at least 2, got {rows!r}")
    if not tolerance >= 0:
        raise ConfigError(f"tolerance must be a number >= 0, got {cfg.tolerance!r}")
    overwrite = bool(cfg.get("overwrite", False))
    inputs = {"ckpt_path": cfg.ckpt_path}
    output = check_output(
        cfg.output or Path(cfg.paths.output_dir) / f"model{FORMATS[fmt][0]}",
        suffixes=FORMATS[fmt],
        what=FORMAT_NAMES[fmt],
        overwrite=overwrite,
        inputs=inputs,
    )
    metadata_path = check_output(
        output.with_name(output.name + ".json"),
        suffixes=(".json",),
        what="metadata",
        overwrite=overwrite,
        inputs=inputs,
    )
    checkpoint = load_checkpoint(cfg.ckpt_path)
    check_exportable(task_class(checkpoint, cfg.ckpt_path), cfg.ckpt_path)
    task, datamodule = restore_from_checkpoint(cfg.ckpt_path, to_plain(cfg.get("data") or {}), checkpoint)
    if cfg.get("threshold") is not None:  # the metadata's decision_threshold, as predict's threshold=
        set_decision_threshold(task, cfg.threshold)
    spec = task.data_spec
    if spec.modality not in MODALITIES:
        raise ConfigError(
            f"lit-dl export writes {SUPPORTED}; {type(task).__name__} on {spec.modality} "
            f"({type(datamodule).__name__}) is not supported"
        )
    if hasattr(task, "_run_net"):  # a compiled network (model.compile=true): export the plain one it wraps
        object.__setattr__(task, "_run_net", task.net)
    layout = graph_inputs(spec)
    example, source = test_batch(task, datamodule, layout, rows, int(cfg.seed))
    batches = [example, second_batch(example, layout)]
    model = InferenceModel(task, empty_categories=spec.modality == "table" and len(layout) == 1).eval()
    model.requires_grad_(False)  # weights, not parameters to train: outputs need no detach()
    with torch.no_grad():
        expected = [model(*batch).float() for batch in batches]  # the packing forward: the reference
    metadata = export_metadata(
        task,
        datamodule,
        model_format=fmt,
        inputs=[g.describe() for g in layout],
        outputs=[describe_output(spec, expected[0])],
        checkpoint=checkpoint_facts(cfg.ckpt_path, checkpoint),
    )
    difference = write_checked(output, fmt, model, batches, expected, layout, tolerance, source)
    try:
        write_json(metadata_path, metadata)
    except BaseException:
        # Never leave a new model beside an older export's preprocessing (overwrite=true).
        metadata_path.unlink(missing_ok=True)
        raise
    atomic_write_text(Path(cfg.paths.output_dir) / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    shapes = " and ".join(f"{len(b[0])}" for b in batches)
    print(
        f"checked the {fmt} export against PyTorch on {source} (batches of {shapes}): "
        f"max difference {difference:.2e} (tolerance {tolerance:g})"
    )
    print(f"wrote {output} and {metadata_path}")
    return output
