"""ML efficacy of the tabular VAE and GAN on UCI Adult, beside training on the real rows.

Trains ``experiment=adult_tvae`` and ``experiment=adult_ctgan`` on adult-train.csv (each run
writes its synthetic-data report, tested on adult-test.csv) and prints one table: F1 of
``>50K`` and AUROC of the paper's four classifiers trained on synthetic rows (TSTR) and on
real rows (TRTR), privacy figures and run times. Xu et al. (2019): TVAE 0.626, CTGAN 0.601,
real data 0.669 (F1).

    python benchmarks/synthetic_adult.py [--adult DIR] [--runs DIR] [--models tvae,ctgan] [key=value ...]

Extra ``key=value`` overrides go to both runs (e.g. ``trainer.max_epochs=50``); prefix one
with ``tvae:`` or ``ctgan:`` to send it to one model only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

PAPER = {"tvae": 0.626, "ctgan": 0.601, "real": 0.669}


def run(model: str, adult: Path, runs: Path, overrides: list[str]) -> dict:
    run_dir = runs / model
    command = [
        sys.executable,
        "-m",
        "lit_dl.cli",
        "train",
        f"experiment=adult_{model}",
        f"data.path={adult / 'adult-train.csv'}",
        f"data.test_path={adult / 'adult-test.csv'}",
        "callbacks.progress_bar=null",
        f"hydra.run.dir={run_dir}",
        *overrides,
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    report = json.loads((run_dir / "report" / "report.json").read_text())
    return {"seconds": seconds, "report": report}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adult", default="../shared/data/adult", help="folder of adult-*.csv")
    parser.add_argument("--runs", default="logs/benchmarks/synthetic_adult", help="run folders go here")
    parser.add_argument("--models", default="tvae,ctgan")
    args, overrides = parser.parse_known_args(argv)
    # One folder per invocation: a run folder holds one run (a second run into it is refused).
    adult, runs = Path(args.adult).resolve(), Path(args.runs) / time.strftime("%Y-%m-%d_%H-%M-%S")
    results = {}
    for model in args.models.split(","):
        mine = [o.split(":", 1)[1] if ":" in o.split("=")[0] else o for o in overrides]
        mine = [
            o
            for o, raw in zip(mine, overrides, strict=True)
            if ":" not in raw.split("=")[0] or raw.startswith(f"{model}:")
        ]
        results[model] = run(model, adult, runs, mine)
        print(f"{model}: {results[model]['seconds']:.0f} s", flush=True)

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
            f"{PAPER[model]} (real {PAPER['real']}) | "
            f"{'-' if plain is None else f'{plain:.3f}'} | {privacy['exact_copies']} | "
            f"{privacy['closer_to_train_share']:.3f} | {privacy['dcr_synthetic']['median']:.3f} / "
            f"{privacy['dcr_holdout']['median']:.3f} | {result['seconds'] / 60:.1f} min |"
        )
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
        }
        for m, r in results.items()
    }
    (runs / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
