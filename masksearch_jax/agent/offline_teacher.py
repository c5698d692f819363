"""An offline teacher for the embedded world: SFT trajectories without an LLM endpoint.

MaskSearch writes its SFT data with an LLM pipeline (planner, rewriter, observer, judge;
`synthesis.py` here). A user without an endpoint still gets trajectories from this teacher,
which plays the same game by rules on the embedded world:

* **What it may know.** For a RAMP example it reads the masked paragraph the way a person
  who knows the encyclopedia's style would: the sentence around each `[mask]` says whose
  fact is hidden and which one ("He married [mask]." asks for the spouse of the page's
  subject). For a question it knows the chain of relations behind it (`Question.fact_ids`
  -> relations) and the names the question text gives. It never reads a value from the
  world's tables (fact objects, or the facts and mentions recorded on passages), nor the
  gold answer of the example: RAMP synthesis takes no world at all, and QA synthesis uses
  the world for relation names and topic names only.
* **How it searches.** Each hidden fact is a look-up ("the date of birth of Tabudo Muzu",
  or "who was born in Vitole on 3 May 1921"), searched with the phrasings MaskSearch's
  rewriter would write ("Tabudo Muzu date of birth", "When was Tabudo Muzu born?", the
  masked sentence itself ...), one per search turn, until a passage of the results answers
  it; at most `max_searches_per_lookup` searches each. A RAMP search never returns the
  masked paragraph's own passage (`retriever.search_excluding`).
* **How it reads.** Only from the passages shown to it (the top `top_k` of each search:
  titles and text, exactly what the observation shows). Each sentence is parsed with the
  page templates (`world_pages.TEMPLATES`: the corpus's public style, not its tables) into
  (subject, relation, value) readings; a pronoun subject is the page's title. A reading can
  be wrong (an ambiguous list, a parent of unknown gender, a guess among several
  candidates): the judge filters.
* **The judge.** Token-level recall (`text_metrics.token_recall`, the MaskSearch metric) of the answer
  against the gold must be 1: for QA against the answer and its aliases, for RAMP for every
  masked span (`ramp_recall`). Or an LLM judge (any object with
  `judge(question, gold, prediction) -> bool`, e.g. `synthesis.LLMJudge`).

Trajectories follow the project's format (`data.trajectories`): model segments
"<think> ... </think>\\n<search> q </search>", observations "\\n\\n<information>...
</information>\\n\\n", and a last model segment "<think> ... </think>\\n<answer> ... </answer>"
(the whole filled paragraph for RAMP). The think text is short and templated.

Entry points: `synthesize_ramp` and `synthesize_qa` yield (trajectory, accepted) pairs;
`synthesize_to_file` (what `masksearch synthesize` runs) writes the accepted ones with a
progress bar and returns a `SynthesisSummary`.
"""

from __future__ import annotations

import collections
import itertools
import dataclasses
import logging
import os
import random
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol, Sequence

import gin

from masksearch_jax.agent import protocol
from masksearch_jax.data import masking, salient_spans
from masksearch_jax.data.trajectories import MODEL, OBSERVATION, Segment, Trajectory
from masksearch_jax.data.world import BOOK_TITLE_PATTERNS, FILM_TITLE_PATTERNS
from masksearch_jax.data.world_pages import TEMPLATES
from masksearch_jax.data.world_questions import ASK, BRIDGE_COMPARISONS, COMPARISONS
from masksearch_jax.data.world_types import MONTHS, RELATIONS
from masksearch_jax.retrieval.retriever import Retriever, SearchHit, search_excluding
from masksearch_jax.text_metrics import normalize_answer, ramp_fills, ramp_recall, token_recall

logger = logging.getLogger(__name__)

TEACHER_NAME = "offline_teacher"
KINDS = ("ramp", "qa")
# Why a trajectory was dropped (`meta["drop_reason"]`; None when kept).
DROP_REASONS = ("judge", "unresolved", "max_turns", "judge_error")


# ---------------------------------------------------------------------------------------------
# The judge (its metric lives in `masksearch_jax.text_metrics`).


class Judge(Protocol):
  """An answer judge, such as `synthesis.LLMJudge`."""

  def judge(self, question: str, gold: str | Sequence[str], prediction: str) -> bool:
    """Whether `prediction` answers `question` as `gold` does."""


# ---------------------------------------------------------------------------------------------
# Reading: the page templates as a grammar.

# What each sentence kind states: (subject slot, relation, object slot). "parent" is the
# father or the mother, by the page subject's gender ("He had two children: ...").
SENTENCE_FACTS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "person_intro_dead": (("s", "date_of_birth", "dob"), ("s", "date_of_death", "dod"),
                          ("s", "place_of_birth", "pob"), ("s", "country_of_citizenship", "dem"),
                          ("s", "occupation", "occ")),
    "person_intro_alive": (("s", "date_of_birth", "dob"), ("s", "place_of_birth", "pob"),
                           ("s", "country_of_citizenship", "dem"), ("s", "occupation", "occ")),
    "person_parents": (("s", "father", "father"), ("s", "mother", "mother")),
    "person_spouse": (("s", "spouse", "spouse"), ("spouse", "spouse", "s")),
    "person_children": (("children", "parent", "s"),),
    "person_education": (("s", "educated_at", "org"),),
    "person_employer": (("s", "employer", "org"),),
    "person_directed": (("film", "director", "s"), ("film", "publication_date", "date"),
                        ("film", "duration", "dur")),
    "person_wrote": (("book", "author", "s"), ("book", "publication_year", "year"), ("book", "publisher", "pub"),
                     ("book", "pages", "pages")),
    "person_founded": (("org", "founded_by", "s"), ("org", "founded", "year")),
    "person_climbed": (("mtn", "first_ascended_by", "s"), ("mtn", "first_ascent", "year")),
    "city_intro": (("s", "country", "country"), ("s", "population", "pop")),
    "city_history": (("s", "inception", "year"), ("s", "area", "area")),
    "city_capital": (("country", "capital", "s"), ("country", "country_population", "kpop"),
                     ("country", "country_area", "karea"), ("country", "independence", "kdate")),
    "city_river": (("river", "flows_through", "s"), ("river", "length", "len")),
    "city_born_dead": (("p", "date_of_birth", "dob"), ("p", "date_of_death", "dod"), ("p", "place_of_birth", "s"),
                       ("p", "country_of_citizenship", "dem"), ("p", "occupation", "occ")),
    "city_born_alive": (("p", "date_of_birth", "dob"), ("p", "place_of_birth", "s"),
                        ("p", "country_of_citizenship", "dem"), ("p", "occupation", "occ")),
    "city_org": (("org", "founded", "year"), ("org", "founded_by", "founder"), ("org", "headquarters", "s"),
                 ("org", "employees", "emp")),
    "country_intro": (("s", "country_population", "pop"), ("s", "country_area", "area"), ("s", "capital", "capital")),
    "country_independence": (("s", "independence", "date"),),
    "country_city": (("city", "country", "s"), ("city", "population", "pop"), ("city", "inception", "year"),
                     ("city", "area", "area")),
    "country_mountain": (("mtn", "elevation", "elev"), ("mtn", "mountain_country", "s"),
                         ("mtn", "first_ascent", "year"), ("mtn", "first_ascended_by", "climber")),
    "org_intro": (("s", "founded", "year"), ("s", "founded_by", "founder"), ("s", "headquarters", "hq")),
    "org_staff": (("s", "employees", "emp"),),
    "org_employees": (("people", "employer", "s"),),
    "org_alumni": (("people", "educated_at", "s"),),
    "studio_films": (("films", "production_company", "s"),),
    "publisher_books": (("books", "publisher", "s"),),
    "film_intro": (("s", "director", "director"), ("s", "publication_date", "date"), ("s", "duration", "dur"),
                   ("s", "production_company", "studio")),
    "book_intro": (("s", "author", "author"), ("s", "publication_year", "year"), ("s", "publisher", "pub"),
                   ("s", "pages", "pages")),
    "river_intro": (("s", "length", "len"), ("s", "source", "mtn")),
    "river_cities": (("s", "flows_through", "cities"),),
    "mountain_intro": (("s", "elevation", "elev"), ("s", "mountain_country", "country")),
    "mountain_ascent": (("s", "first_ascent", "year"), ("s", "first_ascended_by", "climber")),
    "mountain_source": (("river", "source", "s"), ("river", "length", "len")),
}

