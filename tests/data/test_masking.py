"""Tests of masksearch_jax.data.masking: MaskSearch's sampler, perplexity selection, RAMP records."""

from __future__ import annotations

import bz2
import collections
import gzip
import json
import random
import re

import pytest

from masksearch_jax.agent.protocol import MASK, RAMP_INSTRUCTION
from masksearch_jax.data import masking
from masksearch_jax.data.passage import CorpusFormatError
from masksearch_jax.data.spans import Span
from masksearch_jax.data.world_types import ENTITY_KINDS, MONTHS, Date

_KINDS = {"date": "date", "year": "year", "quantity": "number", "demonym": "name",
          **{kind: "name" for kind in ENTITY_KINDS}}


def _spans(paragraph: str, *pieces: tuple[str, str]) -> list[Span]:
  """Spans of the first occurrence of each `(text, kind)` in `paragraph`."""
  out = []
  for text, kind in pieces:
    start = paragraph.index(text)
    out.append(Span(start, start + len(text), text, kind))
  return out


def _occurrences(text: str, paragraph: str) -> int:
  return len(re.findall(rf"(?<!\w){re.escape(text)}(?!\w)", paragraph))


def world_candidates(passage) -> list[Span]:
  """The passage's own mentions as candidates, filtered as MaskSearch does: no page title, no
  text that occurs more than once in the paragraph (occupations are not salient spans)."""
  out = []
  for m in passage.mentions:
    if m.kind not in _KINDS:
      continue
    text = passage.text[m.start:m.end]
    if text == passage.title or m.ref == passage.entity or _occurrences(text, passage.text) > 1:
      continue
    out.append(Span(m.start, m.end, text, _KINDS[m.kind]))
  return out


PARAGRAPH = ("Lutilo Kirora wrote The Grand Old Library in 1921 at Mugazage, "
             "a city of 7,666 people, and died on 3 May 1950.")


@pytest.fixture
def candidates() -> list[Span]:
  return _spans(PARAGRAPH, ("Lutilo Kirora", "name"), ("The Grand Old Library", "title"), ("1921", "year"),
                ("Mugazage", "name"), ("7,666", "number"), ("3 May 1950", "date"))


# -- the mask count ------------------------------------------------------------


def test_mask_count_follows_masksearch_rule():
  seen = {n: collections.Counter(masking.choose_mask_count(n, random.Random(seed)) for seed in range(2000))
          for n in range(11)}
  assert set(seen[0]) == {0}
  assert set(seen[1]) == {1}
  assert set(seen[2]) == {1, 2}
  assert 0.45 < seen[2][1] / 2000 < 0.55
  assert set(seen[3]) == {3}  # The generator's randint(3, min(3, 4)).
  for n in range(4, 11):
    assert set(seen[n]) == {4}
  with pytest.raises(ValueError):
    masking.choose_mask_count(-1, random.Random(0))


def test_native_count_in_sample_masks(candidates):
  expected = {1: {1}, 2: {1, 2}, 3: {3}, 4: {4}, 5: {4}}
  for n, counts in expected.items():
    results = [masking.sample_masks(PARAGRAPH, candidates[1:1 + n], random.Random(s)) for s in range(300)]
    assert None not in results  # No candidate but the first starts the paragraph.
    assert {len(r) for r in results} == counts, n


# -- weights -------------------------------------------------------------------


def test_weights_are_words_with_numbers_at_the_maximum(candidates):
  assert masking.candidate_weights(candidates) == [2, 4, 4, 1, 4, 3]
  assert [masking.is_number(s) for s in candidates] == [False, False, True, False, True, False]
  # A digit string of another kind is a number too (the generator tests isdigit()).
  assert masking.is_number(Span(0, 2, "42", "term"))
  assert masking.candidate_weights([Span(0, 4, "1921", "year"), Span(5, 10, "7,666", "number")]) == [1, 1]
  assert masking.span_weight(Span(0, 10, "3 May 1950", "date")) == 3


