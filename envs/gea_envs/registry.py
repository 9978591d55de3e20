"""A typed name-to-factory registry shared by every plugin kind (adapters, tokenizers)."""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """Raised when a registry lookup names an entry that was never registered."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class Registry(Generic[T]):
    """Maps names to factories of one plugin kind.

    Lookups of unknown names raise `UnknownNameError` listing the known names, so a
    typo in a config fails at once instead of returning ``None`` deep in a trainer.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[[], T]] = {}

    def register(self, name: str, factory: Callable[[], T], *, overwrite: bool = False) -> None:
        """Register `factory` under `name`; re-registering a name raises unless `overwrite`."""
        if not name or name != name.strip():
            raise ValueError(f"Invalid {self.kind} name {name!r}: use a non-empty name without surrounding spaces.")
        if name in self._factories and not overwrite:
            raise ValueError(f"{self.kind} {name!r} is already registered; pass overwrite=True to replace it.")
        self._factories[name] = factory

    def get(self, name: str) -> T:
        """Build the entry registered under `name`."""
        try:
            factory = self._factories[name]
        except KeyError:
            known = ", ".join(sorted(self._factories)) or "(none)"
            raise UnknownNameError(f"Unknown {self.kind} {name!r}. Known {self.kind}s: {known}.") from None
        return factory()

    def names(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._factories)
