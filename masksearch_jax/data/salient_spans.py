"""Salient spans of English paragraphs, found by rules, and MaskSearch's candidate filters.

`RuleBasedExtractor` needs no model: regular expressions find dates, years, numbers
(with their units), quoted titles and capitalised proper names, and a `Gazetteer`
made from the corpus's page titles finds the titles named in the text (film and
book titles with lower-case words, "The ..." names). Overlapping candidates are
resolved in favour of the longest one.

`filter_candidates` applies the filters of MaskSearch's released generator
(src/RAMP/gen_qa.py): the page title is dropped, and so is every span whose
text occurs more than once in the paragraph (`paragraph.count(text) > 1`).

Measured on the embedded world (tests/data/test_salient_spans.py), with a gazetteer
of the world's titles, the extractor finds every entity, date, year, quantity and
demonym mention exactly and nothing else (recall and precision 1.000 on two seeds);
without a gazetteer, recall is 0.98 and precision 0.96 (titles such as "Return to
Doga" are cut in two). The world's sentences are templated and `COMMON_WORDS` was
written with its sentence openers in view, so expect less on other text.
"""

from __future__ import annotations

import re
import sys
from typing import Iterable

from masksearch_jax.data.spans import Span


def _char_class(predicate) -> str:
  """A regex character class body with every BMP character for which `predicate` holds."""
  ranges: list[tuple[int, int]] = []
  for code in range(0x10000):
    if 0xD800 <= code <= 0xDFFF:
      continue
    if predicate(chr(code)):
      if ranges and ranges[-1][1] == code - 1:
        ranges[-1] = (ranges[-1][0], code)
      else:
        ranges.append((code, code))
  parts = []
  for lo, hi in ranges:
    parts.append(re.escape(chr(lo)) if lo == hi else f"{re.escape(chr(lo))}-{re.escape(chr(hi))}")
  return "".join(parts)


# Upper-case and title-case letters of every script (Python's `re` has no \p{Lu}).
_UPPER = _char_class(lambda c: c.isupper() or c.istitle())

MONTH_NAMES = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
               "October", "November", "December")
_MONTH_ABBREVIATIONS = ("Jan", "Feb", "Mar", "Apr", "Jun", "Jul", "Aug", "Sep", "Sept", "Oct", "Nov", "Dec")
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

# Words that join the capitalised words of one name: "University of Toronto", "Ludwig van
# Beethoven", "Alexander the Great", "Procter & Gamble". Only between capitalised words.
NAME_CONNECTORS = ("of", "de", "van", "von", "der", "den", "la", "le", "del", "della", "di", "da", "du",
                   "des", "the", "y", "zu", "ter", "ten", "dos", "das", "bin", "ibn", "&")

# Measurement units that belong to the number before them ("1,234 km", "203 minutes").
UNITS = (
    "square kilometres", "square kilometers", "square metres", "square meters", "square miles",
    "square feet", "sq km", "sq mi", "km²", "km2", "m²", "kilometres", "kilometers", "km", "metres",
    "meters", "m", "centimetres", "centimeters", "cm", "millimetres", "millimeters", "mm", "miles",
    "mi", "feet", "foot", "ft", "inches", "yards", "hectares", "ha", "acres", "kilograms", "kg",
    "grams", "g", "tonnes", "tons", "pounds", "lb", "litres", "liters", "gallons", "km/h", "mph",
    "minutes", "min", "hours", "seconds", "days", "weeks", "months", "years", "pages", "volumes",
    "episodes", "seasons", "chapters", "°C", "°F", "degrees", "MW", "GW", "kW", "kWh", "MHz", "GHz",
    "votes", "seats", "goals", "points", "copies",
)
# Nouns that say what a number counts ("1,234 people"). Populations and staff counts are
# bare numbers in Wikidata and in the embedded world, so these stay out of the span unless
# `RuleBasedExtractor(count_nouns=True)`.
COUNT_NOUNS = ("people", "inhabitants", "residents", "employees", "members", "students", "workers",
               "visitors", "passengers", "soldiers", "troops", "spectators", "participants", "households",
               "families", "speakers", "users", "persons", "staff")
