"""Choosing which salient spans of a paragraph to mask, and MaskSearch's RAMP records.

Retrieval-Augmented Mask Prediction (RAMP, MaskSearch arXiv 2505.20285) hides salient spans
of a paragraph behind `[mask]`; the agent must search to fill them. This module takes the
candidate spans of a paragraph (from any extractor, already filtered: no page title, no text
that occurs twice) and chooses the masks, then writes records in MaskSearch's jsonl shape.

Two strategies (`select_masks(strategy=...)`):

  random      MaskSearch's sampler (`sample_masks`). Mask count: random 1..n for n < 3
              candidates, 3 for n == 3, 4 for n >= 4 (`choose_mask_count`). Spans are drawn
              with weight = number of words; numbers get the largest weight of the other
              candidates (`candidate_weights`).
  perplexity  The spans the model finds hardest (`select_hardest`): a `SpanScorer` gives the
              model's loss of each candidate given the paragraph with it hidden, and the top
              scores are masked. Same mask-count rule.

Either way a choice whose masked paragraph would start with `[mask]` is skipped (None).

How this follows MaskSearch's released generator (src/RAMP/gen_qa.py) and where it departs:

* With exactly 3 candidates the generator draws `randint(3, min(3, 4))`, which is always 3:
  "3 or 4 when there are 3" can only mean 3.
* The generator counts an entity as a number when `entity.isdigit()` (so years like "1921"
  but not "1,234" or "3 May 1921") and gives numbers the largest word count among the
  non-numbers (1 if all are numbers). Here a number is a span of kind 'number' or 'year', or
  any span whose text is all digits; dates are weighted by their words, as there.
* The generator draws with replacement (`random.choices`), so the same entity can be drawn
  twice: its record then lists that mask twice and counts it in `mask_num`, but the paragraph
  has one `[mask]` fewer. Here spans are drawn without replacement (each draw removes the
  chosen span and every candidate overlapping it), so `mask_num` == number of `[mask]`s.
* The generator lists masks in the order of its entity list; here they are in order of
  appearance, so filling the `[mask]`s in order with `masks` gives back the answer.
* The generator masks the first occurrence of the entity's text (possibly inside a longer
  word); here the chosen span is masked at its own offsets.
* The generator prepends the page title to a paragraph that does not contain it (the answer
  is then that longer paragraph); `ensure_title` does the same, for callers who want it.

Record shape (one JSON object a line, non-ASCII kept as is):

  {"query": masked paragraph + "\\n\\n" + instruction, "answer": original paragraph,
   "ext": {"mask_num": int, "masks": [str], "entities": [str], "source": str, "title": str}}

The generator's query template is `"{paragraph}\\n\\n" + instruction`: paragraph and
instruction are separated by one blank line. Both the English and the Chinese instruction
contain `[mask]` themselves, so masks are counted in the paragraph part only.
"""

from __future__ import annotations

import bz2
import gzip
import json
import logging
import math
import os
import pathlib
import random
from typing import IO, Any, Iterable, Iterator, Protocol, Sequence, runtime_checkable

from masksearch_jax.agent.protocol import MASK, RAMP_INSTRUCTION
from masksearch_jax.data.atomic_files import atomic_text
from masksearch_jax.data.passage import CorpusFormatError
from masksearch_jax.data.spans import Span

# The generator's Chinese instruction, so records of its zh corpus can be read too.
RAMP_INSTRUCTION_ZH = "补充所有的[mask]，并重新输出，要求格式不能发生变化。"
INSTRUCTIONS = (RAMP_INSTRUCTION, RAMP_INSTRUCTION_ZH)
# Between the masked paragraph and the instruction in `query`.
QUERY_SEPARATOR = "\n\n"

NUMBER_KINDS = ("number", "year")
STRATEGIES = ("random", "perplexity")
MAX_MASKS = 4


# ---------------------------------------------------------------------------------------------
# MaskSearch's sampler.


