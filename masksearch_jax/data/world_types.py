"""Records of the embedded world: entities, facts, passages and questions.

Plain dataclasses with `to_json` / `from_json`, so a world written to disk can
be read back without the generator (and by users who never run it).
"""

from __future__ import annotations

import dataclasses
from typing import Any

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December")

ENTITY_KINDS = ("person", "city", "country", "organisation", "film", "book", "river", "mountain")


@dataclasses.dataclass(frozen=True, slots=True, order=True)
class Date:
  """A calendar date. Rendered as '3 May 1921' or 'May 3, 1921'."""

  year: int
  month: int
  day: int

  def dmy(self) -> str:
    return f"{self.day} {MONTHS[self.month - 1]} {self.year}"

  def mdy(self) -> str:
    return f"{MONTHS[self.month - 1]} {self.day}, {self.year}"

  def iso(self) -> str:
    return f"{self.year:04d}-{self.month:02d}-{self.day:02d}"

  @classmethod
  def from_iso(cls, text: str) -> "Date":
    year, month, day = (int(x) for x in text.split("-"))
    return cls(year, month, day)

  def aliases(self) -> list[str]:
    """Every way the world writes this date, the first being the canonical one."""
    return [self.dmy(), self.mdy(), self.iso()]


@dataclasses.dataclass(frozen=True, slots=True)
class Quantity:
  """A whole number with an optional unit, e.g. 1,234 km. Rendered with thousands separators."""

  value: int
  unit: str = ""

  def number(self) -> str:
    return f"{self.value:,}"

  def text(self) -> str:
    return f"{self.value:,} {self.unit}" if self.unit else f"{self.value:,}"

  def aliases(self) -> list[str]:
    forms = [self.text(), self.number(), str(self.value)]
    if self.unit:
      forms.append(f"{self.value} {self.unit}")
    return list(dict.fromkeys(forms))


@dataclasses.dataclass(slots=True)
class Entity:
  """One thing with a page: a person, city, country, organisation, film, book, river or mountain.

  Attributes:
    id: Wikidata-like id, 'Q' and a number, unique in the world.
    kind: One of ENTITY_KINDS.
    name: The full name; also the title of the entity's page. Unique in the world.
    split: 'train', 'dev' or 'test'; held-out splits are for evaluation on unseen entities.
    attrs: Kind-specific details that are not facts (gender, demonym, organisation type, ...).
  """

  id: str
  kind: str
  name: str
  split: str = "train"
  attrs: dict[str, Any] = dataclasses.field(default_factory=dict)

  def to_json(self) -> dict:
    return {"id": self.id, "kind": self.kind, "name": self.name, "split": self.split, "attrs": self.attrs}

  @classmethod
  def from_json(cls, record: dict) -> "Entity":
    return cls(record["id"], record["kind"], record["name"], record["split"], dict(record["attrs"]))


# relation -> (label used in questions and evidence triples, subject kind, object type)
# Object types: an entity kind, or 'date', 'year', 'quantity', 'occupation'.
RELATIONS: dict[str, tuple[str, str, str]] = {
    "date_of_birth": ("date of birth", "person", "date"),
    "date_of_death": ("date of death", "person", "date"),
    "place_of_birth": ("place of birth", "person", "city"),
    "country_of_citizenship": ("country of citizenship", "person", "country"),
    "occupation": ("occupation", "person", "occupation"),
    "father": ("father", "person", "person"),
    "mother": ("mother", "person", "person"),
    "spouse": ("spouse", "person", "person"),
    "employer": ("employer", "person", "organisation"),
    "educated_at": ("educated at", "person", "organisation"),
    "country": ("country", "city", "country"),
    "population": ("population", "city", "quantity"),
    "inception": ("inception", "city", "year"),
    "area": ("area", "city", "quantity"),
    "capital": ("capital", "country", "city"),
    "country_population": ("population", "country", "quantity"),
    "country_area": ("area", "country", "quantity"),
    "independence": ("date of independence", "country", "date"),
    "founded": ("inception", "organisation", "year"),
    "headquarters": ("headquarters location", "organisation", "city"),
    "founded_by": ("founded by", "organisation", "person"),
    "employees": ("number of employees", "organisation", "quantity"),
    "director": ("director", "film", "person"),
    "publication_date": ("publication date", "film", "date"),
    "duration": ("duration", "film", "quantity"),
    "production_company": ("production company", "film", "organisation"),
    "author": ("author", "book", "person"),
    "publication_year": ("publication year", "book", "year"),
    "publisher": ("publisher", "book", "organisation"),
    "pages": ("number of pages", "book", "quantity"),
    "length": ("length", "river", "quantity"),
    "source": ("source", "river", "mountain"),
    "flows_through": ("flows through", "river", "city"),
    "elevation": ("elevation", "mountain", "quantity"),
    "mountain_country": ("country", "mountain", "country"),
    "first_ascent": ("first ascent", "mountain", "year"),
    "first_ascended_by": ("first ascended by", "mountain", "person"),
}


