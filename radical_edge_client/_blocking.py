"""Blocking forms of the async clients, derived from them: each client is written once, async.

How a blocking class is made
----------------------------

A blocking class is a subclass of :class:`Blocking` that names the async class
it wraps (``class SysInfoClient(PluginClient, wraps=AsyncSysInfoClient)``);
:func:`blocking_class` makes one for any other async client class (a
third-party plugin client) the first time it is needed and caches it, so
there is one blocking class per async class.  An instance is a view of one
async object, and every public member of the async class becomes a member of
the blocking class when the class is made:

* a coroutine method runs on the client's event loop (its own thread, a
  :class:`~anyio.from_thread.BlockingPortal`) and the caller waits for it;
* any other method runs in the caller's thread, and what it returns is made
  blocking: an async context manager becomes a context manager, an async
  iterator an iterator (``aiter_x`` is named ``iter_x``; each step is a call
  of its own on the loop, so an async generator must not hold a cancel scope
  across a ``yield``), an awaitable is awaited on the loop;
* a property reads (and writes) through to the async object;
* what a call returns is made blocking too: an async client object becomes its
  blocking form (the owning ``BridgeClient`` for its own async client), an
  async context manager, iterator or awaitable as above.  Arguments that are
  blocking clients are passed on as their async objects;
* instance attributes (``sid``, ``name``, ...) are read through
  ``__getattr__``, and set through ``__setattr__``.

Derived methods keep the async method's ``__doc__``, ``__wrapped__`` and
parameters; their return annotation is the blocking one (``Awaitable[X]`` and
``async def f() -> X`` become ``X``, ``AsyncEdgeClient`` becomes
``EdgeClient``, ``AbstractAsyncContextManager[X]`` ``AbstractContextManager[X]``),
so :func:`inspect.signature` and :func:`help` show what the blocking call does
(an annotation that does not resolve at run time, e.g. a name imported for type
checkers only, is left as written).

How type checkers see it
------------------------

A type checker cannot map "every coroutine method of ``T``" to "the same
method, blocking" (Python's type system has no mapped types), so a generic
``Blocking[T]`` could only type every member as ``Any``.  Instead a blocking
class may *name* members of its async class with :func:`blocking`,
:func:`direct` and :func:`attribute`::

    class SysInfoClient(PluginClient, wraps=AsyncSysInfoClient):
        get_metrics = blocking(AsyncSysInfoClient.get_metrics)

Only the name is written: the parameters and the return type come from the
async method, through ``ParamSpec``, checked by the type checker (a renamed
or removed async method is a type error there).  At run time these are the
very members the class would have derived by itself (:func:`blocking` only
adds the static type), so a member left out still works, typed ``Any`` or not
at all; the built-in blocking classes name every member, and a test keeps it
so.  ``returns=`` names the blocking class of what is returned (checked when
the class is made).  Instance attributes are plain annotations.
"""

from __future__ import annotations

import collections.abc
import contextlib
import functools
import inspect
import operator
import threading
import types
import typing
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import TYPE_CHECKING, Any, ClassVar, Concatenate, ParamSpec, Protocol, TypeVar, cast, overload

from anyio.from_thread import BlockingPortal

from ._events import is_async_callable

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)
W = TypeVar("W")

__all__ = ["Blocking", "Portal", "attribute", "blocking", "blocking_class", "direct"]

#: async class -> its blocking class (the cache behind :func:`blocking_class`)
_CLASSES: dict[type, type[Blocking]] = {}
_MAKING = threading.RLock()  # two clients' threads may ask for a new class at once
_END = object()


