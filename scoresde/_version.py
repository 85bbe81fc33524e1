"""The package version, in a module of its own: the command line and the result files read it without importing
the package's modules (``scoresde.__version__`` is this)."""

__version__ = "0.1.0"
