"""The one error type for bad configuration."""


class ConfigError(ValueError):
    """A bad key, choice or value; the message is one line naming it and the valid options."""