class Portal:
    """The event loop a blocking client's calls run on (in its own thread), and the client that owns it."""

    def __init__(self, portal: BlockingPortal, owner: Blocking) -> None:
        self.portal = portal
        self.owner = owner

    def run(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` on the event loop (awaited), the caller waiting; the result made blocking."""
        args = tuple(_unwrap(a) for a in args)
        kwargs = {k: _unwrap(v) for k, v in kwargs.items()}
        return self.wrap(self.portal.call(functools.partial(fn, *args, **kwargs)))

    def wrap(self, value: Any) -> Any:
        """``value`` for blocking code: async clients, context managers, iterators and awaitables made blocking."""
        if isinstance(value, Blocking):
            return value
        if value is self.owner.__dict__.get("_async"):
            return self.owner
        cls = _derived_class(type(value))
        if cls is not None:
            return cls(value, self) if cls._is_view else value  # another bridge client: it has its own loop
        if isinstance(value, AbstractAsyncContextManager):
            return self._context(value)
        if isinstance(value, collections.abc.AsyncIterable):
            return self._iterate(aiter(value))
        if inspect.isawaitable(value):
            return self.run(_await, value)
        return value

    @contextlib.contextmanager
    def _context(self, manager: AbstractAsyncContextManager[Any]) -> Iterator[Any]:
        with self.portal.wrap_async_context_manager(manager) as value:
            yield self.wrap(value)

    def _iterate(self, iterator: AsyncIterator[Any]) -> Iterator[Any]:
        done = False
        try:
            while (item := self.portal.call(_anext, iterator)) is not _END:
                yield self.wrap(item)
            done = True
        finally:
            aclose = getattr(iterator, "aclose", None)
            if not done and aclose is not None:
                with contextlib.suppress(RuntimeError):  # the client (its loop) is closed already
                    self.portal.call(aclose)


async def _await(awaitable: Awaitable[R]) -> R:
    return await awaitable


async def _anext(iterator: AsyncIterator[Any]) -> Any:
    try:
        return await anext(iterator)
    except StopAsyncIteration:
        return _END


def _unwrap(value: Any) -> Any:
    return value._async if isinstance(value, Blocking) else value


class Blocking:
    """Base of the blocking clients: a view of one async client object, its calls run on the client's loop.

    Subclasses name the async class they wrap (``class X(Blocking, wraps=AsyncX)``);
    every public member of it the subclass does not define is derived then.
    A subclass that names none is a plain subclass of its (blocking) base.
    """

    #: the async class this one wraps
    _wraps: ClassVar[type]
    #: async members not derived (the owner of the loop manages its own lifetime)
    _exclude: ClassVar[frozenset[str]] = frozenset()
    #: whether :meth:`Portal.wrap` makes instances as views of async objects (not the bridge client: it owns a loop)
    _is_view: ClassVar[bool] = True
    #: the members this class derived without their being named in its body (what type checkers do not see)
    _derived: ClassVar[tuple[str, ...]] = ()

    _async: Any
    _portal: Portal

    def __init__(self, wrapped: Any, portal: Portal) -> None:
        self._async = wrapped
        self._portal = portal

    def __init_subclass__(cls, *, wraps: type | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if wraps is None:
            if not hasattr(cls, "_wraps"):
                raise TypeError(f"{cls.__qualname__}: name the async class it wraps: class {cls.__name__}(wraps=X)")
            return  # a subclass of a blocking class (e.g. with helpers of one's own): it wraps what its base wraps
        if wraps in _CLASSES:
            raise TypeError(f"{wraps.__qualname__} already has a blocking class: {_CLASSES[wraps].__qualname__}")
        cls._wraps = wraps
        if cls.__doc__ is None:
            cls.__doc__ = wraps.__doc__
        _CLASSES[wraps] = cls  # before the members: their annotations may name this class
        _complete(cls, wraps)

    if not TYPE_CHECKING:  # to a type checker, a blocking class has only the members it names

        def __getattr__(self, name: str) -> Any:
            if name.startswith("__") or name in ("_async", "_portal"):
                raise AttributeError(name)
            value = getattr(self._async, name)
            if callable(value) and not isinstance(value, type) and is_async_callable(value):
                return functools.wraps(value)(functools.partial(self._portal.run, value))
            return self._portal.wrap(value)

        def __setattr__(self, name: str, value: Any) -> None:
            if name.startswith("_") or isinstance(inspect.getattr_static(type(self), name, None), property):
                object.__setattr__(self, name, value)
            else:
                setattr(self._async, name, _unwrap(value))

    def __dir__(self) -> list[str]:  # the async object's instance attributes too (completion in notebooks)
        wrapped = vars(self).get("_async")
        names = {n for n in vars(wrapped) if not n.startswith("_")} if hasattr(wrapped, "__dict__") else set()
        return sorted(names.union(super().__dir__()))

    def __repr__(self) -> str:
        wrapped = self.__dict__.get("_async")
        if wrapped is None:
            return f"<{type(self).__name__} (not connected)>"
        text, name = repr(wrapped), type(wrapped).__name__
        return type(self).__name__ + text[len(name) :] if text.startswith(name) else text


# ---------------------------------------------------------------- deriving the members


def _complete(cls: type[Blocking], wraps: type) -> None:
    """Give ``cls`` every public member of ``wraps`` it neither defines nor inherits from a blocking base."""
    bases = [b._wraps for b in cls.__bases__ if issubclass(b, Blocking) and b is not Blocking]
    derived = []
    for name, member in vars(cls).items():  # named in the class body: the member's names are the class's
        if getattr(member, "_blocking_member", False):
            _rename(member, cls, name)
    for name in dir(wraps):
        if name.startswith("_") or name in cls._exclude:
            continue
        raw = inspect.getattr_static(wraps, name)
        target = _blocking_name(name, raw)
        if target in vars(cls) or any(inspect.getattr_static(b, name, None) is raw for b in bases):
            continue
        member = _derive(raw, name)
        if member is not None:
            if getattr(member, "_blocking_member", False):
                _rename(member, cls, target)
            setattr(cls, target, member)
            derived.append(target)
    cls._derived = tuple(derived)


def _rename(method: Any, cls: type, name: str) -> None:
    method.__name__ = name
    method.__qualname__ = f"{cls.__qualname__}.{name}"
    method.__module__ = cls.__module__


def _blocking_name(name: str, raw: Any) -> str:
    """``aiter_bytes`` -> ``iter_bytes`` for an async generator (httpx's pair of names); else the same name."""
    if name.startswith("aiter_") and inspect.isasyncgenfunction(raw):
        return name[1:]
    return name


def _derive(raw: Any, name: str) -> Any:
    if isinstance(raw, property):
        return _property(raw)
    if inspect.isfunction(raw):
        return _method(raw)
    if callable(raw) or hasattr(raw, "__get__"):  # static and class methods, other descriptors: through __getattr__
        return None
    return _ClassData(name)


def _method(fn: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(fn):

        def method(self: Blocking, /, *args: Any, **kwargs: Any) -> Any:
            return self._portal.run(fn, self._async, *args, **kwargs)

    else:  # called here, in the caller's thread; what it returns is made blocking

        def method(self: Blocking, /, *args: Any, **kwargs: Any) -> Any:
            args = tuple(_unwrap(a) for a in args)
            kwargs = {k: _unwrap(v) for k, v in kwargs.items()}
            return self._portal.wrap(fn(self._async, *args, **kwargs))

    functools.update_wrapper(method, fn)
    returns = _blocking_return(fn)
    method.__annotations__ = dict(fn.__annotations__)
    if returns is not inspect.Signature.empty:
        method.__annotations__["return"] = returns
    method.__signature__ = inspect.signature(fn).replace(return_annotation=returns)  # type: ignore[attr-defined]
    method._blocking_member = True  # type: ignore[attr-defined]
    return method


def _property(prop: property) -> property:
    fget, fset = prop.fget, prop.fset
    assert fget is not None

    def get(self: Blocking) -> Any:
        return self._portal.wrap(fget(self._async))

    def set_(self: Blocking, value: Any) -> None:
        assert fset is not None
        fset(self._async, _unwrap(value))

    return property(functools.wraps(fget)(get), functools.wraps(fset)(set_) if fset else None, doc=prop.__doc__)


class _ClassData:
    """A plain class attribute of the async class (e.g. ``plugin_type``): read from it, or from the instance."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, obj: Blocking | None, owner: type[Blocking]) -> Any:
        if obj is None:
            return getattr(owner._wraps, self.name)
        return obj._portal.wrap(getattr(obj._async, self.name))


# ---------------------------------------------------------------- annotations


def _blocking_return(fn: Callable[..., Any]) -> Any:
    """The return annotation of ``fn``'s blocking form."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # a name imported for type checkers only: the annotation is left as written
        return fn.__annotations__.get("return", inspect.Signature.empty)
    return _blocking_type(hints["return"]) if "return" in hints else inspect.Signature.empty


_ASYNC_ITERATORS = (collections.abc.AsyncIterator, collections.abc.AsyncIterable, collections.abc.AsyncGenerator)


def _blocking_type(annotation: Any) -> Any:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (collections.abc.Awaitable, collections.abc.Coroutine) and args:
        return _blocking_type(args[-1])
    if origin is AbstractAsyncContextManager and args:
        return AbstractContextManager[_blocking_type(args[0])]  # type: ignore[misc]
    if origin in _ASYNC_ITERATORS and args:
        return Iterator[_blocking_type(args[0])]  # type: ignore[misc]
    if origin in (types.UnionType, typing.Union):
        return functools.reduce(operator.or_, map(_blocking_type, args))
    if isinstance(annotation, type):
        cls = _derived_class(annotation)
        if cls is not None:
            return cls
    return annotation


# ---------------------------------------------------------------- the classes


def _derived_class(cls: type) -> type[Blocking] | None:
    """The blocking class for ``cls`` if it is an async client class (made now if need be), else ``None``."""
    found = _CLASSES.get(cls)
    if found is not None:
        return found
    if not any(k in _CLASSES for k in cls.__mro__):
        return None
    return blocking_class(cls)


def blocking_class(cls: type) -> type[Blocking]:
    """The blocking class of the async client class ``cls``, made the first time it is asked for.

    ``blocking_class(AsyncSysInfoClient) is SysInfoClient``; for a third-party
    ``HelloClient(AsyncPluginClient)``, a subclass of the blocking
    :class:`~radical_edge_client.PluginClient` named ``HelloClient`` (an
    ``Async`` prefix dropped), which is what ``get_plugin`` returns for it.
    """
    found = _CLASSES.get(cls)
    if found is not None:
        return found
    with _MAKING:
        return _CLASSES.get(cls) or _make_class(cls)


def _make_class(cls: type) -> type[Blocking]:
    bases = tuple(blocking_class(b) for b in cls.__bases__ if any(k in _CLASSES for k in b.__mro__))
    if not bases:
        raise TypeError(f"{cls.__qualname__} is not an async client class of radical_edge_client")
    name = cls.__name__
    if name.startswith("Async") and name[5:6].isupper():
        name = name[5:]
    qualname = cls.__qualname__.removesuffix(cls.__name__) + name
    made = types.new_class(
        name, bases, {"wraps": cls}, lambda ns: ns.update(__module__=cls.__module__, __qualname__=qualname)
    )
    return cast("type[Blocking]", made)


# ---------------------------------------------------------------- naming members, for type checkers


class Method(Protocol[P, R_co]):
    """A derived method to a type checker: on an instance, a callable with the async method's parameters."""

    @overload
    def __get__(self, obj: None, owner: type[Any], /) -> Callable[Concatenate[Any, P], R_co]: ...
    @overload
    def __get__(self, obj: object, owner: type[Any] | None = None, /) -> Callable[P, R_co]: ...


class Attribute(Protocol[R_co]):
    """A derived property to a type checker."""

    @overload
    def __get__(self, obj: None, owner: type[Any], /) -> Any: ...
    @overload
    def __get__(self, obj: object, owner: type[Any] | None = None, /) -> R_co: ...


@overload
def blocking(
    fn: Callable[Concatenate[Any, P], AbstractAsyncContextManager[Any]], returns: type[W]
) -> Method[P, AbstractContextManager[W]]: ...
@overload
def blocking(fn: Callable[Concatenate[Any, P], Awaitable[Any]], returns: type[W]) -> Method[P, W]: ...
@overload
def blocking(fn: Callable[Concatenate[Any, P], AsyncIterator[R]]) -> Method[P, Iterator[R]]: ...
@overload
def blocking(fn: Callable[Concatenate[Any, P], Awaitable[R]]) -> Method[P, R]: ...
def blocking(fn: Callable[..., Any], returns: type | None = None) -> Any:
    """The blocking form of async method ``fn`` (a coroutine, async generator or async context manager method).

    ``returns`` is the blocking class of what it returns (or of what its
    context manager yields) when that is an async client object.
    """
    method = _method(fn)
    if returns is not None:
        got = method.__annotations__.get("return")
        if typing.get_origin(got) is AbstractContextManager:
            got = typing.get_args(got)[0]
        if isinstance(got, type) and not issubclass(got, returns):
            raise TypeError(f"{fn.__qualname__} returns {got.__qualname__}, not {returns.__qualname__}")
    return method


def direct(fn: Callable[Concatenate[Any, P], R]) -> Method[P, R]:
    """A plain method of the async class (``session_path``, ...): called in the caller's thread."""
    return cast("Method[P, R]", _method(fn))


def attribute(fget: Callable[[Any], R]) -> Attribute[R]:
    """A property of the async class, read through (a type checker sees a property as its getter here)."""
    prop = cast("property", fget)
    return cast("Attribute[R]", _property(prop))
