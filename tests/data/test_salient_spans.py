"""The rule-based salient-span extractor: measured against the world's mentions, and by hand.

The measurement compares extracted spans with the true mentions of the embedded world's
passages. Truth is every mention of an entity kind (person, city, ...), 'demonym', 'date',
'year' and 'quantity'. Occupations ('film director', 'painter') are lower-case common
nouns, which no proper-name rule should find and MaskSearch does not mask; they are
reported on their own line and left out of the totals.

  recall     share of true mentions some extracted span matches exactly (offsets equal);
             'lenient' counts a mention when a span overlaps it.
  precision  share of extracted spans that exactly match a true mention; 'lenient' counts
             a span that overlaps one.

Run with `pytest -s` to see the per-kind tables.

Floors: with a gazetteer of the world's titles (how the RAMP pipeline runs it) both seeds
measure recall 1.000 and precision 1.000: the world's sentences are templated, and the
extractor's list of common sentence openers was written with them in view, so these numbers
are optimistic for other text (the hand-written cases below cover ordinary English). The
asserted floors (0.95) leave room for new templates while catching any real regression.
Without a gazetteer, film and book titles with lower-case words ("Return to Kupe",
"Winter in Doga") are cut in two, so recall is about 0.98 (names 0.97) and precision 0.96;
the floor there is the issue's 0.9.
"""

from __future__ import annotations

import collections
import time

import pytest

from masksearch_jax.data import salient_spans as ss
from masksearch_jax.data.salient_spans import Gazetteer, RuleBasedExtractor, filter_candidates, span_kind
from masksearch_jax.data.spans import SPAN_KINDS, Span
from masksearch_jax.data.world import WorldConfig, generate_world
from masksearch_jax.data.world_types import ENTITY_KINDS

NAME_KINDS = frozenset(ENTITY_KINDS) | {"demonym"}
TRUE_KINDS = NAME_KINDS | {"date", "year", "quantity"}
# The span kind each mention kind should get.
EXPECTED_KIND = {**{k: "name" for k in NAME_KINDS}, "date": "date", "year": "year", "quantity": "number"}


@pytest.fixture(scope="module")
def second_world():
  """A second 400-person world (seed 1), so the floors are not tuned to one seed."""
  return generate_world(WorldConfig(seed=1, size=400))


def _world_gazetteer(world) -> Gazetteer:
  return Gazetteer.from_titles(sorted({p.title for p in world.passages}))


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
  return a[0] < b[1] and b[0] < a[1]


def measure(world, extractor: RuleBasedExtractor) -> dict:
  """Per-kind recall and overall precision of `extractor` on `world`'s passages."""
  total = collections.Counter()
  exact = collections.Counter()
  lenient = collections.Counter()
  right_kind = collections.Counter()
  n_spans = n_exact = n_lenient = 0
  for passage in world.passages:
    spans = extractor.extract(passage.text)
    by_offsets = {(s.start, s.end): s for s in spans}
    truth = [(m.start, m.end) for m in passage.mentions if m.kind in TRUE_KINDS]
    true_set = set(truth)
    for m in passage.mentions:
      key = (m.start, m.end)
      total[m.kind] += 1
      if key in by_offsets:
        exact[m.kind] += 1
        if by_offsets[key].kind == EXPECTED_KIND.get(m.kind):
          right_kind[m.kind] += 1
      if any(_overlaps(key, (s.start, s.end)) for s in spans):
        lenient[m.kind] += 1
    for s in spans:
      assert passage.text[s.start:s.end] == s.text and s.kind in SPAN_KINDS
      n_spans += 1
      n_exact += (s.start, s.end) in true_set
      n_lenient += any(_overlaps((s.start, s.end), t) for t in truth)

  def share(numerator, kinds):
    denominator = sum(total[k] for k in kinds)
    return sum(numerator[k] for k in kinds) / denominator if denominator else float("nan")

  rows = {k: (total[k], exact[k] / total[k], lenient[k] / total[k], right_kind[k] / max(exact[k], 1))
          for k in sorted(total)}
  return {
      "rows": rows,
      "recall": share(exact, TRUE_KINDS), "recall_lenient": share(lenient, TRUE_KINDS),
      "recall_names": share(exact, NAME_KINDS), "recall_dates": share(exact, {"date"}),
      "precision": n_exact / n_spans, "precision_lenient": n_lenient / n_spans, "spans": n_spans,
  }


