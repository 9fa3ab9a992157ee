"""Saved HTML pages -> article records: the main text without the site around it, and the
metadata the page carries. The records have the JSON input's shape, so everything after the
readers (validation, embedding, slots) is the same for pages as for JSON.

The main text is trafilatura's (a maintained extractor) run on a page already cleaned by
`clean_page`: trafilatura relies much on class and id names ("comment", "share", "related"), and
on pages without them (many themes, minified exports) it keeps the comment form, the Akismet
notice and the site's link lists. The cleaning rules look at tags and text only, so they work
the same with or without attributes. Needs the `[html]` extra (`pip install 'recommender[html]'`).
"""

from __future__ import annotations

import json
import re
from copy import deepcopy
from typing import Any
from urllib.parse import urlsplit

import trafilatura
from lxml.etree import ParserError
from lxml.html import HtmlElement

# --- What is never the article --------------------------------------------------------------

# Elements dropped whole: forms (comment, search, newsletter), navigation, page furniture.
# (A <header> goes only when it does not hold the headline: an article's own header may carry
# its standfirst; see `clean_page`.)
DROPPED_TAGS = ("script", "style", "noscript", "template", "iframe", "svg", "form", "nav",
                "footer", "aside", "button", "select", "textarea", "input", "label",
                "figcaption")

# A heading with one of these texts opens a block that is not the article (comments, the
# site's related links, widgets): the heading and what follows it in its container go.
BOILERPLATE_HEADINGS = re.compile(
    r"^(you (may|might) (also )?like|related( posts| articles| stories| news| reading)?"
    r"|more (from|in|on|stories)\b.*|read (more|next|also)|recommended( for you)?"
    r"|most (read|popular|viewed|shared)|popular( posts)?|recent( posts| articles)?"
    r"|latest( news| posts| stories)?|trending( now)?|(leave|post|add|write) a (comment|reply)"
    r"|\d+ (comments?|responses?|replies|thoughts)( (on|to)\b.*)?|comments?( \(\d+\))?"
    r"|share( this)?( article| story| post)?|about the author|tags|categories|archives"
    r"|(sign up|subscribe)\b.*|.*\bnewsletter\b.*|we value your privacy"
    r"|privacy (& |and )?cookies?( policy)?)$", re.IGNORECASE)

# Short blocks whose text is one of these is page furniture wherever it sits. Anchored
# patterns (`^...$`) describe the whole block; the others may appear anywhere in it.
BOILERPLATE_TEXT = [
    re.compile(p, re.IGNORECASE) for p in (
        # bylines and post meta ("by admin", "Posted on March 3, 2025 by admin")
        r"^(by|written by|posted by)\s[^.!?]{1,80}$",
        r"^(posted|published|updated) (on|in)\b[^.!?]{0,80}$",
        r"\bwritten by\b", r"^(filed under|posted in|tags?:|categories:)",
        r"^\d+ min(ute)? read$",
        # breadcrumbs ("Home » World » ...")
        r"^home\s*[»›>/|]",
        # in-body related links ("See also <a>...</a>")
        r"^(see also|read also|also read|read more|related)\b[^.!?]{0,200}$",
        # comment forms and lists
        r"save my name, email,? and website", r"uses akismet to reduce spam",
        r"your email address will not be published", r"required fields are marked",
        r"^(leave a (comment|reply)|no comments( yet)?\.?|cancel reply|reply)$",
        r"\b\d+ (thoughts|responses|comments|replies) (on|to)\b",
        # share bars, adverts, newsletters
        r"^share( this)?( article| story| post)?:?\b", r"^advertisement$",
        r"\bunsubscribe at any time\b", r"\b(subscribe to|sign up (for|to)) our\b",
        r"\bin your inbox\b",
        # cookie and consent banners
        r"\b(this (web)?site uses cookies|we use cookies|(such as|technologies like) cookies)\b",
        r"\bcookies\b[^.]{0,80}\b(your |the )?(device|browser)\b",
        r"\bcookies? (policy|settings|preferences|consent)\b", r"\b(accept|reject) all\b",
        r"\bwe value your privacy\b", r"^privacy (& |and )?cookies?( policy)?$",
        r"^skip to (the )?(main )?content$",
        r"\bproudly powered by\b", r"^designed with\b", r"\ball rights reserved\b",
    )]
