"""RAMP examples as a SeqIO data source: corpus paragraphs with salient spans masked.

`RampDataSource(num_masks)` reads a corpus (the embedded world by default),
finds candidate spans (rule-based extractor, the world's own mentions, or an
LLM), applies MaskSearch's filters and sampler (`masking`), and yields one
example per usable paragraph:

  inputs            MaskSearch's "query": the masked paragraph, a blank line, and
                    its fill-in instruction (the agent's own prompt, with the
                    search protocol, is built from `masked_paragraph` by rollouts)
  targets           the original paragraph (MaskSearch's "answer")
  masked_paragraph  the paragraph with "[mask]" in place of each chosen span
  masks             the masked span texts, in order
  mask_num, passage_id, title

Every choice is seeded by (seed, passage id, mask count), so an example does not
depend on the order, shard or epoch in which it is produced. Sharding is by
passage (`shard_info`), so hosts never see each other's paragraphs.

The corpus and the masking are read from Gin when a dataset is built, not when
tasks are registered, so `RampCorpus.path = '...'` in a Gin file changes the data
of every registered RAMP task without code edits.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import random
import threading
from pathlib import Path
from typing import Any, Iterator, Sequence

import gin
import seqio
import tensorflow as tf

from masksearch_jax.agent import protocol
from masksearch_jax.data import masking, world_io
from masksearch_jax.data.spans import Span
from masksearch_jax.data.world import WorldConfig
from masksearch_jax.data.world_types import ENTITY_KINDS

SPLITS = ("train", "validation", "test")
# The world's entity splits, by SeqIO split name.
_WORLD_SPLITS = {"train": "train", "validation": "dev", "test": "test"}
# World mention kind -> span kind (occupations are common nouns, not salient spans).
# Examples handed from Python to tf.data at a time.
_GENERATOR_BATCH = 64
_MENTION_KINDS = {**{k: "name" for k in ENTITY_KINDS}, "demonym": "name", "date": "date", "year": "year",
                  "quantity": "number"}


# Gin-configurable because registered tasks read it lazily, when a dataset is built.
@gin.configurable(module="masksearch_jax.data.ramp_source")
@dataclasses.dataclass(frozen=True)
class RampCorpus:
  """Where RAMP paragraphs come from.

  Attributes:
    path: A corpus file or directory in any format `corpus_readers` reads; None
      uses the embedded world given by `world` (generated into the cache on
      first use).
    format: The corpus format of `path` ('auto' detects it).
    world: The embedded world used when `path` is None.
    heldout_fraction: For a corpus without splits: the share of pages (by a
      hash of the title) in 'validation', and the same share in 'test'.
    min_words: Paragraphs shorter than this are skipped.
  """

  path: str | None = None
  format: str = "auto"
  world: WorldConfig = WorldConfig(seed=0, size=4000)
  heldout_fraction: float = 0.02
  min_words: int = 12


@gin.configurable(module="masksearch_jax.data.ramp_source")
@dataclasses.dataclass(frozen=True)
class RampMasking:
  """How spans are found and chosen.

  Attributes:
    spans: 'rules' (the rule-based extractor with a gazetteer of the corpus's
      titles), 'world' (the embedded world's own mentions; world corpus only),
      or 'llm' (an LLM extractor; set `llm_extractor`).
    strategy: 'random' (MaskSearch's weighted sampler) or 'perplexity' (mask
      the spans a model finds hardest; set `scorer`).
    scorer: A `masking.SpanScorer` for the 'perplexity' strategy.
    llm_extractor: An `LLMSpanExtractor` for `spans='llm'`.
    seed: Seed of every masking choice (combined with the passage id).
  """

  spans: str = "rules"
  strategy: str = "random"
  scorer: Any = None
  llm_extractor: Any = None
  seed: int = 0


@dataclasses.dataclass(frozen=True)
class _Paragraph:
  id: str
  title: str
  text: str
  split: str
  mentions: tuple = ()


@functools.lru_cache(maxsize=4)
def _load_paragraphs(corpus: RampCorpus) -> tuple[_Paragraph, ...]:
  """All paragraphs of `corpus` with their split (cached per process)."""
  if corpus.path is None:
    world_dir = world_io.cached_world_dir(corpus.world)
    paragraphs = []
    with open(Path(world_dir) / "passages.jsonl", encoding="utf-8") as f:
      for line in f:
        r = json.loads(line)
        split = {v: k for k, v in _WORLD_SPLITS.items()}[r["split"]]
        paragraphs.append(_Paragraph(r["id"], r["title"], r["text"], split, tuple(map(tuple, r["mentions"]))))
    return tuple(p for p in paragraphs if len(p.text.split()) >= corpus.min_words)
  from masksearch_jax.data import corpus_readers
  paragraphs = [_Paragraph(p.id, p.title, p.text, _hash_split(p.title, corpus.heldout_fraction))
                for p in corpus_readers.read_corpus(corpus.path, corpus.format)
                if len(p.text.split()) >= corpus.min_words]
  if not paragraphs:
    raise ValueError(f"RAMP corpus {corpus.path} has no paragraph of {corpus.min_words} or more words")
  return tuple(paragraphs)


def _hash_split(title: str, fraction: float) -> str:
  u = int.from_bytes(hashlib.md5(title.encode("utf-8")).digest()[:8], "big") / 2**64
  return "validation" if u < fraction else "test" if u < 2 * fraction else "train"


@functools.lru_cache(maxsize=4)
def _rule_extractor(corpus: RampCorpus):
  from masksearch_jax.data import salient_spans
  titles = {p.title for p in _load_paragraphs(corpus)}
  return salient_spans.RuleBasedExtractor(salient_spans.Gazetteer.from_titles(sorted(titles)))


def _world_candidates(paragraph: _Paragraph) -> list[Span]:
  spans = [Span(start, end, paragraph.text[start:end], _MENTION_KINDS[kind])
           for start, end, kind, _ in paragraph.mentions if kind in _MENTION_KINDS]
  return sorted(set(spans))


# Paragraphs whose candidate spans are kept per process (about 1 kB each).
_CANDIDATE_CACHE_SIZE = 200_000
_CACHE_LOCK = threading.Lock()


@functools.lru_cache(maxsize=8)
def _candidate_cache(corpus: RampCorpus, spans: str, llm_extractor: Any) -> dict[str, list[Span]]:
  """Candidate spans by paragraph id, for one corpus and span source (oldest dropped first)."""
  del corpus, spans, llm_extractor  # The cache key.
  return {}


class RampDataSource(seqio.DataSource):
  """RAMP examples with `num_masks` masks each (None: MaskSearch's own mask-count rule).

  With a `vocabulary`, `inputs` and `targets` come tokenized (a batch of
  examples at a time, much faster than one by one), and the text is kept in
  `inputs_pretokenized` and `targets_pretokenized`, as seqio's `tokenize` does.
  """

  def __init__(self, num_masks: int | None, vocabulary: seqio.Vocabulary | None = None):
    if num_masks is not None and not 1 <= num_masks <= 8:
      raise ValueError(f"num_masks must be in 1..8 or None, got {num_masks}")
    self.num_masks = num_masks
    self.vocabulary = vocabulary
    super().__init__(splits=SPLITS, num_input_examples=None, caching_permitted=False)

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return True

  def list_shards(self, split: str) -> Sequence[str]:
    return [split]

  @property
  def output_signature(self) -> dict[str, tf.TensorSpec]:
    """The signature of one example."""
    return {
        "inputs": tf.TensorSpec([], tf.string), "targets": tf.TensorSpec([], tf.string),
        "masked_paragraph": tf.TensorSpec([], tf.string), "masks": tf.TensorSpec([None], tf.string),
        "mask_num": tf.TensorSpec([], tf.int32), "passage_id": tf.TensorSpec([], tf.string),
        "title": tf.TensorSpec([], tf.string),
    }

  def _batched_signature(self) -> dict[str, tf.TypeSpec]:
    signature: dict[str, tf.TypeSpec] = {k: tf.TensorSpec([None], v.dtype) for k, v in self.output_signature.items()}
    signature["masks"] = tf.RaggedTensorSpec([None, None], tf.string, ragged_rank=1, row_splits_dtype=tf.int64)
    return signature

  def examples(self, split: str, *, shuffle: bool = False, seed: int | None = None,
               shard_info: seqio.ShardInfo | None = None, epoch: int = 0) -> Iterator[dict[str, Any]]:
    """The examples of `split` as Python dicts (what the dataset is made of).

    The corpus and settings are read and checked before the first example, so a
    bad setting fails here rather than from inside tf.data. With `shuffle`, each
    epoch has its own order; an example's masks do not depend on the epoch.
    """
    choices = self._choices(split, shuffle=shuffle, seed=seed, shard_info=shard_info, epoch=epoch)
    return (self._example(paragraph, chosen) for paragraph, _, chosen in choices)

  def records(self, split: str, *, source: str = "world") -> Iterator[dict[str, Any]]:
    """The examples of `split` as MaskSearch's jsonl records (`masking.make_record`), in corpus order."""
    for paragraph, candidates, chosen in self._choices(split):
      yield masking.make_record(paragraph.text, chosen, candidates, paragraph.title, source=source)

  def _choices(self, split: str, *, shuffle: bool = False, seed: int | None = None,
               shard_info: seqio.ShardInfo | None = None, epoch: int = 0):
    """(paragraph, candidate spans, chosen spans) for each usable paragraph; checks settings first."""
    if split not in SPLITS:
      raise ValueError(f"RAMP split must be one of {SPLITS}, got {split!r}")
    corpus, settings = RampCorpus(), RampMasking()
    if settings.spans == "world" and corpus.path is not None:
      raise ValueError("RampMasking.spans = 'world' needs the embedded world (RampCorpus.path = None)")
    paragraphs = [p for p in _load_paragraphs(corpus) if p.split == split]
    order = list(range(len(paragraphs)))
    if shuffle:
      # Each mask count has its own order, so a mixture's tasks do not serve the same
      # paragraph at the same time.
      random.Random(f"ramp-order/{seed}/{split}/{self.num_masks}/{epoch}").shuffle(order)
    if shard_info is not None and shard_info.num_shards > 1:
      order = order[shard_info.index::shard_info.num_shards]
    candidates_of = self._candidate_finder(corpus, settings)
    return self._choose(paragraphs, order, candidates_of, settings)

  def _choose(self, paragraphs, order, candidates_of, settings):
    for i in order:
      paragraph = paragraphs[i]
      candidates = candidates_of(paragraph)
      rng = random.Random(f"ramp-mask/{settings.seed}/{paragraph.id}/{self.num_masks}")
      chosen = masking.select_masks(paragraph.text, candidates, rng, num_masks=self.num_masks,
                                    strategy=settings.strategy, scorer=settings.scorer)
      if chosen:
        yield paragraph, candidates, chosen

  def _candidate_finder(self, corpus: RampCorpus, settings: RampMasking):
    from masksearch_jax.data import salient_spans
    if settings.spans == "world":
      find = _world_candidates
    elif settings.spans == "rules":
      extractor = _rule_extractor(corpus)
      find = lambda p: extractor.extract(p.text)  # noqa: E731
    elif settings.spans == "llm":
      if settings.llm_extractor is None:
        raise ValueError("RampMasking.spans = 'llm' needs RampMasking.llm_extractor")
      find = lambda p: settings.llm_extractor.extract(p.text, title=p.title) or []  # noqa: E731
    else:
      raise ValueError(f"RampMasking.spans must be 'rules', 'world' or 'llm', got {settings.spans!r}")
    # The candidates of a paragraph do not depend on the mask count: the tasks of a
    # mixture (and later epochs) share them.
    cache = _candidate_cache(corpus, settings.spans, settings.llm_extractor)

    def candidates_of(p: _Paragraph) -> list[Span]:
      found = cache.get(p.id)
      if found is None:
        found = salient_spans.filter_candidates(find(p), p.text, p.title)
        with _CACHE_LOCK:  # The tasks of a mixture run their generators in several threads.
          cache[p.id] = found
          if len(cache) > _CANDIDATE_CACHE_SIZE:
            cache.pop(next(iter(cache)))
      return found
    return candidates_of

  @staticmethod
  def _example(paragraph: _Paragraph, chosen: list[Span]) -> dict[str, Any]:
    masked = masking.mask_paragraph(paragraph.text, chosen)
    return {
        "inputs": masked + masking.QUERY_SEPARATOR + protocol.RAMP_INSTRUCTION, "targets": paragraph.text,
        "masked_paragraph": masked, "masks": [s.text for s in sorted(chosen)], "mask_num": len(chosen),
        "passage_id": paragraph.id, "title": paragraph.title,
    }

  def get_dataset(self, split: str = "train", shuffle: bool = True, seed: int | None = None,
                  shard_info: seqio.ShardInfo | None = None, *, sequence_length=None, use_cached=False,
                  num_epochs: int | None = 1) -> tf.data.Dataset:
    self.examples(split, shuffle=shuffle, seed=seed, shard_info=shard_info)  # Checks settings now.

    epochs = itertools.count()  # tf.data calls `batches` again for each epoch, in order.

    def batches():
      # Handing tf.data a batch at a time costs far less per example than one at a time.
      examples = self.examples(split, shuffle=shuffle, seed=seed, shard_info=shard_info, epoch=next(epochs))
      while chunk := list(itertools.islice(examples, _GENERATOR_BATCH)):
        batch = {k: [ex[k] for ex in chunk] for k in chunk[0] if k != "masks"}
        batch["masks"] = tf.ragged.constant([ex["masks"] for ex in chunk], dtype=tf.string)
        yield batch

    ds = tf.data.Dataset.from_generator(batches, output_signature=self._batched_signature())
    if self.vocabulary is not None:
      ds = ds.map(self._tokenize)
    return ds.unbatch()

  def _tokenize(self, batch: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    tokenized = dict(batch)
    for name in ("inputs", "targets"):
      tokenized[f"{name}_pretokenized"] = batch[name]
      tokenized[name] = tf.cast(self.vocabulary.encode_tf(batch[name]), tf.int32)
    return tokenized

  def num_input_examples(self, split: str) -> int | None:
    return None
