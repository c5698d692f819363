"""Tests of masksearch_jax.models.span_scorer: a decoder's loss of candidate spans for RAMP masking."""

from __future__ import annotations

import dataclasses
import functools
import random
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import seqio

from masksearch_jax.data import masking, salient_spans
from masksearch_jax.data.spans import Span
from masksearch_jax.models import span_scorer
from masksearch_jax.models.span_scorer import ModelSpanScorer
from masksearch_jax.models.transformer import Decoder, TransformerConfig
from masksearch_jax.training import checkpoints as checkpoints_lib
from masksearch_jax.training import trainer

# Steps of 8 packed rows of TRAIN_LENGTH tokens (about 3 epochs of the tiny world's training passages).
TRAIN_STEPS = 150
TRAIN_LENGTH = 128
# Row length of the direct computations the scores are checked against.
DIRECT_LENGTH = 256


@pytest.fixture(scope="module")
def config(tiny_world_vocabulary):
  rows = -(-tiny_world_vocabulary.vocab_size // 128) * 128
  return TransformerConfig(vocab_size=rows, num_layers=2, d_model=64, num_heads=4, num_kv_heads=2, mlp_dim=128)


@pytest.fixture(scope="module")
def random_params(config):
  return nn.unbox(Decoder(config).init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"])


def _world_items(world, split="dev"):
  """(paragraph, its world mentions as spans) for the passages of `split`."""
  items = []
  for p in world.passages:
    if p.split == split:
      items.append((p.text, sorted({Span(m.start, m.end, p.text[m.start:m.end], "name") for m in p.mentions})))
  return items


@functools.lru_cache(maxsize=None)
def _apply(config):
  return jax.jit(lambda params, tokens: Decoder(config).apply({"params": params}, tokens))


def _direct_losses(config, params, ids, previous=0):
  """The NLL of each of `ids` given those before it (and `previous` first), in float64."""
  assert len(ids) <= DIRECT_LENGTH
  # Padded at the end to one shape, so it compiles once; the decoder is causal.
  inputs = np.zeros(DIRECT_LENGTH, np.int32)
  inputs[:len(ids)] = np.concatenate([[previous], ids[:-1]])
  logits = np.asarray(_apply(config)(params, inputs[None]), np.float64)[0, :len(ids)]
  top = logits.max(axis=-1)
  log_z = top + np.log(np.exp(logits - top[:, None]).sum(axis=-1))
  return log_z - logits[np.arange(len(ids)), ids]


def _decoded_offsets(vocab, ids):
  """Token offsets found another way: the length of the decoded prefixes."""
  ends = [len(vocab.decode(ids[:i + 1].tolist())) for i in range(len(ids))]
  return np.array(list(zip([0] + ends[:-1], ends)))


# -- unit tests -----------------------------------------------------------------------------------


def test_score_is_the_mean_nll_of_the_spans_tokens(config, random_params, tiny_world, tiny_world_vocabulary):
  vocab = tiny_world_vocabulary
  scorer = ModelSpanScorer(params=random_params, config=config, vocabulary=vocab, max_length=256)
  for text, spans in _world_items(tiny_world)[:6]:
    ids = np.asarray(vocab.encode(text))
    losses = _direct_losses(config, random_params, ids)
    offsets = _decoded_offsets(vocab, ids)
    expected = []
    for span in spans:
      covering = [i for i, (b, e) in enumerate(offsets) if b < span.end and e > span.start and e > b]
      expected.append(losses[covering].mean())
    np.testing.assert_allclose(scorer.score_spans(text, spans), expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(scorer.token_losses([ids])[0], losses, rtol=0, atol=1e-5)


def test_spans_map_to_the_tokens_covering_them(tiny_world, tiny_world_vocabulary):
  vocab = tiny_world_vocabulary
  for text, spans in _world_items(tiny_world)[:40]:
    ids, offsets = span_scorer.token_offsets(vocab, text)
    assert ids.tolist() == vocab.encode(text)
    np.testing.assert_array_equal(offsets, _decoded_offsets(vocab, ids))
    for span in spans:
      index = span_scorer.span_token_indices(offsets, span.start, span.end)
      assert index.tolist() == list(range(index[0], index[-1] + 1))
      # The tokens spell the span, and none can be left out.
      assert span.text in vocab.decode(ids[index].tolist())
      assert span.text not in vocab.decode(ids[index[1:]].tolist())
      assert span.text not in vocab.decode(ids[index[:-1]].tolist())
  # Offsets count characters, not bytes; the dummy prefix "▁" covers nothing.
  text = "Zöpaba met Ünïcödé in 東京 in 1921."
  ids, offsets = span_scorer.token_offsets(vocab, text)
  assert "".join(text[b:e] for b, e in offsets) == text
  for word in ("Ünïcödé", "東京", "1921"):
    start = text.index(word)
    index = span_scorer.span_token_indices(offsets, start, start + len(word))
    assert "".join(text[b:e] for b, e in offsets[index]).strip() == word


def test_hugging_face_tokenizer_offsets(tmp_path):
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

  from masksearch_jax.data import vocabularies
  tokenizer = Tokenizer(models.BPE())
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = decoders.ByteLevel()
  tokenizer.train_from_iterator(["The city of Zopaba was founded in 1440; it has 71,540 inhabitants."] * 5,
                                trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                                    initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  tokenizer.add_special_tokens(["<|endoftext|>"])
  tokenizer.save(str(tmp_path / "tokenizer.json"))
  vocab = vocabularies.HFTokenizerVocabulary(tmp_path / "tokenizer.json")
  text = "The city of Zöpaba, 東京, was founded in 1440."
  ids, offsets = span_scorer.token_offsets(vocab, text)
  assert ids.tolist() == vocab.encode(text)
  for word in ("Zöpaba", "東京", "1440"):
    start = text.index(word)
    index = span_scorer.span_token_indices(offsets, start, start + len(word))
    assert vocab.decode(ids[index].tolist()).strip() == word


def test_batched_scores_equal_one_at_a_time(config, random_params, tiny_world, tiny_world_vocabulary):
  items = _world_items(tiny_world)[:20]
  items.insert(3, (items[0][0], []))  # A paragraph without spans costs nothing and gives [].
  scorer = ModelSpanScorer(params=random_params, config=config, vocabulary=tiny_world_vocabulary, max_length=256,
                           batch_size=8)
  batched = scorer.score_many(items)
  assert batched[3] == []
  for (text, spans), scores in zip(items, batched):
    assert len(scores) == len(spans)
    np.testing.assert_allclose(scores, scorer.score_spans(text, spans), rtol=0, atol=1e-5)
  assert isinstance(scorer, masking.BatchSpanScorer)
  assert masking.score_many(scorer, items) == batched


def test_compiles_once_per_shape(config, random_params, tiny_world, tiny_world_vocabulary):
  items = _world_items(tiny_world)[:8]
  # A row length no other test uses, so every compilation counted here is this test's.
  make = lambda: ModelSpanScorer(params=random_params, config=config, vocabulary=tiny_world_vocabulary,  # noqa: E731
                                 max_length=224, batch_size=4)
  scorer = make()
  before = span_scorer.trace_count()
  scorer.score_many(items)  # 8 rows: two full batches.
  assert span_scorer.trace_count() - before == 1
  for _ in range(3):
    scorer.score_many(items[::-1])
    scorer.score_many(items[1:7] + items[:2])
  assert span_scorer.trace_count() - before == 1
  # One paragraph at a time (as RampDataSource asks) is a one-row shape, compiled once, shared by a
  # new scorer of the same model; a remainder of 3 rows pads to a full batch of 4.
  other = make()
  for text, spans in items:
    other.score_spans(text, spans)
  other.score_many(items[:3])
  assert span_scorer.trace_count() - before == 2


def test_windows():
  assert span_scorer.windows(0, 16, 8) == []
  assert span_scorer.windows(16, 16, 8) == [(0, 0, 16)]
  assert span_scorer.windows(40, 16, 8) == [(0, 0, 16), (8, 16, 24), (16, 24, 32), (24, 32, 40)]
  assert span_scorer.windows(37, 16, 8) == [(0, 0, 16), (8, 16, 24), (16, 24, 32), (21, 32, 37)]
  assert span_scorer.windows(17, 16, 15) == [(0, 0, 16), (1, 16, 17)]


def test_long_paragraphs_are_scored_in_windows(config, random_params, tiny_world, tiny_world_vocabulary):
  vocab = tiny_world_vocabulary
  items = _world_items(tiny_world)[:4]
  text, spans = "", []
  for part, part_spans in items:
    shift = len(text) + (1 if text else 0)
    text = f"{text} {part}" if text else part
    spans += [Span(s.start + shift, s.end + shift, s.text, s.kind) for s in part_spans]
  ids, offsets = span_scorer.token_offsets(vocab, text)
  assert len(ids) > 200
  whole = ModelSpanScorer(params=random_params, config=config, vocabulary=vocab, max_length=512)
  windowed = ModelSpanScorer(params=random_params, config=config, vocabulary=vocab, max_length=64, stride=32)
  # Every token is scored in the window that gives it the most context, exactly as a direct pass would.
  losses = windowed.token_losses([ids])[0]
  for start, lo, hi in span_scorer.windows(len(ids), 64, 32):
    direct = _direct_losses(config, random_params, ids[start:start + 64], ids[start - 1] if start else 0)
    np.testing.assert_allclose(losses[lo:hi], direct[lo - start:hi - start], rtol=0, atol=1e-5)
  full, cut = whole.score_spans(text, spans), windowed.score_spans(text, spans)
  assert np.isfinite(cut).all()
  first_window = [span_scorer.span_token_indices(offsets, s.start, s.end)[-1] < 64 for s in spans]
  assert any(first_window) and not all(first_window)
  np.testing.assert_allclose(np.array(cut)[first_window], np.array(full)[first_window], rtol=0, atol=1e-5)


def test_bad_arguments_and_spans(config, random_params, tiny_world_vocabulary, vocab):
  with pytest.raises(ValueError, match="exactly one"):
    ModelSpanScorer()
  with pytest.raises(ValueError, match="exactly one"):
    ModelSpanScorer("/nowhere", params=random_params, config=config)
  with pytest.raises(ValueError, match="needs config"):
    ModelSpanScorer(params=random_params)
  with pytest.raises(ValueError, match="stride"):
    ModelSpanScorer(params=random_params, config=config, max_length=16, stride=16)
  with pytest.raises(FileNotFoundError):
    ModelSpanScorer("/nowhere/at/all")
  scorer = ModelSpanScorer(params=random_params, config=config, vocabulary=tiny_world_vocabulary)
  with pytest.raises(ValueError, match="does not match"):
    scorer.score_spans("The city of Kelo.", [Span(4, 8, "town", "name")])
  # A model with fewer embedding rows than the vocabulary has ids (checked before any forward pass).
  small = dataclasses.replace(config, vocab_size=128)
  with pytest.raises(ValueError, match="vocabulary has"):
    ModelSpanScorer(params=random_params, config=small, vocabulary=vocab).score_spans("the city",
                                                                                      [Span(4, 8, "city", "name")])


def test_loads_parameter_checkpoints_and_runs(config, random_params, tiny_world, tiny_world_vocabulary, tmp_path):
  items = _world_items(tiny_world)[:3]
  vocab = tiny_world_vocabulary
  expected = ModelSpanScorer(params=random_params, config=config, vocabulary=vocab).score_many(items)
  saved = checkpoints_lib.save_params(random_params, tmp_path / "params_ckpt", config)
  run = checkpoints_lib.TrainingCheckpoints(tmp_path / "run" / "checkpoints")
  run.save(7, {"params": random_params, "step": jnp.int32(7)}, {"step": 7, "model": dataclasses.asdict(config)})
  run.close()
  bare = checkpoints_lib.TrainingCheckpoints(tmp_path / "bare")
  bare.save(1, {"params": random_params, "step": jnp.int32(1)}, {"step": 1})
  bare.close()
  for path in (saved, tmp_path / "run", tmp_path / "run" / "checkpoints"):
    scorer = ModelSpanScorer(str(path), vocabulary=vocab)
    assert scorer.config == config
    np.testing.assert_allclose(np.concatenate(scorer.score_many(items)), np.concatenate(expected), rtol=0, atol=1e-6)
  with pytest.raises(ValueError, match="does not record its model"):
    ModelSpanScorer(tmp_path / "bare", vocabulary=vocab)
  assert ModelSpanScorer(tmp_path / "bare", config=config, vocabulary=vocab).config == config


# -- with a trained tiny model --------------------------------------------------------------------


def _packed_rows(encoded, length):
  """Paragraphs packed into rows as the feature converter packs them: targets, inputs, segments, positions."""
  rows, row, used = [], [], 0
  for ids in encoded:
    ids = ids[:length]
    if used + len(ids) > length:
      rows.append(row)
      row, used = [], 0
    row.append(ids)
    used += len(ids)
  rows.append(row)
  arrays = np.zeros((4, len(rows), length), np.int32)
  for r, row in enumerate(rows):
    at = 0
    for segment, ids in enumerate(row, 1):
      end = at + len(ids)
      # Each paragraph starts after the start token 0, as the scorer feeds it.
      arrays[:, r, at:end] = [ids, [0] + ids[:-1], [segment] * len(ids), range(len(ids))]
      at = end
  return arrays


@pytest.fixture(scope="module")
def trained_params(config, tiny_world, tiny_world_vocabulary):
  """The tiny decoder trained briefly as a plain LM on the tiny world's training passages."""
  encoded = [tiny_world_vocabulary.encode(p.text) for p in tiny_world.passages if p.split == "train"]
  random.Random(0).shuffle(encoded)
  targets, inputs, segments, positions = _packed_rows(encoded, TRAIN_LENGTH)
  schedule = optax.warmup_cosine_decay_schedule(0.0, 1e-2, 10, TRAIN_STEPS, 1e-3)
  optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, b1=0.9, b2=0.95, weight_decay=0.0))
  params = nn.unbox(Decoder(config).init(jax.random.PRNGKey(1), jnp.zeros((1, 8), jnp.int32))["params"])
  state = {"params": params, "opt_state": optimizer.init(params), "step": jnp.zeros((), jnp.int32)}
  step = jax.jit(trainer.make_train_step(config, optimizer))
  rng = np.random.default_rng(0)
  started = time.perf_counter()
  losses = []
  for _ in range(TRAIN_STEPS):
    rows = rng.choice(len(targets), 8, replace=False)
    state, metrics = step(state, {"decoder_target_tokens": targets[rows], "decoder_input_tokens": inputs[rows],
                                  "decoder_segment_ids": segments[rows], "decoder_positions": positions[rows],
                                  "decoder_loss_weights": (segments[rows] > 0).astype(np.float32)})
    losses.append(metrics["loss"])
  losses = [float(x) for x in jax.device_get(losses)]
  print(f"\ntrained {TRAIN_STEPS} steps in {time.perf_counter() - started:.1f}s: loss {losses[0]:.2f} -> "
        f"{np.mean(losses[-10:]):.2f}")
  assert np.mean(losses[-10:]) < 0.4 * losses[0]
  return state["params"]


def _ramp_items(tiny_world):
  """(passage id, text, candidates) of the tiny world's validation paragraphs, as RampDataSource finds them."""
  extractor = salient_spans.RuleBasedExtractor(salient_spans.Gazetteer.from_titles(
      sorted({p.title for p in tiny_world.passages})))
  items = []
  for p in tiny_world.passages:
    if p.split == "dev" and len(p.text.split()) >= 12:
      candidates = salient_spans.filter_candidates(extractor.extract(p.text), p.text, p.title)
      if candidates:
        items.append((p.id, p.text, candidates))
  return items


def test_trained_model_masks_harder_spans_than_random_choice(config, trained_params, tiny_world,
                                                              tiny_world_vocabulary):
  # Rows as long as the training rows: longer paragraphs are scored in windows.
  scorer = ModelSpanScorer(params=trained_params, config=config, vocabulary=tiny_world_vocabulary,
                           max_length=TRAIN_LENGTH)
  items = _ramp_items(tiny_world)
  all_scores = scorer.score_many([(text, candidates) for _, text, candidates in items])
  table = {(text, span): score for (_, text, candidates), scores in zip(items, all_scores)
           for span, score in zip(candidates, scores)}
  lookup = masking.CallableScorer(lambda text, span: table[(text, span)])

  # Training made the templates easy and the invented names, dates and numbers hard.
  span_tokens, other_tokens = [], []
  for _, text, candidates in items:
    ids, offsets = span_scorer.token_offsets(tiny_world_vocabulary, text)
    loss = scorer.token_losses([ids])[0]
    inside = np.zeros(len(ids), bool)
    for span in candidates:
      inside[span_scorer.span_token_indices(offsets, span.start, span.end)] = True
    span_tokens.append(loss[inside])
    other_tokens.append(loss[~inside])
  span_loss, other_loss = np.concatenate(span_tokens).mean(), np.concatenate(other_tokens).mean()
  print(f"\nmean token loss: candidate spans {span_loss:.2f}, other text {other_loss:.2f} "
        f"(uniform: {np.log(config.vocab_size):.2f})")
  assert other_loss < 0.5 * np.log(config.vocab_size) and span_loss > other_loss + 0.3

  for k in (1, 2, 3):
    chosen_losses, random_losses, differ, n = [], [], 0, 0
    for pid, text, candidates in items:
      chosen = masking.select_masks(text, candidates, random.Random(f"ramp-mask/0/{pid}/{k}"), num_masks=k,
                                    strategy="perplexity", scorer=lookup)
      drawn = masking.select_masks(text, candidates, random.Random(f"ramp-mask/0/{pid}/{k}"), num_masks=k)
      if chosen is None or drawn is None:
        continue
      n += 1
      differ += chosen != drawn
      chosen_losses.append(np.mean([table[(text, s)] for s in chosen]))
      random_losses.append(np.mean([table[(text, s)] for s in drawn]))
    chosen_mean, random_mean = np.mean(chosen_losses), np.mean(random_losses)
    print(f"k={k}: {n} paragraphs, {differ / n:.0%} differ from random choice; mean span loss "
          f"{chosen_mean:.2f} chosen vs {random_mean:.2f} random")
    assert n >= 30 and differ / n >= 0.6
    assert chosen_mean > random_mean + 0.5
    # The rule-based candidates do not overlap, so the top-k spans beat any k of them.
    assert all(c >= r for c, r in zip(chosen_losses, random_losses))


def test_gin_override_masks_the_spans_the_scorer_ranks_highest(tiny_tasks, config, trained_params,
                                                                 tiny_world_vocabulary, tmp_path):
  from masksearch_jax.data import ramp_source
  from masksearch_jax.data.ramp_source import RampDataSource

  random_masks = {ex["passage_id"]: ex["masks"] for ex in RampDataSource(2).examples("validation")}
  reference = ModelSpanScorer(params=trained_params, config=config, vocabulary=tiny_world_vocabulary,
                              max_length=TRAIN_LENGTH)
  path = checkpoints_lib.save_params(trained_params, tmp_path / "scorer_params", config)
  tiny_tasks("masksearch_jax.data.ramp_source.RampMasking.strategy = 'perplexity'",
             "masksearch_jax.data.ramp_source.RampMasking.scorer = "
             "@masksearch_jax.models.span_scorer.ModelSpanScorer()",
             f"masksearch_jax.models.span_scorer.ModelSpanScorer.checkpoint = '{path}'",
             f"masksearch_jax.models.span_scorer.ModelSpanScorer.max_length = {TRAIN_LENGTH}")
  assert isinstance(ramp_source.RampMasking().scorer, ModelSpanScorer)
  dataset = seqio.get_mixture_or_task("ramp_mask2").get_dataset({"inputs": 320, "targets": 200}, split="validation",
                                                                 shuffle=False, num_epochs=1)
  examples = list(dataset.take(30).as_numpy_iterator())
  assert len(examples) == 30
  extractor = ramp_source._rule_extractor(ramp_source.RampCorpus())
  differ = 0
  for ex in examples:
    text, title = ex["targets_pretokenized"].decode(), ex["title"].decode()
    pool = sorted(set(salient_spans.filter_candidates(extractor.extract(text), text, title)))
    expected = masking.hardest_of(pool, reference.score_spans(text, pool), 2)
    masks = [m.decode() for m in ex["masks"]]
    assert masks == [s.text for s in expected]
    differ += masks != random_masks.get(ex["passage_id"].decode())
  assert differ >= len(examples) // 2
