"""The embedded world: a seeded, generated fictional encyclopedia.

`generate_world(WorldConfig(seed, size))` invents countries, cities, people in
family trees over six generations, organisations, films, books, rivers and
mountains; gives them dates, numbers and relations; writes each a page of
passages (`world_pages`) that states every fact in at least two passages; and
asks multi-hop questions about them (`world_questions`). All names are
invented (`names`), so no model can know a fact without searching for it.

The same seed and size always give the same world, byte for byte.
"""

from __future__ import annotations

import bisect
import dataclasses
import random
from typing import Iterator

from masksearch_jax.data.names import NameFactory
from masksearch_jax.data.passage import Passage
from masksearch_jax.data.world_types import Date, Entity, Fact, Question, Quantity, WorldPassage

# Bump when a change to the generator changes the worlds it makes (invalidates caches).
GENERATOR_VERSION = 3

GENERATIONS = 6
FIRST_BIRTH_YEAR = 1790
GENERATION_YEARS = 28
LAST_YEAR = 2024

OCCUPATIONS = ("painter", "physicist", "composer", "architect", "politician", "actor", "engineer",
               "economist", "historian", "physician", "chemist", "sculptor", "poet", "lawyer",
               "journalist", "botanist", "mathematician", "diplomat", "photographer", "astronomer")

# organisation type -> (share of organisations, name suffixes, occupation of its founder)
ORGANISATION_TYPES = {
    "university": (0.2, ("University", "College", "Institute"), "scholar"),
    "company": (0.3, ("Industries", "Motors", "Company", "Holdings"), "industrialist"),
    "film studio": (0.2, ("Pictures", "Studios", "Films"), "film producer"),
    "publishing house": (0.2, ("Press", "Books", "Publishing"), "publisher"),
    "museum": (0.1, ("Museum", "Gallery"), "curator"),
}

FILM_TITLE_PATTERNS = ("The {} Affair", "Nights of {}", "The Road to {}", "{} Rising", "The Last of {}",
                       "Return to {}", "The {} Legacy", "Shadows over {}")
BOOK_TITLE_PATTERNS = ("The {} Letters", "A History of {}", "The Gardens of {}", "{} and Other Stories",
                       "The {} Chronicle", "Winter in {}", "The House of {}", "Songs of {}")


