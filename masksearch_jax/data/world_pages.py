"""Wikipedia-style pages for the embedded world, written from templates.

Each sentence kind has at least three phrasings (`TEMPLATES`); all phrasings
of a kind have the same slots, so they state the same facts. Every fact is
stated on its subject's page and again on a related page (a person's birth on
the page of the city they were born in, a city's population on its country's
page, a film's date on its director's page, ...), so a fact masked in one
passage can be found by searching for another.

Slots: `{s}` is the page's subject: its full name, or a pronoun ('She', 'The
city') when it opens a sentence that is not the first of its passage; `{s_poss}`
is its possessive. `{x}` writes a date as 'May 3, 1921' instead of
'3 May 1921'. A list slot joins names as 'A, B and C'.
"""

from __future__ import annotations

import random
import re
from typing import Any, Iterable

from masksearch_jax.data.world_types import Date, Entity, Fact, Mention, Quantity, WorldPassage

TEMPLATES: dict[str, tuple[str, ...]] = {
    # -- person ---------------------------------------------------------------
    "person_intro_dead": (
        "{s} ({dob} – {dod}) was a {dem} {occ} born in {pob}.",
        "{s} was a {dem} {occ}, born on {dob} in {pob}, who died on {dod}.",
        "{s}, a {dem} {occ}, was born in {pob} on {dob} and died on {dod}.",
    ),
    "person_intro_alive": (
        "{s} (born {dob}) is a {dem} {occ} from {pob}.",
        "{s} is a {dem} {occ} who was born in {pob} on {dob}.",
        "{s}, a {dem} {occ}, was born on {dob} in {pob}.",
    ),
    "person_parents": (
        "{s} was the {child} of {father} and {mother}.",
        "{s_poss} parents were {father} and {mother}.",
        "{s} was born to {father} and his wife {mother}.",
    ),
    "person_spouse": (
        "{s} married {spouse}.",
        "{s_poss} spouse was {spouse}.",
        "{s} was married to {spouse}.",
    ),
    "person_children": (
        "{s} had {count}: {children}.",
        "{s} raised {count}: {children}.",
        "{s} was the parent of {count}, {children}.",
    ),
    "person_education": (
        "{s} studied at {org}.",
        "{s} was educated at {org}.",
        "{s} graduated from {org}.",
    ),
    "person_employer": (
        "{s} worked for {org}.",
        "{s} was employed by {org}.",
        "{s} joined the staff of {org}.",
    ),
    "person_directed": (
        "{s} directed {film}, which was released on {date} and runs {dur}.",
        "{film}, directed by {s}, premiered on {date} with a running time of {dur}.",
        "{s} made the film {film}, released on {date} ({dur}).",
    ),
    "person_wrote": (
        "{s} wrote {book}, published by {pub} in {year} ({pages}).",
        "{book}, by {s}, was published by {pub} in {year} and runs to {pages}.",
        "In {year}, {pub} published {s_poss} book {book}, {pages} long.",
    ),
    "person_founded": (
        "{s} founded {org} in {year}.",
        "In {year}, {s} established {org}.",
        "{org} was founded by {s} in {year}.",
    ),
    "person_climbed": (
        "{s} made the first ascent of {mtn} in {year}.",
        "In {year}, {s} became the first person to climb {mtn}.",
        "{s} was the first to reach the summit of {mtn}, in {year}.",
    ),
    # -- city -----------------------------------------------------------------
    "city_intro": (
        "{s} is a city in {country} with a population of {pop}.",
        "{s}, a city of {pop} people, lies in {country}.",
        "Located in {country}, {s} has {pop} inhabitants.",
    ),
    "city_history": (
        "{s} was founded in {year} and covers an area of {area}.",
        "Founded in {year}, {s} has an area of {area}.",
        "{s} dates from {year}; its area is {area}.",
    ),
    "city_capital": (
        "{s} is the capital of {country}, a country of {kpop} people with an area of {karea} that became "
        "independent on {kdate}.",
        "{s} is the capital of {country}, which has {kpop} inhabitants, covers {karea} and gained "
        "independence on {kdate}.",
        "As capital of {country}, {s} governs a country of {kpop} people and {karea}, independent since "
        "{kdate}.",
    ),
    "city_river": (
        "{s} lies on the {river}, which is {len} long.",
        "The {river}, {len} in length, flows through {s}.",
        "{s} is situated on the {river}, a river {len} long.",
    ),
    "city_born_dead": (
        "{p}, a {dem} {occ} ({dob} – {dod}), was born in {s}.",
        "The {dem} {occ} {p} was born in {s} on {dob} and died on {dod}.",
        "{s} is the birthplace of {p} ({dob} – {dod}), a {dem} {occ}.",
    ),
    "city_born_alive": (
        "{p}, a {dem} {occ} born on {dob}, is a native of {s}.",
        "The {dem} {occ} {p} was born in {s} on {dob}.",
        "{s} is the birthplace of {p} (born {dob}), a {dem} {occ}.",
    ),
    "city_org": (
        "{org}, founded in {year} by {founder}, is based in {s} and employs {emp} people.",
        "{s} is home to {org}, which {founder} founded in {year}; it has {emp} employees.",
        "The headquarters of {org} are in {s}; it was founded by {founder} in {year} and has a staff of "
        "{emp}.",
    ),
    # -- country --------------------------------------------------------------
    "country_intro": (
        "{s} is a country with a population of {pop} and an area of {area}; its capital is {capital}.",
        "{s}, whose capital is {capital}, has {pop} inhabitants and covers {area}.",
        "The capital of {s} is {capital}; the country is home to {pop} people and covers {area}.",
    ),
    "country_independence": (
        "{s} became independent on {date}.",
        "{s} gained its independence on {date}.",
        "Independence was declared in {s} on {date}.",
    ),
    "country_city": (
        "{city}, a city of {pop} people founded in {year}, lies in {s} and covers {area}.",
        "The city of {city} in {s} was founded in {year}; it has {pop} inhabitants and an area of {area}.",
        "{s} includes the city of {city} ({pop} inhabitants, {area}, founded in {year}).",
    ),
    "country_mountain": (
        "{mtn} ({elev}) in {s} was first climbed in {year} by {climber}.",
        "{s} is home to {mtn}, which rises to {elev} and was first ascended by {climber} in {year}.",
        "The {elev} peak {mtn} in {s} was first climbed by {climber} in {year}.",
    ),
    # -- organisation ---------------------------------------------------------
    "org_intro": (
        "{s} is a {kind} founded in {year} by {founder} and based in {hq}.",
        "{s} was founded by {founder} in {year}; the {kind} has its headquarters in {hq}.",
        "Based in {hq}, {s} is a {kind} that {founder} founded in {year}.",
    ),
    "org_staff": (
        "{s} employs {emp} people.",
        "{s} has a staff of {emp}.",
        "{s} has {emp} employees.",
    ),
    "org_employees": (
        "People who worked for {s} include {people}.",
        "{s} employed {people}.",
        "Among the staff of {s} were {people}.",
    ),
    "org_alumni": (
        "Alumni of {s} include {people}.",
        "{s} educated {people}.",
        "Former students of {s} include {people}.",
    ),
    "studio_films": (
        "{s} produced {films}.",
        "Films produced by {s} include {films}.",
        "The productions of {s} include {films}.",
    ),
    "publisher_books": (
        "{s} published {books}.",
        "Books published by {s} include {books}.",
        "The catalogue of {s} includes {books}.",
    ),
    # -- works ----------------------------------------------------------------
    "film_intro": (
        "{s} is a film directed by {director} and produced by {studio}; it was released on {date} and "
        "runs {dur}.",
        "Directed by {director}, {s} was released by {studio} on {date}, with a running time of {dur}.",
        "{s} ({dur}) is a film by {director}, produced by {studio} and first shown on {date}.",
    ),
    "book_intro": (
        "{s} is a book by {author}, published by {pub} in {year}; it has {pages}.",
        "Written by {author}, {s} was published in {year} by {pub} and runs to {pages}.",
        "{s} was written by {author} and published by {pub} in {year}, in an edition of {pages}.",
    ),
    # -- nature ---------------------------------------------------------------
    "river_intro": (
        "{s} is a river {len} long that rises on {mtn}.",
        "{s} rises on {mtn} and flows for {len}.",
        "Rising on {mtn}, {s} has a length of {len}.",
    ),
    "river_cities": (
        "{s} flows through {cities}.",
        "Cities on {s} include {cities}.",
        "On its course, {s} passes {cities}.",
    ),
    "mountain_intro": (
        "{s} is a mountain in {country} with an elevation of {elev}.",
        "Rising to {elev}, {s} is a mountain in {country}.",
        "{s} ({elev}) is a peak in {country}.",
    ),
    "mountain_ascent": (
        "{s} was first climbed in {year} by {climber}.",
        "The first ascent of {s} was made by {climber} in {year}.",
        "{climber} reached the summit of {s} first, in {year}.",
    ),
    "mountain_source": (
        "{s} is the source of the {river}, a river {len} long.",
        "The {river}, {len} long, rises on {s}.",
        "The source of the {river} ({len}) is on {s}.",
    ),
}

