"""Engine plug-ins, found only through the ``intramuros.engines`` entry-point group.

A package adds an engine by declaring, in its pyproject::

    [project.entry-points."intramuros.engines"]
    my-engine = "my_package.engine:MyEngine"

where ``MyEngine`` subclasses ``intramuros.engines.base.Engine`` and its
``name`` is the entry point's name. Our own engines are declared the same way
(pyproject.toml), and nothing else lists them: an entry point that is missing
or broken is an engine that does not work, and says so (``ConfigError``
naming the plug-in, its target and the reason). See docs/plugins.md.

An engine class also declares what the catalogue records for its models (its
options, its weights, what it can serve; ``Engine.check_options``) and the
hosts a model of it may reach (``Engine.egress_hosts``), which the server's
egress guard allows, and nothing else.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from intramuros.engines.base import Engine
from intramuros.errors import ConfigError, InvalidRequest

log = logging.getLogger(__name__)

GROUP = "intramuros.engines"


def _entry_points() -> dict[str, list[importlib.metadata.EntryPoint]]:
    """The group's entry points by name (one name may come from several packages)."""
    found: dict[str, list[importlib.metadata.EntryPoint]] = {}
    # Looked up on the module each time, so that a test may replace it.
    for ep in importlib.metadata.entry_points(group=GROUP):
        same = found.setdefault(ep.name, [])
        if all(other.value != ep.value for other in same):  # one package seen twice on the path
            same.append(ep)
    return found


def available_engines() -> dict[str, str]:
    """Plug-in name -> ``module:Class`` of every installed engine entry point (broken or not)."""
    return {name: " | ".join(ep.value for ep in eps)
            for name, eps in sorted(_entry_points().items())}  # fmt: skip


def engine_class(name: str) -> type[Engine]:
    """The engine class registered as ``name``.

    ``ConfigError`` when none is, when two packages claim the name, or when the
    entry point cannot be loaded, is not an ``Engine`` subclass, or names a
    class whose ``name`` differs: each message names the plug-in and why.
    """
    eps = _entry_points().get(name)
    if not eps:
        known = ", ".join(sorted(_entry_points())) or "none"
        raise ConfigError(f"No engine plug-in named '{name}' is installed (entry-point group "
                          f"{GROUP}; installed: {known}).")  # fmt: skip
    if len(eps) > 1:
        raise ConfigError(f"Engine plug-in '{name}' is declared by several packages: "
                          f"{', '.join(ep.value for ep in eps)}.")  # fmt: skip
    ep = eps[0]
    try:
        cls = ep.load()
    except Exception as exc:  # ImportError, AttributeError, or the module's own failure
        raise ConfigError(f"Engine plug-in '{name}' ({ep.value}) cannot be loaded: "
                          f"{type(exc).__name__}: {exc}") from None  # fmt: skip
    if not (isinstance(cls, type) and issubclass(cls, Engine)):
        raise ConfigError(f"Engine plug-in '{name}' ({ep.value}) is not an Engine subclass.")
    if getattr(cls, "name", None) != name:
        raise ConfigError(f"Engine plug-in '{name}' ({ep.value}) names itself "
                          f"'{getattr(cls, 'name', None)}'; the two must agree.")  # fmt: skip
    return cls


def model_hosts(engine: str, options: Mapping[str, Any]) -> frozenset[str]:
    """The hosts a model of ``engine`` with ``options`` may reach (none if the engine is broken).

    A model whose engine cannot be loaded is never loaded either, so it is
    allowed nothing: the guard fails closed.
    """
    try:
        cls = engine_class(engine)
    except ConfigError as exc:
        log.warning("no egress for models of engine %s: %s", engine, exc.message)
        return frozenset()
    try:
        return frozenset(cls.egress_hosts(options))
    except Exception:  # a plug-in's own bug must not stop the server from starting
        log.exception("engine %s: egress_hosts failed; its models reach nothing", engine)
        return frozenset()


