"""Where the real data lives: ../shared/data beside the repository (in CI, and on this machine)."""

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"{SHARED} is not here (it ships beside the repository in CI)"
)