# How the subject is named when a pronoun stands for it, by kind (persons by gender).
_PRONOUNS = {
    "male": ("He", "His"), "female": ("She", "Her"), "city": ("The city", "Its"),
    "country": ("The country", "Its"), "film": ("The film", "Its"), "book": ("The book", "Its"),
    "river": ("The river", "Its"), "mountain": ("The mountain", "Its"),
}

# Order of sentence kinds on a page: the introduction first, then details, then lists.
_SECTION_RANK = {kind: (0 if kind.endswith("_intro") else 1) for kind in TEMPLATES}
_SECTION_RANK.update({kind: 2 for kind in ("person_children", "city_born_dead", "city_born_alive", "city_org",
                                            "country_city", "country_mountain", "org_employees", "org_alumni",
                                            "studio_films", "publisher_books", "person_directed", "person_wrote",
                                            "person_founded", "person_climbed", "mountain_source")})

MAX_PASSAGE_WORDS = 80
MAX_LIST_NAMES = 6
_NUMBER_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                 "twelve")
_SLOT = re.compile(r"\{(\w+)\}")


def _compile(template: str) -> tuple:
  """A template as (text, is_slot) parts."""
  parts: list[tuple[str, bool]] = []
  pos = 0
  for match in _SLOT.finditer(template):
    if match.start() > pos:
      parts.append((template[pos:match.start()], False))
    parts.append((match.group(1), True))
    pos = match.end()
  if pos < len(template):
    parts.append((template[pos:], False))
  return tuple(parts)