def choose_mask_count(num_entities: int, rng: random.Random) -> int:
  """MaskSearch's number of masks for a paragraph with `num_entities` candidate spans.

  Random 1..n (uniform) when there are fewer than 3 candidates, 3 when there are exactly 3
  (the generator's `randint(3, min(n, 4))` cannot give 4 there), 4 when there are 4 or more.

  Args:
    num_entities: Number of candidate spans left after filtering.
    rng: Source of randomness; consumed only when there are 1 or 2 candidates.

  Returns:
    The mask count; 0 when there are no candidates.

  Raises:
    ValueError: `num_entities` is negative.
  """
  if num_entities < 0:
    raise ValueError(f"num_entities must be >= 0, got {num_entities}")
  if num_entities == 0:
    return 0
  if num_entities < 3:
    return rng.randint(1, num_entities)
  return min(num_entities, MAX_MASKS)


def is_number(span: Span) -> bool:
  """Whether the sampler treats `span` as a number (kind 'number' or 'year', or all digits)."""
  return span.kind in NUMBER_KINDS or span.text.isdigit()


def span_weight(span: Span) -> float:
  """The sampling weight of a non-number span: its number of words (at least 1).

  Args:
    span: A candidate span.

  Returns:
    The word count. Numbers are re-weighted by `candidate_weights`, which knows the other
    candidates.
  """
  return float(max(1, span.num_words))


def candidate_weights(candidates: Sequence[Span]) -> list[float]:
  """MaskSearch's sampling weights: words per span, numbers at the largest non-number weight.

  Args:
    candidates: The candidate spans of one paragraph.

  Returns:
    One weight per candidate, in order. When every candidate is a number they all weigh 1.
  """
  others = [span_weight(s) for s in candidates if not is_number(s)]
  top = max(others, default=1.0)
  return [top if is_number(s) else span_weight(s) for s in candidates]


def _prepared(paragraph: str, candidates: Sequence[Span]) -> list[Span]:
  """The candidates in order of appearance, exact duplicates removed, each checked."""
  for span in candidates:
    if not 0 <= span.start < span.end <= len(paragraph) or paragraph[span.start:span.end] != span.text:
      raise ValueError(f"span {span} does not match the paragraph at [{span.start}:{span.end}]: "
                       f"{paragraph[max(0, span.start):max(0, span.end)]!r}")
  return sorted(set(candidates))


def _overlap(a: Span, b: Span) -> bool:
  return a.start < b.end and b.start < a.end


def _starts_with_mask(paragraph: str, spans: Sequence[Span]) -> bool:
  # The generator tests `masked.startswith('[mask]')`; leading whitespace is not a subject.
  first = min(s.start for s in spans)
  return not paragraph[:first].strip()


def _usable(paragraph: str) -> bool:
  # A paragraph already containing the mask symbol cannot make an unambiguous record.
  return MASK not in paragraph


def sample_masks(paragraph: str, candidates: Sequence[Span], rng: random.Random,
                 num_masks: int | None = None) -> list[Span] | None:
  """MaskSearch's weighted choice of the spans to mask.

  Draws `num_masks` spans one at a time without replacement, each with probability
  proportional to its `candidate_weights` weight among those left; a drawn span also removes
  the candidates overlapping it. Deterministic given the state of `rng`.

  Args:
    paragraph: The paragraph the spans come from.
    candidates: Candidate spans (`text == paragraph[start:end]`), already filtered (no page
      title, no text occurring twice). Order does not matter.
    rng: Source of randomness.
    num_masks: Exact number of masks (the `ramp_mask1`..`ramp_mask4` tasks); None draws it
      with `choose_mask_count` from the number of candidates.

  Returns:
    The chosen spans in order of appearance, or None when the paragraph is skipped: no
    candidates, fewer non-overlapping candidates than `num_masks`, the masked paragraph would
    start with `[mask]`, or the paragraph already contains `[mask]`.

  Raises:
    ValueError: A candidate does not match the paragraph, or `num_masks` < 1.
  """
  prepared = _pool_and_count(paragraph, candidates, rng, num_masks)
  if prepared is None:
    return None
  pool, count = prepared
  weights = candidate_weights(pool)
  left = list(range(len(pool)))
  chosen: list[Span] = []
  while len(chosen) < count and left:
    total = sum(weights[i] for i in left)
    point = rng.random() * total
    pick = left[-1]  # Guards against rounding leaving `point` just past the last weight.
    for i in left:
      point -= weights[i]
      if point < 0:
        pick = i
        break
    chosen.append(pool[pick])
    left = [i for i in left if not _overlap(pool[i], pool[pick])]
  return _complete(paragraph, chosen, count)


