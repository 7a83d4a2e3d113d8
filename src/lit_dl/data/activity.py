"""Seeded monthly customer-activity sequences whose churn label depends on patterns over time.

Each customer has 12 to ``max_months`` months of: usage (hours), support calls,
days inactive and billing change (%). Three patterns raise the churn risk:

- a burst of support calls (three months in a row with many calls) in the first
  half of the history, so often dozens of months before its end;
- a sudden, lasting drop in usage;
- a long stretch of inactivity (two or more months with 20+ inactive days).

Outside the patterns the months are noise around each customer's own level, so a
model has to remember *that* a pattern happened, possibly dozens of months before
the end of the sequence. That is where an LSTM's memory cell beats a plain RNN,
whose gradients vanish over long spans.

Write it to a long-format CSV with ``python scripts/make_activity_csv.py out.csv``.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

FEATURES = ("usage_hours", "support_calls", "days_inactive", "billing_change_pct")


def make_activity_frame(n_customers: int = 3000, max_months: int = 60, seed: int = 0) -> pd.DataFrame:
    """Long format: one row per customer and month, columns ``customer_id, month, <features>, churn``."""
    if n_customers < 10 or max_months < 12:
        raise ValueError("need at least 10 customers and 12 months")
    rng = np.random.default_rng(seed)
    columns: dict[str, list[np.ndarray]] = {name: [] for name in ("customer_id", "month", *FEATURES, "churn")}
    for c in range(n_customers):
        months = int(rng.integers(12, max_months + 1))
        level = rng.gamma(4.0, 10.0)  # the customer's usual usage
        usage = np.clip(level * (1 + rng.normal(0, 0.15, months)), 0, None)
        calls = rng.poisson(0.6, months).astype(float)
        inactive = np.clip(rng.normal(5, 3, months), 0, 30).round()
        billing = np.where(rng.random(months) < 0.08, rng.normal(0, 10, months), 0.0).round(1)

        burst = rng.random() < 0.35
        if burst:  # far back: somewhere in the first half of the history
            start = int(rng.integers(0, months // 2 - 2))
            calls[start : start + 3] += rng.poisson(5, 3) + 3
        drop = rng.random() < 0.3
        if drop:
            start = int(rng.integers(months // 3, months - 1))
            usage[start:] *= rng.uniform(0.2, 0.5)
        idle = rng.random() < 0.3
        if idle:
            start = int(rng.integers(0, months - 2))
            inactive[start : start + 2] = rng.integers(20, 31, 2)

        logit = -2.4 + 3.0 * burst + 1.6 * drop + 1.4 * idle + rng.normal(0, 0.4)
        churn = "Yes" if rng.random() < 1 / (1 + np.exp(-logit)) else "No"
        for name, values in zip(
            columns,
            (
                np.full(months, f"A{seed:02d}-{c:05d}"),
                np.arange(1, months + 1),
                usage.round(2),
                calls,
                inactive,
                billing,
                np.full(months, churn),
            ),
            strict=True,
        ):
            columns[name].append(values)
    return pd.DataFrame({name: np.concatenate(parts) for name, parts in columns.items()})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Write the synthetic activity sequences to a long-format CSV."
    )
    parser.add_argument("output")
    parser.add_argument("--customers", type=int, default=3000)
    parser.add_argument("--months", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    frame = make_activity_frame(args.customers, args.months, args.seed)
    frame.to_csv(args.output, index=False)
    print(f"wrote {frame['customer_id'].nunique()} customers, {len(frame)} rows to {args.output}")
