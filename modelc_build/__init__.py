"""modelc: a model-compilation build system (recipe -> plan -> steps -> signed artifacts)."""
from __future__ import annotations

__version__ = "0.1.0"
