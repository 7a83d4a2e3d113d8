"""lit_dl's LSTM forecaster beside seasonal-naive, Holt-Winters and a seasonal ARIMA on the same test windows.

For one series, in one process: the config ``lit-dl train experiment=forecast_lstm`` would compose
with the given overrides is built and its datamodule prepared; every test window (origin ``t``,
targets ``t+1 .. t+horizon``) is then forecast by

- seasonal-naive: the value one season before each target (what ``test/naive_mae`` reports);
- Holt-Winters (statsmodels ``ExponentialSmoothing``): damped additive trend, additive or
  multiplicative season (the lower AIC), fitted on the steps before the test span;
- a seasonal ARIMA (statsmodels ``SARIMAX``), fitted on (at most the last ``--arima-fit-steps`` of)
  the steps before the test span: ``(1,1,1)(0,1,1)[season]`` for seasons up to 52 steps; for a
  longer season (365 daily steps, where a seasonal ARIMA's state would hold a year of steps) an
  ARIMA(1,1,1) with Fourier terms of the season (and of the week for daily data) as regressors;

both with their parameters fixed after fitting and their state run forward through the series, so
each origin's forecast uses the data up to that origin only, as the network's does. The statistical
models see the series as the network does (``log1p`` with ``data.log_target=true``, gaps filled
the same way). Then lit_dl trains through its own train path
(:func:`lit_dl.verbs.train.train_job`) once per seed. MAE and sMAPE (torchmetrics' ``2|y-ŷ|/(|y|+|ŷ|)``,
in [0, 2]) in the series' units, over every (window, step) of the test span.

    python benchmarks/forecast_baselines.py --series airline    # ../shared/data/timeseries
    python benchmarks/forecast_baselines.py --series pollution  # Beijing PM2.5, hourly
    python benchmarks/forecast_baselines.py --series daily      # generated: 10 years, yearly season
    python benchmarks/forecast_baselines.py data.path=FILE data.time_column=COL data.target=COL data.season=12

``daily`` sets ``data.seasonal_lags=1 data.calendar=true`` (its season of 365 steps reaches the network
through inputs, not a 365-step window).

Options: ``--seeds 0 1 2`` (training seeds of the network), ``--runs DIR`` (run folders), ``--no-lstm``,
``--no-stats``, ``--threads N`` (CPU threads of torch and statsmodels' BLAS; on shared cores 1 is fastest).
Other arguments are Hydra overrides of ``lit-dl train`` (after ``experiment=forecast_lstm`` and the
series' own), e.g. ``data.window=48 model.net.hidden_size=32``.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig
from statsmodels.tsa.holtwinters import ExponentialSmoothing
from statsmodels.tsa.statespace.sarimax import SARIMAX
from threadpoolctl import threadpool_limits

from lit_dl.cli import CONFIG_DIR
from lit_dl.verbs.train import train_job

QUIET = ["callbacks.progress_bar=null", "callbacks.model_summary=null", "callbacks.plots=null"]
# A seasonal ARIMA's state holds D * season steps: beyond this, Fourier terms stand in for the season.
MAX_SARIMA_SEASON = 52


def daily_series(path: Path, seed: int = 0, years: int = 10) -> Path:
    """A seeded daily series with a yearly season: trend, a yearly shape (two harmonics and a
    holiday dip), a weekly pattern, and AR(1) noise; written as CSV (``date``, ``value``)."""
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2010-01-01", periods=365 * years + years // 4, freq="D")
    year = (dates.day_of_year.to_numpy() - 1) / 365.25
    noise = np.zeros(len(dates))
    shocks = rng.normal(0, 2.0, len(dates))
    for t in range(1, len(dates)):
        noise[t] = 0.7 * noise[t - 1] + shocks[t]
    value = (
        50
        + 0.004 * np.arange(len(dates))
        + 10 * np.sin(2 * np.pi * year)
        + 4 * np.cos(4 * np.pi * year)
        - 8 * np.exp(-(((dates.day_of_year.to_numpy() - 358) / 4.0) ** 2))  # a dip around the holidays
        + np.array([0, 0.5, 0.5, 1, 2, -2, -2.5])[dates.day_of_week.to_numpy()]
        + noise
    )
    pd.DataFrame({"date": dates.strftime("%Y-%m-%d"), "value": value.round(3)}).to_csv(path, index=False)
    return path


def series_overrides(name: str | None, folder: Path, data_dir: Path) -> list[str]:
    """``lit-dl train`` overrides that read a named series (none: the caller gives them)."""
    if name == "airline":
        return [
            f"data.path={data_dir / 'airline-passengers.csv'}",
            "data.time_column=Month",
            "data.target=Passengers",
        ]
    if name == "pollution":
        return [
            f"data.path={data_dir / 'pollution.csv'}",
            "data.time_column=[year,month,day,hour]",
            "data.target=pm2.5",
            "data.season=24",
            "data.horizon=24",
        ]
    if name == "daily":
        return [
            f"data.path={daily_series(folder / 'daily.csv')}",
            "data.time_column=date",
            "data.target=value",
            "data.season=365",
            "data.horizon=14",
            # A year-long season through inputs, not a 365-step window: the value a year before each
            # step to forecast, and the step's place in the year and week (LSTM test MAE 2.47 with
            # them, 3.00 without, over seeds 0-2).
            "data.seasonal_lags=1",
            "data.calendar=true",
        ]
    return []


def compose_train(overrides: list[str]) -> DictConfig:
    """The config ``lit-dl train experiment=forecast_lstm`` composes with these overrides."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=["experiment=forecast_lstm", *overrides])


