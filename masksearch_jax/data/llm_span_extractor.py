"""Salient spans chosen by an LLM, as MaskSearch's generator chooses them.

MaskSearch (src/RAMP/gen_qa.py) asks a chat model for the "knowledge entities" of a
paragraph and reads its reply as a list. `LLMSpanExtractor` does the same through any
`LLMBackend` (an OpenAI-compatible server, set in Gin), with instructions written after
MaskSearch's and a request for a JSON list of strings copied from the text. The reply
is parsed leniently (a fenced block, prose around the list, objects with a "text" or
"entity" field, a Python-style list); only items found verbatim, as whole words, in the
paragraph become spans, kinded by the rule-based extractor's rules.

A reply that cannot be used (no list in it, a timeout, an HTTP or connection error) is
counted in `stats` and gives None for that paragraph; it never raises out of
`extract_many`, so one bad request cannot stop a run.
"""

from __future__ import annotations

import ast
import json
import logging
import re
import threading
from typing import Any, Sequence

import gin

from masksearch_jax.agent.llm_backends import (LLMBackend, LLMConnectionError, LLMError, LLMHTTPError,
                                               LLMReplyError, LLMTimeoutError)
from masksearch_jax.data.salient_spans import span_kind
from masksearch_jax.data.spans import Span

logger = logging.getLogger(__name__)

SYSTEM_PROMPT = "You are a helpful assistant."

# MaskSearch's extraction instructions (its English prompt) in our words, plus an exact-copy
# and JSON-output rule so the reply can be located in the text and parsed.
EXTRACTION_PROMPT = """\
Extract the knowledge entities of the paragraph below (more than 5 if it has that many). Knowledge \
entities are specific people, places, organisations, works, events, conferences and journals, \
dates, short technical terms and distinctive numbers: things a reader would have to look up with a \
search engine to know.
Rules:
- Copy every entity exactly as it is written in the paragraph, as whole words ("American", never \
"America" cut out of "American").
- When entities run together or are nested, give the finest-grained one.
- Leave out entities that occur more than once in the paragraph, and the paragraph's title.
- Leave out anything that can be inferred from the rest of the paragraph without searching.
- Keep each entity short: a name, a date, a number with its unit.
Answer with a JSON list of strings and nothing else.

Example
Paragraph: The Orlen Bridge over the Vistra River was opened on 12 June 1931 by the mayor Hana \
Kestrel. It is 412 metres long and was designed by the Norvik Engineering Company.
Entities: ["Orlen Bridge", "Vistra River", "12 June 1931", "Hana Kestrel", "412 metres", \
"Norvik Engineering Company"]

{title_line}Paragraph: {paragraph}
Entities:"""

# Fields of an object item that may hold the entity's text, in order of preference.
_ITEM_FIELDS = ("text", "entity", "span", "name", "value")
_FENCE_RE = re.compile(r"```[ \t]*(?:json|JSON|python)?[ \t]*\n?(.*?)```", re.DOTALL)

# Which counter an error goes to; any other LLMError (a bad URL, ...) counts as an HTTP error.
_ERROR_COUNTERS = ((LLMTimeoutError, "timeouts"), (LLMConnectionError, "connection_errors"),
                   (LLMHTTPError, "http_errors"), (LLMReplyError, "malformed"))

STAT_KEYS = ("requests", "ok", "malformed", "http_errors", "timeouts", "connection_errors", "spans",
             "not_found")


def extraction_messages(paragraph: str, title: str | None = None) -> list[dict[str, str]]:
  """The chat messages that ask for the entities of `paragraph`.

  Args:
    paragraph: The paragraph.
    title: Its page title (named in the prompt so the model leaves it out), or None.
  """
  title_line = f"Title: {title}\n" if title else ""
  return [{"role": "system", "content": SYSTEM_PROMPT},
          {"role": "user", "content": EXTRACTION_PROMPT.format(title_line=title_line, paragraph=paragraph)}]


