"""Fixtures shared by the whole suite.

- a tiny generated world, its files and its index;
- a small hand-made corpus with known matches, its index and retriever, and nasty queries.
"""

from __future__ import annotations

import io
import os
import random

import numpy as np
import pytest
import seqio
import sentencepiece as spm
from fake_openai_server import FakeOpenAIServer

from masksearch_jax.agent import protocol
from masksearch_jax.data.passage import Passage
from masksearch_jax.data.trajectories import ContextEncoder
from masksearch_jax.models.sampler import GenerationResult, StopReason
from masksearch_jax.data.world import WorldConfig, generate_world

TINY_WORLD_CONFIG = WorldConfig(seed=0, size=400)


@pytest.fixture(scope="session", autouse=True)
def _hermetic_cache(tmp_path_factory):
  """Keeps every cache the code under test writes inside the test's temporary directory."""
  previous = os.environ.get("MASKSEARCH_CACHE")
  os.environ["MASKSEARCH_CACHE"] = str(tmp_path_factory.mktemp("masksearch_cache"))
  yield
  if previous is None:
    os.environ.pop("MASKSEARCH_CACHE", None)
  else:
    os.environ["MASKSEARCH_CACHE"] = previous


@pytest.fixture(scope="session")
def tiny_world():
  """A 400-person world (about 770 passages): big enough for every kind of fact and question."""
  return generate_world(TINY_WORLD_CONFIG)


@pytest.fixture(scope="session")
def tiny_world_dir(tiny_world, tmp_path_factory):
  """`tiny_world` written to disk by world_io."""
  from masksearch_jax.data import world_io
  return world_io.write_world(tiny_world, tmp_path_factory.mktemp("worlds") / "tiny")


@pytest.fixture(scope="session")
def tiny_index(tiny_world, tmp_path_factory):
  """A Tantivy index of `tiny_world`'s passages."""
  from masksearch_jax.retrieval import tantivy_index
  index_dir = tmp_path_factory.mktemp("indexes") / "tiny"
  tantivy_index.build_index(tiny_world.iter_passages(), index_dir, progress=False)
  return index_dir


# -- a hand-made corpus for retrieval tests ------------------------------------

# Words the filler never uses, so tests know exactly which passages match.
_FILLER = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut "
           "labore et dolore magna aliqua enim ad minim veniam quis nostrud exercitation ullamco laboris "
           "nisi aliquip ex ea commodo consequat").split()

SPECIAL = [
    Passage("p-paris-1", "Paris", "Paris is the capital of France and sits on the river Seine."),
    Passage("p-paris-2", "Paris", "The Louvre museum in Paris holds the Mona Lisa."),
    Passage("p-seine", "Seine", "The Seine flows through Paris to the English Channel."),
    Passage("p-foo", "Bar Baz", "foo appears here once."),
    Passage("p-foo2", "Quux", "foo foo foo is said three times, foo."),
    Passage("p-and", "Logic", "and or not are plain words here, not operators"),
    Passage("p-title-only", "Zanzibar", "an island off the coast of east africa"),
    Passage("p-text-zanzibar", "Spice trade", "cloves came from zanzibar and zanzibar and zanzibar"),
    Passage("p-unicode", "Ελληνικά", "Καλημέρα κόσμε, 東京 is Tokyo and emoji 🎉 stay out."),
    Passage("p-istanbul", "İstanbul", "İstanbul straddles the Bosphorus."),
    Passage("p-underscore", "snake_case", "identifiers like snake_case split into two words"),
]


def make_passages(num_filler: int = 200, seed: int = 0) -> list[Passage]:
  """The special passages plus `num_filler` passages of lorem-ipsum filler."""
  rng = random.Random(seed)
  filler = [
      Passage(f"f-{i}", " ".join(rng.choices(_FILLER, k=2)).title(), " ".join(rng.choices(_FILLER, k=40)))
      for i in range(num_filler)
  ]
  return SPECIAL + filler