_MAGNITUDES = ("thousand", "million", "billion", "trillion")

# Capitalised words that open sentences without naming anything. A name found at the start of
# a sentence loses these leading words ("The Tuzalian painter" -> "Tuzalian").
COMMON_WORDS = frozenset("""
a an the this that these those there here it its he she his her him they them their we our us you
your i my me one two three four five six seven eight nine ten some many most much more several
both each every all any no none other another such few same own
in on at by for from of to into onto over under upon with within without through throughout
about above across after against along among amongst around as before behind below beneath
beside besides between beyond during except following like near off out outside inside since
toward towards until till via per despite unlike according regarding concerning including
and or but nor so yet if unless whether because although though while whereas when whenever
where wherever once now then not only also even just still already always never often sometimes
usually generally recently previously formerly later earlier early today tomorrow yesterday
together however moreover furthermore additionally meanwhile nevertheless nonetheless thus
therefore hence instead indeed finally eventually initially originally subsequently currently
presently afterwards otherwise perhaps probably possibly certainly especially particularly
mainly mostly largely partly nearly almost approximately about roughly
first second third last next new old former latter many major minor main
is are was were be been being has have had do does did will would can could shall should may
might must
what which who whom whose why how something nothing everything anything someone everyone anyone
nobody somebody everybody
located situated based founded established born died married written directed produced published
released built named known called considered described designed created made given taken held
opened closed rising flowing lying standing running including having being beginning starting
following during upon
alumni members people cities films books works productions students staff employees residents
citizens inhabitants independence history population construction development education career
research production culture economy geography politics government climate demographics
transport sports religion legacy death life family

""".split())

# Words that never are a name on their own.
_NOT_NAMES = frozenset(MONTH_NAMES + _MONTH_ABBREVIATIONS + _WEEKDAYS + ("I", "A", "O"))

# Abbreviations whose full stop does not end a sentence.
_ABBREVIATIONS = frozenset(("St", "Mt", "Ft", "Dr", "Mr", "Mrs", "Ms", "Jr", "Sr", "Gen", "Col", "Lt", "Sgt",
                            "Capt", "Prof", "Rev", "Hon", "Gov", "Sen", "Rep", "No", "vs", "c", "ca", "approx",
                            "Co", "Corp", "Inc", "Ltd", "Bros", "U.S", "U.K"))

# Words before a 3-digit number that make it a year ("founded in 748").
_YEAR_CONTEXT = frozenset(("in", "from", "since", "until", "till", "circa", "c.", "ca.", "before", "after",
                           "year", "AD"))


def _alternation(words: Iterable[str]) -> str:
  """A regex alternation of `words`, longest first, each allowing any run of spaces inside."""
  ordered = sorted(set(words), key=len, reverse=True)
  return "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in ordered)


# The patterns below start with a character class or literals where they can, so `re` skips
# quickly to where a match may start; checks on the character before a match are in Python.
_MONTH = rf"(?:{_alternation(MONTH_NAMES)}|(?:{_alternation(_MONTH_ABBREVIATIONS)})\.?)"
_DAY = r"(?:3[01]|[12]\d|0?[1-9])(?:st|nd|rd|th)?"
_DATE_END = r"(?![\w-]|,\d|\.\d)"
# "3 May 1921", "3 May", "1921-05-03" (the day is checked to be 1..31 in Python).
_DATE_DIGIT_RE = re.compile(rf"""
    \d(?:\d?(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH}(?:,?\s+\d{{3,4}})?
       |\d{{3}}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])){_DATE_END}""", re.VERBOSE)
