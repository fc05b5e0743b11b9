"""The one exception of data preparation."""


class DataError(ValueError):
    """A problem with the input or the options, reported to the user as one clear line."""
