"""Tests of the vocabularies: trained SentencePiece models, the world vocabulary, HF tokenizers, the CLI."""

from __future__ import annotations

import collections
import json
import pickle
import re

import numpy as np
import pytest
import seqio
import tensorflow as tf

from masksearch_jax import cli
from masksearch_jax.agent import protocol
from masksearch_jax.data import names, vocabularies, world_io
from masksearch_jax.data.world import WorldConfig, generate_world, template_vocabulary

VOCAB_SIZE = 1500


@pytest.fixture(scope="module")
def world_texts(tiny_world):
  return list(vocabularies.world_training_texts(tiny_world))


@pytest.fixture(scope="module")
def model_path(world_texts, tmp_path_factory):
  return vocabularies.train_sentencepiece(world_texts, tmp_path_factory.mktemp("spm") / "world.model",
                                          vocab_size=VOCAB_SIZE)


@pytest.fixture(scope="module")
def vocab(model_path):
  return vocabularies.sentencepiece_vocabulary(model_path)


@pytest.fixture(scope="module")
def unseen_names(tiny_world):
  """1,000 name words of a world with another seed, none of them in the training world."""
  seen = {w for e in tiny_world.entities.values() for w in e.name.split()}
  other = generate_world(WorldConfig(seed=12345, size=900))
  words = [w for e in other.entities.values() for w in e.name.split()]
  picked = [w for w in dict.fromkeys(words) if w not in seen and vocabularies._is_syllable_chain(w)]
  assert len(picked) >= 1000
  return picked[:1000]


def _pieces(vocab, text):
  return vocab.tokenizer.encode(text, out_type=str)


# -- training --------------------------------------------------------------------------------


def test_ids_follow_seqio_conventions(vocab):
  sp = vocab.tokenizer
  assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)
  assert (vocab.eos_id, vocab.unk_id, vocab.pad_id) == (1, 2, 0)
  assert 300 < vocab.vocab_size <= VOCAB_SIZE


def test_same_texts_and_seed_give_the_same_bytes(world_texts, model_path, tmp_path):
  again = vocabularies.train_sentencepiece(world_texts, tmp_path / "again.model", vocab_size=VOCAB_SIZE)
  assert again.read_bytes() == model_path.read_bytes()
  # Nothing but the model is left in the directory (the write is atomic).
  assert [p.name for p in tmp_path.iterdir()] == ["again.model"]


def test_other_seed_or_texts_still_give_a_valid_model(world_texts, unseen_names, tmp_path):
  fewer = world_texts[::2]
  paths = []
  # With max_sentences below the number of texts, the seed picks the sample.
  for seed, texts in ((7, world_texts), (8, world_texts), (0, fewer)):
    path = vocabularies.train_sentencepiece(texts, tmp_path / f"m{seed}-{len(texts)}.model", vocab_size=VOCAB_SIZE,
                                            seed=seed, max_sentences=len(texts) - 10)
    paths.append(path)
    vocab = vocabularies.sentencepiece_vocabulary(path)  # Checks the protocol symbols.
    for name in unseen_names[:200]:
      assert _pieces(vocab, name) == vocabularies.name_pieces(name)
    text = world_texts[3]
    assert vocab.decode(vocab.encode(text)) == text
  assert len({p.read_bytes() for p in paths}) == 3


def test_overwrite_is_refused_unless_asked(world_texts, model_path):
  with pytest.raises(FileExistsError, match="overwrite"):
    vocabularies.train_sentencepiece(world_texts[:50], model_path, vocab_size=VOCAB_SIZE, overwrite=False)


def test_bad_options_are_refused(tmp_path):
  with pytest.raises(ValueError, match="unigram"):
    vocabularies.train_sentencepiece(["a b c"], tmp_path / "m.model", model_type="bpe")
  with pytest.raises(ValueError, match="empty"):
    vocabularies.train_sentencepiece(["", "  "], tmp_path / "m.model")
  with pytest.raises(ValueError, match="syllable pieces"):
    vocabularies.train_sentencepiece(["Kalomi was born in Dakuhaho."] * 20, tmp_path / "m.model", vocab_size=200)
  assert not (tmp_path / "m.model").exists()


def test_bpe_without_name_syllables(world_texts, tmp_path):
  path = vocabularies.train_sentencepiece(world_texts, tmp_path / "bpe.model", vocab_size=800, model_type="bpe",
                                          name_syllables=False)
  vocab = vocabularies.sentencepiece_vocabulary(path)
  assert vocab.decode(vocab.encode(world_texts[5])) == world_texts[5]