PARENT = "parent"
_LIST_SLOTS = frozenset({"children", "people", "films", "books", "cities"})
_DATE_SLOTS = frozenset({"dob", "dod", "date", "kdate"})
_QUANTITY_SLOTS = frozenset({"pop", "area", "kpop", "karea", "len", "emp", "elev", "dur", "pages"})
_SUBJECT_SLOTS = frozenset({"s", "s_poss"})

# Slot values as text. A name is capitalised words, with the lower-case words of the world's
# film and book titles between them ("The Road to Doga", "Winter in Doga"); a list is names
# joined by ", " and " and ". Pronouns stand for the page's subject only.
_CONNECTORS = "|".join(sorted({w for p in FILM_TITLE_PATTERNS + BOOK_TITLE_PATTERNS
                               for w in re.findall(r"\b[a-z]+\b", p)} | {"of", "the"}))
_NAME = rf"[A-Z][a-z]*(?: (?:(?:{_CONNECTORS}) )*[A-Z][a-z]*)*"
_LIST = rf"{_NAME}(?:(?:, | and ){_NAME})*"
_PRONOUN_TEXT = r"He|She|His|Her|Its|The [a-z]+(?: [a-z]+)?"
_DATE = r"\d{1,2} [A-Z][a-z]+ \d{3,4}|[A-Z][a-z]+ \d{1,2}, \d{3,4}"
_YEAR = r"\d{3,4}"
_UNITS = "|".join(re.escape(u) for u in sorted(salient_spans.UNITS, key=len, reverse=True))
_QUANTITY = rf"\d{{1,3}}(?:,\d{{3}})*(?: (?:{_UNITS}))?"
_GRAMMAR = {"dem": r"[A-Z][a-z]+", "occ": r"[a-z]+(?: [a-z]+)*?", "child": r"son|daughter",
            "count": r"\w+ child(?:ren)?", "kind": r"[a-z]+(?: [a-z]+)*?"}
_MASK_RE = re.escape(protocol.MASK)
# A pronoun standing for the page's subject ("She", "His", "The city", "The film studio").
_PRONOUN = re.compile(_PRONOUN_TEXT)
_SLOT = re.compile(r"\{(\w+)\}")
# Titles with " and " inside ("X and Other Stories") are not two list items.
_AND_TITLES = "|".join(re.escape(p.split(" and ", 1)[1]) for p in FILM_TITLE_PATTERNS + BOOK_TITLE_PATTERNS
                       if " and " in p)
_LIST_SPLIT = re.compile(rf", | and (?!(?:{_AND_TITLES})\b)" if _AND_TITLES else ", | and ")
_SENTENCE_END = re.compile(r"(?<=\.) (?=[A-Z\[])")


def _slot_pattern(name: str, masked: bool) -> str:
  if name in _GRAMMAR:
    pattern = _GRAMMAR[name]
    # Demonyms are masked like names; occupations and grammar words are never masked.
    return f"{_MASK_RE}|{pattern}" if masked and name == "dem" else pattern
  if name in _LIST_SLOTS:
    if masked:  # A list may hold masks among its names.
      item = f"(?:{_MASK_RE}|{_NAME})"
      return f"{item}(?:(?:, | and ){item})*"
    return _LIST
  if name in _DATE_SLOTS:
    pattern = _DATE
  elif name == "year":
    pattern = _YEAR
  elif name in _QUANTITY_SLOTS:
    pattern = _QUANTITY
  elif name in _SUBJECT_SLOTS:
    pattern = f"{_PRONOUN_TEXT}|{_NAME}"
  else:
    pattern = _NAME
  return f"{_MASK_RE}|{pattern}" if masked else pattern


def _compile_template(template: str, masked: bool) -> re.Pattern:
  parts, pos = [], 0
  for match in _SLOT.finditer(template):
    parts.append(re.escape(template[pos:match.start()]))
    name = match.group(1)
    if name == "s_poss":
      parts.append(f"(?P<s>{_slot_pattern('s', masked)})(?:'s)?")
    else:
      parts.append(f"(?P<{name}>{_slot_pattern(name, masked)})")
    pos = match.end()
  parts.append(re.escape(template[pos:]))
  return re.compile("".join(parts))


_GRAMMAR_TEXT = {kind: tuple(_compile_template(t, False) for t in variants) for kind, variants in TEMPLATES.items()}
_GRAMMAR_MASKED = {kind: tuple(_compile_template(t, True) for t in variants) for kind, variants in TEMPLATES.items()}


def _kinds_of_relations() -> dict[str, tuple[str, ...]]:
  kinds: dict[str, dict[str, None]] = {}
  for kind, facts in SENTENCE_FACTS.items():
    for _, relation, _ in facts:
      kinds.setdefault(relation, {})[kind] = None
  return {relation: tuple(k) for relation, k in kinds.items()}


# The sentence kinds that state each relation.
_KINDS_OF_RELATION = _kinds_of_relations()


_STOP_WORDS = frozenset("a an and are as at be by for from has have in into is it its of on or that the their "
                        "to was were which who whose with".split())


def cue_words(relation: str, count: int = 4) -> list[str]:
  """Words the page templates use around a relation's value, most common first.

  Taken from the templates of the sentence kinds that state `relation` of the page's own
  subject ("was founded in {year}", "Founded in {year}", "dates from {year}" give
  "founded", "dates", ...). A rewriter adds them to a name to find the sentence.

  Args:
    relation: A key of `RELATIONS`, or "parent".
    count: Most words returned.
  """
  counts: collections.Counter = collections.Counter()
  for kind in _KINDS_OF_RELATION.get(relation, ()):
    if not any(s in _SUBJECT_SLOTS and r == relation for s, r, _ in SENTENCE_FACTS[kind]):
      continue
    for template in TEMPLATES[kind]:
      words = re.findall(r"[a-z]+", _SLOT.sub(" ", template).lower())
      counts.update({w for w in words if w not in _STOP_WORDS})
  return [w for w, _ in counts.most_common(count)]


def split_sentences(text: str) -> list[tuple[int, str]]:
  """The sentences of a passage with their character offsets.

  Args:
    text: A passage (sentences end with "." and are joined by single spaces).

  Returns:
    (offset, sentence) pairs in order.
  """
  out, start = [], 0
  for match in _SENTENCE_END.finditer(text):
    out.append((start, text[start:match.start()]))
    start = match.end()
  if start < len(text):
    out.append((start, text[start:]))
  return out