def test_draw_frequencies_match_weights(candidates):
  rng = random.Random(7)
  pool = candidates[1:]  # "Lutilo Kirora" starts the paragraph and would be skipped.
  draws = 40_000
  counts = collections.Counter(masking.sample_masks(PARAGRAPH, pool, rng, num_masks=1)[0].text
                               for _ in range(draws))
  weights = masking.candidate_weights(pool)
  for span, weight in zip(pool, weights):
    expected = weight / sum(weights)
    assert abs(counts[span.text] / draws - expected) < 0.01, (span.text, counts[span.text] / draws, expected)
  # Numbers (1921, 7,666) weigh as much as the longest name, four times the one-word name.
  assert counts["1921"] > 3 * counts["Mugazage"]


def test_draws_are_without_replacement_and_never_overlap():
  paragraph = "Born in Gedoro on 3 May 1921, she moved to Pupiva in 1950."
  pool = _spans(paragraph, ("Gedoro", "name"), ("3 May 1921", "date"), ("Pupiva", "name"), ("1950", "year"))
  pool.append(Span(paragraph.index("1921"), paragraph.index("1921") + 4, "1921", "year"))
  for seed in range(300):
    chosen = masking.sample_masks(paragraph, pool, random.Random(seed), num_masks=4)
    assert chosen is not None and len(set(chosen)) == 4
    assert all(a.end <= b.start for a, b in zip(chosen, chosen[1:]))
  # Five candidates but only four fit side by side: five masks are impossible.
  assert all(masking.sample_masks(paragraph, pool, random.Random(s), num_masks=5) is None for s in range(50))


def test_seeded_determinism(candidates):
  runs = [[masking.sample_masks(PARAGRAPH, candidates[1:], random.Random(seed), num_masks=2)
           for seed in range(50)] for _ in range(2)]
  assert runs[0] == runs[1]
  assert len({tuple(c) for c in runs[0]}) > 5
  # A different candidate order gives the same draws: candidates are sorted first.
  shuffled = candidates[1:][::-1]
  assert runs[0] == [masking.sample_masks(PARAGRAPH, shuffled, random.Random(seed), num_masks=2)
                     for seed in range(50)]


# -- skipping ------------------------------------------------------------------


def test_skip_when_the_masked_text_starts_with_the_mask(candidates):
  first = candidates[0]
  assert first.start == 0
  assert all(masking.sample_masks(PARAGRAPH, [first], random.Random(s)) is None for s in range(20))
  # Leading whitespace is no subject either.
  padded = "  " + PARAGRAPH
  shifted = Span(2, 2 + len(first.text), first.text, first.kind)
  assert masking.sample_masks(padded, [shifted], random.Random(0), num_masks=1) is None
  results = [masking.sample_masks(PARAGRAPH, candidates[:2], random.Random(s), num_masks=1) for s in range(400)]
  kept = [r for r in results if r is not None]
  assert 0 < len(kept) < len(results)
  assert all(r[0] != first for r in kept)
  # Same rule for the perplexity strategy: the first span is the hardest, so it is skipped.
  scorer = masking.CallableScorer(lambda p, s: -s.start)
  assert masking.select_masks(PARAGRAPH, candidates, random.Random(0), strategy="perplexity",
                              scorer=scorer, num_masks=2) is None


def test_skip_without_enough_candidates_or_with_a_mask_in_the_text(candidates):
  assert masking.sample_masks(PARAGRAPH, [], random.Random(0)) is None
  assert masking.sample_masks(PARAGRAPH, candidates[1:3], random.Random(0), num_masks=3) is None
  text = "A [mask] token in Gedoro."
  assert masking.sample_masks(text, _spans(text, ("Gedoro", "name")), random.Random(0)) is None
  with pytest.raises(ValueError, match="does not match"):
    masking.sample_masks(PARAGRAPH, [Span(0, 4, "nope", "name")], random.Random(0))
  with pytest.raises(ValueError, match="num_masks"):
    masking.sample_masks(PARAGRAPH, candidates, random.Random(0), num_masks=0)


# -- masked paragraphs and records ---------------------------------------------


def test_mask_and_fill(candidates):
  chosen = [candidates[4], candidates[1]]
  masked = masking.mask_paragraph(PARAGRAPH, chosen)
  assert masked == ("Lutilo Kirora wrote [mask] in 1921 at Mugazage, a city of [mask] people, and died on "
                    "3 May 1950.")
  assert masking.fill_masks(masked, ["The Grand Old Library", "7,666"]) == PARAGRAPH
  with pytest.raises(ValueError):
    masking.fill_masks(masked, ["x"])
  date = candidates[5]
  with pytest.raises(ValueError, match="overlap"):
    masking.mask_paragraph(PARAGRAPH, [date, Span(date.end - 4, date.end, "1950", "year")])
  with pytest.raises(ValueError, match="already contains"):
    masking.mask_paragraph("x [mask] y", [Span(0, 1, "x", "name")])


