"""Tests of the embedded world generator (world, world_pages, world_questions)."""

from __future__ import annotations

import collections
import re

import pytest

from masksearch_jax.data import names, world_pages, world_questions
from masksearch_jax.data.world import WorldConfig, generate_world
from masksearch_jax.data.world_types import ENTITY_KINDS, QUESTION_TYPES, RELATIONS, Date, Quantity


def _dump(world):
  return ([p.to_json() for p in world.passages], [e.to_json() for e in world.entities.values()],
          [f.to_json() for f in world.facts], [q.to_json() for q in world.questions])


def test_same_seed_and_size_give_the_same_world(tiny_world):
  again = generate_world(WorldConfig(seed=0, size=400))
  assert _dump(again) == _dump(tiny_world)


def test_other_seed_gives_another_world(tiny_world):
  other = generate_world(WorldConfig(seed=1, size=400))
  shared = {e.name for e in other.entities.values()} & {e.name for e in tiny_world.entities.values()}
  assert len(shared) < 5
  assert [p.text for p in other.passages[:50]] != [p.text for p in tiny_world.passages[:50]]


def test_size_scales_the_world():
  small, large = generate_world(WorldConfig(seed=0, size=200)), generate_world(WorldConfig(seed=0, size=800))
  assert 3.5 < len(large.passages) / len(small.passages) < 4.5
  config = WorldConfig.for_num_passages(5000, seed=3)
  assert 4250 <= len(generate_world(config).passages) <= 5750


def test_all_kinds_with_dates_numbers_places_and_relations(tiny_world):
  kinds = collections.Counter(e.kind for e in tiny_world.entities.values())
  assert set(kinds) == set(ENTITY_KINDS) and len(kinds) >= 6
  relations = collections.Counter(f.relation for f in tiny_world.facts)
  assert set(relations) == set(RELATIONS), set(RELATIONS) - set(relations)
  values = [f.obj for f in tiny_world.facts]
  assert any(isinstance(v, Date) for v in values)
  assert {v.unit for v in values if isinstance(v, Quantity)} >= {"km", "metres", "minutes", "pages",
                                                                  "square kilometres"}
  for fact in tiny_world.facts:
    subject_kind, object_type = RELATIONS[fact.relation][1:]
    assert tiny_world.entities[fact.subject].kind == subject_kind
    if object_type in ENTITY_KINDS:
      assert tiny_world.entities[fact.obj].kind == object_type


def test_people_form_families_over_generations(tiny_world):
  people = [e for e in tiny_world.entities.values() if e.kind == "person"]
  by_id = {f.subject: {} for f in tiny_world.facts}
  for f in tiny_world.facts:
    by_id[f.subject].setdefault(f.relation, f.obj)
  for person in people:
    facts = by_id[person.id]
    if "father" in facts:
      father = tiny_world.entities[facts["father"]]
      assert father.attrs["gender"] == "male"
      assert tiny_world.entities[facts["mother"]].attrs["gender"] == "female"
      assert by_id[father.id]["date_of_birth"].year + 18 <= facts["date_of_birth"].year
      assert person.attrs["surname"] == father.attrs["surname"]
    if "date_of_death" in facts:
      assert facts["date_of_death"] > facts["date_of_birth"]
  depth = collections.Counter(p.attrs["generation"] for p in people)
  assert len(depth) == 6  # Deep enough for four-hop kinship questions.


def test_full_names_are_unique_and_name_words_come_from_the_syllables(tiny_world):
  entities = list(tiny_world.entities.values())
  assert len({e.name for e in entities}) == len(entities)
  fixed = world_pages.template_words() | world_questions.template_words() | {
      w.lower() for pattern in _title_patterns() for w in re.findall(r"[A-Za-z]+", pattern)}
  owners = collections.defaultdict(set)
  for e in entities:
    for word in e.name.split():
      if word.lower() in fixed:
        continue
      names.split_syllables(word)  # Raises if not made of the inventory's syllables.
      assert word.lower() not in world_pages.template_words()
      owners[word].add(e.id)
  # A name word is shared only as a family's surname, and each family descends from one founder.
  for word, ids in owners.items():
    if len(ids) > 1:
      members = [tiny_world.entities[i] for i in ids]
      assert all(m.kind == "person" and m.attrs["surname"] == word for m in members), word
      founders = [m for m in members if not any(f.relation == "father" for f in tiny_world.facts_of(m.id))]
      assert len(founders) == 1, word