def parse_option_pairs(pairs: Sequence[str]) -> dict[str, str]:
    """``["key=value", ...]`` (``--option`` on the command line) as a dict.

    ``InvalidRequest`` (param ``options``) for a pair without ``=`` or an empty
    key, and for a key given twice.
    """
    out: dict[str, str] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        key = key.strip()
        if not eq or not key:
            raise InvalidRequest(f"An option is KEY=VALUE, not '{pair[:40]}'.", param="options")
        if key in out:
            raise InvalidRequest(f"Option '{key[:64]}' is given twice.", param=f"options.{key}")
        out[key] = value
    return out


@dataclass(frozen=True)
class NewModel:
    """What the catalogue records for a new model of an engine (``Catalog.add_model``'s input)."""

    engine: str
    options: dict[str, Any]
    capabilities: tuple[str, ...]
    weights_file: str | None
    aux_files: tuple[str, ...]
    format: str
    # The first URL among the options: the model's origin when it has no weights.
    origin_url: str | None


def new_model(
    engine: str,
    options: Mapping[str, Any],
    capabilities: Sequence[str] | None,
    *,
    has_path: bool,
) -> NewModel:
    """Check a new model against its engine's declarations.

    ``ConfigError`` for an engine that is not installed (or broken);
    ``InvalidRequest`` naming the option, ``path`` or ``capabilities`` for
    anything the engine does not take.
    """
    cls = engine_class(engine)
    checked = cls.check_options(options)
    if cls.weights == "none" and has_path:
        raise InvalidRequest(f"Engine '{engine}' reads no weights file: drop the PATH.",
                             param="path")  # fmt: skip
    if cls.weights != "none" and not has_path:
        raise InvalidRequest(f"Engine '{engine}' needs the model's weights {cls.weights}: "
                             "give its PATH.", param="path")  # fmt: skip
    caps = tuple(capabilities) if capabilities else cls.capabilities
    if not caps:
        raise InvalidRequest(f"Engine '{engine}' declares no capabilities: give --capabilities.",
                             param="capabilities")  # fmt: skip
    beyond = [c for c in caps if c not in cls.capabilities]
    if beyond:
        raise InvalidRequest(
            f"Engine '{engine}' serves {', '.join(cls.capabilities) or 'nothing'}, "
            f"not {', '.join(beyond)}.",
            param="capabilities",
        )
    urls = cls.egress_urls(checked)
    return NewModel(
        engine=engine,
        options=checked,
        capabilities=caps,
        weights_file=cls.weights_file if cls.weights == "directory" else None,
        aux_files=cls.aux_files if cls.weights == "directory" else (),
        format=cls.weights_format,
        origin_url=urls[0] if urls else None,
    )


@dataclass(frozen=True)
class OptionInfo:
    """One option of an engine, for ``intramuros models engines``."""

    key: str
    type: str
    required: bool
    default: str | None
    description: str


@dataclass(frozen=True)
class EngineInfo:
    """An installed engine plug-in: what it takes, or why it cannot be loaded."""

    name: str
    target: str
    error: str | None = None
    weights: str = ""
    format: str = ""
    capabilities: tuple[str, ...] = ()
    options: tuple[OptionInfo, ...] = ()


def describe_engines() -> list[EngineInfo]:
    """Every engine entry point, loaded: its declarations, or the error that stops it."""
    out: list[EngineInfo] = []
    for name, target in available_engines().items():
        try:
            cls = engine_class(name)
        except ConfigError as exc:
            out.append(EngineInfo(name, target, error=exc.message))
            continue
        out.append(EngineInfo(name, target, weights=cls.weights, format=cls.weights_format,
                              capabilities=cls.capabilities, options=_options(cls)))  # fmt: skip
    return out


def _options(cls: type[Engine]) -> tuple[OptionInfo, ...]:
    model = cls.options_model
    if model is None:
        return ()
    infos = []
    for key, field in model.model_fields.items():
        required = field.is_required()
        default = None if required or field.default is None else str(field.default)
        infos.append(OptionInfo(key, _type_name(field.annotation), required, default,
                                field.description or ""))  # fmt: skip
    return tuple(infos)


def _type_name(annotation: Any) -> str:
    """A short name for an option's type: ``HttpUrl``, ``int``, ``str``, ``'a' | 'b'``..."""
    import types
    import typing

    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        parts = [a for a in typing.get_args(annotation) if a is not type(None)]
        return " | ".join(_type_name(a) for a in parts)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    return str(getattr(annotation, "__name__", annotation))