def _print_table(title: str, result: dict) -> None:
  print(f"\n{title}")
  print(f"  {'mention kind':<14}{'count':>7}{'recall':>9}{'lenient':>9}{'kind ok':>9}")
  for kind, (count, rec, len_rec, kind_ok) in result["rows"].items():
    note = "  (not counted)" if kind not in TRUE_KINDS else ""
    print(f"  {kind:<14}{count:>7}{rec:>9.3f}{len_rec:>9.3f}{kind_ok:>9.3f}{note}")
  print(f"  recall {result['recall']:.3f} (lenient {result['recall_lenient']:.3f}); names "
        f"{result['recall_names']:.3f}; dates {result['recall_dates']:.3f}")
  print(f"  precision {result['precision']:.3f} (lenient {result['precision_lenient']:.3f}) over "
        f"{result['spans']} spans")


@pytest.mark.parametrize("which", ["tiny_world", "second_world"])
def test_recall_and_precision_on_the_world(which, request):
  world = request.getfixturevalue(which)
  result = measure(world, RuleBasedExtractor(_world_gazetteer(world)))
  _print_table(f"rule-based extractor + title gazetteer, world seed {world.config.seed}", result)
  assert result["recall"] >= 0.95
  assert result["recall_names"] >= 0.95
  assert result["recall_dates"] >= 0.95
  assert result["precision"] >= 0.95
  # Every exact date, year and quantity match also gets the right kind.
  for kind in ("date", "year", "quantity"):
    assert result["rows"][kind][3] == 1.0, kind


@pytest.mark.parametrize("which", ["tiny_world", "second_world"])
def test_recall_and_precision_without_gazetteer(which, request):
  world = request.getfixturevalue(which)
  result = measure(world, RuleBasedExtractor())
  _print_table(f"rule-based extractor, no gazetteer, world seed {world.config.seed}", result)
  assert result["recall"] >= 0.9
  assert result["recall_names"] >= 0.9
  assert result["recall_dates"] >= 0.9
  assert result["precision"] >= 0.9


def test_counting_nouns_join_numbers_only_when_asked(tiny_world):
  # The world's populations and staff counts are bare numbers ("1,234 people" marks "1,234").
  default = measure(tiny_world, RuleBasedExtractor(_world_gazetteer(tiny_world)))
  with_nouns = measure(tiny_world, RuleBasedExtractor(_world_gazetteer(tiny_world), count_nouns=True))
  _print_table("count_nouns=True, world seed 0", with_nouns)
  assert default["rows"]["quantity"][1] > with_nouns["rows"]["quantity"][1]
  assert with_nouns["rows"]["quantity"][2] == 1.0  # Still overlapping every quantity.


def test_extraction_is_fast_enough(tiny_world):
  # Generous floor for slow CI machines; about 10,000 paragraphs/s is typical on one core.
  extractor = RuleBasedExtractor(_world_gazetteer(tiny_world))
  texts = [p.text for p in tiny_world.passages]
  start = time.perf_counter()
  for text in texts:
    extractor.extract(text)
  rate = len(texts) / (time.perf_counter() - start)
  print(f"\n{rate:.0f} paragraphs/s")
  assert rate > 1000


# -- hand-written cases -----------------------------------------------------------------


def _spans(text: str, extractor: RuleBasedExtractor | None = None) -> list[tuple[str, str]]:
  spans = (extractor or RuleBasedExtractor()).extract(text)
  for s in spans:
    assert text[s.start:s.end] == s.text
  return [(s.text, s.kind) for s in spans]


@pytest.mark.parametrize("text,date", [
    ("He was born on 3 May 1921 in Doga.", "3 May 1921"),
    ("He was born on May 3, 1921 in Doga.", "May 3, 1921"),
    ("He was born on May 3 1921 in Doga.", "May 3 1921"),
    ("Released 1921-05-03 in Doga.", "1921-05-03"),
    ("It closed in May 1921.", "May 1921"),
    ("It opened on 3rd May 1921.", "3rd May 1921"),
    ("It opened on the 21 of September 1921.", "21 of September 1921"),
    ("It opened on Sept. 4, 1921.", "Sept. 4, 1921"),
    ("It opened on 30 June.", "30 June"),
    ("It opened on June 30 and closed.", "June 30"),
])
def test_dates_in_every_form(text, date):
  assert (date, "date") in _spans(text)


