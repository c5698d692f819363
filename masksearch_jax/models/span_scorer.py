"""A model's loss of each candidate span: the scorer of RAMP's 'perplexity' masking strategy.

MaskSearch masks salient spans drawn at random; the 'perplexity' strategy of `masking` masks
the ones a model finds hardest. `ModelSpanScorer` is the `masking.SpanScorer` (and
`BatchSpanScorer`) for it: a span's score is the decoder's mean negative log-likelihood per
token of the span's tokens (the log of its perplexity), read off one teacher-forced pass over
the whole paragraph.

What "the loss of the span in context" means here. The decoder is causal: the logit that
predicts a token sees only the tokens before it. A span's tokens are therefore predicted from
the paragraph text before the span (and, by teacher forcing, from the span's own earlier
tokens); the text after the span plays no part, so no span is given away by what follows it
and every span of a paragraph scores from the same forward pass. The paragraph is fed the
way training feeds a target, after the feature converter's start token (`bos_id`), so even a
paragraph's first token has a prediction. (Seeing the text after the span as well would take
one pass per span, e.g. the paragraph with `[mask]` in place of the span followed by the
span: several times the cost, for a score the agent's masked prompt only roughly matches.)

Which tokens are a span's. The paragraph is tokenized once with each token's character
offsets (SentencePiece's proto output, or a Hugging Face tokenizer's offsets), and a span's
tokens are those covering at least one of its characters. A token that straddles the span's
edge (SentencePiece's "▁Hi", which carries the space before "Higumero"; a "ro," ending it)
counts whole; a zero-width token (SentencePiece's dummy-prefix "▁") never counts.

Long paragraphs. A row holds `max_length` tokens. A longer paragraph is not cut: it is
scored in more rows, windows of `max_length` tokens each `stride` tokens further than the
last (the last one flush with the paragraph's end), each giving the loss of the tokens the
earlier windows did not reach, so every token is scored with at least `max_length - stride`
tokens of context. A made-up score for spans past a cut would bias the choice: +inf always
masks the end of long paragraphs, a neutral value hides it. With the default length of 512
tokens, world paragraphs (at most about 200) and Wikipedia's 100-word passages never need it.

Shapes and compilation. The rows of every paragraph given to one `score_many` call are put
together into `[rows, max_length]` batches of one jitted function (per model config, shared
by every scorer of the process). A batch holds `batch_size` rows; a smaller remainder is
padded to the next power of two, so a single paragraph (`RampDataSource` asks one paragraph
at a time) costs one row, not `batch_size`, and at most 1 + log2(batch_size) shapes are ever
compiled for a model.

In Gin (the scorer is built anew each time a RAMP dataset is read, so loaded parameters are
cached per checkpoint and compiled functions per model config):

  from __gin__ import dynamic_registration
  from masksearch_jax.data import ramp_source
  from masksearch_jax.models import span_scorer

  ramp_source.RampMasking.strategy = 'perplexity'
  ramp_source.RampMasking.scorer = @span_scorer.ModelSpanScorer()
  span_scorer.ModelSpanScorer.checkpoint = '/runs/r1/checkpoints'

or, once this module is imported, `masksearch_jax.data.ramp_source.RampMasking.scorer =
@masksearch_jax.models.span_scorer.ModelSpanScorer()` without dynamic registration.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import seqio

from masksearch_jax.data.spans import Span
from masksearch_jax.models.transformer import Decoder, TransformerConfig

# Forward functions by model config (as JSON), shared by every scorer of the process.
_FORWARDS: dict[str, Callable] = {}
_FORWARDS_LOCK = threading.Lock()
_traces = 0


def trace_count() -> int:
  """How many times a scorer's forward function has been traced (compiled) in this process."""
  return _traces


def _forward(config: TransformerConfig) -> Callable:
  """The jitted (params, inputs [b, l], targets [b, l]) -> per-token NLL [b, l] of `config`."""
  key = json.dumps(dataclasses.asdict(config), sort_keys=True)
  with _FORWARDS_LOCK:
    if key not in _FORWARDS:
      decoder = Decoder(config)

      def nll(params, inputs, targets):
        global _traces
        _traces += 1  # Runs only while tracing.
        logits = decoder.apply({"params": params}, inputs)
        log_z = jax.nn.logsumexp(logits, axis=-1)
        return log_z - jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]

      _FORWARDS[key] = jax.jit(nll)
    return _FORWARDS[key]