def test_record_has_masksearch_shape_exactly(candidates):
  record = masking.make_record(PARAGRAPH, [candidates[4], candidates[2]], candidates[::-1], "Lutilo Kirora")
  assert record == {
      "query": ("Lutilo Kirora wrote The Grand Old Library in [mask] at Mugazage, a city of [mask] people, "
                "and died on 3 May 1950.\n\nFill in all the [mask] and output the whole paragraph without "
                "changing its format."),
      "answer": PARAGRAPH,
      "ext": {
          "mask_num": 2,
          "masks": ["1921", "7,666"],
          "entities": ["Lutilo Kirora", "The Grand Old Library", "1921", "Mugazage", "7,666", "3 May 1950"],
          "source": "wiki",
          "title": "Lutilo Kirora",
      },
  }
  assert list(record) == ["query", "answer", "ext"]
  assert list(record["ext"]) == ["mask_num", "masks", "entities", "source", "title"]
  assert record["query"].endswith("\n\n" + RAMP_INSTRUCTION)
  assert masking.split_query(record["query"]) == (masking.mask_paragraph(PARAGRAPH, [candidates[2], candidates[4]]),
                                                  RAMP_INSTRUCTION)
  masking.check_record(record)
  assert masking.record_fills(record) == ["1921", "7,666"]
  with pytest.raises(ValueError):
    masking.make_record(PARAGRAPH, [], candidates, "t")


def test_ensure_title_prepends_a_missing_title(candidates):
  text, shifted = masking.ensure_title(PARAGRAPH, "Mount Medu (mountain)", candidates)
  assert text == "Mount Medu " + PARAGRAPH
  assert all(text[s.start:s.end] == s.text for s in shifted)
  assert masking.ensure_title(PARAGRAPH, "Mugazage (city)", candidates) == (PARAGRAPH, candidates)


def _world_records(world, limit=200, num_masks=None):
  records = []
  for i, passage in enumerate(world.passages):
    cands = world_candidates(passage)
    chosen = masking.sample_masks(passage.text, cands, random.Random(i), num_masks)
    if chosen:
      records.append(masking.make_record(passage.text, chosen, cands, passage.title, source="world"))
    if len(records) == limit:
      break
  return records


@pytest.mark.parametrize("name", ["ramp.jsonl", "ramp.jsonl.gz", "ramp.jsonl.bz2"])
def test_jsonl_round_trip(tiny_world, tmp_path, name):
  records = _world_records(tiny_world)
  unicode = "Écrit à Zürich en 1921 : « Ελληνικά »."
  spans = _spans(unicode, ("Zürich", "name"), ("Ελληνικά", "term"))
  records.append(masking.make_record(unicode, spans[:1], spans, "Zürich?"))
  path = tmp_path / name
  assert masking.write_ramp_jsonl(records, path) == len(records)
  assert list(masking.read_ramp_jsonl(path)) == records
  opener = {"gz": gzip.open, "bz2": bz2.open}.get(name.rsplit(".", 1)[-1], open)
  with opener(path, "rt", encoding="utf-8") as f:
    lines = f.read().split("\n")
  assert lines[-1] == "" and len(lines) == len(records) + 1
  assert "Zürich" in lines[-2]  # Non-ASCII kept as is, as MaskSearch writes it.
  assert [json.loads(line) for line in lines[:-1]] == records
  with pytest.raises(FileExistsError):
    masking.write_ramp_jsonl(records, path)
  assert masking.write_ramp_jsonl(records[:3], path, overwrite=True) == 3
  assert len(list(masking.read_ramp_jsonl(path))) == 3


