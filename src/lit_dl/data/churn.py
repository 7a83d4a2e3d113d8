"""A seeded synthetic customer-churn table: lit_dl's embedded default data set.

The generator mimics a telecom customer table: demographics, contract and billing,
service usage and support history. Churn is drawn from a logistic model of those
factors plus noise, so a good classifier can learn it but not perfectly. A few
cells are left dirty on purpose (numbers stored as text with blanks, missing
categories and numbers) so that the default run exercises the cleaning steps.

Write it to a file with ``python scripts/make_churn_csv.py out.csv --rows 5000 --seed 0``.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

CONTRACTS = ("Month-to-month", "One year", "Two year")
INTERNET = ("DSL", "Fiber optic", "No")
PAYMENT = ("Electronic check", "Mailed check", "Bank transfer", "Credit card")
REGIONS = ("North", "South", "East", "West")


def make_churn_frame(n_rows: int = 5000, seed: int = 0, dirty_fraction: float = 0.01) -> pd.DataFrame:
    """Return ``n_rows`` synthetic customers with a ``churn`` column of "Yes"/"No".

    Args:
        n_rows: number of customers.
        seed: seed of the random generator; the same seed gives the same table.
        dirty_fraction: share of cells per dirty column that are blanked out.
    """
    if n_rows < 20:
        raise ValueError(f"n_rows must be at least 20, got {n_rows}")
    rng = np.random.default_rng(seed)
    n = n_rows

    age = rng.integers(18, 85, n)
    gender = rng.choice(["Female", "Male"], n)
    partner = rng.choice(["Yes", "No"], n, p=[0.48, 0.52])
    dependents = np.where((partner == "Yes") & (rng.random(n) < 0.55), "Yes", "No")
    region = rng.choice(REGIONS, n)
    contract = rng.choice(CONTRACTS, n, p=[0.55, 0.24, 0.21])
    # Longer contracts go with longer tenure.
    tenure_scale = np.select([contract == CONTRACTS[0], contract == CONTRACTS[1]], [14.0, 30.0], 45.0)
    tenure = np.clip(rng.exponential(tenure_scale), 0, 72).astype(int)
    internet = rng.choice(INTERNET, n, p=[0.35, 0.44, 0.21])
    streaming = np.where(internet == "No", "No internet service", rng.choice(["Yes", "No"], n))
    tech_support = np.where(
        internet == "No", "No internet service", rng.choice(["Yes", "No"], n, p=[0.3, 0.7])
    )
    paperless = rng.choice(["Yes", "No"], n, p=[0.6, 0.4])
    payment = rng.choice(PAYMENT, n, p=[0.34, 0.23, 0.22, 0.21])

    base_charge = np.select([internet == "Fiber optic", internet == "DSL"], [70.0, 45.0], 20.0)
    monthly = base_charge + np.where(streaming == "Yes", 15.0, 0.0) + rng.normal(0, 8, n)
    monthly = np.round(np.clip(monthly, 18.0, 120.0), 2)
    total = np.round(monthly * tenure + rng.normal(0, 20, n).clip(-monthly * tenure, None), 2)

    support_calls = rng.poisson(np.where(tech_support == "Yes", 0.8, 1.6))
    days_inactive = np.round(rng.gamma(1.5, 6.0, n)).astype(int)
    usage_change = np.round(rng.normal(0.0, 18.0, n), 1)  # % change in usage over the last quarter

    # Churn drivers as they look in real telecom data: mostly monotone but not linear
    # (early-tenure churn that fades, threshold effects of support calls and usage drops).
    logit = (
        -1.4
        + np.select([contract == CONTRACTS[0], contract == CONTRACTS[1]], [1.1, -0.3], -1.5)
        - 0.9 * np.log1p(tenure / 4.0)
        + 0.25 * support_calls
        + np.where(support_calls >= 4, 1.0, 0.0)
        + 1.2 * (1.0 - np.exp(-days_inactive / 15.0))
        + np.where(usage_change < -20.0, 1.1, 0.0)
        - 0.01 * usage_change
        + np.where(internet == "Fiber optic", 0.55, 0.0)
        + np.where(payment == "Electronic check", 0.45, 0.0)
        + np.where(tech_support == "Yes", -0.4, 0.0)
        + np.where(partner == "Yes", -0.2, 0.0)
        + 0.012 * (monthly - 60.0)
        + np.where(age >= 65, 0.3, 0.0)
        # Interactions a linear model cannot see on its own: disengaged month-to-month
        # customers, and new customers on expensive plans (bill shock).
        + np.where((contract == CONTRACTS[0]) & (days_inactive > 20), 1.5, 0.0)
        + np.where((tenure < 12) & (monthly > 80.0), 1.5, 0.0)
        - np.where((contract != CONTRACTS[0]) & (support_calls >= 3), 1.0, 0.0)
        + rng.normal(0.0, 0.5, n)
    )
    churn = np.where(rng.random(n) < 1.0 / (1.0 + np.exp(-logit)), "Yes", "No")

    frame = pd.DataFrame(
        {
            "customer_id": [f"C{seed:03d}-{i:06d}" for i in range(n)],
            "gender": gender,
            "age": age.astype(float),
            "partner": partner,
            "dependents": dependents,
            "region": region,
            "tenure_months": tenure,
            "contract": contract,
            "internet_service": internet,
            "streaming": streaming,
            "tech_support": tech_support,
            "paperless_billing": paperless,
            "payment_method": payment,
            "monthly_charges": monthly,
            # Stored as text, like real billing exports: blanks where nothing was billed yet.
            "total_charges": [f"{t:.2f}" for t in total],
            "support_calls": support_calls,
            "days_inactive": days_inactive,
            "usage_change_pct": usage_change,
            "churn": churn,
        }
    )
    frame.loc[frame["tenure_months"] == 0, "total_charges"] = " "
    k = max(1, int(dirty_fraction * n))
    frame.loc[rng.choice(n, k, replace=False), "total_charges"] = " "
    frame.loc[rng.choice(n, k, replace=False), "payment_method"] = np.nan
    frame.loc[rng.choice(n, k, replace=False), "internet_service"] = np.nan
    frame.loc[rng.choice(n, k, replace=False), "age"] = np.nan
    return frame


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the synthetic churn table to a CSV or Parquet file.")
    parser.add_argument("output", help="path ending in .csv or .parquet")
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    frame = make_churn_frame(args.rows, args.seed)
    if args.output.endswith(".parquet"):
        frame.to_parquet(args.output, index=False)
    else:
        frame.to_csv(args.output, index=False)
    print(f"wrote {len(frame)} rows to {args.output}")
