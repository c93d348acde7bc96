"""Uploaded traces: capped in size, stored under a content-addressed path, parsed as data only.

The bytes are written to `<tmp>/servesim-uploads/<sha256 prefix>/<sanitized name>` and then read
by the same loaders as `servesim replay --trace` (CSV and JSON lines, parsed as text: no pickle,
no eval), so an upload gets exactly the CLI's validation: a file that is not a trace is one
error, a malformed row is a rejected request whose reason names its line. The path depends only
on the content and name, so it is a stable cache key for the run.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from pathlib import Path

from sim.public import TRACE_PREFIX

UPLOAD_LIMIT_BYTES = 32 * 1024 * 1024
"""Largest accepted upload: about 500k trace rows, replayed in about a minute."""

UPLOAD_TYPES = ("csv", "jsonl", "json", "txt", "yaml", "yml")

INFERENCE_PERF_KEYS = ("data", "load")
"""Top-level keys of an inference-perf config; a trace file has rows instead."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class UploadError(ValueError):
    """An upload refused before parsing (too large, empty)."""


def upload_dir() -> Path:
    return Path(tempfile.gettempdir()) / "servesim-uploads"


def safe_name(name: str) -> str:
    """The file name without directories and with only [A-Za-z0-9._-]."""
    base = _UNSAFE.sub("_", Path(name.replace("\\", "/")).name).strip("._")
    return base or "trace"


def store_upload(name: str, data: bytes, limit_bytes: int = UPLOAD_LIMIT_BYTES) -> Path:
    """Write `data` where the trace loaders can read it; UploadError if refused."""
    if len(data) > limit_bytes:
        raise UploadError(f"{name}: {len(data):,} bytes is over the upload limit of "
                          f"{limit_bytes:,} bytes; replay large traces with `servesim replay`")
    if not data.strip():
        raise UploadError(f"{name}: the file is empty")
    digest = hashlib.sha256(data).hexdigest()[:16]
    path = upload_dir() / digest / safe_name(name)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".part")
        tmp.write_bytes(data)
        tmp.replace(path)
    return path


def trace_spec(path: Path) -> str:
    """The `--trace` value for a stored upload: YAML files and JSON objects with inference-perf's
    `data`/`load` sections are inference-perf configs (`inference-perf:PATH`), anything else a
    trace file whose format the loaders detect."""
    if path.suffix.lower() in (".yaml", ".yml"):
        return f"{TRACE_PREFIX}{path}"
    if path.suffix.lower() == ".json":
        try:
            document = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError):
            return str(path)  # the trace loaders say what is wrong with it
        if isinstance(document, dict) and any(k in document for k in INFERENCE_PERF_KEYS):
            return f"{TRACE_PREFIX}{path}"
    return str(path)


def user_message(error: Exception, path: Path | str | None, name: str | None) -> str:
    """The error text with the stored path (or the `inference-perf:` spec naming it) replaced
    by the name the user uploaded."""
    text = str(error)
    if path is not None and name is not None:
        stored = str(path).removeprefix(TRACE_PREFIX)
        text = text.replace(TRACE_PREFIX + stored, name).replace(stored, name)
    return text
