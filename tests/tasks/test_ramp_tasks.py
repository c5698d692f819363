"""Tests of the RAMP tasks and mixtures (tasks/ramp.py, data/ramp_source.py)."""

from __future__ import annotations

import collections
import json

import pytest
import seqio

from masksearch_jax.agent import protocol
from masksearch_jax.data import masking
from masksearch_jax.data.passage import CorpusFormatError
from masksearch_jax.data.ramp_source import RampDataSource
from masksearch_jax.data.spans import Span

LENGTHS = {"inputs": 320, "targets": 200}


def _examples(name, n, split="train", seed=3, **kwargs):
  provider = seqio.get_mixture_or_task(name)
  ds = provider.get_dataset(LENGTHS, split=split, shuffle=True, seed=seed, num_epochs=1, **kwargs)
  return list(ds.take(n).as_numpy_iterator())


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_ramp_task_masks_exactly_k_spans(tiny_tasks, tiny_world_vocabulary, k):
  examples = _examples(f"ramp_mask{k}", 12)
  assert len(examples) == 12
  for ex in examples:
    masked, target = ex["masked_paragraph"].decode(), ex["targets_pretokenized"].decode()
    masks = [m.decode() for m in ex["masks"]]
    assert ex["mask_num"] == k == len(masks) == masked.count(protocol.MASK)
    assert masking.fill_masks(masked, masks) == target
    # The input is MaskSearch's query: the masked paragraph, a blank line, the instruction.
    assert masking.split_query(ex["inputs_pretokenized"].decode()) == (masked, protocol.RAMP_INSTRUCTION)
    assert tiny_world_vocabulary.decode(ex["inputs"].tolist()) == ex["inputs_pretokenized"].decode()
    assert tiny_world_vocabulary.decode(ex["targets"].tolist()) == target  # EOS ends the targets.
    assert ex["targets"][-1] == tiny_world_vocabulary.eos_id
    assert ex["targets_loss_weights"].tolist() == [1] * len(ex["targets"])
    assert not masked.lstrip().startswith(protocol.MASK)


def test_ramp_mixed_follows_masksearchs_count_rule(tiny_tasks):
  counts = collections.Counter(int(ex["mask_num"]) for ex in _examples("ramp_mixed", 60))
  # World paragraphs have 4 or more candidates (after the filters), so nearly all get 4 masks.
  assert counts[4] >= 50 and set(counts) <= {1, 2, 3, 4}


def test_masked_spans_appear_in_another_passage(tiny_tasks, tiny_world):
  texts = {p.id: p.text for p in tiny_world.passages}
  found = total = 0
  for ex in _examples("ramp_mask3", 60):
    source = ex["passage_id"].decode()
    for mask in (m.decode() for m in ex["masks"]):
      total += 1
      found += any(mask in text for pid, text in texts.items() if pid != source)
  assert total == 180 and found / total >= 0.97, found / total


def _mask_counts(mixture, n=80, **kwargs):
  provider = seqio.get_mixture_or_task(mixture)
  ds = provider.get_dataset(LENGTHS, split="train", shuffle=True, seed=5, copy_pretokenized=True, **kwargs)
  return collections.Counter(masking.split_query(ex["inputs_pretokenized"].decode())[0].count(protocol.MASK)
                             for ex in ds.take(n).as_numpy_iterator())


def test_curriculum_stage_k_mixes_tasks_with_at_most_k_masks(tiny_tasks):
  assert set(_mask_counts("ramp_curriculum_stage1")) == {1}
  stage3 = _mask_counts("ramp_curriculum_stage3")
  assert set(stage3) == {1, 2, 3} and min(stage3.values()) >= 10  # Uniform by default.
  assert set(_mask_counts("ramp_mixed_1to4")) == {1, 2, 3, 4}


def test_gin_rates_change_the_mixture_without_code_edits(tiny_tasks):
  tiny_tasks("masksearch_jax.data.seqio_tasks.mixture_rate.rates = "
             "{'ramp_curriculum_stage2': {'ramp_mask1': 0.0, 'ramp_mask2': 1.0}}")
  assert set(_mask_counts("ramp_curriculum_stage2")) == {2}
  tiny_tasks("masksearch_jax.data.seqio_tasks.mixture_rate.rates = "
             "{'ramp_curriculum_stage2': {'ramp_mask1': 9.0, 'ramp_mask2': 1.0}}")
  skewed = _mask_counts("ramp_curriculum_stage2", n=100)
  assert skewed[1] > 3 * skewed[2]


