"""An inference-perf config's `data` and `load` sections, read and checked.

inference-perf (kubernetes-sigs/inference-perf) validates its config with models that forbid
unknown keys; so does this reader, for the two sections servesim replays (the others, `api`,
`server`, `report`, ..., are ignored). Keys inference-perf knows but that do not change the
requests the server sees, or that servesim does not model, are accepted and named in the
trace's notes; those that would change the requests in ways servesim cannot follow (multimodal
content, LoRA splits, a saturation sweep) are errors. Every error is one line naming the file,
the field and the offending value.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from traces.closed_loop import ClosedLoopStage
from traces.inference_perf.lengths import DISTRIBUTION_TYPES, LengthSpec
from traces.trace import TraceFormatError

DATA_TYPES = ("shared_prefix", "random", "synthetic")
LOAD_TYPES = ("constant", "poisson", "concurrent")
MAX_REQUESTS = 10_000_000
"""Most requests a config may ask for (a typo in a rate or duration fails here, not in memory)."""

_DATA_KEYS = ("type", "path", "corpus_file_path", "input_distribution", "output_distribution",
              "shared_prefix", "multimodal", "trace", "otel_trace_replay", "weka_trace_replay",
              "conversation_replay", "visionarena", "use_chat_template")
_DATA_KEYS_REFUSED = ("multimodal", "trace")
"""Non-null, they change the prompts in ways servesim does not model."""
_SHARED_PREFIX_KEYS = ("num_groups", "num_unique_system_prompts", "num_prompts_per_group",
                       "num_users_per_system_prompt", "system_prompt_len", "question_len",
                       "output_len", "seed", "question_distribution", "output_distribution",
                       "enable_multi_turn_chat", "multimodal")
_DISTRIBUTION_KEYS = ("min", "max", "mean", "std_dev", "variance", "total_count", "type", "skew")
_LOAD_KEYS = ("type", "interval", "stages", "sweep", "num_workers", "worker_max_concurrency",
              "worker_max_tcp_connections", "trace", "circuit_breakers", "request_timeout",
              "lora_traffic_split", "base_seed")
_LOAD_CLIENT_KEYS = ("num_workers", "worker_max_concurrency", "worker_max_tcp_connections",
                     "circuit_breakers", "request_timeout", "base_seed", "trace")
"""The client's own machinery: how it sends, not what it sends."""


@dataclass(frozen=True, slots=True)
class SharedPrefixData:
    num_groups: int
    num_prompts_per_group: int
    system_prompt_len: LengthSpec
    question_len: LengthSpec
    output_len: LengthSpec


@dataclass(frozen=True, slots=True)
class IODistributionData:
    """`random` or `synthetic`: each prompt's length from `input_len`, no shared content."""

    kind: str
    input_len: LengthSpec
    output_len: LengthSpec
    num_prompts: int | None
    """The `total_count` of length pairs drawn up front (the smaller of the two), if given."""


@dataclass(frozen=True, slots=True)
class RateStage:
    rate_per_s: float
    duration_s: float

    @property
    def num_requests(self) -> int:
        """inference-perf sends int(rate x duration) requests in a stage."""
        return int(self.rate_per_s * self.duration_s)


@dataclass(frozen=True, slots=True)
class InferencePerfConfig:
    data: SharedPrefixData | IODistributionData
    load_type: str
    stages: tuple[RateStage, ...] | tuple[ClosedLoopStage, ...]
    notes: tuple[str, ...] = field(default=())
    """What was accepted without being modelled."""


def read_config(path: str | Path) -> InferencePerfConfig:
    """The `data` and `load` sections of the YAML or JSON file at `path`."""
    document = _Section(str(path), "", _parse(Path(path)))
    notes: list[str] = []
    data = _read_data(document.section("data"), notes)
    load_type, stages = _read_load(document.section("load"), notes)
    return InferencePerfConfig(data, load_type, stages, tuple(notes))


def _parse(path: Path) -> dict:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise TraceFormatError(f"{path}: cannot read the inference-perf config: {reason}") from None
    if path.suffix.lower() == ".json":
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            raise TraceFormatError(f"{path}: unreadable JSON: {error.msg} (line {error.lineno}, "
                                   f"column {error.colno})") from None
    else:
        import yaml  # only inference-perf configs need it

        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise TraceFormatError(f"{path}: unreadable YAML: {_yaml_problem(error)}") from None
    if not isinstance(document, dict):
        raise TraceFormatError(f"{path}: an inference-perf config is a mapping with data and "
                               f"load sections, got {type(document).__name__}")
    return document


