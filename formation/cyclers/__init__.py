"""Cycler export readers: formation-cabinet tray CSV, Neware BTS, Arbin MITS and Maccor
files into one canonical form (:mod:`.records`), or a :class:`CyclerFileError` that names
the field and row to fix. Pure parsing: no Django, no database; the formation ingest
handlers call :func:`cycler_file_read` and store what it returns. See
``docs/cycler-files.md``.
"""

from .errors import CyclerFileError
from .readers import PROFILES, CyclerProfile, cycler_file_read, profile_get
from .records import (
    CellRun,
    CyclerFile,
    SignConvention,
    StepCurve,
    StepRecord,
    StepType,
)

__all__ = [
    "PROFILES",
    "CellRun",
    "CyclerFile",
    "CyclerFileError",
    "CyclerProfile",
    "SignConvention",
    "StepCurve",
    "StepRecord",
    "StepType",
    "cycler_file_read",
    "profile_get",
]
