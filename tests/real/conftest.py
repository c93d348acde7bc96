"""Backend tests need torch (the `backend` extra); without it they skip with the reason."""

import pytest

pytest.importorskip("torch", reason="the real backend needs torch: pip install -e '.[backend]'")
