"""Repository-level pytest configuration.

Its presence makes pytest put this checkout first on sys.path, so a worktree's tests import
that worktree's packages even when another checkout is installed in editable mode.
"""

import os

# The Triton kernels run interpreted (on CPU tensors) where no CUDA device exists. Triton reads
# this when a kernel module is imported, so it is set here, before any test imports one; the
# device check reads /dev rather than importing torch, so plain simulator tests stay light.
if not os.path.exists("/dev/nvidiactl"):
    os.environ.setdefault("TRITON_INTERPRET", "1")
