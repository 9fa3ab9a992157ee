"""Articles: the record every other stage works on, its validation rules, and the readers
(JSON Lines, CSV, and saved HTML pages through `html_pages`).

Readers never drop a record silently: each input yields either an `Article` or a `Problem`
naming the file, line and reason. Callers decide what to do with problems (the CLI reports
them and exits non-zero; `--strict` refuses to publish).
"""

from __future__ import annotations

import csv
import glob
import io
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import InputError, InvalidArticle
from .languages import detect_language

STATUSES = ("published", "draft", "deleted", "embargoed")
KNOWN_FIELDS = (
    "id", "title", "body", "url", "published_at", "updated_at", "section", "tags",
    "language", "status", "paywalled", "story_id",
)
# Bodies longer than this are kept but cut: it is always an ingestion accident (a whole HTML
# dump, a base64 image) and the model reads only the first few hundred tokens anyway.
MAX_BODY_CHARS = 200_000
# A JSONL line this long is read but not parsed (protects memory against a corrupt file).
MAX_LINE_BYTES = 50_000_000
# Input formats and the file names each is recognised by (a folder is read for these).
FORMATS = {"jsonl": (".jsonl", ".ndjson", ".json"), "csv": (".csv",), "html": (".html", ".htm")}


@dataclass(frozen=True)
class Article:
    id: str
    title: str
    body: str = ""
    url: str | None = None
    published_at: datetime | None = None
    updated_at: datetime | None = None
    section: str | None = None
    tags: tuple[str, ...] = ()
    language: str | None = None
    status: str = "published"
    paywalled: bool = False
    story_id: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_published(self) -> bool:
        return self.status == "published"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, the same shape the JSONL reader accepts."""
        out: dict[str, Any] = {
            "id": self.id, "title": self.title, "body": self.body, "url": self.url,
            "published_at": format_datetime(self.published_at),
            "updated_at": format_datetime(self.updated_at),
            "section": self.section, "tags": list(self.tags), "language": self.language,
            "status": self.status, "paywalled": self.paywalled, "story_id": self.story_id,
        }
        out.update(self.metadata)
        return out


@dataclass(frozen=True)
class Problem:
    """A record that could not be taken as it was. `severity` is "error" (record rejected)
    or "warning" (record kept, as described in `reason`)."""

    source: str
    line: int | None
    reason: str
    article_id: str | None = None
    severity: str = "error"

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line is not None else self.source
        who = f" (id {self.article_id!r})" if self.article_id else ""
        return f"{where}{who}: {self.severity}: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "line": self.line, "id": self.article_id,
                "severity": self.severity, "reason": self.reason}


@dataclass
class LoadReport:
    """What a read produced: the valid articles (last occurrence of each id) and every problem."""

    articles: list[Article] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]


def format_datetime(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a "Z", the form every file and JSON output of the project uses."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def parse_datetime(value: Any, field_name: str) -> datetime | None:
    """ISO 8601 date or datetime -> aware UTC datetime. A bare date means midnight UTC;
    a datetime without offset is taken as UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(
                f"{field_name} is not an ISO 8601 date or datetime: {value!r}") from None
    else:
        raise ValueError(f"{field_name} must be an ISO 8601 string, got {type(value).__name__}")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+05:00 is before the first representable UTC
        raise ValueError(f"{field_name} is out of range: {value!r}") from None


# What browsers drop before reading a URL: tabs and newlines anywhere, and leading or
# trailing control characters and spaces ("java\tscript:" is still javascript:).
_URL_IGNORED = re.compile(r"[\t\n\r]")
_URL_PADDING = "".join(chr(i) for i in range(33))
LINK_SCHEMES = ("http", "https")


