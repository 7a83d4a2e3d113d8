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
from torchvision.utils import make_grid, save_image

from lit_dl.checkpoints import load_checkpoint, task_class
from lit_dl.errors import ConfigError
from lit_dl.utils import atomic_write, atomic_write_text, to_plain
from lit_dl.verbs.common import restore_from_checkpoint, start

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


def default_output(samples: Any) -> str:
    if isinstance(samples, torch.Tensor):
        return "samples.png"
    if isinstance(samples, pd.DataFrame):
        return "samples.csv"
    return "samples.txt"


def write_samples(samples: Any, output: Path, prompt: str = "") -> str:
    """Write texts, images (a grid, or the raw tensor as ``.pt``) or a table by ``output``'s suffix.

    Returns what to print: the text itself, or a line saying what was written.
    """
    suffix = output.suffix.lower()
    if isinstance(samples, torch.Tensor):
        if suffix == ".pt":
            atomic_write(output, lambda tmp: torch.save(samples, tmp))
        elif suffix in IMAGE_SUFFIXES:
            nrow = math.ceil(math.sqrt(len(samples)))
            grid = make_grid(samples.float(), nrow=nrow, padding=2, pad_value=1.0)
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
            atomic_write(output, lambda tmp: samples.to_csv(tmp, index=False))
        elif suffix == ".parquet":
            atomic_write(output, lambda tmp: samples.to_parquet(tmp, index=False))
        else:
            raise ConfigError(f"output={output} : tables are written as .csv or .parquet")
        return f"{len(samples)} rows x {samples.shape[1]} columns"
    if suffix not in (".txt", ".md", ""):
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
    L.seed_everything(cfg.seed)
    task_cls = task_class(load_checkpoint(cfg.ckpt_path), cfg.ckpt_path)
    if not callable(getattr(task_cls, "sample", None)):
        raise ConfigError(
            f"this model cannot sample: {task_cls.__name__} predicts ({task_cls.task_type or 'outputs'}); "
            "sample needs a generative model, e.g. experiment=digits_vae or text_lstm "
            "(use lit-dl predict or eval)"
        )
    model, _ = restore_from_checkpoint(cfg.ckpt_path)
    sampler = model.sample
    options = sampling_options(sampler, cfg)
    generator = torch.Generator().manual_seed(int(cfg.seed))
    samples = sampler(generator=generator, **options)
    output = Path(cfg.output or Path(cfg.paths.output_dir) / default_output(samples))
    what = write_samples(samples, output, options.get("prompt", ""))
    atomic_write_text(Path(cfg.paths.output_dir) / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    print(f"wrote {what} to {output}")
    return samples