def test_a_failed_write_leaves_nothing(tmp_path, candidates):
  good = masking.make_record(PARAGRAPH, candidates[1:2], candidates, "t")
  bad = dict(good, answer="something else")
  path = tmp_path / "out.jsonl"
  with pytest.raises(ValueError, match="record 1: "):
    masking.write_ramp_jsonl([good, bad], path)
  assert list(tmp_path.iterdir()) == []
  path.write_text("old\n")
  with pytest.raises(ValueError):
    masking.write_ramp_jsonl([good, bad], path, overwrite=True)
  assert path.read_text() == "old\n"
  assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def _good_record():
  paragraph = "Pupiva was founded in 1154 by Lutilo Kirora."
  spans = _spans(paragraph, ("1154", "year"), ("Lutilo Kirora", "name"))
  return masking.make_record(paragraph, spans, spans, "Pupiva")


def _broken(change):
  record = json.loads(json.dumps(_good_record()))
  change(record)
  return json.dumps(record)


_BAD_LINES = {
    "bad_json": ('{"query": ', "bad JSON"),
    "not_object": ("[1, 2]", "expected a JSON object"),
    "missing_ext": (_broken(lambda r: r.pop("ext")), "missing field 'ext'"),
    "missing_masks": (_broken(lambda r: r["ext"].pop("masks")), "missing field 'ext.masks'"),
    "mask_num_type": (_broken(lambda r: r["ext"].update(mask_num="2")), "'ext.mask_num' should be int"),
    "mask_num_bool": (_broken(lambda r: r["ext"].update(mask_num=True)), "'ext.mask_num' should be int"),
    "mask_not_string": (_broken(lambda r: r["ext"]["masks"].__setitem__(0, 1154)), r"ext.masks\[0\]"),
    "mask_num_wrong": (_broken(lambda r: r["ext"].update(mask_num=3)), "mask_num is 3"),
    "too_many_masks": (_broken(lambda r: r["ext"].update(mask_num=3, masks=["1154", "Lutilo Kirora", "x"])),
                       "has 2 \\[mask\\] but ext.masks has 3"),
    "wrong_fill": (_broken(lambda r: r["ext"].update(masks=["1155", "Lutilo Kirora"])), "does not give the answer"),
    "out_of_order": (_broken(lambda r: r["ext"].update(masks=["Lutilo Kirora", "1154"])), "does not give the answer"),
    "no_instruction": (_broken(lambda r: r.update(query=r["query"].split("\n\n")[0])), "instruction"),
    "instruction_without_blank_line": (_broken(lambda r: r.update(query=r["query"].replace("\n\n", " "))),
                                       "instruction"),
    "no_mask": (_broken(lambda r: r.update(query=r["answer"] + "\n\n" + RAMP_INSTRUCTION)), "no \\[mask\\]"),
}


@pytest.mark.parametrize("case", sorted(_BAD_LINES))
def test_malformed_lines_name_file_and_line(tmp_path, case):
  line, message = _BAD_LINES[case]
  path = tmp_path / "data.jsonl"
  good = json.dumps(_good_record(), ensure_ascii=False)
  path.write_text(f"{good}\n\n{good}\n{line}\n{good}\n", encoding="utf-8")
  with pytest.raises(CorpusFormatError, match=re.escape(f"{path}:4: ")) as info:
    list(masking.read_ramp_jsonl(path))
  assert re.search(message, str(info.value)), str(info.value)
  assert len(list(masking.read_ramp_jsonl(path, skip_bad=True))) == 3


def test_undecodable_bytes_name_the_line(tmp_path):
  path = tmp_path / "data.jsonl"
  path.write_bytes(json.dumps(_good_record()).encode() + b"\n\xff\xfe\n")
  with pytest.raises(CorpusFormatError, match=re.escape(f"{path}:2: bytes that are not UTF-8")):
    list(masking.read_ramp_jsonl(path))


