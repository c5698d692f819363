"""Multi-hop questions about the embedded world, in 2WikiMultiHopQA's four types.

- compositional: a chain of 2 to 4 facts ("Where was the director of X born?").
- inference: a kinship relation derived from 2 to 4 facts ("Who is the paternal
  grandfather of X?").
- comparison: one attribute of two entities, 2 facts ("Who was born first, A or B?",
  or a yes/no question).
- bridge_comparison: an attribute of what two entities lead to, 4 facts
  ("Which film has the director who was born first, A or B?").

Each question keeps its gold answer, aliases, the evidence triples, and one
single-hop sub-question per fact (MuSiQue's decomposition, `#k` naming the k-th
answer).
"""

from __future__ import annotations

import random
import re
from typing import Any, Callable

from masksearch_jax.data.world_types import RELATIONS, Date, Entity, Fact, Quantity, Question

# Single-hop question per relation; {x} is the subject's name or a noun phrase.
ASK: dict[str, str] = {
    "date_of_birth": "When was {x} born?",
    "date_of_death": "When did {x} die?",
    "place_of_birth": "Where was {x} born?",
    "country_of_citizenship": "What is the nationality of {x}?",
    "occupation": "What is the occupation of {x}?",
    "father": "Who is the father of {x}?",
    "mother": "Who is the mother of {x}?",
    "spouse": "Who is the spouse of {x}?",
    "employer": "Which organisation did {x} work for?",
    "educated_at": "Where did {x} study?",
    "country": "In which country is {x}?",
    "population": "What is the population of {x}?",
    "inception": "When was {x} founded?",
    "area": "What is the area of {x}?",
    "capital": "What is the capital of {x}?",
    "country_population": "What is the population of {x}?",
    "country_area": "What is the area of {x}?",
    "independence": "When did {x} become independent?",
    "founded": "When was {x} founded?",
    "headquarters": "In which city is {x} headquartered?",
    "founded_by": "Who founded {x}?",
    "employees": "How many employees does {x} have?",
    "director": "Who directed {x}?",
    "publication_date": "When was {x} released?",
    "duration": "How long is {x}?",
    "production_company": "Which studio produced {x}?",
    "author": "Who wrote {x}?",
    "publication_year": "When was {x} published?",
    "publisher": "Who published {x}?",
    "pages": "How many pages does {x} have?",
    "length": "How long is {x}?",
    "source": "On which mountain does {x} rise?",
    "elevation": "How high is {x}?",
    "mountain_country": "In which country is {x}?",
    "first_ascent": "When was {x} first climbed?",
    "first_ascended_by": "Who first climbed {x}?",
}

# Noun phrase for the object of an entity-valued relation, used inside a longer chain.
NOUN_PHRASE: dict[str, str] = {
    "place_of_birth": "the birthplace of {x}",
    "country_of_citizenship": "the country of citizenship of {x}",
    "father": "the father of {x}",
    "mother": "the mother of {x}",
    "spouse": "the spouse of {x}",
    "employer": "the employer of {x}",
    "educated_at": "the university where {x} studied",
    "country": "the country where {x} is located",
    "capital": "the capital of {x}",
    "headquarters": "the city where {x} is headquartered",
    "founded_by": "the founder of {x}",
    "director": "the director of {x}",
    "production_company": "the studio that produced {x}",
    "author": "the author of {x}",
    "publisher": "the publisher of {x}",
    "source": "the mountain where {x} rises",
    "mountain_country": "the country where {x} is located",
    "first_ascended_by": "the first person to climb {x}",
}

