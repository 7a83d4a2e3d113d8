"""The one road from a config entry to an object.

Every layer (verbs, tasks, datamodules, callbacks) builds what a config names through
:func:`build`, so the rules live in one place:

- a failure is one line that names the config key and the target, never Hydra's traceback;
- ``_target_`` may only name something under an allowed prefix (:data:`ALLOWED_PREFIXES`
  and those the user adds with ``allow_targets=[my_pkg]``): a config or checkpoint handed
  to you is data, and must not be able to run ``numpy.savetxt`` or ``subprocess.Popen``.

Hydra's ``instantiate`` does the building; this module only wraps it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from lit_dl.errors import ConfigError, LitDLError

# Packages whose classes a config may name without asking: lit_dl itself and the libraries whose
# building blocks configs use (layers and losses, optimisers and schedulers, metrics, image
# transforms, Lightning's trainer, callbacks and loggers).
ALLOWED_PREFIXES: tuple[str, ...] = (
    "lit_dl.",
    "torch.nn.",
    "torch.optim.",
    "torchmetrics.",
    "torchvision.transforms.",
    "lightning.",
)
_user_prefixes: set[str] = set()


def allow_targets(prefixes: Iterable[str] | str | None, *, replace: bool = False) -> None:
    """Also allow ``_target_``s under these packages (``allow_targets=[my_pkg]`` on the command line).

    ``replace=True`` forgets the packages allowed before (each ``lit-dl`` verb starts afresh).
    """
    if replace:
        _user_prefixes.clear()
    if prefixes is None:
        return
    if isinstance(prefixes, str):
        prefixes = [prefixes]
    for prefix in prefixes:
        name = str(prefix).strip().rstrip(".")
        if not name or not all(part.isidentifier() for part in name.split(".")):
            raise ConfigError(
                f"allow_targets: {prefix!r} is not a package name (e.g. allow_targets=[my_pkg])"
            )
        _user_prefixes.add(name + ".")


def allowed_prefixes() -> tuple[str, ...]:
    return ALLOWED_PREFIXES + tuple(sorted(_user_prefixes))


def check_target(target: Any, key: str) -> None:
    """Refuse a ``_target_`` outside the allowed packages, or a private name, in one line."""
    name = str(target)
    private = any(part.startswith("_") for part in name.split("."))
    if private or not name.startswith(allowed_prefixes()):
        package = name.split(".")[0]
        raise ConfigError(
            f"{key}._target_={name} is not allowed: configs and checkpoints may only name classes under "
            f"{', '.join(p.rstrip('.') for p in allowed_prefixes())}"
            + ("" if private else f"; if you trust it, add allow_targets=[{package}]")
        )


def check_node(node: Any, key: str) -> None:
    """:func:`check_target` on every ``_target_`` in a config entry, at any depth."""
    if isinstance(node, DictConfig | ListConfig):
        node = OmegaConf.to_container(node, resolve=False)
    if isinstance(node, Mapping):
        if "_target_" in node:
            check_target(node["_target_"], key)
        for name, value in node.items():
            check_node(value, f"{key}.{name}")
    elif isinstance(node, list | tuple):
        for i, value in enumerate(node):
            check_node(value, f"{key}[{i}]")


def build(node: Any, key: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate(node, **kwargs)`` with the allow-list and one-line errors naming ``key``.

    Containers come out as plain dicts and lists (``_convert_="all"``). Pass ``_recursive_=False``
    to keep nested entries as plain config for the built object to build later (through here).
    """
    check_node(node, key)
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, LitDLError):
            raise cause from None
        target = node.get("_target_") if isinstance(node, Mapping | DictConfig) else node
        detail = (
            str(cause or err).strip().splitlines()[0] if str(cause or err).strip() else type(cause).__name__
        )
        raise ConfigError(f"cannot build {key} ({target}): {detail}") from err
    except LitDLError:
        raise
    except Exception as err:  # e.g. an error raised by a partial's call, or a bad node shape
        raise ConfigError(f"cannot build {key}: {str(err).splitlines()[0] if str(err) else err!r}") from err


def build_partial(node: Any, key: str, *args: Any, **kwargs: Any) -> Any:
    """Build a ``_partial_: true`` entry and call it with ``args`` (e.g. an optimiser's parameters)."""
    factory = build(node, key)
    try:
        return factory(*args, **kwargs)
    except LitDLError:
        raise
    except Exception as err:
        target = node.get("_target_") if isinstance(node, Mapping | DictConfig) else node
        raise ConfigError(f"cannot build {key} ({target}): {str(err).splitlines()[0]}") from err


def import_class(target: str, key: str, base: type | tuple[type, ...] | None = None) -> type:
    """The class a dotted path names (allow-listed), checked to be a subclass of ``base``."""
    check_target(target, key)
    try:
        cls = get_class(target)
    except Exception as err:
        raise ConfigError(f"{key}._target_ {target!r} cannot be imported: {err}") from err
    if base is not None and not (isinstance(cls, type) and issubclass(cls, base)):
        names = base if isinstance(base, tuple) else (base,)
        raise ConfigError(
            f"{key}._target_ {target!r} is not a "
            + " or ".join(f"{b.__module__}.{b.__qualname__}" for b in names)
        )
    return cls
