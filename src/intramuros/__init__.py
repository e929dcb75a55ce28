"""intramuros: sovereign AI, within your walls."""

__version__ = "0.1.0"
