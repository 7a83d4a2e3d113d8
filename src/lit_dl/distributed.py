"""Several processes, one run: which process this is, and how a process re-runs the command.

Three launchers start the processes of a distributed run:

* Lightning itself (``trainer.strategy=ddp`` on one machine): the first process re-runs
  its command line once per extra device with ``LOCAL_RANK`` set, adding
  ``hydra.run.dir=<the first process's run directory>``, so every process writes into one run.
* ``torchrun`` and SLURM's ``srun`` start every process themselves (``RANK`` or
  ``SLURM_PROCID`` set); each runs ``lit-dl`` from the start. They agree on one run
  directory through the job's id (:func:`shared_run_dir`) or an explicit ``hydra.run.dir``.

Whatever the launcher, only global rank zero writes Hydra's ``.hydra/`` folder and log file
(:func:`rank_overrides`) and holds the folder (its ``.lock`` and ``status.json``: :mod:`lit_dl.runs`);
the verbs write their outputs on rank zero only. A job id names the folder, so a job started again
under the same id (a requeued SLURM job) finds its earlier run there: continue it with ``resume=DIR``.
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
from hydra.core.hydra_config import HydraConfig
from omegaconf import read_write

from lit_dl.compat import script_launch_processes, spawns_processes
from lit_dl.errors import ConfigError

# Hydra overrides of the first process that must not reach the processes Lightning starts:
# they would make each of them a sweep of its own, or move its run directory.
PARENT_ONLY = (
    "hydra.mode",
    "hydra.run.",
    "hydra.sweep.",
    "hydra/launcher",
    "hydra/sweeper",
    "hydra.launcher",
)


def launch_rank() -> int:
    """This process's global rank as its launcher announced it (0 when nothing launched it).

    Zero only for the one process that writes the run's outputs: a process Lightning started
    (``LOCAL_RANK`` >= 1), another node (``NODE_RANK`` >= 1), or a rank of torchrun or srun
    (``RANK``, ``SLURM_PROCID``) counts as non-zero.
    """
    ranks = (os.environ.get(name, "0") for name in ("RANK", "SLURM_PROCID", "NODE_RANK", "LOCAL_RANK"))
    return max(int(value) if value.isdigit() else 0 for value in ranks)


def external_job_id() -> str | None:
    """An id every process of a torchrun or srun launch shares; None when there is none."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "none")
    if run_id != "none":
        return f"torchrun-{run_id}"
    if int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_JOB_ID" in os.environ:
        return f"slurm-{os.environ['SLURM_JOB_ID']}"
    return None


def externally_launched() -> bool:
    """True when torchrun or srun started several processes, each running ``lit-dl`` itself."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 and "RANK" in os.environ:
        return True
    return int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_PROCID" in os.environ


def rank_overrides(overrides: list[str]) -> list[str]:
    """Hydra overrides that make the processes of one distributed run share one run directory.

    Processes other than rank zero write no ``.hydra/`` folder and no log file, and show
    warnings only. Under torchrun or srun without ``hydra.run.dir``, every process
    takes ``logs/<verb>/runs/<job id>`` (a timestamp would differ between processes).
    """
    extra: list[str] = []
    given = any(o.lstrip("+").startswith("hydra.run.dir=") for o in overrides)
    if externally_launched() and not given:
        job_id = external_job_id()
        if job_id is None:
            raise ConfigError(
                "several processes were launched but they share no job id: set hydra.run.dir=DIR "
                "(the same for every process) so that they write one run directory"
            )
        extra.append(f"hydra.run.dir=${{paths.log_dir}}/${{task_name}}/runs/{job_id}")
    if launch_rank() > 0:
        extra += [
            "hydra.output_subdir=null",
            f"hydra.job_logging.handlers.file.filename={os.devnull}",
            "hydra.job_logging.root.level=WARNING",
        ]
    return extra


def relaunch_argv(script: str, verb: str) -> list[str]:
    """The command line that re-runs this very job: what Lightning reads from ``sys.argv``.

    Lightning starts its extra processes as ``python <sys.argv[0]> <sys.argv[1:]>`` (or
    ``python -m <module> ...``) and appends ``hydra.run.dir=<run.dir>``. So ``sys.argv`` is
    the console script, the verb and this job's own overrides (one job of a sweep, not the
    sweep), and Hydra's ``run.dir`` is set to this job's output directory (in a sweep it
    would otherwise name a directory that does not exist).
    """
    hydra_cfg = HydraConfig.get()
    with read_write(hydra_cfg.run):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
    kept = [o for o in hydra_cfg.overrides.hydra if not o.lstrip("+~").startswith(PARENT_ONLY)]
    return [os.path.abspath(script), verb, *hydra_cfg.overrides.task, *kept]


def check_launch(trainer: L.Trainer, verb: str) -> None:
    """Refuse launches that cannot work, in one line, before any process starts.

    * ``strategy=ddp`` from a process that is not the ``lit-dl`` command: Lightning re-runs the
      main program for each extra device, which from a Python session or a test runner would
      start the wrong program while the first process waits for it forever.
    * ``strategy=ddp_spawn`` for ``train``: it starts fresh processes for each of fit, validate
      and test, and the loggers' state does not survive from one to the next.
    """
    if spawns_processes(trainer) and verb == "train":
        raise ConfigError(
            "trainer.strategy=ddp_spawn cannot run lit-dl train (fit, validate and test would each "
            "start new processes that lose the loggers' state); use trainer.strategy=ddp"
        )
    processes = script_launch_processes(trainer)
    if processes < 2:
        return
    if trainer.strategy.cluster_environment.creates_processes_externally:
        return
    import __main__

    spec = getattr(__main__, "__spec__", None)
    main_name = spec.name if spec is not None else Path(getattr(__main__, "__file__", "") or "").name
    if main_name not in ("lit_dl.cli", "lit-dl"):
        raise ConfigError(
            f"trainer.strategy=ddp starts its {processes - 1} other process(es) by re-running "
            f"the command, but this process runs {main_name or 'an interactive session'}: start it with "
            "the `lit-dl` command (or torchrun)"
        )