def test_reads_records_of_masksearch_generator_with_strict_false(tmp_path):
  # What its generator writes when it draws an entity twice (random.choices) and lists masks in
  # its entity order: mask_num 3, masks [B, A, A], but only two [mask]s, A first.
  answer = "Pupiva was founded in 1154 by Lutilo Kirora."
  record = {"query": "Pupiva was founded in [mask] by [mask].\n\n" + RAMP_INSTRUCTION, "answer": answer,
            "ext": {"mask_num": 3, "masks": ["Lutilo Kirora", "1154", "1154"],
                    "entities": ["1154", "Lutilo Kirora", "Gedoro"], "source": "wiki", "title": "Pupiva"}}
  zh = {"query": "[mask]，字[mask]。\n\n" + masking.RAMP_INSTRUCTION_ZH, "answer": "甲乙，字丙。",
        "ext": {"mask_num": 2, "masks": ["甲乙", "丙"], "entities": ["甲乙", "丙"], "source": "wiki", "title": "丁"}}
  path = tmp_path / "masksearch.jsonl"
  path.write_text(json.dumps(record, ensure_ascii=False) + "\n" + json.dumps(zh, ensure_ascii=False) + "\n",
                  encoding="utf-8")
  with pytest.raises(CorpusFormatError, match="listed twice.*strict=False"):
    list(masking.read_ramp_jsonl(path))
  assert list(masking.read_ramp_jsonl(path, strict=False)) == [record, zh]
  assert masking.record_fills(record) == ["1154", "Lutilo Kirora"]
  # The Chinese instruction contains [mask] itself; only the paragraph's masks count.
  masking.check_record(zh)
  # Even leniently, the masks must explain the answer.
  with pytest.raises(ValueError, match="gives the answer"):
    masking.check_record(dict(record, answer=answer.replace("1154", "1155")), strict=False)


# -- the embedded world --------------------------------------------------------


def test_forced_counts_on_world_passages(tiny_world):
  """Every passage is tried with each forced count; report the share that yields a sample."""
  shares = {}
  for k in (1, 2, 3, 4):
    usable = 0
    for i, passage in enumerate(tiny_world.passages):
      cands = world_candidates(passage)
      chosen = masking.select_masks(passage.text, cands, random.Random(f"{i}/{k}"), num_masks=k)
      if chosen is None:
        continue
      usable += 1
      assert len(chosen) == k
      record = masking.make_record(passage.text, chosen, cands, passage.title, source="world")
      masking.check_record(record)
      assert masking.split_query(record["query"])[0].count(MASK) == k
    shares[k] = usable / len(tiny_world.passages)
  print("share of world passages usable per forced mask count:", shares)
  assert shares[1] >= 0.9 and shares[4] >= 0.6, shares
  assert shares[1] >= shares[2] >= shares[3] >= shares[4]


_DMY = re.compile(r"(\d{1,2}) ([A-Z][a-z]+) (\d{1,4})")
_MDY = re.compile(r"([A-Z][a-z]+) (\d{1,2}), (\d{1,4})")


def _date_forms(text: str) -> list[str]:
  """Every way the world writes the date `text` (pages state a fact in either format)."""
  for pattern, order in ((_DMY, (2, 1, 3)), (_MDY, (1, 2, 3))):
    match = pattern.fullmatch(text)
    if match:
      month, day, year = (match.group(i) for i in order)
      return Date(int(year), MONTHS.index(month) + 1, int(day)).aliases()
  return [text]


def test_masked_world_spans_are_stated_in_another_passage(tiny_world):
  """With the world's mentions as candidates, a masked span is stated in some other passage.

  Exact text for most kinds; a date may be written there in the other format (3 May 1921 /
  May 3, 1921), so dates count when any of their forms is found. Both shares are printed.
  """
  passages = tiny_world.passages
  joined = "\n".join(p.text for p in passages)
  starts, offset = [], 0
  for p in passages:
    starts.append(offset)
    offset += len(p.text) + 1

  def elsewhere(text: str, own: int) -> bool:
    lo, hi = starts[own], starts[own] + len(passages[own].text)
    for match in re.finditer(rf"(?<!\w){re.escape(text)}(?!\w)", joined):
      if not lo <= match.start() < hi:
        return True
    return False

  masked = exact = found = 0
  missed = collections.Counter()
  for i, passage in enumerate(passages):
    chosen = masking.sample_masks(passage.text, world_candidates(passage), random.Random(i))
    for span in chosen or []:
      masked += 1
      exact += elsewhere(span.text, i)
      forms = _date_forms(span.text) if span.kind == "date" else [span.text]
      if any(elsewhere(form, i) for form in forms):
        found += 1
      else:
        missed[span.kind] += 1
  print(f"masked world spans stated in another passage: same text {exact}/{masked} = {exact / masked:.4f}, "
        f"any date format {found}/{masked} = {found / masked:.4f}; missed {dict(missed)}")
  assert masked > 1000
  assert found / masked >= 0.95, (found / masked, missed)


# -- perplexity-based selection ------------------------------------------------


