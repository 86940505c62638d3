"""Typed, closed configuration: hardware profiles, model profiles and experiments.

YAML enters through :func:`sim.config.base.load_yaml` and leaves as frozen pydantic models that reject
unknown keys. Any problem is raised as one :class:`sim.errors.ConfigError` naming file, key and value.
"""