def _items_of(value: Any) -> list[str] | None:
  """The entity strings of a decoded reply, or None if it holds no list."""
  if isinstance(value, dict):
    lists = [v for v in value.values() if isinstance(v, list)]
    if not lists:
      return None
    value = lists[0]
  if not isinstance(value, list):
    return None
  items = []
  for item in value:
    if isinstance(item, dict):
      item = next((item[k] for k in _ITEM_FIELDS if isinstance(item.get(k), (str, int, float))), None)
    if isinstance(item, bool) or item is None:
      continue
    if isinstance(item, (int, float)):
      item = str(item)
    if isinstance(item, str):
      items.append(item)
  return items


def _decode_first_list(text: str) -> list[str] | None:
  """The first JSON (or Python-literal) list, or object holding a list, found in `text`."""
  text = text.strip()
  decoder = json.JSONDecoder()
  # The whole text first (a bare list or object), then every bracket inside prose.
  starts = [0] + [m.start() for m in re.finditer(r"[\[{]", text) if m.start()]
  for start in starts:
    try:
      value, _ = decoder.raw_decode(text, start)
    except ValueError:
      # Python-style lists (single quotes), as MaskSearch's generator read them with eval.
      close = text.find("]", start)
      if not text.startswith("[", start) or close < 0:
        continue
      try:
        value = ast.literal_eval(text[start:close + 1])
      except (ValueError, SyntaxError, MemoryError, RecursionError):
        continue
    items = _items_of(value)
    if items is not None:
      return items
  return None


def parse_entity_list(reply: str) -> list[str] | None:
  """The entity strings of an LLM's reply, or None if it holds no list.

  Understands a bare JSON list, a list inside a ```json fenced block or surrounded by
  prose, an object holding a list ({"entities": [...]}), items that are objects with a
  "text", "entity", "span", "name" or "value" field, numbers, and Python-style lists.

  Args:
    reply: The reply text.
  """
  for block in _FENCE_RE.findall(reply):
    items = _decode_first_list(block)
    if items is not None:
      return items
  return _decode_first_list(reply)


def _is_word_boundary(text: str, start: int, end: int) -> bool:
  before = text[start - 1] if start else " "
  after = text[end] if end < len(text) else " "
  return not ((text[start].isalnum() and (before.isalnum() or before == "_")) or
              (text[end - 1].isalnum() and (after.isalnum() or after == "_")))


def locate_spans(paragraph: str, items: Sequence[str], max_spans: int | None = None) -> tuple[list[Span], int]:
  """Places entity strings in the paragraph; returns the spans (by position) and the misses.

  Longer items are placed first, each at its first whole-word occurrence that overlaps
  no span placed before; an item with no such occurrence is a miss. Kinds follow the
  rule-based extractor's rules (`salient_spans.span_kind`).

  Args:
    paragraph: The paragraph.
    items: Entity strings, in the reply's order (repeats are ignored).
    max_spans: Keep the spans of at most this many items, the first in reply order.
  """
  unique = list(dict.fromkeys(item.strip() for item in items))
  unique = [item for item in unique if item]
  taken = bytearray(len(paragraph) + 1)
  placed: dict[str, tuple[int, int]] = {}
  for item in sorted(unique, key=len, reverse=True):
    pos = paragraph.find(item)
    while pos >= 0:
      end = pos + len(item)
      if _is_word_boundary(paragraph, pos, end) and taken.find(1, pos, end) == -1:
        taken[pos:end] = b"\x01" * len(item)
        placed[item] = (pos, end)
        break
      pos = paragraph.find(item, pos + 1)
  kept = [item for item in unique if item in placed]
  if max_spans is not None:
    kept = kept[:max_spans]
  spans = sorted(Span(*placed[item], item, span_kind(item)) for item in kept)
  return spans, len(unique) - len(placed)