def parse_sentence(sentence: str, *, masked: bool = False) -> tuple[str, re.Match] | None:
  """Which page template wrote `sentence`, and its slot values.

  Args:
    sentence: One sentence.
    masked: Let slots hold `[mask]` (a masked paragraph's sentence).

  Returns:
    (sentence kind, the match whose named groups are the slots), or None when no template
    fits.
  """
  grammar = _GRAMMAR_MASKED if masked else _GRAMMAR_TEXT
  for kind, patterns in grammar.items():
    for pattern in patterns:
      match = pattern.fullmatch(sentence)
      if match:
        return kind, match
  return None


def list_items(text: str) -> list[str]:
  """The names of a list slot ("A, B and C")."""
  return [item for item in _LIST_SPLIT.split(text) if item]


@dataclasses.dataclass(frozen=True)
class Reading:
  """One fact as a sentence states it.

  Attributes:
    subject: The subject's name (a pronoun is read as the page title).
    relation: A key of `RELATIONS`, or "parent" when the text does not tell father from mother.
    value: The value's text as written (a name, a date, a year, a number with its unit, a
      demonym for `country_of_citizenship`, an occupation).
    sentence: The sentence.
  """

  subject: str
  relation: str
  value: str
  sentence: str


def _passage_gender(sentences: Sequence[str]) -> str | None:
  """'male' or 'female' when a sentence of the passage opens with He/His or She/Her."""
  for sentence in sentences:
    first = sentence.split(" ", 1)[0]
    if first in ("He", "His"):
      return "male"
    if first in ("She", "Her"):
      return "female"
  return None


def read_passage(title: str, text: str) -> list[Reading]:
  """Every fact the sentences of a passage state, as read from its text.

  Args:
    title: The page title (the subject a leading pronoun stands for).
    text: The passage.

  Returns:
    The readings, sentence by sentence; sentences no template fits give none.
  """
  sentences = [s for _, s in split_sentences(text)]
  readings: list[Reading] = []
  gender: str | None | bool = False  # False: not looked at yet.
  for sentence in sentences:
    parsed = parse_sentence(sentence)
    if parsed is None:
      continue
    kind, match = parsed
    for subject_slot, relation, object_slot in SENTENCE_FACTS[kind]:
      if relation == PARENT:
        pronoun = match.group("s")
        if pronoun in ("He", "She"):
          relation = "father" if pronoun == "He" else "mother"
        else:
          if gender is False:
            gender = _passage_gender(sentences)
          relation = {"male": "father", "female": "mother"}.get(gender or "", PARENT)
      for subject in _slot_names(match, subject_slot, title):
        for value in _slot_names(match, object_slot, title):
          readings.append(Reading(subject, relation, value, sentence))
  return readings


def _slot_names(match: re.Match, slot: str, title: str) -> list[str]:
  """The names (or the value) a parsed slot holds; a pronoun subject is the page title."""
  value = match.group(slot)
  if slot in _SUBJECT_SLOTS and _PRONOUN.fullmatch(value):
    return [title]
  return list_items(value) if slot in _LIST_SLOTS else [value]


class PassageReader:
  """`read_passage` with a cache by passage id (search results repeat a lot)."""

  def __init__(self, max_size: int = 200_000):
    """Creates an empty cache.

    Args:
      max_size: Passages kept; the oldest is dropped beyond it.
    """
    self.max_size = max_size
    self._cache: dict[str, tuple[str, list[Reading]]] = {}

  def read(self, hit: SearchHit) -> list[Reading]:
    """The readings of a retrieved passage (its title and text only)."""
    cached = self._cache.get(hit.id)
    if cached is not None and cached[0] == hit.text:
      return cached[1]
    readings = read_passage(hit.title, hit.text)
    self._cache[hit.id] = (hit.text, readings)
    if len(self._cache) > self.max_size:
      self._cache.pop(next(iter(self._cache)))
    return readings


# ---------------------------------------------------------------------------------------------
# Values.


def parse_date(text: str) -> tuple[int, int, int] | None:
  """(year, month, day) of '3 May 1921' or 'May 3, 1921', or None."""
  match = re.fullmatch(r"(\d{1,2}) ([A-Z][a-z]+) (\d{3,4})", text) or re.fullmatch(
      r"([A-Z][a-z]+) (\d{1,2}), (\d{3,4})", text)
  if match is None:
    return None
  a, b, year = match.groups()
  day, month = (a, b) if a.isdigit() else (b, a)
  if month not in MONTHS:
    return None
  return int(year), MONTHS.index(month) + 1, int(day)


def sort_key(text: str) -> tuple | None:
  """A comparable key of a date, year or number (with or without unit), or None."""
  date = parse_date(text)
  if date is not None:
    return date
  match = re.match(r"\d{1,3}(?:,\d{3})+|\d+", text)
  return (int(match.group().replace(",", "")),) if match else None


def demonym_countries(demonym: str) -> list[str]:
  """The country names a demonym can come from ('Lazeran' -> ['Lazera']).

  The world forms demonyms as 'Lazera' -> 'Lazeran', 'Higumero' -> 'Higumerian', 'Zozuvi' ->
  'Zozuvian' (every name ends in a vowel); the candidates undo each rule.

  Args:
    demonym: A demonym.
  """
  candidates = []
  if demonym.endswith("an"):
    candidates += [demonym[:-1], demonym[:-2]]
  if demonym.endswith("ian"):
    candidates.append(demonym[:-3] + "o")
  return [c for c in dict.fromkeys(candidates) if len(c) > 1 and c[-1] in "aeiou"]


# ---------------------------------------------------------------------------------------------
# Look-ups: what the teacher searches for.


# How the think text names a relation's value, where the label reads badly ("the founded by of").
_NOUNS = {
    "country_of_citizenship": "nationality", "educated_at": "university", "inception": "founding year",
    "founded": "founding year", "founded_by": "founder", "publication_date": "release date",
    "duration": "running time", "production_company": "studio", "first_ascent": "year of the first ascent",
    "first_ascended_by": "first climber", "headquarters": "headquarters", "source": "source",
}


def noun(relation: str) -> str:
  """What the think text calls a relation's value ("founder" for `founded_by`).

  Args:
    relation: A key of `RELATIONS`, or "parent".
  """
  return _NOUNS.get(relation) or (RELATIONS[relation][0] if relation in RELATIONS else relation)


