"""Errors that mean "a setting is wrong", reported by the command line as one line."""

from __future__ import annotations


class ConfigError(ValueError):
  """A Gin binding, a flag or a name (of a task, a file, a mesh axis) is wrong or missing."""