_COMPILED = {kind: tuple(_compile(t) for t in variants) for kind, variants in TEMPLATES.items()}


# Slots that only help the grammar ('son', 'two children', 'university'); a phrasing may leave them out.
GRAMMAR_SLOTS = frozenset({"child", "count", "kind"})


def template_slots(template: str) -> frozenset[str]:
  """The slots of one template that carry facts (the subject counts once, possessive or not)."""
  slots = {m.group(1) for m in _SLOT.finditer(template)} - GRAMMAR_SLOTS
  return frozenset("s" if name == "s_poss" else name for name in slots)


def template_words() -> frozenset[str]:
  """The lower-case words of every template (kept out of invented names)."""
  words: set[str] = set()
  for variants in TEMPLATES.values():
    for template in variants:
      words.update(w.lower() for w in re.findall(r"[A-Za-z]+", _SLOT.sub(" ", template)))
  return frozenset(words)


def _date_text(date: Date) -> str:
  """A date as '3 May 1921' or 'May 3, 1921': both forms occur in the world, but each date is
  always written the same way, so a masked date can be found verbatim in another passage."""
  return date.mdy() if (date.year * 31 + date.month * 12 + date.day) % 3 == 0 else date.dmy()


class Term:
  """A slot value that is plain text, optionally recorded as a mention of `kind`."""

  __slots__ = ("text", "kind", "ref")

  def __init__(self, text: str, kind: str = "", ref: str = ""):
    self.text, self.kind, self.ref = text, kind, ref


class _Sentence:
  __slots__ = ("kind", "slots", "facts")

  def __init__(self, kind: str, slots: dict[str, Any], facts: list[Fact | None]):
    self.kind, self.slots = kind, slots
    self.facts = [f.id for f in facts if f is not None]


