"""Tests of masksearch_jax.data.trajectories: the record, its jsonl file, and SFT features."""

from __future__ import annotations

import io
import json
import logging
import os
import random

import numpy as np
import pytest
import seqio
import sentencepiece as spm

from masksearch_jax.agent import protocol
from masksearch_jax.data import trajectories as tj
from masksearch_jax.data.corpus_readers import ReadStats
from masksearch_jax.data.passage import CorpusFormatError
from masksearch_jax.data.trajectories import Segment, Trajectory, TrajectoryWriter

_WORDS = ("the capital of france is paris river seine flows through city born in year film "
          "director museum book author search answer question who where when what which mountain "
          "elevation tabudo muzu kelo rani was founded by").split()


def train_test_vocabulary(directory) -> seqio.SentencePieceVocabulary:
  """A small SentencePiece vocabulary trained here (no download), seqio's id layout.

  Identity normalisation keeps whitespace exactly, so decoding must give back the text; "\\n"
  is a user-defined symbol since a line-based trainer never sees one. `add_dummy_prefix` is
  left on, as in most real vocabularies: that is the word-boundary problem under test.
  """
  rng = random.Random(0)
  printable = "".join(chr(c) for c in range(33, 127))
  sentences = [" ".join(rng.choices(_WORDS, k=rng.randint(3, 14))) + rng.choice(".?,!") for _ in range(300)]
  sentences += [protocol.qa_prompt("Where was the director of Kelo born?").strip(),
                protocol.ramp_prompt("The [mask] of France is Paris.").strip(),
                protocol.format_observation([("Paris", "Paris is the capital of France.")]).strip(),
                printable, printable.upper()]
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(sentences), model_writer=model, vocab_size=300, model_type="unigram",
      pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
      user_defined_symbols=list(protocol.PROTOCOL_SYMBOLS) + ["\n"],
      normalization_rule_name="identity", remove_extra_whitespaces=False, hard_vocab_limit=False,
      character_coverage=1.0, minloglevel=2)
  path = os.path.join(directory, "test_vocab.model")
  with open(path, "wb") as f:
    f.write(model.getvalue())
  return seqio.SentencePieceVocabulary(path)


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
  return train_test_vocabulary(tmp_path_factory.mktemp("vocab"))


def _trajectory(i: int = 0, **overrides) -> Trajectory:
  fields = dict(
      id=f"t{i}",
      kind="ramp",
      prompt=protocol.ramp_prompt("Paris is the [mask] of France."),
      segments=(
          Segment("model", "<think> which city </think>\n<search> Paris capital </search>"),
          Segment("observation", "\n\n" + protocol.format_observation(
              [("Paris", "Paris is the capital of France."), ("Seine", "The Seine flows.")]) + "\n\n"),
          Segment("model", "<think> capital </think>\n<answer> Paris is the capital of France. </answer>"),
      ),
      answer="Paris is the capital of France.",
      gold=("Paris is the capital of France.",),
      searches=("Paris capital",),
      stop_reason="answer",
      reward=1.0,
      meta={"sampler": {"temperature": 1.0}},
  )
  fields.update(overrides)
  return Trajectory(**fields)


def _with_tokens(i: int = 0, **overrides) -> Trajectory:
  fields = dict(tokenizer="spm-sha256:0123456789abcdef", prompt_token_ids=(5, 6, 7),
                token_ids=(10, 11, 12, 13, 14), model_token_mask=(1, 1, 0, 0, 1),
                logprobs=(-0.5, -1.25, None, None, -0.125))
  fields.update(overrides)
  return _trajectory(i, **fields)


# ---------------------------------------------------------------------------------------------
# The record.


def test_record_round_trip_through_json_and_file(tmp_path):
  trajectories = [_trajectory(0), _with_tokens(1),
                  _trajectory(2, answer=None, stop_reason="max_turns", reward=None, gold=(), searches=(),
                              segments=(Segment("model", "Καλημέρα 東京 🎉 ab\ud800cd"),))]
  for t in trajectories:
    assert Trajectory.from_json(json.loads(json.dumps(t.to_json()))) == t
  path = tmp_path / "t.jsonl"
  with TrajectoryWriter(path) as writer:
    for t in trajectories:
      writer.write(t)
  assert writer.written == 3
  assert list(tj.read_trajectories(path)) == trajectories
  first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
  assert list(first) == ["version", "id", "kind", "prompt", "segments", "answer", "gold", "searches",
                         "stop_reason", "reward", "tokenizer", "prompt_token_ids", "token_ids",
                         "model_token_mask", "logprobs", "meta"]


