"""The read-only HTTP API over one `Recommender` (FastAPI): what the CLI and templates show,
as JSON, with cache validators. No ranking here: every answer is a library call.

    uvicorn --factory recommender.server:app_from_environment   # or: recommender serve
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

try:
    from cachetools import LRUCache
    from fastapi import Body, FastAPI, Path, Query, Request, Response
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse
    from pydantic import BaseModel, Field
    from starlette.exceptions import HTTPException
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from .integrations.jinja import ArticlePages
except ImportError as exc:
    raise ImportError("recommender serve needs FastAPI, granian and Jinja2: "
                      "pip install 'recommender[server]'") from exc

from .config import Config, Filters, config_path
from .errors import ArticleNotFound, RecommenderError, UnknownSlot
from .ranking import Recommendation, explain_reason
from .recommender import Recommender, file_stamp, takes_nearby
from .store import IndexDirectory

__all__ = ["MAX_BATCH", "MAX_K", "app_from_environment", "create_app"]

MAX_K = 100       # links per slot a request may ask for
MAX_BATCH = 100   # ids per batch request
DEFAULT_MAX_AGE = 60
DEFAULT_CACHE_BYTES = 64 * 2**20  # of answer bodies kept in memory, per worker
INDEX_ENV, CONFIG_ENV, MAX_AGE_ENV = "RECOMMENDER_INDEX", "RECOMMENDER_CONFIG", \
    "RECOMMENDER_MAX_AGE"
VERSION_HEADER = "X-Index-Version"
WARM_PAGES = 256  # /page answers a switch checks and computes ahead (AnswerCache.warm)
FULL_COLLECT_EVERY = 50  # switches between full garbage collections (freeze_long_lived)
FOLLOW_INTERVAL = 0.25  # seconds between checks for a new version, in the background
WARM_SECONDS = 2.0      # at most this long spent answering again before a switch

logger = logging.getLogger("recommender")

ArticleId = Annotated[str, Path(description="Article id (URL-encoded; may contain '/').",
                                min_length=1)]
Slot = Annotated[str, Query(description="Slot name (see /v1/info).", min_length=1)]
K = Annotated[int | None, Query(ge=1, le=MAX_K, description="Links [default: the slot's].")]
Explain = Annotated[bool, Query(description="Add a one-line explanation of each link.")]
Unknown = Annotated[Literal["error", "empty"], Query(
    description="An id the index does not know: 404 (error) or empty slots (empty), for "
                "articles published after the last update.")]
MAX_FILTER_VALUES = 20
FilterValue = Annotated[str, Field(min_length=1, max_length=200)]
Sections = Annotated[list[FilterValue] | None, Query(
    max_length=MAX_FILTER_VALUES,
    description="Only articles of these sections (repeat for several); narrows the slot's "
                "own sections, never widens them.")]
Languages = Annotated[list[FilterValue] | None, Query(
    max_length=MAX_FILTER_VALUES,
    description="Only articles in these languages (BCP-47, case-insensitive; repeat for "
                "several).")]
MaxAge = Annotated[float | None, Query(
    ge=0, allow_inf_nan=False,
    description="Only articles published at most this many days before or after the "
                "article (or the slot's own max_age_days, if shorter).")]


class Link(BaseModel):
    """One link: `Recommendation.to_dict()`, as the CLI's --json prints it."""

    id: str
    title: str
    url: str | None
    score: float
    reason: dict[str, Any]
    published_at: str | None
    section: str | None
    status: str


class RelatedResponse(BaseModel):
    id: str
    slot: str
    version: str
    results: list[Link]
    explanations: list[str] | None = None


class PageResponse(BaseModel):
    id: str
    version: str
    slots: dict[str, list[Link]]
    explanations: dict[str, list[str]] | None = None


class SimilarResponse(BaseModel):
    id: str
    version: str
    results: list[Link]


