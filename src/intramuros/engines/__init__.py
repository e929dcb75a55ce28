"""Inference engines behind one small interface (see ``base.Engine``), as plug-ins."""

from intramuros.engines.base import Engine
from intramuros.engines.registry import available_engines, engine_class

__all__ = ["Engine", "available_engines", "engine_class"]
