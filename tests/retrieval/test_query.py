"""normalize_query / query_terms: any text becomes a safe query."""

from __future__ import annotations

import random

import pytest
import tantivy

from masksearch_jax.retrieval.query import _ANALYZER, ENGLISH_STOPWORDS, normalize_query, query_terms, search_terms


@pytest.fixture(scope="module")
def empty_index() -> tantivy.Index:
  builder = tantivy.SchemaBuilder()
  builder.add_text_field("title", stored=True)
  builder.add_text_field("text", stored=True)
  return tantivy.Index(builder.build())


def _assert_safe(index: tantivy.Index, text: str) -> str:
  normalized = normalize_query(text)
  # Every word is a single token of the default tokenizer, so the parser can
  # only build term queries.
  assert _ANALYZER.analyze(normalized) == normalized.split()
  parsed = index.parse_query(normalized, ["title", "text"])
  assert "Phrase" not in repr(parsed)
  return normalized


def test_basic_normalization():
  assert normalize_query('Who was (Alice) SMITH? "Paris"') == "who was alice smith paris"
  assert normalize_query("title:Paris AND text:France") == "title paris and text france"
  assert normalize_query("[1 TO 5]") == "1 to 5"


def test_dedupes_in_first_seen_order():
  assert normalize_query("b a B c A b") == "b a c"
  assert query_terms("b a B c A b") == ["b", "a", "c"]


def test_max_terms_caps_distinct_terms():
  text = " ".join(f"w{i}" for i in range(10_000))
  assert query_terms(text) == [f"w{i}" for i in range(256)]
  assert query_terms(text, max_terms=3) == ["w0", "w1", "w2"]
  assert query_terms("a a a b", max_terms=1) == ["a"]


@pytest.mark.parametrize("text", ["", " ", "\t\n", "()[]{}", '"":^~*\\', "🎉🔥", "\x00\x01\x1b", "_"])
def test_no_searchable_term_gives_empty(text):
  assert normalize_query(text) == ""
  assert query_terms(text) == []


def test_matches_tantivy_default_tokenizer():
  # Underscores split (Python's \w would not), long tokens (>= 40 bytes) drop.
  assert query_terms("snake_case") == ["snake", "case"]
  assert query_terms("x" * 39 + " " + "y" * 40) == ["x" * 39]
  assert query_terms("é" * 19 + " " + "é" * 20) == ["é" * 19]  # é is 2 bytes in UTF-8.
  assert query_terms("Καλημέρα 東京") == ["καλημέρα", "東京"]


def test_lowercase_operators_are_plain_terms(empty_index):
  normalized = _assert_safe(empty_index, "AND OR NOT IN TO")
  assert normalized == "and or not in to"
  parsed = repr(empty_index.parse_query(normalized, ["title", "text"]))
  for word in normalized.split():
    assert f'"{word}"' in parsed


def test_dotted_capital_i_stays_parseable(empty_index):
  # 'İ' lowercases to 'i' + U+0307, which the tokenizer splits on.
  assert query_terms("İstanbul") == ["i\u0307stanbul"]
  assert normalize_query("İstanbul") == "i stanbul"
  _assert_safe(empty_index, "xİy İ")


def test_lone_surrogates_are_ignored():
  assert query_terms("ab\ud800cd \udfff") == ["ab", "cd"]


def test_rejects_non_strings():
  with pytest.raises(TypeError, match="must be a string"):
    normalize_query(None)  # type: ignore[arg-type]
  with pytest.raises(TypeError):
    query_terms(b"bytes")  # type: ignore[arg-type]


def test_nasty_queries_are_safe(empty_index, nasty_query):
  normalized = _assert_safe(empty_index, nasty_query)
  assert len(normalized.split()) <= 256


def test_random_unicode_is_safe(empty_index):
  rng = random.Random(1234)
  syntax = '()[]{}"\':^~*\\/+-!&|?<>=.,; _AaZz0İıßẞΣσς'
  for _ in range(3000):
    chars = []
    for _ in range(rng.randint(0, 30)):
      r = rng.random()
      if r < 0.3:
        chars.append(rng.choice(syntax))
      elif r < 0.8:
        chars.append(chr(rng.randint(0x20, 0xFFFF)))
      else:
        chars.append(chr(rng.randint(0x10000, 0x10FFFF)))
    _assert_safe(empty_index, "".join(chars))


def test_search_terms_drop_stopwords():
  assert search_terms("What is the capital of France?") == ["what", "capital", "france"]
  assert search_terms("What is the capital of France?", stopwords=frozenset()) == query_terms(
      "What is the capital of France?")
  assert "the" in ENGLISH_STOPWORDS and "who" not in ENGLISH_STOPWORDS


def test_search_terms_keep_an_all_stopword_query():
  assert search_terms("The Who") == ["who"]
  assert search_terms("It") == ["it"]
  assert search_terms("To be or not to be") == ["to", "be", "or", "not"]
  assert search_terms("") == []


def test_search_terms_cap_counts_only_kept_terms():
  text = "the of and " + " ".join(f"w{i}" for i in range(300))
  assert search_terms(text, max_terms=5) == ["w0", "w1", "w2", "w3", "w4"]
  assert search_terms("the a an", max_terms=2) == ["the", "a"]
