"""Turns any user text into a query Tantivy's parser always accepts.

Search agents write whatever they like between `<search>` tags: quotes, colons,
brackets, `AND`/`OR`, unbalanced parentheses, 10,000-character rants. Instead of
escaping Tantivy's query language we drop it entirely: the text is split into
the very tokens the index was built with (Tantivy's `default` analyzer: split on
non-alphanumerics, drop tokens of 40 bytes or more, lowercase), and the query is
those tokens joined by spaces. Lowercase tokens are never operators (`and`,
`or`, `not`, `in`, `to` are plain terms), and each token re-tokenizes to itself,
so the parser builds a plain disjunction of term queries, never a phrase.

`TantivyRetriever` skips the parser altogether and builds that disjunction from
`query_terms` directly: the terms are then exactly the indexed ones, even in the
rare case where lowercasing splits a token (Turkish dotted `İ` lowercases to `i`
plus a combining dot, which Tantivy's tokenizer would split on).
"""

from __future__ import annotations

import tantivy

DEFAULT_MAX_TERMS = 256

# Lucene's English stop words (EnglishAnalyzer.ENGLISH_STOP_WORDS_SET), which
# Anserini/Pyserini BM25 -- Search-R1's sparse retriever -- drops too. They
# barely move BM25 rankings (their idf is tiny) but their posting lists cover
# nearly every passage: on generated-world questions, dropping them made search
# about 3x faster with the same answer recall.
ENGLISH_STOPWORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then "
    "there these they this to was will with".split())

# Must match the `default` tokenizer the `title` and `text` fields are indexed
# with (tantivy/src/tokenizer/mod.rs: SimpleTokenizer, RemoveLongFilter(40),
# LowerCaser). Using Tantivy's own analyzer rather than a Python regex keeps the
# two in step for every script (Python's `\w` differs on `_` and combining marks).
_ANALYZER = (tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
             .filter(tantivy.Filter.remove_long(40))
             .filter(tantivy.Filter.lowercase())
             .build())


def query_terms(text: str, max_terms: int = DEFAULT_MAX_TERMS) -> list[str]:
  """Returns the distinct index terms of `text`, in order of first appearance.

  Args:
    text: Any string, including empty, huge, or full of query syntax.
    max_terms: Keep at most this many distinct terms (the first ones).

  Raises:
    TypeError: `text` is not a string.
  """
  if not isinstance(text, str):
    raise TypeError(f"a query must be a string, got {type(text).__name__}")
  try:
    tokens = _ANALYZER.analyze(text)
  except UnicodeEncodeError:
    # Lone surrogates (e.g. from a JSON "\ud800" escape) cannot cross into
    # Rust; they are not word characters anyway.
    tokens = _ANALYZER.analyze(text.encode("utf-8", "replace").decode("utf-8"))
  terms = list(dict.fromkeys(tokens))
  if len(terms) > max_terms:
    del terms[max_terms:]
  return terms


def normalize_query(text: str, max_terms: int = DEFAULT_MAX_TERMS) -> str:
  """Returns `text` as a safe Tantivy query: its distinct terms joined by spaces.

  The result is "" when `text` has no searchable term; callers then return no
  hits without searching. Every space-separated word of the result is one term
  of Tantivy's default tokenizer, so `Index.parse_query` never raises on it and
  never builds a phrase query.

  Args:
    text: Any string.
    max_terms: Keep at most this many distinct terms (the first ones).
  """
  terms = query_terms(text, max_terms)
  # A second pass splits the rare tokens that lowercasing made re-tokenizable.
  return " ".join(query_terms(" ".join(terms), max_terms))


def search_terms(text: str, max_terms: int = DEFAULT_MAX_TERMS,
                 stopwords: frozenset[str] | set[str] = ENGLISH_STOPWORDS) -> list[str]:
  """Returns the terms to search `text` with: `query_terms` minus stop words.

  A query made only of stop words ("The Who", "to be or not to be") keeps
  them all, so it still finds something.

  Args:
    text: Any string.
    max_terms: Keep at most this many terms (the first ones).
    stopwords: Terms to drop (lowercase); empty keeps every term.
  """
  if not stopwords:
    return query_terms(text, max_terms)
  # Distinct terms hold at most len(stopwords) stop words.
  terms = query_terms(text, max_terms + len(stopwords))
  kept = [term for term in terms if term not in stopwords]
  if not kept:
    return terms[:max_terms]
  del kept[max_terms:]
  return kept
