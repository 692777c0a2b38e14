"""The registry of training methods: :func:`register`, :func:`get`, :func:`names`.

``tfquant train --method`` takes any registered name; its choices and help, and the
methods' option flags, are read from here. The built-in methods register themselves when
:mod:`tfquant.methods` is imported; user code registers its own the same way.

May import: :mod:`tfquant.errors` and :mod:`tfquant.methods.base`.
"""

from __future__ import annotations

from tfquant.errors import ConfigError
from tfquant.methods.base import Method, Option

__all__ = ["register", "unregister", "get", "names", "options"]

_METHODS: dict[str, Method] = {}


def register(method: Method, *, replace: bool = False) -> Method:
    """Register ``method`` under ``method.name``; returns it.

    Raises:
        ConfigError: not a :class:`~tfquant.methods.base.Method`, or the name is taken
            (pass ``replace=True`` to replace it), or an option it declares clashes with a
            registered method's option of the same name but another type.
    """
    if not isinstance(method, Method):
        raise ConfigError(
            f"Expected a tfquant.methods.Method. Received: {type(method).__name__}"
        )
    if method.name in _METHODS and not replace:
        raise ConfigError(
            f"Expected a new method name. Received: {method.name!r}, already registered "
            "(pass replace=True to replace it)"
        )
    for option in method.options:
        for other in options().get(option.name, []):
            if other.type is not option.type and other is not option:
                raise ConfigError(
                    f"Expected option {option.name!r} of method {method.name!r} of type "
                    f"{other.type.__name__}, as other methods declare it. Received: "
                    f"{option.type.__name__}"
                )
    _METHODS[method.name] = method
    return method


def unregister(name: str) -> None:
    """Remove a registered method (e.g. a test's)."""
    _METHODS.pop(name, None)


def get(name: str | Method) -> Method:
    """The registered method ``name`` (a :class:`~tfquant.methods.base.Method` is returned
    as it is).

    Raises:
        ConfigError: an unknown name.
    """
    if isinstance(name, Method):
        return name
    try:
        return _METHODS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"Unknown method {name!r}. Expected one of {names()}.") from None


def names() -> list[str]:
    """The registered methods' names, in registration order."""
    return list(_METHODS)


def options() -> dict[str, list[Option]]:
    """Option name -> the options of that name the registered methods declare."""
    found: dict[str, list[Option]] = {}
    for method in _METHODS.values():
        for option in method.options:
            found.setdefault(option.name, []).append(option)
    return found


def declaring(option: str) -> list[str]:
    """The registered methods that declare ``option``."""
    return [m.name for m in _METHODS.values() if any(o.name == option for o in m.options)]