def safe_url(url: str | None) -> str | None:
    """The URL if it is safe to render as a link (http, https, or relative), else None:
    `javascript:`, `data:` and any other scheme, in any case and with any padding, never
    become a clickable href."""
    if not url:
        return None
    cleaned = _URL_IGNORED.sub("", url).strip(_URL_PADDING)
    if not cleaned:
        return None
    try:
        scheme = urlsplit(cleaned).scheme
    except ValueError:  # e.g. an unbalanced "[" in the host
        return None
    return cleaned if scheme == "" or scheme.lower() in LINK_SCHEMES else None


def _optional_str(record: Mapping[str, Any], name: str) -> str | None:
    value = record.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {type(value).__name__}")
    return value


def _parse_bool(value: Any, name: str) -> bool:
    if value is None or value == "":
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "0", "no"):
        return False
    raise ValueError(f"{name} must be a boolean, got {value!r}")


def article_from_record(record: Mapping[str, Any], *, tags_separator: str | None = None
                        ) -> tuple[Article, list[str]]:
    """Validate one raw record. Returns the article and warnings; raises ValueError with a
    readable reason when the record cannot be used."""
    if not isinstance(record, Mapping):
        raise ValueError(f"record must be a JSON object, got {type(record).__name__}")
    warnings: list[str] = []
    raw_id = record.get("id")
    if isinstance(raw_id, int) and not isinstance(raw_id, bool):
        raw_id = str(raw_id)  # numeric CMS ids are common and unambiguous
    if raw_id is not None and not isinstance(raw_id, str):
        raise ValueError(f"id must be a string, got {type(raw_id).__name__}")
    if raw_id is None or not raw_id.strip():
        raise ValueError("missing or empty id")
    article_id = raw_id.strip()
    title = record.get("title")
    if title is not None and not isinstance(title, str):
        raise ValueError(f"title must be a string, got {type(title).__name__}")
    if title is None or not title.strip():
        raise ValueError("missing or empty title")
    body = record.get("body") or ""
    if not isinstance(body, str):
        raise ValueError(f"body must be a string, got {type(body).__name__}")
    if not body.strip():
        warnings.append("empty body: only the title is embedded")
    if len(body) > MAX_BODY_CHARS:
        warnings.append(f"body of {len(body):,} characters cut to {MAX_BODY_CHARS:,}")
        body = body[:MAX_BODY_CHARS]
    raw_status = record.get("status") or "published"
    if not isinstance(raw_status, str):
        raise ValueError(f"status must be a string, got {type(raw_status).__name__}")
    status = raw_status.strip().lower()  # CMS exports write "DELETED", "Draft", ...
    if status not in STATUSES:
        raise ValueError(f"unknown status {raw_status!r} "
                         f"(expected one of {', '.join(STATUSES)}, in any case)")
    url = _optional_str(record, "url")
    if url is not None and safe_url(url) is None:
        warnings.append(f"url {url[:80]!r} is not http(s) or relative: it is not linked")
        url = None
    tags_value = record.get("tags")
    if tags_value is None or tags_value == "":
        tags: tuple[str, ...] = ()
    elif isinstance(tags_value, str) and tags_separator is not None:
        tags = tuple(t.strip() for t in tags_value.split(tags_separator) if t.strip())
    elif isinstance(tags_value, list) and all(isinstance(t, str) for t in tags_value):
        tags = tuple(t.strip() for t in tags_value if t.strip())
    else:
        raise ValueError("tags must be a list of strings")
    article = Article(
        id=article_id,
        title=title.strip(),
        body=body,
        url=safe_url(url),
        published_at=parse_datetime(record.get("published_at"), "published_at"),
        updated_at=parse_datetime(record.get("updated_at"), "updated_at"),
        section=_optional_str(record, "section"),
        tags=tags,
        # Detected when the record does not say (None when the text is too short to tell).
        language=_optional_str(record, "language") or detect_language(f"{title}\n{body}"),
        status=status,
        paywalled=_parse_bool(record.get("paywalled"), "paywalled"),
        story_id=_optional_str(record, "story_id"),
        metadata={k: v for k, v in record.items() if k not in KNOWN_FIELDS},
    )
    return article, warnings