# A block of more words than this is prose, whatever phrase it contains.
MAX_BOILERPLATE_WORDS = 60
# A block whose text is mostly link text (a list of headlines, a tag cloud) is navigation.
LINK_DENSITY = 0.75
MIN_LINKS = 2
# A form's container goes with it (the "Leave a Comment" heading and the Akismet line around a
# comment form, the pitch around a newsletter form) unless it holds this many other words.
FORM_CONTAINER_WORDS = 40
# A block this short that names the site, or opens with a writer's name, is about the site.
SELF_REFERENCE_WORDS = 40

_SPACE = re.compile(r"\s+")
_BLOCKS = ("p", "div", "section", "span", "li", "ul", "ol", "small", "dl", "dd", "dt",
           "table", "tr", "td", "h1", "h2", "h3", "h4", "h5", "h6", "header", "strong", "em",
           "b", "i", "a", "article", "blockquote")
_KEEP = ("html", "body", "main")


def _text(element: HtmlElement) -> str:
    return _SPACE.sub(" ", element.text_content()).strip()


def _words(text: str) -> int:
    return len(text.split())


def is_boilerplate_text(text: str) -> bool:
    """Whether a short block's text is page furniture (a byline, a comment-form line, a cookie
    notice...) rather than article prose."""
    text = _SPACE.sub(" ", text).strip()
    if not text or _words(text) > MAX_BOILERPLATE_WORDS:
        return False
    return any(pattern.search(text) for pattern in BOILERPLATE_TEXT)


def _remove(element: HtmlElement) -> None:
    """Drop an element but keep its tail (the text after it belongs to its parent)."""
    parent = element.getparent()
    if parent is not None:
        element.drop_tree()


def _drop_boilerplate_headings(tree: HtmlElement) -> None:
    for heading in list(tree.iter("h1", "h2", "h3", "h4", "h5", "h6")):
        if heading.getparent() is None or not BOILERPLATE_HEADINGS.match(_text(heading)):
            continue
        container = heading.getparent()
        # A heading that opens its container (a widget, the comments block): the container.
        if container.tag not in _KEEP and container.index(heading) == 0 and \
                not (container.text or "").strip():
            _remove(container)
            continue
        for sibling in list(heading.itersiblings()):
            _remove(sibling)
        _remove(heading)


def _drop_form_containers(tree: HtmlElement) -> None:
    """Forms, and fields outside any form (a newsletter box wired up by script), with the
    block around them unless it holds more than a little other text."""
    fields = [f for f in tree.iter("input", "textarea", "select")
              if not any(a.tag == "form" for a in f.iterancestors())]
    for form in list(tree.iter("form")) + fields:
        if form.getparent() is None:
            continue  # already gone with an earlier one
        container = form.getparent()
        while container is not None and container.tag not in _KEEP:
            other = _words(_text(container)) - _words(_text(form))
            if other > FORM_CONTAINER_WORDS:
                break
            form, container = container, container.getparent()
        _remove(form)


def _link_text_share(element: HtmlElement) -> tuple[float, int]:
    total = len(_text(element))
    links = element.findall(".//a")
    if element.tag == "a":
        links.append(element)
    linked = sum(len(_text(a)) for a in links)
    return (linked / total if total else 0.0), len(links)


def _drop_link_lists(tree: HtmlElement) -> None:
    for element in list(tree.iter("ul", "ol", "div", "section", "table", "dl", "p")):
        if element.getparent() is None or element.tag in _KEEP:
            continue
        share, count = _link_text_share(element)
        if count >= MIN_LINKS and share >= LINK_DENSITY:
            _remove(element)