def _yaml_problem(error: Exception) -> str:
    """PyYAML's message on one line: the problem and where."""
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    mark = getattr(error, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"{problem}{where}"


class _Section:
    """One mapping of the config, with the dotted path of its fields for error messages."""

    def __init__(self, file: str, where: str, values: dict) -> None:
        self.file, self.where, self.values = file, where, values

    def name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def fail(self, key: str, problem: str) -> TraceFormatError:
        return TraceFormatError(f"{self.file}: {self.name(key)} {problem}")

    def get(self, key: str) -> Any:
        return self.values.get(key)

    def has(self, key: str) -> bool:
        return self.values.get(key) is not None

    def reject_unknown(self, known: tuple[str, ...]) -> None:
        for key in self.values:
            if key not in known:
                raise self.fail(str(key), f"is not an inference-perf field here (known: "
                                          f"{', '.join(known)})")

    def section(self, key: str) -> _Section:
        value = self.values.get(key)
        if value is None:
            raise self.fail(key, "is missing")
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a mapping, got {value!r}")
        return _Section(self.file, self.name(key), value)

    def choice(self, key: str, choices: tuple[str, ...], default: str | None = None) -> str:
        value = self.values.get(key, default)
        if value is None:
            raise self.fail(key, f"is missing (one of {', '.join(choices)})")
        if value not in choices:
            raise self.fail(key, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def _numeric(self, key: str, default: float | None) -> Any:
        """The value, a numeric string read as a number (inference-perf's pydantic does so,
        and PyYAML reads `1e3` as a string)."""
        value = self.values.get(key, default)
        if value is None:
            raise self.fail(key, "is missing")
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        return value

    def number(self, key: str, default: float | None = None, *, positive: bool = False,
               at_least: float | None = None) -> float:
        value = self._numeric(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            raise self.fail(key, f"must be a number, got {self.get(key)!r}")
        if positive and not value > 0:
            raise self.fail(key, f"must be positive, got {value!r}")
        if at_least is not None and value < at_least:
            raise self.fail(key, f"must be >= {at_least:g}, got {value!r}")
        return float(value)

    def whole(self, key: str, default: int | None = None, *, at_least: int = 0) -> int:
        value = self._numeric(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or not float(value).is_integer():
            raise self.fail(key, f"must be a whole number, got {self.get(key)!r}")
        if value < at_least:
            raise self.fail(key, f"must be >= {at_least}, got {value!r}")
        return int(value)

    def flag(self, key: str, default: bool) -> bool:
        value = self.values.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, got {value!r}")
        return value

    def aliased(self, key: str, alias: str) -> str:
        """Which of two names for one field is given (inference-perf takes either)."""
        if self.has(key) and self.has(alias) and self.get(key) != self.get(alias):
            raise self.fail(key, f"and {alias} name the same field with different values "
                                 f"({self.get(key)!r}, {self.get(alias)!r})")
        return alias if self.has(alias) else key


def _read_data(data: _Section, notes: list[str]) -> SharedPrefixData | IODistributionData:
    data.reject_unknown(_DATA_KEYS)
    kind = data.choice("type", DATA_TYPES)
    for key in _DATA_KEYS_REFUSED:
        if data.has(key):
            raise data.fail(key, f"is not modelled by servesim, got {data.get(key)!r}")
    used = {"type", "use_chat_template"}
    if kind == "synthetic":
        used.add("corpus_file_path")  # the prompts' text: their lengths do not change
    if kind == "shared_prefix":
        used.add("shared_prefix")
        result: SharedPrefixData | IODistributionData = _read_shared_prefix(
            data.section("shared_prefix"), notes)
    else:
        used.update(("input_distribution", "output_distribution"))
        result = _read_io_distributions(kind, data)
    data.flag("use_chat_template", False)  # lengths target the templated prompt: no change
    unused = [data.name(key) for key in data.values if key not in used and data.has(key)]
    if unused:
        notes.append(f"{', '.join(unused)} ignored: not used by data type {kind} "
                     "(inference-perf ignores them too)")
    return result


def _read_shared_prefix(section: _Section, notes: list[str]) -> SharedPrefixData:
    section.reject_unknown(_SHARED_PREFIX_KEYS)
    if section.has("multimodal"):
        raise section.fail("multimodal", f"is not modelled by servesim, got "
                                         f"{section.get('multimodal')!r}")
    groups_key = section.aliased("num_groups", "num_unique_system_prompts")
    per_group_key = section.aliased("num_prompts_per_group", "num_users_per_system_prompt")
    question = _length_or_legacy(section, "question_len", "question_distribution", 50)
    output = _length_or_legacy(section, "output_len", "output_distribution", 50)
    if output.smallest_tokens < 1:
        raise section.fail("output_len", f"must draw at least 1 token, not as few as "
                                         f"{output.smallest_tokens}")
    if section.flag("enable_multi_turn_chat", False):
        notes.append("enable_multi_turn_chat: prompts do not accumulate the conversation (the "
                     "recorded vLLM runs' prompt lengths never grow), and a session's rounds "
                     "are not serialized")
    if section.has("seed"):
        notes.append(f"{section.name('seed')} ignored: servesim draws prompts from --seed")
    return SharedPrefixData(
        num_groups=section.whole(groups_key, 10, at_least=1),
        num_prompts_per_group=section.whole(per_group_key, 10, at_least=1),
        system_prompt_len=_length(section, "system_prompt_len", 100),
        question_len=question,
        output_len=output,
    )


def _length_or_legacy(section: _Section, key: str, legacy: str, default: int) -> LengthSpec:
    """`question_len` / `output_len`, or the legacy `*_distribution` block beside it."""
    if section.has(legacy):
        if isinstance(section.get(key), dict):
            raise section.fail(legacy, f"and an inline distribution on {key} are both given")
        return _distribution(section.section(legacy))
    return _length(section, key, default)


def _length(section: _Section, key: str, default: int) -> LengthSpec:
    """A number of tokens or a distribution block."""
    if isinstance(section.get(key), dict):
        return _distribution(section.section(key))
    return LengthSpec.fixed(section.whole(key, default))


def _distribution(block: _Section) -> LengthSpec:
    block.reject_unknown(_DISTRIBUTION_KEYS)
    if block.has("std_dev") and block.has("variance"):
        raise block.fail("variance", "and std_dev are both given; give one")
    if block.has("variance"):
        std_dev = math.sqrt(block.number("variance", at_least=0))
    else:
        std_dev = block.number("std_dev", 200.0, at_least=0)
    if block.has("total_count"):
        block.whole("total_count", at_least=1)
    try:
        return LengthSpec(
            kind=block.choice("type", DISTRIBUTION_TYPES, "normal"),
            min_tokens=block.whole("min", 10),
            max_tokens=block.whole("max", 1024),
            mean_tokens=block.number("mean", 512.0),
            std_dev_tokens=std_dev,
            skew=block.number("skew", 0.0),
        )
    except ValueError as error:
        raise TraceFormatError(f"{block.file}: {block.where}: {error}") from None


def _read_io_distributions(kind: str, data: _Section) -> IODistributionData:
    inputs = data.section("input_distribution")
    outputs = data.section("output_distribution")
    input_len, output_len = _distribution(inputs), _distribution(outputs)
    for key, length in (("input_distribution", input_len), ("output_distribution", output_len)):
        if length.smallest_tokens < 1:
            raise data.fail(key, f"must draw at least 1 token, not as few as "
                                 f"{length.smallest_tokens}")
    counts = [block.whole("total_count", at_least=1) for block in (inputs, outputs)
              if block.has("total_count")]
    return IODistributionData(kind, input_len, output_len, min(counts) if counts else None)


def _read_load(load: _Section, notes: list[str]) -> tuple[str, tuple]:
    load.reject_unknown(_LOAD_KEYS)
    if load.has("sweep"):
        raise load.fail("sweep", f"(a search for the server's saturation rate) is not modelled "
                                 f"by servesim, got {load.get('sweep')!r}; list the stages")
    if load.has("lora_traffic_split"):
        raise load.fail("lora_traffic_split", f"is not modelled by servesim, got "
                                              f"{load.get('lora_traffic_split')!r}")
    load_type = load.choice("type", LOAD_TYPES, "constant")
    stages = load.get("stages")
    if not isinstance(stages, list) or not stages:
        raise load.fail("stages", f"must be a non-empty list of stages, got {stages!r}")
    blocks = []
    for index, stage in enumerate(stages):
        if not isinstance(stage, dict):
            raise load.fail(f"stages[{index}]", f"must be a mapping, got {stage!r}")
        blocks.append(_Section(load.file, load.name(f"stages[{index}]"), stage))
    if load_type == "concurrent":
        read: tuple = tuple(_closed_loop_stage(block, notes) for block in blocks)
    else:
        read = tuple(_rate_stage(block) for block in blocks)
    if sum(stage.num_requests for stage in read) > MAX_REQUESTS:
        raise load.fail("stages", f"ask for {sum(s.num_requests for s in read):,} requests, "
                                  f"more than the {MAX_REQUESTS:,} servesim replays")
    interval_s = load.number("interval", 1.0, at_least=0)
    if len(read) > 1 and interval_s:
        notes.append(f"{load.name('interval')} ({interval_s:g} s between stages) not modelled: "
                     "stages run back to back")
    client = [load.name(key) for key in _LOAD_CLIENT_KEYS if load.has(key) and load.get(key) != []]
    if client:
        notes.append(f"{', '.join(client)} ignored: the client's workers, timeouts and circuit "
                     "breakers are not modelled (requests never time out)")
    return load_type, read


def _rate_stage(stage: _Section) -> RateStage:
    stage.reject_unknown(("rate", "duration", "num_requests", "concurrency_level"))
    for key in ("num_requests", "concurrency_level"):
        if stage.has(key):
            raise stage.fail(key, f"belongs to concurrent stages, not rate stages, got "
                                  f"{stage.get(key)!r}")
    return RateStage(stage.number("rate", positive=True), stage.number("duration", positive=True))


def _closed_loop_stage(stage: _Section, notes: list[str]) -> ClosedLoopStage:
    stage.reject_unknown(("num_requests", "concurrency_level", "rate", "duration"))
    if stage.has("rate") or stage.has("duration"):
        # inference-perf fills these in itself at run time (its results/config.yaml has them).
        notes.append(f"{stage.name('rate')}/{stage.name('duration')} ignored: inference-perf "
                     "sets them itself for concurrent stages")
    return ClosedLoopStage(stage.whole("num_requests", at_least=1),
                           stage.whole("concurrency_level", at_least=1))
