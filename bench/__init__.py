"""vq-prior-bench: the application (datasets, metrics, pipeline, CLI, tables)."""

__version__ = "0.1.0"