def _drop_boilerplate_blocks(tree: HtmlElement) -> None:
    # Innermost first: the smallest block that holds the phrase goes, then any container left
    # with nothing but a few words around it (the "Accept" and "Read More" of a cookie bar).
    # Repeated until nothing matches: a block that held a smaller match ("Read More" inside
    # the cookie notice) is looked at again once that match is gone.
    while matches := [el for el in tree.iter(*_BLOCKS)
                      if is_boilerplate_text(_text(el))
                      and not any(is_boilerplate_text(_text(child))
                                  for child in el.iter(*_BLOCKS) if child is not el)]:
        for element in matches:
            parent = element.getparent()
            if parent is None:
                continue  # already gone with an ancestor
            _remove(element)
            while parent is not None and parent.tag not in _KEEP and _is_leftover(parent):
                grandparent = parent.getparent()
                _remove(parent)
                parent = grandparent


def _is_leftover(element: HtmlElement) -> bool:
    """What remains of a block once its boilerplate went: a few words ("Accept", "Read
    More"), or only a link (the headline after "See also")."""
    if _words(_text(element)) <= 3:
        return True
    share, count = _link_text_share(element)
    return count >= 1 and share >= LINK_DENSITY


def _drop_self_references(tree: HtmlElement, site_names: list[str], authors: list[str]
                          ) -> None:
    """Short blocks that speak about the site or its writers: an author's bio ("Staff
    Reporter covers local news...") opens with the byline's name; a pitch or copyright line
    names the site."""
    sites = [n.casefold() for n in site_names if n]
    writers = [n.casefold() for n in authors if n]
    for element in list(tree.iter("p", "div", "section", "li", "span", "small")):
        if element.getparent() is None:
            continue
        text = _text(element).casefold()
        if not text or _words(text) > SELF_REFERENCE_WORDS:
            continue
        if any(text.startswith(w) for w in writers) or any(s in text for s in sites):
            _remove(element)


def clean_page(tree: HtmlElement, site_names: list[str] | None = None,
               authors: list[str] | None = None) -> HtmlElement:
    """A copy of the page without what is never the article, by tag and text alone (so it works
    with or without class/id attributes): forms and their containers, navigation, footers,
    asides, headed blocks such as comments and "You may also like", bylines, breadcrumbs,
    cookie banners, share bars, link lists, and short blocks about the site or its writers."""
    tree = deepcopy(tree)
    _drop_form_containers(tree)
    for element in list(tree.iter(*DROPPED_TAGS)):
        _remove(element)
    for header in list(tree.iter("header")):
        if header.find(".//h1") is None:
            _remove(header)
    _drop_boilerplate_headings(tree)
    _drop_boilerplate_blocks(tree)
    _drop_link_lists(tree)
    _drop_self_references(tree, site_names or [], authors or [])
    return tree


# --- Metadata -------------------------------------------------------------------------------

_TITLE_SEPARATOR = re.compile(r"\s+[|–—·:-]\s+")


def _meta(tree: HtmlElement, *names: str) -> str | None:
    """The first non-empty <meta property|name|itemprop=...> content among `names`."""
    for name in names:
        for attribute in ("property", "name", "itemprop"):
            for element in tree.xpath(f"//meta[@{attribute}=$name]", name=name):
                content = _SPACE.sub(" ", element.get("content") or "").strip()
                if content:
                    return content
    return None


def _json_ld(tree: HtmlElement) -> list[dict[str, Any]]:
    """The schema.org objects of the page's JSON-LD blocks (also inside "@graph" lists)."""
    objects: list[dict[str, Any]] = []
    for script in tree.xpath('//script[@type="application/ld+json"]'):
        try:
            data = json.loads(script.text or "")
        except (json.JSONDecodeError, RecursionError):
            continue
        stack = data if isinstance(data, list) else [data]
        while stack:
            item = stack.pop(0)
            if isinstance(item, dict):
                objects.append(item)
                graph = item.get("@graph")
                if isinstance(graph, list):
                    stack.extend(graph)
    return objects