# "May 3, 1921", "May 1921", "May 3".
_DATE_MONTH_RE = re.compile(rf"{_MONTH}\s+(?:{_DAY}(?:,\s*|\s+)\d{{3,4}}|\d{{3,4}}|{_DAY}){_DATE_END}")
_DATE_FULL_RE = re.compile(rf"""(?:
      {_DAY}\s+(?:of\s+)?{_MONTH}(?:,?\s+\d{{3,4}})?
    | \d{{4}}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])
    | {_MONTH}\s+(?:{_DAY}(?:,\s*|\s+)\d{{3,4}}|\d{{3,4}}|{_DAY}))""", re.VERBOSE)

_CURRENCY_SYMBOLS = "$€£¥₹"


def _number_re(units: Iterable[str]) -> re.Pattern:
  """Numbers ("1,234", "3.5"), with a percent sign, magnitude or unit after them."""
  return re.compile(rf"""
      \d(?:\d{{0,2}}(?:,\d{{3}})+|\d*)(?:\.\d+)?
      (?![\d]|[.,:]\d)
      (?P<unit>
        \s?%
      | \s*(?:per\s?cent|percent)\b
      | \s+(?:{_alternation(_MAGNITUDES)})(?:\s+(?:{_alternation(units)}))?(?!\w)
      | \s?(?:{_alternation(units)})(?!\w)
      )?""", re.VERBOSE)


# "300 BC", "79 AD", "1920s"; and "AD 79".
_ERA_YEAR_RE = re.compile(r"\d(?:\d{0,3}\s?(?:BCE|BC|CE|AD)|\d\d0s)(?![\w-])")
_AD_YEAR_RE = re.compile(r"AD\s?\d{1,4}(?![\w-])")
_ERA_FULL_RE = re.compile(r"\d{1,4}\s?(?:BCE|BC|CE|AD)|AD\s?\d{1,4}|\d{3}0s")

# A name word: capitalised, with inner hyphens or apostrophes before capitals ("Rolls-Royce",
# "O'Brien") but not a possessive "'s". Initials and known abbreviations keep their full stop
# when a capitalised word follows ("J. R. R. Tolkien", "St. Louis").
_TITLED_ABBREVIATIONS = sorted(a for a in _ABBREVIATIONS if a[0].isupper() and "." not in a)
_ABBREVIATION_DOT = r"\.(?:" + "|".join(
    [rf"(?<=\b[{_UPPER}]\.)"] + [rf"(?<=\b{a}\.)" for a in _TITLED_ABBREVIATIONS]) + rf")(?=[ \u00a0]+[{_UPPER}])"
_NAME_WORD = rf"[{_UPPER}]\w*(?:-[{_UPPER}\d]\w*|['’](?!s\b)\w+)*(?:{_ABBREVIATION_DOT})?"
# Particles glued to a later word of a name ("Abu Nasr al-Farabi", "Jean d'Alembert").
_PARTICLE = r"(?:al|el|d|l)[-'’]"
_NAME_RE = re.compile(rf"""
    {_NAME_WORD}(?:[ \u00a0]+(?:(?:{_alternation(NAME_CONNECTORS)})[ \u00a0]+)*(?:{_PARTICLE})?{_NAME_WORD})*
    """, re.VERBOSE)
_CONNECTOR_SET = frozenset(NAME_CONNECTORS)

_QUOTE_RE = re.compile(r'"([^"\n]{1,200})"|“([^”\n]{1,200})”|«\s?([^»\n]{1,200}?)\s?»')
_MAX_QUOTE_WORDS = 12

# Gazetteer tokens: words (a possessive "'s" split off), and every other non-space character.
_TOKEN_RE = re.compile(r"\w+(?:['’](?!s\b)\w+|[-.]\w+)*|['’]s\b|[^\w\s]")
_PREPOSITIONS = frozenset("by in on at to from with for as of through into over under after before".split())
_WORD_RE = re.compile(r"\S+")
_LOWER_WORD_RE = re.compile(r"\b[a-z]\w*")
_NEXT_WORD_RE = re.compile(r"[ \t\u00a0]*(,|\w+)")

