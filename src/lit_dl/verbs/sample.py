"""``lit-dl sample ckpt_path=... n=64 output=samples.png``: generate images, tables or text from a model."""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from torchvision.utils import save_image

from lit_dl.callbacks.samples import READABLE_SIDE, readable_grid
from lit_dl.checkpoints import task_class
from lit_dl.errors import ConfigError
from lit_dl.utils import atomic_write, atomic_write_text, to_plain, write_csv
from lit_dl.verbs.common import check_output, load_checkpoint, restore_from_checkpoint, start

# Options of configs/sample.yaml handed to the task's ``sample`` method when it takes them;
# a task passes over the ones that do not apply to it (a prompt means nothing to an image GAN).
SAMPLE_OPTIONS = ("prompt", "length", "temperature", "top_k", "n", "unknown", "condition")


def sampling_options(sampler: Any, cfg: DictConfig) -> dict[str, Any]:
    """The options of ``cfg`` that the task's ``sample`` method accepts, as plain values."""
    accepted = inspect.signature(sampler).parameters
    # Unset options (null) are left out, so the model's own default applies (e.g. 64 images, 1 text).
    options = {
        name: to_plain(cfg.get(name))
        for name in SAMPLE_OPTIONS
        if name in accepted and cfg.get(name) is not None
    }
    if "prompt" in options:
        # `prompt=123` or `prompt=true` reach us as a number or a boolean: the user meant the text.
        options["prompt"] = "" if options["prompt"] is None else str(options["prompt"])
    return options


def format_samples(samples: list[str], prompt: str) -> str:
    """The prompt and its continuation; several samples under ``--- sample i ---`` headers."""
    if len(samples) == 1:
        return f"{prompt}{samples[0]}\n"
    return "\n".join(f"--- sample {i} ---\n{prompt}{text}\n" for i, text in enumerate(samples, start=1))


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
TABLE_SUFFIXES = (".csv", ".parquet")
# The files each kind of sample is written as (the first is the default, samples<suffix>). Text only
# as .txt: a README.md or a suffix-less script of the user's is no place for samples.
OUTPUT_SUFFIXES = {"images": (*IMAGE_SUFFIXES, ".pt"), "tables": TABLE_SUFFIXES, "texts": (".txt",)}


def sample_kind(samples_or_task: Any) -> str | None:
    """``images``, ``tables`` or ``texts``: what a task class samples (None: not known before it
    samples) or what a batch of samples is."""
    from lit_dl.tasks.generative import ImageGenerativeTask, TableGenerativeTask
    from lit_dl.tasks.language_model import LanguageModelTask

    if isinstance(samples_or_task, type):
        kinds = {ImageGenerativeTask: "images", TableGenerativeTask: "tables", LanguageModelTask: "texts"}
        return next((kind for cls, kind in kinds.items() if issubclass(samples_or_task, cls)), None)
    if isinstance(samples_or_task, torch.Tensor):
        return "images"
    return "tables" if isinstance(samples_or_task, pd.DataFrame) else "texts"