# -- symbols ----------------------------------------------------------------------------------


def test_protocol_symbols_are_single_ids(vocab):
  sp = vocab.tokenizer
  for symbol in protocol.PROTOCOL_SYMBOLS + ("\n",):
    piece_id = sp.piece_to_id(symbol)
    assert piece_id > 2 and sp.id_to_piece(piece_id) == symbol
    assert vocab.decode([piece_id]) == symbol
    # In running text the symbol is always that one id, whatever surrounds it.
    for text in (f"a {symbol} b", f"a{symbol}b", f"{symbol}Kalomi", f"({symbol})"):
      ids = vocab.encode(text)
      assert ids.count(piece_id) == 1, (text, _pieces(vocab, text))
      assert vocab.decode(ids) == text
  vocabularies.check_symbols(vocab)


def test_check_symbols_rejects_a_model_without_them(world_texts, tmp_path):
  path = vocabularies.train_sentencepiece(world_texts[:300], tmp_path / "plain.model", vocab_size=800,
                                          user_defined_symbols=())
  with pytest.raises(ValueError, match="<think>"):
    vocabularies.sentencepiece_vocabulary(path)
  assert vocabularies.sentencepiece_vocabulary(path, symbols=()).vocab_size > 0


# -- names and words -----------------------------------------------------------------------------


def test_unseen_names_encode_as_their_syllables(vocab, unseen_names):
  for name in unseen_names:
    expected = vocabularies.name_pieces(name)
    assert len(expected) == len(names.split_syllables(name))
    assert _pieces(vocab, name) == expected
    assert _pieces(vocab, f"born in {name}, the") [2:2 + len(expected)] == expected
  # Right after a tag, punctuation or a newline the first syllable has no '▁'.
  for name in unseen_names[:100]:
    expected = vocabularies.name_pieces(name, after_space=False)
    for text in (f"<answer>{name}</answer>", f"({name})", f"Doc 1\n{name}'s"):
      pieces = _pieces(vocab, text)
      assert vocabularies._contains(pieces, expected), (text, pieces)


def test_every_short_name_and_many_long_ones_encode_as_syllables(vocab):
  assert vocabularies.name_syllable_failures(vocab.tokenizer, num_long=500, seed=3) == []


def test_the_same_name_encodes_the_same_way_in_tensorflow(vocab, unseen_names):
  texts = [f"{name} was born in {other}." for name, other in zip(unseen_names[:50], unseen_names[50:100])]
  for text in texts:
    assert vocab.encode_tf(tf.constant(text)).numpy().tolist() == vocab.encode(text)


_SPACED_WORD = re.compile(r"(?:(?<= )|^)([A-Za-z]+)(?![A-Za-z])")


def template_word_counts(texts):
  """How often each template or prompt word follows a space in `texts` (tags and '[mask]' left out)."""
  symbols = re.compile("|".join(re.escape(s) for s in protocol.PROTOCOL_SYMBOLS))
  templates = template_vocabulary() | {w.lower() for t in vocabularies.prompt_texts()
                                       for w in re.findall(r"[A-Za-z]+", symbols.sub("\x00", t))}
  return collections.Counter(w for t in texts for w in _SPACED_WORD.findall(symbols.sub("\x00", t))
                             if w.lower() in templates)


def test_frequent_template_words_are_single_pieces(vocab, world_texts):
  top = [w for w, _ in template_word_counts(world_texts).most_common(200)]
  assert len(top) == 200
  single = [w for w in top if len(_pieces(vocab, f" {w}")) == 1]
  # Measured: 199 of 200 on this world; 'Some' is a syllable chain, so it splits like a name (So-me).
  assert len(single) / len(top) >= 0.95, sorted(set(top) - set(single))


def test_world_passages_round_trip_exactly(vocab, tiny_world):
  texts = [p.text for p in tiny_world.passages] + [p.title for p in tiny_world.passages]
  texts += vocabularies.prompt_texts()
  for text in texts:
    assert vocab.decode(vocab.encode(text)) == text
  assert 2 not in [i for t in texts for i in vocab.encode(t)]  # Never unknown.
  batch = tf.constant(texts[:64] + texts[-6:])
  ids = vocab.encode_tf(batch)
  assert ids.to_list() == [vocab.encode(t) for t in texts[:64] + texts[-6:]]
  decoded = vocab.decode_tf(ids.to_tensor())
  assert [s.decode() for s in decoded.numpy()] == texts[:64] + texts[-6:]