# Span-kind priorities when two candidates cover the same text.
_PRIORITY = {"date": 0, "number": 1, "year": 1, "title": 2, "name": 3, "term": 4}


def _strip_title(title: str) -> str:
  """'Mercury (planet)' -> 'Mercury': the disambiguation suffix is not part of the name."""
  return title.split(" (", 1)[0].strip() if title.endswith(")") else title.strip()


class Gazetteer:
  """Finds whole-word occurrences of known titles in text.

  Titles are tokenised (words and punctuation marks) and stored as token keys in a set,
  with a dict from first token to the token counts of the titles starting with it; a
  text is matched by walking its tokens once and, where a token starts a title, trying
  those counts, longest first. Matching is case-sensitive, so the title "Rising" does not
  match the verb "rising". Memory is one short string per title (about 100 MB for a
  million titles).

  Args:
    titles: Titles (page names) to find. Disambiguation suffixes ("Mercury (planet)") are
      dropped. Titles without a letter ("1921": the year rule finds it), shorter than
      `min_chars`, longer than `max_tokens` tokens, or made of common English words only
      ("The", "In the") are skipped, because they would match ordinary text.
    max_tokens: Longest title, in tokens, that is kept.
    min_chars: Shortest title, in characters, that is kept.
  """

  def __init__(self, titles: Iterable[str] = (), *, max_tokens: int = 16, min_chars: int = 2):
    self.max_tokens = max_tokens
    self.min_chars = min_chars
    self._keys: set[str] = set()
    self._lengths: dict[str, tuple[int, ...]] = {}
    lengths: dict[str, set[int]] = {}
    intern = sys.intern
    for title in titles:
      title = _strip_title(title)
      if len(title) < min_chars:
        continue
      tokens = _TOKEN_RE.findall(title)
      if not tokens or len(tokens) > max_tokens:
        continue
      if not any(c.isalpha() for c in title) or all(t.lower() in COMMON_WORDS or not t.isalnum() for t in tokens):
        continue
      self._keys.add("\x1f".join(tokens))
      lengths.setdefault(intern(tokens[0]), set()).add(len(tokens))
    self._lengths = {first: tuple(sorted(ns, reverse=True)) for first, ns in lengths.items()}

  @classmethod
  def from_titles(cls, titles: Iterable[str], **kwargs) -> "Gazetteer":
    """A gazetteer of `titles` (see the class for the keyword arguments)."""
    return cls(titles, **kwargs)

  def __len__(self) -> int:
    return len(self._keys)

  def __contains__(self, title: object) -> bool:
    if not isinstance(title, str):
      return False
    return "\x1f".join(_TOKEN_RE.findall(_strip_title(title))) in self._keys

  def find(self, text: str) -> list[tuple[int, int]]:
    """The (start, end) character offsets of titles in `text`, longest at each start, in order.

    A match at a later start may overlap an earlier one; callers resolve overlaps.
    """
    lengths_of = self._lengths
    if not lengths_of:
      return []
    matches = list(_TOKEN_RE.finditer(text))
    tokens = [m.group() for m in matches]
    keys = self._keys
    found: list[tuple[int, int]] = []
    n_tokens = len(tokens)
    for i, token in enumerate(tokens):
      lengths = lengths_of.get(token)
      if lengths is None:
        continue
      for n in lengths:
        if i + n <= n_tokens and (token if n == 1 else "\x1f".join(tokens[i:i + n])) in keys:
          found.append((matches[i].start(), matches[i + n - 1].end()))
          break
    return found


def _word_starts(text: str, start: int) -> bool:
  """Whether no word or number runs on into `text[start]` from the left."""
  if not start:
    return True
  before = text[start - 1]
  return not (before.isalnum() or before in "_.,-")


