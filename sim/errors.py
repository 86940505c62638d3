"""User-facing errors. The CLI prints ``str(err)`` as one line and exits 2; nothing else is caught.

Every error names where the bad value came from (file, key) and the value itself, so that a user can
fix the input without reading a traceback.
"""

from __future__ import annotations


class SimError(Exception):
    """Base class of every error caused by user input (config, profile, trace, model file, flag)."""


class ConfigError(SimError):
    """A bad value in a YAML file or on the command line: ``FILE: KEY: REASON (got VALUE)``."""

    def __init__(self, source: str, key: str, reason: str, value: object = ...):
        self.source, self.key, self.reason, self.value = str(source), key, reason, value
        got = "" if value is ... else f" (got {value!r})"
        where = f"{self.source}: {key}: " if key else f"{self.source}: "
        super().__init__(f"{where}{reason}{got}")

    def __reduce__(self):  # pickles across worker processes (Exception's default would pass only the message)
        return type(self), (self.source, self.key, self.reason, self.value)


class UnitError(SimError):
    """A quantity string that does not parse as the expected kind of unit."""


class TraceError(SimError):
    """A trace file that is missing, corrupt or does not match the model it is used with."""


class ModelFileError(SimError):
    """A model file (GGUF) that is missing, corrupt or of an unsupported architecture."""


class CapacityError(SimError):
    """A memory device asked to hold more than its capacity (e.g. the DRAM budget)."""


def located(err: SimError, file: str | None, case: str) -> SimError:
    """``err`` said of a case of an experiment file (``exp.yaml (case all-cpu)``), same class. A ConfigError raised
    with the placeholder source ``experiment`` (by code that does not know the file) takes the case as its source;
    any other error that does not already name the file gets the case in front."""
    where = f"{file} (case {case})" if file else f"case {case}"
    if isinstance(err, ConfigError):
        return ConfigError(where, err.key, err.reason, err.value) if err.source == "experiment" else err
    if file and str(err).startswith(file):
        return err
    return type(err)(f"{where}: {err}")