def _title_patterns():
  from masksearch_jax.data import world
  suffixes = [s for _, sx, _ in world.ORGANISATION_TYPES.values() for s in sx]
  return list(world.FILM_TITLE_PATTERNS) + list(world.BOOK_TITLE_PATTERNS) + suffixes + ["Mount", "River"]


def test_templates_have_three_phrasings_with_the_same_slots():
  for kind, variants in world_pages.TEMPLATES.items():
    assert len(set(variants)) >= 3, kind
    slots = {world_pages.template_slots(v) for v in variants}
    assert len(slots) == 1, (kind, slots)


def test_every_fact_is_stated_in_at_least_two_passages(tiny_world):
  stated = collections.defaultdict(set)
  for passage in tiny_world.passages:
    for fact_id in passage.facts:
      stated[fact_id].add(passage.id)
  missing = [f for f in tiny_world.facts if len(stated[f.id]) < 2]
  assert not missing, missing[:5]
  # ... and in passages of at least two different pages for all but a handful.
  pages = {p.id: p.entity for p in tiny_world.passages}
  one_page = [f for f in tiny_world.facts if len({pages[p] for p in stated[f.id]}) < 2]
  assert not one_page, one_page[:5]


def test_each_fact_kind_is_written_in_three_or_more_ways():
  world = generate_world(WorldConfig(seed=2, size=2000))
  shapes = collections.defaultdict(set)
  relation_of = {f.id: f.relation for f in world.facts}
  pronouns = re.compile(r"^(He|She|His|Her|Its|The (city|country|film|book|river|mountain|"
                        r"university|company|film studio|publishing house|museum))\b")
  for passage in world.passages:
    sentences = passage.sentences()
    starts = passage.sentence_starts
    for fact_id, index in zip(passage.facts, passage.fact_sentences):
      start, text = starts[index], sentences[index]
      chars = list(text)
      for m in passage.mentions:
        if start <= m.start < start + len(text):
          for i in range(m.start - start, m.end - start):
            chars[i] = "\0"
      shape = re.sub("\0+", "X", "".join(chars))
      shape = pronouns.sub("X", re.sub(r"X(, X)*( and X)?", "X", shape))
      shapes[relation_of[fact_id]].add(shape)
  for relation in RELATIONS:
    assert len(shapes[relation]) >= 3, (relation, shapes[relation])


def test_passages_are_well_formed(tiny_world):
  ids = [p.id for p in tiny_world.passages]
  assert len(ids) == len(set(ids))
  for passage in tiny_world.passages:
    entity = tiny_world.entities[passage.entity]
    assert passage.title == entity.name and passage.split == entity.split
    assert " ".join(passage.sentences()) == passage.text
    assert passage.text.split(" ", 1)[0] not in ("He", "She", "His", "Her", "Its")  # Passages open with a name.
    assert len(passage.sentences()) == 1 or len(passage.text.split()) <= world_pages.MAX_PASSAGE_WORDS
    for m in passage.mentions:
      span = passage.text[m.start:m.end]
      if m.kind in ENTITY_KINDS:
        assert span == tiny_world.entities[m.ref].name
      elif m.kind == "date":
        assert re.fullmatch(r"\d{1,2} \w+ \d{4}|\w+ \d{1,2}, \d{4}", span), span
      elif m.kind == "year":
        assert re.fullmatch(r"\d{3,4}", span), span
      elif m.kind == "quantity":
        assert re.fullmatch(r"[\d,]+( [a-z ]+)?", span), span
      elif m.kind == "demonym":
        assert span == tiny_world.entities[m.ref].attrs["demonym"]


