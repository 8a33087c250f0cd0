"""Errors a user can fix: the command line prints them as one line and exits non-zero."""


class UserError(Exception):
    """A problem with the configuration or the inputs, reported without a traceback."""


class ConfigError(UserError):
    """An unusable configuration: unknown field, wrong type, missing file or column."""
