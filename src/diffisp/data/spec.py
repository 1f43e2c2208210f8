"""The ``--data`` value as a typed value, parsed once: which source, and where it is.

Specs: ``auto``, ``cifar10``, ``builtin`` (classification); ``folder:PATH`` (an image folder
per class); ``scenes`` (generated detection scenes), ``coco:PATH``, ``voc:ROOT`` (detection).
A path is made absolute (``~`` expanded) when parsed, so a saved run names the same data from
any directory. The loaders still take the spec string (``str(spec)`` gives it back).
"""

from __future__ import annotations

from dataclasses import dataclass

from diffisp.data.folder import absolute_root
from diffisp.errors import ConfigError

CLASSIFY_KINDS = ("auto", "cifar10", "builtin", "folder")
DETECT_KINDS = ("scenes", "coco", "voc")
_WITH_PATH = ("folder", "coco", "voc")
_SHOWN = "auto | cifar10 | builtin | folder:PATH | scenes | coco:PATH | voc:ROOT"


@dataclass(frozen=True)
class DataSpec:
    """A parsed data spec: ``kind`` (one of :data:`CLASSIFY_KINDS` or :data:`DETECT_KINDS`)
    and, for ``folder``/``coco``/``voc``, an absolute ``path``."""

    kind: str
    path: str | None = None

    @classmethod
    def parse(cls, text: str | DataSpec) -> DataSpec:
        """Parse ``text`` (a :class:`DataSpec` passes through).

        Raises:
          ConfigError: not a string, an unknown kind, a path missing or given where none is.
        """
        if isinstance(text, DataSpec):
            return text
        if not isinstance(text, str):
            raise ConfigError(f"data must be a spec string ({_SHOWN}); got {text!r}")
        kind, sep, path = text.strip().partition(":")
        kind, path = kind.strip().lower(), path.strip()
        if kind not in CLASSIFY_KINDS + DETECT_KINDS:
            raise ConfigError(f"unknown data spec {text!r}; valid specs: {_SHOWN}")
        if kind in _WITH_PATH:
            if not path:
                raise ConfigError(f"data spec {kind!r} needs a path: {kind}:PATH")
            return cls(kind, str(absolute_root(path)))
        if sep:
            raise ConfigError(f"data spec {kind!r} takes no path; got {text!r}")
        return cls(kind)

    @property
    def detection(self) -> bool:
        """Whether the source holds detection data (boxes), not one class per image."""
        return self.kind in DETECT_KINDS

    @property
    def streamable(self) -> bool:
        """Whether training can read the source from disk while it trains (image folders,
        COCO and VOC sets; not the built-in, CIFAR-10 or generated sets, nor RAW files)."""
        return self.kind in ("folder", "coco", "voc")

    def __str__(self) -> str:
        return self.kind if self.path is None else f"{self.kind}:{self.path}"


__all__ = ["CLASSIFY_KINDS", "DETECT_KINDS", "DataSpec"]
