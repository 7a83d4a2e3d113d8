"""Data preparation at scale: TabularDataModule.setup("fit") on a large generated table.

Generates a seeded table (``--numeric`` float columns with ~5% missing, ``--categorical``
text columns of cardinalities spread from 2 to 200 with ~3% missing, a binary target) and
prepares it with the datamodule, from the DataFrame already in memory and from a Parquet
file, up to the final tensors of the three splits. Each source runs ``--repeats`` times, each run
in a fresh process; the median run is printed: rows/s, a line per phase (read, clean, target, split,
fit, transform) and the peak memory beside the bytes of the final float32 feature tensors, then
every run's rows/s (on a shared machine one run can be off by a quarter).

The "floor" line is the bound of any transform on this machine: the time the kernel takes to hand
over (and zero) fresh memory of the size of the features, measured in the same process after
``setup`` (the prepared tensors still held, so none of their pages is reused). CPU time is shown
beside wall time: on a shared machine it is the steadier figure.

A phase's "peak MiB" is the highest resident memory above the start while it ran, what earlier
phases still hold included. Memory is the process's peak resident set size (``VmHWM``, reset through
``/proc/self/clear_refs`` at the start of each phase) above the resident size just before
``setup``: it counts numpy, pandas, Arrow and torch buffers alike (``tracemalloc`` would miss
torch's and Arrow's). Before ``setup`` the generator's freed memory goes back to the system
(``malloc_trim``), so the baseline is the in-memory frame and the interpreter, nothing more.

    python benchmarks/tabular_prep.py [--rows 1000000] [--numeric 35] [--categorical 15]
        [--encoding onehot|embedding] [--source both|memory|parquet] [--repeats 3]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

PHASES = ("read", "clean", "target", "split", "fit", "transform")
MiB = 2**20


def make_table(rows: int, numeric: int, categorical: int, seed: int = 0) -> pd.DataFrame:
    """``numeric`` float columns (~5% missing), ``categorical`` text columns (~3% missing), 0/1 ``target``."""
    rng = np.random.default_rng(seed)
    columns: dict[str, Any] = {}
    logit = np.zeros(rows)
    for i in range(numeric):
        values = rng.normal(loc=i % 7, scale=1 + i % 3, size=rows)
        if i % 4 == 1:
            values = np.exp(values / 4)  # skewed, like amounts
        if i < 5:
            logit += (values - values.mean()) / values.std() * (0.5 - 0.2 * i)
        values[rng.random(rows) < 0.05] = np.nan
        columns[f"num_{i}"] = values
    cardinalities = np.geomspace(2, 200, categorical).round().astype(int) if categorical else []
    for j, size in enumerate(cardinalities):
        codes = np.minimum(rng.zipf(1.6, size=rows) - 1, size - 1)  # a few frequent values, a long tail
        if j < 3:
            logit += np.where(codes == 0, 0.8, -0.3)
        labels = np.array([f"c{j}_{k}" for k in range(size)] + [None], dtype=object)
        codes[rng.random(rows) < 0.03] = size
        columns[f"cat_{j}"] = pd.Series(labels[codes], dtype="str")
    columns["target"] = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return pd.DataFrame(columns)


def resident() -> tuple[int, int]:
    """``(current, peak)`` resident set size of this process in bytes."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux 4.0+)