def _pool_and_count(paragraph: str, candidates: Sequence[Span], rng: random.Random,
                    num_masks: int | None) -> tuple[list[Span], int] | None:
  """The usable candidates and how many of them to mask, or None when the paragraph is skipped.

  Raises:
    ValueError: A candidate does not match the paragraph, or `num_masks` < 1.
  """
  if num_masks is not None and num_masks < 1:
    raise ValueError(f"num_masks must be >= 1, got {num_masks}")
  pool = _prepared(paragraph, candidates)
  if not pool or not _usable(paragraph):
    return None
  return pool, choose_mask_count(len(pool), rng) if num_masks is None else num_masks


def _complete(paragraph: str, chosen: Sequence[Span], count: int) -> list[Span] | None:
  """`chosen` in order of appearance, or None when the paragraph is skipped.

  It is skipped when fewer than `count` spans were chosen or the masked paragraph would start
  with `[mask]`.
  """
  if len(chosen) < count or _starts_with_mask(paragraph, chosen):
    return None
  return sorted(chosen)


# ---------------------------------------------------------------------------------------------
# Perplexity-based selection.


@runtime_checkable
class SpanScorer(Protocol):
  """How hard each candidate span is for a model: the interface a model-based scorer implements.

  `score_spans(paragraph, spans)[i]` is the model's loss of `spans[i]` in its paragraph: for
  example the mean negative log-likelihood per token of the span's text given what comes before
  it (`models.span_scorer.ModelSpanScorer`, a causal language model, sees only that), or a
  masked model's loss with the span hidden. Higher means harder. Only the order of the scores of
  one paragraph matters.
  """

  def score_spans(self, paragraph: str, spans: Sequence[Span]) -> Sequence[float]:
    """Scores of `spans` (one each, in order) in `paragraph`; higher is harder."""
    ...


@runtime_checkable
class BatchSpanScorer(SpanScorer, Protocol):
  """A `SpanScorer` that can also score many paragraphs at once (one model batch)."""

  def score_many(self, items: Sequence[tuple[str, Sequence[Span]]]) -> Sequence[Sequence[float]]:
    """For each `(paragraph, spans)` of `items`, the scores `score_spans` would give."""
    ...


class CallableScorer:
  """A `SpanScorer` from a function of one span: `fn(paragraph, span) -> float`.

  Args:
    fn: The score of one span in its paragraph; higher is harder.
  """

  def __init__(self, fn):
    self.fn = fn

  def score_spans(self, paragraph: str, spans: Sequence[Span]) -> list[float]:
    return [float(self.fn(paragraph, span)) for span in spans]


def score_many(scorer: SpanScorer, items: Sequence[tuple[str, Sequence[Span]]]) -> list[list[float]]:
  """Scores of many paragraphs' spans: one `score_many` call when the scorer has it.

  Args:
    scorer: A `SpanScorer`, possibly a `BatchSpanScorer`.
    items: `(paragraph, spans)` pairs.

  Returns:
    For each item, one score per span.

  Raises:
    ValueError: The scorer returned the wrong number of results or scores.
  """
  if isinstance(scorer, BatchSpanScorer):
    results = [list(r) for r in scorer.score_many(items)]
    if len(results) != len(items):
      raise ValueError(f"score_many returned {len(results)} results for {len(items)} items")
  else:
    results = [list(scorer.score_spans(p, spans)) for p, spans in items]
  for (_, spans), scores in zip(items, results):
    _check_scores(spans, scores)
  return results


