"""The quantizer registry: string aliases, :func:`get`, :func:`serialize`.

Every quantizer class is registered with Keras under the package ``"tfquant"`` (so saved
models load) and here under its class name and a snake_case alias (so ``get("ste_sign")``
builds one). ``tfquant.quantizers`` registers the built-in ones; a user's quantizer, or one
defined in another tfquant module (BinaryRelax's), registers with :func:`register_alias`.

May import: ``tfquant.quantizers.base``, ``tfquant._keras`` and ``tfquant.errors`` only.
"""

from __future__ import annotations

from typing import Any, overload

from tfquant._keras import keras
from tfquant.errors import ConfigError
from tfquant.quantizers.base import Quantizer

__all__ = ["ALIASES", "get", "register_alias", "registered", "serialize", "snake_case"]

_CLASSES: dict[str, type[Quantizer]] = {}
ALIASES: dict[str, type[Quantizer]] = {}


def snake_case(name: str) -> str:
    """``"SteSign"`` -> ``"ste_sign"``."""
    out = [name[0].lower()]
    for ch in name[1:]:
        out.append("_" + ch.lower() if ch.isupper() else ch)
    return "".join(out)


def register_alias(alias: str, cls: type[Quantizer]) -> None:
    """Make ``get(alias)`` and ``get(cls.__name__)`` build ``cls()``.

    Raises:
        ConfigError: when ``cls`` is not a subclass of :class:`Quantizer`.
    """
    if not (isinstance(cls, type) and issubclass(cls, Quantizer)):
        raise ConfigError(f"Expected a subclass of tfquant.quantizers.Quantizer. Received: {cls!r}")
    ALIASES[alias] = cls
    _CLASSES[cls.__name__] = cls


def registered() -> dict[str, type[Quantizer]]:
    """Class name -> class, of every registered quantizer (a copy)."""
    return dict(_CLASSES)


@overload
def serialize(quantizer: Quantizer) -> dict: ...
@overload
def serialize(quantizer: None) -> None: ...
@overload
def serialize(quantizer: Quantizer | None) -> dict | None: ...


def serialize(quantizer: Quantizer | None) -> dict | None:
    """Keras-serialize a quantizer (``None`` stays ``None``)."""
    return None if quantizer is None else keras.utils.serialize_keras_object(quantizer)


def get(identifier: Any) -> Quantizer | None:
    """Return a quantizer from ``None``, an alias, a class name, a config dict or an instance.

    Raises:
        ConfigError: for an unknown name or an object that is not a quantizer.
    """
    if identifier is None or isinstance(identifier, Quantizer):
        return identifier
    if isinstance(identifier, str):
        cls = ALIASES.get(identifier) or _CLASSES.get(identifier)
        if cls is None:
            raise ConfigError(
                f"Unknown quantizer {identifier!r}. Expected one of {sorted(ALIASES)}, a "
                "tfquant.quantizers.Quantizer instance, a config dict or None."
            )
        return cls()
    if isinstance(identifier, dict):
        name = str(identifier.get("class_name"))
        # "SteSign", or the registered form "tfquant>SteSign" (legacy SavedModel metadata).
        cls = _CLASSES.get(name) or keras.utils.get_registered_object(
            identifier.get("registered_name") or (name if ">" in name else f"tfquant>{name}")
        )
        if not (isinstance(cls, type) and issubclass(cls, Quantizer)):
            raise ConfigError(
                f"Expected a quantizer config with class_name in {sorted(_CLASSES)}. "
                f"Received: {identifier!r}"
            )
        return cls(**identifier.get("config", {}))
    raise ConfigError(
        "Expected a quantizer: None, a string alias, a config dict or a "
        f"tfquant.quantizers.Quantizer. Received: {identifier!r} of type {type(identifier).__name__}"
    )