@dataclasses.dataclass(frozen=True)
class Lookup:
  """One hidden fact to find.

  A forward look-up knows the subject and wants the value ("the spouse of X"); an inverse
  one knows a value and wants the subject ("who was born in Vitole"), checked against the
  other facts the masked sentence shows about it (`constraints`).

  Attributes:
    relation: A key of `RELATIONS`, or "parent".
    subjects: Forward: the subject's name (several candidates when it comes from a demonym).
    obj: Inverse: the known value of `relation`.
    constraints: Inverse: other (relation, value) facts of the wanted subject.
    subject_mask: RAMP: the subject is the answer of this (0-based) mask, found first.
    context: RAMP: the masked sentence, as a query (masks dropped, a pronoun made the title).
  """

  relation: str
  subjects: tuple[str, ...] = ()
  obj: str | None = None
  constraints: tuple[tuple[str, str], ...] = ()
  subject_mask: int | None = None
  context: str = ""

  @property
  def inverse(self) -> bool:
    return self.obj is not None

  @property
  def label(self) -> str:
    return RELATIONS[self.relation][0] if self.relation in RELATIONS else self.relation

  def with_subjects(self, subjects: Sequence[str]) -> Lookup:
    return dataclasses.replace(self, subjects=tuple(subjects), subject_mask=None)

  def describe(self, subject: str | None = None) -> str:
    """What is wanted, as the think text says it ("the founder of X").

    Args:
      subject: Forward: the subject's name to use (default: the candidates, joined by "or").
    """
    if self.inverse:
      if self.relation == "flows_through":
        wanted = f"the river that flows through {self.obj}"
      else:
        wanted = f"the one whose {noun(self.relation)} is {self.obj}"
      return wanted + (f" (and {', '.join(v for _, v in self.constraints)})" if self.constraints else "")
    subject = subject or " or ".join(self.subjects)
    if self.relation == "flows_through":
      return f"a city that {subject} flows through"
    return f"the {noun(self.relation)} of {subject}"

  def queries(self, rng: random.Random) -> list[str]:
    """The phrasings to search, in the order tried.

    Forward: "<name> <relation label>" or the natural question ("When was <name> born?"),
    whichever `rng` draws, then the masked sentence itself (RAMP), the other of the two, and
    "<name> <cue words>" (words the page templates use for the relation). Inverse: the
    masked sentence or "<value> <label> <other values>", whichever `rng` draws, then the
    other values with cue words (the wanted subject's own page states them all), the other
    of the two, and "<value> <cue words>".
    """
    if self.inverse:
      values = " ".join(v for _, v in self.constraints)
      # Children are found by their own pages ("the son of X", "born to X and his wife").
      cues = " ".join(cue_words("father" if self.relation == PARENT else self.relation))
      pair = [self.context, f"{self.obj} {self.label} {values}".strip()]
      rng.shuffle(pair)
      phrasings = [pair[0], f"{values} {cues}".strip() if values else "", pair[1], f"{self.obj} {cues}".strip()]
    else:
      name = " ".join(self.subjects)
      pair = [f"{name} {self.label}"]
      if self.relation in ASK:
        pair.append(ASK[self.relation].format(x=" or ".join(self.subjects)))
      rng.shuffle(pair)
      cues = " ".join(cue_words(self.relation))
      phrasings = [pair[0], self.context, *pair[1:], f"{name} {cues}" if cues else ""]
    return [p for p in dict.fromkeys(phrasings) if p]


def _relation_matches(read: str, wanted: str) -> bool:
  """Whether a reading's relation can be the wanted one ("parent" stands for both parents)."""
  if read == wanted:
    return True
  return PARENT in (read, wanted) and {read, wanted} <= {PARENT, "father", "mother"}


@dataclasses.dataclass(frozen=True)
class _Seen:
  reading: Reading
  hit: SearchHit
  rank: int  # 1-based, as the observation numbers its documents.
  search: int  # Which search of the episode showed it.


@dataclasses.dataclass(frozen=True)
class Found:
  """A look-up's answer and where it was read.

  Attributes:
    value: The answer as written in the passage.
    reading: The reading it came from.
    rank: The document's number in its observation.
    search: The 0-based search of the episode that showed it.
    title: The document's title.
  """

  value: str
  reading: Reading
  rank: int
  search: int
  title: str


def _match_lookup(lookup: Lookup, seen: Sequence[_Seen], excluded: Callable[[str], bool]) -> Found | None:
  """The answer of `lookup` among readings of passages already shown, or None.

  A forward look-up takes the first reading of the subject's relation (newest search
  first). An inverse one needs a single candidate that meets every constraint among the
  shown passages: when several do, or none, the teacher does not guess.

  Args:
    lookup: What is wanted.
    seen: Readings of the shown passages, newest search first, then by rank.
    excluded: A predicate on a value: True when it cannot be the answer.
  """
  if not lookup.inverse:
    subjects = set(lookup.subjects)
    fallback = None
    for s in seen:
      r = s.reading
      if r.subject not in subjects or r.value in subjects or excluded(r.value):
        continue
      if r.relation == lookup.relation:
        return Found(r.value, r, s.rank, s.search, s.hit.title)
      if fallback is None and _relation_matches(r.relation, lookup.relation):
        fallback = Found(r.value, r, s.rank, s.search, s.hit.title)
    return fallback
  candidates: dict[str, _Seen] = {}
  for s in seen:
    r = s.reading
    if (_relation_matches(r.relation, lookup.relation) and r.value == lookup.obj and r.subject != lookup.obj
        and not excluded(r.subject)):
      candidates.setdefault(r.subject, s)
  facts = {(s.reading.subject, s.reading.relation, s.reading.value) for s in seen}

  def confirmed(name: str) -> bool:
    return all(any((name, rel, value) in facts for rel in (relation, PARENT, "father", "mother")
                   if _relation_matches(rel, relation))
               for relation, value in lookup.constraints)

  matches = [name for name in candidates if confirmed(name)]
  if len(matches) != 1:
    return None
  s = candidates[matches[0]]
  return Found(matches[0], s.reading, s.rank, s.search, s.hit.title)


# ---------------------------------------------------------------------------------------------
# Planning a RAMP example: each mask's look-up, from the masked sentence.


def _clean_query(text: str) -> str:
  text = text.replace(protocol.MASK, " ")
  return " ".join(re.sub(r"[()\[\],;.:]", " ", text).split())


def plan_ramp(masked_paragraph: str, title: str) -> list[Lookup | None]:
  """The look-up of each mask of a paragraph, read from the sentence around it.

  A mask that stands for a value whose subject the sentence names ("He married [mask].")
  gets a forward look-up; one that stands for the subject ("[mask], a Lazeran painter (3 May
  1900 – 2 June 1960), was born in Vitole.") an inverse one with the sentence's other facts
  as constraints; one whose subject is another mask waits for that mask.

  Args:
    masked_paragraph: The paragraph with `[mask]`s.
    title: Its page title (the subject its pronouns stand for; the paragraph names it).

  Returns:
    One look-up per mask, in order; None where the sentence fits no template.
  """
  plans: list[Lookup | None] = [None] * masked_paragraph.count(protocol.MASK)
  title_visible = title in masked_paragraph
  for offset, sentence in split_sentences(masked_paragraph):
    if protocol.MASK not in sentence:
      continue
    parsed = parse_sentence(sentence, masked=True)
    if parsed is None:
      continue
    kind, match = parsed
    before = masked_paragraph[:offset].count(protocol.MASK)
    slots = {name: text for name, text in match.groupdict().items() if text is not None}
    masks_at: dict[str, list[int]] = {}  # slot -> global mask indices
    for name, text in slots.items():
      start = match.start(name)
      for m in re.finditer(_MASK_RE, text):
        masks_at.setdefault(name, []).append(before + sentence[:start + m.start()].count(protocol.MASK))

    shown = {name: _visible(name, text, title if title_visible else None) for name, text in slots.items()}
    context = sentence
    subject = match.group("s") if "s" in slots else None
    if subject and match.start("s") == 0 and _PRONOUN.fullmatch(subject) and title_visible:
      context = title + sentence[len(subject):]
    context = _clean_query(context)
    for slot, indices in masks_at.items():
      for index in indices:
        plans[index] = _plan_mask(slot, SENTENCE_FACTS[kind], shown, masks_at, context)
  return plans


def _visible(slot: str, text: str, title: str | None) -> list[str] | None:
  """What a slot of a masked sentence shows: its names or value; None when it is masked (or a
  pronoun whose page title is not in view). A list shows its unmasked names."""
  if slot in _SUBJECT_SLOTS and _PRONOUN.fullmatch(text):
    return [title] if title else None
  if slot in _LIST_SLOTS:
    return [item for item in list_items(text) if item != protocol.MASK]
  return None if text == protocol.MASK else [text]


