"""Sweeps and capacity search: many full simulations, each one cell's `ReplayOptions`."""