def test_required_fields_only_take_the_defaults():
  t = Trajectory.from_json({"id": "a", "kind": "qa", "prompt": "p", "segments": [], "stop_reason": "eos"})
  assert (t.answer, t.gold, t.searches, t.reward, t.token_ids, t.logprobs, dict(t.meta)) == (
      None, (), (), None, None, None, {})


def test_segments_may_be_given_as_dicts_and_lists_become_tuples():
  t = Trajectory(id="a", kind="qa", prompt="p", segments=[{"type": "model", "text": "x"}],
                 stop_reason="eos", gold=["g"], token_ids=[3], model_token_mask=[1])
  assert t.segments == (Segment("model", "x"),) and t.gold == ("g",) and t.token_ids == (3,)


def test_response_text_concatenates_segments():
  t = _trajectory()
  assert tj.response_text(t) == "".join(s.text for s in t.segments)
  assert tj.response_text(_trajectory(segments=())) == ""


@pytest.mark.parametrize("overrides, message", [
    (dict(id=""), "field 'id' is empty"),
    (dict(kind=3), "field 'kind' must be a string"),
    (dict(segments=(Segment("tool", "x"),)), "'segments'[0].type must be 'model' or 'observation'"),
    (dict(stop_reason="done"), "field 'stop_reason' must be one of"),
    (dict(answer=None), "'answer' is null but 'stop_reason' is 'answer'"),
    (dict(reward=float("nan")), "field 'reward' must be a finite number"),
    (dict(reward=True), "field 'reward' must be a finite number"),
    (dict(gold=("a", 1)), "field 'gold'[1] must be a string"),
    (dict(token_ids=(1, 2)), "must be both present or both null"),
    (dict(token_ids=(1, 2), model_token_mask=(1,)), "'model_token_mask' has 1 entries but 'token_ids' has 2"),
    (dict(token_ids=(1, 2), model_token_mask=(1, 2)), "'model_token_mask'[1] must be 0 or 1"),
    (dict(token_ids=(1, True), model_token_mask=(1, 1)), "'token_ids'[1] must be a non-negative integer"),
    (dict(token_ids=(1, -4), model_token_mask=(1, 1)), "'token_ids'[1] must be a non-negative integer"),
    (dict(logprobs=(-1.0,)), "'logprobs' needs 'token_ids'"),
    (dict(token_ids=(1, 2), model_token_mask=(1, 0), logprobs=(-1.0,)), "'logprobs' has 1 entries"),
    (dict(token_ids=(1, 2), model_token_mask=(0, 1), logprobs=(None, None)),
     "'logprobs'[1] is null but the token was generated by the model"),
])
def test_construction_validates(overrides, message):
  with pytest.raises(ValueError) as info:
    _trajectory(**overrides)
  assert message in str(info.value)


_GOOD = _trajectory().to_json()


def _bad(**changes):
  record = dict(_GOOD)
  for k, v in changes.items():
    if v is _DROP:
      record.pop(k)
    else:
      record[k] = v
  return json.dumps(record)


_DROP = object()