def timed_datamodule() -> type:
    """The datamodule with each phase of ``setup`` timed (exclusive of nested phases) and its peak RSS.

    Defined on demand: the parent process, which only writes the Parquet file, never imports lit_dl.
    """
    from lit_dl.data import TabularDataModule

    class TimedTabular(TabularDataModule):
        def __init__(self, frame: pd.DataFrame | None = None, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.frame = frame
            self.seconds = dict.fromkeys(PHASES, 0.0)
            self.cpu = dict.fromkeys(PHASES, 0.0)
            self.peak = dict.fromkeys(PHASES, 0)
            self.stack: list[str] = []
            self.baseline = 0
            self.started = self.cpu_started = 0.0

        def _account(self) -> None:
            """Charge the time and peak since the last mark to the innermost open phase."""
            now, cpu, peak = time.perf_counter(), time.process_time(), resident()[1]
            if self.stack:
                self.seconds[self.stack[-1]] += now - self.started
                self.cpu[self.stack[-1]] += cpu - self.cpu_started
                self.peak[self.stack[-1]] = max(self.peak[self.stack[-1]], peak - self.baseline)
            reset_peak()
            self.started, self.cpu_started = time.perf_counter(), time.process_time()

        @contextmanager
        def phase(self, name: str) -> Iterator[None]:
            self._account()
            self.stack.append(name)
            try:
                yield
            finally:
                self._account()
                self.stack.pop()

        def load_frame(self, path: str | None) -> pd.DataFrame:
            with self.phase("read"):
                return self.frame if self.frame is not None else super().load_frame(path)

        def _load_clean(self, path: str | None) -> pd.DataFrame:
            with self.phase("clean"):
                return super()._load_clean(path)

        def resolve_task(self, targets: pd.DataFrame) -> str:
            with self.phase("target"):
                return super().resolve_task(targets)

        def fit_target(self, targets: pd.DataFrame) -> None:
            with self.phase("target"):
                super().fit_target(targets)

        def stratify_labels(self, targets: pd.DataFrame) -> pd.Series | None:
            with self.phase("target"):
                return super().stratify_labels(targets)

        def _split(self, frame: pd.DataFrame, stratify: pd.Series | None) -> dict[str, Any]:
            with self.phase("split"):
                return super()._split(frame, stratify)

        def _fit_features(self, train: Any, columns: list[str]) -> None:
            with self.phase("fit"):
                super()._fit_features(train, columns)

        def fit_target_statistics(self, train_targets: pd.DataFrame) -> None:
            with self.phase("target"):
                super().fit_target_statistics(train_targets)

        def make_dataset(self, frame: pd.DataFrame, rows: Any = None) -> Any:
            with self.phase("transform"):
                return super().make_dataset(frame, rows)

    return TimedTabular


def measure(source: str, rows: int, numeric: int, categorical: int, encoding: str, parquet: str) -> dict:
    """Prepare the table from ``source`` (``memory`` or ``parquet``) in this process; the figures."""
    timed = timed_datamodule()
    kwargs = {"target": "target", "categorical_encoding": encoding, "on_device": False}
    timed(make_table(2000, numeric, categorical, seed=1), **kwargs).setup("fit")  # lazy imports, warm caches
    frame = make_table(rows, numeric, categorical) if source == "memory" else None
    dm = timed(frame, path=None if source == "memory" else parquet, **kwargs)
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # the generator's freed buffers back to the system
    dm.baseline = resident()[0]
    reset_peak()
    start, cpu_start = time.perf_counter(), time.process_time()
    dm.setup("fit")
    total, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    dm._account()
    tensors = [t for ds in dm.datasets.values() for t in ds.tensors]
    features = sum(ds.tensors[0].numel() * ds.tensors[0].element_size() for ds in dm.datasets.values())
    # The floor of any transform: fresh memory of the features' size, zeroed by the kernel on first touch.
    start, cpu_start = time.perf_counter(), time.process_time()
    fresh = np.zeros(features // 4, dtype=np.float32)
    fresh[:: 4096 // 4] = 1.0  # one write per 4 KiB page
    floor, floor_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    del fresh
    return {
        "source": source,
        "rows": rows,
        "seconds": total,
        "cpu_seconds": cpu,
        "phases": dm.seconds,
        "phase_cpu": dm.cpu,
        "phase_peak": dm.peak,
        "peak": max(dm.peak.values()),
        "feature_bytes": features,
        "tensor_bytes": sum(t.numel() * t.element_size() for t in tensors),
        "width": dm.preprocessor.num_features,
        "frame_bytes": 0 if frame is None else int(frame.memory_usage(deep=True).sum()),
        "floor": floor,
        "floor_cpu": floor_cpu,
    }


def report(result: dict) -> None:
    rows, seconds = result["rows"], result["seconds"]
    print(
        f"\n{result['source']}: {rows:,} rows -> {result['width']} features in {seconds:.2f} s "
        f"= {rows / seconds:,.0f} rows/s (CPU time {result['cpu_seconds']:.2f} s: "
        f"{rows / result['cpu_seconds']:,.0f} rows per CPU-second)"
    )
    print(f"  {'phase':<10} {'seconds':>8} {'share':>6} {'CPU s':>6} {'peak MiB':>9}")
    other = seconds - sum(result["phases"].values())
    for name in PHASES:
        spent = result["phases"][name]
        cpu, peak = result["phase_cpu"][name], result["phase_peak"][name] / MiB
        print(f"  {name:<10} {spent:8.2f} {spent / seconds:6.0%} {cpu:6.2f} {peak:9.0f}")
    print(f"  {'other':<10} {other:8.2f} {other / seconds:6.0%}")
    features, peak = result["feature_bytes"], result["peak"]
    print(
        f"  peak RSS above start: {peak / MiB:,.0f} MiB = {peak / features:.2f} x the float32 features "
        f"({features / MiB:,.0f} MiB; all final tensors {result['tensor_bytes'] / MiB:,.0f} MiB)"
    )
    print(
        f"  floor: first touch of {features / MiB:,.0f} MiB of fresh zeroed memory alone takes "
        f"{result['floor']:.2f} s (CPU {result['floor_cpu']:.2f} s) here"
    )
    if result["frame_bytes"]:
        print(f"  (the in-memory frame, not counted: {result['frame_bytes'] / MiB:,.0f} MiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--numeric", type=int, default=35)
    parser.add_argument("--categorical", type=int, default=15)
    parser.add_argument("--encoding", choices=("onehot", "embedding"), default="onehot")
    parser.add_argument("--source", choices=("both", "memory", "parquet"), default="both")
    parser.add_argument("--repeats", type=int, default=3, help="runs per source (the median one is shown)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one source, print JSON
    parser.add_argument("--parquet", help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = (args.rows, args.numeric, args.categorical, args.encoding)
    if args.one:
        print(json.dumps(measure(args.one, *shape, args.parquet)))
        return
    sources = ("memory", "parquet") if args.source == "both" else (args.source,)
    print(
        f"table: {args.rows:,} rows, {args.numeric} numeric + {args.categorical} categorical columns, "
        f"binary target; encoding={args.encoding}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        parquet = str(Path(tmp) / "table.parquet")
        if "parquet" in sources:
            make_table(args.rows, args.numeric, args.categorical).to_parquet(parquet, index=False)
        for source in sources:
            # A fresh process per run: its peak memory and allocator state are its own.
            command = [sys.executable, __file__, "--one", source, "--parquet", parquet]
            command += ["--rows", str(args.rows), "--numeric", str(args.numeric)]
            command += ["--categorical", str(args.categorical), "--encoding", args.encoding]
            runs = []
            for _ in range(args.repeats):
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode:
                    sys.exit(f"{source} run failed:\n{done.stderr}")
                runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
            runs.sort(key=lambda run: run["seconds"])
            report(runs[len(runs) // 2])  # the median run, phase by phase
            speeds = ", ".join(f"{run['rows'] / run['seconds']:,.0f}" for run in runs)
            print(f"  rows/s of the {len(runs)} runs, slowest last: {speeds}")
    print("\ntargets: >= 500,000 rows/s; peak RSS <= ~2 x the float32 features")


if __name__ == "__main__":
    main()