def _previous_word(text: str, end: int) -> str:
  """The word that ends at or before `end` (skipping spaces), or ''."""
  i = end
  while i > 0 and text[i - 1] in " \t\u00a0":
    i -= 1
  j = i
  while j > 0 and (text[j - 1].isalnum() or text[j - 1] == "."):
    j -= 1
  return text[j:i]


def is_sentence_start(text: str, pos: int) -> bool:
  """Whether `text[pos:]` opens a sentence (after opening quotes and brackets).

  Args:
    text: The paragraph.
    pos: A character offset in it.
  """
  i = pos - 1
  while i >= 0 and text[i] in " \t\u00a0\"“‘'([":
    i -= 1
  if i < 0 or text[i] == "\n":
    return True
  char = text[i]
  if char in "!?":
    return True
  if char != ".":
    return False
  before = _previous_word(text, i).rstrip(".")
  # "J. Smith", "St. Louis" and "U.S. Army" do not start sentences.
  return not (before in _ABBREVIATIONS or (len(before) == 1 and before.isupper()))


class RuleBasedExtractor:
  """Finds salient spans in English text with rules and an optional gazetteer.

  Span kinds (`spans.SPAN_KINDS`):
    date    "3 May 1921", "May 3, 1921", "1921-05-03", "May 1921", "3 May"
    year    1000-2100 as four digits; three digits after "in", "from", "since", ...;
            "300 BC", "AD 79", "1920s"
    number  "1,234", "3.5", "12%", "$3 million", and numbers with a unit ("1,234 km",
            "53 square kilometres", "203 minutes", "372 pages")
    title   the text inside double, curly or guillemet quotes (at most 12 words)
    name    runs of capitalised words, with connectors inside ("University of Toronto",
            "Ludwig van Beethoven"); common words that open a sentence ("The", "He",
            "In", "Located") are not names and are cut from the front of a name
    term    gazetteer hits (titles of the corpus's pages)

  Where candidates overlap, the longest wins (then date, number, title, name, term).

  Args:
    gazetteer: Titles to find as 'term' spans, usually `Gazetteer.from_titles` of the
      corpus's page titles; None finds none.
    count_nouns: Whether a counting noun after a number joins its span ("1,234 people",
      "500 inhabitants"). Off by default: populations and staff counts are bare numbers
      in the embedded world's mentions and in Wikidata, and the noun gives nothing away.
    extra_units: More measurement units to join to numbers, besides `UNITS`.
    max_quote_words: Longest quoted text, in words, taken as a 'title'.
  """

  def __init__(self, gazetteer: Gazetteer | None = None, *, count_nouns: bool = False,
               extra_units: Iterable[str] = (), max_quote_words: int = _MAX_QUOTE_WORDS):
    self.gazetteer = gazetteer
    self.count_nouns = count_nouns
    self.max_quote_words = max_quote_words
    units = tuple(UNITS) + tuple(extra_units) + (COUNT_NOUNS if count_nouns else ())
    self._number_re = _number_re(units)
    self._after_number_re = re.compile(rf"\s+(?:{_alternation(COUNT_NOUNS + tuple(units))})(?!\w)")

  # -- candidates --------------------------------------------------------------

  def _numbers(self, text: str, out: list) -> None:
    for pattern in (_ERA_YEAR_RE, _AD_YEAR_RE):
      for m in pattern.finditer(text):
        if _word_starts(text, m.start()):
          out.append((m.start(), m.end(), "year"))
    for m in self._number_re.finditer(text):
      start, end = m.span()
      if end < len(text) and (text[end].isalpha() or text[end] == "_"):
        continue  # "3rd", "5km" with an unknown unit, "4A".
      currency = False
      if start:
        before = text[start - 1]
        if before in _CURRENCY_SYMBOLS or (before == " " and start > 1 and text[start - 2] in _CURRENCY_SYMBOLS):
          start -= 1 if before != " " else 2
          while start and text[start - 1].isupper():  # "US$", "NZ$".
            start -= 1
          currency = True
        elif before in "-−":
          in_range = start > 1 and text[start - 2].isdigit()  # The "1918" of "1914-1918".
          if not in_range:
            if start > 1 and text[start - 2] not in " \t\n\u00a0([":
              continue  # "COVID-19", "A-4".
            start -= 1  # A minus sign.
        elif before.isalnum() or before in "_.,:/":
          continue
        if start and text[start - 1].isalnum():
          continue
      number = m.group()
      kind = "number"
      if not currency and not m.group("unit") and number.isdigit() and 3 <= len(number) <= 4:
        if not self._after_number_re.match(text, end):
          if len(number) == 4 and 1000 <= int(number) <= 2100:
            kind = "year"
          elif _previous_word(text, start) in _YEAR_CONTEXT:
            kind = "year"
      out.append((start, end, kind))

  def _quotes(self, text: str, out: list) -> None:
    for m in _QUOTE_RE.finditer(text):
      group = 1 if m.group(1) is not None else 2 if m.group(2) is not None else 3
      start, end = m.span(group)
      while start < end and text[start].isspace():
        start += 1
      while end > start and (text[end - 1].isspace() or text[end - 1] in ",."):
        end -= 1
      inner = text[start:end]
      if start < end and any(c.isalnum() for c in inner) and len(inner.split()) <= self.max_quote_words:
        out.append((start, end, "title"))

  def _names(self, text: str, out: list) -> None:
    lower_words: set[str] | None = None
    for m in _NAME_RE.finditer(text):
      start, end = m.span()
      if start:
        before = text[start - 1]
        if before.isalnum() or before == "_":
          continue  # Inside a word: "eBay".
        if before in "-'’":
          particle = _previous_word(text, start - 1)
          if particle in ("al", "el", "d", "l"):
            start -= len(particle) + 1
      if is_sentence_start(text, start):
        words = [(w.start(), w.group()) for w in _WORD_RE.finditer(m.group())]
        # Cut leading common words and the connectors after them ("The Tuzalian" -> "Tuzalian").
        k = 0
        while k < len(words) and (words[k][1].lower() in COMMON_WORDS or words[k][1] in _CONNECTOR_SET):
          k += 1
        if k == len(words):
          continue
        if k:
          start += words[k][0]
        elif len(words) == 1:
          word = words[0][1]
          lower = word.lower()
          if lower_words is None:
            lower_words = set(_LOWER_WORD_RE.findall(text))
          if lower in lower_words:
            continue  # A common word, used elsewhere in lower case.
          if len(word) >= 6 and word.endswith(("ing", "ed", "ly")):
            following = _NEXT_WORD_RE.match(text, end)
            if following is None or following.group(1) == "," or following.group(1) in _PREPOSITIONS:
              continue  # "Rising on ...", "Founded in ...", "Recently, ...".
      if text[start:end] in _NOT_NAMES:
        continue
      out.append((start, end, "name"))

  def candidates(self, text: str) -> list[tuple[int, int, str]]:
    """Every candidate (start, end, kind) before overlap resolution, in no particular order.

    Args:
      text: The paragraph.
    """
    out: list[tuple[int, int, str]] = []
    for m in _DATE_DIGIT_RE.finditer(text):
      start = m.start()
      if not _word_starts(text, start):
        continue
      date = m.group()
      if date[4:5] != "-":  # Not ISO: the date opens with its day.
        day = int(date[:2]) if date[1:2].isdigit() else int(date[0])
        if not 1 <= day <= 31:
          continue
      out.append((start, m.end(), "date"))
    for m in _DATE_MONTH_RE.finditer(text):
      if _word_starts(text, m.start()):
        out.append((m.start(), m.end(), "date"))
    self._numbers(text, out)
    self._quotes(text, out)
    self._names(text, out)
    if self.gazetteer is not None:
      for start, end in self.gazetteer.find(text):
        out.append((start, end, "term"))
    return out

  def extract(self, text: str) -> list[Span]:
    """The salient spans of `text`: non-overlapping, sorted by position.

    Args:
      text: The paragraph.
    """
    return resolve_overlaps(text, self.candidates(text))

  def __call__(self, text: str) -> list[Span]:
    return self.extract(text)


