"""Every fact of a generated world can be found by searching for its subject and relation."""

from __future__ import annotations

import collections

from masksearch_jax.data.world_types import RELATIONS, Date, Quantity
from masksearch_jax.retrieval.tantivy_index import TantivyRetriever


def test_facts_are_found_by_name_and_relation_words(tiny_world, tiny_index):
  world = tiny_world
  states = {p.id: set(p.facts) for p in world.passages}
  queries = [f"{world.entities[f.subject].name} {RELATIONS[f.relation][0]}" for f in world.facts]
  with TantivyRetriever(tiny_index) as retriever:
    results = retriever.batch_search(queries, top_k=5)
  missed = collections.Counter()
  for fact, hits in zip(world.facts, results):
    if not any(fact.id in states[hit.id] for hit in hits):
      missed[fact.relation] += 1
  found = 1 - sum(missed.values()) / len(world.facts)
  assert found >= 0.95, (found, missed.most_common(5))
  # Namesakes (people sharing a family surname) must not hide a person's own facts.
  person_facts = [f for f in world.facts if RELATIONS[f.relation][1] == "person"]
  person_missed = sum(missed[r] for r in RELATIONS if RELATIONS[r][1] == "person")
  assert 1 - person_missed / len(person_facts) >= 0.95


def _object_forms(world, fact):
  obj = fact.obj
  if fact.is_entity_valued:
    entity = world.entities[obj]
    return [entity.name] + ([entity.attrs["demonym"]] if "demonym" in entity.attrs else [])
  if isinstance(obj, Date):
    return [obj.dmy(), obj.mdy()]
  if isinstance(obj, Quantity):
    return [obj.text(), obj.number()]
  return [str(obj)]


def test_a_masked_fact_is_found_in_another_passage(tiny_world, tiny_index):
  """Mask a fact's object in its sentence, search with the page title and that sentence, and
  skip the passage itself: another passage stating the fact ranks in the top 5."""
  world = tiny_world
  states = {p.id: set(p.facts) for p in world.passages}
  queries, sources, fact_ids = [], [], []
  for passage in world.passages[::5]:
    sentences = passage.sentences()
    for fact_id, index in zip(passage.facts, passage.fact_sentences):
      fact = world.facts[fact_id]
      if fact.is_entity_valued and fact.obj == passage.entity:
        continue  # The object is the page itself, often only a pronoun here.
      sentence = sentences[index]
      form = next(f for f in _object_forms(world, fact) if f in sentence)
      queries.append(f"{passage.title} {sentence.replace(form, '[mask]')}")
      sources.append(passage.id)
      fact_ids.append(fact_id)
  with TantivyRetriever(tiny_index) as retriever:
    results = retriever.batch_search(queries, top_k=6)
  recovered = sum(any(fact_id in states[h.id] for h in [h for h in hits if h.id != source][:5])
                  for source, fact_id, hits in zip(sources, fact_ids, results))
  assert len(queries) > 1000
  assert recovered / len(queries) >= 0.85, recovered / len(queries)