def _plan_mask(slot: str, facts: Sequence[tuple[str, str, str]], shown: Mapping[str, list[str] | None],
               masks_at: Mapping[str, list[int]], context: str) -> Lookup | None:
  """The look-up of a mask in `slot` of a sentence that states `facts`."""
  forward = [(s, r) for s, r, o in facts if o == slot]
  for subject_slot, relation in forward:
    names = shown.get(subject_slot)
    if names and len(names) == 1 and subject_slot not in _LIST_SLOTS:
      return Lookup(relation, subjects=(names[0],), context=context)
  known = []  # (relation, value, value slot) of the facts the sentence shows about the mask.
  for s, relation, o in facts:
    if s == slot and o not in _LIST_SLOTS and shown.get(o):
      known.append((relation, shown[o][0], o))
  if known:
    # Search by a named value if there is one (names are rare words), else by the first.
    values = _GRAMMAR.keys() | _DATE_SLOTS | _QUANTITY_SLOTS | {"year"}
    primary = next((k for k in known if k[2] not in values), known[0])
    constraints = tuple((relation, value) for relation, value, o in known if (relation, value, o) != primary)
    return Lookup(primary[0], obj=primary[1], constraints=constraints, context=context)
  for subject_slot, relation in forward:
    if subject_slot in masks_at and subject_slot not in _LIST_SLOTS:
      return Lookup(relation, subject_mask=masks_at[subject_slot][0], context=context)
  return None


# ---------------------------------------------------------------------------------------------
# Episodes.


class _OutOfTurns(Exception):
  """The episode used its last turn before it could answer."""


class _Episode:
  """The trajectory being written: think notes, searches and observations."""

  def __init__(self, teacher: OfflineTeacher, exclude_ids: Sequence[str], rng: random.Random):
    self.teacher = teacher
    self.exclude_ids = tuple(exclude_ids)
    self.rng = rng
    self.segments: list[Segment] = []
    self.searches: list[str] = []
    self.notes: list[str] = []
    self.seen: list[_Seen] = []  # Newest search first.
    self.turns = 0

  def note(self, text: str) -> None:
    self.notes.append(text)

  def _think(self) -> str:
    text = " ".join(self.notes)
    self.notes = []
    return f"{protocol.THINK[0]} {text} {protocol.THINK[1]}\n"

  def search(self, query: str) -> None:
    """One search turn: the model's query and the environment's observation."""
    if self.turns + 2 > self.teacher.max_turns:  # This search, then the answer.
      raise _OutOfTurns
    teacher = self.teacher
    self.segments.append(Segment(MODEL, self._think() + f"{protocol.SEARCH[0]} {query} {protocol.SEARCH[1]}"))
    hits = search_excluding(teacher.retriever, [query], self.exclude_ids, teacher.top_k)[0]
    observation = protocol.format_observation([(h.title, h.text) for h in hits])
    self.segments.append(Segment(OBSERVATION, f"\n\n{observation}\n\n"))
    index = len(self.searches)
    self.searches.append(query)
    self.turns += 1
    fresh = [_Seen(r, hit, rank, index) for rank, hit in enumerate(hits, 1) for r in teacher.reader.read(hit)]
    self.seen = fresh + self.seen

  def answer(self, text: str) -> None:
    self.segments.append(Segment(MODEL, self._think() + f"{protocol.ANSWER[0]} {text} {protocol.ANSWER[1]}"))
    self.turns += 1

  def where(self, found: Found) -> str:
    doc = f"Doc {found.rank} ({found.title})"
    return doc if found.search == len(self.searches) - 1 else f"An earlier result, {doc},"

  def find(self, lookup: Lookup, excluded: Callable[[str], bool], intent: str) -> Found | None:
    """Answers `lookup` from what was shown, or by searching its phrasings in turn.

    Args:
      lookup: What is wanted.
      excluded: A predicate on a value: True when it cannot be the answer.
      intent: The note that says what is wanted (before the first search).

    Returns:
      The answer, or None when every allowed search failed.

    Raises:
      _OutOfTurns: No turn is left for the next search.
    """
    found = _match_lookup(lookup, self.seen, excluded)
    if found is None:
      self.note(intent)
      queries = lookup.queries(self.rng)[:self.teacher.max_searches_per_lookup]
      for attempt, query in enumerate(queries):
        if attempt:
          self.note(f"The results do not give {lookup.describe()}; I will search with other words.")
        self.search(query)
        found = _match_lookup(lookup, self.seen, excluded)
        if found is not None:
          break
    if found is None:
      self.note(f"I could not find {lookup.describe()}.")
      return None
    if lookup.inverse:
      self.note(f"{self.where(found)} names {found.value} as {lookup.describe()}.")
    else:
      self.note(f"{self.where(found)} says {lookup.describe(found.reading.subject)} is {found.value}.")
    return found


# ---------------------------------------------------------------------------------------------
# The teacher.