class BatchRequest(BaseModel):
    ids: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1, max_length=MAX_BATCH)
    slot: str = Field(default="you_may_also_like", min_length=1)
    k: int | None = Field(default=None, ge=1, le=MAX_K)
    unknown: Literal["error", "empty"] = "error"
    section: list[FilterValue] = Field(default=[], max_length=MAX_FILTER_VALUES)
    language: list[FilterValue] = Field(default=[], max_length=MAX_FILTER_VALUES)
    max_age_days: float | None = Field(default=None, ge=0, allow_inf_nan=False)


class BatchResponse(BaseModel):
    slot: str
    version: str
    results: dict[str, list[Link]]


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: str
    version: str
    articles: int


ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "article_not_found or unknown_slot"},
    422: {"model": ErrorResponse, "description": "invalid_request: a bad parameter"},
}
HTML_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"content": {"text/html": {}}, "description": "no article with that id"},
}
PAGE_LINKS = "/articles/{id}"


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def create_app(source: Recommender | str | os.PathLike[str], *,
               config: Config | str | os.PathLike[str] | None = None,
               max_age: int = DEFAULT_MAX_AGE, link_pattern: str = PAGE_LINKS,
               cache_bytes: int = DEFAULT_CACHE_BYTES,
               switch_in_background: bool = False) -> FastAPI:
    """The API over `source` (a Recommender, or an index path opened now), and the packaged
    article page at /articles/{id}, its links pointing to `link_pattern` ({id} replaced by
    the URL-encoded id; change it when the app is mounted under a prefix). Responses carry
    the index version (X-Index-Version), an ETag of what the answer depends on (index
    version, overrides, config, the clock's minute, the request; for /page, a weak ETag of
    what the page itself depends on instead: `_page_etag`) and
    `Cache-Control: public, max-age=<max_age>`; a matching If-None-Match gives 304.
    Answers are kept by what they depend on, up to `cache_bytes` of bodies (0: none), so a
    repeat of a request costs no query until the index, overrides, config or minute change;
    a kept /page answer whose page did not change is then sent again naming the new version.

    A `Recommender` given follows new versions itself, on the request that first sees one.
    With `switch_in_background` (`source` must then be a path; what `recommender serve`
    does) the app serves one fixed version at a time instead: a task checks for a new
    version or config edit every FOLLOW_INTERVAL seconds, opens it in a thread, answers
    again the requests kept for the version served (most recent first, for at most
    WARM_SECONDS, between requests; of /page answers only the WARM_PAGES kept last, each
    carried as it is when its page did not change), then switches; the other kept /page
    answers are carried or computed by their first request after the switch. Until then
    readers get the version they had, every answer whole from one version."""
    if switch_in_background and isinstance(source, Recommender):
        raise TypeError("switch_in_background opens the index itself: give its path")
    rec = source if isinstance(source, Recommender) else \
        Recommender.open(source, config=config, reload_interval=-1 if switch_in_background
                         else 1.0)
    serving = Serving(_Served(rec, ArticlePages(rec, link_pattern=link_pattern)))
    follower: VersionFollower | None = None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(prefetch, serving.current.rec)
        task = asyncio.create_task(follower.run()) if follower is not None else None
        freeze_long_lived(0)  # the version opened, the app: kept for the server's life
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = _Api(title="recommender", version=_package_version(), lifespan=lifespan,
                  description="Related articles for the See also and You may also like slots.")
    app.add_middleware(AnswerCache, serving=serving, max_bytes=cache_bytes, max_age=max_age)
    app.add_middleware(HeadAsGet)
    _install_error_handlers(app)
    if switch_in_background:
        assert not isinstance(source, Recommender)
        follower = VersionFollower(app, serving, source, config, link_pattern)
    app.state.follower = follower

    def served(request: Request) -> _Served:
        return request.scope[SERVED]  # type: ignore[no-any-return]

    def conditional(request: Request, answer: Callable[[], dict[str, Any] | str],
                    page: _PageAsked | None = None) -> Response:
        """The answer (JSON, or HTML when it is a str) with its validators, or 304 when the
        client has it already. The tag is computed before the answer, so a 304 costs no
        query. `page`: the page an answer of /page is (its tag then names what the page
        depends on, not the index version: `_page_etag`)."""
        rec = served(request).rec
        version = rec.version
        etag = None
        if page is not None:
            # an unknown id: the answer says so (404, or empty with unknown=empty)
            with contextlib.suppress(ArticleNotFound):
                etag = _page_etag(rec, page, request.scope)
        if etag is None:
            etag = '"' + hashlib.sha256(f"{rec.state()}\0{request.scope['path']}\0"
                                        f"{request.scope['query_string'].decode('latin-1')}"
                                        .encode()).hexdigest()[:32] + '"'
        headers = {"ETag": etag, "Cache-Control": f"public, max-age={max_age}",
                   VERSION_HEADER: version}
        if _matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
        body = answer()
        if isinstance(body, str):
            return HTMLResponse(body, headers=headers)
        headers[VERSION_HEADER] = body.get("version", version)
        return JSONResponse(body, headers=headers)

    @app.get("/articles/{article_id:path}", response_class=HTMLResponse,
             responses=HTML_ERRORS, summary="The article page with its slots, for a browser")
    async def article_page(request: Request, article_id: ArticleId) -> Response:
        rec, pages = served(request).rec, served(request).pages
        try:
            return conditional(request, lambda: pages.render(article_id))
        except ArticleNotFound:
            return HTMLResponse(_NOT_FOUND_PAGE, status_code=404,
                                headers={VERSION_HEADER: rec.version})

    @app.get("/v1/articles/{article_id:path}/related", response_model=RelatedResponse,
             responses=ERRORS, summary="What one slot shows on the page of an article")
    async def related(request: Request, article_id: ArticleId, slot: Slot = "you_may_also_like",
                      k: K = None, explain: Explain = False, unknown: Unknown = "error",
                      section: Sections = None, language: Languages = None,
                      max_age_days: MaxAge = None) -> Response:
        filters = _filters(section, language, max_age_days)
        rec = served(request).rec

        def answer() -> dict[str, Any]:
            version = rec.version
            try:
                results = rec.related(article_id, slot=slot, k=k, filters=filters)
            except ArticleNotFound:
                if unknown == "error":
                    raise
                rec.policy(slot)  # an unknown slot stays an error
                results = []
            body: dict[str, Any] = {"id": article_id, "slot": slot, "version": version,
                                    "results": _links(results)}
            if explain:
                body["explanations"] = [explain_reason(r.reason) for r in results]
            return body
        return conditional(request, answer)

    @app.get("/v1/articles/{article_id:path}/page", response_model=PageResponse,
             responses=ERRORS, summary="Every slot of the page of an article, no article twice")
    async def page(request: Request, article_id: ArticleId, explain: Explain = False,
                   unknown: Unknown = "error", section: Sections = None,
                   language: Languages = None, max_age_days: MaxAge = None
                   ) -> Response:
        filters = _filters(section, language, max_age_days)
        rec = served(request).rec

        asked = _PageAsked(article_id, filters)

        def answer() -> dict[str, Any]:
            version = rec.version
            try:
                slots = rec.page(article_id, filters=filters)
                if not takes_nearby(slots):  # the AnswerCache may carry it to later versions
                    request.scope[PAGE_ASKED] = asked
            except ArticleNotFound:
                if unknown == "error":
                    raise
                slots = {name: [] for name in rec.slots}
            body: dict[str, Any] = {"id": article_id, "version": version,
                                    "slots": {n: _links(r) for n, r in slots.items()}}
            if explain:
                body["explanations"] = {n: [explain_reason(x.reason) for x in r]
                                        for n, r in slots.items()}
            return body
        return conditional(request, answer, asked)

    @app.get("/v1/articles/{article_id:path}/similar", response_model=SimilarResponse,
             responses=ERRORS, summary="The relevance ranking before any slot policy")
    async def similar(request: Request, article_id: ArticleId,
                      k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
                      unknown: Unknown = "error") -> Response:
        rec = served(request).rec

        def answer() -> dict[str, Any]:
            version = rec.version
            try:
                results = rec.similar(article_id, k=k)
            except ArticleNotFound:
                if unknown == "error":
                    raise
                results = []
            return {"id": article_id, "version": version, "results": _links(results)}
        return conditional(request, answer)

    @app.post("/v1/related:batch", response_model=BatchResponse, responses=ERRORS,
              summary=f"One slot for many articles (at most {MAX_BATCH} ids)")
    async def related_batch(request: Request, batch: Annotated[BatchRequest, Body()]
                            ) -> Response:
        rec = served(request).rec
        version = rec.version
        rec.policy(batch.slot)
        filters = _filters(batch.section, batch.language, batch.max_age_days, "body")
        results: dict[str, list[dict[str, Any]]] = {}
        for article_id in batch.ids:
            try:
                results[article_id] = _links(rec.related(article_id, slot=batch.slot,
                                                         k=batch.k, filters=filters))
            except ArticleNotFound:
                if batch.unknown == "error":
                    raise
                results[article_id] = []
        return JSONResponse({"slot": batch.slot, "version": version, "results": results},
                            headers={VERSION_HEADER: version})

    @app.get("/v1/info", summary="The index served: version, model, counts, slots")
    async def info(request: Request) -> Response:
        return conditional(request, served(request).rec.info)

    @app.get("/healthz", response_model=Health, summary="Liveness: the index is readable")
    async def healthz(request: Request) -> Response:
        rec = served(request).rec
        version = rec.version
        return JSONResponse({"status": "ok", "version": version, "articles": len(rec)},
                            headers={VERSION_HEADER: version, "Cache-Control": "no-store"})

    return app


