"""Drift detection: does a stored calibration still fit a fresh profile of what it describes?

A calibration is fitted to one profile; the code (roofline, fit) or the machine (driver,
library versions, another host) can move under it. Fit the fresh profile anew and compare:
the stored coefficients may predict the fresh timings at most `tolerance_pct` points of MAPE
worse than a fit made on them. Comparing errors, not coefficient values, is deliberate: the
efficiencies trade off against each other (a faster GEMM or a smaller fixed overhead fit a
decode step equally well), so coefficients can move a lot while the predictions do not. The
coefficient changes and the median measured/predicted ratio are reported to say what moved.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from sim.cost.calibrate import FITTED, FitResult, evaluate, fit, predict
from sim.cost.coefficients import Coefficients
from sim.cost.fit_defaults import DRIFT_TOLERANCE_PCT
from sim.cost.profiles import TimingSample


@dataclass(frozen=True, slots=True)
class DriftReport:
    stored_mape_pct: float
    """MAPE of the stored coefficients on the fresh profile (all points)."""
    refit_mape_pct: float
    """MAPE of a fit to the fresh profile on it (all points): the noise floor."""
    measured_over_predicted: float
    """Median over samples of measured / stored prediction: 1.5 means 50% slower now."""
    coefficient_change: dict[str, float]
    """Relative change of each coefficient the refit pinned down (refit / stored - 1)."""
    tolerance_pct: float
    refit: FitResult

    @property
    def drifted(self) -> bool:
        return self.stored_mape_pct > self.refit_mape_pct + self.tolerance_pct

    def describe(self) -> str:
        verdict = "DRIFTED" if self.drifted else "ok"
        return (f"{verdict}: stored coefficients {self.stored_mape_pct:.1f}% MAPE on the fresh "
                f"profile, a refit {self.refit_mape_pct:.1f}% (tolerance "
                f"{self.tolerance_pct:.1f} points); measured/predicted median "
                f"{self.measured_over_predicted:.3f}")


def check_drift(samples: list[TimingSample], stored: Coefficients,
                tolerance_pct: float = DRIFT_TOLERANCE_PCT) -> DriftReport:
    """Compare `stored` with a fresh fit on `samples` (one hardware)."""
    refit = fit(samples, start=stored)
    predicted = predict(samples, stored)
    ratio = statistics.median(s.measured_s / p for s, p in zip(samples, predicted))
    pinned = set(FITTED) - set(refit.not_informed)
    change = {}
    for name in FITTED:
        old, new = getattr(stored, name), getattr(refit.coefficients, name)
        if name in pinned and old and new is not None:
            change[name] = new / old - 1.0
    return DriftReport(
        stored_mape_pct=evaluate(samples, stored).stats(split="all").mape_pct,
        refit_mape_pct=refit.report.stats(split="all").mape_pct,
        measured_over_predicted=float(ratio), coefficient_change=change,
        tolerance_pct=tolerance_pct, refit=refit)
