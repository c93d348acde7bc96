"""The calibration fit's settings that `servesim calibrate` takes as flags, apart from the
fitting code (`sim.cost.calibrate`, `sim.cost.drift`) so the command line's parser, which
every `servesim` command builds, shows their defaults without importing it."""

HOLDOUT_EVERY = 5
"""Every k-th point of each profile file is held out of the fit, to report its error on."""
DRIFT_TOLERANCE_PCT = 10.0
"""MAPE points a stored calibration may lose to a refit before the drift check fails."""
