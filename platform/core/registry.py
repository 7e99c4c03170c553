"""One registry mechanism: a name -> object table that things declare themselves into.

Two instances: :data:`FAMILIES` (GAN families, ``raygan.models``) and :data:`TASKS` (data
tasks, ``raygan.datasets``). The registry never discovers anything itself: the entry points
fill it by importing the built-in families and tasks (``import raygan.models``,
``import raygan.datasets.tasks``; the training floor, ``raygan.platform.engine``, does both).
A name that is missing is an error that lists what is registered.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Generic, Iterator, Optional, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, listing: str, hint: str = ""):
        self.kind = kind
        self.listing = listing  # how errors introduce the registered names
        self.hint = hint  # how to fill it, appended to "unknown" errors when it is empty
        self._items: Dict[str, T] = {}

    def register(self, name: str, item: T) -> T:
        if not name:
            raise ValueError(f"a {self.kind} needs a name: {item!r}")
        if name in self._items and self._items[name] is not item:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = item
        return item

    def get(self, name: Optional[str]) -> T:
        try:
            return self._items[name]  # type: ignore[index]
        except KeyError:
            known = ", ".join(sorted(self._items)) or f"none ({self.hint})"
            raise KeyError(f"unknown {self.kind} {name!r}; {self.listing}: {known}") from None

    __getitem__ = get

    def unregister(self, name: str) -> None:
        self._items.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def decorator(self, validate: Callable[[Any], None] = lambda item: None) -> Callable[[T], T]:
        """A class decorator registering the class under its ``name`` attribute."""

        def register(item: T) -> T:
            validate(item)
            return self.register(getattr(item, "name", ""), item)

        return register


FAMILIES: Registry[Any] = Registry("family", "registered families",
                                   "import raygan.models to register the built-in families")
TASKS: Registry[Any] = Registry("data task", "known tasks",
                                "import raygan.datasets.tasks to register the built-in tasks")
