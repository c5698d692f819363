"""Vocabularies: SentencePiece models trained on a corpus, and Hugging Face tokenizers.

- `train_sentencepiece` trains a unigram SentencePiece model in process
  (deterministic: the same texts and options give the same bytes) in which every
  invented name splits into its syllables (see its docstring for how).
- `sentencepiece_vocabulary` opens a model as a `seqio.SentencePieceVocabulary`
  and checks that the protocol tags and `[mask]` are single pieces.
- `world_vocabulary` is the default vocabulary of every stage: a model trained on
  the cached embedded world and the prompts, cached under `<cache>/vocabs/`.
- `HFTokenizerVocabulary` is a `seqio.Vocabulary` over a Hugging Face
  `tokenizer.json`, so the token ids of Qwen2.5 or Llama checkpoints can be used.

SeqIO conventions: PAD=0, EOS=1, UNK=2 and no BOS in the SentencePiece models.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import heapq
import io
import json
import os
import random
import re
import statistics
import tempfile
import unicodedata
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import seqio
import sentencepiece as spm
import tensorflow as tf
from sentencepiece import sentencepiece_model_pb2

from masksearch_jax.agent import protocol
from masksearch_jax.data import names, world_io
from masksearch_jax.data.passage import Passage
from masksearch_jax.data.world import GENERATOR_VERSION, World, WorldConfig

# Bump when the construction changes the model it makes (invalidates cached models).
VOCAB_VERSION = 1

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
NEWLINE = "\n"
WORD_START = "\u2581"  # SentencePiece's word-start marker '▁'.

# Put between the syllables of name words in the training text only. A private-use
# character, removed from the training text if a corpus happens to contain it.
_DELIMITER = "\ue000"
_NAME_WORD = re.compile(r"(?<![A-Za-z])[A-Z][a-z]+(?![A-Za-z])")
_CAPITAL_CONSONANTS = frozenset(names.CONSONANTS.upper())
_CONSONANTS = frozenset(names.CONSONANTS)
_VOWELS = frozenset(names.VOWELS)
_MAX_PIECE_LENGTH = 16
_MAX_SENTENCE_BYTES = 1 << 20
# Every non-syllable piece that can lie inside a name scores at least this far below
# the syllables it competes with, so float rounding never makes a tie.
_SCORE_MARGIN = 0.5

_Piece = sentencepiece_model_pb2.ModelProto.SentencePiece


def syllable_pieces(syllable: str) -> tuple[str, str, str]:
  """The three pieces of one syllable: inside a word, word-initial, and after a space.

  Args:
    syllable: A syllable of `names.SYLLABLES`, such as "ka".

  Returns:
    ("ka", "Ka", "▁Ka").
  """
  capital = syllable.capitalize()
  return syllable, capital, WORD_START + capital


def name_pieces(name: str, *, after_space: bool = True) -> list[str]:
  """The pieces a name word must encode to: one per syllable.

  Args:
    name: A capitalised name word built from `names.SYLLABLES`, such as "Kalomi".
    after_space: The word follows a space or starts the text (its first piece
      carries '▁'); False when it follows punctuation or a newline directly.

  Returns:
    For example ["▁Ka", "lo", "mi"].
  """
  syllables = names.split_syllables(name)
  first = syllables[0].capitalize()
  return [(WORD_START if after_space else "") + first] + syllables[1:]


def prompt_texts() -> list[str]:
  """The fixed text every stage shows the model: the QA and RAMP prompts and observation framing.

  Used as training text so that their words are whole pieces.
  """
  return [
      protocol.qa_prompt("Who founded it?"),
      protocol.ramp_prompt(f"{protocol.MASK} was born in {protocol.MASK}."),
      protocol.format_observation([("Title", "Text."), ("Title", "Text.")]),
      f"{protocol.THINK[0]} reasoning {protocol.THINK[1]}",
      f"{protocol.SEARCH[0]} query {protocol.SEARCH[1]}",
      f"{protocol.ANSWER[0]} answer {protocol.ANSWER[1]}",
  ]


def passage_training_texts(passages: Iterable[Passage], *, docs_per_observation: int = 3) -> Iterator[str]:
  """Passages framed as the model sees them: `format_observation` groups of a few passages.

  Args:
    passages: The corpus passages.
    docs_per_observation: Passages per observation (each passage is used once).

  Yields:
    One observation text per group.
  """
  group: list[tuple[str, str]] = []
  for passage in passages:
    group.append((passage.title, passage.text))
    if len(group) == docs_per_observation:
      yield protocol.format_observation(group)
      group = []
  if group:
    yield protocol.format_observation(group)


def world_training_texts(world: World) -> Iterator[str]:
  """The training text of a world's vocabulary: prompts, passages and questions.

  Args:
    world: A generated or loaded world.

  Yields:
    The prompt texts, every passage inside observation framing, every question
    inside the QA prompt and every passage inside the RAMP prompt (so the prompt
    words are as frequent as in training).
  """
  yield from prompt_texts()
  yield from passage_training_texts(world.iter_passages())
  for question in world.questions:
    yield protocol.qa_prompt(question.question)
    yield f"{protocol.ANSWER[0]} {question.answer} {protocol.ANSWER[1]}"
  for passage in world.passages[::4]:
    yield protocol.ramp_prompt(passage.text)


def model_written_texts(paths: Iterable[str | os.PathLike], *, per_file: int = 2000,
                        question_types: Sequence[str] = ()) -> Iterator[str]:
  """What a policy writes: the model segments of teacher trajectories.

  A vocabulary trained only on what the model reads leaves the words it writes in its
  thoughts ("starts", "needs", "says") in characters and name syllables; adding this text
  gives them whole pieces, so fewer tokens are written and ordinary words stop sharing
  pieces with names.

  Args:
    paths: Trajectory jsonl files (`trajectories.read_trajectories`).
    per_file: Trajectories read from the start of each file (0: all).
    question_types: Keep only question trajectories of these types (`meta.question_type`);
      empty keeps all. Trajectories without a question type (RAMP) are always kept.

  Yields:
    The text of every model segment, one at a time.
  """
  from masksearch_jax.data.trajectories import read_trajectories
  for path in paths:
    used = 0
    for trajectory in read_trajectories(path):
      if per_file and used == per_file:
        break
      kind = trajectory.meta.get("question_type")
      if question_types and kind is not None and kind not in question_types:
        continue
      used += 1
      for segment in trajectory.segments:
        if segment.type == "model":
          yield segment.text


# -- training ------------------------------------------------------------------------


def train_sentencepiece(texts: Iterable[str],
                        out_path: str | os.PathLike,
                        *,
                        vocab_size: int = 4000,
                        seed: int = 0,
                        model_type: str = "unigram",
                        user_defined_symbols: Sequence[str] = protocol.PROTOCOL_SYMBOLS,
                        character_coverage: float = 1.0,
                        name_syllables: bool = True,
                        keep_newlines: bool = True,
                        split_digits: bool = True,
                        max_sentences: int = 1_000_000,
                        max_seed_words: int = 200_000,
                        num_threads: int = 1,
                        overwrite: bool = True) -> Path:
  """Trains a SentencePiece model on `texts` and writes it atomically to `out_path`.

  Ids follow SeqIO: PAD=0 (`<pad>`), EOS=1 (`</s>`), UNK=2 (`<unk>`), no BOS; then
  the user-defined symbols, then the learned pieces by decreasing score. Numbers are
  split into digits (`split_digits`). The same texts and options give the same bytes.

  `vocab_size` is an upper bound: a small or templated corpus supports fewer pieces
  (the default world gives 675), and the model then has fewer rather than being
  padded with pieces no text uses.

  Whole words. SentencePiece's own unigram seeding counts each distinct word once,
  so in a templated corpus a word that is not part of a longer word (such as 'the')
  is never a candidate and common words come out fragmented ('▁T', 'he'). The seed
  pieces are therefore counted here, from every substring of the training words
  weighted by word frequency, and handed to the trainer.

  Name syllables (`name_syllables`, unigram only). Every name word built from
  `names.SYLLABLES`, seen in training or not, encodes as one piece per syllable
  (['▁Ka', 'lo', 'mi'], or ['Ka', 'lo', 'mi'] right after punctuation or a newline),
  the same way every time, while other words keep whole pieces. Construction:
    1. In the training text only, capitalised words that split into syllables get a
       delimiter between syllables (`pretokenization_delimiter`), so no learned piece
       spans a syllable boundary of a name and no vocabulary goes to whole names.
    2. Every syllable gets three pieces ('ka', 'Ka', '▁Ka'), all with one score s
       (the median score the trainer gave the syllables).
    3. Give each letter of a name a budget of s/2 and '▁' a budget of 0: the syllable
       split then scores exactly the sum of the budgets. Every other piece that can lie
       inside a name ('▁', a single letter, 'er', 'lomi', '▁Kal', ...) has its score
       lowered, if needed, to below the budget of the letters it covers; pieces that
       could straddle the edge of a name (a name's letters plus a neighbouring
       character) are dropped. So any other split of a name scores strictly less, and
       unigram decoding (Viterbi, the best-scoring split) picks the syllables.
  Only pieces that can occur inside a name are touched; English words are lowercase
  or capitalised words that are not syllable chains, so they keep their pieces. A
  capitalised English word that is itself a syllable chain ('Made') is tokenised as
  a name would be. The model is checked before it is written (all two-syllable
  names and 2,000 longer ones, in several contexts).

  Args:
    texts: Training texts (passages, prompts), read once.
    out_path: Where to write the `.model` file; its directory is created.
    vocab_size: Most pieces in the model (PAD, EOS, UNK and user-defined symbols
      included).
    seed: Seeds the sampling of `max_sentences` texts from a larger corpus and
      SentencePiece's random generator. With fewer texts than that, every text is used
      and the model does not depend on the seed.
    model_type: "unigram" or "bpe" (BPE only without `name_syllables`).
    user_defined_symbols: Strings that are always single pieces (the protocol tags
      and "[mask]" by default).
    character_coverage: Share of characters covered by the pieces (1.0: all).
    name_syllables: Make name words encode as their syllables (above).
    keep_newlines: Keep "\\n" as a piece of its own (NFKC normalisation without
      SentencePiece's newline-to-space rule) instead of turning it into a space.
    split_digits: Split numbers into single digits.
    max_sentences: Most texts trained on; a larger corpus is sampled with `seed`.
    max_seed_words: Most distinct words (the most frequent) whose substrings seed
      the unigram model.
    num_threads: Trainer threads. The bytes depend on it (the sums of the training
      are split by thread), so keep it fixed, 1 by default, for reproducible models.
    overwrite: Replace an existing file at `out_path`.

  Returns:
    The path written.

  Raises:
    FileExistsError: `out_path` exists and `overwrite` is False.
    ValueError: Bad options, an empty corpus, or `vocab_size` too small to hold the
      characters and syllables.
  """
  out = Path(out_path)
  if out.exists() and not overwrite:
    raise FileExistsError(f"{out} already exists; pass overwrite=True (--overwrite) to replace it")
  if model_type not in ("unigram", "bpe"):
    raise ValueError(f"model_type must be 'unigram' or 'bpe', got {model_type!r}")
  if name_syllables and model_type != "unigram":
    raise ValueError("name_syllables needs model_type='unigram' (its guarantee rests on unigram decoding)")
  symbols = list(dict.fromkeys(list(user_defined_symbols) + ([NEWLINE] if keep_newlines else [])))
  if any(not s for s in symbols):
    raise ValueError("user_defined_symbols must not contain an empty string")

  sentences = _sample_sentences(texts, max_sentences, random.Random(f"masksearch-vocab-{seed}"))
  if not sentences:
    raise ValueError("no training text: the corpus is empty")
  if name_syllables:
    sentences = [_delimit_names(s) for s in sentences]
  spm.set_random_generator_seed(seed)
  options = dict(
      model_type=model_type, vocab_size=vocab_size, character_coverage=character_coverage,
      user_defined_symbols=symbols, pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=-1,
      hard_vocab_limit=False, split_digits=split_digits, num_threads=num_threads,
      max_sentencepiece_length=_MAX_PIECE_LENGTH, max_sentence_length=_MAX_SENTENCE_BYTES,
      input_sentence_size=0, shuffle_input_sentence=False,
      normalization_rule_name="nfkc" if keep_newlines else "nmt_nfkc", minloglevel=2)
  if name_syllables:
    options["pretokenization_delimiter"] = _DELIMITER
  model = sentencepiece_model_pb2.ModelProto()
  with tempfile.TemporaryDirectory(prefix="masksearch-spm-") as tmp:
    if model_type == "unigram":
      seeds = Path(tmp) / "seeds.tsv"
      _write_seed_pieces(sentences, seeds, symbols, max_seed_words, split_digits=split_digits,
                         spaces_only=keep_newlines)
      options["seed_sentencepieces_file"] = str(seeds)
    writer = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_writer=writer, **options)
    model.ParseFromString(writer.getvalue())
  # The proto records the training options; drop the temporary path so the bytes
  # depend only on the texts and options.
  model.trainer_spec.ClearField("seed_sentencepieces_file")
  if name_syllables:
    _enforce_name_syllables(model, vocab_size)
  model.trainer_spec.vocab_size = len(model.pieces)
  data = model.SerializeToString(deterministic=True)
  if name_syllables:
    failures = name_syllable_failures(spm.SentencePieceProcessor(model_proto=data))
    if failures:
      raise RuntimeError(f"name words do not encode as their syllables, e.g. {failures[:3]} "
                         "(a user-defined symbol inside a name?)")
  _write_atomically(out, data)
  return out


def _sample_sentences(texts: Iterable[str], max_sentences: int, rng: random.Random) -> list[str]:
  """Every training text (cut into chunks SentencePiece accepts), or a seeded sample of them."""
  if max_sentences < 1:
    raise ValueError(f"max_sentences must be at least 1, got {max_sentences}")
  sample: list[str] = []
  seen = 0
  for text in texts:
    for chunk in _chunks(text.replace(_DELIMITER, "")):
      seen += 1
      if len(sample) < max_sentences:
        sample.append(chunk)
      else:
        # Reservoir sampling: every chunk is kept with the same probability.
        j = rng.randrange(seen)
        if j < max_sentences:
          sample[j] = chunk
  return sample


def _chunks(text: str) -> Iterator[str]:
  """`text`, or pieces of it cut at spaces when it is longer than SentencePiece accepts."""
  if not text.strip():
    return
  if len(text.encode("utf-8")) <= _MAX_SENTENCE_BYTES:
    yield text
    return
  limit = _MAX_SENTENCE_BYTES // 4  # Characters of up to 4 bytes.
  words: list[str] = []
  size = 0
  for word in text.split(" "):
    if size + len(word) + 1 > limit and words:
      yield " ".join(words)
      words, size = [], 0
    words.append(word[:limit])
    size += len(word) + 1
  if words:
    yield " ".join(words)


def _delimit_names(text: str) -> str:
  """Puts the delimiter between the syllables of capitalised syllable-chain words."""

  def split(match: re.Match) -> str:
    word = match.group(0)
    if len(word) < 4 or not _is_syllable_chain(word):
      return word
    return _DELIMITER.join(word[i:i + 2] for i in range(0, len(word), 2))

  return _NAME_WORD.sub(split, text)


def _is_syllable_chain(word: str) -> bool:
  try:
    names.split_syllables(word)
  except ValueError:
    return False
  return True


def _char_class(c: str) -> str:
  if c.isdigit():
    return "digit"
  if c.isalpha() or unicodedata.category(c).startswith("M"):
    return "letter"
  return "other"


def _write_seed_pieces(sentences: Sequence[str], path: Path, symbols: Sequence[str], max_words: int, *,
                       split_digits: bool, spaces_only: bool) -> None:
  """Writes the unigram seed pieces: substrings of the training words, weighted by frequency.

  Each candidate is scored frequency x length, as SentencePiece scores the substrings
  it finds itself; the top `seed_sentencepiece_size` (1M) are written. Candidates
  SentencePiece would not allow (across scripts, say) are dropped by the trainer.

  Args:
    sentences: The training sentences (with name delimiters).
    path: The TSV file to write (piece, tab, score).
    symbols: User-defined symbols (pieces never span them).
    max_words: Most distinct words used, the most frequent first.
    split_digits: Numbers are split into digits (no multi-digit candidates).
    spaces_only: Only spaces separate words (newlines are kept as pieces of their own).
  """
  words = collections.Counter(w for s in sentences for w in (s.split(" ") if spaces_only else s.split()) if w)
  counts: collections.Counter[str] = collections.Counter()
  for word, count in words.most_common(max_words):
    for segment in _segments_of(word, symbols, split_digits):
      n = len(segment)
      for i in range(n):
        for j in range(i + 1, min(n, i + _MAX_PIECE_LENGTH) + 1):
          counts[segment[i:j]] += count
  scored = ((count * len(piece), piece) for piece, count in counts.items() if piece != WORD_START)
  best = heapq.nlargest(1_000_000, scored, key=lambda x: (x[0], x[1]))
  best.sort(key=lambda x: (-x[0], x[1]))
  with open(path, "w", encoding="utf-8") as f:
    for score, piece in best:
      f.write(f"{piece}\t{score}\n")


_SYMBOL_SPLIT_CACHE: dict[tuple[str, ...], re.Pattern | None] = {}


def _segments_of(word: str, symbols: Sequence[str], split_digits: bool) -> list[str]:
  """The stretches of one word a piece may cover: split at the delimiter, symbols, scripts, digits.

  The first stretch of the word carries '▁' (SentencePiece puts it on every word).
  """
  key = tuple(symbols)
  if key not in _SYMBOL_SPLIT_CACHE:
    _SYMBOL_SPLIT_CACHE[key] = (re.compile("|".join(re.escape(s) for s in sorted(symbols, key=len, reverse=True)))
                                if symbols else None)
  symbol_re = _SYMBOL_SPLIT_CACHE[key]
  segments: list[str] = []
  at_word_start = True
  for part in word.split(_DELIMITER):
    for chunk in (symbol_re.split(part) if symbol_re else [part]):
      start = 0
      for i in range(1, len(chunk) + 1):
        if (i == len(chunk) or _char_class(chunk[i]) != _char_class(chunk[start])
            or (split_digits and _char_class(chunk[i]) == "digit")):
          segment = chunk[start:i]
          segments.append(WORD_START + segment if at_word_start and start == 0 else segment)
          at_word_start = False
          start = i
      at_word_start = False
  return segments


# -- name syllables ------------------------------------------------------------------------


def _name_letters(piece: str) -> int | None:
  """How many letters of a name `piece` covers if it can lie inside a name ('▁Kalomi'), else None."""
  body = piece[1:] if piece.startswith(WORD_START) else piece
  if not body:
    return 0 if piece == WORD_START else None
  if not (body.isascii() and body.isalpha()):
    return None
  rest = body
  if body[0].isupper():
    if body[0] not in _CAPITAL_CONSONANTS:
      return None
    rest = body[1:]
    expect_vowel = True
  elif piece.startswith(WORD_START):
    return None  # After a space a name starts with a capital.
  else:
    expect_vowel = body[0] in _VOWELS
  for c in rest:
    if c not in (_VOWELS if expect_vowel else _CONSONANTS):
      return None
    expect_vowel = not expect_vowel
  return len(body)


def _could_name_end(run: str) -> bool:
  """True if `run` (letters) could be the last letters of a name."""
  letters = _name_letters(run)
  return letters is not None and run[-1] in _VOWELS


def _could_name_start(run: str) -> bool:
  """True if `run` (letters) could be the first letters of a name."""
  return run[:1] in _CAPITAL_CONSONANTS and _name_letters(run) is not None


def _straddles_name_edge(piece: str) -> bool:
  """True if `piece` could cover the edge of a name and a character next to it."""
  body = piece[1:] if piece.startswith(WORD_START) else piece
  runs = re.split(r"([A-Za-z]+)", body)
  # re.split with a group alternates: other, letters, other, letters, ..., other.
  for k in range(1, len(runs), 2):
    before, run, after = runs[k - 1], runs[k], runs[k + 1]
    if after and _could_name_end(run):
      return True
    if before and _could_name_start(run):
      return True
  return False


def _enforce_name_syllables(model: sentencepiece_model_pb2.ModelProto, vocab_size: int) -> None:
  """Edits a trained unigram model so every name encodes as its syllables (see train_sentencepiece)."""
  forms = {form for syllable in names.SYLLABLES for form in syllable_pieces(syllable)}
  lower = set(names.SYLLABLES)
  specials, normal = [], []
  for p in model.pieces:
    copy = _Piece()
    copy.CopyFrom(p)
    (normal if p.type == _Piece.NORMAL else specials).append(copy)
  if [p.piece for p in model.pieces[:len(specials)]] != [p.piece for p in specials]:
    raise RuntimeError("expected the special pieces before the learned ones")
  learned = [p.score for p in normal if p.piece in lower]
  if not learned:
    learned = [p.score for p in normal if p.piece in forms] or [p.score for p in normal]
  s = statistics.median(learned)
  scores: dict[str, float] = {}
  for p in normal:
    if p.piece in forms or _straddles_name_edge(p.piece):
      continue
    letters = _name_letters(p.piece)
    score = p.score
    if letters is not None:
      score = min(score, letters * s / 2 - _SCORE_MARGIN)
    scores[p.piece] = score
  for form in sorted(forms):
    scores[form] = s
  overflow = len(specials) + len(scores) - vocab_size
  if overflow > 0:
    removable = sorted((score, piece) for piece, score in scores.items() if len(piece) > 1 and piece not in forms)
    if overflow > len(removable):
      raise ValueError(f"vocab_size {vocab_size} cannot hold the characters, the {len(forms)} syllable pieces "
                       f"and the {len(specials)} special pieces; use at least "
                       f"{vocab_size + overflow - len(removable)}")
    for _, piece in removable[:overflow]:
      del scores[piece]
  ordered = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
  del model.pieces[:]
  model.pieces.extend(specials)
  for piece, score in ordered:
    model.pieces.add(piece=piece, score=score, type=_Piece.NORMAL)


def name_syllable_failures(processor: spm.SentencePieceProcessor, *, num_long: int = 2000,
                           seed: int = 0) -> list[tuple[str, list[str]]]:
  """Names that do not encode as their syllables: [(text, pieces)], empty when all do.

  Checks every two-syllable name and `num_long` names of three to five syllables,
  alone, after a space, after '(' and after a newline, with a following comma.

  Args:
    processor: The SentencePiece model.
    num_long: How many longer names to draw.
    seed: Seed of the longer names.
  """
  rng = random.Random(seed)
  words = ["".join(pair).capitalize() for pair in ((a, b) for a in names.SYLLABLES for b in names.SYLLABLES)]
  words += ["".join(rng.choices(names.SYLLABLES, k=rng.randint(3, 5))).capitalize() for _ in range(num_long)]
  contexts = (("", True), ("a ", True), ("(", False), ("a\n", False))
  failures = []
  for word in words:
    for prefix, after_space in contexts:
      text = f"{prefix}{word},"
      pieces = processor.encode(text, out_type=str)
      expected = name_pieces(word, after_space=after_space)
      if not _contains(pieces, expected):
        failures.append((text, pieces))
  return failures


def _contains(pieces: list[str], expected: list[str]) -> bool:
  n = len(expected)
  return any(pieces[i:i + n] == expected for i in range(len(pieces) - n + 1))


def _write_atomically(out: Path, data: bytes) -> None:
  out.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.tmp-", dir=out.parent)
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, out)
  except BaseException:
    Path(tmp).unlink(missing_ok=True)
    raise


# -- SentencePiece vocabularies --------------------------------------------------------------


def check_symbols(vocabulary: seqio.Vocabulary, symbols: Sequence[str] = protocol.PROTOCOL_SYMBOLS) -> None:
  """Checks that each symbol encodes to exactly one id and decodes back.

  A leading id that decodes to nothing (SentencePiece's '▁' for the space it adds at
  the start of a text) is not counted.

  Args:
    vocabulary: Any `seqio.Vocabulary`.
    symbols: The strings to check (the protocol tags and "[mask]" by default).

  Raises:
    ValueError: A symbol is split into several ids or does not decode back.
  """
  bad = []
  for symbol in symbols:
    ids = list(vocabulary.encode(symbol))
    if len(ids) > 1 and vocabulary.decode(ids[:1]) == "":
      ids = ids[1:]
    if len(ids) != 1 or vocabulary.decode(ids) != symbol:
      bad.append(f"{symbol!r} -> {ids}")
  if bad:
    raise ValueError("symbols that are not single pieces of the vocabulary (train it with them as "
                     f"user_defined_symbols): {', '.join(bad)}")


def sentencepiece_vocabulary(model_path: str | os.PathLike,
                             symbols: Sequence[str] = protocol.PROTOCOL_SYMBOLS) -> seqio.SentencePieceVocabulary:
  """Opens a SentencePiece model as a SeqIO vocabulary (no extra ids) and checks its symbols.

  SeqIO caches a loaded model by path for the life of the process, so a model
  rewritten at the same path is seen by new processes only.

  Args:
    model_path: The `.model` file.
    symbols: Strings that must be single pieces (`check_symbols`); () to skip.

  Raises:
    FileNotFoundError: No such file.
    ValueError: A symbol is not a single piece.
  """
  path = Path(model_path)
  if not path.is_file():
    raise FileNotFoundError(f"SentencePiece model not found: {path}")
  vocabulary = seqio.SentencePieceVocabulary(str(path), extra_ids=0)
  if symbols:
    check_symbols(vocabulary, symbols)
  return vocabulary


def world_vocabulary(world: WorldConfig = WorldConfig(seed=0, size=4000), vocab_size: int = 4000, seed: int = 0,
                     cache_dir: str | os.PathLike | None = None) -> seqio.SentencePieceVocabulary:
  """The default vocabulary of every stage: a model trained on the embedded world, cached.

  Trains `train_sentencepiece` (with name syllables) on the world's passages in
  observation framing, its questions in the QA prompt, passages in the RAMP prompt and
  the prompt texts. The model is cached at `<cache>/vocabs/<key>.model`, where the key
  hashes everything that affects it (world config and generator version, options,
  prompts, symbols, syllables, this module's VOCAB_VERSION and the SentencePiece
  version), and reused. Two processes building it at once each write a temporary file
  and rename it into place, so readers only ever see a complete model.

  Args:
    world: The world's config; the world itself comes from the world cache
      (generated on first use).
    vocab_size: Most pieces (see `train_sentencepiece`).
    seed: Training seed.
    cache_dir: Cache root; `world_io.default_cache_dir()` ($MASKSEARCH_CACHE) if None.
  """
  root = Path(cache_dir) if cache_dir is not None else world_io.default_cache_dir()
  key = {
      "vocab_version": VOCAB_VERSION, "world": dataclasses.asdict(world),
      "generator_version": GENERATOR_VERSION, "world_format": world_io.FORMAT_VERSION,
      "vocab_size": vocab_size, "seed": seed, "prompts": prompt_texts(),
      "qa_prompt": protocol.QA_PROMPT, "ramp_prompt": protocol.RAMP_PROMPT,
      "symbols": list(protocol.PROTOCOL_SYMBOLS), "syllables": list(names.SYLLABLES),
      "sentencepiece": spm.__version__,
  }
  digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
  path = root / "vocabs" / f"world-seed{world.seed}-size{world.size}-v{vocab_size}-{digest}.model"
  if not path.is_file():
    world_dir = world_io.cached_world_dir(world, root, progress=False)
    world_data = world_io.load_world(world_dir)
    train_sentencepiece(world_training_texts(world_data), path, vocab_size=vocab_size, seed=seed)
  return sentencepiece_vocabulary(path)


# -- Hugging Face tokenizers ------------------------------------------------------------------

# End-of-text tokens of common tokenizers, tried in order when none is configured:
# Qwen2.5 base and GPT-2, Llama 3 base, Llama 2 / T5 / Mistral, Qwen2.5 instruct, Gemma.
_EOS_CANDIDATES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<|im_end|>", "<eos>")


class HFTokenizerVocabulary(seqio.Vocabulary):
  """A SeqIO vocabulary backed by a Hugging Face `tokenizer.json` (the `tokenizers` package).

  Ids are the tokenizer's own, unchanged, so they line up with the embedding rows of
  the checkpoint the tokenizer belongs to (Qwen2.5, Llama, ...).

  Padding: SeqIO pads with id 0, and for these tokenizers 0 is a real token ('!' in
  Qwen2.5 and Llama 3). Padding must therefore be read from the loss weights,
  segment ids or lengths, never from `token == 0` (SeqIO's stock feature converters
  derive weights from `token != 0`, which would drop every '!' from the loss).
  `decode` and `decode_tf` cut at the first EOS instead of writing 0s after it; a row
  without EOS is decoded whole, so decode rows that end in EOS or are unpadded.

  Encoding in TensorFlow calls the Rust tokenizer through `tf.numpy_function`, so it
  works inside `tf.data` maps (SeqIO tasks) but not in graphs exported without Python.

  Args:
    tokenizer_file: Path of `tokenizer.json`.
    eos_token: The end-of-sequence token. If None: the `eos_token` of a
      `tokenizer_config.json` next to the file, else the first of `<|endoftext|>`,
      `<|end_of_text|>`, `</s>`, `<|im_end|>`, `<eos>` in the vocabulary.
    add_special_tokens: Let the tokenizer's post-processor add its special tokens
      (BOS for Llama) when encoding. Off by default: SeqIO adds EOS itself.
    extra_ids: SeqIO extra ids appended after the vocabulary (normally 0).
  """

  def __init__(self, tokenizer_file: str | os.PathLike, eos_token: str | None = None,
               add_special_tokens: bool = False, extra_ids: int = 0):
    import tokenizers
    path = Path(tokenizer_file)
    if not path.is_file():
      raise FileNotFoundError(f"tokenizer.json not found: {path}")
    text = path.read_text(encoding="utf-8")
    self._tokenizer_file = str(path)
    self._digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    self._tokenizer = tokenizers.Tokenizer.from_str(text)
    self._add_special_tokens = add_special_tokens
    vocab = self._tokenizer.get_vocab(with_added_tokens=True)
    self._size = max(vocab.values()) + 1 if vocab else 0
    self._eos_token = eos_token if eos_token is not None else self._default_eos(path, vocab)
    self._eos_id = self._tokenizer.token_to_id(self._eos_token)
    if self._eos_id is None:
      raise ValueError(f"{path}: eos_token {self._eos_token!r} is not in the vocabulary")
    unk_token = getattr(self._tokenizer.model, "unk_token", None)
    self._unk_id = self._tokenizer.token_to_id(unk_token) if unk_token else None
    super().__init__(extra_ids=extra_ids)

  @staticmethod
  def _default_eos(path: Path, vocab: dict[str, int]) -> str:
    config = path.with_name("tokenizer_config.json")
    if config.is_file():
      eos = json.loads(config.read_text(encoding="utf-8")).get("eos_token")
      if isinstance(eos, dict):
        eos = eos.get("content")
      if isinstance(eos, str) and eos in vocab:
        return eos
    for candidate in _EOS_CANDIDATES:
      if candidate in vocab:
        return candidate
    raise ValueError(f"{path}: no end-of-sequence token found (tried {', '.join(_EOS_CANDIDATES)}); "
                     "pass eos_token")

  @property
  def tokenizer(self):
    """The `tokenizers.Tokenizer`."""
    return self._tokenizer

  @property
  def tokenizer_file(self) -> str:
    return self._tokenizer_file

  @property
  def eos_token(self) -> str:
    return self._eos_token

  @property
  def eos_id(self) -> int:
    return self._eos_id

  @property
  def unk_id(self) -> int | None:
    return self._unk_id

  @property
  def bos_id(self) -> int | None:
    return None

  @property
  def _base_vocab_size(self) -> int:
    return self._size

  def _encode(self, s: str) -> list[int]:
    return self._tokenizer.encode(s, add_special_tokens=self._add_special_tokens).ids

  def _decode(self, ids: Sequence[int]) -> str:
    ids = [int(i) for i in ids]
    if self._eos_id in ids:
      ids = ids[:ids.index(self._eos_id)]
    ids = [i for i in ids if 0 <= i < self._size]
    return self._tokenizer.decode(ids, skip_special_tokens=False)

  def decode(self, ids: Iterable[int]) -> str:
    """Detokenizes ids up to (not including) the first EOS."""
    if isinstance(ids, (tf.Tensor, np.ndarray)):
      ids = np.asarray(ids).tolist()
    return self._decode(list(ids))

  def _encode_np(self, s: bytes | np.ndarray) -> np.ndarray:
    # Graph mode passes bytes, eager mode a 0-d object array.
    raw = s.item() if isinstance(s, np.ndarray) else s
    return np.asarray(self._encode(raw.decode("utf-8")), dtype=np.int32)

  def _encode_batch_np(self, strings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    texts = [s.decode("utf-8") for s in strings.tolist()]
    encodings = self._tokenizer.encode_batch(texts, add_special_tokens=self._add_special_tokens)
    lengths = np.asarray([len(e.ids) for e in encodings], dtype=np.int64)
    values = np.asarray([i for e in encodings for i in e.ids], dtype=np.int32)
    return values, lengths

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor | tf.RaggedTensor:
    """Encodes a scalar string to int32 ids [n], or a vector of strings to a ragged [batch, None]."""
    s = tf.convert_to_tensor(s, dtype=tf.string)
    if s.shape.rank == 0:
      ids = tf.numpy_function(self._encode_np, [s], tf.int32, stateful=False)
      ids.set_shape([None])
      return ids
    if s.shape.rank == 1:
      values, lengths = tf.numpy_function(self._encode_batch_np, [s], [tf.int32, tf.int64], stateful=False)
      values.set_shape([None])
      lengths.set_shape([None])
      return tf.RaggedTensor.from_row_lengths(values, lengths)
    raise ValueError(f"encode_tf takes a scalar or a vector of strings, got shape {s.shape}")

  def _decode_np(self, ids: np.ndarray) -> np.ndarray | bytes:
    if ids.ndim == 1:
      return self._decode(ids.tolist()).encode("utf-8")
    flat = ids.reshape(-1, ids.shape[-1])
    out = np.array([self._decode(row.tolist()).encode("utf-8") for row in flat], dtype=object)
    return out.reshape(ids.shape[:-1])

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    ids = tf.convert_to_tensor(ids)
    if ids.shape.rank is None or ids.shape.rank < 1:
      raise ValueError(f"decode_tf takes ids of rank 1 or more, got shape {ids.shape}")
    text = tf.numpy_function(self._decode_np, [ids], tf.string, stateful=False)
    text.set_shape(ids.shape[:-1])
    return text

  def decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    """Detokenizes ids [..., length] to strings [...], each up to its first EOS.

    Unlike SeqIO's default this does not write pad ids (0, a real token here) after EOS.
    """
    return self._decode_tf(ids)

  def __eq__(self, other) -> bool:
    if not isinstance(other, HFTokenizerVocabulary):
      return False
    return ((self._digest, self._eos_id, self._add_special_tokens, self.extra_ids)
            == (other._digest, other._eos_id, other._add_special_tokens, other.extra_ids))

  def __hash__(self) -> int:
    return hash((self._digest, self._eos_id, self._add_special_tokens, self.extra_ids))

  def __repr__(self) -> str:
    return (f"HFTokenizerVocabulary({self._tokenizer_file!r}, eos_token={self._eos_token!r}, "
            f"size={self._size})")
