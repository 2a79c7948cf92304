"""Shared fixtures: where the team's real models live, and helpers to reach them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_MODELS = REPO.parent / "shared" / "models"
EXAMPLES = REPO / "examples"


def shared_models_index() -> dict:
    index = SHARED_MODELS / "models.json"
    return json.loads(index.read_text()) if index.exists() else {}


needs_shared = pytest.mark.skipif(
    not (SHARED_MODELS / "models.json").exists(),
    reason="../shared/models is not beside this checkout (CI provides it)",
)


@pytest.fixture(scope="session")
def shared_models() -> Path:
    if not (SHARED_MODELS / "models.json").exists():
        pytest.skip("../shared/models is not beside this checkout (CI provides it)")
    return SHARED_MODELS