def _ld_value(objects: list[dict[str, Any]], key: str) -> Any:
    for item in objects:
        value = item.get(key)
        if value not in (None, "", []):
            return value
    return None


def _site_names(tree: HtmlElement, objects: list[dict[str, Any]]) -> list[str]:
    names = [_meta(tree, "og:site_name", "application-name")]
    publisher = _ld_value(objects, "publisher")
    if isinstance(publisher, dict):
        names.append(publisher.get("name"))
    return [n for n in names if isinstance(n, str) and n]


def page_title(tree: HtmlElement, site_names: list[str]) -> str | None:
    """og:title, else <title>, else the <h1>, without a " | Site" suffix."""
    h1 = next((t for t in (_text(e) for e in tree.iter("h1")) if t), None)
    title_element = tree.find(".//title")
    for candidate in (_meta(tree, "og:title", "twitter:title"),
                      _text(title_element) if title_element is not None else None, h1):
        if candidate:
            return _without_site_suffix(candidate, site_names, h1)
    return None


def _without_site_suffix(title: str, site_names: list[str], h1: str | None) -> str:
    """Cut the part after the last separator while it is the site's name, or what precedes it
    is the page's <h1>, or the separator is "|" (which headlines do not use)."""
    names = {n.casefold() for n in site_names}
    while separators := list(_TITLE_SEPARATOR.finditer(title)):
        last = separators[-1]
        head, tail = title[:last.start()].strip(), title[last.end():].strip()
        if tail.casefold() in names or head == h1 or last.group().strip() == "|":
            title = head
        else:
            break
    return title


def page_published_at(tree: HtmlElement, objects: list[dict[str, Any]]) -> str | None:
    """The publication time the page declares: article:published_time (and the other usual
    meta names), JSON-LD datePublished, then the first <time datetime> in the headline's
    block (the nearest ancestor of the <h1> that has one), then any <time datetime>."""
    declared = _meta(tree, "article:published_time", "og:published_time", "datePublished",
                     "date", "dc.date", "DC.date.issued", "pubdate")
    if declared:
        return declared
    ld = _ld_value(objects, "datePublished")
    if isinstance(ld, str):
        return ld
    h1 = tree.find(".//h1")
    ancestor = h1.getparent() if h1 is not None else None
    while ancestor is not None:
        times = ancestor.xpath(".//time[@datetime]")
        if times:
            return str(times[0].get("datetime"))
        ancestor = ancestor.getparent()
    times = tree.xpath("//time[@datetime]")
    return str(times[0].get("datetime")) if times else None


def page_language(tree: HtmlElement) -> str | None:
    """The primary subtag of <html lang> ("en-US" -> "en"): the slots compare languages, and a
    region is not one."""
    lang = tree.get("lang") or tree.get("{http://www.w3.org/XML/1998/namespace}lang") or \
        _meta(tree, "og:locale") or ""
    primary = re.split(r"[-_]", lang.strip(), maxsplit=1)[0].lower()
    return primary if re.fullmatch(r"[a-z]{2,3}", primary) else None


def page_url(tree: HtmlElement) -> str | None:
    for link in tree.xpath("//link[@href]"):
        if "canonical" in (link.get("rel") or "").lower().split():
            return str(link.get("href")).strip() or None
    return _meta(tree, "og:url")