def app_from_environment() -> FastAPI:
    """The app for `uvicorn --factory` (and each worker of `recommender serve --workers N`):
    the index from $RECOMMENDER_INDEX, config from $RECOMMENDER_CONFIG, max-age from
    $RECOMMENDER_MAX_AGE."""
    index = os.environ.get(INDEX_ENV)
    if not index:
        raise RecommenderError(f"set ${INDEX_ENV} to the index directory to serve")
    return create_app(index, config=os.environ.get(CONFIG_ENV) or None,
                      max_age=int(os.environ.get(MAX_AGE_ENV) or DEFAULT_MAX_AGE),
                      switch_in_background=True)


class _Api(FastAPI):
    """FastAPI whose GET requests are offered to its AnswerCache first (`AnswerCache.answer`),
    ahead of FastAPI's and Starlette's own layers (a telemetry check, the error middleware):
    an answer kept or stored is sent at about half the cost (scripts/bench_server.py).
    Everything else, and every answer computed, goes through the whole app."""

    answers: AnswerCache | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            answers = self.answers
            if answers is None and self.middleware_stack is not None:  # built on first use
                answers = self.answers = _answer_cache(self)
            if answers is not None and await answers.answer(scope, send):
                return
        await super().__call__(scope, receive, send)


class HeadAsGet:
    """HEAD answered as GET without the body (the same status and headers, RFC 9110), so a
    CDN or monitor can check a URL: FastAPI routes GET only."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


SERVED = "recommender.served"  # the scope key of what answers a request


@dataclass(frozen=True)
class _Served:
    """One Recommender and the article pages over it: what answers one request, whole."""

    rec: Recommender
    pages: ArticlePages


class Serving:
    """What the app serves now; replaced whole by VersionFollower (one assignment, so a
    request reads either the old or the new, never a mix)."""

    def __init__(self, current: _Served) -> None:
        self.current = current


class VersionFollower:
    """The switch to a new version (or config edit) off the request path, for an app that
    serves fixed versions (create_app(..., switch_in_background=True)): the new version is
    opened in a thread, the answers kept for the version served are computed again for it
    in the event loop, one between requests, and then it is served. A version that cannot
    be opened is logged and the one served stays."""

    def __init__(self, app: ASGIApp, serving: Serving, index: str | os.PathLike[str],
                 config: Config | str | os.PathLike[str] | None, link_pattern: str,
                 interval: float = FOLLOW_INTERVAL, warm_seconds: float = WARM_SECONDS
                 ) -> None:
        self.app, self.serving, self.index, self.config = app, serving, index, config
        self.link_pattern, self.interval, self.warm_seconds = link_pattern, interval, \
            warm_seconds
        self.directory = IndexDirectory(index)
        self.config_file = None if isinstance(config, Config) else config_path(index, config)[0]
        self.stamp = self._stamps()
        self.warmed = 0  # answers computed ahead of the last switch (for tests and benches)
        self.switches = 0

    def _stamps(self) -> tuple[object, object]:
        config_stamp = file_stamp(self.config_file)
        try:
            return self.directory.pointer_stamp(), config_stamp
        except OSError:
            return self.stamp, config_stamp

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.follow_once()
            except Exception:  # never let the follower die: the old version stays served
                logger.exception("%s: cannot switch to the new version", self.index)

    async def follow_once(self) -> bool:
        """Switch if a new version or config was published since the last switch."""
        stamp = self._stamps()
        if stamp == self.stamp:
            return False
        try:
            # the pages kept go on: those whose inputs this publish did not touch are not
            # computed again (PageMemo)
            rec = await asyncio.to_thread(Recommender.open, self.index, config=self.config,
                                          reload_interval=-1,
                                          page_memo=self.serving.current.rec.memo)
            # The template is compiled here, not in the thread: CPython 3.11.7's compile()
            # is not safe beside another thread's (numpy's header parse in that open).
            new = _Served(rec, ArticlePages(rec, link_pattern=self.link_pattern))
            await asyncio.to_thread(prefetch, rec)  # its files in the page cache first
        except (RecommenderError, OSError) as exc:
            logger.error("%s: cannot switch to the new version (%s); still serving %s",
                         self.index, exc, self.serving.current.rec.version)
            self.stamp = stamp  # tried; the next publish is tried again
            return False
        self.stamp = stamp
        cache = _answer_cache(self.app)
        self.warmed = 0
        if cache is not None:
            self.warmed = await cache.warm(self.app, new, self.serving.current.rec,
                                           self.warm_seconds)
        self.serving.current = new
        self.switches += 1
        freeze_long_lived(self.switches)
        return True


def prefetch(rec: Recommender) -> None:
    """The version's files read ahead into the page cache (Recommender.prefetch), before it
    serves; a failure only costs the first pages a disk read each."""
    try:
        rec.prefetch()
    except OSError as exc:
        logger.warning("%s: cannot read the index ahead (%s)", rec.path, exc)


def freeze_long_lived(switches: int) -> None:
    """Put what is in memory now (the version served, the answers and pages kept) out of
    the garbage collector's passes (gc.freeze): a full pass over them stops the event loop
    for ~0.1 s at 5,000 articles, longer with more, and they live until the next switch
    anyway. Every FULL_COLLECT_EVERY switches everything is collected once (a cycle of an
    old version frozen with it, such as a compiled template, is freed then)."""
    if switches and switches % FULL_COLLECT_EVERY == 0:
        gc.unfreeze()
        gc.collect()
    gc.freeze()


def _answer_cache(app: ASGIApp) -> AnswerCache | None:
    """The AnswerCache in the app's middleware stack (built on the first request)."""
    layer: Any = getattr(app, "middleware_stack", None)
    while layer is not None:
        if isinstance(layer, AnswerCache):
            return layer
        layer = getattr(layer, "app", None)
    return None


