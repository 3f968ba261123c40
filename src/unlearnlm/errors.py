"""Exceptions raised for bad user input: each message says what is wrong and how to fix it."""


class UnlearnLMError(Exception):
    """Base class for errors caused by user input or environment, not by a bug."""


class ConfigError(UnlearnLMError, ValueError):
    """A configuration value is invalid."""


class DataError(UnlearnLMError, ValueError):
    """A data file or dataset cannot be read as dialogues."""


class AssetError(UnlearnLMError, FileNotFoundError):
    """An embedded asset package is missing."""


class TrainingDiverged(UnlearnLMError, FloatingPointError):
    """A loss or gradient norm became NaN or infinite; the run stops before anything from that step is kept.

    ``history`` holds every step's loss terms up to and including the one that diverged, for the run folder.
    """

    def __init__(self, message: str, history: list[dict[str, float]] | None = None) -> None:
        super().__init__(message)
        self.history = list(history or [])
