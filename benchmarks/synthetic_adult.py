"""ML efficacy of the tabular VAE and GAN on UCI Adult, beside training on the real rows.

Trains ``experiment=adult_tvae`` and ``experiment=adult_ctgan`` on adult-train.csv (each run
writes its synthetic-data report, tested on adult-test.csv) and prints one table: F1 of
``>50K`` and AUROC of the paper's four classifiers trained on synthetic rows (TSTR) and on
real rows (TRTR), privacy figures and run times. Xu et al. (2019): TVAE 0.626, CTGAN 0.601,
real data 0.669 (F1). A second table describes each run's unconditioned sample (rows drawn without
asking for a class): its F1 and AUROC, its ``>50K`` rate, the missing-cell share of every column
with gaps and the exact-zero share of every zero-inflated number, each beside the real one, and
the privacy verdicts of both samples. Measured with ``--models ctgan --seeds 42,43,44 --jobs 3``
(docs/synthetic-tables.md): the unconditioned sample's F1 0.608, 0.613 and 0.606 (paper: 0.601),
its ``>50K`` and missing rates within 0.7 points of the real ones, the capital columns' exact zeros
kept, both privacy verdicts passing.

    python benchmarks/synthetic_adult.py [--adult DIR] [--runs DIR] [--models tvae,ctgan] [--seeds 42,43,44]
        [--jobs 3] [key=value ...]

Extra ``key=value`` overrides go to both runs (e.g. ``trainer.max_epochs=50``); prefix one
with ``tvae:`` or ``ctgan:`` to send it to one model only. With several seeds each model is trained
once per seed (``--jobs`` runs at a time) and the tables end with the mean.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PAPER = {"tvae": 0.626, "ctgan": 0.601, "real": 0.669}


def run(
    model: str, adult: Path, runs: Path, seed: int, overrides: list[str], threads: int | None = None
) -> dict:
    """Train (and report) one run in its own process; ``threads``: its torch / BLAS threads."""
    run_dir = runs / f"{model}_seed{seed}"
    command = [
        sys.executable,
        "-m",
        "lit_dl.cli",
        "train",
        f"experiment=adult_{model}",
        f"data.path={adult / 'adult-train.csv'}",
        f"data.test_path={adult / 'adult-test.csv'}",
        "callbacks.progress_bar=null",
        f"seed={seed}",
        f"hydra.run.dir={run_dir}",
        *overrides,
    ]
    start = time.perf_counter()
    env = dict(os.environ)
    if threads:  # parallel runs share the cores: each run's thread pools would otherwise take them all
        env.update(
            {name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
        )
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
    seconds = time.perf_counter() - start
    report = json.loads((run_dir / "report" / "report.json").read_text())
    return {"seconds": seconds, "report": report}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adult", default="../shared/data/adult", help="folder of adult-*.csv")
    parser.add_argument("--runs", default="logs/benchmarks/synthetic_adult", help="run folders go here")
    parser.add_argument("--models", default="tvae,ctgan")
    parser.add_argument("--seeds", default="42", help="training seeds, comma-separated (one run each)")
    parser.add_argument(
        "--jobs", type=int, default=1, help="runs at a time (each its own process, with cores/jobs threads)"
    )
    args, overrides = parser.parse_known_args(argv)
    # One folder per invocation: a run folder holds one run (a second run into it is refused).
    adult, runs = Path(args.adult).resolve(), Path(args.runs) / time.strftime("%Y-%m-%d_%H-%M-%S")
    jobs = {}
    for model in args.models.split(","):
        mine = [o.split(":", 1)[1] if ":" in o.split("=")[0] else o for o in overrides]
        mine = [
            o
            for o, raw in zip(mine, overrides, strict=True)
            if ":" not in raw.split("=")[0] or raw.startswith(f"{model}:")
        ]
        for seed in (int(s) for s in args.seeds.split(",")):
            name = model if "," not in args.seeds else f"{model} seed {seed}"
            jobs[name] = (model, seed, mine)

    # Three 2-thread runs on 2 cores took 36 s an Adult CTGAN epoch each (one run alone: 2.7 s); three
    # 1-thread runs, 7-10 s.
    threads = max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else None

    def one(name: str) -> dict:
        model, seed, mine = jobs[name]
        result = run(model, adult, runs, seed, mine, threads)
        print(f"{name}: {result['seconds']:.0f} s", flush=True)
        return result

    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        results = dict(zip(jobs, pool.map(one, jobs), strict=True))

    print(
        "\n| model | TSTR F1 (mean of 4) | TRTR F1 | TSTR AUROC | TRTR AUROC | paper F1 | "
        "TSTR F1 unconditioned | exact copies | closer-to-train share | median DCR synth / holdout | "
        "run time |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for model, result in results.items():
        report = result["report"]
        mean = report["ml_efficacy"]["mean"]
        privacy = report["privacy"]
        plain = report.get("ml_efficacy_unconditioned", {}).get("mean", {}).get("tstr", {}).get("f1")
        print(
            f"| {model} | {mean['tstr']['f1']:.3f} | {mean['trtr']['f1']:.3f} | "
            f"{mean['tstr']['auroc']:.3f} | {mean['trtr']['auroc']:.3f} | "
            f"{PAPER[model.split()[0]]} (real {PAPER['real']}) | "
            f"{'-' if plain is None else f'{plain:.3f}'} | {privacy['exact_copies']} | "
            f"{privacy['closer_to_train_share']:.3f} | {privacy['dcr_synthetic']['median']:.3f} / "
            f"{privacy['dcr_holdout']['median']:.3f} | {result['seconds'] / 60:.1f} min |"
        )
    unconditioned_table(results)
    print("\nper classifier (F1 TSTR / TRTR):")
    for model, result in results.items():
        rows = result["report"]["ml_efficacy"]["classifiers"]
        print(
            f"  {model}: "
            + ", ".join(f"{k} {v['tstr']['f1']:.3f}/{v['trtr']['f1']:.3f}" for k, v in rows.items())
        )
    summary = {
        m: {
            "seconds": r["seconds"],
            "ml_efficacy": r["report"]["ml_efficacy"],
            "privacy": r["report"]["privacy"],
            "fidelity": r["report"]["fidelity"]["score"],
            **{
                key: r["report"][key]
                for key in (
                    "ml_efficacy_unconditioned",
                    "privacy_unconditioned",
                    "target_rate",
                    "missing_rate",
                    "zero_share",
                )
                if key in r["report"]
            },
        }
        for m, r in results.items()
    }
    (runs / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")


def shares(table: dict[str, dict[str, float]], sample: str) -> str:
    """Every column's ``sample`` share beside the real one (columns where either is above 0)."""
    parts = [
        f"{name} {r['real']:.1%} / {r[sample]:.1%}"
        for name, r in table.items()
        if sample in r and (r["real"] > 0 or r[sample] > 0)
    ]
    return ", ".join(parts) or "-"