@dataclasses.dataclass(slots=True)
class Fact:
  """One (subject, relation, object) triple of the world.

  `obj` is an entity id for entity-valued relations, a Date, an int year, a
  Quantity, or a string (occupation).
  """

  id: int
  subject: str
  relation: str
  obj: Any

  @property
  def object_type(self) -> str:
    return RELATIONS[self.relation][2]

  @property
  def is_entity_valued(self) -> bool:
    return self.object_type in ENTITY_KINDS

  def to_json(self) -> dict:
    obj = self.obj
    if isinstance(obj, Date):
      value: Any = obj.iso()
    elif isinstance(obj, Quantity):
      value = {"value": obj.value, "unit": obj.unit}
    else:
      value = obj
    return {"id": self.id, "subject": self.subject, "relation": self.relation, "object": value}

  @classmethod
  def from_json(cls, record: dict) -> "Fact":
    relation = record["relation"]
    kind = RELATIONS[relation][2]
    value = record["object"]
    if kind == "date":
      value = Date.from_iso(value)
    elif kind == "quantity":
      value = Quantity(value["value"], value["unit"])
    return cls(record["id"], record["subject"], relation, value)


@dataclasses.dataclass(frozen=True, slots=True)
class Mention:
  """A span of a passage that names an entity or states a value.

  `kind` is an entity kind, or 'date', 'year', 'quantity', 'occupation', 'demonym'.
  `ref` is the entity id for entity, demonym mentions; '' otherwise.
  """

  start: int
  end: int
  kind: str
  ref: str = ""


@dataclasses.dataclass(slots=True)
class WorldPassage:
  """A passage of an entity's page, with what it states and mentions.

  Attributes:
    id: '<entity id>-<passage number on the page>'.
    title: The page title (the entity's name).
    text: The passage: sentences joined by single spaces.
    entity: Id of the page's entity.
    split: The page entity's split.
    sentence_starts: Character offset of each sentence in `text`.
    facts: Ids of the facts the passage states, in order of statement.
    fact_sentences: For each of `facts`, the index of the sentence stating it.
    mentions: Entity names and values in the text, with character offsets.
  """

  id: str
  title: str
  text: str
  entity: str
  split: str
  sentence_starts: list[int]
  facts: list[int]
  fact_sentences: list[int]
  mentions: list[Mention]

  def sentences(self) -> list[str]:
    ends = self.sentence_starts[1:] + [len(self.text) + 1]
    return [self.text[a:b - 1] for a, b in zip(self.sentence_starts, ends)]

  def to_json(self) -> dict:
    return {
        "id": self.id, "title": self.title, "text": self.text, "entity": self.entity,
        "split": self.split, "sentence_starts": self.sentence_starts, "facts": self.facts,
        "fact_sentences": self.fact_sentences,
        "mentions": [[m.start, m.end, m.kind, m.ref] for m in self.mentions],
    }

  @classmethod
  def from_json(cls, record: dict) -> "WorldPassage":
    return cls(record["id"], record["title"], record["text"], record["entity"], record["split"],
               list(record["sentence_starts"]), list(record["facts"]), list(record["fact_sentences"]),
               [Mention(*m) for m in record["mentions"]])


QUESTION_TYPES = ("compositional", "inference", "comparison", "bridge_comparison")


@dataclasses.dataclass(slots=True)
class Question:
  """A multi-hop question in the style of 2WikiMultiHopQA.

  Attributes:
    id: Unique question id.
    type: One of QUESTION_TYPES.
    question: The question text.
    answer: The canonical gold answer.
    aliases: Other accepted answers (date formats, numbers without separators, demonyms).
    hops: Number of facts needed (2 to 4).
    evidence: The facts behind the answer as [subject name, relation label, object text].
    fact_ids: Ids of those facts in the world.
    entity_ids: Ids of the entities the question is about (its topic entities).
    split: The split of the topic entities ('train', 'dev' or 'test').
    sub_questions: One single-hop question per fact, with its answer (MuSiQue's decomposition).
  """

  id: str
  type: str
  question: str
  answer: str
  aliases: list[str]
  hops: int
  evidence: list[list[str]]
  fact_ids: list[int]
  entity_ids: list[str]
  split: str
  sub_questions: list[list[str]]

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, record: dict) -> "Question":
    return cls(**record)