NASTY_QUERIES = [
    "",
    " ",
    "\t\n\r ",
    '"',
    '""',
    '"unbalanced quote',
    "'single'",
    ":",
    "title:",
    "title:paris",
    "text:foo AND id:p-foo",
    "nosuchfield:foo",
    "(",
    ")",
    "(foo",
    "foo)",
    "((((paris",
    "paris))))",
    "[",
    "]",
    "[1 TO",
    "[1 TO 5]",
    "{a TO b}",
    "title:[a TO z]",
    "AND",
    "OR",
    "NOT",
    "AND OR NOT",
    "foo AND",
    "OR foo",
    "NOT paris",
    "-paris",
    "+paris",
    "paris^2",
    "^",
    "paris~2",
    "~",
    "*",
    "pa*",
    "?",
    "\\",
    "\\\\",
    "foo\\",
    "/regex.*/",
    "a && b || c",
    "!paris",
    "IN [paris seine]",
    "title: IN [paris]",
    "paris:seine:france",
    "{}",
    "<>",
    "@#$%&",
    "\x00",
    "paris\x00seine",
    "\x1b[31mred\x1b[0m",
    "\u200b\u200d\ufeff",
    "🎉🔥💯",
    "東京",
    "Καλημέρα",
    "İstanbul",
    "snake_case",
    "ab\ud800cd",  # A lone surrogate, as json.loads makes from "\ud800".
    "x" * 10_000,
    "paris " * 2_000,
    " ".join(f"w{i}" for i in range(10_000)),
    "(" * 5_000 + "paris" + ")" * 3_000,
    '"' * 10_000,
]


def pytest_generate_tests(metafunc):
  # A test taking `nasty_query` runs once per entry of NASTY_QUERIES.
  if "nasty_query" in metafunc.fixturenames:
    metafunc.parametrize("nasty_query", NASTY_QUERIES, ids=[repr(q[:24]) for q in NASTY_QUERIES])


@pytest.fixture(scope="session")
def passages() -> list[Passage]:
  return make_passages()


@pytest.fixture(scope="session")
def index_dir(tmp_path_factory, passages) -> str:
  from masksearch_jax.retrieval.tantivy_index import build_index
  path = tmp_path_factory.mktemp("retrieval") / "index"
  build_index(passages, path, progress=False)
  return str(path)


@pytest.fixture(scope="session")
def retriever(index_dir):
  from masksearch_jax.retrieval.tantivy_index import TantivyRetriever
  with TantivyRetriever(index_dir, num_threads=2) as r:
    yield r


# -- a scripted OpenAI-compatible server on loopback -----------------------------------


@pytest.fixture
def fake_openai():
  """Starts `fake_openai_server.FakeOpenAIServer`s (arguments as its constructor's); closes them after the test."""
  servers = []

  def start(script=None, **kwargs):
    server = FakeOpenAIServer(script, **kwargs)
    servers.append(server)
    return server

  yield start
  for server in servers:
    server.close()

# -- a small SentencePiece vocabulary ------------------------------------------------

_WORDS = ("the capital of france is paris river seine flows through city born in year film "
          "director museum book author search answer question who where when what which mountain "
          "elevation tabudo muzu kelo rani was founded by").split()


def _train_small_vocabulary(directory) -> seqio.SentencePieceVocabulary:
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




@pytest.fixture(scope="session")
def vocab(tmp_path_factory) -> seqio.SentencePieceVocabulary:
  """A 300-piece SentencePiece vocabulary with the protocol symbols, trained here (no download)."""
  return _train_small_vocabulary(tmp_path_factory.mktemp("vocab"))


# -- SeqIO tasks on the tiny world ----------------------------------------------------


@pytest.fixture(scope="session")
def tiny_world_vocabulary():
  """The default vocabulary (`vocabularies.world_vocabulary`) trained on the tiny world."""
  from masksearch_jax.data import vocabularies
  return vocabularies.world_vocabulary(world=TINY_WORLD_CONFIG)


@pytest.fixture
def tiny_tasks(tiny_world_vocabulary):
  """Registers the tasks and points them (by Gin) at the tiny world and its vocabulary."""
  import gin

  import tasks  # noqa: F401  pylint: disable=unused-import
  from masksearch_jax.data import seqio_tasks

  def configure(*bindings: str):
    gin.clear_config()
    seqio_tasks.VOCABULARY.reset()
    gin.bind_parameter("masksearch_jax.data.ramp_source.RampCorpus.world", TINY_WORLD_CONFIG)
    gin.bind_parameter("masksearch_jax.data.seqio_tasks.QAFiles.world", TINY_WORLD_CONFIG)
    gin.bind_parameter("masksearch_jax.data.seqio_tasks.default_vocabulary.vocabulary", tiny_world_vocabulary)
    gin.parse_config(list(bindings))

  configure()
  yield configure
  gin.clear_config()
  seqio_tasks.VOCABULARY.reset()


# -- training runs on the tiny world ----------------------------------------------------------