@dataclass(frozen=True)
class _PageAsked:
    """The page an answer of /page is: what its ETag is computed from again."""

    article_id: str
    filters: Filters | None


PAGE_ASKED = "recommender.page"  # the scope key where /page says which page it answered
ANSWER_KEY = "recommender.answer"  # the scope key of the request's AnswerCache key, once read


def _page_etag(rec: Recommender, page: _PageAsked, scope: Scope) -> str:
    """A weak ETag of a /page answer: what the page depends on (`Recommender.page_key`:
    the records and scores it is computed from, config, overrides, what of it the clock
    decides) and the request, not the index version. Two answers with one tag are the same
    page but for the version they name (RFC 9110's weak validator): after a publish that
    did not touch the page, a client or CDN revalidates with a 304."""
    return _page_tag(rec.page_key(page.article_id, filters=page.filters), scope)


def _page_tag(page_key: str, scope: Scope) -> str:
    request = f"{page_key}\0{scope['path']}\0{scope['query_string'].decode('latin-1')}"
    return 'W/"' + hashlib.sha256(request.encode()).hexdigest()[:32] + '"'


PAGE_PATH = ("/v1/articles/", "/page")  # what the /page route's path starts and ends with


@dataclass(frozen=True)
class _Kept:
    headers: list[tuple[bytes, bytes]]
    body: bytes
    etag: str
    validators: list[tuple[bytes, bytes]]  # what a 304 repeats: ETag, Cache-Control, version
    page: _PageAsked | None = None  # a /page answer that may be carried to later versions
    version: str = ""               # the version it names

    def for_version(self, version: str) -> _Kept:
        """The same answer naming `version` (in its body and X-Index-Version)."""
        if version == self.version:
            return self
        name = VERSION_HEADER.lower().encode()

        def swap(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
            return [(k, version.encode() if k.lower() == name else v) for k, v in headers]

        # the first "version" key of the JSON is the top level's (no string holds `"version":"`
        # unescaped), and only the length of the body changes with it
        body = self.body.replace(b'"version":' + json.dumps(self.version).encode(),
                                 b'"version":' + json.dumps(version).encode(), 1)
        headers = [(k, str(len(body)).encode()) if k.lower() == b"content-length" else (k, v)
                   for k, v in swap(self.headers)]
        return _Kept(headers, body, self.etag, swap(self.validators), self.page, version)


class AnswerCache:
    """Whole answers kept by (Recommender.state(), path, query), in front of the routes: a
    repeated request (the same article page asked by many readers) is sent from memory
    without routing, validation or a query, and 304s are answered here too. Only answers that
    carry an ETag are kept (the conditional GETs; never errors or /healthz), bounded in bytes
    (least recently used go first); the state moves on with a new version, an edit of the
    overrides or config, or the minute, so nothing stale is ever sent; a /page answer of an
    earlier state whose ETag still holds (`_page_etag`: the page did not change) is carried
    into the new one (`_carried`), naming the new version. It also puts in the
    scope (SERVED) what answers the request, read once from Serving: the routes and error
    handlers use that, so an answer never mixes two versions."""

    VALIDATORS = (b"etag", b"cache-control", VERSION_HEADER.lower().encode())

    def __init__(self, app: ASGIApp, serving: Serving, max_bytes: int,
                 max_age: int = DEFAULT_MAX_AGE) -> None:
        self.app, self.serving, self.max_age = app, serving, max_age
        self.kept: LRUCache[tuple[str, str, bytes], _Kept] | None = LRUCache(
            maxsize=max_bytes, getsizeof=lambda kept: len(kept.body) + 512) \
            if max_bytes > 0 else None
        # the key of the last answer kept for each /page request, to carry it (_carried)
        self.latest: LRUCache[tuple[str, bytes], tuple[str, str, bytes]] = LRUCache(
            maxsize=max(max_bytes // 1024, 1))
        self.carried = 0  # answers carried to a later state (for tests and benches)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # the one version that answers this request, whole (a warm-up brings its own)
        served = scope.get(SERVED)
        if served is None:
            served = scope[SERVED] = self.serving.current
        if scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        if ANSWER_KEY not in scope and await self.answer(scope, send):
            return
        key = scope.get(ANSWER_KEY)
        if key is None:  # an index that cannot be read: the routes answer the error
            await self.app(scope, receive, send)
            return
        start: Message = {}
        chunks: list[bytes] = []

        async def keep(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body" and start.get("status") == 200:
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    headers = list(start.get("headers", []))
                    etag = next((v for k, v in headers if k.lower() == b"etag"), None)
                    if etag is not None and self.kept is not None:
                        self._keep(key, _Kept(
                            headers, b"".join(chunks), etag.decode("latin-1"),
                            [(k, v) for k, v in headers if k.lower() in self.VALIDATORS],
                            scope.get(PAGE_ASKED), served.rec.version))
            await send(message)

        await self.app(scope, receive, keep)

    async def answer(self, scope: Scope, send: Send) -> bool:
        """Send the answer kept, stored (`_stored`) or carried (`_carried`) for this GET, if
        there is one (a 304 when the client has it); True when it was sent. Sets the scope's
        SERVED and ANSWER_KEY (None when the index cannot be read) for the layers after."""
        served = scope.get(SERVED)
        if served is None:
            served = scope[SERVED] = self.serving.current
        try:
            key = (served.rec.state(), scope["path"], scope["query_string"])
        except Exception:  # an index that cannot be read: the routes answer the error
            scope[ANSWER_KEY] = None
            return False
        scope[ANSWER_KEY] = key
        kept = self.kept.get(key) if self.kept is not None else None
        if kept is None:
            kept = self._stored(served, key)
        if kept is None and self.kept is not None:
            kept = self._carried(served, key)
        if kept is None:
            return False
        for name, value in scope["headers"]:
            if name == b"if-none-match" and _matches(value.decode("latin-1"), kept.etag):
                await send({"type": "http.response.start", "status": 304,
                            "headers": kept.validators})
                await send({"type": "http.response.body", "body": b""})
                return True
        await send({"type": "http.response.start", "status": 200, "headers": kept.headers})
        await send({"type": "http.response.body", "body": kept.body})
        return True

    def _keep(self, key: tuple[str, str, bytes], kept: _Kept) -> None:
        assert self.kept is not None
        self.kept[key] = kept
        if kept.page is not None:
            self.latest[key[1:]] = key

    def _stored(self, served: _Served, key: tuple[str, str, bytes]) -> _Kept | None:
        """The /page answer of an article whose page was computed ahead into the version
        served (`Recommender.stored_page`; `build --pages`), as the route would send it:
        the same body, headers and ETag, with no ranking. Only for the page as it is (no
        query parameters); kept like any answer."""
        path, query = key[1], key[2]
        start, end = PAGE_PATH
        if query or len(path) <= len(start) + len(end) or not path.startswith(start) \
                or not path.endswith(end):
            return None
        article_id = path[len(start):-len(end)]
        rec = served.rec
        try:
            stored = rec.stored_page(article_id)
            version = rec.version
        except Exception:  # unreadable: the route answers
            return None
        if stored is None:
            return None
        body = b"".join((b'{"id":', json.dumps(article_id, ensure_ascii=False).encode(),
                         b',"version":', json.dumps(version, ensure_ascii=False).encode(),
                         b',"slots":', stored.slots, b"}"))
        etag = _page_tag(stored.digest.hex(), {"path": path, "query_string": query})
        validators = [(b"etag", etag.encode("latin-1")),
                      (b"cache-control", f"public, max-age={self.max_age}".encode()),
                      (VERSION_HEADER.lower().encode(), version.encode("latin-1"))]
        kept = _Kept([*validators, (b"content-length", str(len(body)).encode()),
                      (b"content-type", b"application/json")], body, etag, validators,
                     _PageAsked(article_id, None), version)
        return kept

    def _carried(self, served: _Served, key: tuple[str, str, bytes]) -> _Kept | None:
        """The answer kept for the same request in an earlier state (another version or
        minute), when it is still the page asked for: same ETag (`_page_etag`). Kept again
        for this state, naming this version."""
        assert self.kept is not None
        before = self.latest.get(key[1:])
        kept = self.kept.get(before) if before is not None else None
        if kept is None or kept.page is None:
            return None
        try:
            if _page_etag(served.rec, kept.page, {"path": key[1], "query_string": key[2]}) \
                    != kept.etag:
                return None
        except Exception:  # gone from the index, or unreadable: the routes answer
            return None
        carried = kept.for_version(served.rec.version)
        self._keep(key, carried)
        self.carried += 1
        return carried

    async def warm(self, app: ASGIApp, new: _Served, old: Recommender, seconds: float) -> int:
        """Answer again, through `app` and for `new`, the requests kept for `old`'s state,
        the most recently kept first, for at most `seconds`, yielding to the event loop
        between answers; returns how many were answered."""
        if self.kept is None:
            return 0
        try:
            state = old.state()
        except Exception:
            return 0
        wanted = [(path, query) for kept_state, path, query in reversed(list(self.kept))
                  if kept_state == state]
        # only the WARM_PAGES /page answers kept last (the pages read most); the others are
        # carried or computed by their first request after the switch. Going through
        # thousands here held the requests waiting (p99 50 ms to 0.3 s on granian at 5,000
        # articles, against 14 to 18 ms with none)
        pages = {key for key in wanted if self.latest.get(key) == (state, *key)}
        wanted = [key for key in wanted if key not in pages] + \
            [key for key in wanted if key in pages][:WARM_PAGES]
        try:
            new_state = new.rec.state()
        except Exception:
            return 0
        deadline, done = time.monotonic() + seconds, 0

        async def nothing() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def discard(message: Message) -> None:
            pass

        for path, query in wanted:
            if time.monotonic() >= deadline:
                break
            # a /page answer the publish did not touch is carried over as it is (~50 µs);
            # the rest are computed again. The requests waiting go first, between any two
            # (without a pause between carries, thousands of them held the requests: p99
            # 0.3 s on granian)
            if self._carried(new, (new_state, path, query)) is None:
                await app({"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                           "method": "GET", "scheme": "http", "path": path,
                           "raw_path": path.encode(), "query_string": query, "root_path": "",
                           "headers": [], "client": None, "server": None, SERVED: new},
                          nothing, discard)
                done += 1
            await asyncio.sleep(0)
        return done


_NOT_FOUND_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Not found</title></head>
<body><h1>Not found</h1><p>There is no article with that id.</p></body></html>
"""


def _filters(section: list[str] | None, language: list[str] | None,
             max_age_days: float | None, where: str = "query") -> Filters | None:
    """The request's filters, or None for none; what the library refuses is a 422."""
    try:
        filters = Filters(sections=tuple(section or ()), languages=tuple(language or ()),
                          max_age_days=max_age_days)
    except ValueError as exc:
        raise RequestValidationError([{"loc": (where,), "msg": str(exc),
                                       "type": "value_error"}]) from None
    return filters if filters else None


def _links(results: list[Recommendation]) -> list[dict[str, Any]]:
    return [r.to_dict() for r in results]


def _matches(if_none_match: str | None, etag: str) -> bool:
    """Does an If-None-Match header name `etag` (weakly, as RFC 9110 says for GET)?"""
    if not if_none_match:
        return False
    tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return etag.removeprefix("W/") in tags or "*" in tags


def _install_error_handlers(app: FastAPI) -> None:
    """Every error as {"error": {"code", "message"}}; never a traceback in a response. The
    answers of the index itself (an unknown id or slot) say which version gave them."""

    def from_the_index(request: Request, response: JSONResponse) -> JSONResponse:
        response.headers[VERSION_HEADER] = request.scope[SERVED].rec.version
        return response

    @app.exception_handler(ArticleNotFound)
    async def article_not_found(request: Request, exc: ArticleNotFound) -> JSONResponse:
        return from_the_index(request, error_response(404, "article_not_found", str(exc)))

    @app.exception_handler(UnknownSlot)
    async def unknown_slot(request: Request, exc: UnknownSlot) -> JSONResponse:
        return from_the_index(request, error_response(404, "unknown_slot", str(exc)))

    @app.exception_handler(RecommenderError)
    async def index_unavailable(request: Request, exc: RecommenderError) -> JSONResponse:
        logger.error("%s %s: %s", request.method, request.url.path, exc)
        return error_response(503, "index_unavailable", str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "request"
            problems.append(f"{where}: {error.get('msg', 'invalid')}")
        return error_response(422, "invalid_request", "; ".join(problems) or "invalid request")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        response = error_response(exc.status_code, code, str(exc.detail))
        response.headers.update(exc.headers or {})  # e.g. Allow on a 405
        if response.headers.get("allow") == "GET":  # HeadAsGet answers HEAD too
            response.headers["Allow"] = "GET, HEAD"
        return response

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        logger.error("%s %s: internal error", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal", "internal server error")


def _package_version() -> str:
    from . import __version__
    return __version__