# -- tokens and their characters ------------------------------------------------------------------


def _resolve(vocabulary: seqio.Vocabulary) -> seqio.Vocabulary:
  from masksearch_jax.data import seqio_tasks
  return vocabulary.vocabulary if isinstance(vocabulary, seqio_tasks.GinVocabulary) else vocabulary


def token_offsets(vocabulary: seqio.Vocabulary, text: str) -> tuple[np.ndarray, np.ndarray]:
  """The token ids of `text` and the characters each token covers.

  Args:
    vocabulary: A `seqio.SentencePieceVocabulary` (its SentencePiece offsets, in bytes, are
      turned into character offsets) or a vocabulary with a Hugging Face `tokenizer` such as
      `vocabularies.HFTokenizerVocabulary` (encoded without special tokens); the tasks'
      `seqio_tasks.VOCABULARY` stands for the one it resolves to.
    text: The text.

  Returns:
    ids [n] int32 (as `vocabulary.encode(text)` gives them) and offsets [n, 2] int64: token i
    covers `text[offsets[i, 0]:offsets[i, 1]]` (possibly empty).

  Raises:
    TypeError: The vocabulary gives no offsets.
  """
  vocab = _resolve(vocabulary)
  if isinstance(vocab, seqio.SentencePieceVocabulary):
    from sentencepiece import sentencepiece_pb2
    proto = sentencepiece_pb2.SentencePieceText.FromString(vocab.tokenizer.encode(text, out_type="serialized_proto"))
    ids = [piece.id for piece in proto.pieces]
    byte_offsets = np.array([(piece.begin, piece.end) for piece in proto.pieces], np.int64).reshape(-1, 2)
    # Byte offset of each character's start, and of the end.
    char_starts = np.concatenate([[0], np.cumsum([len(c.encode("utf-8")) for c in text])])
    # Byte-fallback pieces may split a character; such a piece covers the whole character.
    offsets = np.stack([np.searchsorted(char_starts, byte_offsets[:, 0], side="right") - 1,
                        np.searchsorted(char_starts, byte_offsets[:, 1], side="left")], axis=1)
  elif hasattr(getattr(vocab, "tokenizer", None), "encode_batch"):
    encoding = vocab.tokenizer.encode(text, add_special_tokens=False)
    ids = encoding.ids
    offsets = np.array(encoding.offsets, np.int64).reshape(-1, 2)
  else:
    raise TypeError(f"{type(vocab).__name__} gives no token offsets; ModelSpanScorer needs a SentencePiece "
                    "vocabulary or a Hugging Face tokenizer")
  return np.asarray(ids, np.int32), offsets.astype(np.int64)


def span_token_indices(offsets: np.ndarray, start: int, end: int) -> np.ndarray:
  """Indices of the tokens covering at least one character of `[start, end)`.

  Args:
    offsets: [n, 2] character offsets of the tokens (`token_offsets`).
    start: The span's first character.
    end: Just past the span's last character.

  Returns:
    The token indices, increasing (contiguous for offsets of a tokenization).
  """
  begins, ends = offsets[:, 0], offsets[:, 1]
  return np.flatnonzero((begins < end) & (ends > start) & (ends > begins))


def windows(num_tokens: int, max_length: int, stride: int) -> list[tuple[int, int, int]]:
  """The rows a paragraph of `num_tokens` tokens is scored in.

  Args:
    num_tokens: Tokens in the paragraph.
    max_length: Tokens in a row.
    stride: How much further each window after the first starts than the one before (the
      last is flush with the end instead); at most `max_length - 1`.

  Returns:
    `(start, lo, hi)` per row: the row holds tokens `[start, start + max_length)` and gives the
    loss of tokens `[lo, hi)`. One row `(0, 0, n)` when the paragraph fits; none when empty.
  """
  if num_tokens <= max_length:
    return [(0, 0, num_tokens)] if num_tokens else []
  rows, done = [(0, 0, max_length)], max_length
  while done < num_tokens:
    end = min(done + stride, num_tokens)
    rows.append((end - max_length, done, end))
    done = end
  return rows