@dataclasses.dataclass(frozen=True)
class WorldConfig:
  """How big a world to make, and from which seed.

  Attributes:
    seed: Seed of every random choice.
    size: Number of people; every other kind scales with it. About 1.9
      passages per person (see `for_num_passages`).
    dev_fraction: Share of entities held out as 'dev'.
    test_fraction: Share of entities held out as 'test'.
    questions_per_person: Questions asked per person, spread over the four types.
  """

  seed: int = 0
  size: int = 2000
  dev_fraction: float = 0.1
  test_fraction: float = 0.1
  questions_per_person: float = 0.5

  # Measured on seeds 0-4: passages per person (see tests/data/test_world.py).
  PASSAGES_PER_PERSON = 1.92

  @classmethod
  def for_num_passages(cls, num_passages: int, seed: int = 0, **kwargs) -> "WorldConfig":
    """The config whose world has about `num_passages` passages."""
    return cls(seed=seed, size=max(60, round(num_passages / cls.PASSAGES_PER_PERSON)), **kwargs)

  def counts(self) -> dict[str, int]:
    s = self.size
    return {
        "country": max(4, s // 400),
        "city": max(12, s // 12),
        "organisation": max(10, s // 10),
        "film": max(6, s // 6),
        "book": max(6, s // 6),
        "river": max(4, s // 60),
        "mountain": max(4, s // 60),
    }


@dataclasses.dataclass
class World:
  """A generated world: its entities, facts, page passages and questions."""

  config: WorldConfig
  entities: dict[str, Entity]
  facts: list[Fact]
  passages: list[WorldPassage]
  questions: list[Question]

  def iter_passages(self, splits: tuple[str, ...] | None = None) -> Iterator[Passage]:
    """The passages as plain `Passage` records (what the corpus readers yield)."""
    for p in self.passages:
      if splits is None or p.split in splits:
        yield Passage(p.id, p.title, p.text)

  def facts_of(self, entity_id: str) -> list[Fact]:
    return [f for f in self.facts if f.subject == entity_id]


class _Builder:
  """Invents the entities and facts of one world (pages and questions come after)."""

  def __init__(self, config: WorldConfig, reserved_words: frozenset[str]):
    self.config = config
    self.rng = random.Random(f"masksearch-world-{config.seed}")
    self.names = NameFactory(self.rng, reserved_words)
    self.entities: dict[str, Entity] = {}
    self.by_kind: dict[str, list[Entity]] = {}
    self.facts: list[Fact] = []
    self.facts_by_subject: dict[str, dict[str, list[Fact]]] = {}
    self.lifetimes: dict[str, tuple[int, int]] = {}

  # -- bookkeeping -----------------------------------------------------------

  def new_entity(self, kind: str, name: str, **attrs) -> Entity:
    u = self.rng.random()
    split = ("dev" if u < self.config.dev_fraction else
             "test" if u < self.config.dev_fraction + self.config.test_fraction else "train")
    entity = Entity(f"Q{len(self.entities) + 1}", kind, name, split, attrs)
    self.entities[entity.id] = entity
    self.by_kind.setdefault(kind, []).append(entity)
    return entity

  def add_fact(self, subject: Entity, relation: str, obj) -> Fact:
    fact = Fact(len(self.facts), subject.id, relation, obj)
    self.facts.append(fact)
    self.facts_by_subject.setdefault(subject.id, {}).setdefault(relation, []).append(fact)
    return fact

  def value(self, entity: Entity, relation: str):
    facts = self.facts_by_subject.get(entity.id, {}).get(relation)
    return facts[0].obj if facts else None

  def random_date(self, year: int) -> Date:
    month = self.rng.randint(1, 12)
    return Date(year, month, self.rng.randint(1, 28))

  # -- places ----------------------------------------------------------------

  def build_places(self) -> None:
    rng = self.rng
    counts = self.config.counts()
    for _ in range(counts["country"]):
      word = self.names.word()
      self.new_entity("country", word, demonym=_demonym(word))
    countries = self.by_kind["country"]
    for i in range(counts["city"]):
      # Every country gets cities before any gets a second round.
      country = countries[i] if i < len(countries) else rng.choice(countries)
      city = self.new_entity("city", self.names.word())
      self.add_fact(city, "country", country.id)
      self.add_fact(city, "population", Quantity(int(10 ** rng.uniform(3.7, 6.4)) // 10 * 10))
      self.add_fact(city, "inception", rng.randint(700, 1900))
      self.add_fact(city, "area", Quantity(rng.randint(12, 950), "square kilometres"))
    cities_of: dict[str, list[Entity]] = {}
    for city in self.by_kind["city"]:
      cities_of.setdefault(self.value(city, "country"), []).append(city)
    for country in countries:
      cities = cities_of[country.id]
      capital = max(cities, key=lambda c: self.value(c, "population").value)
      total = sum(self.value(c, "population").value for c in cities)
      self.add_fact(country, "capital", capital.id)
      self.add_fact(country, "country_population", Quantity(int(total * rng.uniform(1.6, 4.0)) // 1000 * 1000))
      self.add_fact(country, "country_area", Quantity(rng.randint(9_000, 990_000), "square kilometres"))
      self.add_fact(country, "independence", self.random_date(rng.randint(1700, 1990)))
    for _ in range(counts["mountain"]):
      mountain = self.new_entity("mountain", "Mount " + self.names.word())
      self.add_fact(mountain, "elevation", Quantity(rng.randint(800, 8400), "metres"))
      self.add_fact(mountain, "mountain_country", rng.choice(countries).id)
    free_cities = list(self.by_kind["city"])
    rng.shuffle(free_cities)
    for _ in range(counts["river"]):
      river = self.new_entity("river", self.names.word() + " River")
      self.add_fact(river, "length", Quantity(rng.randint(40, 3200), "km"))
      self.add_fact(river, "source", rng.choice(self.by_kind["mountain"]).id)
      for _ in range(rng.randint(1, 3)):
        if free_cities:  # A city lies on at most one river.
          self.add_fact(river, "flows_through", free_cities.pop().id)

  # -- people ----------------------------------------------------------------

  def build_people(self) -> None:
    """Six generations of families: every person after the first has a father and a mother."""
    rng = self.rng
    size = self.config.size
    shares = (0.06, 0.09, 0.13, 0.18, 0.24, 0.30)
    cities = self.by_kind["city"]
    previous_couples: list[tuple[Entity, Entity]] = []
    for gen, share in enumerate(shares):
      people = []
      for _ in range(max(6, round(size * share))):
        gender = rng.choice(("male", "female"))
        if previous_couples and rng.random() < 0.92:
          father, mother = rng.choice(previous_couples)
          surname = father.attrs["surname"]
        else:
          father = mother = None
          surname = self.names.word()
        given = self.names.word()
        person = self.new_entity("person", f"{given} {surname}", gender=gender, surname=surname,
                                 generation=gen)
        born = FIRST_BIRTH_YEAR + GENERATION_YEARS * gen + rng.randint(-9, 9)
        if father is not None:
          born = max(born, self.value(father, "date_of_birth").year + 18,
                     self.value(mother, "date_of_birth").year + 18)
        birth = self.random_date(born)
        self.add_fact(person, "date_of_birth", birth)
        death_year = born + rng.randint(38, 98)
        if death_year <= LAST_YEAR:
          death = self.random_date(death_year)
          if death <= birth:
            death = Date(death.year + 1, death.month, death.day)
          self.add_fact(person, "date_of_death", death)
        city = rng.choice(cities)
        self.add_fact(person, "place_of_birth", city.id)
        self.add_fact(person, "country_of_citizenship", self.value(city, "country"))
        if father is not None:
          self.add_fact(person, "father", father.id)
          self.add_fact(person, "mother", mother.id)
        people.append(person)
      men = [p for p in people if p.attrs["gender"] == "male"]
      women = [p for p in people if p.attrs["gender"] == "female"]
      rng.shuffle(men)
      rng.shuffle(women)
      couples = []
      for man, woman in zip(men, women):
        if rng.random() < 0.8:
          self.add_fact(man, "spouse", woman.id)
          self.add_fact(woman, "spouse", man.id)
          couples.append((man, woman))
      previous_couples = couples

  def lifetime(self, person: Entity) -> tuple[int, int]:
    """Birth year, and death year (LAST_YEAR for the living)."""
    span = self.lifetimes.get(person.id)
    if span is None:
      death = self.value(person, "date_of_death")
      span = self.lifetimes[person.id] = (self.value(person, "date_of_birth").year,
                                          death.year if death else LAST_YEAR)
    return span

  def pick_creator(self, pool: list[Entity], earliest: int, start_age: int = 22, end_age: int = 70):
    """A person from `pool` and a year within their working life, no earlier than `earliest`."""
    rng = self.rng
    for _ in range(50):
      person = rng.choice(pool)
      born, died = self.lifetime(person)
      lo, hi = max(born + start_age, earliest), min(born + end_age, died, LAST_YEAR)
      if lo <= hi:
        return person, rng.randint(lo, hi)
    raise RuntimeError(f"world seed {self.config.seed}: no person fits a work after {earliest}")

  def role_pool(self, count: int, earliest: int, occupation: str) -> list[Entity]:
    """Chooses `count` people without an occupation who can be active after `earliest`."""
    people = [p for p in self.by_kind["person"]
              if "occupation" not in p.attrs and self.lifetime(p)[1] >= earliest + 5
              and self.lifetime(p)[0] + 22 <= min(self.lifetime(p)[1], LAST_YEAR)]
    chosen = self.rng.sample(people, min(count, len(people)))
    for person in chosen:
      person.attrs["occupation"] = occupation
    return chosen

  # -- organisations, works, ascents ------------------------------------------

  def build_organisations(self) -> None:
    rng = self.rng
    n = self.config.counts()["organisation"]
    cities = self.by_kind["city"]
    for org_type, (share, suffixes, founder_occupation) in ORGANISATION_TYPES.items():
      count = max(2, round(n * share))
      founders = self.role_pool(max(1, count * 2 // 3), 1750, founder_occupation)
      for _ in range(count):
        org = self.new_entity("organisation", f"{self.names.word()} {rng.choice(suffixes)}", type=org_type)
        founder, year = self.pick_creator(founders, 1750, 24, 60)
        self.add_fact(org, "founded", year)
        self.add_fact(org, "headquarters", rng.choice(cities).id)
        self.add_fact(org, "founded_by", founder.id)
        self.add_fact(org, "employees", Quantity(int(10 ** rng.uniform(1.3, 4.8))))

  def orgs_by_founding(self, *org_types: str) -> tuple[list[int], list[Entity]]:
    """Organisations of `org_types` sorted by founding year, with the years (for `pick_org`)."""
    orgs = sorted((o for o in self.by_kind["organisation"] if o.attrs["type"] in org_types),
                  key=lambda o: self.value(o, "founded"))
    return [self.value(o, "founded") for o in orgs], orgs

  def pick_org(self, by_founding: tuple[list[int], list[Entity]], year: int, fallback: bool = True) -> Entity | None:
    """An organisation that already existed in `year` (the oldest one if none did and `fallback`)."""
    years, orgs = by_founding
    existing = bisect.bisect_right(years, year)
    if existing:
      return orgs[self.rng.randrange(existing)]
    return orgs[0] if fallback else None

  def build_works(self) -> None:
    rng = self.rng
    counts = self.config.counts()
    studios = self.orgs_by_founding("film studio")
    publishers = self.orgs_by_founding("publishing house")
    directors = self.role_pool(max(2, counts["film"] * 2 // 5), 1900, "film director")
    for _ in range(counts["film"]):
      director, year = self.pick_creator(directors, 1900)
      film = self.new_entity("film", rng.choice(FILM_TITLE_PATTERNS).format(self.names.word()))
      self.add_fact(film, "director", director.id)
      self.add_fact(film, "publication_date", self.random_date(year))
      self.add_fact(film, "duration", Quantity(rng.randint(68, 205), "minutes"))
      self.add_fact(film, "production_company", self.pick_org(studios, year).id)
    authors = self.role_pool(max(2, counts["book"] * 2 // 5), 1810, "novelist")
    for _ in range(counts["book"]):
      author, year = self.pick_creator(authors, 1810, 20, 80)
      book = self.new_entity("book", rng.choice(BOOK_TITLE_PATTERNS).format(self.names.word()))
      self.add_fact(book, "author", author.id)
      self.add_fact(book, "publication_year", year)
      self.add_fact(book, "publisher", self.pick_org(publishers, year).id)
      self.add_fact(book, "pages", Quantity(rng.randint(64, 1240), "pages"))
    climbers = self.role_pool(max(2, counts["mountain"] * 2 // 3), 1800, "mountaineer")
    for mountain in self.by_kind["mountain"]:
      climber, year = self.pick_creator(climbers, 1800, 18, 55)
      self.add_fact(mountain, "first_ascent", year)
      self.add_fact(mountain, "first_ascended_by", climber.id)

  def build_careers(self) -> None:
    """Occupations for everyone else, and employers and schools for some."""
    rng = self.rng
    employers = self.orgs_by_founding("company", "university", "museum")
    universities = self.orgs_by_founding("university")
    for person in self.by_kind["person"]:
      occupation = person.attrs.pop("occupation", None) or rng.choice(OCCUPATIONS)
      self.add_fact(person, "occupation", occupation)
      born, _ = self.lifetime(person)
      if rng.random() < 0.3:
        school = self.pick_org(universities, born + 18, fallback=False)
        if school:
          self.add_fact(person, "educated_at", school.id)
      if rng.random() < 0.3:
        work = self.pick_org(employers, born + 40, fallback=False)
        if work:
          self.add_fact(person, "employer", work.id)


def _demonym(country: str) -> str:
  """'Lazera' -> 'Lazeran', 'Higumero' -> 'Higumerian', 'Zozuvi' -> 'Zozuvian'."""
  if country.endswith("a"):
    return country + "n"
  if country.endswith("o"):
    return country[:-1] + "ian"
  return country + "an"


def template_vocabulary() -> frozenset[str]:
  """Every lower-case word the page and question templates use (never handed out as a name)."""
  from masksearch_jax.data import world_pages, world_questions
  return world_pages.template_words() | world_questions.template_words()


def generate_world(config: WorldConfig = WorldConfig(), progress: bool = False) -> World:
  """Generates the world of `config`. Deterministic in `config`.

  Args:
    config: Seed, size and splits.
    progress: Show a progress bar while pages are written.
  """
  from masksearch_jax.data import world_pages, world_questions
  builder = _Builder(config, template_vocabulary())
  builder.build_places()
  builder.build_people()
  builder.build_organisations()
  builder.build_works()
  builder.build_careers()
  passages = world_pages.write_pages(config.seed, builder.entities, builder.facts_by_subject, progress=progress)
  questions = world_questions.ask_questions(builder.entities, builder.facts_by_subject,
                                            random.Random(f"masksearch-questions-{config.seed}"),
                                            round(config.size * config.questions_per_person))
  return World(config, builder.entities, builder.facts, passages, questions)
