"""``lit-dl list [group]``: what exists, one line each, from the configs themselves.

Each option's description is the first comment of its config file (after ``# @package``), so
the list cannot drift from the configs. Config groups are folders of ``configs/``; a user's own
configs (``hydra.searchpath``) are not listed.
"""

from __future__ import annotations

import re
from pathlib import Path

from lit_dl.errors import ConfigError

# The groups worth listing, in the order a user meets them, with how each is chosen.
GROUPS: dict[str, str] = {
    "experiment": "lit-dl train experiment=NAME",
    "data": "lit-dl train data=NAME",
    "model": "lit-dl train model=NAME",
    "trainer": "lit-dl train trainer=NAME",
    "logger": "lit-dl train logger=NAME (several: logger=[csv,wandb])",
    "callbacks": "lit-dl train callbacks=NAME",
    "hparams_search": "lit-dl tune hparams_search=NAME",
    "debug": "lit-dl train debug=NAME",
}


def describe(path: Path, width: int = 110) -> str:
    """The first sentence of a config file's first comment (not a ``# @package`` directive), cut
    to ``width`` characters."""
    words: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if not text.startswith("#"):
            if words:
                break
            continue
        text = text.lstrip("#").strip()
        if text.startswith("@package") or (not text and not words):
            continue
        if not text:
            break
        words.append(text)
    joined = " ".join(words)
    # The first sentence ("et al. 2019" is not an end of one).
    sentence = re.split(r"(?<!\bal)(?<!e\.g)(?<!i\.e)\. (?=[A-Z])", joined)[0].rstrip(":;,. ")
    if len(sentence) > width:
        sentence = sentence[: width - 3].rsplit(" ", 1)[0].rstrip(":;,. ") + "..."
    return sentence


def options(config_dir: Path, group: str) -> list[tuple[str, str]]:
    """``(name, description)`` of every option of ``group``, sorted by name."""
    return [(p.stem, describe(p)) for p in sorted((config_dir / group).glob("*.yaml"))]


def listing(config_dir: Path, group: str | None = None) -> str:
    """The text ``lit-dl list [group]`` prints."""
    known = [g for g in GROUPS if (config_dir / g).is_dir()]
    if group is not None and group not in known:
        raise ConfigError(f"no config group '{group}'; choose one of: {', '.join(known)} (or none: all)")
    blocks = []
    for name in [group] if group else known:
        entries = options(config_dir, name)
        width = max((len(n) for n, _ in entries), default=0)
        lines = [f"{name} ({GROUPS[name]}):"]
        lines += [f"  {option:<{width}}  {text}".rstrip() for option, text in entries]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
