"""Hugging Face import and export: logit parity with transformers, round trips, clear refusals.

Tiny random Qwen2 and Llama models are built with transformers (torch CPU, float32, fixed
seeds), saved with `save_pretrained`, imported, and run through our `Decoder`; the logits
must match transformers' within 1e-4. The export is reloaded with `from_pretrained` and
must match again. Weights are re-drawn at unit scale (biases and norm scales included) so
that every tensor moves the logits: transformers' default init leaves biases at zero and
norms at one, which would let a dropped or misplaced bias pass.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from masksearch_jax.models import hf_io
from masksearch_jax.models.transformer import Decoder, TransformerConfig
from masksearch_jax.training import checkpoints

TOLERANCE = 1e-4
SIZES = dict(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2)
# Small enough that, with head_dim 16 and theta 10000, the 8 frequencies fall in all three
# llama3 bands (kept, smoothed, divided by factor) at the positions tested.
LLAMA3 = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
              original_max_position_embeddings=32)

CASES = {
    "qwen2_tied": ("qwen2", dict(tie_word_embeddings=True, rope_theta=1_000_000.0), None),
    "qwen2_untied_sharded": ("qwen2", dict(tie_word_embeddings=False, num_hidden_layers=3), "40KB"),
    "llama_gqa_untied": ("llama", dict(tie_word_embeddings=False, rope_theta=500_000.0), None),
    "llama3_tied_sharded": ("llama", dict(tie_word_embeddings=True, rope_scaling=LLAMA3, max_position_embeddings=128),
                            "40KB"),
    "llama3_untied_head_dim32": ("llama", dict(tie_word_embeddings=False, head_dim=32, num_hidden_layers=3,
                                               rope_scaling=LLAMA3, max_position_embeddings=128), None),
}


def _build(model_type: str, seed: int = 0, **overrides):
  """A tiny random transformers model in eval mode, float32, weights at unit scale."""
  torch.manual_seed(seed)
  fields = {**SIZES, **overrides}
  if model_type == "qwen2":
    model = Qwen2ForCausalLM(Qwen2Config(**fields))
  else:
    model = LlamaForCausalLM(LlamaConfig(**fields))
  model = model.to(torch.float32).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("norm.weight"):
        p.copy_(1 + 0.2 * torch.randn_like(p))
      elif p.ndim == 1:
        p.copy_(0.3 * torch.randn_like(p))
      else:
        p.copy_(torch.randn_like(p) / p.shape[1] ** 0.5)
  return model


def _tokens(seed: int = 0) -> np.ndarray:
  return np.random.RandomState(seed).randint(0, SIZES["vocab_size"], size=(2, 16)).astype(np.int32)


def _hf_logits(model, tokens: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return model(torch.from_numpy(tokens.astype(np.int64))).logits.numpy()


def _our_logits(config: TransformerConfig, params, tokens: np.ndarray) -> np.ndarray:
  return np.asarray(Decoder(config).apply({"params": params}, jnp.asarray(tokens)))


def _max_diff(a, b) -> float:
  return float(np.max(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32))))


def _assert_trees_identical(a, b):
  flat_a, flat_b = hf_io._flatten(a), hf_io._flatten(b)  # pylint: disable=protected-access
  assert flat_a.keys() == flat_b.keys()
  for path in flat_a:
    x, y = np.asarray(flat_a[path]), np.asarray(flat_b[path])
    assert x.dtype == y.dtype and x.shape == y.shape, path
    np.testing.assert_array_equal(x, y, err_msg="/".join(path))


@pytest.fixture(scope="module")
def saved_llama(tmp_path_factory):
  """A tiny untied Llama saved by transformers (one file), for the error cases to damage."""
  directory = tmp_path_factory.mktemp("hf") / "llama"
  _build("llama").save_pretrained(directory)
  return directory


def _copy(directory, tmp_path):
  return shutil.copytree(directory, tmp_path / "copy")


# -- parity -----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
def test_import_and_export_match_transformers(case, tmp_path):
  model_type, overrides, shard_size = CASES[case]
  model = _build(model_type, **overrides)
  hf_dir = tmp_path / "hf"
  model.save_pretrained(hf_dir, max_shard_size=shard_size or "50GB")
  assert (hf_dir / hf_io.INDEX_FILE).is_file() == bool(shard_size)
  tokens = _tokens()
  reference = _hf_logits(model, tokens)

  config, params = hf_io.import_hf(hf_dir)
  assert config.qkv_bias == (model_type == "qwen2")
  assert config.tie_embeddings == overrides["tie_word_embeddings"]
  assert config.num_layers == overrides.get("num_hidden_layers", 2)
  assert config.kv_dim == overrides.get("head_dim", 16)
  assert config.rope_theta == overrides.get("rope_theta", 10_000.0)
  assert (config.rope_scaling is not None) == ("rope_scaling" in overrides)
  assert ("lm_head" in params) != config.tie_embeddings
  ours = _our_logits(config, params, tokens)
  import_diff = _max_diff(ours, reference)
  assert import_diff <= TOLERANCE, import_diff
  assert np.abs(reference).max() > 1.0  # The logits are not trivially small.

  out = hf_io.export_hf(params, config, tmp_path / "export", model_type=model_type,
                        max_shard_bytes=30_000 if shard_size else None)
  assert (out / hf_io.INDEX_FILE).is_file() == bool(shard_size)
  cls = Qwen2ForCausalLM if model_type == "qwen2" else LlamaForCausalLM
  reloaded = cls.from_pretrained(out, dtype=torch.float32).eval()
  reloaded_logits = _hf_logits(reloaded, tokens)
  export_diff = max(_max_diff(reloaded_logits, ours), _max_diff(reloaded_logits, reference))
  assert export_diff <= TOLERANCE, export_diff
  # The reloaded model holds exactly the original weights.
  original_state = model.state_dict()
  for name, value in reloaded.state_dict().items():
    torch.testing.assert_close(value, original_state[name], rtol=0, atol=0, msg=name)

  config_again, params_again = hf_io.import_hf(out)
  assert config_again == config
  _assert_trees_identical(params, params_again)
  print(f"{case}: import max |diff| {import_diff:.2e}, export max |diff| {export_diff:.2e}")


def test_llama3_scaling_changes_the_logits(tmp_path):
  # Guards the parity test of llama3 rope scaling against a no-op: without the scaling, the
  # same weights give clearly different logits.
  model = _build("llama", rope_scaling=LLAMA3, max_position_embeddings=128)
  model.save_pretrained(tmp_path)
  config, params = hf_io.import_hf(tmp_path)
  tokens = _tokens()
  unscaled = dataclasses.replace(config, rope_scaling=None)
  assert _max_diff(_our_logits(config, params, tokens), _our_logits(unscaled, params, tokens)) > 1e-2


def test_bfloat16_checkpoints(tmp_path):
  model = _build("qwen2").to(torch.bfloat16)
  model.save_pretrained(tmp_path / "bf16")
  config, params = hf_io.import_hf(tmp_path / "bf16")
  state = model.state_dict()
  np.testing.assert_array_equal(params["embedding"], state["model.embed_tokens.weight"].float().numpy())
  np.testing.assert_array_equal(params["layers"]["mlp"]["down_kernel"][1],
                                state["model.layers.1.mlp.down_proj.weight"].float().numpy().T)
  assert params["embedding"].dtype == np.float32

  _, params_bf16 = hf_io.import_hf(tmp_path / "bf16", dtype=jnp.bfloat16)
  assert params_bf16["layers"]["attention"]["query_kernel"].dtype == ml_dtypes.bfloat16

  out = hf_io.export_hf(params, config, tmp_path / "export", model_type="qwen2", dtype="bfloat16")
  assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
  reloaded = Qwen2ForCausalLM.from_pretrained(out, dtype=torch.bfloat16)
  for name, value in reloaded.state_dict().items():
    assert value.dtype == torch.bfloat16
    torch.testing.assert_close(value, state[name], rtol=0, atol=0, msg=name)


# -- configs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", ["qwen2", "llama"])
@pytest.mark.parametrize("config", [
    TransformerConfig(vocab_size=300, num_layers=3, d_model=64, num_heads=4, num_kv_heads=2, mlp_dim=128,
                      rope_theta=1e6, rms_norm_eps=1e-5, tie_embeddings=True),
    TransformerConfig(vocab_size=512, num_layers=2, d_model=64, num_heads=8, num_kv_heads=8, head_dim=16,
                      mlp_dim=96, rope_theta=5e5, rope_scaling=dict(factor=8.0, low_freq_factor=1.0,
                                                                    high_freq_factor=4.0,
                                                                    original_max_position_embeddings=8192)),
])
def test_config_round_trip(model_type, config):
  config = dataclasses.replace(config, qkv_bias=model_type == "qwen2")
  hf = hf_io.config_to_hf(config, model_type, bos_token_id=1, eos_token_id=[2, 3])
  assert hf["architectures"] == [hf_io.ARCHITECTURES[model_type]]
  assert hf["eos_token_id"] == [2, 3] and hf["dtype"] == "float32"
  assert hf_io.config_from_hf(json.loads(json.dumps(hf))) == config
  # transformers reads the same numbers back.
  hf_config = (Qwen2Config if model_type == "qwen2" else LlamaConfig).from_dict(hf)
  assert hf_config.num_key_value_heads == config.num_kv_heads
  assert hf_config.rope_parameters["rope_theta"] == config.rope_theta
  if config.rope_scaling:
    assert hf_config.rope_parameters["rope_type"] == "llama3"
    assert hf_config.rope_parameters["factor"] == config.rope_scaling["factor"]
    assert hf_config.max_position_embeddings == 8192 * 8


def test_config_reads_legacy_and_current_rope_layouts():
  base = dict(model_type="llama", vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=131072)
  scaling = dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192)
  legacy = hf_io.config_from_hf({**base, "rope_theta": 5e5, "rope_scaling": {"rope_type": "llama3", **scaling}})
  current = hf_io.config_from_hf({**base, "rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5, **scaling}})
  older = hf_io.config_from_hf({**base, "rope_theta": 5e5, "rope_scaling": {"type": "llama3", **scaling}})
  assert legacy == current == older
  assert legacy.rope_theta == 5e5 and legacy.rope_scaling == scaling
  # original_max_position_embeddings falls back to max_position_embeddings, as in transformers.
  short = {k: v for k, v in scaling.items() if k != "original_max_position_embeddings"}
  assert hf_io.config_from_hf({**base, "rope_scaling": {"rope_type": "llama3", **short}}).rope_scaling[
      "original_max_position_embeddings"] == 131072
  # Defaults: no kv heads means MHA, no rope means theta 10000.
  plain = hf_io.config_from_hf({k: v for k, v in base.items() if k != "num_key_value_heads"})
  assert plain.num_kv_heads == 4 and plain.rope_theta == 10_000.0 and plain.rope_scaling is None
  with pytest.raises(hf_io.UnsupportedHFConfigError, match="disagree"):
    hf_io.config_from_hf({**base, "rope_scaling": {"rope_type": "llama3", **scaling},
                          "rope_parameters": {"rope_type": "default", "rope_theta": 5e5}})
  # A real Qwen2.5 config: sliding window configured but off.
  qwen = dict(base, model_type="qwen2", rope_theta=1e6, rope_scaling=None, use_sliding_window=False,
              sliding_window=131072, max_window_layers=21, tie_word_embeddings=True)
  assert hf_io.config_from_hf(qwen).qkv_bias


@pytest.mark.parametrize("change, message", [
    (dict(model_type="mistral"), "model_type 'mistral' is not supported"),
    (dict(rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}), "rope type 'yarn'"),
    (dict(rope_scaling={"type": "linear", "factor": 2.0}), "rope type 'linear'"),
    (dict(rope_scaling={"rope_type": "llama3", "factor": 8.0}), "lacks"),
    (dict(partial_rotary_factor=0.5), "partial_rotary_factor"),
    (dict(hidden_act="gelu"), "hidden_act 'gelu'"),
    (dict(mlp_bias=True), "mlp_bias"),
    (dict(attention_bias=True), "o_proj"),
    (dict(model_type="qwen2", use_sliding_window=True, sliding_window=8, max_window_layers=0), "sliding window"),
    (dict(model_type="qwen2", layer_types=["full_attention", "sliding_attention"]), "sliding window"),
    (dict(rope_parameters={"full_attention": {"rope_type": "default"}}), "nested per layer type"),
])
def test_config_refusals(change, message):
  base = dict(model_type="llama", vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
              num_attention_heads=4)
  with pytest.raises(hf_io.UnsupportedHFConfigError, match=message):
    hf_io.config_from_hf({**base, **change})


def test_config_missing_size():
  with pytest.raises(KeyError, match="intermediate_size"):
    hf_io.config_from_hf(dict(model_type="qwen2", vocab_size=300, hidden_size=64, num_hidden_layers=2,
                              num_attention_heads=4))


def test_export_refuses_configs_the_model_type_cannot_express():
  config = TransformerConfig(vocab_size=300, d_model=64, num_heads=4, num_kv_heads=2, mlp_dim=128)
  with pytest.raises(hf_io.UnsupportedHFConfigError, match="export it as llama"):
    hf_io.config_to_hf(config, "qwen2")
  with pytest.raises(hf_io.UnsupportedHFConfigError, match="export it as qwen2"):
    hf_io.config_to_hf(dataclasses.replace(config, qkv_bias=True), "llama")
  with pytest.raises(hf_io.UnsupportedHFConfigError, match="soft_cap"):
    hf_io.config_to_hf(dataclasses.replace(config, attention_logits_soft_cap=30.0), "llama")
  with pytest.raises(hf_io.UnsupportedHFConfigError, match="key_shift"):
    hf_io.config_to_hf(dataclasses.replace(config, key_shift=True), "llama")
  with pytest.raises(hf_io.UnsupportedHFConfigError, match="gpt2"):
    hf_io.config_to_hf(config, "gpt2")


# -- tensor errors ----------------------------------------------------------------------------


def _edit_tensors(directory, edit):
  path = directory / hf_io.SINGLE_FILE
  tensors = load_file(path)
  edit(tensors)
  save_file(tensors, path, metadata={"format": "pt"})


def test_missing_tensor(saved_llama, tmp_path):
  directory = _copy(saved_llama, tmp_path)
  _edit_tensors(directory, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
  with pytest.raises(hf_io.CheckpointMismatchError,
                     match=r"missing tensors \['model.layers.1.mlp.up_proj.weight'\], unexpected tensors \[\]"):
    hf_io.import_hf(directory)


def test_unexpected_tensor_and_ignored_buffers(saved_llama, tmp_path):
  directory = _copy(saved_llama, tmp_path)

  def edit(tensors):
    tensors["model.layers.0.rotary_emb.inv_freq"] = np.ones(8, np.float32)  # Ignored.
    tensors["model.layers.2.mlp.up_proj.weight"] = np.ones((128, 64), np.float32)  # A third layer.

  _edit_tensors(directory, edit)
  with pytest.raises(hf_io.CheckpointMismatchError,
                     match=r"missing tensors \[\], unexpected tensors \['model.layers.2.mlp.up_proj.weight'\]"):
    hf_io.import_hf(directory)


def test_wrong_shape(saved_llama, tmp_path):
  directory = _copy(saved_llama, tmp_path)
  _edit_tensors(directory, lambda t: t.update({"model.layers.0.self_attn.k_proj.weight": np.zeros((64, 64),
                                                                                                  np.float32)}))
  with pytest.raises(hf_io.CheckpointMismatchError,
                     match=r"model.layers.0.self_attn.k_proj.weight has shape \(64, 64\).*\(32, 64\)"):
    hf_io.import_hf(directory)


def test_tied_checkpoint_with_a_different_head(saved_llama, tmp_path):
  directory = _copy(saved_llama, tmp_path)
  config = json.loads((directory / "config.json").read_text())
  (directory / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": True}))
  with pytest.raises(hf_io.CheckpointMismatchError, match="lm_head.weight differs"):
    hf_io.import_hf(directory)
  # A tied checkpoint that stores the head as a copy of the embedding is fine.
  _edit_tensors(directory, lambda t: t.update({"lm_head.weight": t["model.embed_tokens.weight"]}))
  assert "lm_head" not in hf_io.import_hf(directory)[1]


def test_no_safetensors_and_broken_index(saved_llama, tmp_path):
  directory = _copy(saved_llama, tmp_path)
  (directory / hf_io.SINGLE_FILE).rename(directory / "pytorch_model.bin")
  with pytest.raises(FileNotFoundError, match="convert them to safetensors"):
    hf_io.import_hf(directory)
  (directory / hf_io.INDEX_FILE).write_text(json.dumps({"weight_map": {"model.norm.weight": "gone.safetensors"}}))
  with pytest.raises(FileNotFoundError, match="gone.safetensors"):
    hf_io.import_hf(directory)


# -- export writing ---------------------------------------------------------------------------


def test_export_files_and_refusals(saved_llama, tmp_path, monkeypatch):
  config, params = hf_io.import_hf(saved_llama)
  out = hf_io.export_hf(params, config, tmp_path / "out", model_type="llama", max_shard_bytes=50_000)
  index = json.loads((out / hf_io.INDEX_FILE).read_text())
  shards = sorted(set(index["weight_map"].values()))
  assert len(shards) > 1 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
  assert sorted(p.name for p in out.iterdir()) == sorted(["config.json", hf_io.INDEX_FILE, *shards])
  assert index["metadata"]["total_size"] == config.num_params() * 4
  with safe_open(out / shards[0], framework="numpy") as handle:
    assert handle.metadata() == {"format": "pt"}

  with pytest.raises(FileExistsError, match="not empty"):
    hf_io.export_hf(params, config, out, model_type="llama")
  hf_io.export_hf(params, config, out, model_type="llama", overwrite=True)
  assert sorted(p.name for p in out.iterdir()) == ["config.json", hf_io.SINGLE_FILE]

  broken = dict(params, layers=dict(params["layers"], mlp={"up_kernel": params["layers"]["mlp"]["up_kernel"]}))
  with pytest.raises(hf_io.CheckpointMismatchError, match="missing.*layers/mlp/gate_kernel"):
    hf_io.export_hf(broken, config, tmp_path / "broken", model_type="llama")

  # A failure while writing leaves neither the output nor a temporary directory behind.
  def fail(*args, **kwargs):
    raise OSError("disk full")

  monkeypatch.setattr(hf_io, "save_file", fail)
  with pytest.raises(OSError, match="disk full"):
    hf_io.export_hf(params, config, tmp_path / "failed", model_type="llama")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# -- parameter checkpoints (the CLI functions) ------------------------------------------------


def test_import_to_checkpoint_and_export_from_checkpoint(tmp_path, capsys):
  model = _build("qwen2", tie_word_embeddings=True, bos_token_id=7, eos_token_id=[8, 9],
                 max_position_embeddings=4096)
  model.save_pretrained(tmp_path / "hf")
  checkpoint = hf_io.import_to_checkpoint(tmp_path / "hf", tmp_path / "ckpt")
  assert "Imported qwen2" in capsys.readouterr().out
  config, params = hf_io.import_hf(tmp_path / "hf")
  assert checkpoints.load_config(checkpoint) == config
  _assert_trees_identical(params, checkpoints.load_params(checkpoint))

  out = hf_io.export_from_checkpoint(checkpoint, tmp_path / "export", "qwen2", max_shard_bytes=40_000)
  assert "Exported" in capsys.readouterr().out
  hf_config = json.loads((out / "config.json").read_text())
  assert (hf_config["bos_token_id"], hf_config["eos_token_id"], hf_config["max_position_embeddings"]) == (
      7, [8, 9], 4096)
  reloaded = Qwen2ForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
  tokens = _tokens(1)
  assert _max_diff(_hf_logits(reloaded, tokens), _hf_logits(model, tokens)) <= TOLERANCE


def test_cli_import_then_export_round_trip(tmp_path, capsys):
  import transformers

  from masksearch_jax import cli
  torch.manual_seed(0)
  config = transformers.Qwen2Config(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
  transformers.Qwen2ForCausalLM(config).eval().save_pretrained(tmp_path / "hf")
  assert cli.main(["import-hf", "--hf_dir", str(tmp_path / "hf"), "--out", str(tmp_path / "ckpt")]) == 0
  assert cli.main(["export-hf", "--checkpoint", str(tmp_path / "ckpt"), "--out", str(tmp_path / "back"),
                   "--model_type", "qwen2"]) == 0
  original = transformers.Qwen2ForCausalLM.from_pretrained(tmp_path / "hf").eval()
  exported = transformers.Qwen2ForCausalLM.from_pretrained(tmp_path / "back").eval()
  tokens = torch.arange(12)[None]
  with torch.no_grad():
    assert torch.equal(original(tokens).logits, exported(tokens).logits)
  capsys.readouterr()
  assert cli.main(["export-hf", "--checkpoint", str(tmp_path / "ckpt"), "--out", str(tmp_path / "as_llama"),
                   "--model_type", "llama"]) == 2
  assert "bias" in capsys.readouterr().err  # Refused: a model with q/k/v biases is not a Llama.
  assert not (tmp_path / "as_llama").exists()