@pytest.mark.parametrize("line, message", [
    ('["not", "an", "object"]', "expected a JSON object, got an array"),
    ("{bad json", "bad JSON"),
    (_bad(segments=_DROP), "missing field 'segments'"),
    (_bad(extra=1), "unknown field 'extra' (extras belong in 'meta')"),
    (_bad(version=2), "field 'version' is 2"),
    (_bad(segments={"type": "model"}), "field 'segments' must be an array, got an object"),
    (_bad(segments=[{"type": "model"}]), "'segments'[0] must have exactly the keys 'type' and 'text'"),
    (_bad(segments=[{"type": "tool", "text": "x"}]), "'segments'[0].type must be 'model' or 'observation'"),
    (_bad(segments=[{"type": "model", "text": 5}]), "'segments'[0].text must be a string, got a number"),
    (_bad(token_ids=[1, 2, 3], model_token_mask=[1, 0]), "'model_token_mask' has 2 entries but 'token_ids' has 3"),
    (_bad(token_ids=[1, 2], model_token_mask=[1, 1], logprobs=[-0.5, None]),
     "'logprobs'[1] is null but the token was generated by the model"),
    (_bad(token_ids="1 2"), "field 'token_ids' must be an array, got a string"),
    (_bad(meta=[]), "field 'meta' must be an object"),
    (_bad(reward="high"), "field 'reward' must be a finite number or null"),
    (_bad(reward=float("nan")), "field 'reward' must be a finite number or null"),
])
def test_reader_errors_name_file_and_line(tmp_path, line, message):
  path = tmp_path / "bad.jsonl"
  path.write_text(json.dumps(_GOOD) + "\n\n" + line + "\n", encoding="utf-8")
  read = []
  with pytest.raises(CorpusFormatError) as info:
    for t in tj.read_trajectories(path):
      read.append(t)
  assert len(read) == 1
  assert str(info.value).startswith(f"{path}:3: ")
  assert message in str(info.value)
  assert (info.value.path, info.value.line) == (str(path), 3)


def test_reader_rejects_invalid_utf8_and_missing_file(tmp_path):
  path = tmp_path / "bytes.jsonl"
  path.write_bytes(b'{"id": "\xff"}\n')
  with pytest.raises(CorpusFormatError, match=r":1: not UTF-8 at byte 8"):
    list(tj.read_trajectories(path))
  with pytest.raises(FileNotFoundError):
    tj.read_trajectories(tmp_path / "missing.jsonl")


# ---------------------------------------------------------------------------------------------
# Incremental, crash-safe writing.


def test_each_write_reaches_the_file_before_close(tmp_path):
  path = tmp_path / "live.jsonl"
  with TrajectoryWriter(path) as writer:
    for i in range(3):
      writer.write(_trajectory(i))
      assert [t.id for t in tj.read_trajectories(path)] == [f"t{j}" for j in range(i + 1)]