def _records_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed object or an exception) for each non-blank line. Lines are decoded
    one by one so a stray non-UTF-8 byte costs one record, not the file."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            if len(raw) > MAX_LINE_BYTES:
                yield number, ValueError(f"line of {len(raw):,} bytes is too long to be a record")
                continue
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                yield number, ValueError(f"not valid UTF-8 (byte {exc.start})")
                continue
            try:
                yield number, json.loads(text)
            except json.JSONDecodeError as exc:
                yield number, ValueError(f"invalid JSON: {exc.msg} at column {exc.colno}")
            except RecursionError:
                yield number, ValueError("invalid record: JSON nested too deeply")


def _records_csv(path: Path) -> Iterator[tuple[int, Any]]:
    """(first line of the record, row dict or an exception). Quoting is strict: a quote left
    open is an error on the line where its record starts, and reading resumes on the next
    line, so one broken row never swallows the rows after it."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        # Decode line by line to name the bad rows instead of refusing the whole file.
        text = path.read_bytes().decode("utf-8", errors="surrogateescape")
    lines = io.StringIO(text, newline="").readlines()
    header: list[str] | None = None
    start = 0  # index in `lines` where the current reader starts
    while start < len(lines):
        reader = csv.reader(lines[start:], strict=True)
        consumed = 0  # lines of `lines[start:]` read by complete records
        try:
            for row in reader:
                first = start + consumed + 1  # 1-based line where this record starts
                consumed = reader.line_num
                if not row:
                    continue
                if header is None:
                    header = row
                    continue
                yield first, _csv_record(header, row)
        except csv.Error as exc:
            first = start + consumed + 1
            if header is None:
                raise InputError(f"cannot read input {str(path)!r}: line {first}: "
                                 f"invalid CSV header ({exc})") from None
            yield first, ValueError(f"invalid CSV: {exc} (a quote opened on this line is "
                                    "not closed properly)")
            start = first  # resume on the line after the record's first line
            continue
        break


def _csv_record(header: list[str], row: list[str]) -> dict[str, str] | ValueError:
    if len(row) > len(header):
        return ValueError("more values than columns")
    if any(_has_surrogates(v) for v in row):
        return ValueError("not valid UTF-8")
    return {k: v for k, v in zip(header, row, strict=False) if v != ""}


def _has_surrogates(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _records_html(path: Path, name: str) -> Iterator[tuple[int | None, Any]]:
    """A saved page's record (see `html_pages`), or the reason it has none."""
    try:
        from .html_pages import read_page
    except ImportError as exc:
        if exc.name not in ("trafilatura", "lxml"):
            raise
        raise InputError(f"cannot read input {str(path)!r}: reading HTML pages needs "
                         "trafilatura: pip install 'recommender[html]'") from exc
    try:
        yield None, read_page(path.read_bytes(), name)
    except ValueError as exc:
        yield None, exc


def input_files(item: str | Path, format: str | None = None) -> list[tuple[Path, str]]:
    """The files an input names, each with its name inside the input (what an HTML page
    without a canonical URL is identified by): a file; a folder (every file of `format`
    in it and below, which `format` must then say); or a glob pattern ("pages/*.html")."""
    path = Path(item)
    if path.is_file():
        return [(path, path.with_suffix("").name)]
    if path.is_dir():
        if format is None:
            raise InputError(f"cannot read input {str(path)!r}: it is a folder; say which "
                             "files to read in it with --format " + "|".join(FORMATS))
        found = sorted(f for f in path.rglob("*")
                       if f.is_file() and f.suffix.lower() in FORMATS[format])
        if not found:
            raise InputError(f"cannot read input {str(path)!r}: no {format} file in it "
                             f"({', '.join(FORMATS[format])})")
        return [(f, f.relative_to(path).with_suffix("").as_posix()) for f in found]
    if glob.has_magic(str(item)):
        matches = sorted(Path(m) for m in glob.glob(str(item), recursive=True))
        files = [m for m in matches if m.is_file()]
        if not files:
            raise InputError(f"cannot read input {str(item)!r}: no file matches")
        return [(f, f.with_suffix("").name) for f in files]
    raise InputError(f"cannot read input {str(path)!r}: no such file")