def write_samples(
    samples: Any, output: Path, prompt: str = "", csv_raw: bool = False, grid_side: int = READABLE_SIDE
) -> str:
    """Write texts, images (a grid, or the raw tensor as ``.pt``) or a table by ``output``'s suffix.

    Returns what to print: the text itself, or a line saying what was written. A table's text
    cells that a spreadsheet would run as a formula get a leading ``'`` in a CSV unless ``csv_raw``.
    A grid is enlarged by a whole factor (nearest neighbour: the pixel values stay exact) to at
    least ``grid_side`` pixels on its longer side (0: native size); ``.pt`` keeps the native tensor.
    """
    suffix = output.suffix.lower()
    if isinstance(samples, torch.Tensor):
        if suffix == ".pt":
            atomic_write(output, lambda tmp: torch.save(samples, tmp))
        elif suffix in IMAGE_SUFFIXES:
            nrow = math.ceil(math.sqrt(len(samples)))
            grid = readable_grid(samples, nrow, grid_side)
            atomic_write(
                output, lambda tmp: save_image(grid, tmp, format=suffix.lstrip(".").replace("jpg", "jpeg"))
            )
        else:
            raise ConfigError(
                f"output={output} : images are written as {', '.join(IMAGE_SUFFIXES)} (a grid) or .pt"
            )
        return f"{len(samples)} images of shape {list(samples.shape[1:])}"
    if isinstance(samples, pd.DataFrame):
        if suffix == ".csv":
            write_csv(samples, output, raw=csv_raw)
        elif suffix == ".parquet":
            atomic_write(output, lambda tmp: samples.to_parquet(tmp, index=False))
        else:
            raise ConfigError(f"output={output} : tables are written as .csv or .parquet")
        return f"{len(samples)} rows x {samples.shape[1]} columns"
    if suffix != ".txt":
        raise ConfigError(f"output={output} : text samples are written as .txt")
    text = format_samples(samples, prompt)
    atomic_write_text(output, text)
    print(text, end="")
    return f"{len(samples)} sample(s)"


def sample(cfg: DictConfig) -> Any:
    """Generate from the model in ``cfg.ckpt_path`` and write the samples to ``cfg.output``.

    Any task with a ``sample(generator=..., **options)`` method can sample; it receives the
    options of :data:`SAMPLE_OPTIONS` that its signature names and returns texts (a list of
    strings), images (a tensor ``(n, C, H, W)`` in [0, 1]) or a table (a DataFrame).
    """
    start(cfg)
    n = cfg.get("n")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise ConfigError(f"n must be a positive whole number, got {n!r}")
    side = grid_side(cfg)  # (checked before any work)
    L.seed_everything(cfg.seed)
    checkpoint = load_checkpoint(cfg.ckpt_path)
    task_cls = task_class(checkpoint, cfg.ckpt_path)
    if not callable(getattr(task_cls, "sample", None)):
        raise ConfigError(
            f"this model cannot sample: {task_cls.__name__} predicts ({task_cls.task_type or 'outputs'}); "
            "sample needs a generative model, e.g. experiment=digits_vae or text_lstm "
            "(use lit-dl predict or eval)"
        )
    # The output is checked before any work where the task says what it samples; else once it has.
    kind = sample_kind(task_cls)
    output = check_sample_output(cfg, kind) if kind or cfg.output else None
    model, _ = restore_from_checkpoint(cfg.ckpt_path, checkpoint=checkpoint)
    sampler = model.sample
    options = sampling_options(sampler, cfg)
    generator = torch.Generator().manual_seed(int(cfg.seed))
    samples = sampler(generator=generator, **options)
    if output is None or kind is None:
        output = check_sample_output(cfg, sample_kind(samples))
    what = write_samples(
        samples,
        output,
        options.get("prompt", ""),
        csv_raw=bool(cfg.get("csv_raw", False)),
        grid_side=side,
    )
    atomic_write_text(Path(cfg.paths.output_dir) / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    print(f"wrote {what} to {output}")
    return samples


def grid_side(cfg: DictConfig) -> int:
    """``grid_px``: pixels on the longer side of an image grid at least (null or 0: native size)."""
    value = cfg.get("grid_px", READABLE_SIDE)
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"grid_px must be a whole number of pixels (0: native size), got {value!r}")
    return value


def check_sample_output(cfg: DictConfig, kind: str | None) -> Path:
    """The absolute output path for samples of ``kind`` (None: not known yet), by :func:`check_output`."""
    suffixes = OUTPUT_SUFFIXES[kind] if kind else tuple(s for k in OUTPUT_SUFFIXES.values() for s in k)
    return check_output(
        cfg.output or Path(cfg.paths.output_dir) / f"samples{suffixes[0]}",
        suffixes=suffixes,
        what={"texts": "text samples", None: "samples"}.get(kind, kind),
        overwrite=bool(cfg.get("overwrite", False)),
        inputs={"ckpt_path": cfg.ckpt_path},
    )