def id_for(url: str | None, name: str) -> str:
    """The article id of a page: its canonical URL's path, without slashes at either end and
    without a final "index.html" ("https://site/2025/03/03/ferry-strike/" ->
    "2025/03/03/ferry-strike"), else `name` (the file's path in the folder read, without
    ".html"). Both stay the same from one export to the next."""
    if url:
        try:
            path = urlsplit(url).path
        except ValueError:
            path = ""
        path = re.sub(r"(^|/)index\.html?$", "", path.strip("/")).strip("/")
        path = re.sub(r"\.html?$", "", path)
        if path:
            return path
    return name


def _as_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [t.strip() for t in value.split(",") if t.strip()]
    if isinstance(value, list):
        return [t.strip() for t in value if isinstance(t, str) and t.strip()]
    return []


# --- The page -------------------------------------------------------------------------------

def main_text(tree: HtmlElement, title: str | None = None, site_names: list[str] | None = None,
              authors: list[str] | None = None, labels: list[str] | None = None) -> str:
    """The article's text, paragraphs separated by blank lines: trafilatura over the cleaned
    page, each paragraph checked once more against the boilerplate patterns, and the headline
    and the page's own labels (a section kicker, a tag) left out: the record has them."""
    cleaned = clean_page(tree, site_names, authors)
    text = trafilatura.extract(cleaned, include_comments=False, include_tables=False,
                               include_images=False, deduplicate=False) or ""
    known = {t.casefold() for t in [title or "", *(labels or [])] if t}
    kept = []
    for paragraph in text.splitlines():
        paragraph = _SPACE.sub(" ", paragraph).strip()
        if paragraph and paragraph.casefold().lstrip("#") not in known and \
                not is_boilerplate_text(paragraph):
            kept.append(paragraph)
    return "\n\n".join(kept)


def _authors(tree: HtmlElement, objects: list[dict[str, Any]], fallback: str | None
             ) -> list[str]:
    names = [_meta(tree, "author", "article:author"), fallback]
    ld = _ld_value(objects, "author")
    for item in ld if isinstance(ld, list) else [ld]:
        names.append(item.get("name") if isinstance(item, dict) else item)
    return [n for n in names if isinstance(n, str) and n and "://" not in n]


def read_page(content: bytes | str, name: str) -> dict[str, Any]:
    """One saved page -> an article record (the JSON input's fields). `name` is the id when
    the page has no canonical URL. Raises ValueError when the page has no main text."""
    try:
        tree = trafilatura.load_html(content)
    except (ParserError, ValueError):
        tree = None
    if tree is None:
        raise ValueError("not an HTML page (nothing could be parsed)")
    objects = _json_ld(tree)
    found = trafilatura.extract_metadata(tree)  # fallbacks: htmldate's date, rel=tag links...
    site_names = _site_names(tree, objects) + ([found.sitename] if found.sitename else [])
    title = page_title(tree, site_names) or found.title
    section = _meta(tree, "article:section") or _ld_value(objects, "articleSection") or \
        next(iter(found.categories or []), None)
    tags = _as_list(_meta(tree, "article:tag", "keywords") or _ld_value(objects, "keywords")) \
        or _rel_tags(tree) or list(found.tags or [])
    body = main_text(tree, title, site_names, _authors(tree, objects, found.author),
                     [s for s in [section, *tags] if isinstance(s, str)])
    if not body:
        raise ValueError("no main text found in the page (is it an article page?)")
    url = page_url(tree) or found.url
    record: dict[str, Any] = {
        "id": id_for(url, name), "title": title, "body": body, "url": url,
        "published_at": page_published_at(tree, objects) or found.date,
        "language": page_language(tree), "section": section, "tags": tags,
    }
    return {k: v for k, v in record.items() if v not in (None, "", [])}


def _rel_tags(tree: HtmlElement) -> list[str]:
    """WordPress marks tag links rel="tag" (and category links rel="category tag")."""
    return [_text(a).lstrip("#") for a in tree.xpath("//a[@rel]")
            if "tag" in a.get("rel", "").split() and "category" not in a.get("rel", "").split()
            and _text(a).lstrip("#")]