# -- checkpoints ----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def _load_cached(directory: str, step: int | None) -> Any:
  """Parameters of a parameter checkpoint (step None) or of a run's checkpoints, on the device."""
  from masksearch_jax.training import checkpoints
  del step  # Part of the cache key: a run's newer checkpoint is loaded anew.
  return jax.device_put(checkpoints.load_params(directory))


def load_checkpoint(path: str | os.PathLike, config: TransformerConfig | None = None) -> tuple[Any, TransformerConfig]:
  """Parameters and model config of a checkpoint, cached per process.

  Args:
    path: A parameter checkpoint (`params/` and `model_config.json`), a run's checkpoints
      directory (its newest step is used) or a run's model directory (holding `checkpoints/`).
    config: The model config; None reads it from the checkpoint.

  Returns:
    (params, config).

  Raises:
    FileNotFoundError: No checkpoint at `path`.
    ValueError: A run's checkpoint that does not record its model, and no `config`.
  """
  directory = Path(path).absolute()
  if not (directory / "params").is_dir() and (directory / "checkpoints").is_dir():
    directory = directory / "checkpoints"
  if not directory.is_dir():
    raise FileNotFoundError(f"no checkpoint at {path}")
  if (directory / "params").is_dir():
    from masksearch_jax.training import checkpoints
    return _load_cached(str(directory), None), config if config is not None else checkpoints.load_config(directory)
  import orbax.checkpoint as ocp
  manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True),
                                  item_names=("state", "meta"))
  try:
    step = manager.latest_step()
    if step is None:
      raise FileNotFoundError(f"{path} holds neither a parameter checkpoint (params/) nor training checkpoints")
    if config is None:
      meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
      if not meta.get("model"):
        raise ValueError(f"checkpoint {step} in {directory} does not record its model; pass config")
      config = TransformerConfig(**meta["model"])
  finally:
    manager.close()
  return _load_cached(str(directory), step), config


# -- the scorer -----------------------------------------------------------------------------------


