"""Exceptions raised for bad user input: each message says what is wrong and how to fix it."""


class UnlearnLMError(Exception):
    """Base class for errors caused by user input or environment, not by a bug."""


class ConfigError(UnlearnLMError, ValueError):
    """A configuration value is invalid."""


class DataError(UnlearnLMError, ValueError):
    """A data file or dataset cannot be read as dialogues."""


class AssetError(UnlearnLMError, FileNotFoundError):
    """An embedded asset package is missing."""