def _check_scores(spans: Sequence[Span], scores: Sequence[float]) -> None:
  if len(scores) != len(spans):
    raise ValueError(f"scorer gave {len(scores)} scores for {len(spans)} spans")
  for span, score in zip(spans, scores):
    if math.isnan(score):
      raise ValueError(f"scorer gave NaN for span {span}")


def hardest_of(candidates: Sequence[Span], scores: Sequence[float], num_masks: int) -> list[Span]:
  """The `num_masks` highest-scored non-overlapping spans, given their scores.

  Greedy: spans in order of decreasing score (ties: the earlier span first, then the shorter),
  each taken unless it overlaps one already taken.

  Args:
    candidates: Candidate spans.
    scores: One score per candidate; higher is harder.
    num_masks: How many spans to take.

  Returns:
    Up to `num_masks` spans (fewer only when too few do not overlap), in order of appearance.
  """
  _check_scores(candidates, scores)
  ranked = sorted(zip(candidates, scores), key=lambda pair: (-pair[1], pair[0].start, pair[0].end))
  taken: list[Span] = []
  for span, _ in ranked:
    if len(taken) == num_masks:
      break
    if span not in taken and not any(_overlap(span, t) for t in taken):
      taken.append(span)
  return sorted(taken)


def select_hardest(paragraph: str, candidates: Sequence[Span], scorer: SpanScorer,
                   num_masks: int) -> list[Span]:
  """The `num_masks` candidates the scorer finds hardest (see `hardest_of`).

  Args:
    paragraph: The paragraph the spans come from.
    candidates: Candidate spans of `paragraph`.
    scorer: Gives each candidate's loss in context; higher is harder.
    num_masks: How many spans to take.

  Returns:
    Up to `num_masks` spans in order of appearance.

  Raises:
    ValueError: A candidate does not match the paragraph, or the scorer's output is unusable.
  """
  pool = _prepared(paragraph, candidates)
  if not pool:
    return []
  return hardest_of(pool, list(scorer.score_spans(paragraph, pool)), num_masks)


def select_masks(paragraph: str, candidates: Sequence[Span], rng: random.Random, *,
                 num_masks: int | None = None, strategy: str = "random",
                 scorer: SpanScorer | None = None) -> list[Span] | None:
  """The spans to mask in a paragraph, by MaskSearch's sampler or by model difficulty.

  Args:
    paragraph: The paragraph the spans come from.
    candidates: Filtered candidate spans of `paragraph`.
    rng: Source of randomness (the mask count, and the draws of the 'random' strategy).
    num_masks: Exact number of masks; None uses MaskSearch's rule (`choose_mask_count`).
    strategy: 'random' (MaskSearch's weighted sampler, `sample_masks`) or 'perplexity' (the
      highest-scored spans, `select_hardest`).
    scorer: The `SpanScorer` of the 'perplexity' strategy.

  Returns:
    The chosen spans in order of appearance, or None when the paragraph is skipped (see
    `sample_masks`; the same rules apply to both strategies).

  Raises:
    ValueError: Unknown strategy, 'perplexity' without a scorer, bad candidates or `num_masks`.
  """
  if strategy == "random":
    return sample_masks(paragraph, candidates, rng, num_masks)
  if strategy != "perplexity":
    raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
  if scorer is None:
    raise ValueError("strategy 'perplexity' needs a scorer")
  prepared = _pool_and_count(paragraph, candidates, rng, num_masks)
  if prepared is None:
    return None
  pool, count = prepared
  return _complete(paragraph, select_hardest(paragraph, pool, scorer, count), count)


# ---------------------------------------------------------------------------------------------
# Masked paragraphs and records.


