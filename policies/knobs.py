"""Knobs: a policy's options, declared once, on its frozen params dataclass.

A field made with `knob(...)` is a run option: the simulator generates its CLI flag
(`servesim replay --help`), its TOML / sweep-grid key, its dashboard control and its one
type-and-range check from this declaration, and fills the field from the option when it builds
the policy (`PolicyEntry.make_params`). A field made without `knob` is not an option: the
engine fills it (pool size, KV layout, ...) or it keeps its default.

How to declare a knob (and convert an option added the old way):

    @dataclass(frozen=True, slots=True)
    class ToyParams:
        max_batch: int = knob(8, flag="--toy-max-batch", min=1,
                              help="toy: sequences per batch")
        order: str = knob("fifo", choices=("fifo", "lifo"), help="toy: queue order")

    1. Move the option's default, help text and bound onto the params field as above: the
       type is the field's annotation (int, float, str, bool; `X | None` for an option that
       may be left unset), `min`/`max` (with `min_open` for `> min`) replace its entry in
       `sim.option_check.BOUNDS`, `choices` replaces a hand-written "unknown ..." check.
    2. `flag` only when the option's name differs from the field's (the flag, the TOML key,
       the sweep-grid key and summary/record keys all follow the option's name: `--toy-max-
       batch` <-> `toy_max_batch`); by default the option is named as the field.
    3. Delete the option's `ReplayOptions` field, its `sim.option_help.OPTION_HELP` line, its `BOUNDS` line,
       any renaming into `policy_options` and its dashboard entry (`ui/controls.py`): all are
       generated. Add the policy's registry line if it has none (params of something no
       registry table selects, such as the decoding mode, go in `registry.OPTION_PARAMS`).
    4. Several params may declare the same option (every speculator's `spec_k`): declare it
       once on a shared base class, or identically (same type, default and knob) in each.

Options that are not any policy's (model, hardware, trace, seed, the engine's token budget...)
stay hand-written in `sim.config.ReplayOptions`.
"""

from __future__ import annotations

from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, Iterable, Mapping

KNOB = "knob"
"""The `dataclasses.field` metadata key holding a field's `Knob`."""

WIDGETS = ("select", "number", "checkbox", "text")


