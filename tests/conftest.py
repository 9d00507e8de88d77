"""Shared fixtures: captured graphs are cached per session (capture is the slow part)."""

from __future__ import annotations

import os
import tempfile

import pytest

# tests never read or write the user's graph cache
os.environ["AOT_PLANNER_CACHE"] = tempfile.mkdtemp(prefix="aot-planner-test-cache-")

import planner

UPDATE_GOLDEN = os.environ.get("UPDATE_GOLDEN") == "1"  # UPDATE_GOLDEN=1 pytest rewrites golden files


@pytest.fixture(scope="session")
def graph_of():
    def get(name: str, **kwargs):
        return planner.capture(name, **kwargs)

    return get