def test_model_written_texts_take_the_models_segments_per_file_and_type(tmp_path):
  from masksearch_jax.data.trajectories import Trajectory, TrajectoryWriter

  def write(path, kinds):
    with TrajectoryWriter(path) as writer:
      for i, kind in enumerate(kinds):
        meta = {"question_type": kind} if kind else {}
        writer.write(Trajectory(id=f"{path.stem}-{i}", kind="qa" if kind else "ramp", prompt="P",
                                segments=[{"type": "model", "text": f"think {path.stem} {i}"},
                                          {"type": "observation", "text": "seen"},
                                          {"type": "model", "text": f"answer {path.stem} {i}"}],
                                stop_reason="answer", answer="a", meta=meta))
    return path

  ramp = write(tmp_path / "ramp.jsonl", [None] * 3)
  qa = write(tmp_path / "qa.jsonl", ["comparison", "inference", "comparison", "comparison"])
  texts = list(vocabularies.model_written_texts([ramp, qa], per_file=2, question_types=["comparison"]))
  # The first two of each file that qualify; observations never; RAMP has no type and is kept.
  assert texts == ["think ramp 0", "answer ramp 0", "think ramp 1", "answer ramp 1",
                   "think qa 0", "answer qa 0", "think qa 2", "answer qa 2"]
  assert len(list(vocabularies.model_written_texts([qa], per_file=0))) == 8
  with pytest.raises(FileNotFoundError, match="missing.jsonl"):
    list(vocabularies.model_written_texts([tmp_path / "missing.jsonl"]))


def test_the_teachers_words_become_whole_pieces(world_texts, vocab, tiny_world_dir, tiny_index, tmp_path):
  from masksearch_jax.agent import offline_teacher
  qa = tmp_path / "qa.jsonl"
  offline_teacher.synthesize_to_file("qa", qa, world=tiny_world_dir, index=str(tiny_index), limit=200,
                                     progress=False)
  written = list(vocabularies.model_written_texts([qa]))
  path = vocabularies.train_sentencepiece(world_texts + written, tmp_path / "teacher.model", vocab_size=VOCAB_SIZE)
  with_teacher = vocabularies.sentencepiece_vocabulary(path)
  words = [" starts", " needs", " facts", " chain", " says"]
  # Without the teacher's text these words split into characters and name syllables (measured: 4 to 6
  # pieces each); with it each is one piece, and what the model writes takes fewer tokens (measured: 19%).
  assert all(len(_pieces(vocab, w)) > 2 for w in words), [_pieces(vocab, w) for w in words]
  assert all(len(_pieces(with_teacher, w)) == 1 for w in words), [_pieces(with_teacher, w) for w in words]
  before = sum(len(vocab.encode(t)) for t in written)
  after = sum(len(with_teacher.encode(t)) for t in written)
  assert after < 0.9 * before, (before, after)
  assert with_teacher.tokenizer.encode("Mizigi Peto", out_type=str) == ["▁Mi", "zi", "gi", "▁Pe", "to"]


# -- world vocabulary ------------------------------------------------------------------------------


def test_world_vocabulary_is_cached_and_reused(tmp_path, monkeypatch):
  config = WorldConfig(seed=3, size=300)
  first = vocabularies.world_vocabulary(config, vocab_size=1000, cache_dir=tmp_path)
  models = list((tmp_path / "vocabs").glob("*.model"))
  assert len(models) == 1 and first.sentencepiece_model_file == str(models[0])
  assert (tmp_path / "worlds").is_dir()  # The world came from the same cache.
  mtime = models[0].stat().st_mtime_ns

  def no_training(*args, **kwargs):
    raise AssertionError("the cached model should have been reused")

  monkeypatch.setattr(vocabularies, "train_sentencepiece", no_training)
  second = vocabularies.world_vocabulary(config, vocab_size=1000, cache_dir=tmp_path)
  assert second == first and models[0].stat().st_mtime_ns == mtime
  # Anything that changes the model changes the key.
  with pytest.raises(AssertionError, match="reused"):
    vocabularies.world_vocabulary(config, vocab_size=1000, seed=1, cache_dir=tmp_path)
  with pytest.raises(AssertionError, match="reused"):
    vocabularies.world_vocabulary(WorldConfig(seed=4, size=300), vocab_size=1000, cache_dir=tmp_path)