@dataclass(frozen=True, slots=True)
class Bound:
    """`low <= value` (`low < value` when `low_open`), and `value <= high` when given."""

    low: float
    low_open: bool = False
    high: float | None = None

    def admits(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        return above and (self.high is None or value <= self.high)

    def describe(self) -> str:
        low = f"> {self.low:g}" if self.low_open else f">= {self.low:g}"
        if self.high is None:
            return f"must be {low}"
        if self.low_open:
            return f"must lie in ({self.low:g}, {self.high:g}]"
        return f"must lie in [{self.low:g}, {self.high:g}]"


@dataclass(frozen=True, slots=True)
class Knob:
    """What a params field declares beyond its type and default (see the module docstring)."""

    help: str
    option: str | None = None
    """The option's name when it differs from the field's (from `knob(flag=...)`)."""
    bound: Bound | None = None
    choices: tuple[str, ...] = ()
    widget: str | None = None
    """The dashboard's widget: `select`, `number`, `checkbox` or `text`; None: from the type
    and choices."""
    unset_from: str | None = None
    """An option whose value this one takes when left unset (None)."""


def knob(default: Any, *, help: str, flag: str | None = None, min: float | None = None,
         max: float | None = None, min_open: bool = False, choices: Iterable[str] = (),
         widget: str | None = None, unset_from: str | None = None) -> Any:
    """A params field that is also a run option (a `dataclasses.field` with a `Knob`)."""
    option = None
    if flag is not None:
        if not flag.startswith("--") or flag != flag.lower() or "_" in flag:
            raise TypeError(f"a knob's flag is --lower-case-with-dashes, got {flag!r}")
        option = flag[2:].replace("-", "_")
    if min is None and max is not None:
        raise TypeError("a knob's max needs a min")
    if widget is not None and widget not in WIDGETS:
        raise TypeError(f"a knob's widget is one of {WIDGETS}, got {widget!r}")
    bound = None if min is None else Bound(min, min_open, max)
    return field(default=default, metadata={KNOB: Knob(help, option, bound, tuple(choices),
                                                       widget, unset_from)})


@dataclass(frozen=True, slots=True)
class DeclaredKnob:
    """One option as a params class declares it."""

    option: str
    field_name: str
    type_text: str
    """The field's annotation as text (`"int"`, `"str | None"`)."""
    default: Any
    knob: Knob

    @property
    def flag(self) -> str:
        return "--" + self.option.replace("_", "-")

    @property
    def option_type(self) -> str:
        """The option's type: the field's, plus None when it may be left unset."""
        if self.knob.unset_from is None or "None" in self.type_text:
            return self.type_text
        return f"{self.type_text} | None"

    @property
    def option_default(self) -> Any:
        return None if self.knob.unset_from is not None else self.default

    def same_as(self, other: DeclaredKnob) -> bool:
        return (self.option, self.type_text, self.default, self.knob) == (
            other.option, other.type_text, other.default, other.knob)


def knob_of(f: Field) -> Knob | None:
    return f.metadata.get(KNOB)


def option_name(f: Field) -> str:
    """The option that fills field `f`: its knob's option name, else the field's own name
    (engine-filled fields are passed by field name)."""
    declared = knob_of(f)
    return declared.option or f.name if declared is not None else f.name


def declared_knobs(params: type) -> list[DeclaredKnob]:
    """The knobs of a params dataclass, in field order (inherited ones first)."""
    found = []
    for f in fields(params):
        declared = knob_of(f)
        if declared is None:
            continue
        if f.default is MISSING:
            raise TypeError(f"knob {params.__name__}.{f.name} needs a default")
        type_text = f.type if isinstance(f.type, str) else f.type.__name__
        found.append(DeclaredKnob(declared.option or f.name, f.name, type_text, f.default,
                                  declared))
    return found


def collect_knobs(params_classes: Iterable[type]) -> dict[str, DeclaredKnob]:
    """Every knob of `params_classes` by option name, first declaration first; one option
    declared differently by two classes is a programming error (TypeError)."""
    collected: dict[str, DeclaredKnob] = {}
    for params in params_classes:
        for declared in declared_knobs(params):
            earlier = collected.setdefault(declared.option, declared)
            if not earlier.same_as(declared):
                raise TypeError(f"option {declared.option!r} is declared differently by "
                                f"{params.__name__}: declare it once on a shared base class")
    return collected


def check_knob(declared: DeclaredKnob, value: Any) -> None:
    """The knob's range and choices (the type is the caller's: see `sim.option_check`)."""
    k = declared.knob
    if value is None:
        return
    if k.choices and value not in k.choices:
        words = declared.option.replace("_", " ")
        raise ValueError(f"unknown {words} {value!r}; {declared.flag} takes one of: "
                         f"{', '.join(k.choices)} (option {declared.option})")
    if (k.bound is not None and isinstance(value, (int, float)) and not isinstance(value, bool)
            and not k.bound.admits(value)):
        raise ValueError(f"{declared.flag} {k.bound.describe()}, got {value!r} "
                         f"(option {declared.option})")


def check_knobs(params: Any) -> None:
    """Check every knob of a params instance (for its `__post_init__`): the same check, and
    the same message, as the option gets (`sim.option_check`)."""
    for declared in declared_knobs(type(params)):
        check_knob(declared, getattr(params, declared.field_name))


def params_from_options(params: type, options: Mapping[str, Any]) -> Any:
    """`params` filled from a flat options mapping: each field from the option of its name
    (`option_name`), fields whose option is absent or None keeping their defaults."""
    values = {}
    for f in fields(params):
        value = options.get(option_name(f))
        if value is not None:
            values[f.name] = value
    return params(**values)
