"""Errors a user can cause. The CLI prints them as one line and exits with code 2."""


class BenchError(Exception):
    """Bad input: an unknown name, an invalid value, a missing file or split.

    The message is one line that names the bad value and what would be valid.
    """


class TrainingError(Exception):
    """A run that started but could not finish (for example a non-finite loss)."""


class Stopped(Exception):
    """A run ended early on purpose (a sweep pruning an unpromising trial): not a failure."""