class _TableScorer:
  """The test's own 'model': a fixed loss per span text."""

  def __init__(self, table):
    self.table = table
    self.calls = 0

  def score_spans(self, paragraph, spans):
    self.calls += 1
    return [self.table[s.text] for s in spans]


class _BatchTableScorer(_TableScorer):

  def score_many(self, items):
    self.calls += 1
    return [[self.table[s.text] for s in spans] for _, spans in items]


_TABLE = {"Lutilo Kirora": 9.0, "The Grand Old Library": 0.5, "1921": 3.0, "Mugazage": 7.0, "7,666": 5.0,
          "3 May 1950": 1.0}


def test_perplexity_picks_the_highest_scores(candidates):
  scorer = _TableScorer(_TABLE)
  pool = candidates[1:]
  top = {1: ["Mugazage"], 2: ["Mugazage", "7,666"], 3: ["1921", "Mugazage", "7,666"],
         4: ["1921", "Mugazage", "7,666", "3 May 1950"]}
  for k, expected in top.items():
    chosen = masking.select_masks(PARAGRAPH, pool, random.Random(0), num_masks=k, strategy="perplexity",
                                  scorer=scorer)
    assert [s.text for s in chosen] == expected
    assert chosen == masking.select_hardest(PARAGRAPH, pool[::-1], scorer, k)
  # Native count: 5 candidates -> 4 masks, the four hardest, whatever the seed.
  assert all([s.text for s in masking.select_masks(PARAGRAPH, pool, random.Random(s), strategy="perplexity",
                                                    scorer=scorer)] == top[4] for s in range(20))
  # Random choice differs: the weighted sampler often takes the long title the scorer finds easiest.
  randoms = [[s.text for s in masking.select_masks(PARAGRAPH, pool, random.Random(s), num_masks=2)]
             for s in range(100)]
  assert sum(r != top[2] for r in randoms) > 80
  assert sum("The Grand Old Library" in r for r in randoms) > 30


def test_perplexity_ties_and_overlaps():
  paragraph = "Born in Gedoro on 3 May 1921, she moved to Pupiva in 1950."
  pool = _spans(paragraph, ("Gedoro", "name"), ("3 May 1921", "date"), ("Pupiva", "name"), ("1950", "year"))
  inner = Span(paragraph.index("1921"), paragraph.index("1921") + 4, "1921", "year")
  scores = {"Gedoro": 1.0, "3 May 1921": 2.0, "Pupiva": 1.0, "1950": 1.0, "1921": 5.0}
  scorer = masking.CallableScorer(lambda p, s: scores[s.text])
  # The year inside the date is hardest; the date overlapping it is passed over; ties by position.
  chosen = masking.select_hardest(paragraph, pool + [inner], scorer, 3)
  assert [s.text for s in chosen] == ["Gedoro", "1921", "Pupiva"]
  assert masking.hardest_of(pool, [1.0, 1.0, 1.0, 1.0], 2) == pool[:2]


class _ShortScorer:

  def score_spans(self, paragraph, spans):
    return [1.0, 2.0]


def test_scorer_interface_and_errors(candidates):
  batch = _BatchTableScorer(_TABLE)
  plain = _TableScorer(_TABLE)
  assert isinstance(batch, masking.BatchSpanScorer) and isinstance(plain, masking.SpanScorer)
  assert not isinstance(plain, masking.BatchSpanScorer)
  items = [(PARAGRAPH, candidates), (PARAGRAPH, candidates[2:4])]
  assert masking.score_many(batch, items) == masking.score_many(plain, items) == [
      [_TABLE[s.text] for s in candidates], [3.0, 7.0]]
  assert batch.calls == 1 and plain.calls == 2
  with pytest.raises(ValueError, match="2 scores for 6 spans"):
    masking.select_hardest(PARAGRAPH, candidates, _ShortScorer(), 2)
  with pytest.raises(ValueError, match="NaN"):
    masking.select_hardest(PARAGRAPH, candidates, masking.CallableScorer(lambda p, s: float("nan")), 2)
  with pytest.raises(ValueError, match="needs a scorer"):
    masking.select_masks(PARAGRAPH, candidates, random.Random(0), strategy="perplexity")
  with pytest.raises(ValueError, match="strategy"):
    masking.select_masks(PARAGRAPH, candidates, random.Random(0), strategy="hardest")
