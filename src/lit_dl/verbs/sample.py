"""``lit-dl sample ckpt_path=... prompt="The " length=500 temperature=0.8``: generate from a model."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from lit_dl.errors import ConfigError
from lit_dl.utils import atomic_write_text, to_plain
from lit_dl.verbs.common import check_required, restore_from_checkpoint

# Options of configs/sample.yaml handed to the task's ``sample`` method when it takes them;
# a task passes over the ones that do not apply to it (a prompt means nothing to an image GAN).
SAMPLE_OPTIONS = ("prompt", "length", "temperature", "top_k", "n", "unknown")


def sampling_options(sampler: Any, cfg: DictConfig) -> dict[str, Any]:
    """The options of ``cfg`` that the task's ``sample`` method accepts, as plain values."""
    accepted = inspect.signature(sampler).parameters
    options = {name: to_plain(cfg.get(name)) for name in SAMPLE_OPTIONS if name in accepted}
    if "prompt" in options:
        # `prompt=123` or `prompt=true` reach us as a number or a boolean: the user meant the text.
        options["prompt"] = "" if options["prompt"] is None else str(options["prompt"])
    return options


def format_samples(samples: list[str], prompt: str) -> str:
    """The prompt and its continuation; several samples under ``--- sample i ---`` headers."""
    if len(samples) == 1:
        return f"{prompt}{samples[0]}\n"
    return "\n".join(f"--- sample {i} ---\n{prompt}{text}\n" for i, text in enumerate(samples, start=1))


def sample(cfg: DictConfig) -> str:
    """Generate from the model in ``cfg.ckpt_path``; write the text to ``cfg.output`` and return it.

    Any task with a ``sample(generator=..., **options)`` method that returns a list of texts can
    sample; it receives the options of :data:`SAMPLE_OPTIONS` that its signature names.
    """
    check_required(cfg)
    L.seed_everything(cfg.seed)
    model, _ = restore_from_checkpoint(cfg.ckpt_path)
    sampler = getattr(model, "sample", None)
    if not callable(sampler):
        raise ConfigError(
            f"this model cannot sample: {type(model).__name__} predicts ({model.task_type or 'outputs'}); "
            "sample needs a generative model such as experiment=text_lstm (use lit-dl predict or eval)"
        )
    options = sampling_options(sampler, cfg)
    generator = torch.Generator(device=model.device).manual_seed(int(cfg.seed))
    samples = sampler(generator=generator, **options)
    text = format_samples(samples, options.get("prompt", ""))
    output = Path(cfg.output)
    atomic_write_text(output, text)
    atomic_write_text(Path(cfg.paths.output_dir) / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    print(text, end="")
    print(f"wrote {len(samples)} sample(s) to {output}")
    return text
