"""The project's own JAX policy as a chat backend (`LLMBackend`).

So the trained policy can be the teacher, rewriter, observer or judge of the
trajectory pipeline, and be served over HTTP (`masksearch serve-model`).

A conversation is turned into the policy's input the way the policy was trained:
the contents of the messages, concatenated in order, after the start token. A
search-agent conversation is then exactly the stream of a trajectory: the prompt
(user), the model's turns (assistant) and the observations (user); a single user
message holding `protocol.qa_prompt(...)` is the policy's usual prompt. Roles
carry no markup because the policy never saw any.

Generation uses the KV-cache `Sampler`: conversations go in batches of the
sampler's size, each stopping on the end of sequence or on the request's stop
strings (checked inside the decode loop as token sequences, and again on the text).
"""

from __future__ import annotations

import dataclasses
import os
import threading
from typing import Any, Sequence

import gin
import jax
import numpy as np

from masksearch_jax.agent.llm_backends import LLMBackend, LLMError, Message
from masksearch_jax.data.trajectories import ContextEncoder
from masksearch_jax.models.sampler import Sampler, SamplingParams, StopReason
from masksearch_jax.models.span_scorer import load_checkpoint
from masksearch_jax.models.transformer import TransformerConfig


class ContextLengthError(LLMError):
  """The conversation (or it plus the requested reply) does not fit the policy's context."""


@dataclasses.dataclass(frozen=True)
class Completion:
  """One generated reply.

  Attributes:
    text: The reply, cut before the first stop string; without the end-of-sequence token.
    finish_reason: "stop" (a stop string or the end of sequence) or "length" (max_tokens or context).
    prompt_tokens: Tokens of the conversation (with the start token).
    completion_tokens: Tokens generated (stop tokens included).
    token_ids: The generated ids.
    logprobs: The policy's log-probability of each generated id.
  """

  text: str
  finish_reason: str
  prompt_tokens: int
  completion_tokens: int
  token_ids: tuple[int, ...]
  logprobs: tuple[float, ...]


def conversation_text(messages: Sequence[Message]) -> str:
  """The policy's input for a conversation: its messages' contents in order (see the module docstring)."""
  parts = []
  for i, message in enumerate(messages):
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):  # OpenAI's content parts; only text parts are meaningful here.
      content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    if not isinstance(content, str):
      raise ValueError(f"message {i} has no text content")
    parts.append(content)
  return "".join(parts)


