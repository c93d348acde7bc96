"""The registered policies' knobs as run options: what `ReplayOptions`, the CLI, the option
check and the dashboard generate from (`policies/knobs.py` says how a knob is declared).

The registry is read once, when this module is first imported: a policy registered later is
not an option of this process (the options are a frozen dataclass built from this table).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from policies.knobs import DeclaredKnob, check_knob, collect_knobs, declared_knobs
from policies.registry import OPTION_PARAMS, TABLES, PolicyEntry


@dataclass(frozen=True, slots=True)
class KnobOption:
    """A policy knob as a front end shows it."""

    name: str
    """The option's name: TOML and sweep-grid key; the flag is `--` + name with dashes."""
    kind: str
    """The registry table declaring it first (`schedulers`, ...) or an `OPTION_PARAMS` kind."""
    policies: tuple[str, ...]
    """The policies of that kind that read it (empty for an `OPTION_PARAMS` kind)."""
    help: str
    type_text: str
    default: Any
    choices: tuple[str, ...]
    low: float | None
    """The smallest value a number widget offers (None: no bound, or an open one)."""
    high: float | None
    widget: str
    """`select`, `number`, `checkbox` or `text`."""


def declarations(tables: Mapping[str, Mapping[str, PolicyEntry]] = TABLES,
                 option_params: Mapping[str, type] = OPTION_PARAMS,
                 ) -> dict[str, tuple[DeclaredKnob, str, tuple[str, ...]]]:
    """Every knob of the registry by option name, in registry order, with the kind declaring
    it first and the policies of that kind that read it."""
    holders: list[tuple[str, str | None, type]] = [
        (kind, name, entry.params) for kind, table in tables.items()
        for name, entry in table.items()]
    holders += [(kind, None, params) for kind, params in option_params.items()]
    declared = collect_knobs(params for _, _, params in holders)
    found: dict[str, tuple[DeclaredKnob, str, tuple[str, ...]]] = {}
    for option, knob in declared.items():
        readers = [(kind, name) for kind, name, params in holders
                   if any(k.option == option for k in declared_knobs(params))]
        kind = readers[0][0]
        found[option] = (knob, kind, tuple(n for k, n in readers if k == kind and n))
    return found


_DECLARED = declarations()

KNOBS: dict[str, DeclaredKnob] = {name: knob for name, (knob, _, _) in _DECLARED.items()}
"""Every policy knob by option name, in registry order, as this process's options have them."""


def _widget(knob: DeclaredKnob) -> str:
    if knob.knob.widget is not None:
        return knob.knob.widget
    if knob.knob.choices:
        return "select"
    base = knob.type_text.split("|")[0].strip()
    return {"bool": "checkbox", "int": "number", "float": "number"}.get(base, "text")


def _option(knob: DeclaredKnob, kind: str, policies: tuple[str, ...]) -> KnobOption:
    bound = knob.knob.bound
    low = None if bound is None or bound.low_open else bound.low
    return KnobOption(knob.option, kind, policies, knob.knob.help, knob.option_type,
                      knob.option_default, knob.knob.choices, low,
                      None if bound is None else bound.high, _widget(knob))


KNOB_OPTIONS: tuple[KnobOption, ...] = tuple(
    _option(knob, kind, policies) for knob, kind, policies in _DECLARED.values())
"""The knobs as the dashboard and the CLI's help describe them."""


def knob_fields(cls: type) -> type:
    """Class decorator (under `@dataclass`): add one field per policy knob, after the class's
    own, typed and defaulted as the option (an unset-able knob's default is None)."""
    annotations = cls.__dict__.get("__annotations__", {})
    for name, knob in KNOBS.items():
        if name in annotations:
            raise TypeError(f"option {name!r} is a policy knob; remove it from {cls.__name__}")
        annotations[name] = knob.option_type
        setattr(cls, name, knob.option_default)
    cls.__annotations__ = annotations
    return cls


def check_knob_option(name: str, value: Any) -> None:
    """The knob's range and choices; nothing for an option that is not a knob."""
    knob = KNOBS.get(name)
    if knob is not None:
        check_knob(knob, value)


def knob_values(options: Any) -> dict[str, Any]:
    """Every knob's value in `options` by option name; an unset one (None) takes the value of
    the option it is unset from, if that is set (the chunked token budget from
    `--max-num-batched-tokens`); still None, the policy's own default applies."""
    values = {}
    for name, knob in KNOBS.items():
        value = getattr(options, name)
        if value is None and knob.knob.unset_from is not None:
            value = getattr(options, knob.knob.unset_from)
        values[name] = value
    return values
