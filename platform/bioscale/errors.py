"""Errors a user can act on: each names the thing that is wrong and what to do about it."""


class BioscaleError(Exception):
    """Base class of every error bioscale raises on purpose (the CLI prints these without a trace)."""


class ConfigError(BioscaleError, ValueError):
    """A study YAML or config mapping is malformed: unknown key, wrong type, unknown name."""


class ManifestError(BioscaleError, ValueError):
    """A manifest is missing, unreadable or does not follow the manifest contract."""


class TrackingError(BioscaleError, RuntimeError):
    """The MLflow tracking store cannot be reached or holds something unexpected."""


class TrainingError(BioscaleError, RuntimeError):
    """A trial's training cannot go on (e.g. a non-finite loss); names the epoch and step."""
