"""SciPy modules loaded on first use.

The engine's module-level ``from scipy import stats`` would load most of SciPy (about 45 MB
and 0.8 s) into every process that imports the spc app -- ingest workers, web processes,
management commands -- although only capability studies, ARL computations and the chart
constants need it. ``lazy("scipy.stats")`` stands in for the module and imports it when an
attribute is first used.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class lazy:
    """A module imported on first attribute access."""

    __slots__ = ("_module", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)
