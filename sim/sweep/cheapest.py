"""The cheapest deployment from a grid: each cell's capacity, priced per GPU-hour.

As in DistServe and Vidur-Search: a cell (hardware x parallelism x replicas x policies) costs
`gpus * price_per_gpu_hour` and serves its capacity in requests per second, so its price per
million requests is `gpus * price / 3600 / rate * 1e6`; the cheapest cell is the answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from sim.config import ReplayOptions
from sim.sweep.capacity import Capacity
from sim.sweep.grid import Cell

CapacityFn = Callable[[ReplayOptions], Capacity]


@dataclass(frozen=True, slots=True)
class PricedCell:
    cell: Cell
    num_gpus: int
    capacity: Capacity | None
    """None when no probed rate met the SLOs (then `error` says why)."""
    usd_per_million_requests: float
    """Infinite for a cell that meets the SLOs at no rate."""
    error: str = ""


def parse_prices(text: str) -> dict[str, float]:
    """`h100=2.5,a100=1.6` -> USD per GPU-hour by hardware name."""
    prices: dict[str, float] = {}
    for item in text.split(","):
        name, equals, value = item.partition("=")
        try:
            price = float(value)
        except ValueError:
            price = math.nan
        if not equals or not name.strip() or not price > 0 or not math.isfinite(price):
            raise ValueError(f"--gpu-price takes HARDWARE=USD_PER_GPU_HOUR,... such as "
                             f"h100=2.5,a100=1.6; bad item {item!r}")
        prices[name.strip()] = price
    return prices


def num_gpus(options: ReplayOptions) -> int:
    return options.tp * options.pp * sum(options.pools)


def hardware_prices(hardware_names: set[str], given: dict[str, float]) -> dict[str, float]:
    """USD per GPU-hour of each hardware: the `--gpu-price` given for it, else its spec's
    `price_per_hour`; an error names those with neither."""
    from sim.cost.catalog import get_hardware

    prices = {}
    for name in sorted(hardware_names):
        price = given[name] if name in given else get_hardware(name).price_per_hour
        if price is not None:
            prices[name] = price
    unpriced = sorted(hardware_names - set(prices))
    if unpriced:
        raise ValueError(f"--gpu-price lacks a price for {', '.join(unpriced)} (and no "
                         "price_per_hour in its hardware spec)")
    return prices


def cheapest(
    base: ReplayOptions, cells: list[Cell], given_prices: dict[str, float],
    capacity_fn: CapacityFn,
) -> list[PricedCell]:
    """Every cell priced, cheapest first (grid order among equals). A hardware's price is the
    one given (`--gpu-price`), else its spec's `price_per_hour`."""
    configs = [base.updated(cell.values) for cell in cells]
    prices = hardware_prices({o.hardware for o in configs}, given_prices)
    priced = []
    for cell, options in zip(cells, configs):
        gpus = num_gpus(options)
        try:
            capacity = capacity_fn(options)
        except ValueError as exc:  # this cell meets the SLOs at no rate, or is invalid
            priced.append(PricedCell(cell, gpus, None, math.inf, str(exc)))
            continue
        usd = gpus * prices[options.hardware] / 3600 / capacity.rate_req_s * 1e6
        priced.append(PricedCell(cell, gpus, capacity, usd))
    return sorted(priced, key=lambda p: (p.usd_per_million_requests, p.cell.index))