def test_not_dates():
  assert _spans("You May go now.") == []
  assert ("date", "date") not in _spans("On 32 May 1921 nothing happened.")
  assert ("May 1921", "date") in _spans("On 32 May 1921 nothing happened.")


@pytest.mark.parametrize("text,expected", [
    ("The bridge was built in 1921.", [("1921", "year")]),
    ("The city was founded in 748 by monks.", [("748", "year")]),
    ("The city dates from 748; it is old.", [("748", "year")]),
    ("Rome was founded in 753 BC.", [("Rome", "name"), ("753 BC", "year")]),
    ("Pompeii was buried in AD 79.", [("Pompeii", "name"), ("AD 79", "year")]),
    ("Jazz grew in the 1920s.", [("Jazz", "name"), ("1920s", "year")]),
    ("The farm had 748 sheep.", [("748", "number")]),
    ("The firm has 1500 employees.", [("1500", "number")]),
    ("They fought from 1914 to 1918.", [("1914", "year"), ("1918", "year")]),
])
def test_years(text, expected):
  assert _spans(text) == expected


@pytest.mark.parametrize("text,number", [
    ("The city has 1,317,170 inhabitants.", "1,317,170"),
    ("The index rose by 3.5 points.", "3.5 points"),
    ("Unemployment was 12% in winter.", "12%"),
    ("Unemployment was 12 per cent in winter.", "12 per cent"),
    ("It cost $3 million to build.", "$3 million"),
    ("It cost US$ 450 to build.", "US$ 450"),
    ("The river is 1,234 km long.", "1,234 km"),
    ("The city covers 53 square kilometres of land.", "53 square kilometres"),
    ("The film runs 203 minutes.", "203 minutes"),
    ("The book has 372 pages.", "372 pages"),
    ("The peak rises to 8,400 metres above the sea.", "8,400 metres"),
    ("Winters reach -5 °C at night.", "-5 °C"),
    ("The firm had 45 employees.", "45"),
])
def test_numbers_with_units(text, number):
  assert (number, "number") in _spans(text)


def test_counting_nouns_can_join_the_number():
  extractor = RuleBasedExtractor(count_nouns=True)
  assert ("1,317,170 inhabitants", "number") in _spans("The city has 1,317,170 inhabitants.", extractor)
  assert ("45 employees", "number") in _spans("The firm had 45 employees.", extractor)
  assert ("1500 people", "number") in _spans("It has 1500 people.", extractor)


def test_not_numbers():
  assert _spans("He came 3rd in the race.") == []
  assert _spans("The COVID-19 wave and the A4 paper.") == [("COVID-19", "name"), ("A4", "name")]


@pytest.mark.parametrize("text,name", [
    ("He studied at the University of Toronto for years.", "University of Toronto"),
    ("The symphony is by Ludwig van Beethoven and was loved.", "Ludwig van Beethoven"),
    ("He admired Charles de Gaulle greatly.", "Charles de Gaulle"),
    ("A portrait by Leonardo da Vinci hangs there.", "Leonardo da Vinci"),
    ("He admired Alexander the Great greatly.", "Alexander the Great"),
    ("He worked for Procter & Gamble for years.", "Procter & Gamble"),
    ("She met J. R. R. Tolkien at a party.", "J. R. R. Tolkien"),
    ("They moved to St. Louis in spring.", "St. Louis"),
    ("The works of Abu Nasr al-Farabi survive.", "Abu Nasr al-Farabi"),
    ("He bought a Rolls-Royce car.", "Rolls-Royce"),
    ("She married Sean O'Brien there.", "Sean O'Brien"),
    ("Tedimide Hufo's book sold well.", "Tedimide Hufo"),
    ("A Tuzalian painter lived here.", "Tuzalian"),
    ("Doga is a city.", "Doga"),
    ("Mount Kupe is a mountain.", "Mount Kupe"),
    ("Émile Zola wrote novels.", "Émile Zola"),
])
def test_names_with_connectors(text, name):
  assert (name, "name") in _spans(text)