def test_passages_state_the_values_of_their_facts(tiny_world):
  for passage in tiny_world.passages[::7]:
    sentences = passage.sentences()
    for fact_id, index in zip(passage.facts, passage.fact_sentences):
      fact = tiny_world.facts[fact_id]
      obj = fact.obj
      if fact.is_entity_valued and obj == passage.entity:
        continue  # The page's own subject, possibly named by a pronoun ('The country includes ...').
      if fact.is_entity_valued:
        forms = [tiny_world.entities[obj].name, tiny_world.entities[obj].attrs.get("demonym", "")]
      elif isinstance(obj, Date):
        forms = [obj.dmy(), obj.mdy()]
      elif isinstance(obj, Quantity):
        forms = [obj.number()]
      else:
        forms = [str(obj)]
      assert any(form and form in sentences[index] for form in forms), (fact, sentences[index])


def test_splits_hold_out_entities(tiny_world):
  counts = collections.Counter(e.split for e in tiny_world.entities.values())
  total = sum(counts.values())
  assert abs(counts["dev"] / total - 0.1) < 0.04 and abs(counts["test"] / total - 0.1) < 0.04
  assert counts["train"] > counts["dev"] + counts["test"]


def test_questions_cover_four_types_and_two_to_four_hops(tiny_world):
  questions = tiny_world.questions
  assert set(q.type for q in questions) == set(QUESTION_TYPES)
  assert {q.hops for q in questions} == {2, 3, 4}
  assert len({q.id for q in questions}) == len(questions) == len({q.question for q in questions})
  for q in questions:
    assert q.hops == len(q.evidence) == len(q.fact_ids) == len(q.sub_questions)
    assert q.answer and q.answer not in q.aliases
    assert q.split == tiny_world.entities[q.entity_ids[0]].split
    assert all(tiny_world.entities[e].split == q.split for e in q.entity_ids)
    if q.type == "comparison":
      assert q.hops == 2
    if q.type == "bridge_comparison":
      assert q.hops == 4


def _object_text(world, fact):
  obj = fact.obj
  if fact.is_entity_valued:
    return world.entities[obj].name
  return obj.aliases()[0] if isinstance(obj, (Date, Quantity)) else str(obj)


def test_evidence_is_the_chain_of_facts_behind_the_answer(tiny_world):
  world = tiny_world
  for q in world.questions:
    facts = [world.facts[i] for i in q.fact_ids]
    for fact, triple in zip(facts, q.evidence):
      assert triple == [world.entities[fact.subject].name, RELATIONS[fact.relation][0], _object_text(world, fact)]
    if q.type in ("compositional", "inference"):
      assert facts[0].subject == q.entity_ids[0]
      for previous, fact in zip(facts, facts[1:]):
        assert fact.subject == previous.obj  # Each hop starts where the last one ended.
      assert q.answer == _object_text(world, facts[-1])
      assert world.entities[q.entity_ids[0]].name in q.question
    else:
      pairs = [(facts[0], facts[1])] if q.type == "comparison" else [(facts[1], facts[3])]
      a, b = (world.entities[e] for e in q.entity_ids)
      assert a.name in q.question and b.name in q.question
      fa, fb = pairs[0]
      if q.answer in ("yes", "no"):
        assert (q.answer == "yes") == (fa.obj == fb.obj)
      else:
        va, vb = (x.obj.value if isinstance(x.obj, Quantity) else x.obj for x in (fa, fb))
        assert va != vb and q.answer in (a.name, b.name)
        winner = a if q.answer == a.name else b
        # The question's wording says whether the smaller or the larger value wins.
        wants_smaller = re.search(r"\b(first|earlier)\b", q.question) is not None
        assert ((va < vb) == (winner is a)) == wants_smaller, q.question


def test_inference_questions_name_the_kinship(tiny_world):
  inference = [q for q in tiny_world.questions if q.type == "inference"]
  assert inference
  for q in inference:
    name = re.match(r"Who is the (.+) of .+\?$", q.question).group(1)
    chain = world_questions.KINSHIP[name]
    assert [tiny_world.facts[i].relation for i in q.fact_ids] == list(chain)


@pytest.mark.parametrize("relation", sorted(world_questions.ASK))
def test_every_askable_relation_exists(relation):
  assert relation in RELATIONS
