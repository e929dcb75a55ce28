"""Engine plug-ins, found through the ``intramuros.engines`` entry-point group.

A third-party package adds an engine by declaring, in its pyproject::

    [project.entry-points."intramuros.engines"]
    my-engine = "my_package.engine:MyEngine"

where ``MyEngine`` subclasses ``intramuros.engines.base.Engine``. Our own
engines are declared the same way; ``DEFAULT_PLUGINS`` only lets them work
from a source tree that was never pip-installed (no entry points then).
"""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import entry_points

from intramuros.engines.base import Engine
from intramuros.errors import ConfigError

log = logging.getLogger(__name__)

GROUP = "intramuros.engines"

DEFAULT_PLUGINS: dict[str, str] = {
    "llamacpp": "intramuros.engines.llamacpp:LlamaCppEngine",
    "minilm": "intramuros.engines.minilm:MiniLMEngine",
    "openai-upstream": "intramuros.engines.upstream:OpenAIUpstreamEngine",
    "whisper": "intramuros.engines.whisper:WhisperEngine",
}


def available_engines() -> dict[str, str]:
    """Plug-in name -> ``module:Class`` for every engine we can find."""
    found = dict(DEFAULT_PLUGINS)
    for ep in entry_points(group=GROUP):
        found[ep.name] = ep.value
    return found


def engine_class(name: str) -> type[Engine]:
    """The engine class registered as ``name``; ``ConfigError`` if none is."""
    target = available_engines().get(name)
    if target is None:
        raise ConfigError(
            f"No engine plug-in named '{name}' (known: {', '.join(sorted(available_engines()))})."
        )
    module_name, _, attr = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"Engine plug-in '{name}' ({target}) cannot be imported: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, Engine)):
        raise ConfigError(f"Engine plug-in '{name}' ({target}) is not an Engine subclass.")
    return cls