def _text(value: Any) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class OfflineTeacher:
  """Writes one trajectory per RAMP example or question, by rules (see the module docstring).

  Attributes:
    retriever: Where searches go.
    top_k: Passages per search turn (shown and read).
    seed: Seed of the phrasing order (with the trajectory id).
    max_searches_per_lookup: Most searches for one hidden fact.
    max_turns: Most model turns (searches plus the answer) of a trajectory.
    judge: An LLM judge (`judge(question, gold, prediction) -> bool`), or None for token recall.
    reader: The passage reader (cached).
  """

  def __init__(self, retriever: Retriever, *, top_k: int = 3, seed: int = 0, max_searches_per_lookup: int = 3,
               max_turns: int = 10, judge: Judge | None = None):
    """Sets the teacher up.

    Args:
      retriever: Where searches go (an index in process or a server).
      top_k: Passages per search turn; only these are shown and read.
      seed: Seed of the phrasing order; the same seed gives the same trajectories.
      max_searches_per_lookup: Most searches for one hidden fact (one per phrasing).
      max_turns: Most model turns of a trajectory (searches plus the answer); a trajectory
        that needs more is dropped with stop reason "max_turns".
      judge: An LLM judge (any object with `judge(question, gold, prediction) -> bool`);
        None accepts a trajectory when its token recall is 1.
    """
    if top_k < 1 or max_searches_per_lookup < 1 or max_turns < 2:
      raise ValueError(f"need top_k >= 1, max_searches_per_lookup >= 1 and max_turns >= 2; got {top_k}, "
                       f"{max_searches_per_lookup}, {max_turns}")
    self.retriever = retriever
    self.top_k = top_k
    self.seed = seed
    self.max_searches_per_lookup = max_searches_per_lookup
    self.max_turns = max_turns
    self.judge = judge
    self.reader = PassageReader()

  def _episode(self, trajectory_id: str, exclude_ids: Sequence[str] = ()) -> _Episode:
    return _Episode(self, exclude_ids, random.Random(f"{TEACHER_NAME}/{self.seed}/{trajectory_id}"))

  # -- RAMP ------------------------------------------------------------------------------------

  def ramp(self, example: Mapping[str, Any]) -> tuple[Trajectory, bool]:
    """The trajectory of one RAMP example and whether the judge accepts it.

    Args:
      example: A `RampDataSource.examples` dict: `masked_paragraph`, `passage_id` and `title`
        are read to solve it; `targets` (the original paragraph) and `masks` only to judge.

    Returns:
      (trajectory, accepted).

    Raises:
      ValueError: The example has no `masked_paragraph` or no `targets`.
    """
    if "masked_paragraph" not in example or "targets" not in example:
      raise ValueError(f"a RAMP example needs 'masked_paragraph' and 'targets'; got the keys {sorted(example)}")
    masked = _text(example["masked_paragraph"]).strip()
    title, passage_id = _text(example.get("title", "")), _text(example.get("passage_id", ""))
    count = masked.count(protocol.MASK)
    trajectory_id = f"ramp-{passage_id}-m{count}"
    episode = self._episode(trajectory_id, [passage_id] if passage_id else [])
    plans = plan_ramp(masked, title)
    fills: list[str | None] = [None] * count
    used: set[str] = set()

    def excluded(value: str) -> bool:
      # The hidden text occurs once in the original paragraph, so never elsewhere in view.
      return value in masked or value in used

    episode.note(f"The paragraph has {count} {protocol.MASK}{'s' if count > 1 else ''}.")
    stop, unresolved = "answer", False
    order = sorted(range(count), key=lambda i: plans[i] is not None and plans[i].subject_mask is not None)
    try:
      for i in order:
        lookup = plans[i]
        if lookup is not None and lookup.subject_mask is not None:
          subject = fills[lookup.subject_mask]
          lookup = lookup.with_subjects([subject]) if subject else None
        if lookup is None:
          episode.note(f"I cannot tell what mask {i + 1} asks for.")
          unresolved = True
          break
        found = episode.find(lookup, excluded, f"Mask {i + 1} is {lookup.describe()}.")
        if found is None:
          unresolved = True
          break
        fills[i] = found.value
        used.add(found.value)
        episode.note(f"So mask {i + 1} is {found.value}.")
    except _OutOfTurns:
      stop = "max_turns"
    answer = None
    if stop == "answer":
      if unresolved:
        episode.note("I fill in what I found.")
      else:
        episode.note(f"Every {protocol.MASK} is filled.")
      answer = masking.fill_masks(masked, [f if f is not None else protocol.MASK for f in fills])
      episode.answer(answer)
    original = _text(example["targets"])
    masks = [_text(m) for m in example.get("masks", ())] or ramp_fills(masked, original) or []
    meta = {"teacher": TEACHER_NAME, "source": passage_id, "title": title, "mask_num": count}
    question = masked + "\n\n" + protocol.RAMP_INSTRUCTION
    return self._finish(trajectory_id, "ramp", protocol.ramp_prompt(masked), episode, stop, answer, unresolved,
                        gold=[original], meta=meta, question=question, recall=lambda a: ramp_recall(masked, a, masks))

  # -- QA --------------------------------------------------------------------------------------

  def qa(self, question: Any, world: Any) -> tuple[Trajectory, bool]:
    """The trajectory of one world question and whether the judge accepts it.

    Args:
      question: A `world_types.Question`. Its text, type, `fact_ids` (for the relations of
        the chain, never their values) and `entity_ids` (for the names the question gives)
        are read to solve it; `answer` and `aliases` only to judge.
      world: The world the question belongs to (`world.facts[i].relation`,
        `world.entities[e].name` are read; nothing else).

    Returns:
      (trajectory, accepted).

    Raises:
      ValueError: The question is not one of this world's (its facts or topics are not there,
        or its text does not name its topics).
    """
    text = question.question
    if (any(not 0 <= i < len(world.facts) for i in question.fact_ids)
        or any(e not in world.entities for e in question.entity_ids)):
      raise ValueError(f"question {question.id} is not about this world: it names facts or entities it lacks")
    relations = [world.facts[i].relation for i in question.fact_ids]
    names = [world.entities[e].name for e in question.entity_ids]
    trajectory_id = f"qa-{question.id}"
    episode = self._episode(trajectory_id)
    stop, unresolved, answer = "answer", False, None
    try:
      answer = self._solve(episode, question.type, text, relations, names)
    except _OutOfTurns:
      stop = "max_turns"
    if stop == "answer":
      unresolved = answer is None
      if unresolved:
        episode.note("I could not find the answer.")
        answer = "unknown"
      episode.answer(answer)
    gold = [question.answer, *question.aliases]
    meta = {"teacher": TEACHER_NAME, "source": question.id, "question_type": question.type, "hops": question.hops}
    return self._finish(trajectory_id, "qa", protocol.qa_prompt(text), episode, stop, answer, unresolved,
                        gold=gold, meta=meta, question=text, recall=lambda a: token_recall(a, gold))

  def _solve(self, episode: _Episode, qtype: str, text: str, relations: Sequence[str],
             names: Sequence[str]) -> str | None:
    if any(name not in text for name in names):
      raise ValueError(f"question {text!r} does not name its topic entities {names}")
    if qtype in ("compositional", "inference"):
      episode.note(f"The question starts from {names[0]} and needs {len(relations)} facts in a chain.")
      return self._chain(episode, names[0], relations)
    if qtype not in ("comparison", "bridge_comparison"):
      raise ValueError(f"unknown question type {qtype!r}")
    # Which side wins ("born first": the smaller date) is in the question's wording.
    if qtype == "comparison":
      pick = _comparison_pick(text, [(r, t, p) for _, r, t, p in COMPARISONS], relations[0])
      chain = relations[:1]
      episode.note(f"I need the {noun(relations[0])} of {names[0]} and of {names[1]}.")
    else:
      pick = _comparison_pick(text, [(r, t, p) for _, _, r, t, p in BRIDGE_COMPARISONS], relations[1])
      chain = relations[:2]
      episode.note(f"I need the {noun(relations[1])} of the {noun(relations[0])} of {names[0]} and of "
                   f"{names[1]}.")
    if pick is None or len(names) != 2:
      return None
    values = []
    for name in names:
      values.append(self._chain(episode, name, chain))
      if values[-1] is None:
        return None
    a, b = names
    if pick == "same":
      answer = "yes" if normalize_answer(values[0]) == normalize_answer(values[1]) else "no"
    else:
      keys = [sort_key(v) for v in values]
      if None in keys:
        return None
      first = (keys[0] < keys[1]) == (pick == "min")
      answer = a if first else b
    episode.note(f"{a}: {values[0]}; {b}: {values[1]}. So the answer is {answer}.")
    return answer

  def _chain(self, episode: _Episode, start: str, relations: Sequence[str]) -> str | None:
    """Follows `relations` from `start`; the last value, or None when a link is not found."""
    subjects = [start]
    value = None
    for hop, relation in enumerate(relations):
      lookup = Lookup(relation, subjects=tuple(subjects))
      found = episode.find(lookup, lambda v: False, f"I need {lookup.describe()}.")
      if found is None:
        return None
      value = found.value
      if hop + 1 < len(relations):
        if relation == "country_of_citizenship":
          subjects = demonym_countries(value)
          if not subjects:
            return None
          episode.note(f"{value} is the demonym of a country named {' or '.join(subjects)}.")
        else:
          subjects = [value]
    return value

  # -- judging ---------------------------------------------------------------------------------

  def _finish(self, trajectory_id: str, kind: str, prompt: str, episode: _Episode, stop: str, answer: str | None,
              unresolved: bool, *, gold: list[str], meta: dict[str, Any], question: str,
              recall: Callable[[str], float]) -> tuple[Trajectory, bool]:
    """Judges the episode and makes its trajectory; drop reasons go to `meta["drop_reason"]`."""
    reward, reason = 0.0, None
    if stop != "answer":
      reason = "max_turns"
    elif unresolved:
      reason = "unresolved"
    elif self.judge is not None:
      try:
        accepted = bool(self.judge.judge(question, gold if kind == "qa" else gold[0], answer))
      except (RuntimeError, ValueError) as e:  # LLMError, MalformedReplyError.
        logger.warning("judge failed on %s: %s", trajectory_id, e)
        accepted, reason = False, "judge_error"
      reward = 1.0 if accepted else 0.0
      if not accepted and reason is None:
        reason = "judge"
    else:
      reward = recall(answer)
      if reward < 1.0:
        reason = "judge"
    meta = {**meta, "judge": "recall" if self.judge is None else "llm", "drop_reason": reason}
    trajectory = Trajectory(id=trajectory_id, kind=kind, prompt=prompt, segments=tuple(episode.segments),
                            stop_reason=stop, answer=answer if stop == "answer" else None, gold=tuple(gold),
                            searches=tuple(episode.searches), reward=reward, meta=meta)
    return trajectory, reason is None


