"""One type and range check for every `ReplayOptions` value, wherever it came from.

The CLI, TOML config files, sweep grids and the dashboard all end in a `ReplayOptions`, whose
`__post_init__` runs `check_option` on each field: the field's declared type decides what is
accepted, so a new option is checked the moment it is declared. Integer options take integers
(an integral float such as `2.0` becomes `2`); float options take integers or floats; strings
take strings; bool options take only true/false. A bound then rejects values no run can use
(a block size of 0, a negative horizon) before anything divides by them: an engine option's
from `BOUNDS`, a policy knob's range and choices from its declaration (`policies.knobs`), with
the same messages.
"""

from __future__ import annotations

import math
from typing import Any

from policies.knobs import Bound
from sim.policy_knobs import check_knob_option

_TYPE_WORDS = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false"}


_POSITIVE = Bound(0.0, low_open=True)
_NON_NEGATIVE = Bound(0.0)
_AT_LEAST_ONE = Bound(1)
_SHARE = Bound(0.0, high=1.0)

BOUNDS: dict[str, Bound] = {
    "max_requests": _AT_LEAST_ONE,
    "window_start_s": _NON_NEGATIVE,
    "window_end_s": _POSITIVE,
    "rate_scale": _POSITIVE,
    "prompt_inflation": _POSITIVE,
    "tp": _AT_LEAST_ONE,
    "pp": _AT_LEAST_ONE,
    "replicas": _AT_LEAST_ONE,
    "kv_link_bandwidth_gb_s": _POSITIVE,
    "kv_link_latency_s": _NON_NEGATIVE,
    "max_num_batched_tokens": _AT_LEAST_ONE,
    "n": Bound(1, high=1024),
    "beam_width": Bound(1, high=1024),
    "beam_churn": _SHARE,
    "block_size": _AT_LEAST_ONE,
    "gpu_memory_utilization": Bound(0.0, low_open=True, high=1.0),
    "num_gpu_blocks": _AT_LEAST_ONE,
    "swap_space_gb": _NON_NEGATIVE,
    "max_model_len": _AT_LEAST_ONE,
    "seed": _NON_NEGATIVE,
    "horizon_s": _POSITIVE,
    "slo_ttft_s": _POSITIVE,
    "slo_tpot_s": _POSITIVE,
    "spec_draft_pass_overhead_s": _NON_NEGATIVE,
    "temperature": _NON_NEGATIVE,
    "top_k": _NON_NEGATIVE,
    "top_p": Bound(0.0, low_open=True, high=1.0),
}
"""Engine options' bounds (policy knobs declare their own); values outside them are errors;
None (where a field allows it) means "default"."""


BLANK_IS_DEFAULT = frozenset({"trace"})
"""Text options whose documented default is the empty string (`trace`: the bundled trace)."""


def parse_type(type_text: str) -> tuple[tuple[str, ...], bool]:
    """`"int | None"` -> `(("int",), True)`: the accepted base types, in order, and whether
    None is allowed."""
    parts = [part.strip() for part in type_text.split("|")]
    bases = tuple(part for part in parts if part != "None")
    if not bases or any(base not in _TYPE_WORDS for base in bases):
        raise TypeError(f"option type {type_text!r} has no checker")  # a programming error
    return bases, "None" in parts


def check_option(name: str, value: Any, type_text: str) -> Any:
    """`value` as the option's type (int for an integral float, float for an int), or a
    ValueError naming the option."""
    bases, optional = parse_type(type_text)
    if value is None:
        if optional:
            return None
        raise ValueError(_type_error(name, value, bases))
    converted = next((c for c in (_convert(value, base) for base in bases) if c is not None),
                     None)
    if converted is None:
        raise ValueError(_type_error(name, value, bases))
    if isinstance(converted, str) and not converted.strip() and name not in BLANK_IS_DEFAULT:
        # a blank name or path would read as "not given" wherever an option is tested for truth
        raise ValueError(f"{_flag(name)} must not be empty (option {name})")
    bound = BOUNDS.get(name)
    if bound is not None and isinstance(converted, (int, float)) and not bound.admits(converted):
        raise ValueError(f"{_flag(name)} {bound.describe()}, got {converted!r} (option {name})")
    check_knob_option(name, converted)
    return converted


def _convert(value: Any, base: str) -> Any:
    """The value as `base`, or None when it is not one (bool is never a number here)."""
    if base == "bool":
        return value if isinstance(value, bool) else None
    if base == "str":
        return value if isinstance(value, str) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if base == "float":
        return None if math.isnan(value) else float(value)
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    return value


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _type_error(name: str, value: Any, bases: tuple[str, ...]) -> str:
    wanted = " or ".join(_TYPE_WORDS[base] for base in bases)
    quoted = bases == ("str",) and isinstance(value, (int, float)) and not isinstance(value, bool)
    hint = f' (quote it in TOML: {name} = "{value}")' if quoted else ""
    return f"{_flag(name)} must be {wanted}, got {value!r} ({type(value).__name__}; option {name}){hint}"
