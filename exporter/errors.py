"""Errors the exporter reports to people: the message says what is wrong and what to do."""


class ExportError(ValueError):
    """Bad input or a failed check; the CLI prints the message and exits non-zero."""
