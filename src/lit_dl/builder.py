"""The one road from a config entry to an object.

Every layer (verbs, tasks, datamodules, callbacks) builds what a config names through
:func:`build`, so the rules live in one place:

- a failure is one line that names the config key and the target, never Hydra's traceback;
- ``_target_`` may only name something under an allowed prefix (:data:`ALLOWED_PREFIXES`
  and those the user adds with ``allow_targets=[my_pkg]``): a config or checkpoint handed
  to you is data, and must not be able to run ``numpy.savetxt`` or ``subprocess.Popen``.
  Under the built-in prefixes only classes: their functions include file writers
  (``lit_dl.utils.atomic_write_text``, Lightning's ``save_hparams_to_yaml``).

Hydra's ``instantiate`` does the building; this module only wraps it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_class, get_object, instantiate
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
# Classes under the prefixes above that would run more than a building block: LightningCLI parses
# arguments and instantiates any ``class_path`` it is given.
REFUSED_PREFIXES: tuple[str, ...] = ("lightning.pytorch.cli.", "lightning.fabric.cli.")
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
    """Refuse a ``_target_`` outside the allowed packages, a private name, or (under the built-in
    prefixes) anything but a class, in one line."""
    name = str(target)
    private = any(part.startswith("_") for part in name.split("."))
    if private or not name.startswith(allowed_prefixes()):
        package = name.split(".")[0]
        raise ConfigError(
            f"{key}._target_={name} is not allowed: configs and checkpoints may only name classes under "
            f"{', '.join(p.rstrip('.') for p in allowed_prefixes())}"
            + ("" if private else f"; if you trust it, add allow_targets=[{package}]")
        )
    if name.startswith(tuple(_user_prefixes)):
        return  # the user's own packages: anything they name
    if name.startswith(REFUSED_PREFIXES):
        raise ConfigError(
            f"{key}._target_={name} is not allowed: it would run a command line, not build a part"
        )
    try:
        obj = get_object(name)
    except Exception:
        return  # cannot be imported: building it fails later, in one line naming the key
    if not isinstance(obj, type):
        raise ConfigError(
            f"{key}._target_={name} is not allowed: configs and checkpoints may only name classes under "
            f"{', '.join(p.rstrip('.') for p in ALLOWED_PREFIXES)}, and this is a {type(obj).__name__}"
            f"; if you trust it, add allow_targets=[{name.rpartition('.')[0]}]"
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


# Where a log file may go: the run directory (Hydra's ``job_logging`` handlers are opened before
# the verb starts; a config file must not truncate or append to the user's files).
RUN_DIR_REFERENCES = ("${hydra.runtime.output_dir}/", "${hydra:runtime.output_dir}/")


def check_logging_class(name: str, key: str) -> None:
    """A class a logging config names: one of :mod:`logging` (not ``logging.config``) or allowed."""
    try:
        if name.startswith("logging.") and not name.startswith("logging.config."):
            if isinstance(get_object(name), type):
                return
        else:
            check_target(name, key)
            return
    except ConfigError:
        pass
    except Exception:
        return  # cannot be imported: the logging set-up fails on it, building nothing
    raise ConfigError(
        f"{key}={name} is not allowed: a logging config may only name classes of logging or under "
        f"{', '.join(p.rstrip('.') for p in allowed_prefixes())}"
    )


def check_logging_config(node: Any, key: str) -> None:
    """A ``logging.config.dictConfig`` entry (Hydra's ``job_logging``): its factories (``()``) and
    classes must be classes of :mod:`logging` or allowed by :func:`check_target`, its log files in
    the run directory."""
    if isinstance(node, DictConfig | ListConfig):
        node = OmegaConf.to_container(node, resolve=False)
    if isinstance(node, Mapping):
        for name, value in node.items():
            if name in ("()", "class") and isinstance(value, str):
                check_logging_class(value, f"{key}.{name}")
            elif name == "filename" and (
                not str(value).startswith(RUN_DIR_REFERENCES) or ".." in str(value).split("/")
            ):
                raise ConfigError(
                    f"{key}.filename={value} is not allowed: log files are written in the run directory "
                    f"(filename: {RUN_DIR_REFERENCES[0]}NAME.log)"
                )
            else:
                check_logging_config(value, f"{key}.{name}")
    elif isinstance(node, list | tuple):
        for i, value in enumerate(node):
            check_logging_config(value, f"{key}[{i}]")


def check_hydra(cfg: DictConfig) -> None:
    """What Hydra itself builds from a composed config before a verb runs: its callbacks
    (``hydra.callbacks``, through :func:`check_node`) and the logging set-up (``hydra.job_logging``,
    ``hydra.hydra_logging``). ``cfg`` is composed with ``return_hydra_config=True``."""
    hydra_cfg = cfg.get("hydra") or {}
    check_node(hydra_cfg.get("callbacks"), "hydra.callbacks")
    for name in ("job_logging", "hydra_logging"):
        check_logging_config(hydra_cfg.get(name), f"hydra.{name}")


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