def _comparison_pick(text: str, templates: Sequence[tuple[str, str, str]], relation: str) -> str | None:
  """How the comparison that wrote `text` picks its answer: "min", "max" or "same" (None: no
  template of `relation` wrote it).

  Args:
    text: The question.
    templates: (compared relation, template with {a} and {b}, pick) triples.
    relation: The compared relation.
  """
  for rel, template, pick in templates:
    if rel != relation:
      continue
    pattern = re.escape(template).replace(re.escape("{a}"), "(.+?)").replace(re.escape("{b}"), "(.+?)")
    if re.fullmatch(pattern, text):
      return pick
  return None


# ---------------------------------------------------------------------------------------------
# Entry points.


def synthesize_ramp(examples: Iterable[Mapping[str, Any]], retriever: Retriever, *, judge: Judge | None = None,
                    top_k: int = 3, seed: int = 0, max_searches_per_lookup: int = 3,
                    max_turns: int = 10) -> Iterator[tuple[Trajectory, bool]]:
  """Trajectories of RAMP examples, each with the judge's verdict.

  The teacher reads the masked paragraph and the retrieved passages only: it takes no world.

  Args:
    examples: `RampDataSource.examples` dicts (read lazily).
    retriever: The index of the examples' corpus (each example's own passage is never
      returned to it).
    judge: An LLM judge; None accepts when every mask's token recall is 1.
    top_k: Passages per search turn.
    seed: Seed of the phrasing order.
    max_searches_per_lookup: Most searches per mask.
    max_turns: Most model turns of a trajectory (searches plus the answer).

  Returns:
    An iterator of (trajectory, accepted), one per example, in order.
  """
  teacher = OfflineTeacher(retriever, top_k=top_k, seed=seed, max_searches_per_lookup=max_searches_per_lookup,
                           max_turns=max_turns, judge=judge)
  for example in examples:
    yield teacher.ramp(example)


def synthesize_qa(questions: Iterable[Any], retriever: Retriever, world: Any, *, judge: Judge | None = None,
                  top_k: int = 3, seed: int = 0, max_searches_per_lookup: int = 3,
                  max_turns: int = 10) -> Iterator[tuple[Trajectory, bool]]:
  """Trajectories of world questions, each with the judge's verdict.

  Args:
    questions: `world_types.Question`s of `world` (read lazily).
    retriever: The index of the world's passages.
    world: The world (only relation names and topic names are read from it).
    judge: An LLM judge; None accepts when the answer's token recall is 1.
    top_k: Passages per search turn.
    seed: Seed of the phrasing order.
    max_searches_per_lookup: Most searches per fact of the chain.
    max_turns: Most model turns of a trajectory (searches plus the answer).

  Returns:
    An iterator of (trajectory, accepted), one per question, in order.
  """
  teacher = OfflineTeacher(retriever, top_k=top_k, seed=seed, max_searches_per_lookup=max_searches_per_lookup,
                           max_turns=max_turns, judge=judge)
  for question in questions:
    yield teacher.qa(question, world)


# ---------------------------------------------------------------------------------------------
# Writing a file.


@dataclasses.dataclass
class SynthesisSummary:
  """What a `synthesize_to_file` run did.

  Attributes:
    kind: "ramp" or "qa".
    path: The trajectory file.
    kept: Trajectories the judge accepted (written).
    dropped: Trajectories dropped.
    skipped: Examples whose trajectory the file already held (a resumed run).
    searches: Searches made, in kept and dropped trajectories.
    seconds: Wall time of the run.
    by_type: {"1 mask" / question type: {"kept": n, "dropped": n}}.
    by_hops: QA: {hops: {"kept": n, "dropped": n}}.
    dropped_by_reason: {reason: n} (`DROP_REASONS`).
  """

  kind: str
  path: str
  kept: int = 0
  dropped: int = 0
  skipped: int = 0
  searches: int = 0
  seconds: float = 0.0
  by_type: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
  by_hops: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
  dropped_by_reason: dict[str, int] = dataclasses.field(default_factory=dict)

  @property
  def kept_share(self) -> float:
    """Kept over kept plus dropped (0.0 before any)."""
    total = self.kept + self.dropped
    return self.kept / total if total else 0.0

  @property
  def rate(self) -> float:
    """Trajectories (kept and dropped) per second."""
    return (self.kept + self.dropped) / self.seconds if self.seconds > 0 else 0.0

  def add(self, trajectory: Trajectory, accepted: bool, group: str, hops: int | None) -> None:
    """Counts one trajectory."""
    outcome = "kept" if accepted else "dropped"
    if accepted:
      self.kept += 1
    else:
      self.dropped += 1
      reason = trajectory.meta.get("drop_reason") or "judge"
      self.dropped_by_reason[reason] = self.dropped_by_reason.get(reason, 0) + 1
    self.searches += len(trajectory.searches)
    self.by_type.setdefault(group, {"kept": 0, "dropped": 0})[outcome] += 1
    if hops is not None:
      self.by_hops.setdefault(str(hops), {"kept": 0, "dropped": 0})[outcome] += 1

  def to_json(self) -> dict[str, Any]:
    """The summary as a JSON object."""
    return {**dataclasses.asdict(self), "kept_share": self.kept_share, "rate": self.rate}

  def __str__(self) -> str:
    def shares(groups: Mapping[str, Mapping[str, int]]) -> str:
      return ", ".join(f"{name} {c['kept'] / max(1, c['kept'] + c['dropped']):.0%}" for name, c in sorted(
          groups.items()))

    reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(self.dropped_by_reason.items()))
    line = (f"synthesize {self.kind}: {self.kept:,} kept, {self.dropped:,} dropped"
            f"{f' ({reasons})' if reasons else ''}, {self.kept_share:.1%} kept")
    if self.by_type:
      line += f" [{shares(self.by_type)}]"
    if self.by_hops:
      line += f" [hops {shares(self.by_hops)}]"
    if self.skipped:
      line += f"; {self.skipped:,} already in the file"
    return (line + f"; {self.searches:,} searches in {self.seconds:.1f}s ({self.rate:,.1f} trajectories/s)"
            f" -> {self.path}")


_SPLITS = {"train": ("train", "train"), "validation": ("validation", "dev"), "dev": ("validation", "dev"),
           "test": ("test", "test")}


def ramp_examples(split: str = "train", num_masks: int | None = 1) -> Iterator[dict[str, Any]]:
  """RAMP examples of the corpus that Gin's `RampCorpus` names (the embedded world by default).

  Args:
    split: "train", "validation" (or "dev") or "test".
    num_masks: Masks per paragraph, 1..8; None or 0 for MaskSearch's own mask-count rule.

  Returns:
    `RampDataSource.examples` dicts, in corpus order.
  """
  from masksearch_jax.data.ramp_source import RampDataSource
  if split not in _SPLITS:
    raise ValueError(f"split must be one of {sorted(_SPLITS)}, got {split!r}")
  return RampDataSource(num_masks or None).examples(_SPLITS[split][0])


