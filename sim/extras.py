"""What to install for an optional feature, said the way that works from a clone.

servesim is not on a package index: `pip install 'servesim[ui]'` finds nothing. Its extras
install from the checkout (`pip install -e '.[ui]'`), into the virtual environment the Makefile
makes (`.venv`) or the user's own.
"""

from __future__ import annotations

import importlib.util

EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "backend": ("torch", "triton", "gguf", "tokenizers", "safetensors"),
    "ui": ("streamlit", "altair", "pandas"),
    "dist": ("ray",),
    "calibrate": ("pyarrow",),
}
"""The modules each extra of pyproject.toml provides that its features import."""


def install_hint(extra: str) -> str:
    """The command that installs `extra`, from the repository root."""
    return (f"from the servesim checkout run `.venv/bin/pip install -e '.[{extra}]'` "
            f"(or `pip install -e '.[{extra}]'` in your own environment)")


def require_extra(extra: str, feature: str) -> None:
    """ValueError naming the missing modules and the install command, before any import
    fails with a traceback."""
    missing = [name for name in EXTRA_MODULES[extra] if _absent(name)]
    if missing:
        raise ValueError(f"{feature} needs the {extra} extra ({', '.join(missing)} missing): "
                         f"{install_hint(extra)}")


def _absent(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):  # a module set to None in sys.modules, a broken parent
        return True