# Derived kinship relations (2WikiMultiHopQA's inference type): name -> chain of base relations.
KINSHIP: dict[str, tuple[str, ...]] = {
    "paternal grandfather": ("father", "father"),
    "paternal grandmother": ("father", "mother"),
    "maternal grandfather": ("mother", "father"),
    "maternal grandmother": ("mother", "mother"),
    "father-in-law": ("spouse", "father"),
    "mother-in-law": ("spouse", "mother"),
    "paternal great-grandfather": ("father", "father", "father"),
    "maternal great-grandmother": ("mother", "mother", "mother"),
    "paternal grandfather-in-law": ("spouse", "father", "father"),
    "paternal great-great-grandfather": ("father", "father", "father", "father"),
    "maternal great-great-grandmother": ("mother", "mother", "mother", "mother"),
    "paternal great-grandfather-in-law": ("spouse", "father", "father", "father"),
}

# Comparison questions: (kind, relation, question, pick) where pick says which side answers.
COMPARISONS: tuple[tuple[str, str, str, str], ...] = (
    ("person", "date_of_birth", "Who was born first, {a} or {b}?", "min"),
    ("person", "date_of_birth", "Who was born later, {a} or {b}?", "max"),
    ("person", "date_of_death", "Who died first, {a} or {b}?", "min"),
    ("person", "country_of_citizenship", "Are {a} and {b} of the same nationality?", "same"),
    ("film", "publication_date", "Which film came out first, {a} or {b}?", "min"),
    ("film", "duration", "Which film is longer, {a} or {b}?", "max"),
    ("book", "publication_year", "Which book was published first, {a} or {b}?", "min"),
    ("book", "pages", "Which book has more pages, {a} or {b}?", "max"),
    ("city", "population", "Which city has more inhabitants, {a} or {b}?", "max"),
    ("city", "country", "Are {a} and {b} in the same country?", "same"),
    ("river", "length", "Which river is longer, {a} or {b}?", "max"),
    ("mountain", "elevation", "Which mountain is higher, {a} or {b}?", "max"),
    ("organisation", "founded", "Which organisation was founded first, {a} or {b}?", "min"),
)

# Bridge comparisons: (kind, bridge relation, compared relation, question, pick).
BRIDGE_COMPARISONS: tuple[tuple[str, str, str, str, str], ...] = (
    ("film", "director", "date_of_birth", "Which film has the director who was born first, {a} or {b}?", "min"),
    ("film", "director", "date_of_death", "Which film has the director who died later, {a} or {b}?", "max"),
    ("film", "director", "country_of_citizenship",
     "Do the directors of {a} and {b} have the same nationality?", "same"),
    ("book", "author", "date_of_birth", "Which book has the author who was born first, {a} or {b}?", "min"),
    ("book", "author", "date_of_death", "Which book has the author who died first, {a} or {b}?", "min"),
    ("organisation", "founded_by", "date_of_birth",
     "Which organisation has the founder who was born later, {a} or {b}?", "max"),
    ("person", "father", "date_of_birth", "Whose father was born first, {a} or {b}?", "min"),
    ("city", "country", "country_population",
     "Which city is in the country with more inhabitants, {a} or {b}?", "max"),
)

_TYPE_WEIGHTS = {"compositional": 0.3, "inference": 0.2, "comparison": 0.25, "bridge_comparison": 0.25}
_MAX_TRIES_PER_QUESTION = 60


def template_words() -> frozenset[str]:
  """The lower-case words of every question template (kept out of invented names)."""
  texts = list(ASK.values()) + list(NOUN_PHRASE.values()) + list(KINSHIP)
  texts += [c[2] for c in COMPARISONS] + [c[3] for c in BRIDGE_COMPARISONS]
  words: set[str] = set()
  for text in texts:
    words.update(w.lower() for w in re.findall(r"[A-Za-z]+", re.sub(r"\{\w+\}", " ", text)))
  return frozenset(words)