def _render(parts: tuple, slots: dict[str, Any], subject: Entity, pronouns: tuple[str, str], opens_passage: bool,
            offset: int, mentions: list[Mention]) -> str:
  """Writes one sentence; appends its mentions (offsets counted from `offset`)."""
  out: list[str] = []
  pos = 0

  def emit(text: str, kind: str = "", ref: str = "") -> None:
    nonlocal pos
    if kind:
      mentions.append(Mention(offset + pos, offset + pos + len(text), kind, ref))
    out.append(text)
    pos += len(text)

  for part, is_slot in parts:
    if not is_slot:
      out.append(part)
      pos += len(part)
      continue
    name = part
    if name == "s" or name == "s_poss":
      if pos == 0 and not opens_passage:
        emit(pronouns[0] if name == "s" else pronouns[1])
      else:
        emit(subject.name, subject.kind, subject.id)
        if name == "s_poss":
          emit("'s")
      continue
    value = slots[name]
    cls = value.__class__
    if cls is Entity:
      emit(value.name, value.kind, value.id)
    elif cls is Date:
      emit(_date_text(value), "date")
    elif cls is int:
      emit(str(value), "year")
    elif cls is Quantity:
      emit(value.text(), "quantity")
    elif cls is Term:
      emit(value.text, value.kind, value.ref)
    elif cls is list:
      for i, item in enumerate(value):
        if i:
          emit(" and " if i == len(value) - 1 else ", ")
        emit(item.name, item.kind, item.id)
    else:
      raise TypeError(f"slot {name!r} of a {subject.kind} sentence has a value of type {cls.__name__}")
  return "".join(out)


