"""Tests of masksearch_jax.data.names."""

from __future__ import annotations

import random

import pytest

from masksearch_jax.data import names


def test_syllables_are_consonant_vowel_pairs_and_distinct():
  assert len(names.SYLLABLES) == len(set(names.SYLLABLES)) == len(names.CONSONANTS) * len(names.VOWELS)
  assert all(s[0] in names.CONSONANTS and s[1] in names.VOWELS for s in names.SYLLABLES)


def test_every_word_splits_into_syllables_one_way():
  factory = names.NameFactory(random.Random(0))
  for _ in range(2000):
    word = factory.word()
    pieces = names.split_syllables(word)
    assert "".join(pieces) == word.lower()
    assert all(p in names.SYLLABLES for p in pieces)
    assert 2 <= len(pieces)


@pytest.mark.parametrize("bad", ["Kal", "Abba", "Kaa", "Xo", "Kalo1"])
def test_split_rejects_words_not_built_from_syllables(bad):
  with pytest.raises(ValueError, match="syllables"):
    names.split_syllables(bad)


def test_words_are_unique_even_when_short_lengths_are_exhausted():
  factory = names.NameFactory(random.Random(1))
  words = [factory.word() for _ in range(30_000)]  # More than the 5,625 two-syllable words.
  assert len(set(words)) == len(words)
  assert len(factory) == len(words)


def test_reserved_words_are_never_handed_out():
  # Reserve every two-syllable word but one: the factory must find that one or go longer.
  reserved = {a + b for a in names.SYLLABLES for b in names.SYLLABLES} - {"kalo"}
  factory = names.NameFactory(random.Random(2), reserved)
  words = {factory.word().lower() for _ in range(500)}
  assert not words & reserved


def test_same_seed_same_words():
  a = names.NameFactory(random.Random(7))
  b = names.NameFactory(random.Random(7))
  assert [a.word() for _ in range(100)] == [b.word() for _ in range(100)]