def read_articles(sources: Iterable[str | Path | Mapping[str, Any]] | str | Path,
                  format: str | None = None) -> LoadReport:
    """Read articles from .jsonl/.ndjson/.csv files, saved .html pages, folders and glob
    patterns of them, or from an iterable of dicts. `format` ("jsonl", "csv" or "html")
    reads every file as that format whatever its name, and says what to read in a folder.

    Duplicate ids: the last record wins and the earlier one is reported as a warning, which
    is what a CMS export that lists an article once per revision needs.
    """
    if format is not None and format not in FORMATS:
        raise InputError(f"unknown input format {format!r} (expected {', '.join(FORMATS)})")
    if isinstance(sources, (str, Path)):
        sources = [sources]
    report = LoadReport()
    by_id: dict[str, tuple[Article, str, int | None]] = {}
    dict_batch: list[Mapping[str, Any]] = []

    def take(source: str, items: Iterable[tuple[int | None, Any]], separator: str | None
             ) -> None:
        for number, record in items:
            if isinstance(record, Exception):
                report.problems.append(Problem(source, number, str(record)))
                continue
            rid = record.get("id") if isinstance(record, Mapping) else None
            try:
                article, warnings = article_from_record(record, tags_separator=separator)
            except (ValueError, RecursionError, OverflowError) as exc:
                # Whatever one record holds, it costs that record, never the run.
                reason = str(exc) if isinstance(exc, ValueError) else \
                    f"invalid record: {type(exc).__name__}: {exc}"
                report.problems.append(Problem(source, number, reason,
                                               str(rid) if isinstance(rid, (str, int)) else None))
                continue
            for warning in warnings:
                report.problems.append(Problem(source, number, warning, article.id, "warning"))
            previous = by_id.get(article.id)
            if previous is not None:
                where = f"{previous[1]}:{previous[2]}" if previous[2] else previous[1]
                report.problems.append(Problem(
                    source, number, f"duplicate id: replaces the record at {where}",
                    article.id, "warning"))
                del by_id[article.id]  # re-insert so input order follows the winner
            by_id[article.id] = (article, source, number)

    for item in sources:
        if isinstance(item, Mapping):
            dict_batch.append(item)
            continue
        for path, name in input_files(item, format):
            suffix = path.suffix.lower()
            kind = format or next((k for k, suffixes in FORMATS.items() if suffix in suffixes),
                                  None)
            try:
                if kind == "jsonl":
                    take(str(path), _records_jsonl(path), None)
                elif kind == "csv":
                    take(str(path), _records_csv(path), "|")
                elif kind == "html":
                    take(str(path), _records_html(path, name), None)
                else:
                    raise InputError(f"cannot read input {str(path)!r}: expected .jsonl, .csv "
                                     "or .html (or say which with --format)")
            except (OSError, csv.Error) as exc:
                raise InputError(f"cannot read input {str(path)!r}: {exc}") from exc
    if dict_batch:
        take("<records>", ((i, r) for i, r in enumerate(dict_batch, start=1)), "|")
    report.articles = [entry[0] for entry in by_id.values()]
    return report


def load_articles(sources: Iterable[str | Path | Mapping[str, Any]] | str | Path,
                  format: str | None = None) -> list[Article]:
    """Read and validate; raise `InvalidArticle` for the first invalid record."""
    report = read_articles(sources, format)
    if report.errors:
        first = report.errors[0]
        raise InvalidArticle(first.reason, source=first.source, line=first.line,
                             article_id=first.article_id)
    return report.articles