def verdict(privacy: dict | None) -> str:
    """``passes`` or ``CLOSER``, with the closer-to-training share and its limit."""
    if not privacy:
        return "-"
    word = "passes" if privacy["no_closer_than_holdout"] else "CLOSER"
    limit = 0.5 + privacy["closer_to_train_margin"]
    return f"{word} ({privacy['closer_to_train_share']:.1%}, limit {limit:.1%})"


def unconditioned_table(results: dict[str, dict]) -> None:
    """Each run's unconditioned sample: F1, AUROC, `>50K` rate, missing and zero shares, privacy verdicts."""
    print(
        "\n| run | unconditioned F1 | AUROC | `>50K` real / synthetic | missing real / synthetic | "
        "exact zeros real / synthetic | privacy, unconditioned | privacy, report's sample |"
    )
    print("|---|---|---|---|---|---|---|---|")
    f1s, aurocs = [], []
    for name, result in results.items():
        report = result["report"]
        sample = "unconditioned" if "ml_efficacy_unconditioned" in report else "synthetic"
        efficacy = report["ml_efficacy_unconditioned" if sample == "unconditioned" else "ml_efficacy"]
        privacy = report.get("privacy_unconditioned" if sample == "unconditioned" else "privacy")
        rate = report.get("target_rate", {})
        f1, auroc = efficacy["mean"]["tstr"]["f1"], efficacy["mean"]["tstr"]["auroc"]
        f1s.append(f1)
        aurocs.append(auroc)
        target = f"{rate['real']:.1%} / {rate[sample]:.1%}" if sample in rate else "-"
        print(
            f"| {name} | {f1:.3f} | {auroc:.3f} | {target} | {shares(report['missing_rate'], sample)} | "
            f"{shares(report.get('zero_share', {}), sample)} | {verdict(privacy)} | "
            f"{verdict(report.get('privacy'))} |"
        )
    if len(f1s) > 1:
        print(f"| mean | **{statistics.fmean(f1s):.3f}** | {statistics.fmean(aurocs):.3f} | | | | | |")


if __name__ == "__main__":
    main()