class _Asker:
  """Draws questions from a finished world."""

  def __init__(self, entities: dict[str, Entity], facts_by_subject: dict[str, dict[str, list[Fact]]],
               rng: random.Random):
    self.entities = entities
    self.fs = facts_by_subject
    self.rng = rng
    self.by_kind: dict[str, list[Entity]] = {}
    self.by_kind_split: dict[tuple[str, str], list[Entity]] = {}
    for e in entities.values():
      self.by_kind.setdefault(e.kind, []).append(e)
      self.by_kind_split.setdefault((e.kind, e.split), []).append(e)

  def fact(self, entity: Entity, relation: str) -> Fact | None:
    facts = self.fs.get(entity.id, {}).get(relation)
    return facts[0] if facts and len(facts) == 1 else None

  # -- how values read ---------------------------------------------------------

  def text(self, fact: Fact) -> str:
    return self.answer_forms(fact)[0]

  def answer_forms(self, fact: Fact) -> list[str]:
    """The canonical answer for a fact's object, then its aliases."""
    obj = fact.obj
    if fact.is_entity_valued:
      entity = self.entities[obj]
      forms = [entity.name]
      if entity.kind == "country":
        forms.append(entity.attrs["demonym"])
      return forms
    if isinstance(obj, (Date, Quantity)):
      return obj.aliases()
    return [str(obj)]

  def triple(self, fact: Fact) -> list[str]:
    return [self.entities[fact.subject].name, RELATIONS[fact.relation][0], self.text(fact)]

  def make(self, qtype: str, text: str, answer_forms: list[str], facts: list[Fact], topics: list[Entity],
           sub_questions: list[list[str]]) -> Question:
    return Question(id="", type=qtype, question=text, answer=answer_forms[0],
                    aliases=list(dict.fromkeys(a for a in answer_forms[1:] if a != answer_forms[0])),
                    hops=len(facts), evidence=[self.triple(f) for f in facts], fact_ids=[f.id for f in facts],
                    entity_ids=[t.id for t in topics], split=topics[0].split, sub_questions=sub_questions)

  # -- the four types ----------------------------------------------------------

  def walk(self, start: Entity, relations: tuple[str, ...]) -> list[Fact] | None:
    """The facts along `relations` from `start`, or None if a link is missing or loops back."""
    facts, seen, node = [], {start.id}, start
    for relation in relations:
      fact = self.fact(node, relation)
      if fact is None:
        return None
      facts.append(fact)
      if fact.is_entity_valued:
        if fact.obj in seen:
          return None
        seen.add(fact.obj)
        node = self.entities[fact.obj]
    return facts

  def chain_question(self, qtype: str, start: Entity, facts: list[Fact], text: str) -> Question:
    subs, previous = [], start.name
    for i, fact in enumerate(facts):
      subs.append([ASK[fact.relation].format(x=previous), self.text(fact)])
      previous = f"#{i + 1}"
    return self.make(qtype, text, self.answer_forms(facts[-1]), facts, [start], subs)

  def compositional(self) -> Question | None:
    rng = self.rng
    hops = rng.randint(2, 4)
    node = rng.choice(self.entities_with_links())
    start, relations = node, []
    for _ in range(hops - 1):
      options = [r for r in NOUN_PHRASE if RELATIONS[r][1] == node.kind and self.fact(node, r)]
      if not options:
        return None
      relation = rng.choice(options)
      relations.append(relation)
      node = self.entities[self.fact(node, relation).obj]
    final = [r for r in ASK if RELATIONS[r][1] == node.kind and self.fact(node, r)]
    if not final:
      return None
    relations.append(rng.choice(final))
    facts = self.walk(start, tuple(relations))
    if facts is None:
      return None
    phrase = start.name
    for relation in relations[:-1]:
      phrase = NOUN_PHRASE[relation].format(x=phrase)
    return self.chain_question("compositional", start, facts, ASK[relations[-1]].format(x=phrase))

  def entities_with_links(self) -> list[Entity]:
    if not hasattr(self, "_linked"):
      self._linked = [e for e in self.entities.values() if any(
          RELATIONS[r][1] == e.kind and self.fact(e, r) for r in NOUN_PHRASE)]
    return self._linked

  def inference(self) -> Question | None:
    name = self.rng.choice(list(KINSHIP))
    person = self.rng.choice(self.by_kind["person"])
    facts = self.walk(person, KINSHIP[name])
    if facts is None:
      return None
    return self.chain_question("inference", person, facts, f"Who is the {name} of {person.name}?")

  def pair(self, kind: str) -> tuple[Entity, Entity] | None:
    """Two entities of `kind` from the same split (so held-out splits get their share of pairs)."""
    pool = self.by_kind.get(kind, [])
    if len(pool) < 2:
      return None
    a = self.rng.choice(pool)
    same_split = self.by_kind_split[(kind, a.split)]
    if len(same_split) < 2:
      return None
    b = self.rng.choice(same_split)
    return (a, b) if b is not a else None

  def compare(self, a: Entity, b: Entity, fa: Fact, fb: Fact, pick: str) -> list[str] | None:
    """The answer forms of a comparison between `a` and `b` by the values of `fa`, `fb`."""
    if pick == "same":
      return ["yes"] if fa.obj == fb.obj else ["no"]
    va = fa.obj.value if isinstance(fa.obj, Quantity) else fa.obj
    vb = fb.obj.value if isinstance(fb.obj, Quantity) else fb.obj
    if va == vb:
      return None
    first = (va < vb) == (pick == "min")
    return [(a if first else b).name]

  def comparison(self) -> Question | None:
    kind, relation, template, pick = self.rng.choice(COMPARISONS)
    pair = self.pair(kind)
    if pair is None:
      return None
    a, b = pair
    fa, fb = self.fact(a, relation), self.fact(b, relation)
    if fa is None or fb is None:
      return None
    answer = self.compare(a, b, fa, fb, pick)
    if answer is None:
      return None
    subs = [[ASK[relation].format(x=a.name), self.text(fa)], [ASK[relation].format(x=b.name), self.text(fb)]]
    return self.make("comparison", template.format(a=a.name, b=b.name), answer, [fa, fb], [a, b], subs)

  def bridge_comparison(self) -> Question | None:
    kind, bridge, relation, template, pick = self.rng.choice(BRIDGE_COMPARISONS)
    pair = self.pair(kind)
    if pair is None:
      return None
    a, b = pair
    chain_a, chain_b = self.walk(a, (bridge, relation)), self.walk(b, (bridge, relation))
    if chain_a is None or chain_b is None or chain_a[0].obj == chain_b[0].obj:
      return None
    answer = self.compare(a, b, chain_a[1], chain_b[1], pick)
    if answer is None:
      return None
    subs = [[ASK[bridge].format(x=a.name), self.text(chain_a[0])],
            [ASK[relation].format(x="#1"), self.text(chain_a[1])],
            [ASK[bridge].format(x=b.name), self.text(chain_b[0])],
            [ASK[relation].format(x="#3"), self.text(chain_b[1])]]
    return self.make("bridge_comparison", template.format(a=a.name, b=b.name), answer, chain_a + chain_b, [a, b],
                     subs)


def ask_questions(entities: dict[str, Entity], facts_by_subject: dict[str, dict[str, list[Fact]]],
                  rng: random.Random, count: int) -> list[Question]:
  """Draws about `count` distinct questions, shared among the types by `_TYPE_WEIGHTS`.

  A type whose questions run out (a tiny world has few distinct pairs) yields fewer.
  """
  asker = _Asker(entities, facts_by_subject, rng)
  makers: dict[str, Callable[[], Any]] = {
      "compositional": asker.compositional, "inference": asker.inference,
      "comparison": asker.comparison, "bridge_comparison": asker.bridge_comparison,
  }
  questions: list[Question] = []
  seen: set[str] = set()
  for qtype, weight in _TYPE_WEIGHTS.items():
    target = round(count * weight)
    made, tries = 0, 0
    while made < target and tries < target * _MAX_TRIES_PER_QUESTION:
      tries += 1
      question = makers[qtype]()
      if question is None or question.question in seen:
        continue
      seen.add(question.question)
      question.id = f"{qtype[:4]}-{len(questions):07d}"
      questions.append(question)
      made += 1
  return questions
