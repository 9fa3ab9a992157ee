"""Editorial overrides: pins, blocks and never-pairs, kept in `<index>/overrides.json`.

They live beside the built versions, not inside them, so they survive every rebuild, and
they are applied at query time. The file is plain JSON an editor can read and diff:

    {
      "pins":   [{"source": "a1", "target": "a7", "slot": "see_also", "position": 1,
                  "until": "2026-12-31T00:00:00Z"}],
      "blocks": [{"id": "a9", "reason": "legal"}],
      "never_pair": [["a1", "a5"]]
    }
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .articles import format_datetime, parse_datetime
from .errors import ConfigError

FILE = "overrides.json"


@dataclass(frozen=True)
class Pin:
    source: str
    target: str
    slot: str
    position: int = 1          # 1-based position in the slot
    until: datetime | None = None

    def active(self, now: datetime) -> bool:
        return self.until is None or now < self.until

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source, "target": self.target, "slot": self.slot,
                               "position": self.position}
        if self.until is not None:
            out["until"] = format_datetime(self.until)
        return out


@dataclass(frozen=True)
class Overrides:
    pins: tuple[Pin, ...] = ()
    blocks: dict[str, str] = field(default_factory=dict)   # id -> reason
    never_pair: frozenset[frozenset[str]] = frozenset()

    def pins_for(self, source: str, slot: str, now: datetime) -> list[Pin]:
        return sorted((p for p in self.pins
                       if p.source == source and p.slot == slot and p.active(now)),
                      key=lambda p: p.position)

    def allowed(self, source: str, target: str) -> bool:
        return target not in self.blocks and frozenset((source, target)) not in self.never_pair

    def to_dict(self) -> dict[str, Any]:
        return {
            "pins": [p.to_dict() for p in self.pins],
            "blocks": [{"id": i, "reason": r} if r else {"id": i}
                       for i, r in sorted(self.blocks.items())],
            "never_pair": sorted(sorted(pair) for pair in self.never_pair),
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = FILE) -> Overrides:
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a JSON object")
        try:
            pins = tuple(
                Pin(source=str(p["source"]), target=str(p["target"]), slot=str(p["slot"]),
                    position=int(p.get("position", 1)),
                    until=parse_datetime(p.get("until"), "until"))
                for p in data.get("pins", []))
            blocks = {}
            for entry in data.get("blocks", []):  # {"id": .., "reason": ..} or a bare id
                if isinstance(entry, dict):
                    blocks[str(entry["id"])] = str(entry.get("reason", ""))
                else:
                    blocks[str(entry)] = ""
            pairs = frozenset(frozenset((str(a), str(b))) for a, b in data.get("never_pair", []))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: invalid overrides: {exc}") from exc
        if any(p.position < 1 for p in pins):
            raise ConfigError(f"{source}: pin positions start at 1")
        return cls(pins=pins, blocks=blocks, never_pair=pairs)


class OverridesFile:
    """Reads (cached by modification time) and writes `<index>/overrides.json` atomically."""

    def __init__(self, index_dir: str | os.PathLike[str]) -> None:
        self.path = Path(index_dir) / FILE
        self._cached: tuple[tuple[int, int] | None, Overrides] = (None, Overrides())

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns

    def load(self) -> Overrides:
        stamp = self._stamp()
        if stamp != self._cached[0]:
            if stamp is None:
                overrides = Overrides()
            else:
                try:
                    data = json.loads(self.path.read_text(encoding="utf-8"))
                except (OSError, ValueError) as exc:
                    raise ConfigError(f"cannot read {self.path}: {exc}") from exc
                overrides = Overrides.from_dict(data, str(self.path))
            self._cached = (stamp, overrides)
        return self._cached[1]

    def save(self, overrides: Overrides) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".overrides-", dir=self.path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(overrides.to_dict(), handle, indent=2, ensure_ascii=False)
            handle.write("\n")
        os.replace(tmp, self.path)

    # Editing helpers used by the CLI: each reads the newest file, changes one thing and
    # saves, under a lock so that two editors never lose each other's change.

    @contextmanager
    def _editing(self) -> Iterator[Overrides]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.parent / ".overrides.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield self.load()

    def pin(self, pin: Pin) -> None:
        with self._editing() as current:
            others = tuple(p for p in current.pins
                           if (p.source, p.target, p.slot) != (pin.source, pin.target, pin.slot))
            self.save(Overrides((*others, pin), current.blocks, current.never_pair))

    def unpin(self, source: str, target: str, slot: str | None = None) -> int:
        with self._editing() as current:
            kept = tuple(p for p in current.pins if not (
                p.source == source and p.target == target and slot in (None, p.slot)))
            self.save(Overrides(kept, current.blocks, current.never_pair))
            return len(current.pins) - len(kept)

    def block(self, article_id: str, reason: str = "") -> None:
        with self._editing() as current:
            self.save(Overrides(current.pins, {**current.blocks, article_id: reason},
                                current.never_pair))

    def unblock(self, article_id: str) -> bool:
        with self._editing() as current:
            blocks = {k: v for k, v in current.blocks.items() if k != article_id}
            self.save(Overrides(current.pins, blocks, current.never_pair))
            return len(blocks) != len(current.blocks)

    def never_pair(self, a: str, b: str, remove: bool = False) -> None:
        with self._editing() as current:
            pair = frozenset((a, b))
            pairs = current.never_pair - {pair} if remove else current.never_pair | {pair}
            self.save(Overrides(current.pins, current.blocks, pairs))
