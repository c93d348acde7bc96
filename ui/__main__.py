"""`python -m ui --port N --host H`: become `streamlit run ui/app.py` with the dashboard's
server settings. `servesim ui` starts this as its own process, so the simulator never imports
the dashboard (the layering of pyproject.toml's `[tool.importlinter]`); exec, not a child,
so signals reach Streamlit and no process is left behind.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn, Sequence

from ui.upload import UPLOAD_LIMIT_BYTES


def streamlit_command(port: int, host: str) -> list[str]:
    """The command line that serves `ui/app.py` on `host:port` (uploads capped at
    `UPLOAD_LIMIT_BYTES`, rounded up to Streamlit's whole MiB)."""
    app = Path(__file__).resolve().parent / "app.py"
    return [sys.executable, "-m", "streamlit", "run", str(app),
            "--server.port", str(port), "--server.address", host,
            "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--server.maxUploadSize", str(-(-UPLOAD_LIMIT_BYTES // (1024 * 1024)))]


def main(argv: Sequence[str] | None = None) -> NoReturn:
    parser = argparse.ArgumentParser(prog="python -m ui", description=__doc__, allow_abbrev=False)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", required=True)
    args = parser.parse_args(argv)
    os.execv(sys.executable, streamlit_command(args.port, args.host))


if __name__ == "__main__":
    main()