def test_world_vocabulary_uses_the_cache_of_the_environment(monkeypatch, tmp_path):
  monkeypatch.setenv("MASKSEARCH_CACHE", str(tmp_path))
  vocab = vocabularies.world_vocabulary(WorldConfig(seed=5, size=250), vocab_size=900)
  assert vocab.sentencepiece_model_file.startswith(str(tmp_path / "vocabs"))
  question = protocol.qa_prompt("Who founded Kalomi?")
  assert vocab.decode(vocab.encode(question)) == question


# -- Hugging Face tokenizer ------------------------------------------------------------------------

HF_SENTENCES = [
    "Kalomi Zozu was born in Dakuhaho on May 3, 1921!",
    "The city of Zopaba was founded in 1440; it has 71,540 inhabitants.",
    "Answer the given question. <search> query </search> and <answer> Beijing </answer>.",
    "Hello world! This is a small test of a byte-level BPE tokenizer.",
]


@pytest.fixture(scope="module")
def hf_tokenizer_file(tmp_path_factory):
  """A byte-level BPE tokenizer.json in the style of Qwen2.5: id 0 is '!', special tokens at the end."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
  tokenizer = Tokenizer(models.BPE())
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False)
  tokenizer.train_from_iterator(HF_SENTENCES * 5, trainer)
  tokenizer.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
  path = tmp_path_factory.mktemp("hf") / "tokenizer.json"
  tokenizer.save(str(path))
  return path


@pytest.fixture(scope="module")
def hf_vocab(hf_tokenizer_file):
  return vocabularies.HFTokenizerVocabulary(hf_tokenizer_file)


def test_hf_vocabulary_ids_and_round_trip(hf_vocab, hf_tokenizer_file):
  tok = hf_vocab.tokenizer
  assert tok.id_to_token(0) == "!"
  assert hf_vocab.eos_id == tok.token_to_id("<|endoftext|>") == hf_vocab.vocab_size - 3
  assert hf_vocab.unk_id is None and hf_vocab.pad_id == 0
  for text in HF_SENTENCES + ["unseen wörds 東京 🎉 and <|im_end|> inside", ""]:
    ids = hf_vocab.encode(text)
    assert ids == tok.encode(text, add_special_tokens=False).ids
    assert hf_vocab.decode(ids) == text
  # Decoding stops at the first EOS; '!' (id 0) before it is kept, padding after it is not.
  ids = hf_vocab.encode("Hello world!") + [hf_vocab.eos_id, 0, 0, 0]
  assert hf_vocab.decode(ids) == "Hello world!"
  assert hf_vocab.decode(np.asarray(ids)) == "Hello world!"


def test_hf_vocabulary_eos_choice_equality_and_pickle(hf_vocab, hf_tokenizer_file):
  im_end = vocabularies.HFTokenizerVocabulary(hf_tokenizer_file, eos_token="<|im_end|>")
  assert im_end.eos_id == hf_vocab.tokenizer.token_to_id("<|im_end|>")
  assert im_end != hf_vocab
  assert vocabularies.HFTokenizerVocabulary(hf_tokenizer_file) == hf_vocab
  assert pickle.loads(pickle.dumps(hf_vocab)) == hf_vocab
  with pytest.raises(ValueError, match="not in the vocabulary"):
    vocabularies.HFTokenizerVocabulary(hf_tokenizer_file, eos_token="<eos>")
  # A tokenizer_config.json next to the file names the EOS token, as in Hugging Face repos.
  (hf_tokenizer_file.parent / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>"}))
  try:
    assert vocabularies.HFTokenizerVocabulary(hf_tokenizer_file).eos_token == "<|im_end|>"
  finally:
    (hf_tokenizer_file.parent / "tokenizer_config.json").unlink()


def test_hf_vocabulary_in_tensorflow(hf_vocab):
  text = HF_SENTENCES[0]
  ids = hf_vocab.encode_tf(tf.constant(text))
  assert ids.dtype == tf.int32 and ids.numpy().tolist() == hf_vocab.encode(text)
  ragged = hf_vocab.encode_tf(tf.constant(HF_SENTENCES))
  assert ragged.to_list() == [hf_vocab.encode(t) for t in HF_SENTENCES]
  # Rows padded with 0 after EOS decode to their text (0 is '!', not padding, for this tokenizer).
  rows = [hf_vocab.encode(t) + [hf_vocab.eos_id] for t in HF_SENTENCES]
  width = max(map(len, rows)) + 3
  padded = tf.constant([r + [0] * (width - len(r)) for r in rows], dtype=tf.int32)
  assert [s.decode() for s in hf_vocab.decode_tf(padded).numpy()] == HF_SENTENCES
  assert hf_vocab.decode_tf(padded[0]).numpy().decode() == HF_SENTENCES[0]


def test_hf_vocabulary_in_a_seqio_task(hf_vocab):
  def source(split, shuffle_files, seed=None):
    del split, shuffle_files, seed
    return tf.data.Dataset.from_tensor_slices({"targets": HF_SENTENCES})

  task = seqio.Task(
      "hf_vocabulary_test_task",
      source=seqio.FunctionDataSource(source, splits=["train"]),
      preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim],
      output_features={"targets": seqio.Feature(hf_vocab, add_eos=True)})
  dataset = task.get_dataset({"targets": 64}, split="train", shuffle=False, num_epochs=1)
  examples = list(dataset.as_numpy_iterator())
  assert [e["targets"].tolist() for e in examples] == [hf_vocab.encode(t) + [hf_vocab.eos_id] for t in HF_SENTENCES]
  assert [e["targets_pretokenized"].decode() for e in examples] == HF_SENTENCES
  assert [hf_vocab.decode(e["targets"]) for e in examples] == HF_SENTENCES


# -- CLI -----------------------------------------------------------------------------------------


def test_cli_train_vocab_on_a_world_and_a_corpus(tmp_path, capsys):
  out = tmp_path / "world.model"
  args = ["train-vocab", "--out", str(out), "--world_seed", "2", "--world_size", "200", "--vocab_size", "900"]
  assert cli.main(args) == 0
  printed = capsys.readouterr().out
  assert "pieces (at most 900)" in printed and "trained in" in printed and str(out) in printed
  vocab = vocabularies.sentencepiece_vocabulary(out)
  assert vocab.tokenizer.encode(" Kalomi", out_type=str) == ["▁Ka", "lo", "mi"]
  before = out.read_bytes()
  assert cli.main(args) == 2
  assert "already exists" in capsys.readouterr().err
  # Every text of this small world is used, so the seed does not change the model.
  assert cli.main(args + ["--overwrite", "--seed", "1"]) == 0 and out.read_bytes() == before
  capsys.readouterr()

  world = generate_world(WorldConfig(seed=6, size=150))
  corpus = world_io.write_world(world, tmp_path / "w6") / "passages.jsonl"
  out2 = tmp_path / "corpus.model"
  assert cli.main(["train-vocab", "--out", str(out2), "--corpus", str(corpus), "--vocab_size", "700",
                   "--no_name_syllables"]) == 0
  assert "syllables" not in capsys.readouterr().out
  text = world.passages[0].text
  vocab2 = vocabularies.sentencepiece_vocabulary(out2)
  assert vocab2.decode(vocab2.encode(text)) == text
  capsys.readouterr()

  # What the model writes in a trajectory file joins the training text.
  from masksearch_jax.data.trajectories import Trajectory, TrajectoryWriter
  trajectories = tmp_path / "teacher.jsonl"
  with TrajectoryWriter(trajectories) as writer:
    for i in range(50):
      writer.write(Trajectory(id=f"t{i}", kind="ramp", prompt="P", stop_reason="answer", answer="a",
                              segments=[{"type": "model", "text": "Wherefore sayeth the scribe thusly."}]))
  out3 = tmp_path / "teacher.model"
  assert cli.main(["train-vocab", "--out", str(out3), "--corpus", str(corpus), "--vocab_size", "700",
                   "--trajectories", str(trajectories)]) == 0
  assert "1 trajectory file(s)" in capsys.readouterr().out
  assert cli.main(["train-vocab", "--out", str(tmp_path / "plain.model"), "--corpus", str(corpus),
                   "--vocab_size", "700"]) == 0
  assert vocabularies.sentencepiece_vocabulary(out3).tokenizer.encode(" Wherefore", out_type=str) == ["▁Wherefore"]
  plain = vocabularies.sentencepiece_vocabulary(tmp_path / "plain.model")
  assert len(plain.tokenizer.encode(" Wherefore", out_type=str)) > 1
