"""Repository-level pytest configuration.

Its presence makes pytest put this checkout first on sys.path, so a worktree's tests import
that worktree's packages even when another checkout is installed in editable mode.
"""
