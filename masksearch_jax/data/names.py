"""Invented names built from a fixed syllable inventory.

Every name word is a run of consonant-vowel syllables drawn uniformly from
`SYLLABLES`. Because each syllable is exactly one consonant followed by one
vowel, any name splits into syllables in exactly one way, so a tokenizer that
knows the syllables copies an unseen name token for token. Drawing syllables
uniformly keeps a learned tokenizer from merging frequent pairs into pieces
that only some names use.

`NameFactory` hands out name words that are unique within a world and never
equal an English word of the page templates, so no two entities share a name
part and no name collides with common text under BM25.
"""

from __future__ import annotations

import random

CONSONANTS = "bdfghklmnprstvz"
VOWELS = "aeiou"
SYLLABLES: tuple[str, ...] = tuple(c + v for c in CONSONANTS for v in VOWELS)

# Syllable counts of a name word and how often each is drawn. Longer words are
# used once a length's space is crowded (large worlds).
_LENGTH_WEIGHTS = ((2, 0.15), (3, 0.6), (4, 0.25))
_MAX_TRIES_PER_LENGTH = 12


def split_syllables(word: str) -> list[str]:
  """Splits a name word into its syllables; raises ValueError if it is not one."""
  lower = word.lower()
  if len(lower) % 2:
    raise ValueError(f"{word!r} is not made of consonant-vowel syllables")
  pieces = [lower[i:i + 2] for i in range(0, len(lower), 2)]
  for piece in pieces:
    if piece[0] not in CONSONANTS or piece[1] not in VOWELS:
      raise ValueError(f"{word!r} is not made of consonant-vowel syllables")
  return pieces


class NameFactory:
  """Draws capitalised name words, each unique within one factory.

  Args:
    rng: The world's random generator (names are part of the seeded world).
    reserved: Lower-case words never to hand out (the template vocabulary).
  """

  def __init__(self, rng: random.Random, reserved: set[str] | frozenset[str] = frozenset()):
    self._rng = rng
    self._used: set[str] = set(w.lower() for w in reserved)
    self._lengths = [n for n, _ in _LENGTH_WEIGHTS]
    self._weights = [w for _, w in _LENGTH_WEIGHTS]

  def word(self) -> str:
    """Returns a new capitalised name word such as 'Kalomi'."""
    rng = self._rng
    length = rng.choices(self._lengths, self._weights)[0]
    while True:
      for _ in range(_MAX_TRIES_PER_LENGTH):
        word = "".join(rng.choices(SYLLABLES, k=length))
        if word not in self._used:
          self._used.add(word)
          return word.capitalize()
      length += 1  # This length is crowded: move to a longer, emptier one.

  def __len__(self) -> int:
    return len(self._used)
