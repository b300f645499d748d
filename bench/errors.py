"""User-facing errors. The CLI prints these as one line and exits non-zero, no traceback."""


class BenchError(Exception):
    """A problem the user can fix: bad input, missing file, mismatched artefacts."""


class DataError(BenchError):
    """A dataset spec, layout or file is unusable."""


class ArtefactError(BenchError):
    """A checkpoint, export or record on disk is missing, corrupt or from another backbone."""