TINY_RUN_GIN = """
from __gin__ import dynamic_registration
from masksearch_jax.data import ramp_source
from masksearch_jax.data import seqio_tasks
from masksearch_jax.data import vocabularies
from masksearch_jax.data import world
from masksearch_jax.models import transformer

ramp_source.RampCorpus.world = @world.WorldConfig()
seqio_tasks.QAFiles.world = @world.WorldConfig()
seqio_tasks.default_vocabulary.vocabulary = @vocabularies.world_vocabulary()
vocabularies.world_vocabulary.world = @world.WorldConfig()
world.WorldConfig.seed = 0
world.WorldConfig.size = 400

transformer.TransformerConfig.d_model = 32
transformer.TransformerConfig.num_heads = 2
transformer.TransformerConfig.num_kv_heads = 1
transformer.TransformerConfig.mlp_dim = 64
TASK_FEATURE_LENGTHS = {'inputs': 160, 'targets': 128}
BATCH_SIZE = 4
WARMUP_STEPS = 2
"""


@pytest.fixture
def tiny_run_gin(tmp_path):
  """A Gin file that points a training run (after models/tiny.gin and a run file) at the tiny world
  and shrinks the model, for `masksearch train --gin_file=...` in tests and subprocesses."""
  path = tmp_path / "tiny_run.gin"
  path.write_text(TINY_RUN_GIN)
  return path


# -- tiny policies -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_policy(vocab):
  """(config, params) of a random 2-layer decoder over the `vocab` fixture; its output layer is larger than at
  initialisation, so greedy decoding wanders over many tokens."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  from masksearch_jax.models.transformer import Decoder, TransformerConfig
  config = TransformerConfig(vocab_size=vocab.vocab_size, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2,
                             mlp_dim=64)
  params = nn.unbox(Decoder(config).init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"])
  return config, dict(params, lm_head=params["lm_head"] * 3.0)


# -- a scripted policy for the search loop ---------------------------------------------------------


class ScriptedPolicy:
  """The KV-cache sampler's interface, writing prescribed turns: `scripts[prompt]` lists the turn texts.

  It records every chunk the loop appends to each row (`appended[prompt]`), so tests can check what the
  environment sends and when. Stop reasons follow the text: a turn ending in `</search>` or `</answer>`
  stopped on a stop sequence, any other ran out of tokens; a full cache stops it with CAPACITY.
  """

  def __init__(self, vocab, scripts: dict[str, list[str]], *, batch_size: int, capacity: int, max_new_tokens: int):
    self.encoder = ContextEncoder(vocab)
    self.vocab = vocab
    self.scripts = scripts
    self.batch_size, self.capacity, self.max_new_tokens = batch_size, capacity, max_new_tokens
    self.appended: dict[str, list[list[int]]] = {}  # Prompt -> chunks appended to its row, in order.
    self.generate_calls = 0

  def new_state(self):
    return {"rows": [None] * self.batch_size, "lengths": np.zeros(self.batch_size, int), "turns": {}}

  def reset(self, state, rows):
    for b in np.flatnonzero(rows):
      state["rows"][b], state["lengths"][b] = None, 0
    return state

  def lengths(self, state):
    return state["lengths"].copy()

  def append(self, state, chunks):
    for b, chunk in enumerate(chunks):
      if chunk is None or not len(chunk):
        continue
      chunk = [int(t) for t in chunk]
      assert state["lengths"][b] + len(chunk) <= self.capacity
      if state["rows"][b] is None:  # A new row: [bos] + prompt.
        assert chunk[0] == 0
        state["rows"][b] = self.vocab.decode(chunk[1:])
        state["turns"][state["rows"][b]] = 0
      self.appended.setdefault(state["rows"][b], []).append(chunk)
      state["lengths"][b] += len(chunk)
    return state

  def generate(self, state, rng, *, active=None, sampling=None, max_new_tokens=None):
    self.generate_calls += 1
    width = self.max_new_tokens
    tokens = np.zeros((self.batch_size, width), np.int32)
    logprobs = np.zeros((self.batch_size, width), np.float32)
    num = np.zeros(self.batch_size, np.int32)
    reasons = np.zeros(self.batch_size, np.int32)
    for b in np.flatnonzero(active):
      prompt = state["rows"][b]
      turn = state["turns"][prompt]
      state["turns"][prompt] += 1
      text = self.scripts[prompt][turn]
      ids = self.encoder.encode(text)
      reason = StopReason.STOP_SEQUENCE if text.endswith(("</search>", "</answer>")) else StopReason.MAX_NEW_TOKENS
      room = self.capacity - state["lengths"][b]
      if len(ids) >= room:
        ids, reason = ids[:room], StopReason.CAPACITY
      ids = ids[:width]
      tokens[b, :len(ids)] = ids
      logprobs[b, :len(ids)] = -0.25
      num[b], reasons[b] = len(ids), reason
      state["lengths"][b] += len(ids)
    return state, GenerationResult(tokens, logprobs, num, reasons)