def load_world(world: Any = None) -> Any:
  """A world from a `World`, a world directory, a `WorldConfig` (generated into the cache) or
  None (Gin's `QAFiles.world`, as the `qa_world` task reads it).

  Args:
    world: Any of the above.
  """
  from masksearch_jax.data import world_io
  from masksearch_jax.data.world import World, WorldConfig
  if isinstance(world, World):
    return world
  if world is None:
    from masksearch_jax.data.seqio_tasks import QAFiles
    world = QAFiles().world
  if isinstance(world, WorldConfig):
    return world_io.load_world(world_io.cached_world_dir(world))
  if isinstance(world, (str, os.PathLike)):
    return world_io.load_world(world)
  raise TypeError(f"world must be a World, a world directory, a WorldConfig or None; got {type(world).__name__}")


def _world_config(world: Any) -> Any:
  from masksearch_jax.data import world_io
  from masksearch_jax.data.world import World
  if isinstance(world, World):
    return world.config
  if isinstance(world, (str, os.PathLike)):
    return world_io.load_config(world)
  return world


def _existing_ids(path: Path) -> set[str]:
  from masksearch_jax.data.trajectories import read_trajectories
  if not path.exists():
    return set()
  return {t.id for t in read_trajectories(path, skip_bad=True)}


@gin.configurable(module="masksearch_jax.agent.offline_teacher",
                  denylist=["kind", "out_path", "world", "retriever"])
def synthesize_to_file(kind: str, out_path: str | os.PathLike, *, world: Any = None, index: str | None = None,
                       url: str | None = None, retriever: Retriever | None = None, split: str = "train",
                       num_masks: int | None = 1, limit: int = 0, top_k: int = 3, seed: int = 0,
                       judge: Judge | None = None, max_searches_per_lookup: int = 3, max_turns: int = 10,
                       overwrite: bool = False, progress: bool = True) -> SynthesisSummary:
  """Writes the offline teacher's accepted trajectories for RAMP examples or world questions.

  Each accepted trajectory is appended (`TrajectoryWriter`) as soon as it is judged, so a
  crash loses nothing written. An existing file is continued: examples whose trajectory id
  it already holds are skipped, so rerunning an interrupted command finishes the job. A
  retrieval error (a server that went away) stops the run the same way.

  Args:
    kind: "ramp" (RAMP examples of Gin's `RampCorpus`, the embedded world by default) or
      "qa" (the world's questions).
    out_path: The trajectory jsonl file.
    world: QA: the world (a `World`, a world directory, a `WorldConfig`, or None for Gin's
      `QAFiles.world`). RAMP: the teacher reads no world; if given, it must be the world of
      `RampCorpus` (checked, so the index and the examples agree).
    index: A Tantivy index directory of the world's passages (or `url`, or `retriever`).
    url: A retrieval server's address (Search-R1's `/retrieve`).
    retriever: A retriever to use (not closed here) instead of `index` or `url`.
    split: "train", "validation" (or "dev") or "test".
    num_masks: RAMP: masks per paragraph, 1..8; None or 0 for MaskSearch's own rule.
    limit: Examples to take from the split (0: all); a resumed run counts the skipped ones.
    top_k: Passages per search turn.
    seed: Seed of the phrasing order; the same seed writes the same file.
    judge: An LLM judge (`judge(question, gold, prediction) -> bool`); None accepts a
      trajectory when its token recall is 1.
    max_searches_per_lookup: Most searches for one hidden fact.
    max_turns: Most model turns of a trajectory (searches plus the answer).
    overwrite: Start the file afresh instead of continuing it.
    progress: Show a progress bar with kept and dropped counts and print the summary line
      to stderr (it is always logged).

  Returns:
    The run's `SynthesisSummary`.
  """
  if kind not in KINDS:
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
  if split not in _SPLITS:
    raise ValueError(f"split must be one of {sorted(_SPLITS)}, got {split!r}")
  if sum(x is not None for x in (index, url, retriever)) != 1:
    raise ValueError("synthesize_to_file needs exactly one of index=, url= or retriever=")
  path = Path(out_path)
  if overwrite and path.exists():
    path.unlink()
  start = time.perf_counter()
  if kind == "ramp":
    from masksearch_jax.data.ramp_source import RampCorpus
    corpus = RampCorpus()
    if world is not None and (corpus.path is not None or _world_config(world) != corpus.world):
      raise ValueError(f"RAMP examples come from Gin's RampCorpus ({corpus.path or corpus.world}), not from "
                       f"{world}; bind masksearch_jax.data.ramp_source.RampCorpus.world to it")
    items: Iterable[Any] = ramp_examples(split, num_masks)
    total = limit or None
    the_world = None
  else:
    the_world = load_world(world)
    wanted = _SPLITS[split][1]
    questions = [q for q in the_world.questions if q.split == wanted]
    items = questions
    total = min(limit, len(questions)) if limit else len(questions)
  if limit:
    items = itertools.islice(items, limit)
  existing = _existing_ids(path)
  own = retriever is None
  if own:
    from masksearch_jax.retrieval import open_retriever
    retriever = open_retriever(index=index, url=url)
  teacher = OfflineTeacher(retriever, top_k=top_k, seed=seed, max_searches_per_lookup=max_searches_per_lookup,
                           max_turns=max_turns, judge=judge)
  summary = SynthesisSummary(kind, str(path))
  bar = None
  if progress:
    from tqdm.auto import tqdm
    bar = tqdm(total=total, desc=f"synthesize {kind}", unit=" examples")
  from masksearch_jax.data.trajectories import TrajectoryWriter
  try:
    with TrajectoryWriter(path) as writer:
      for item in items:
        if kind == "ramp":
          masked = _text(item["masked_paragraph"])
          count = masked.count(protocol.MASK)
          trajectory_id, group, hops = f"ramp-{_text(item['passage_id'])}-m{count}", f"{count} mask", None
        else:
          trajectory_id, group, hops = f"qa-{item.id}", item.type, item.hops
        if trajectory_id in existing:
          summary.skipped += 1
        else:
          trajectory, accepted = teacher.ramp(item) if kind == "ramp" else teacher.qa(item, the_world)
          if accepted:
            writer.write(trajectory)
          summary.add(trajectory, accepted, group, hops)
        if bar is not None:
          bar.update(1)
          bar.set_postfix(kept=summary.kept, dropped=summary.dropped, refresh=False)
  finally:
    if bar is not None:
      bar.close()
    if own:
      retriever.close()
    summary.seconds = time.perf_counter() - start
  logger.info("%s", summary)
  if progress:
    print(summary, file=sys.stderr)
  return summary


__all__ = ["DROP_REASONS", "Found", "Judge", "KINDS", "Lookup", "OfflineTeacher", "PassageReader", "Reading",
           "SENTENCE_FACTS", "SynthesisSummary", "TEACHER_NAME", "cue_words", "demonym_countries", "list_items",
           "load_world", "normalize_answer", "noun", "parse_date", "parse_sentence", "plan_ramp",
           "ramp_examples", "ramp_fills", "ramp_recall", "read_passage", "sort_key", "split_sentences",
           "synthesize_qa", "synthesize_ramp", "synthesize_to_file", "token_recall"]