@gin.configurable(module="masksearch_jax.agent.policy_backend")
class PolicyBackend(LLMBackend):
  """A chat backend running the project's policy on this machine's devices.

  Args:
    checkpoint: A parameter checkpoint, a run's checkpoints directory (newest step) or a
      run's model directory; or None with `params` and `config`.
    params: The policy's parameters (instead of a checkpoint).
    config: Its shape (read from the checkpoint when None).
    vocabulary: Its seqio vocabulary; None uses the tasks' vocabulary (`seqio_tasks.VOCABULARY`,
      so Gin decides).
    batch_size: Conversations decoded together.
    max_length: Most tokens of a conversation plus its reply.
    max_new_tokens: Most tokens of one reply (the default and the limit of `max_tokens`).
    seed: Seed of sampling (each call draws the next key from it).
    bos_id: The token before the conversation (the feature converter's start token, 0).
    model_name: The name reported by the HTTP server.
    partitioner: Places the policy on a mesh (None: one device).
  """

  def __init__(self, checkpoint: str | os.PathLike | None = None, *, params: Any = None,
               config: TransformerConfig | None = None, vocabulary: Any = None, batch_size: int = 8,
               max_length: int = 2048, max_new_tokens: int = 512, seed: int = 0, bos_id: int = 0,
               model_name: str = "masksearch-policy", partitioner: Any = None):
    if (checkpoint is None) == (params is None):
      raise ValueError("PolicyBackend needs exactly one of checkpoint and params")
    if checkpoint is not None:
      params, config = load_checkpoint(checkpoint, config)
    elif config is None:
      raise ValueError("PolicyBackend(params=...) needs config")
    if vocabulary is None:
      from masksearch_jax.data import seqio_tasks
      vocabulary = seqio_tasks.VOCABULARY.vocabulary
    if vocabulary.vocab_size > config.vocab_size:
      raise ValueError(f"the vocabulary has {vocabulary.vocab_size} ids but the model only {config.vocab_size}")
    self.config = config
    self.params = params
    self.vocabulary = vocabulary
    self.encoder = ContextEncoder(vocabulary)
    self.batch_size = batch_size
    self.max_length = max_length
    self.max_new_tokens = max_new_tokens
    self.bos_id = bos_id
    self.model_name = model_name
    self.partitioner = partitioner
    self._rng = jax.random.PRNGKey(seed)
    self._samplers: dict[tuple, Sampler] = {}
    self._lock = threading.Lock()

  def _sampler(self, stops: tuple[tuple[int, ...], ...]) -> Sampler:
    """A sampler per set of stop sequences (each compiles once)."""
    sampler = self._samplers.get(stops)
    if sampler is None:
      if len(self._samplers) >= 8:  # Bounded: requests with ever new stop strings must not pile up programs.
        self._samplers.pop(next(iter(self._samplers)))
      sampler = Sampler(self.config, self.params, batch_size=self.batch_size, capacity=self.max_length,
                        max_new_tokens=self.max_new_tokens, stop_sequences=stops, eos_id=self.vocabulary.eos_id,
                        pad_id=self.vocabulary.pad_id, prefill_buckets=(64, 256, 1024),
                        partitioner=self.partitioner)
      self._samplers[stops] = sampler
      if self.partitioner is not None:
        self.params = sampler.params  # Placed once, shared by the next samplers.
    return sampler

  def encode_conversation(self, messages: Sequence[Message]) -> list[int]:
    return [self.bos_id, *self.encoder.encode(conversation_text(messages), start_of_sequence=True)]

  def generate(self, conversations: Sequence[Sequence[Message]], *, max_tokens: int | None = None,
               temperature: float = 0.0, top_p: float = 1.0, stop: Sequence[str] | None = None
               ) -> list[Completion | LLMError]:
    """Replies to each conversation; a conversation that does not fit gets a `ContextLengthError`."""
    max_tokens = self.max_new_tokens if max_tokens is None else int(max_tokens)
    if not 0 < max_tokens <= self.max_new_tokens:
      raise ValueError(f"max_tokens must be in [1, {self.max_new_tokens}], got {max_tokens}")
    sampling = SamplingParams(temperature=float(temperature), top_p=float(top_p))
    stop = tuple(s for s in (stop or ()) if s)
    stops = tuple(tuple(self.encoder.encode(s)) for s in stop)
    results: list[Completion | LLMError] = [None] * len(conversations)  # type: ignore[list-item]
    contexts: list[tuple[int, list[int]]] = []
    for i, messages in enumerate(conversations):
      try:
        ids = self.encode_conversation(messages)
      except ValueError as e:
        results[i] = LLMError(f"conversation {i}: {e}")
        continue
      if len(ids) >= self.max_length:
        results[i] = ContextLengthError(f"conversation {i} has {len(ids)} tokens; the policy's context is "
                                        f"{self.max_length} tokens, with room for at least one more")
        continue
      contexts.append((i, ids))
    with self._lock:
      sampler = self._sampler(stops)
      for start in range(0, len(contexts), self.batch_size):
        batch = contexts[start:start + self.batch_size]
        chunks = [ids for _, ids in batch] + [None] * (self.batch_size - len(batch))
        active = np.arange(self.batch_size) < len(batch)
        state = sampler.append(sampler.reset(sampler.new_state(), active), chunks)
        self._rng, key = jax.random.split(self._rng)
        _, result = sampler.generate(state, key, active=active, sampling=sampling, max_new_tokens=max_tokens)
        for row, (i, ids) in enumerate(batch):
          results[i] = self._completion(result.row_tokens(row), result.row_logprobs(row),
                                        result.stop_reasons[row], len(ids), stop)
    return results

  def _completion(self, tokens: np.ndarray, logprobs: np.ndarray, reason: int, prompt_tokens: int,
                  stop: tuple[str, ...]) -> Completion:
    ids = [int(t) for t in tokens]
    finish = "stop" if reason in (StopReason.STOP_SEQUENCE, StopReason.END_OF_SEQUENCE) else "length"
    text_ids = ids[:-1] if ids and ids[-1] == self.vocabulary.eos_id else ids
    text = self.encoder.decode(text_ids)
    cut = min((text.find(s) for s in stop if s in text), default=-1)
    if cut >= 0:  # A stop string may also arise from other tokens than its own encoding.
      text, finish = text[:cut], "stop"
    return Completion(text=text, finish_reason=finish, prompt_tokens=prompt_tokens, completion_tokens=len(ids),
                      token_ids=tuple(ids), logprobs=tuple(float(p) for p in logprobs))

  def chat(self, messages: list[Message], *, max_tokens: int | None = None, temperature: float = 0.0,
           stop: list[str] | None = None) -> str:
    result = self.generate([messages], max_tokens=max_tokens, temperature=temperature, stop=stop)[0]
    if isinstance(result, LLMError):
      raise result
    return result.text

  def batch_chat(self, conversations: Sequence[list[Message]], **kwargs) -> list[str | LLMError]:
    return [r if isinstance(r, LLMError) else r.text for r in self.generate(conversations, **kwargs)]

  def __repr__(self) -> str:
    return f"PolicyBackend({self.model_name!r}, {self.config.num_params():,} parameters)"