def _write_corpus(path, paragraphs):
  with open(path, "w") as f:
    for i, (title, text) in enumerate(paragraphs):
      f.write(json.dumps({"id": f"doc-{i}", "title": title, "text": text}) + "\n")
  return path


OWN_CORPUS = [
    (f"Lake Vemora {i}", f"Lake Vemora {i} lies in the Republic of Tarnia at an elevation of {1200 + i} metres. "
     f"It was first surveyed on {i % 27 + 1} March 1887 by the explorer Hendrik van Aalst, who named it after "
     f"the village of Vemora in the Duchy of Brennland.") for i in range(40)]


def test_gin_source_switches_the_corpus(tiny_tasks, tmp_path):
  path = _write_corpus(tmp_path / "own.jsonl", OWN_CORPUS)
  tiny_tasks(f"masksearch_jax.data.ramp_source.RampCorpus.path = '{path}'",
             "masksearch_jax.data.ramp_source.RampCorpus.heldout_fraction = 0.0")
  examples = _examples("ramp_mask2", 10)
  assert len(examples) == 10
  assert all(ex["passage_id"].decode().startswith("doc-") and b"Vemora" in ex["targets_pretokenized"]
             for ex in examples)


def test_malformed_corpus_record_names_file_and_line(tiny_tasks, tmp_path):
  path = _write_corpus(tmp_path / "bad.jsonl", OWN_CORPUS[:3])
  with open(path, "a") as f:
    f.write('{"id": "x", "title": "T"}\n')
  tiny_tasks(f"masksearch_jax.data.ramp_source.RampCorpus.path = '{path}'",
             "masksearch_jax.data.ramp_source.RampCorpus.format = 'jsonl'")
  with pytest.raises(CorpusFormatError, match=rf"{path}:4:.*text"):
    _examples("ramp_mask1", 1)


def test_empty_corpus_is_a_clear_error_not_a_hang(tiny_tasks, tmp_path):
  path = tmp_path / "empty.jsonl"
  path.write_text("")
  tiny_tasks(f"masksearch_jax.data.ramp_source.RampCorpus.path = '{path}'",
             "masksearch_jax.data.ramp_source.RampCorpus.format = 'jsonl'")
  with pytest.raises(ValueError, match="has no paragraph"):
    _examples("ramp_mask1", 1)


def test_two_shards_see_every_paragraph_exactly_once(tiny_tasks):
  source = RampDataSource(2)
  every = [ex["passage_id"] for ex in source.examples("train", shuffle=True, seed=1)]
  shards = [[ex["passage_id"] for ex in source.examples("train", shuffle=True, seed=1,
                                                         shard_info=seqio.ShardInfo(i, 2))] for i in range(2)]
  assert len(every) > 400
  assert not set(shards[0]) & set(shards[1])
  assert sorted(shards[0] + shards[1]) == sorted(every) and len(set(every)) == len(every)


def test_examples_do_not_depend_on_order_or_shard(tiny_tasks):
  source = RampDataSource(3)
  plain = {ex["passage_id"]: ex["masks"] for ex in source.examples("train")}
  shuffled = {ex["passage_id"]: ex["masks"] for ex in source.examples("train", shuffle=True, seed=9,
                                                                      shard_info=seqio.ShardInfo(1, 3))}
  assert shuffled and all(plain[pid] == masks for pid, masks in shuffled.items())


def test_splits_hold_out_the_worlds_entities(tiny_tasks, tiny_world):
  split_of = {p.id: p.split for p in tiny_world.passages}
  for split, world_split in (("train", "train"), ("validation", "dev"), ("test", "test")):
    ids = [ex["passage_id"] for ex in RampDataSource(1).examples(split)]
    assert ids and {split_of[i] for i in ids} == {world_split}