class _PageWriter:
  """Plans the sentences of every page, then packs them into passages."""

  def __init__(self, seed: int, entities: dict[str, Entity], facts_by_subject: dict[str, dict[str, list[Fact]]]):
    self.seed = seed
    self.entities = entities
    self.fs = facts_by_subject
    self.rng = random.Random(0)  # Reseeded per page, so a page does not depend on the pages before it.
    self.sentences: dict[str, list[_Sentence]] = {eid: [] for eid in entities}
    self.intro_count: dict[str, int] = {}

  def fact(self, entity: Entity, relation: str) -> Fact | None:
    facts = self.fs.get(entity.id, {}).get(relation)
    return facts[0] if facts else None

  def all_facts(self, entity: Entity, relation: str) -> list[Fact]:
    return self.fs.get(entity.id, {}).get(relation, [])

  def obj(self, entity: Entity, relation: str):
    fact = self.fact(entity, relation)
    if fact is None:
      return None
    return self.entities[fact.obj] if fact.is_entity_valued else fact.obj

  def say(self, page: Entity, sentence_kind: str, facts: list[Fact | None], **slots) -> None:
    self.sentences[page.id].append(_Sentence(sentence_kind, slots, facts))

  def demonym(self, person: Entity) -> Term:
    country = self.obj(person, "country_of_citizenship")
    return Term(country.attrs["demonym"], "demonym", country.id)

  # -- planning: what every page says -----------------------------------------

  def plan(self) -> None:
    for entity in self.entities.values():
      getattr(self, f"plan_{entity.kind}")(entity)
    # Pages that only echo others' facts (lists of people, cities, ...) are planned
    # from the subject side above, so every echo is added exactly once.

  def plan_person(self, p: Entity) -> None:
    f = lambda rel: self.fact(p, rel)  # noqa: E731
    occupation = Term(self.obj(p, "occupation"), "occupation")
    dem = self.demonym(p)
    pob = self.obj(p, "place_of_birth")
    bio = [f("date_of_birth"), f("place_of_birth"), f("country_of_citizenship"), f("occupation")]
    if f("date_of_death"):
      bio.append(f("date_of_death"))
      slots = dict(dob=self.obj(p, "date_of_birth"), dod=self.obj(p, "date_of_death"), dem=dem, occ=occupation)
      self.say(p, "person_intro_dead", bio, pob=pob, **slots)
      self.say(pob, "city_born_dead", bio, p=p, **slots)
    else:
      slots = dict(dob=self.obj(p, "date_of_birth"), dem=dem, occ=occupation)
      self.say(p, "person_intro_alive", bio, pob=pob, **slots)
      self.say(pob, "city_born_alive", bio, p=p, **slots)
    if f("father"):
      child = Term("son" if p.attrs["gender"] == "male" else "daughter")
      self.say(p, "person_parents", [f("father"), f("mother")], child=child, father=self.obj(p, "father"),
               mother=self.obj(p, "mother"))
    for fact in self.all_facts(p, "spouse"):
      spouse = self.entities[fact.obj]
      both = [fact, self.fact(spouse, "spouse")]
      self.say(p, "person_spouse", both, spouse=spouse)
    for relation, kind in (("educated_at", "person_education"), ("employer", "person_employer")):
      if f(relation):
        self.say(p, kind, [f(relation)], org=self.obj(p, relation))

  def plan_city(self, c: Entity) -> None:
    country = self.obj(c, "country")
    facts = [self.fact(c, r) for r in ("country", "population", "inception", "area")]
    self.say(c, "city_intro", facts[:2], country=country, pop=Term(self.obj(c, "population").number(), "quantity"))
    self.say(c, "city_history", facts[2:], year=self.obj(c, "inception"), area=self.obj(c, "area"))
    self.say(country, "country_city", facts, city=c, pop=Term(self.obj(c, "population").number(), "quantity"),
             year=self.obj(c, "inception"), area=self.obj(c, "area"))

  def plan_country(self, k: Entity) -> None:
    capital = self.obj(k, "capital")
    pop = Term(self.obj(k, "country_population").number(), "quantity")
    area = self.obj(k, "country_area")
    facts = [self.fact(k, r) for r in ("country_population", "country_area", "capital")]
    self.say(k, "country_intro", facts, pop=pop, area=area, capital=capital)
    independence = self.fact(k, "independence")
    self.say(k, "country_independence", [independence], date=independence.obj)
    self.say(capital, "city_capital", facts + [independence], country=k, kpop=pop, karea=area,
             kdate=independence.obj)

  def plan_organisation(self, o: Entity) -> None:
    founder, hq = self.obj(o, "founded_by"), self.obj(o, "headquarters")
    year, emp = self.obj(o, "founded"), Term(self.obj(o, "employees").number(), "quantity")
    facts = [self.fact(o, r) for r in ("founded", "founded_by", "headquarters")]
    self.say(o, "org_intro", facts, kind=Term(o.attrs["type"]), year=year, founder=founder, hq=hq)
    self.say(o, "org_staff", [self.fact(o, "employees")], emp=emp)
    self.say(hq, "city_org", facts + [self.fact(o, "employees")], org=o, year=year, founder=founder, emp=emp)
    self.say(founder, "person_founded", facts[:2], org=o, year=year)

  def plan_film(self, m: Entity) -> None:
    director, studio = self.obj(m, "director"), self.obj(m, "production_company")
    date, dur = self.obj(m, "publication_date"), self.obj(m, "duration")
    facts = [self.fact(m, r) for r in ("director", "publication_date", "duration", "production_company")]
    self.say(m, "film_intro", facts, director=director, studio=studio, date=date, dur=dur)
    self.say(director, "person_directed", facts[:3], film=m, date=date, dur=dur)

  def plan_book(self, b: Entity) -> None:
    author, pub = self.obj(b, "author"), self.obj(b, "publisher")
    year, pages = self.obj(b, "publication_year"), self.obj(b, "pages")
    facts = [self.fact(b, r) for r in ("author", "publication_year", "publisher", "pages")]
    self.say(b, "book_intro", facts, author=author, pub=pub, year=year, pages=pages)
    self.say(author, "person_wrote", facts, book=b, pub=pub, year=year, pages=pages)

  def plan_river(self, r: Entity) -> None:
    length, source = self.obj(r, "length"), self.obj(r, "source")
    facts = [self.fact(r, "length"), self.fact(r, "source")]
    self.say(r, "river_intro", facts, len=length, mtn=source)
    self.say(source, "mountain_source", facts, river=r, len=length)
    flows = self.all_facts(r, "flows_through")
    if flows:
      self.say(r, "river_cities", flows, cities=[self.entities[f.obj] for f in flows])
    for fact in flows:
      self.say(self.entities[fact.obj], "city_river", [fact, facts[0]], river=r, len=length)

  def plan_mountain(self, m: Entity) -> None:
    country, climber = self.obj(m, "mountain_country"), self.obj(m, "first_ascended_by")
    elev, year = self.obj(m, "elevation"), self.obj(m, "first_ascent")
    facts = [self.fact(m, r) for r in ("elevation", "mountain_country", "first_ascent", "first_ascended_by")]
    self.say(m, "mountain_intro", facts[:2], elev=elev, country=country)
    self.say(m, "mountain_ascent", facts[2:], year=year, climber=climber)
    self.say(country, "country_mountain", facts, mtn=m, elev=elev, year=year, climber=climber)
    self.say(climber, "person_climbed", facts[2:], mtn=m, year=year)

  def plan_lists(self) -> None:
    """Sentences that name several entities at once: children, staff, alumni, catalogues."""
    children: dict[str, list[tuple[Entity, Fact]]] = {}
    staff: dict[str, list[tuple[Entity, Fact]]] = {}
    alumni: dict[str, list[tuple[Entity, Fact]]] = {}
    films: dict[str, list[tuple[Entity, Fact]]] = {}
    books: dict[str, list[tuple[Entity, Fact]]] = {}
    for e in self.entities.values():
      for relation, table in (("father", children), ("mother", children), ("employer", staff),
                              ("educated_at", alumni), ("production_company", films), ("publisher", books)):
        for fact in self.all_facts(e, relation):
          table.setdefault(fact.obj, []).append((e, fact))
    for table, kind, slot in ((children, "person_children", "children"), (staff, "org_employees", "people"),
                              (alumni, "org_alumni", "people"), (films, "studio_films", "films"),
                              (books, "publisher_books", "books")):
      for owner_id, members in table.items():
        owner = self.entities[owner_id]
        for i in range(0, len(members), MAX_LIST_NAMES):
          chunk = members[i:i + MAX_LIST_NAMES]
          slots: dict[str, Any] = {slot: [e for e, _ in chunk]}
          if kind == "person_children":
            n = len(members)
            count = _NUMBER_WORDS[n - 1] if n <= len(_NUMBER_WORDS) else str(n)
            slots["count"] = Term(f"{count} {'child' if n == 1 else 'children'}")
          self.say(owner, kind, [fact for _, fact in chunk], **slots)

  # -- writing: sentences into passages ---------------------------------------

  def write(self, entity: Entity, passages: list[WorldPassage]) -> None:
    """Packs the page's sentences, in plan order, into passages of at most MAX_PASSAGE_WORDS words."""
    rng = self.rng
    rng.seed(f"page-{self.seed}-{entity.id}")
    pronouns = _PRONOUNS.get(entity.attrs.get("gender") or entity.kind) or ("The " + entity.attrs["type"], "Its")
    texts: list[str] = []
    starts: list[int] = []
    mentions: list[Mention] = []
    facts: list[int] = []
    fact_sentences: list[int] = []
    length = 0  # Characters so far, counting the joining spaces.
    words = 0
    number = 0

    def close() -> None:
      nonlocal texts, starts, mentions, facts, fact_sentences, length, words, number
      passages.append(WorldPassage(f"{entity.id}-{number}", entity.name, " ".join(texts), entity.id, entity.split,
                                   starts, facts, fact_sentences, mentions))
      number += 1
      texts, starts, mentions, facts, fact_sentences, length, words = [], [], [], [], [], 0, 0

    for sentence in sorted(self.sentences[entity.id], key=lambda x: _SECTION_RANK[x.kind]):
      parts = rng.choice(_COMPILED[sentence.kind])
      sentence_mentions: list[Mention] = []
      text = _render(parts, sentence.slots, entity, pronouns, not texts, length, sentence_mentions)
      n_words = text.count(" ") + 1
      if texts and words + n_words > MAX_PASSAGE_WORDS:
        close()
        sentence_mentions = []
        text = _render(parts, sentence.slots, entity, pronouns, True, 0, sentence_mentions)
      starts.append(length)
      facts.extend(sentence.facts)
      fact_sentences.extend([len(texts)] * len(sentence.facts))
      texts.append(text)
      mentions.extend(sentence_mentions)
      length += len(text) + 1
      words += n_words
    if texts:
      close()


def write_pages(seed: int, entities: dict[str, Entity], facts_by_subject: dict[str, dict[str, list[Fact]]],
                progress: bool = False) -> list[WorldPassage]:
  """Writes every entity's page; returns the passages in entity order. Phrasings depend on `seed`."""
  writer = _PageWriter(seed, entities, facts_by_subject)
  writer.plan()
  writer.plan_lists()
  passages: list[WorldPassage] = []
  items: Iterable[Entity] = entities.values()
  if progress:
    from tqdm.auto import tqdm
    items = tqdm(items, total=len(entities), desc="writing pages", unit="page")
  for entity in items:
    writer.write(entity, passages)
  return passages