def resolve_overlaps(text: str, candidates: Iterable[tuple[int, int, str]]) -> list[Span]:
  """Keeps the longest of overlapping candidates; returns Spans sorted by position.

  Ties in length go to the kind listed first in date, number/year, title, name, term,
  then to the earlier span.

  Args:
    text: The paragraph the candidates index.
    candidates: (start, end, kind) triples.
  """
  ordered = sorted(candidates, key=lambda c: (c[0] - c[1], _PRIORITY[c[2]], c[0]))
  taken = bytearray(len(text) + 1)
  chosen: list[tuple[int, int, str]] = []
  for start, end, kind in ordered:
    if end <= start or taken.find(1, start, end) != -1:
      continue
    taken[start:end] = b"\x01" * (end - start)
    chosen.append((start, end, kind))
  chosen.sort()
  return [Span(start, end, text[start:end], kind) for start, end, kind in chosen]


_DEFAULT_NUMBER_RE = _number_re(UNITS + COUNT_NOUNS)
_WHOLE_NUMBER_RE = re.compile(r"[-−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")


def span_kind(text: str) -> str:
  """The kind the rule-based extractor gives a span with this text ('term' if no rule applies).

  Used for spans found another way (an LLM's list).

  Args:
    text: The span's text.
  """
  text = text.strip()
  if _DATE_FULL_RE.fullmatch(text):
    return "date"
  if _ERA_FULL_RE.fullmatch(text):
    return "year"
  if text.isdigit() and len(text) == 4 and 1000 <= int(text) <= 2100:
    return "year"
  if _WHOLE_NUMBER_RE.fullmatch(text) or _DEFAULT_NUMBER_RE.fullmatch(text):
    return "number"
  if _NAME_RE.fullmatch(text) and text not in _NOT_NAMES:
    return "name"
  return "term"