def mask_paragraph(paragraph: str, spans: Sequence[Span]) -> str:
  """`paragraph` with each of `spans` replaced by `[mask]`.

  Args:
    paragraph: The original paragraph; must not contain `[mask]` already.
    spans: Non-overlapping spans of `paragraph`, in any order.

  Returns:
    The masked paragraph.

  Raises:
    ValueError: A span does not match, spans overlap, or the paragraph contains `[mask]`.
  """
  if not _usable(paragraph):
    raise ValueError(f"the paragraph already contains {MASK}")
  ordered = _prepared(paragraph, spans)
  for a, b in zip(ordered, ordered[1:]):
    if _overlap(a, b):
      raise ValueError(f"spans {a} and {b} overlap")
  pieces, end = [], 0
  for span in ordered:
    pieces += [paragraph[end:span.start], MASK]
    end = span.end
  pieces.append(paragraph[end:])
  return "".join(pieces)


def fill_masks(masked_paragraph: str, fills: Sequence[str]) -> str:
  """Puts `fills` into the `[mask]`s of `masked_paragraph`, in order.

  Args:
    masked_paragraph: A paragraph with `[mask]`s (not the query with its instruction).
    fills: One text per `[mask]`.

  Returns:
    The filled paragraph.

  Raises:
    ValueError: The number of fills differs from the number of `[mask]`s.
  """
  pieces = masked_paragraph.split(MASK)
  if len(fills) != len(pieces) - 1:
    raise ValueError(f"{len(fills)} fills for {len(pieces) - 1} {MASK}s")
  out = [pieces[0]]
  for fill, piece in zip(fills, pieces[1:]):
    out += [fill, piece]
  return "".join(out)


def ensure_title(paragraph: str, title: str, candidates: Sequence[Span] = ()) -> tuple[str, list[Span]]:
  """Prepends the page title to a paragraph that does not contain it, as MaskSearch does.

  The title's disambiguation suffix (" (film)") is dropped first. The generator's pronoun
  substitution applies to Chinese text only and is not done here.

  Args:
    paragraph: The paragraph.
    title: Its page title.
    candidates: Candidate spans of `paragraph`, shifted along with the text.

  Returns:
    The paragraph (unchanged when it names the title) and the shifted candidates.
  """
  name = title.split(" (")[0]
  if not name or name in paragraph:
    return paragraph, list(candidates)
  shift = len(name) + 1
  return f"{name} {paragraph}", [Span(s.start + shift, s.end + shift, s.text, s.kind) for s in candidates]


def make_record(paragraph: str, masked_spans: Sequence[Span], candidates: Sequence[Span], title: str,
                source: str = "wiki", instruction: str = RAMP_INSTRUCTION) -> dict[str, Any]:
  """A RAMP record in MaskSearch's shape.

  Args:
    paragraph: The original paragraph (the record's `answer`).
    masked_spans: The spans to mask (non-overlapping, at least one).
    candidates: Every candidate span the masks were chosen from (`ext.entities`).
    title: The page title.
    source: Where the paragraph comes from (MaskSearch writes "wiki").
    instruction: Appended to the masked paragraph after a blank line.

  Returns:
    `{"query", "answer", "ext": {"mask_num", "masks", "entities", "source", "title"}}`, with
    masks and entities in order of appearance.

  Raises:
    ValueError: No spans, or spans that do not match or overlap.
  """
  if not masked_spans:
    raise ValueError("a RAMP record needs at least one masked span")
  masked = mask_paragraph(paragraph, masked_spans)
  return {
      "query": masked + QUERY_SEPARATOR + instruction,
      "answer": paragraph,
      "ext": {
          "mask_num": len(set(masked_spans)),
          "masks": [s.text for s in sorted(set(masked_spans))],
          "entities": [s.text for s in _prepared(paragraph, candidates)],
          "source": source,
          "title": title,
      },
  }


