"""GPU check: every experiment for a few steps per precision and device setup, then one table.

Started by ``scripts/gpu_check.sh``. Each run is the real ``lit-dl train`` command with the
:class:`~lit_dl.callbacks.throughput.StepStats` callback added, which writes steps per second
and peak GPU memory to ``step_stats.json``; a run passes when it exits 0 and writes
``metrics.json`` with finite numbers. Order: one GPU in bf16-mixed, then 16-mixed, then DDP
on every visible GPU (16-mixed first: loss scaling across processes is the riskier pair),
then FSDP for the default experiment; rows that do not fit the time budget are skipped.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIT_DL = ROOT / ".venv" / "bin" / "lit-dl"
CONFIG_DIR = ROOT / "src" / "lit_dl" / "configs"


@dataclass
class Result:
    experiment: str
    precision: str
    setup: str  # "1 GPU" | "DDP" | "FSDP"
    devices: int
    status: str = "skipped"
    steps_per_s: float | None = None
    peak_memory_mib: float | None = None
    seconds: float | None = None
    note: str = ""
    command: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------- tiny local data
def write_idx_files(root: Path, n_train: int = 600, n_test: int = 200) -> Path:
    """MNIST-style ``.gz`` IDX files (28x28 noise, 10 classes): MNIST and Fashion-MNIST without a download."""
    from lit_dl.data.image_files import write_noise_idx_set

    return write_noise_idx_set(root, n_train, n_test)


def data_overrides(experiment: str, data_dir: Path) -> tuple[list[str], str | None]:
    """Overrides that point an experiment at local data, and a reason when there is none to be had."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}"])
    data_dir.mkdir(parents=True, exist_ok=True)
    overrides: list[str] = []
    callbacks = cfg.get("callbacks") or {}
    for name in ("progress_bar", "model_summary"):
        if callbacks.get(name) is not None:
            overrides.append(f"callbacks.{name}=null")
    if callbacks.get("sample_quality") is not None:
        # It trains (and caches) a feature classifier first, and the best checkpoint follows its val/fid.
        overrides += ["callbacks.sample_quality=null", "callbacks.model_checkpoint.monitor=null"]
        if callbacks.get("early_stopping") is not None:
            overrides.append("callbacks.early_stopping=null")
    target = str(cfg.data._target_)
    missing = {key.rpartition(".")[2] for key in OmegaConf.missing_keys(cfg.data)}
    if target.endswith("TorchvisionDataModule"):
        if cfg.data.dataset not in ("mnist", "fashion_mnist"):
            return overrides, f"{cfg.data.dataset}: no offline stand-in"
        root = data_dir / "idx"
        if not root.exists():
            write_idx_files(root)
        overrides += [f"data.root={root}", "data.download=false"]
    elif target.endswith("ForecastDataModule"):
        path = data_dir / "series.csv"
        if not path.exists():
            import numpy as np
            import pandas as pd

            t = np.arange(600)
            y = 100 + 0.5 * t + 20 * np.sin(2 * np.pi * t / 12)
            pd.DataFrame({"step": t, "y": y}).to_csv(path, index=False)
        overrides += [f"data.path={path}", "data.time_column=step", "data.target=y"]
    elif "path" in missing:
        path = data_dir / "table.csv"
        if not path.exists():
            from lit_dl.data.churn import make_churn_frame

            make_churn_frame(5000, seed=0).to_csv(path, index=False)
        overrides += [f"data.path={path}", "data.target=churn", "data.drop=[customer_id]"]
        for key, value in (("positive_label", "Yes"), ("column_names", "null"), ("categorical", "[]")):
            if key in cfg.data:
                overrides.append(f"data.{key}={value}")
    elif missing:
        return overrides, f"needs data.{', data.'.join(sorted(missing))}"
    return overrides, None


