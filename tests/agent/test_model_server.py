"""The policy as a chat backend and behind the OpenAI-compatible server, called with the official `openai` client."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import jax.numpy as jnp
import numpy as np
import openai
import pytest
import requests

from masksearch_jax.agent import protocol
from masksearch_jax.agent.llm_backends import OpenAICompatibleBackend
from masksearch_jax.agent.model_server import ModelServer
from masksearch_jax.agent.policy_backend import ContextLengthError, PolicyBackend, conversation_text
from masksearch_jax.models.transformer import Decoder
from masksearch_jax.training.checkpoints import save_params

PROMPT = protocol.qa_prompt("Where was the director of Kelo born?")


@pytest.fixture(scope="module")
def backend(tiny_policy, vocab):
  config, params = tiny_policy
  return PolicyBackend(params=params, config=config, vocabulary=vocab, batch_size=4, max_length=400,
                       max_new_tokens=16)


@pytest.fixture(scope="module")
def server(backend):
  with ModelServer(backend, batch_wait_seconds=0.05).start() as s:
    yield s


def greedy_reference(tiny_policy, backend, messages, steps):
  """Greedy tokens by repeated full forward passes (no cache)."""
  config, params = tiny_policy
  ids = backend.encode_conversation(messages)
  out = []
  for _ in range(steps):
    logits = Decoder(config).apply({"params": params}, jnp.asarray([ids + out]))[0, -1]
    out.append(int(np.argmax(logits)))
  return out


def test_backend_greedy_reply_is_the_policy_continuing_the_conversation(tiny_policy, backend):
  messages = [{"role": "user", "content": PROMPT}]
  [completion] = backend.generate([messages], max_tokens=10, temperature=0.0)
  assert list(completion.token_ids) == greedy_reference(tiny_policy, backend, messages, 10)
  assert completion.finish_reason == "length" and completion.completion_tokens == 10
  assert completion.text == backend.encoder.decode(completion.token_ids)
  assert completion.prompt_tokens == len(backend.encode_conversation(messages))
  # A conversation is the stream of its contents: prompt, model turn, observation.
  turns = [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": "<think> x </think>"},
           {"role": "user", "content": "\n\n<information>Doc 1(Title: A) b\n</information>\n\n"}]
  assert conversation_text(turns) == "".join(t["content"] for t in turns)
  assert backend.chat(turns, max_tokens=5) == backend.encoder.decode(greedy_reference(tiny_policy, backend, turns, 5))


def test_backend_stops_on_a_stop_string_and_refuses_a_context_too_long(backend):
  messages = [{"role": "user", "content": PROMPT}]
  free = backend.generate([messages], max_tokens=16)[0].text
  stop = free[3:6]
  assert stop and stop in free
  cut = backend.generate([messages], max_tokens=16, stop=[stop])[0]
  assert cut.finish_reason == "stop" and cut.text == free[:free.find(stop)]
  long = [{"role": "user", "content": "paris " * 400}]
  results = backend.generate([long, messages], max_tokens=4)
  assert isinstance(results[0], ContextLengthError) and "the policy's context is 400 tokens" in str(results[0])
  assert results[1].completion_tokens == 4  # The other conversation is unharmed.
  assert isinstance(backend.batch_chat([long], max_tokens=4)[0], ContextLengthError)


def test_the_openai_client_talks_to_the_server(server, backend):
  client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
  messages = [{"role": "user", "content": PROMPT}]
  reply = client.chat.completions.create(model="anything", messages=messages, max_tokens=8, temperature=0)
  assert reply.object == "chat.completion" and reply.model == backend.model_name
  assert reply.choices[0].message.role == "assistant"
  assert reply.choices[0].message.content == backend.chat(messages, max_tokens=8)
  assert reply.choices[0].finish_reason == "length"
  assert reply.usage.completion_tokens == 8
  assert reply.usage.prompt_tokens == len(backend.encode_conversation(messages))
  assert reply.usage.total_tokens == reply.usage.prompt_tokens + 8

  sampled = client.chat.completions.create(model="m", messages=messages, max_tokens=6, temperature=1.0, n=3,
                                           logprobs=True)
  assert len(sampled.choices) == 3 and sampled.usage.completion_tokens == 18
  for choice in sampled.choices:
    assert len(choice.logprobs.content) == 6
    assert all(item.logprob <= 0 for item in choice.logprobs.content)
    assert "".join(item.token for item in choice.logprobs.content) == choice.message.content

  assert [m.id for m in client.models.list().data] == [backend.model_name]

  with pytest.raises(openai.BadRequestError, match="streaming is not supported"):
    client.chat.completions.create(model="m", messages=messages, stream=True)
  with pytest.raises(openai.BadRequestError, match="'max_tokens' must be an integer in \\[1, 16\\]"):
    client.chat.completions.create(model="m", messages=messages, max_tokens=17)
  with pytest.raises(openai.BadRequestError) as error:
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "paris " * 400}])
  assert error.value.code == "context_length_exceeded"
  with pytest.raises(openai.BadRequestError, match="'messages' must be a non-empty list"):
    client.chat.completions.create(model="m", messages=[])


def test_bad_requests_get_openai_errors_and_the_server_goes_on(server):
  answer = requests.post(server.url + "/v1/chat/completions", data=b"{not json", timeout=10)
  assert answer.status_code == 400 and "not valid JSON" in answer.json()["error"]["message"]
  answer = requests.get(server.url + "/v1/chat/completions", timeout=10)
  assert answer.status_code == 405
  answer = requests.post(server.url + "/v2/else", json={}, timeout=10)
  assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"
  answer = requests.post(server.url + "/v1/chat/completions", timeout=10,
                         json={"messages": [{"role": "user", "content": "hi"}], "temperature": 9})
  assert answer.status_code == 400 and answer.json()["error"]["param"] == "temperature"
  assert requests.get(server.url + "/health", timeout=10).json()["status"] == "ok"


def test_concurrent_requests_are_decoded_together(server, backend):
  calls = []
  original = backend.generate

  def counting(conversations, **kwargs):
    calls.append(len(conversations))
    return original(conversations, **kwargs)

  backend.generate = counting
  try:
    client = OpenAICompatibleBackend(server.url + "/v1", "m", api_key_env=None, concurrency=4)
    prompts = [[{"role": "user", "content": protocol.qa_prompt(q)}] for q in ("a", "b b", "c c c", "d")]
    replies = client.batch_chat(prompts, max_tokens=5, temperature=0.0)
    client.close()
  finally:
    backend.generate = original
  assert replies == [backend.chat(p, max_tokens=5) for p in prompts]
  assert sum(calls) == 4 and len(calls) < 4, calls


def test_serve_model_command(tiny_policy, vocab, tmp_path):
  config, params = tiny_policy
  checkpoint = save_params(params, tmp_path / "policy", config)
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  process = subprocess.Popen([sys.executable, "-m", "masksearch_jax.cli", "serve-model", "--checkpoint",
                              str(checkpoint), "--vocabulary", vocab.sentencepiece_model_file, "--port", "0",
                              "--max_new_tokens", "16", "--max_length", "400"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
  try:
    line = []
    reader = threading.Thread(target=lambda: line.append(process.stdout.readline()))
    reader.start()
    reader.join(timeout=120)
    assert line and line[0].startswith("serving PolicyBackend"), process.stderr.read() if process.poll() else line
    url = line[0].split(" at ")[1].split()[0]
    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
    messages = [{"role": "user", "content": PROMPT}]
    reply = client.chat.completions.create(model="m", messages=messages, max_tokens=8, temperature=0)
    expected = PolicyBackend(params=params, config=config, vocabulary=vocab, max_length=400, max_new_tokens=16)
    assert reply.choices[0].message.content == expected.chat(messages, max_tokens=8)
  finally:
    process.terminate()
    process.wait(timeout=30)