def split_query(query: str) -> tuple[str, str]:
  """`(masked paragraph, instruction)` of a record's query.

  Raises:
    ValueError: The query does not end with a blank line and a known instruction.
  """
  for instruction in INSTRUCTIONS:
    suffix = QUERY_SEPARATOR + instruction
    if query.endswith(suffix):
      return query[:-len(suffix)], instruction
  raise ValueError("query does not end with a blank line and MaskSearch's instruction "
                   f"({RAMP_INSTRUCTION!r})")


def _match_fills(masked: str, answer: str, options: Sequence[str]) -> list[str] | None:
  """Fills, one of `options` per `[mask]`, that turn `masked` into `answer`; None if none do."""
  pieces = masked.split(MASK)
  if not answer.startswith(pieces[0]):
    return None

  def solve(slot: int, pos: int) -> list[str] | None:
    if slot == len(pieces):
      return [] if pos == len(answer) else None
    literal = pieces[slot]
    for option in options:
      end = pos + len(option)
      if answer.startswith(option, pos) and answer.startswith(literal, end):
        rest = solve(slot + 1, end + len(literal))
        if rest is not None:
          return [option] + rest
    return None

  return solve(1, len(pieces[0]))


_FIELDS = (("query", str), ("answer", str), ("ext", dict))
_EXT_FIELDS = (("mask_num", int), ("masks", list), ("entities", list), ("source", str), ("title", str))


def check_record(record: Any, *, strict: bool = True) -> None:
  """Checks that `record` is a well-formed RAMP record; extra fields are allowed.

  Args:
    record: A decoded JSON value.
    strict: Require what this module writes: `mask_num` == len(masks) == number of `[mask]`s
      and filling the `[mask]`s in order with `masks` gives `answer`. When false, accept
      MaskSearch's released generator's records too: it may list a mask twice (it draws with
      replacement) or out of order, or list one it could not find, so only `mask_num` ==
      len(masks) and some choice of one listed mask per `[mask]` giving `answer` is required.

  Raises:
    ValueError: What is wrong.
  """
  if not isinstance(record, dict):
    raise ValueError(f"expected a JSON object, got {type(record).__name__}")
  for fields, obj, prefix in ((_FIELDS, record, ""), (_EXT_FIELDS, record.get("ext"), "ext.")):
    for name, kind in fields:
      if name not in obj:
        raise ValueError(f"missing field {prefix + name!r}")
      value = obj[name]
      if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"field {prefix + name!r} should be {kind.__name__}, got {type(value).__name__}")
  ext = record["ext"]
  for name in ("masks", "entities"):
    for i, value in enumerate(ext[name]):
      if not isinstance(value, str) or not value:
        raise ValueError(f"ext.{name}[{i}] should be a non-empty string, got {value!r}")
  masks = ext["masks"]
  masked, _ = split_query(record["query"])
  slots = masked.count(MASK)
  if ext["mask_num"] != len(masks):
    raise ValueError(f"ext.mask_num is {ext['mask_num']} but ext.masks has {len(masks)}")
  if slots == 0:
    raise ValueError(f"the query's paragraph has no {MASK}")
  if strict:
    if slots != len(masks):
      raise ValueError(f"the query's paragraph has {slots} {MASK} but ext.masks has {len(masks)}"
                       + (" (a mask listed twice, as MaskSearch's generator may write: read with"
                          " strict=False)" if len(set(masks)) < len(masks) else ""))
    if fill_masks(masked, masks) != record["answer"]:
      raise ValueError(f"filling each {MASK} in order with ext.masks does not give the answer")
  else:
    if slots > len(masks):
      raise ValueError(f"the query's paragraph has {slots} {MASK} but ext.masks has {len(masks)}")
    if _match_fills(masked, record["answer"], list(dict.fromkeys(masks))) is None:
      raise ValueError(f"no choice of ext.masks for the {MASK}s gives the answer")