# ---------------------------------------------------------------------------- one run
def run_one(
    result: Result, extra: list[str], run_dir: Path, args: argparse.Namespace, timeout: float
) -> None:
    trainer = {"1 GPU": ["trainer=gpu"], "DDP": ["trainer=ddp"], "FSDP": ["trainer=fsdp"]}[result.setup]
    if args.accelerator == "cpu":
        trainer = ["trainer=cpu"] if result.setup == "1 GPU" else ["trainer=ddp_cpu"]
    stats = run_dir / "step_stats.json"
    command = [
        str(LIT_DL),
        "train",
        f"experiment={result.experiment}",
        *trainer,
        f"trainer.precision={result.precision}",
        "debug=limit",  # adds limit_*_batches; the values below replace its own
        "trainer.max_epochs=1",
        f"trainer.limit_train_batches={args.steps}",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        "+callbacks.step_stats._target_=lit_dl.callbacks.throughput.StepStats",
        f"+callbacks.step_stats.path={stats}",
        *extra,
        f"hydra.run.dir={run_dir}",
    ]
    result.command = command
    run_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(run_dir / "console.txt", "w") as console:
        process = subprocess.Popen(
            command, cwd=ROOT, stdout=console, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the DDP processes Lightning started too
            process.wait()
            code = None
    result.seconds = time.perf_counter() - start
    if stats.exists():
        numbers = json.loads(stats.read_text())
        result.steps_per_s = numbers.get("steps_per_s")
        result.peak_memory_mib = numbers.get("peak_memory_mib")
    metrics_file = run_dir / "metrics.json"
    if code is None:
        result.status, result.note = "FAIL", f"timeout after {timeout:.0f} s"
    elif code != 0 or not metrics_file.exists():
        result.status, result.note = "FAIL", last_error(run_dir / "console.txt") or f"exit code {code}"
    else:
        metrics = json.loads(metrics_file.read_text())
        bad = sorted(k for k, v in metrics.items() if not math.isfinite(v))
        result.status, result.note = ("FAIL", f"not finite: {', '.join(bad)}") if bad else ("pass", "")


def last_error(console: Path) -> str:
    lines = [line.strip() for line in console.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:") or "Error" in line]
    return (errors or lines or [""])[-1][:160]


# ---------------------------------------------------------------------------- table
def table(results: list[Result]) -> str:
    header = ("experiment", "precision", "setup", "devices", "steps/s", "peak MiB", "seconds", "result")
    rows = [
        (
            r.experiment,
            r.precision,
            r.setup,
            str(r.devices),
            f"{r.steps_per_s:.1f}" if r.steps_per_s else "-",
            f"{r.peak_memory_mib:.0f}" if r.peak_memory_mib is not None else "-",
            f"{r.seconds:.0f}" if r.seconds is not None else "-",
            r.status + (f": {r.note}" if r.note else ""),
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, (*("-" * w for w in widths), "-" * 6), *rows]:
        lines.append(
            "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", nargs="*", help="default: every configs/experiment/*.yaml")
    parser.add_argument("--precisions", nargs="*", default=["bf16-mixed", "16-mixed"])
    parser.add_argument("--steps", type=int, default=20, help="training steps per run (3 are warm-up)")
    parser.add_argument(
        "--budget", type=float, default=450.0, help="seconds for all runs; later rows are skipped"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds for one run")
    parser.add_argument("--no-ddp", action="store_true", help="one-GPU rows only")
    parser.add_argument(
        "--accelerator", default="gpu", choices=["gpu", "cpu"], help="cpu: a dry run of this script"
    )
    parser.add_argument("--out", type=Path, default=None, help="default: logs/gpu_check/<time>")
    args = parser.parse_args()

    import torch

    gpus = torch.cuda.device_count() if args.accelerator == "gpu" else 2
    out = args.out or ROOT / "logs" / "gpu_check" / time.strftime("%Y-%m-%d_%H-%M-%S")
    out.mkdir(parents=True, exist_ok=True)
    if args.accelerator == "gpu" and gpus == 0:
        print("error: no CUDA GPU visible (torch.cuda.device_count() == 0)", file=sys.stderr)
        return 2
    names = args.experiments or sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
    print(
        f"gpu check: {len(names)} experiment(s), {gpus} GPU(s) "
        f"({torch.cuda.get_device_name(0) if args.accelerator == 'gpu' else 'cpu dry run'}), output {out}"
    )

    plan: list[Result] = []
    for precision in args.precisions:
        plan += [Result(n, precision, "1 GPU", 1) for n in names]
    if not args.no_ddp:
        for precision in sorted(args.precisions, key=lambda p: p != "16-mixed"):
            plan += [Result(n, precision, "DDP", gpus) for n in names]
        if args.accelerator == "gpu" and "churn_mlp" in names:
            plan.append(Result("churn_mlp", "bf16-mixed", "FSDP", gpus))

    extras: dict[str, tuple[list[str], str | None]] = {}
    deadline = time.perf_counter() + args.budget
    for i, result in enumerate(plan, start=1):
        if result.experiment not in extras:
            try:
                extras[result.experiment] = data_overrides(result.experiment, out / "data")
            except Exception as err:  # a broken config: its rows fail, the others still run
                first = (str(err).splitlines() or [""])[0][:120]
                extras[result.experiment] = ([], f"FAIL: {type(err).__name__}: {first}")
        extra, reason = extras[result.experiment]
        left = deadline - time.perf_counter()
        if reason:
            result.status = "FAIL" if reason.startswith("FAIL") else "skipped"
            result.note = reason.removeprefix("FAIL: ")
        elif left < 20:
            result.note = "time budget"
        else:
            run_dir = out / "runs" / f"{result.experiment}-{result.precision}-{result.setup.replace(' ', '')}"
            run_one(result, extra, run_dir, args, min(args.timeout, left))
        print(
            f"[{i}/{len(plan)}] {result.experiment} {result.precision} {result.setup}: "
            f"{result.status}{' (' + result.note + ')' if result.note else ''}",
            flush=True,
        )

    text = table(plan)
    print("\n" + text)
    (out / "gpu_check.txt").write_text(text + "\n")
    (out / "gpu_check.json").write_text(json.dumps([r.__dict__ for r in plan], indent=2) + "\n")
    print(f"\nwritten: {out / 'gpu_check.txt'} (each run's console output in {out / 'runs'})")
    return 1 if any(r.status == "FAIL" for r in plan) else 0


if __name__ == "__main__":
    sys.exit(main())