@gin.configurable(module="masksearch_jax.models.span_scorer")
class ModelSpanScorer:
  """Scores candidate spans by a decoder's mean NLL of their tokens given the text before them.

  Implements `masking.SpanScorer` and `masking.BatchSpanScorer` (see the module docstring for
  what is scored, which tokens count and how long paragraphs are handled).

  Args:
    checkpoint: A parameter checkpoint, a run's checkpoints directory (newest step) or a run's
      model directory; exactly one of `checkpoint` and `params`.
    params: The decoder's parameters (boxed or not), instead of a checkpoint.
    config: The model config; needed with `params`, read from the checkpoint otherwise.
    vocabulary: The tokenizer the model was trained with; None uses the tasks' vocabulary
      (`seqio_tasks.VOCABULARY`, resolved at each call, so Gin decides it).
    max_length: Tokens in a row (a static shape); longer paragraphs take several rows.
    batch_size: Rows in one jitted call.
    stride: How far apart the windows of a longer paragraph start (1..max_length - 1); None:
      max_length // 2, so every token has at least half a row of context.
    bos_id: The first input token, before the paragraph's first token; the feature
      converter's (`AgentLMFeatureConverter.bos_id`, 0 by default).

  Raises:
    ValueError: Both or neither of `checkpoint` and `params`, `params` without `config`, or
      bad sizes.
    FileNotFoundError: No checkpoint at `checkpoint`.
  """

  def __init__(self, checkpoint: str | os.PathLike | None = None, *, params: Any = None,
               config: TransformerConfig | None = None, vocabulary: seqio.Vocabulary | None = None,
               max_length: int = 512, batch_size: int = 16, stride: int | None = None, bos_id: int = 0):
    if (checkpoint is None) == (params is None):
      raise ValueError("ModelSpanScorer needs exactly one of checkpoint and params")
    if max_length < 2 or batch_size < 1:
      raise ValueError(f"max_length must be >= 2 and batch_size >= 1, got {max_length} and {batch_size}")
    stride = max_length // 2 if stride is None else stride
    if not 1 <= stride < max_length:
      raise ValueError(f"stride must be in 1..{max_length - 1}, got {stride}")
    if checkpoint is not None:
      params, config = load_checkpoint(checkpoint, config)
    elif config is None:
      raise ValueError("ModelSpanScorer(params=...) needs config")
    else:
      params = jax.device_put(nn.unbox(params))
    self.params = params
    self.config = config
    self.vocabulary = vocabulary
    self.max_length = max_length
    self.batch_size = batch_size
    self.stride = stride
    self.bos_id = bos_id
    self._forward = _forward(config)

  def _vocab(self) -> seqio.Vocabulary:
    if self.vocabulary is not None:
      vocab = self.vocabulary
    else:
      from masksearch_jax.data import seqio_tasks
      vocab = seqio_tasks.VOCABULARY
    vocab = _resolve(vocab)
    if vocab.vocab_size > self.config.vocab_size:
      raise ValueError(f"the vocabulary has {vocab.vocab_size} ids but the model only {self.config.vocab_size}")
    return vocab

  def score_spans(self, paragraph: str, spans: Sequence[Span]) -> list[float]:
    """The mean NLL per token of each of `spans` given the text of `paragraph` before it.

    Args:
      paragraph: The paragraph.
      spans: Spans of `paragraph` (`text == paragraph[start:end]`).

    Returns:
      One score per span, in order; higher is harder.

    Raises:
      ValueError: A span does not match the paragraph or no token covers it.
    """
    return self.score_many([(paragraph, spans)])[0]

  def score_many(self, items: Sequence[tuple[str, Sequence[Span]]]) -> list[list[float]]:
    """`score_spans` of many paragraphs, their rows batched together.

    Args:
      items: `(paragraph, spans)` pairs; a paragraph without spans costs nothing.

    Returns:
      For each item, one score per span.

    Raises:
      ValueError: A span does not match its paragraph or no token covers it.
    """
    items = list(items)
    vocab = self._vocab()
    results: list[list[float]] = [[] for _ in items]
    jobs = []  # (item index, token ids, token indices of each span)
    for i, (paragraph, spans) in enumerate(items):
      if not spans:
        continue
      ids, offsets = token_offsets(vocab, paragraph)
      indices = []
      for span in spans:
        if not 0 <= span.start < span.end <= len(paragraph) or paragraph[span.start:span.end] != span.text:
          raise ValueError(f"span {span} does not match the paragraph at [{span.start}:{span.end}]")
        covering = span_token_indices(offsets, span.start, span.end)
        if not covering.size:
          raise ValueError(f"no token covers span {span}")
        indices.append(covering)
      jobs.append((i, ids, indices))
    losses = self.token_losses([ids for _, ids, _ in jobs])
    for (i, _, indices), loss in zip(jobs, losses):
      results[i] = [float(np.mean(loss[index], dtype=np.float64)) for index in indices]
    return results

  def token_losses(self, token_ids: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The NLL of every token of each sequence given the tokens before it (after `bos_id`).

    Args:
      token_ids: Token id sequences (paragraphs tokenized), any lengths.

    Returns:
      One float32 array per sequence, as long as it.
    """
    rows = [(j, start, lo, hi) for j, ids in enumerate(token_ids)
            for start, lo, hi in windows(len(ids), self.max_length, self.stride)]
    pending = []
    for first in range(0, len(rows), self.batch_size):
      chunk = rows[first:first + self.batch_size]
      width = min(self.batch_size, 1 << (len(chunk) - 1).bit_length())
      inputs = np.zeros((width, self.max_length), np.int32)
      targets = np.zeros((width, self.max_length), np.int32)
      for r, (j, start, _, _) in enumerate(chunk):
        ids = np.asarray(token_ids[j], np.int32)
        window = ids[start:start + self.max_length]
        previous = ids[start - 1] if start else self.bos_id
        inputs[r, :len(window)] = np.concatenate([[previous], window[:-1]])
        targets[r, :len(window)] = window
      # Dispatched before any result is read, so the batches run back to back.
      pending.append((chunk, self._forward(self.params, inputs, targets)))
    losses = [np.zeros(len(ids), np.float32) for ids in token_ids]
    for chunk, nll in pending:
      nll = np.asarray(nll)
      for r, (j, start, lo, hi) in enumerate(chunk):
        losses[j][lo:hi] = nll[r, lo - start:hi - start]
    return losses