def record_fills(record: dict) -> list[str]:
  """The text under each `[mask]` of a record's query, in order (found from the answer).

  Args:
    record: A record that passes `check_record(record, strict=False)`.

  Returns:
    One string per `[mask]`; equal to `ext.masks` for a strict record.

  Raises:
    ValueError: The record's masks do not explain its answer.
  """
  masked, _ = split_query(record["query"])
  fills = _match_fills(masked, record["answer"], list(dict.fromkeys(record["ext"]["masks"])))
  if fills is None:
    raise ValueError(f"no choice of ext.masks for the {MASK}s gives the answer")
  return fills


# ---------------------------------------------------------------------------------------------
# jsonl files.


def _compression(path: pathlib.Path) -> str | None:
  return {".gz": "gz", ".bz2": "bz2"}.get(path.suffix)


def write_ramp_jsonl(records: Iterable[dict], path: str | os.PathLike, *, overwrite: bool = False,
                     strict: bool = True) -> int:
  """Writes RAMP records one a line, atomically (`.gz` / `.bz2` suffix: compressed).

  Args:
    records: Records in MaskSearch's shape (`make_record`); each is checked first.
    path: The output file.
    overwrite: Replace an existing file; otherwise raise before writing.
    strict: Check records as `check_record(strict=...)` does.

  Returns:
    The number of records written.

  Raises:
    ValueError: A malformed record ("record N: ..."); nothing is written.
    FileExistsError: `path` exists and `overwrite` is false.
  """
  target = pathlib.Path(path)
  # `atomic_text` would replace a directory by the file; refuse. Without `overwrite` any existing
  # target, a directory too, is its FileExistsError.
  if overwrite and target.is_dir():
    raise IsADirectoryError(f"{target} is a directory")
  count = 0
  with atomic_text(target, overwrite=overwrite, compression=_compression(target)) as f:
    for i, record in enumerate(records):
      try:
        check_record(record, strict=strict)
      except ValueError as e:
        raise ValueError(f"record {i}: {e}") from e
      f.write(json.dumps(record, ensure_ascii=False))
      f.write("\n")
      count += 1
  return count


def _open_binary(path: pathlib.Path) -> IO[bytes]:
  compression = _compression(path)
  if compression == "gz":
    return gzip.open(path, "rb")
  if compression == "bz2":
    return bz2.open(path, "rb")
  return open(path, "rb")


def read_ramp_jsonl(path: str | os.PathLike, *, strict: bool = True,
                    skip_bad: bool = False) -> Iterator[dict]:
  """Streams RAMP records from a jsonl file (ours or MaskSearch's; `.gz` / `.bz2` too).

  Blank lines are ignored. Records are yielded as decoded, extra fields included.

  Args:
    path: The file.
    strict: Check records as `check_record(strict=...)` does. Records written by MaskSearch's
      released generator often list a mask twice; read those with `strict=False`.
    skip_bad: Skip malformed records (logging how many) instead of raising.

  Yields:
    The records.

  Raises:
    CorpusFormatError: A malformed record, as `path:line: reason`.
    FileNotFoundError: `path` does not exist.
  """
  path = pathlib.Path(path)
  skipped, first_error = 0, None
  with _open_binary(path) as f:
    for line_number, raw in enumerate(f, 1):
      if line_number == 1:
        raw = raw.removeprefix(b"\xef\xbb\xbf")
      if not raw.strip():
        continue
      try:
        try:
          record = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
          raise ValueError(f"bytes that are not UTF-8 at byte {e.start} of the line") from e
        except json.JSONDecodeError as e:
          raise ValueError(f"bad JSON ({e.msg} at column {e.colno})") from e
        check_record(record, strict=strict)
      except ValueError as e:
        error = CorpusFormatError(str(path), line_number, str(e))
        if not skip_bad:
          raise error from e
        skipped += 1
        first_error = first_error or str(error)
        continue
      yield record
  if skipped:
    logging.warning("skipped %d malformed RAMP records in %s (first: %s)", skipped, path, first_error)