def errors(forecast: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    """MAE and sMAPE (as torchmetrics computes them) over every (window, step)."""
    smape = 2 * np.abs(actual - forecast) / np.clip(np.abs(actual) + np.abs(forecast), 1.17e-6, None)
    return {"mae": float(np.mean(np.abs(actual - forecast))), "smape": float(np.mean(smape))}


def holt_winters(y: np.ndarray, fit_end: int, season: int, origins: np.ndarray, horizon: int) -> np.ndarray:
    """``(N, horizon)`` Holt-Winters forecasts from each origin, parameters fitted on ``y[:fit_end]``.

    Damped additive trend; additive or multiplicative season, whichever has the lower AIC. The
    component recursions (Hyndman & Athanasopoulos, "Forecasting: principles and practice", 8.3)
    then run over the whole series with those parameters, so the state at ``t`` uses ``y[:t+1]``.
    """
    kinds = ["add", "mul"] if (y > 0).all() else ["add"]
    init = "estimated" if season <= MAX_SARIMA_SEASON else "heuristic"
    fits = [
        ExponentialSmoothing(
            y[:fit_end],
            trend="add",
            damped_trend=True,
            seasonal=kind,
            seasonal_periods=season,
            initialization_method=init,
        ).fit()
        for kind in kinds
    ]
    best = min(fits, key=lambda fit: fit.aic)
    p = best.params
    alpha, beta, gamma, phi = (
        p["smoothing_level"],
        p["smoothing_trend"],
        p["smoothing_seasonal"],
        p["damping_trend"],
    )
    multiplicative = best.model.seasonal == "mul"
    level, trend = p["initial_level"], p["initial_trend"]
    seasons = list(np.asarray(p["initial_seasons"], dtype=np.float64))  # s_{-m+1} .. s_0
    levels, trends = np.empty(len(y)), np.empty(len(y))
    for t, value in enumerate(y):
        past = seasons[t]  # s_{t-m}
        damped = level + phi * trend
        if multiplicative:
            new_level = alpha * value / past + (1 - alpha) * damped
            seasons.append(gamma * value / damped + (1 - gamma) * past)
        else:
            new_level = alpha * (value - past) + (1 - alpha) * damped
            seasons.append(gamma * (value - damped) + (1 - gamma) * past)
        trend = beta * (new_level - level) + (1 - beta) * phi * trend
        level = new_level
        levels[t], trends[t] = level, trend
    seasonal = np.asarray(seasons)  # seasonal[t + season] is s_t
    steps = np.arange(1, horizon + 1)
    damping = np.cumsum(phi**steps)  # phi + ... + phi^h
    base = levels[origins, None] + damping[None, :] * trends[origins, None]
    back = season * ((steps - 1) // season + 1)  # the last season's value of each target step
    index = origins[:, None] + steps[None, :] - back[None, :] + season
    return base * seasonal[index] if multiplicative else base + seasonal[index]


def fourier_terms(stamps: pd.DatetimeIndex, season: int) -> np.ndarray:
    """Sines and cosines of the season (3 harmonics; period 365.25 days for a daily year) and of
    the week (2 harmonics) for daily or finer data."""
    days = (stamps - stamps[0]) / pd.Timedelta(days=1)
    period = 365.25 if season == 365 else float(season)
    step = np.arange(len(stamps), dtype=np.float64) if season != 365 else days.to_numpy()
    columns = [f(2 * np.pi * k * step / period) for k in (1, 2, 3) for f in (np.sin, np.cos)]
    spacing = (stamps[1] - stamps[0]) / pd.Timedelta(days=1) if len(stamps) > 1 else 1.0
    if spacing <= 1:
        columns += [f(2 * np.pi * k * days.to_numpy() / 7) for k in (1, 2) for f in (np.sin, np.cos)]
    return np.stack(columns, axis=1)


def arima(
    y: np.ndarray,
    fit_end: int,
    season: int,
    origins: np.ndarray,
    horizon: int,
    stamps: pd.DatetimeIndex | None,
    fit_steps: int,
) -> tuple[np.ndarray, str]:
    """``(N, horizon)`` forecasts of a seasonal ARIMA (Fourier regressors for long seasons) from
    each origin, with parameters fitted on the last ``fit_steps`` of ``y[:fit_end]``."""
    start = max(0, fit_end - fit_steps)
    if season <= MAX_SARIMA_SEASON:
        name = f"SARIMA(1,1,1)(0,1,1)[{season}]"
        exog = None
        spec = {"order": (1, 1, 1), "seasonal_order": (0, 1, 1, season)}
    else:
        if stamps is None:
            raise SystemExit(f"a season of {season} steps needs dates for its Fourier terms")
        name = "ARIMA(1,1,1) + Fourier terms"
        exog = fourier_terms(stamps, season)
        spec = {"order": (1, 1, 1)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = SARIMAX(y[start:fit_end], exog=None if exog is None else exog[start:fit_end], **spec).fit(
            disp=False
        )
        # The same parameters, filtered over the whole series (from `start`): states given the past only.
        full = fitted.apply(y[start:], exog=None if exog is None else exog[start:])
    ssm = full.model.ssm
    design = ssm["design"][:, :, 0] if ssm["design"].ndim == 3 else ssm["design"]
    transition = ssm["transition"][:, :, 0] if ssm["transition"].ndim == 3 else ssm["transition"]
    intercept = ssm["state_intercept"]
    intercept = intercept[:, 0] if intercept.ndim == 2 else intercept
    obs = ssm["obs_intercept"]
    obs = obs[0] if obs.ndim == 2 else np.full(len(y) - start, float(obs[0]))
    local = origins - start
    state = full.filter_results.predicted_state[:, local + 1]  # a_{t+1|t}, (k_states, N)
    forecasts = np.empty((len(origins), horizon))
    for h in range(horizon):
        forecasts[:, h] = (design @ state)[0] + obs[local + 1 + h]
        state = transition @ state + intercept[:, None]
    return forecasts, name


def lstm_run(overrides: list[str], output_dir: Path) -> dict[str, float]:
    """One ``lit-dl train`` run: its test MAE, sMAPE and seasonal-naive MAE, and its wall time."""
    cfg = compose_train([*overrides, *QUIET])
    start = time.perf_counter()
    metrics = train_job(cfg, output_dir)
    return {
        "mae": metrics["test/mae"],
        "smape": metrics["test/smape"],
        "naive_mae": metrics["test/naive_mae"],
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", choices=["airline", "pollution", "daily"], default=None)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data/timeseries"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arima-fit-steps", type=int, default=5000)
    parser.add_argument("--no-lstm", action="store_true", help="the statistical models only")
    parser.add_argument("--no-stats", action="store_true", help="seasonal-naive and the network only")
    parser.add_argument("--runs", type=Path, default=None, help="run folders (default: a temporary one)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    args, overrides = parser.parse_known_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    runs = args.runs or Path(tempfile.mkdtemp(prefix="lit_dl_forecast_baselines_"))
    runs.mkdir(parents=True, exist_ok=True)
    overrides = [*series_overrides(args.series, runs, args.data_dir.resolve()), *overrides]

    cfg = compose_train(overrides)
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    test = datamodule.datasets["test"]
    mean, scale = datamodule.scaler_mean[0], datamodule.scaler_scale[0]
    modelled = test.series[:, 0].double().numpy() * scale + mean  # the series as the network sees it
    to_units = np.expm1 if datamodule.log_target else (lambda v: v)
    origins, horizon, season = test.origins.numpy(), datamodule.horizon, datamodule.season
    steps = np.arange(1, horizon + 1)
    actual = to_units(modelled[origins[:, None] + steps])
    fit_end = int(origins.min()) + 1  # the test span starts after the first test origin
    stamps = datamodule.read_series(datamodule.path).frame.index[: len(modelled)]
    stamps = stamps if isinstance(stamps, pd.DatetimeIndex) else None

    results: dict[str, list[dict[str, float]]] = {}
    naive_index = origins[:, None] + steps - season * np.ceil(steps / season).astype(int)
    results["seasonal-naive"] = [{**errors(to_units(modelled[naive_index]), actual), "seconds": 0.0}]
    if not args.no_stats:
        start = time.perf_counter()
        forecast = holt_winters(modelled, fit_end, season, origins, horizon)
        results["Holt-Winters"] = [
            {**errors(to_units(forecast), actual), "seconds": time.perf_counter() - start}
        ]
        start = time.perf_counter()
        forecast, name = arima(modelled, fit_end, season, origins, horizon, stamps, args.arima_fit_steps)
        results[name] = [{**errors(to_units(forecast), actual), "seconds": time.perf_counter() - start}]
    for model, runs_ in results.items():
        print(f"{model}: MAE {runs_[0]['mae']:.4f} sMAPE {runs_[0]['smape']:.4f}", flush=True)
    if not args.no_lstm:
        for seed in args.seeds:
            run = lstm_run([*overrides, f"seed={seed}"], runs / f"lstm_seed{seed}")
            results.setdefault("lit_dl LSTM", []).append(run)
            print(
                f"seed {seed}: MAE {run['mae']:.4f} sMAPE {run['smape']:.4f} "
                f"(its naive MAE {run['naive_mae']:.4f}) {run['seconds']:.1f} s",
                flush=True,
            )

    def spread(values: list[float]) -> str:
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.fmean(values):.4f} ± {std:.4f}" if len(values) > 1 else f"{values[0]:.4f}"

    table = pd.DataFrame(
        [
            {
                "model": model,
                "MAE": spread([r["mae"] for r in rs]),
                "sMAPE": spread([r["smape"] for r in rs]),
                "seconds": f"{statistics.fmean(r['seconds'] for r in rs):.1f}",
            }
            for model, rs in results.items()
        ]
    ).set_index("model")
    print(
        f"\n{args.series or 'series'}: {len(origins)} test windows of {horizon} steps (season {season}), "
        f"LSTM seeds {args.seeds}; {' '.join(overrides)}"
    )
    print(table.to_string())


if __name__ == "__main__":
    main()
