"""Deprecation paths kept for one release: former keywords that an options object replaced, and
a module name that moved.

Both warn with :class:`DeprecationWarning` naming the new spelling, at the caller's line.
"""

from __future__ import annotations

import importlib
import sys
import types
import warnings
from dataclasses import fields, replace
from typing import Any, Mapping, TypeVar

__all__ = ["legacy_options", "alias_module"]

Opts = TypeVar("Opts")


def legacy_options(function: str, options: Opts | None, legacy: Mapping[str, Any], cls: type[Opts],
                   stacklevel: int = 3, parameter: str = "options") -> Opts:
    """The options a call with the former keywords describes: ``options`` (default ``cls()``) with
    the fields named in ``legacy`` replaced, and a ``DeprecationWarning`` naming the new spelling.

    Args:
        function: the deprecated call's name, for the messages.
        options: the options given with them, if any.
        legacy: the former keywords (each a field of the dataclass ``cls``), as given.
        cls: the options' frozen dataclass.
        stacklevel: the caller's frame to blame (3: the caller of the function that calls this).
        parameter: the function's parameter that takes a ``cls``, for the message.

    Raises:
        TypeError: a keyword that is no field of ``cls`` (as Python names an unexpected keyword).
    """
    o = cls() if options is None else options
    if not legacy:
        return o
    unknown = sorted(set(legacy) - {f.name for f in fields(cls)})  # type: ignore[arg-type]
    if unknown:
        raise TypeError(f"{function}() got an unexpected keyword argument {unknown[0]!r}")
    warnings.warn(f"{function}({', '.join(f'{k}=' for k in legacy)}) is deprecated: pass "
                  f"{parameter}={cls.__name__}({', '.join(f'{k}=...' for k in legacy)})", DeprecationWarning,
                  stacklevel=stacklevel)
    return replace(o, **legacy)  # type: ignore[type-var]


def alias_module(old: str, new: str, submodules: Mapping[str, str] | None = None) -> None:
    """Make ``from <old> import name`` (and ``from <old>.<sub> import name``) give ``<new>``'s
    names, with a ``DeprecationWarning`` at the first use of each name, without importing ``new``
    before then.

    The aliases are placed in ``sys.modules`` up front, so that importing ``old`` finds them and
    never binds them as an attribute of their parent package: there ``old``'s last part may be
    another object (``stereodrr.register`` is the function ``register``).

    Args:
        old, new: dotted module names.
        submodules: ``{old submodule: the module that now holds its names}``.
    """
    for name, target in {old: new, **{f"{old}.{s}": t for s, t in (submodules or {}).items()}}.items():
        alias = types.ModuleType(name, f"Deprecated alias of :mod:`{target}` (removed in the next release).")

        def __getattr__(attr: str, name: str = name, target: str = target) -> Any:
            if attr.startswith("__") and attr != "__all__":
                raise AttributeError(attr)  # import machinery and tools probing for __path__, __file__, ...
            warnings.warn(f"{name} is deprecated: import {attr} from {target}", DeprecationWarning, stacklevel=2)
            return getattr(importlib.import_module(target), attr)

        vars(alias)["__getattr__"] = __getattr__  # PEP 562: looked up in the module's namespace
        sys.modules.setdefault(name, alias)