def test_perplexity_strategy_masks_the_spans_the_scorer_finds_hardest(tiny_tasks):
  import gin

  from masksearch_jax.data import ramp_source, salient_spans

  def longest_is_hardest(paragraph: str, span: Span) -> float:
    return len(span.text) + span.start / 1e6

  random_masks = {ex["passage_id"]: ex["masks"] for ex in RampDataSource(2).examples("validation")}
  gin.bind_parameter("masksearch_jax.data.ramp_source.RampMasking.strategy", "perplexity")
  gin.bind_parameter("masksearch_jax.data.ramp_source.RampMasking.scorer",
                     masking.CallableScorer(longest_is_hardest))
  hardest = list(RampDataSource(2).examples("validation"))
  extractor = ramp_source._rule_extractor(ramp_source.RampCorpus())
  assert len(hardest) > 20
  for ex in hardest:
    text, title = ex["targets"], ex["title"]
    candidates = salient_spans.filter_candidates(extractor.extract(text), text, title)
    expected = masking.hardest_of(candidates, [longest_is_hardest(text, c) for c in candidates], 2)
    assert ex["masks"] == [c.text for c in sorted(expected)]
  both = [ex for ex in hardest if ex["passage_id"] in random_masks]
  assert sum(ex["masks"] != random_masks[ex["passage_id"]] for ex in both) >= len(both) // 2


def test_world_mentions_as_span_source(tiny_tasks, tiny_world):
  tiny_tasks("masksearch_jax.data.ramp_source.RampMasking.spans = 'world'")
  mentions = {p.id: {p.text[m.start:m.end] for m in p.mentions} for p in tiny_world.passages}
  examples = list(RampDataSource(2).examples("validation"))
  assert examples and all(set(ex["masks"]) <= mentions[ex["passage_id"]] for ex in examples)


def test_unknown_span_source_is_a_clear_error(tiny_tasks):
  tiny_tasks("masksearch_jax.data.ramp_source.RampMasking.spans = 'magic'")
  with pytest.raises(ValueError, match="'rules', 'world' or 'llm'"):
    _examples("ramp_mask1", 1)


def test_each_epoch_has_its_own_order_and_the_same_examples(tiny_tasks):
  source = RampDataSource(2)
  first, second = ([ex["passage_id"] for ex in source.examples("train", shuffle=True, seed=4, epoch=e)]
                   for e in (0, 1))
  assert first != second and sorted(first) == sorted(second)
  ds = seqio.get_mixture_or_task("ramp_mask2").get_dataset(LENGTHS, shuffle=True, seed=4, num_epochs=None)
  ids = [ex["passage_id"] for ex in ds.take(len(first)).as_numpy_iterator()]
  assert len(set(ids)) >= len(ids) - 64  # Only the small buffer may carry examples across the epoch's end.


def test_make_ramp_writes_masksearch_records_that_ramp_records_reads_back(tiny_tasks, tmp_path, capsys):
  from masksearch_jax import cli
  out = tmp_path / "ramp.jsonl"
  # The tiny world is bound by the fixture; the command adds its own Gin flags on top.
  assert cli.main(["make-ramp", "--out", str(out), "--num_masks", "3", "--split", "validation", "--limit", "25",
                   "--gin_bindings", "masksearch_jax.data.ramp_source.RampMasking.seed = 2"]) == 0
  assert "wrote 25 RAMP records (validation)" in capsys.readouterr().out
  records = list(masking.read_ramp_jsonl(out))
  assert len(records) == 25
  for record in records:
    assert set(record) == {"query", "answer", "ext"} and record["ext"]["mask_num"] == 3
    assert set(record["ext"]) == {"mask_num", "masks", "entities", "source", "title"}
    assert masking.fill_masks(masking.split_query(record["query"])[0], record["ext"]["masks"]) == record["answer"]
  tiny_tasks(f"masksearch_jax.data.seqio_tasks.RampRecordFiles.paths = {{'train': '{out}'}}")
  examples = list(seqio.get_mixture_or_task("ramp_records").get_dataset(LENGTHS, shuffle=False, num_epochs=1)
                  .as_numpy_iterator())
  assert [ex["targets_pretokenized"].decode() for ex in examples] == [r["answer"] for r in records]
  assert all(int(ex["mask_num"]) == 3 for ex in examples)
