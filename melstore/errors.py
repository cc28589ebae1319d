"""The exception types melstore raises for bad input and bad configuration, and its warning."""


class MelstoreError(Exception):
    """Base class for every error melstore raises on purpose.

    Its message is one line meant for a human: it names the file or the
    configuration key at fault and what would be accepted instead.
    """


class ConfigError(MelstoreError):
    """The configuration or the dataset layout is not usable."""


class AudioError(MelstoreError):
    """One audio file cannot be turned into features; the message is the reason."""


class VersionWarning(UserWarning):
    """Features are computed with other library versions than a store was built with.

    They may then differ slightly from the store's; the message names the
    versions on one line.
    """