def test_torn_last_line_is_reported_and_skipped_explicitly(tmp_path, caplog):
  path = tmp_path / "rollouts" / "host0.jsonl"
  with TrajectoryWriter(path) as writer:
    for i in range(3):
      writer.write(_trajectory(i))
  data = path.read_bytes()
  third = data.rindex(b"\n", 0, len(data) - 1) + 1
  path.write_bytes(data[:third + (len(data) - third) // 2])  # a crash in the middle of line 3

  read = []
  with pytest.raises(CorpusFormatError) as info:
    for t in tj.read_trajectories(path):
      read.append(t)
  assert [t.id for t in read] == ["t0", "t1"]
  assert info.value.line == 3 and "torn last line" in str(info.value)

  stats = ReadStats()
  with caplog.at_level(logging.WARNING):
    assert [t.id for t in tj.read_trajectories(path, skip_bad=True, stats=stats)] == ["t0", "t1"]
  assert (stats.read, stats.skipped, dict(stats.skipped_by_reason)) == (2, 1, {"torn_line": 1})
  assert stats.first_error.startswith(f"{path}:3: torn last line")
  assert f"{path}:3:" in caplog.text

  # Reopening continues the file; the torn line stays a line of its own, never glued to the next.
  with caplog.at_level(logging.WARNING):
    with TrajectoryWriter(path) as writer:
      assert writer.torn_lines_found
      writer.write(_trajectory(3))
      writer.write(_trajectory(4))
  assert "torn line" in caplog.text
  stats = ReadStats()
  assert [t.id for t in tj.read_trajectories(path, skip_bad=True, stats=stats)] == ["t0", "t1", "t3", "t4"]
  assert (stats.skipped, dict(stats.skipped_by_reason)) == (1, {"bad_json": 1})
  assert stats.first_error.startswith(f"{path}:3: bad JSON")
  with pytest.raises(CorpusFormatError, match=r":3: bad JSON"):
    list(tj.read_trajectories(path))

  # A clean file reopened needs no repair.
  clean = tmp_path / "clean.jsonl"
  with TrajectoryWriter(clean) as writer:
    writer.write(_trajectory(0))
  with TrajectoryWriter(clean, sync_every_write=True) as writer:
    assert not writer.torn_lines_found
    writer.write(_trajectory(1))
  assert [t.id for t in tj.read_trajectories(clean)] == ["t0", "t1"]


def test_a_complete_last_line_without_newline_is_read(tmp_path):
  path = tmp_path / "hand.jsonl"
  path.write_text(json.dumps(_GOOD), encoding="utf-8")
  assert [t.id for t in tj.read_trajectories(path)] == ["t0"]


def test_second_writer_on_the_same_file_is_refused(tmp_path):
  path = tmp_path / "one.jsonl"
  with TrajectoryWriter(path) as writer:
    with pytest.raises(BlockingIOError, match="already open"):
      TrajectoryWriter(path)
    writer.write(_trajectory(0))
  with TrajectoryWriter(path) as writer:
    writer.write(_trajectory(1))
  assert len(list(tj.read_trajectories(path))) == 2


def test_writer_refuses_non_trajectories_and_writes_after_close(tmp_path):
  writer = TrajectoryWriter(tmp_path / "w.jsonl")
  with pytest.raises(TypeError):
    writer.write(_GOOD)
  writer.close()
  writer.close()
  with pytest.raises(ValueError, match="closed"):
    writer.write(_trajectory())


# ---------------------------------------------------------------------------------------------
# Task features.


def _pieces_text(vocab, ids) -> str:
  """The text of some ids as they read in the middle of a sequence (no leading-space strip)."""
  return "".join(vocab.tokenizer.id_to_piece(int(i)) for i in ids).replace("\u2581", " ")


def _runs(weights):
  """(start, end, value) of each maximal run of equal weights."""
  runs, start = [], 0
  for i in range(1, len(weights) + 1):
    if i == len(weights) or weights[i] != weights[start]:
      runs.append((start, i, int(weights[start])))
      start = i
  return runs


# Boundaries that break naive segment-wise tokenisation: a segment starting mid-word, a
# segment ending in a space followed by one starting with a space, newlines on both sides.
_TRICKY = _trajectory(
    7,
    segments=(
        Segment("model", "<think> the capital of fra"),
        Segment("observation", "nce is paris "),
        Segment("model", " </think>\n<search>   paris river </search>"),
        Segment("observation", "\n\n" + protocol.format_observation([("Seine", "the seine flows.")]) + "\n\n"),
        Segment("model", ""),
        Segment("model", "<answer> paris </answer>"),
    ),
    answer="paris")


@pytest.mark.parametrize("trajectory", [_trajectory(0), _TRICKY], ids=["plain", "tricky"])
def test_features_decode_back_to_prompt_segments_and_observations(vocab, trajectory):
  features = tj.trajectory_features(trajectory, vocab)
  inputs, targets, weights = features["inputs"], features["targets"], features["targets_loss_weights"]
  assert inputs.dtype == targets.dtype == weights.dtype == np.int32
  assert targets.shape == weights.shape
  assert targets[-1] == vocab.eos_id and weights[-1] == 1
  assert vocab.unk_id not in np.concatenate([inputs, targets])
  body, body_weights = targets[:-1], weights[:-1]

  assert vocab.decode(inputs.tolist()) == trajectory.prompt
  assert vocab.decode(np.concatenate([inputs, body]).tolist()) == trajectory.prompt + tj.response_text(trajectory)
  model_text = "".join(s.text for s in trajectory.segments if s.type == "model")
  observation_text = "".join(s.text for s in trajectory.segments if s.type == "observation")
  assert _pieces_text(vocab, body[body_weights == 1]) == model_text
  assert _pieces_text(vocab, body[body_weights == 0]) == observation_text
  assert vocab.decode(body[body_weights == 0].tolist()).strip() == observation_text.strip()

  # Run by run: each stretch of weight 1 is a model turn, each stretch of weight 0 an observation.
  turns = []
  for s in trajectory.segments:
    if not s.text:
      continue
    if turns and turns[-1][0] == s.type:
      turns[-1] = (s.type, turns[-1][1] + s.text)
    else:
      turns.append((s.type, s.text))
  runs = _runs(body_weights)
  assert [(1 if kind == "model" else 0, text) for kind, text in turns] == [
      (value, _pieces_text(vocab, body[start:end])) for start, end, value in runs]


def test_naive_segment_tokenisation_would_not_decode_back(vocab):
  naive = [i for s in _TRICKY.segments for i in vocab.encode(s.text)]
  assert vocab.decode(naive) != tj.response_text(_TRICKY)
  encoder = tj.ContextEncoder(vocab)
  careful = [i for s in _TRICKY.segments for i in encoder.encode(s.text)]
  assert vocab.decode(careful) == tj.response_text(_TRICKY)


def test_eos_only_when_the_policy_ended_the_episode(vocab):
  eos = vocab.eos_id
  answered = tj.trajectory_features(_trajectory(), vocab)["targets"]
  assert answered[-1] == eos and list(answered).count(eos) == 1
  cut = _trajectory(stop_reason="max_turns", answer=None)
  assert tj.trajectory_features(cut, vocab)["targets"][-1] != eos
  assert len(tj.trajectory_features(_trajectory(), vocab, add_eos=False)["targets"]) == len(answered) - 1
  empty = tj.trajectory_features(_trajectory(segments=(), stop_reason="eos", answer=None), vocab)
  assert empty["targets"].tolist() == [eos] and empty["targets_loss_weights"].tolist() == [1]


def test_recorded_token_ids_are_used_when_the_vocabulary_matches(vocab):
  fingerprint = tj.vocabulary_fingerprint(vocab)
  assert fingerprint.startswith("spm-sha256:") and len(fingerprint) == len("spm-sha256:") + 16
  recorded = _with_tokens(tokenizer=fingerprint)
  features = tj.trajectory_features(recorded, vocab)
  assert features["inputs"].tolist() == [5, 6, 7]
  assert features["targets"].tolist() == [10, 11, 12, 13, 14, vocab.eos_id]
  assert features["targets_loss_weights"].tolist() == [1, 1, 0, 0, 1, 1]

  # Ending in EOS already: not doubled.
  ends_in_eos = _with_tokens(tokenizer=fingerprint, token_ids=(10, 11, 12, 13, 1))
  assert tj.trajectory_features(ends_in_eos, vocab)["targets"].tolist() == [10, 11, 12, 13, 1]

  # Another tokenizer's ids are not used automatically, and refused when forced.
  other = _with_tokens()
  retokenised = tj.trajectory_features(other, vocab)
  assert retokenised["targets"].tolist() == tj.trajectory_features(_trajectory(), vocab)["targets"].tolist()
  with pytest.raises(ValueError, match="not by this vocabulary"):
    tj.trajectory_features(other, vocab, use_token_ids=True)
  # Forced on a record without a tokenizer name: used; without prompt ids the prompt is encoded.
  unnamed = _with_tokens(tokenizer=None, prompt_token_ids=None)
  forced = tj.trajectory_features(unnamed, vocab, use_token_ids=True)
  assert forced["targets"].tolist()[:5] == [10, 11, 12, 13, 14]
  assert vocab.decode(forced["inputs"].tolist()) == unnamed.prompt
  assert tj.trajectory_features(recorded, vocab, use_token_ids=False)["targets"].tolist() == (
      retokenised["targets"].tolist())
  with pytest.raises(ValueError, match="has no token_ids"):
    tj.trajectory_features(_trajectory(), vocab, use_token_ids=True)
  with pytest.raises(ValueError, match="outside the vocabulary"):
    tj.trajectory_features(_with_tokens(tokenizer=fingerprint, token_ids=(10, 99999, 1, 1, 1)), vocab)


def test_byte_vocabulary_also_round_trips():
  vocab = seqio.ByteVocabulary()
  assert tj.vocabulary_fingerprint(vocab) is None
  features = tj.trajectory_features(_TRICKY, vocab)
  body = features["targets"][:-1]
  assert vocab.decode(np.concatenate([features["inputs"], body]).tolist()) == (
      _TRICKY.prompt + tj.response_text(_TRICKY))


def test_a_vocabulary_that_splits_protocol_symbols_is_refused():

  class ContextDependent:
    """Encodes a text as its length: nothing survives being cut out of a longer text."""

    def encode(self, text):
      return [len(text)]

  with pytest.raises(ValueError, match="does not keep '</answer>' whole"):
    tj.ContextEncoder(ContextDependent())