def test_sentence_initial_common_words_are_not_names():
  text = ("He married Vifoli Kirora. She was born in Doga. In 1974, it grew. The city is big. "
          "Located in Lazera, the Tuzalian painter Munepo Kirora lived there. Alumni of Zidu University "
          "include Fali Bosomida. Rising on Mount Kupe, it flows. However, Napoleon lost. Its area is "
          "small. Independence was declared. Following the war, Peru grew.")
  assert _spans(text) == [
      ("Vifoli Kirora", "name"), ("Doga", "name"), ("1974", "year"), ("Lazera", "name"), ("Tuzalian", "name"),
      ("Munepo Kirora", "name"), ("Zidu University", "name"), ("Fali Bosomida", "name"), ("Mount Kupe", "name"),
      ("Napoleon", "name"), ("Peru", "name")]


def test_sentence_initial_word_used_in_lower_case_elsewhere_is_not_a_name():
  assert _spans("Reading is fun. We like reading.") == []
  assert _spans("Reading is a town.") == [("Reading", "name")]


def test_months_weekdays_and_pronouns_alone_are_not_names():
  assert _spans("They met on a Monday in March, and I left.") == []
  assert _spans("He was born in May.") == []
  assert _spans("Something happened on eBay.") == []


@pytest.mark.parametrize("text,title", [
    ('His song "Hey Jude" was a hit.', "Hey Jude"),
    ('His song "Hey Jude," was a hit.', "Hey Jude"),
    ("His song “Bohemian Rhapsody” was a hit.", "Bohemian Rhapsody"),
    ("His book « Les Misérables » sold.", "Les Misérables"),
    ('The film "the road to nowhere" flopped.', "the road to nowhere"),
])
def test_quoted_titles(text, title):
  assert (title, "title") in _spans(text)


def test_long_quotes_are_not_titles():
  quote = " ".join(["word"] * 13)
  assert _spans(f'He said "{quote}" loudly.') == []


def test_gazetteer_terms():
  gazetteer = Gazetteer.from_titles(["Hagadu and Other Stories", "Return to Doga", "Doga", "Mercury (planet)",
                                     "The", "In the", "1921", "x", "Tedimide Hufo"])
  assert len(gazetteer) == 5  # "The", "In the" (common words), "1921" (no letter) and "x" are skipped.
  assert "Mercury" in gazetteer and "Mercury (planet)" in gazetteer and "The" not in gazetteer
  extractor = RuleBasedExtractor(gazetteer)
  text = "He wrote Hagadu and Other Stories and made Return to Doga. Dogan is not Doga. mercury is a metal."
  assert _spans(text, extractor) == [("Hagadu and Other Stories", "term"), ("Return to Doga", "term"),
                                      ("Dogan", "name"), ("Doga", "name")]
  assert gazetteer.find("The Mercury rose; Tedimide Hufo's book.") == [(4, 11), (18, 31)]
  assert gazetteer.find("") == [] and Gazetteer().find("Doga") == []


def test_gazetteer_prefers_the_longest_title_at_a_start():
  gazetteer = Gazetteer.from_titles(["Kupe", "Kupe River", "Kupe River Bridge"])
  assert gazetteer.find("the Kupe River Bridge and the Kupe River and Kupe.") == [(4, 21), (30, 40), (45, 49)]


def test_gazetteer_scales_without_slowing_matching():
  titles = [f"Title{i} of Place{i % 977}" for i in range(200_000)] + ["Doga"]
  start = time.perf_counter()
  gazetteer = Gazetteer.from_titles(titles)
  built = time.perf_counter() - start
  text = "Doga lies near Title123 of Place123 and Title5 of Place9. " * 4
  start = time.perf_counter()
  for _ in range(200):
    found = gazetteer.find(text)
  per_call = (time.perf_counter() - start) / 200
  assert len(found) == 8
  assert built < 20 and per_call < 0.002


def test_overlaps_resolve_to_the_longest_span():
  gazetteer = Gazetteer.from_titles(["The Road to Doga", "Doga"])
  extractor = RuleBasedExtractor(gazetteer)
  # The gazetteer's "The Road to Doga" beats the names "Road" and "Doga" inside it; the date
  # beats the year and number in it; the quoted title ties with the gazetteer term and wins.
  assert _spans("He made The Road to Doga on 3 May 1921.", extractor) == [
      ("The Road to Doga", "term"), ("3 May 1921", "date")]
  assert _spans('He made "The Road to Doga" in 1921.', extractor) == [
      ("The Road to Doga", "title"), ("1921", "year")]