def filter_candidates(spans: Iterable[Span], paragraph: str, title: str | None) -> list[Span]:
  """MaskSearch's filters on candidate spans of a paragraph.

  As in MaskSearch's generator, a span is dropped when:
    * its text is the page title. Here the comparison ignores case and the title's
      disambiguation suffix ("Mercury (planet)" drops "Mercury").
    * its text occurs more than once in the paragraph: `paragraph.count(text) > 1`, a
      case-sensitive substring count, so "Lazera" is dropped when "Lazeran" is also there
      (masking one occurrence would leave the answer in view).
  One more, not in the generator: a span made only of whole words of the title ("Hufo"
  on the page "Tedimide Hufo") is dropped too, since it names the page's own subject
  just as the title does.

  Args:
    spans: Candidate spans of `paragraph` (from any extractor).
    paragraph: The paragraph.
    title: Its page title; None or '' skips the title filters.

  Returns:
    The kept spans, in their given order.
  """
  name = _strip_title(title or "").lower()
  title_words = " ".join(_TOKEN_RE.findall(name))
  kept = []
  counts: dict[str, int] = {}
  for span in spans:
    text = span.text
    if not text.strip():
      continue
    lower = text.strip().lower()
    if name and (lower == name or lower == title.strip().lower()):
      continue
    if title_words:
      words = " ".join(_TOKEN_RE.findall(lower))
      if f" {words} " in f" {title_words} ":
        continue
    count = counts.get(text)
    if count is None:
      count = counts[text] = paragraph.count(text)
    if count > 1:
      continue
    kept.append(span)
  return kept
