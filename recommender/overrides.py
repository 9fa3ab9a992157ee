"""Editorial overrides: pins, blocks and never-pairs, kept in `<index>/overrides.json`.

They live beside the built versions, not inside them, so they survive every rebuild, and
they are applied at query time. The file is plain JSON an editor can read and diff:

    {
      "pins":   [{"source": "a1", "target": "a7", "slot": "see_also", "position": 1,
                  "until": "2026-12-31"}],
      "blocks": [{"id": "a9", "reason": "legal"}],
      "never_pair": [["a1", "a5"]]
    }

An `until` that is a bare date includes that day (UTC): the pin lapses at the next midnight.

A bad file never takes the site down: an entry that breaks a rule is dropped alone (and
reported); a file that cannot be read at all (truncated, not JSON) leaves readers on the last
good overrides they read, else on the copy of the last file the editing commands wrote
(`.overrides.last-good.json`), and logs an error to the "recommender" logger.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .articles import format_datetime, parse_datetime
from .errors import IndexLocked, InvalidOverride
from .store import crash_point, storage_errors

FILE = "overrides.json"
LAST_GOOD = ".overrides.last-good.json"
LOCK_TIMEOUT_ENV = "RECOMMENDER_LOCK_TIMEOUT"
LOCK_TIMEOUT = 10.0  # seconds an editing command waits for another editor to finish
STAMP_SECONDS = 0.1  # how stale OverridesFile.stamp may be for an edit by another process
_EDITS: dict[Path, int] = {}  # edits of each overrides file by this process

logger = logging.getLogger("recommender")
_BARE_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_until(value: Any, field_name: str = "until") -> datetime | None:
    """When a pin lapses. A bare date includes that whole day (UTC): `2026-12-31` lapses at
    2027-01-01T00:00:00Z. A datetime is the instant itself."""
    if isinstance(value, str) and _BARE_DATE.match(value.strip()):
        day = parse_datetime(value, field_name)
        assert day is not None
        return day + timedelta(days=1)
    return parse_datetime(value, field_name)


@dataclass(frozen=True)
class Pin:
    source: str
    target: str
    slot: str
    position: int = 1          # 1-based position in the slot
    until: datetime | None = None  # the instant the pin lapses

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
    # What reading the file had to drop or fall back on, one line each (not saved).
    problems: tuple[str, ...] = field(default=(), compare=False)

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
        """Parse the file's JSON. Each entry that breaks a rule is dropped alone and named in
        `problems`; the rest apply."""
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        problems: list[str] = []

        def drop(where: str, entry: Any, reason: str) -> None:
            problems.append(f"{source}: {where} {json.dumps(entry, default=str)[:120]}: "
                            f"{reason}; entry ignored")

        for key in sorted(set(data) - {"pins", "blocks", "never_pair"}):
            drop("key", key, "unknown key (expected pins, blocks, never_pair)")
        pins: list[Pin] = []
        for i, entry in enumerate(_entries(data, "pins", problems, source)):
            try:
                pins.append(_pin_from(entry))
            except (KeyError, TypeError, ValueError, OverflowError) as exc:
                drop(f"pins[{i}]", entry, str(exc) if not isinstance(exc, KeyError)
                     else f"missing {exc}")
        blocks: dict[str, str] = {}
        for i, entry in enumerate(_entries(data, "blocks", problems, source)):
            if isinstance(entry, str) and entry:
                blocks[entry] = ""  # a bare id
            elif isinstance(entry, dict) and isinstance(entry.get("id"), str) and entry["id"] \
                    and isinstance(entry.get("reason", ""), str):
                blocks[entry["id"]] = entry.get("reason", "")
            else:
                drop(f"blocks[{i}]", entry, 'expected an id or {"id": ID, "reason": TEXT}')
        pairs: set[frozenset[str]] = set()
        for i, entry in enumerate(_entries(data, "never_pair", problems, source)):
            if not (isinstance(entry, list) and len(entry) == 2
                    and all(isinstance(x, str) and x for x in entry)):
                drop(f"never_pair[{i}]", entry, "expected a pair of ids")
            elif entry[0] == entry[1]:
                drop(f"never_pair[{i}]", entry, "an article cannot be paired with itself")
            else:
                pairs.add(frozenset(entry))
        return cls(tuple(pins), blocks, frozenset(pairs), tuple(problems))


def _entries(data: dict[str, Any], key: str, problems: list[str], source: str) -> list[Any]:
    value = data.get(key, [])
    if isinstance(value, list):
        return value
    problems.append(f"{source}: {key} must be a list; ignored")
    return []


def _pin_from(entry: Any) -> Pin:
    if not isinstance(entry, dict):
        raise TypeError("expected an object")
    ids = {k: entry[k] for k in ("source", "target", "slot")}
    if not all(isinstance(v, str) and v for v in ids.values()):
        raise TypeError("source, target and slot must be non-empty strings")
    position = entry.get("position", 1)
    if not isinstance(position, int) or isinstance(position, bool) or position < 1:
        raise ValueError("position must be a whole number from 1")
    if ids["source"] == ids["target"]:
        raise ValueError("an article cannot be pinned on its own page")
    return Pin(ids["source"], ids["target"], ids["slot"], position,
               parse_until(entry.get("until")))


class OverridesFile:
    """Reads (cached by modification time) and writes `<index>/overrides.json` atomically."""

    def __init__(self, index_dir: str | os.PathLike[str], *,
                 lock_timeout: float | None = None) -> None:
        self.path = Path(index_dir) / FILE
        self.last_good = self.path.parent / LAST_GOOD
        self._key = Path(os.path.abspath(self.path))  # in _EDITS, however the path is spelled
        if lock_timeout is None:
            lock_timeout = float(os.environ.get(LOCK_TIMEOUT_ENV) or LOCK_TIMEOUT)
        self.lock_timeout = lock_timeout
        self._cached: tuple[tuple[int, int] | None, Overrides] = (None, Overrides())
        self._seen: tuple[int, int] | None = None  # the stamp last read, good or bad
        # (when, this process' edits of the file then, the stamp): see `stamp`
        self._stamped: tuple[float, int, tuple[int, int] | None] = (-STAMP_SECONDS, 0, None)

    def stamp(self) -> tuple[int, int] | None:
        """(inode, mtime_ns) of the overrides file, None when there is none: a cheap change
        detector (what caches key on). Read from the file at most every STAMP_SECONDS (a
        page costs no stat of its own), and at once after this process edited the file."""
        now, edits = time.monotonic(), _EDITS.get(self._key, 0)
        if now - self._stamped[0] >= STAMP_SECONDS or edits != self._stamped[1]:
            self._stamped = (now, edits, self._stamp())
        return self._stamped[2]

    def _edited(self) -> None:
        """This process changed the file: every reader here sees it at once (`stamp`)."""
        _EDITS[self._key] = _EDITS.get(self._key, 0) + 1

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns

    def load(self) -> Overrides:
        """The overrides in force. Never raises: a file that cannot be read leaves the last
        good overrides in force (this reader's, else the last written copy) and logs an error
        once per change of the file."""
        stamp = self.stamp()
        if stamp == self._seen:
            return self._cached[1]
        self._seen = stamp
        if stamp is None:
            self._cached = (None, Overrides())
            return self._cached[1]
        try:
            overrides = self._read(self.path)
        except ValueError as exc:
            fallback = self._fallback(f"cannot read {self.path}: {exc}")
            self._cached = (self._cached[0], fallback)
            return fallback
        for problem in overrides.problems:
            logger.error("editorial overrides: %s", problem)
        self._cached = (stamp, overrides)
        return overrides

    def _read(self, path: Path) -> Overrides:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ValueError(exc.strerror or str(exc)) from exc
        except RecursionError:
            raise ValueError("nested too deeply") from None
        return Overrides.from_dict(data, str(path))  # ValueError on a non-object

    def _fallback(self, problem: str) -> Overrides:
        if self._cached[0] is not None:
            current = self._cached[1]
            what = "keeping the overrides read before"
        else:
            try:
                current = self._read(self.last_good)
                what = f"using the last saved copy {self.last_good}"
            except ValueError:
                current = Overrides()
                what = "no good copy to fall back on: NO pins, blocks or never-pairs apply"
        logger.error("editorial overrides: %s; %s", problem, what)
        return Overrides(current.pins, current.blocks, current.never_pair,
                         (f"{problem}; {what}",))

    # Editing helpers used by the CLI: each reads the newest file, changes one thing and
    # saves, under a lock so that two editors never lose each other's change.

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with storage_errors(str(self.path)):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock = open(self.path.parent / ".overrides.lock", "a+")  # noqa: SIM115
        with lock:
            deadline = time.monotonic() + self.lock_timeout
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        lock.seek(0)
                        holder = lock.read().strip() or "another process"
                        raise IndexLocked(
                            f"{self.path} is being edited by {holder}: gave up after "
                            f"{self.lock_timeout:g} s (${LOCK_TIMEOUT_ENV}); try again") from None
                    time.sleep(0.05)
            with contextlib.suppress(OSError):
                lock.seek(0)
                lock.truncate()
                lock.write(f"pid {os.getpid()}")
                lock.flush()
            # Under the lock no other save is under way: its temp files are leftovers.
            for stale in self.path.parent.glob(".overrides-*"):
                stale.unlink(missing_ok=True)
            yield

    @contextmanager
    def _editing(self) -> Iterator[Overrides]:
        """The current overrides, under the lock. A file that cannot be read is moved aside
        (nothing an editor wrote is lost) and editing starts from the last saved copy."""
        with self._locked():
            try:
                current = self._read(self.path) if self.path.exists() else Overrides()
            except ValueError as exc:
                aside = self.path.with_name(
                    f"{FILE}.broken-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}")
                with storage_errors(str(self.path)):
                    os.replace(self.path, aside)
                self._edited()
                try:
                    base = self._read(self.last_good)
                    start = f"started from the last saved copy {self.last_good}"
                except ValueError:
                    base, start = Overrides(), "started from no overrides"
                current = Overrides(base.pins, base.blocks, base.never_pair,
                                    (f"cannot read {self.path} ({exc}): moved it to {aside}, "
                                     f"{start}",))
            yield current

    def _save(self, overrides: Overrides) -> None:
        """Write the file and its last-good copy atomically (call with the lock held)."""
        text = json.dumps(overrides.to_dict(), indent=2, ensure_ascii=False) + "\n"
        with storage_errors(str(self.path)):
            for target in (self.path, self.last_good):
                fd, tmp = tempfile.mkstemp(prefix=".overrides-", dir=self.path.parent)
                try:
                    with os.fdopen(fd, "w", encoding="utf-8") as handle:
                        handle.write(text)
                        handle.flush()
                        os.fsync(handle.fileno())
                    crash_point("overrides-temp-written")
                    os.replace(tmp, target)
                    self._edited()
                except BaseException:
                    Path(tmp).unlink(missing_ok=True)
                    raise

    def save(self, overrides: Overrides) -> None:
        with self._locked():
            self._save(overrides)

    def pin(self, pin: Pin, now: datetime | None = None) -> Overrides:
        """Add (or replace) a pin. Returns what was saved, with the problems met on the way."""
        if pin.source == pin.target:
            raise InvalidOverride(f"cannot pin {pin.target} on its own page")
        if pin.position < 1:
            raise InvalidOverride("pin positions start at 1")
        if pin.until is not None and pin.until <= (now or datetime.now(UTC)):
            raise InvalidOverride(f"the pin would lapse at {format_datetime(pin.until)}, "
                                  "which is already past")
        with self._editing() as current:
            others = tuple(p for p in current.pins
                           if (p.source, p.target, p.slot) != (pin.source, pin.target, pin.slot))
            return self._commit(current, pins=(*others, pin))

    def unpin(self, source: str, target: str, slot: str | None = None) -> int:
        with self._editing() as current:
            kept = tuple(p for p in current.pins if not (
                p.source == source and p.target == target and slot in (None, p.slot)))
            self._commit(current, pins=kept)
            return len(current.pins) - len(kept)

    def block(self, article_id: str, reason: str = "") -> Overrides:
        with self._editing() as current:
            return self._commit(current, blocks={**current.blocks, article_id: reason})

    def unblock(self, article_id: str) -> bool:
        with self._editing() as current:
            blocks = {k: v for k, v in current.blocks.items() if k != article_id}
            self._commit(current, blocks=blocks)
            return len(blocks) != len(current.blocks)

    def never_pair(self, a: str, b: str, remove: bool = False) -> Overrides:
        if a == b:
            raise InvalidOverride(f"cannot never-pair {a} with itself")
        with self._editing() as current:
            pair = frozenset((a, b))
            pairs = current.never_pair - {pair} if remove else current.never_pair | {pair}
            return self._commit(current, never_pair=pairs)

    def _commit(self, current: Overrides, *, pins: tuple[Pin, ...] | None = None,
                blocks: dict[str, str] | None = None,
                never_pair: frozenset[frozenset[str]] | None = None) -> Overrides:
        saved = Overrides(current.pins if pins is None else pins,
                          current.blocks if blocks is None else blocks,
                          current.never_pair if never_pair is None else never_pair,
                          current.problems)
        self._save(saved)
        return saved