def test_resolve_overlaps_directly():
  text = "abcdefghij"
  spans = ss.resolve_overlaps(text, [(0, 3, "name"), (2, 8, "term"), (8, 10, "number"), (8, 10, "name"),
                                     (0, 2, "date")])
  assert spans == [Span(0, 2, "ab", "date"), Span(2, 8, "cdefgh", "term"), Span(8, 10, "ij", "number")]


def test_spans_are_sorted_and_disjoint(tiny_world):
  extractor = RuleBasedExtractor(_world_gazetteer(tiny_world))
  for passage in tiny_world.passages[:200]:
    spans = extractor.extract(passage.text)
    assert spans == sorted(spans)
    assert all(a.end <= b.start for a, b in zip(spans, spans[1:]))


def test_empty_and_odd_text():
  extractor = RuleBasedExtractor(Gazetteer.from_titles(["Doga"]))
  for text in ["", " ", "\n\n", '"', '""', "....", "“”", "12,", "$", "-", "Doga's", "Z"]:
    for s in extractor.extract(text):
      assert text[s.start:s.end] == s.text


@pytest.mark.parametrize("text,kind", [
    ("3 May 1921", "date"), ("May 3, 1921", "date"), ("1921-05-03", "date"), ("1921", "year"),
    ("753 BC", "year"), ("1,234", "number"), ("1,234 km", "number"), ("12%", "number"), ("45 employees", "number"),
    ("Ludwig van Beethoven", "name"), ("Tuzalian", "name"), ("load factor", "term"), ("Return to Doga", "term"),
    ("May", "term"),
])
def test_span_kind(text, kind):
  assert span_kind(text) == kind


# -- MaskSearch's filters ---------------------------------------------------------------


def _span(paragraph: str, text: str, kind: str = "name") -> Span:
  start = paragraph.index(text)
  return Span(start, start + len(text), text, kind)


def test_filter_drops_the_title_in_any_case_and_without_disambiguation():
  paragraph = "Mercury is a planet near the Sun. MERCURY was named by Romans."
  spans = [_span(paragraph, "Mercury"), _span(paragraph, "Sun"), _span(paragraph, "MERCURY"),
           _span(paragraph, "Romans")]
  kept = filter_candidates(spans, paragraph, "Mercury (planet)")
  assert [s.text for s in kept] == ["Sun", "Romans"]


def test_filter_drops_parts_of_the_title():
  paragraph = "Hufo was a poet who wrote about Lazera and the Tedimide Park."
  spans = [_span(paragraph, "Hufo"), _span(paragraph, "Lazera"), _span(paragraph, "Tedimide Park")]
  kept = filter_candidates(spans, paragraph, "Tedimide Hufo")
  assert [s.text for s in kept] == ["Lazera", "Tedimide Park"]


def test_filter_drops_text_that_occurs_more_than_once():
  paragraph = "Doga lies in Lazera. The Lazeran city of Doga has 1,234 people and Kupe."
  spans = [Span(0, 4, "Doga", "name"), _span(paragraph, "Lazera"), _span(paragraph, "1,234", "number"),
           _span(paragraph, "Kupe")]
  kept = filter_candidates(spans, paragraph, "Somewhere")
  # "Doga" twice; "Lazera" also inside "Lazeran" (MaskSearch's substring count).
  assert [s.text for s in kept] == ["1,234", "Kupe"]


def test_filter_keeps_order_and_handles_no_title():
  paragraph = "Kupe met Doga."
  spans = [_span(paragraph, "Doga"), _span(paragraph, "Kupe")]
  assert filter_candidates(spans, paragraph, None) == spans
  assert filter_candidates(spans, paragraph, "") == spans
  assert filter_candidates([], paragraph, "Kupe") == []


def test_filters_on_the_world(tiny_world):
  extractor = RuleBasedExtractor(_world_gazetteer(tiny_world))
  kept_total = dropped = 0
  for passage in tiny_world.passages:
    spans = extractor.extract(passage.text)
    kept = filter_candidates(spans, passage.text, passage.title)
    kept_total += len(kept)
    dropped += len(spans) - len(kept)
    for s in kept:
      assert s.text.lower() != passage.title.lower()
      assert passage.text.count(s.text) == 1
  assert kept_total > dropped > 0