@gin.configurable(module="masksearch_jax.data.llm_span_extractor")
class LLMSpanExtractor:
  """Asks a chat LLM for the salient spans of paragraphs.

  Args:
    backend: The chat model, e.g. `@OpenAICompatibleBackend()` in Gin.
    max_spans: Most spans kept per paragraph (the first in the reply's order).
    max_tokens: Most tokens of a reply.
    temperature: Sampling temperature of the requests (0 for reproducible spans).

  Attributes:
    stats: Counters since the extractor was made: `requests` (paragraphs sent), `ok`
      (usable replies), `malformed` (no list in the reply, or no message in the answer),
      `http_errors`, `timeouts`, `connection_errors`, `spans` (spans returned) and
      `not_found` (items not found verbatim in their paragraph).
  """

  def __init__(self, backend: LLMBackend, *, max_spans: int = 20, max_tokens: int = 512,
               temperature: float = 0.0):
    if max_spans < 1:
      raise ValueError(f"max_spans must be >= 1, got {max_spans}")
    self.backend = backend
    self.max_spans = max_spans
    self.max_tokens = max_tokens
    self.temperature = temperature
    self.stats: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)
    self._lock = threading.Lock()

  def _count(self, key: str, n: int = 1) -> None:
    with self._lock:
      self.stats[key] += n

  def _result(self, paragraph: str, reply: str | LLMError) -> list[Span] | None:
    """Spans from one reply (or error), counting what happened."""
    if isinstance(reply, LLMError):
      key = next((k for cls, k in _ERROR_COUNTERS if isinstance(reply, cls)), "http_errors")
      self._count(key)
      logger.warning("span extraction request failed (%s): %s", key, reply)
      return None
    items = parse_entity_list(reply)
    if items is None:
      self._count("malformed")
      logger.warning("span extraction reply holds no list: %r", reply[:200])
      return None
    spans, missing = locate_spans(paragraph, items, self.max_spans)
    with self._lock:
      self.stats["ok"] += 1
      self.stats["spans"] += len(spans)
      self.stats["not_found"] += missing
    return spans

  def _kwargs(self) -> dict[str, Any]:
    return {"max_tokens": self.max_tokens, "temperature": self.temperature}

  def extract(self, text: str, title: str | None = None) -> list[Span] | None:
    """The salient spans of one paragraph, sorted; None when the reply was unusable.

    Args:
      text: The paragraph.
      title: Its page title, named in the prompt so the model leaves it out; or None.
    """
    if not text.strip():
      return []
    self._count("requests")
    try:
      reply: str | LLMError = self.backend.chat(extraction_messages(text, title), **self._kwargs())
    except LLMError as e:
      reply = e
    return self._result(text, reply)

  def extract_many(self, paragraphs: Sequence[str], titles: Sequence[str | None] | None = None
                   ) -> list[list[Span] | None]:
    """The salient spans of many paragraphs, asked with `backend.batch_chat`.

    Args:
      paragraphs: The paragraphs.
      titles: Their page titles (same length), or None.

    Returns:
      One entry per paragraph: its sorted spans, or None when its reply was unusable.
    """
    paragraphs = list(paragraphs)
    titles = list(titles) if titles is not None else [None] * len(paragraphs)
    if len(titles) != len(paragraphs):
      raise ValueError(f"{len(paragraphs)} paragraphs but {len(titles)} titles")
    results: list[list[Span] | None] = [[] for _ in paragraphs]
    asked = [i for i, text in enumerate(paragraphs) if text.strip()]
    if not asked:
      return results
    self._count("requests", len(asked))
    replies = self.backend.batch_chat([extraction_messages(paragraphs[i], titles[i]) for i in asked],
                                      **self._kwargs())
    if len(replies) != len(asked):
      raise RuntimeError(f"{type(self.backend).__name__}.batch_chat returned {len(replies)} replies "
                         f"for {len(asked)} conversations")
    for i, reply in zip(asked, replies):
      results[i] = self._result(paragraphs[i], reply)
    return results
