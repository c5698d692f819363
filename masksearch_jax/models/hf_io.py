"""Hugging Face checkpoints in and out: Qwen2 and Llama, safetensors, single or sharded.

A Hugging Face checkpoint directory holds `config.json` and either `model.safetensors`
or shards `model-0000i-of-0000n.safetensors` with `model.safetensors.index.json`
(its `weight_map` names the shard of every tensor). This module maps both ways:

- `config_from_hf` / `config_to_hf`: `config.json` <-> `TransformerConfig`. Anything
  our model does not compute the same way (another model type, a rope type other than
  the default or Llama 3's, an active sliding window, MLP or output-projection biases,
  another activation, partial rotary embeddings) is refused with a message naming it,
  rather than imported into a model that would silently disagree.
- `import_hf` / `export_hf`: the tensors. Hugging Face's `nn.Linear` stores [out, in];
  our kernels are [in, out] with the head axis split out ([d_model, heads, head_dim] for
  q/k/v, [heads, head_dim, d_model] for the output projection), and our per-layer
  parameters are stacked on a leading 'layers' axis (the decoder scans its blocks).
  Both layouts put head h's features at rows h * head_dim ... (h + 1) * head_dim - 1,
  and both rotate halves (`rotate_half`), so no permutation of q/k rows is needed.
- `import_to_checkpoint` / `export_from_checkpoint`: the same, to and from a
  parameter-only checkpoint (`checkpoints.save_params`), for `masksearch import-hf`
  and `masksearch export-hf`.

Reading needs no torch: safetensors' numpy reader, and its flax reader (on the host CPU)
for bfloat16 tensors, which numpy cannot name.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import ml_dtypes
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from masksearch_jax.models.transformer import TransformerConfig
from masksearch_jax.training import checkpoints

ARCHITECTURES = {"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM"}
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# Written next to a parameter checkpoint by `import_to_checkpoint`: the source config.json,
# so that an export of the same model type keeps its token ids and context length.
SOURCE_CONFIG_FILE = "hf_config.json"
_CARRIED_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id", "max_position_embeddings")
# Buffers some checkpoints carry; they are recomputed from the config, never learned.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq", "rotary_emb.original_inv_freq")
_LLAMA3_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
_EXPORT_DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16}


class UnsupportedHFConfigError(ValueError):
  """A Hugging Face config describes a model this code cannot reproduce exactly."""


class CheckpointMismatchError(ValueError):
  """Tensors missing, unexpected, or of the wrong shape for the config."""


# -- config.json <-> TransformerConfig -----------------------------------------------------------


def _rope_from_hf(params: Mapping[str, Any], hf_config: Mapping[str, Any], source: str) -> tuple[float, Any]:
  """(rope_theta, rope_scaling) from one rope dict (`rope_parameters` or legacy `rope_scaling`).

  Args:
    params: The rope dict; may be empty (default rope).
    hf_config: The whole config, for top-level `rope_theta`, `partial_rotary_factor` and
      `max_position_embeddings` (older configs keep them there).
    source: The key `params` came from, for error messages.
  """
  if any(isinstance(value, Mapping) for value in params.values()):
    raise UnsupportedHFConfigError(f"{source} is nested per layer type ({sorted(params)}); only one rope for "
                                   "all layers is supported")
  rope_type = params.get("rope_type", params.get("type", "default"))
  theta = float(params.get("rope_theta", hf_config.get("rope_theta", 10_000.0)))
  partial = params.get("partial_rotary_factor", hf_config.get("partial_rotary_factor", 1.0))
  if partial is not None and float(partial) != 1.0:
    raise UnsupportedHFConfigError(f"partial_rotary_factor {partial} is not supported (only 1.0)")
  if rope_type == "default":
    return theta, None
  if rope_type != "llama3":
    raise UnsupportedHFConfigError(f"rope type {rope_type!r} in {source} is not supported (only 'default' and "
                                   "'llama3')")
  values = dict(params)
  values.setdefault("original_max_position_embeddings", hf_config.get("max_position_embeddings"))
  missing = [key for key in _LLAMA3_KEYS if values.get(key) is None]
  if missing:
    raise UnsupportedHFConfigError(f"llama3 rope in {source} lacks {missing}")
  scaling = {key: float(values[key]) for key in _LLAMA3_KEYS[:3]}
  scaling["original_max_position_embeddings"] = int(values["original_max_position_embeddings"])
  return theta, scaling


def config_from_hf(hf_config: Mapping[str, Any]) -> TransformerConfig:
  """Our config for a Hugging Face `config.json` of model type 'qwen2' or 'llama'.

  Reads both the transformers 5 layout (`rope_parameters` holding `rope_theta` and the
  scaling) and the older one (top-level `rope_theta`, `rope_scaling`). The compute dtype
  is left at float32 whatever the checkpoint's `torch_dtype`/`dtype` says.

  Args:
    hf_config: The parsed `config.json`.

  Raises:
    UnsupportedHFConfigError: For a model type, rope, attention window, activation or bias
      our model does not compute; the message names the field.
    KeyError: When a required size (hidden_size, ...) is absent.
  """
  model_type = hf_config.get("model_type")
  if model_type not in ARCHITECTURES:
    raise UnsupportedHFConfigError(f"model_type {model_type!r} is not supported (only {sorted(ARCHITECTURES)})")

  def required(key):
    if hf_config.get(key) is None:
      raise KeyError(f"config.json of a {model_type} model lacks {key!r}")
    return int(hf_config[key])

  hidden_act = hf_config.get("hidden_act", "silu")
  if hidden_act != "silu":
    raise UnsupportedHFConfigError(f"hidden_act {hidden_act!r} is not supported (only 'silu')")
  if model_type == "llama":
    if hf_config.get("mlp_bias"):
      raise UnsupportedHFConfigError("mlp_bias true is not supported: our MLP has no biases")
    if hf_config.get("attention_bias"):
      raise UnsupportedHFConfigError("attention_bias true is not supported for llama: it also puts a bias on "
                                     "o_proj, which our attention does not have")
    qkv_bias = False
  else:
    # Qwen2 always has q/k/v biases and none on o_proj or the MLP. transformers makes layer
    # i slide when use_sliding_window and i >= max_window_layers; layer_types, when written,
    # says the same per layer.
    qkv_bias = True
    num_layers = required("num_hidden_layers")
    sliding = [t for t in hf_config.get("layer_types") or [] if t != "full_attention"]
    if (hf_config.get("use_sliding_window") and hf_config.get("sliding_window", 4096) is not None
        and hf_config.get("max_window_layers", 28) < num_layers):
      sliding.append("sliding_attention")
    if sliding:
      raise UnsupportedHFConfigError(
          f"sliding window attention is active (use_sliding_window={hf_config.get('use_sliding_window')}, "
          f"max_window_layers={hf_config.get('max_window_layers')}, layer_types={hf_config.get('layer_types')}); "
          "only full attention is supported")

  legacy, current = hf_config.get("rope_scaling"), hf_config.get("rope_parameters")
  rope_theta, rope_scaling = _rope_from_hf(legacy or current or {}, hf_config,
                                           "rope_scaling" if legacy else "rope_parameters")
  if legacy and current and _rope_from_hf(current, hf_config, "rope_parameters") != (rope_theta, rope_scaling):
    raise UnsupportedHFConfigError(f"rope_scaling {legacy} and rope_parameters {current} disagree")

  d_model, num_heads = required("hidden_size"), required("num_attention_heads")
  head_dim = hf_config.get("head_dim") or d_model // num_heads
  return TransformerConfig(
      vocab_size=required("vocab_size"),
      num_layers=required("num_hidden_layers"),
      d_model=d_model,
      num_heads=num_heads,
      num_kv_heads=int(hf_config.get("num_key_value_heads") or num_heads),
      head_dim=None if head_dim == d_model // num_heads else int(head_dim),
      mlp_dim=required("intermediate_size"),
      rope_theta=rope_theta,
      rope_scaling=rope_scaling,
      rms_norm_eps=float(hf_config.get("rms_norm_eps", 1e-6)),
      qkv_bias=qkv_bias,
      tie_embeddings=bool(hf_config.get("tie_word_embeddings", False)),
  )


def config_to_hf(config: TransformerConfig, model_type: str, *, dtype: str = "float32",
                 bos_token_id: int | None = None, eos_token_id: int | list[int] | None = None,
                 pad_token_id: int | None = None, max_position_embeddings: int | None = None) -> dict[str, Any]:
  """A `config.json` (as a dict) that transformers loads as the model `config` describes.

  The rope is written both ways: `rope_parameters` (transformers 5) and top-level
  `rope_theta` / `rope_scaling` (older transformers and other readers), with the same values.

  Args:
    config: Our config.
    model_type: 'qwen2' (needs qkv_bias) or 'llama' (needs no qkv_bias).
    dtype: The dtype the tensors are written in, 'float32' or 'bfloat16'.
    bos_token_id: Written as given (None writes null).
    eos_token_id: Written as given; an int or a list of ints.
    pad_token_id: Written as given.
    max_position_embeddings: The context length to advertise; None means
      original_max_position_embeddings * factor under Llama 3 rope scaling, else 32768.

  Raises:
    UnsupportedHFConfigError: When `config` cannot be expressed as `model_type`.
  """
  if model_type not in ARCHITECTURES:
    raise UnsupportedHFConfigError(f"model_type {model_type!r} is not supported (only {sorted(ARCHITECTURES)})")
  if dtype not in _EXPORT_DTYPES:
    raise ValueError(f"dtype must be one of {sorted(_EXPORT_DTYPES)}, got {dtype!r}")
  if model_type == "qwen2" and not config.qkv_bias:
    raise UnsupportedHFConfigError("qwen2 always has q/k/v biases; this model has none (export it as llama)")
  if model_type == "llama" and config.qkv_bias:
    raise UnsupportedHFConfigError("llama's attention_bias would also put a bias on o_proj; this model has q/k/v "
                                   "biases only (export it as qwen2)")
  if config.attention_logits_soft_cap:
    raise UnsupportedHFConfigError(f"attention_logits_soft_cap {config.attention_logits_soft_cap} has no "
                                   f"{model_type} equivalent")
  if config.key_shift:
    raise UnsupportedHFConfigError(f"key_shift has no {model_type} equivalent (its keys would lose the previous "
                                   "token)")
  scaling = dict(config.rope_scaling) if config.rope_scaling else None
  if max_position_embeddings is None:
    max_position_embeddings = (int(scaling["original_max_position_embeddings"] * scaling["factor"]) if scaling
                               else 32768)
  rope_parameters = {"rope_type": "llama3" if scaling else "default", "rope_theta": float(config.rope_theta)}
  rope_parameters.update(scaling or {})
  hf = {
      "architectures": [ARCHITECTURES[model_type]],
      "model_type": model_type,
      "vocab_size": config.vocab_size,
      "hidden_size": config.d_model,
      "intermediate_size": config.mlp_dim,
      "num_hidden_layers": config.num_layers,
      "num_attention_heads": config.num_heads,
      "num_key_value_heads": config.num_kv_heads,
      "hidden_act": "silu",
      "max_position_embeddings": int(max_position_embeddings),
      "rms_norm_eps": float(config.rms_norm_eps),
      "tie_word_embeddings": bool(config.tie_embeddings),
      "rope_parameters": rope_parameters,
      "rope_theta": float(config.rope_theta),
      "rope_scaling": {"rope_type": "llama3", **scaling} if scaling else None,
      "attention_dropout": 0.0,
      "initializer_range": 0.02,
      "use_cache": True,
      "bos_token_id": bos_token_id,
      "eos_token_id": eos_token_id,
      "pad_token_id": pad_token_id,
      "dtype": dtype,
      "torch_dtype": dtype,
  }
  if model_type == "llama":
    hf.update(head_dim=config.kv_dim, attention_bias=False, mlp_bias=False, pretraining_tp=1)
  else:
    hf.update(use_sliding_window=False, sliding_window=None, max_window_layers=config.num_layers,
              layer_types=["full_attention"] * config.num_layers)
    if config.head_dim is not None:
      hf["head_dim"] = config.head_dim
  return hf


# -- the tensor layout ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Tensor:
  """One Hugging Face tensor and the parameter it becomes.

  Attributes:
    ours: Path of the parameter in our tree (under 'layers' for per-layer tensors).
    hf: The Hugging Face name (for per-layer tensors, the part after 'model.layers.{i}.').
    hf_shape: Its shape as the config implies.
    to_ours: Hugging Face array -> our array (one layer).
    to_hf: Our array (one layer) -> Hugging Face array.
  """

  ours: tuple[str, ...]
  hf: str
  hf_shape: tuple[int, ...]
  to_ours: Callable[[np.ndarray], np.ndarray]
  to_hf: Callable[[np.ndarray], np.ndarray]


def _same(x):
  return x


def _layer_tensors(c: TransformerConfig) -> list[_Tensor]:
  """The tensors of one block, in transformers' module order, for config `c`."""
  d, h, k, f, m = c.d_model, c.num_heads, c.num_kv_heads, c.kv_dim, c.mlp_dim

  def into_heads(heads):  # Linear [heads * f, d] <-> kernel [d, heads, f].
    return (lambda w: w.T.reshape(d, heads, f)), (lambda x: x.reshape(d, heads * f).T)

  def bias(heads):
    return (lambda b: b.reshape(heads, f)), (lambda x: x.reshape(heads * f))

  transpose = (lambda w: w.T), (lambda x: x.T)
  tensors = [
      _Tensor(("attention", "query_kernel"), "self_attn.q_proj.weight", (h * f, d), *into_heads(h)),
      _Tensor(("attention", "key_kernel"), "self_attn.k_proj.weight", (k * f, d), *into_heads(k)),
      _Tensor(("attention", "value_kernel"), "self_attn.v_proj.weight", (k * f, d), *into_heads(k)),
  ]
  if c.qkv_bias:
    tensors += [
        _Tensor(("attention", "query_bias"), "self_attn.q_proj.bias", (h * f,), *bias(h)),
        _Tensor(("attention", "key_bias"), "self_attn.k_proj.bias", (k * f,), *bias(k)),
        _Tensor(("attention", "value_bias"), "self_attn.v_proj.bias", (k * f,), *bias(k)),
    ]
  tensors += [
      # o_proj is Linear [d, h * f]; our out_kernel is [h, f, d].
      _Tensor(("attention", "out_kernel"), "self_attn.o_proj.weight", (d, h * f),
              lambda w: w.T.reshape(h, f, d), lambda x: x.reshape(h * f, d).T),
      _Tensor(("mlp", "gate_kernel"), "mlp.gate_proj.weight", (m, d), *transpose),
      _Tensor(("mlp", "up_kernel"), "mlp.up_proj.weight", (m, d), *transpose),
      _Tensor(("mlp", "down_kernel"), "mlp.down_proj.weight", (d, m), *transpose),
      _Tensor(("attention_norm", "scale"), "input_layernorm.weight", (d,), _same, _same),
      _Tensor(("mlp_norm", "scale"), "post_attention_layernorm.weight", (d,), _same, _same),
  ]
  return tensors


def _global_tensors(c: TransformerConfig) -> list[_Tensor]:
  """The embedding, the final norm and (untied) the output head, for config `c`."""
  tensors = [
      _Tensor(("embedding",), "model.embed_tokens.weight", (c.vocab_size, c.d_model), _same, _same),
      _Tensor(("final_norm", "scale"), "model.norm.weight", (c.d_model,), _same, _same),
  ]
  if not c.tie_embeddings:
    tensors.append(_Tensor(("lm_head",), "lm_head.weight", (c.vocab_size, c.d_model), lambda w: w.T,
                           lambda x: x.T))
  return tensors


def _layer_name(i: int, suffix: str) -> str:
  return f"model.layers.{i}.{suffix}"


def _expected_shapes(c: TransformerConfig) -> dict[str, tuple[int, ...]]:
  """Every Hugging Face tensor name the config implies, with its shape, in module order."""
  shapes = {}
  embedding, *rest = _global_tensors(c)
  shapes[embedding.hf] = embedding.hf_shape
  for i in range(c.num_layers):
    for t in _layer_tensors(c):
      shapes[_layer_name(i, t.hf)] = t.hf_shape
  for t in rest:
    shapes[t.hf] = t.hf_shape
  return shapes


def _set(tree: dict, path: tuple[str, ...], value) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _flatten(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      flat.update(_flatten(value, prefix + (key,)))
    else:
      flat[prefix + (key,)] = value
  return flat


# -- reading -------------------------------------------------------------------------------------


def _read_file(path: Path) -> dict[str, np.ndarray]:
  """All tensors of one safetensors file as numpy arrays (bfloat16 as ml_dtypes.bfloat16)."""
  tensors = {}
  with safe_open(path, framework="numpy") as handle:
    bf16 = [key for key in handle.keys() if handle.get_slice(key).get_dtype() == "BF16"]
    for key in handle.keys():
      if key in bf16:
        continue
      try:
        tensors[key] = handle.get_tensor(key)
      except TypeError as e:
        dtype = handle.get_slice(key).get_dtype()
        raise ValueError(f"{path}: tensor {key} has dtype {dtype}, which numpy cannot read: {e}") from e
  if bf16:
    # The flax reader makes jax arrays; keep them on the host CPU, not on an accelerator.
    with jax.default_device(jax.devices("cpu")[0]), safe_open(path, framework="flax") as handle:
      for key in bf16:
        tensors[key] = np.asarray(handle.get_tensor(key))
  return tensors


def read_safetensors(checkpoint_dir: str | Path) -> dict[str, np.ndarray]:
  """Every tensor of a Hugging Face checkpoint directory, by name.

  Reads `model.safetensors` when present (as transformers does), else the shards listed by
  `model.safetensors.index.json`, checking that each tensor sits in the shard the index
  names and that no name appears twice.

  Args:
    checkpoint_dir: The directory.

  Raises:
    FileNotFoundError: No safetensors weights, or a shard the index names is absent.
    CheckpointMismatchError: The shards disagree with the index.
  """
  directory = Path(checkpoint_dir)
  if (directory / SINGLE_FILE).is_file():
    return _read_file(directory / SINGLE_FILE)
  if not (directory / INDEX_FILE).is_file():
    others = sorted(p.name for p in directory.glob("*.bin")) if directory.is_dir() else []
    hint = f" (it has {others}; convert them to safetensors first)" if others else ""
    raise FileNotFoundError(f"{directory} has neither {SINGLE_FILE} nor {INDEX_FILE}{hint}")
  weight_map = json.loads((directory / INDEX_FILE).read_text())["weight_map"]
  tensors: dict[str, np.ndarray] = {}
  for shard in sorted(set(weight_map.values())):
    if not (directory / shard).is_file():
      raise FileNotFoundError(f"{INDEX_FILE} names {shard}, which is not in {directory}")
    for key, value in _read_file(directory / shard).items():
      if key in tensors:
        raise CheckpointMismatchError(f"tensor {key} appears in more than one shard (again in {shard})")
      if weight_map.get(key) != shard:
        raise CheckpointMismatchError(f"tensor {key} is in {shard} but {INDEX_FILE} places it in "
                                      f"{weight_map.get(key)}")
      tensors[key] = value
  absent = sorted(set(weight_map) - set(tensors))
  if absent:
    raise CheckpointMismatchError(f"{INDEX_FILE} lists tensors no shard holds: {absent}")
  return tensors


def read_hf_config(checkpoint_dir: str | Path) -> dict[str, Any]:
  """The parsed `config.json` of a Hugging Face checkpoint directory."""
  path = Path(checkpoint_dir) / "config.json"
  if not path.is_file():
    raise FileNotFoundError(f"{checkpoint_dir} has no config.json")
  return json.loads(path.read_text())


def params_from_hf_tensors(tensors: dict[str, np.ndarray], config: TransformerConfig,
                           dtype: Any = np.float32) -> dict[str, Any]:
  """Our parameter tree (numpy arrays of `dtype`) from Hugging Face tensors.

  Args:
    tensors: Name -> array, as `read_safetensors` gives; consumed (emptied) to bound memory.
    config: The config the tensors must match.
    dtype: The dtype of the returned parameters.

  Raises:
    CheckpointMismatchError: Naming every missing and unexpected tensor, or the first tensor
      whose shape the config does not imply.
  """
  for key in [key for key in tensors if key.endswith(_IGNORED_SUFFIXES)]:
    del tensors[key]
  expected = _expected_shapes(config)
  if config.tie_embeddings and "lm_head.weight" in tensors:
    # Some tied checkpoints store the head anyway; accept it only as the embedding's copy.
    head = tensors.pop("lm_head.weight")
    embedding = tensors.get("model.embed_tokens.weight")
    if embedding is None or not np.array_equal(head, embedding):
      raise CheckpointMismatchError("tie_word_embeddings is true but lm_head.weight differs from "
                                    "model.embed_tokens.weight")
  missing = [name for name in expected if name not in tensors]
  unexpected = sorted(set(tensors) - set(expected))
  if missing or unexpected:
    raise CheckpointMismatchError(f"checkpoint does not match config.json: missing tensors {missing}, "
                                  f"unexpected tensors {unexpected}")
  for name, shape in expected.items():
    if tuple(tensors[name].shape) != shape:
      raise CheckpointMismatchError(f"tensor {name} has shape {tuple(tensors[name].shape)}, but config.json "
                                    f"implies {shape}")

  params: dict[str, Any] = {}
  for t in _global_tensors(config):
    _set(params, t.ours, np.ascontiguousarray(t.to_ours(tensors.pop(t.hf)).astype(dtype)))
  for t in _layer_tensors(config):
    stacked = np.stack([t.to_ours(tensors.pop(_layer_name(i, t.hf))).astype(dtype)
                        for i in range(config.num_layers)])
    _set(params, ("layers",) + t.ours, stacked)
  return params


def import_hf(checkpoint_dir: str | Path, *, dtype: Any = np.float32) -> tuple[TransformerConfig, dict[str, Any]]:
  """Config and parameters of a Hugging Face Qwen2 or Llama checkpoint.

  Args:
    checkpoint_dir: A directory with config.json and safetensors weights (single or sharded).
    dtype: The dtype of the returned parameters (float32, or e.g. jnp.bfloat16).

  Returns:
    (config, params): params is our tree of host numpy arrays, ready for
    `Decoder(config).apply({"params": params}, ...)` or `checkpoints.save_params`.

  Raises:
    UnsupportedHFConfigError, CheckpointMismatchError, FileNotFoundError: As their messages say.
  """
  config = config_from_hf(read_hf_config(checkpoint_dir))
  return config, params_from_hf_tensors(read_safetensors(checkpoint_dir), config, dtype)


# -- writing -------------------------------------------------------------------------------------


def hf_tensors_from_params(params: Mapping[str, Any], config: TransformerConfig,
                           dtype: str = "float32") -> dict[str, np.ndarray]:
  """Hugging Face name -> numpy array, in module order, for our parameter tree.

  Args:
    params: Our tree (jax or numpy arrays; logical-partitioning boxes are removed).
    config: The config the tree must match.
    dtype: 'float32' or 'bfloat16'.

  Raises:
    CheckpointMismatchError: Naming missing or unexpected parameters, or a parameter whose
      shape the config does not imply.
  """
  flat = _flatten(nn.unbox(params))
  layer_tensors, global_tensors = _layer_tensors(config), _global_tensors(config)
  wanted = [t.ours for t in global_tensors] + [("layers",) + t.ours for t in layer_tensors]
  missing = ["/".join(p) for p in wanted if p not in flat]
  unexpected = sorted("/".join(p) for p in set(flat) - set(wanted))
  if missing or unexpected:
    raise CheckpointMismatchError(f"parameters do not match the config: missing {missing}, unexpected "
                                  f"{unexpected}")
  np_dtype = _EXPORT_DTYPES[dtype]

  def convert(t: _Tensor, value, name: str) -> np.ndarray:
    out = np.ascontiguousarray(t.to_hf(np.asarray(value)).astype(np_dtype))
    if out.shape != t.hf_shape:
      raise CheckpointMismatchError(f"{name} would have shape {out.shape}, but the config implies {t.hf_shape}")
    return out

  def check_layers(path, value):
    if np.shape(value)[0] != config.num_layers:
      raise CheckpointMismatchError(f"parameter {'/'.join(path)} has {np.shape(value)[0]} layers, config has "
                                    f"{config.num_layers}")
    return np.asarray(value)

  tensors = {}
  embedding, *rest = global_tensors
  tensors[embedding.hf] = convert(embedding, flat[embedding.ours], embedding.hf)
  stacked = {t.hf: check_layers(("layers",) + t.ours, flat[("layers",) + t.ours]) for t in layer_tensors}
  for i in range(config.num_layers):
    for t in layer_tensors:
      name = _layer_name(i, t.hf)
      tensors[name] = convert(t, stacked[t.hf][i], name)
  for t in rest:
    tensors[t.hf] = convert(t, flat[t.ours], t.hf)
  return tensors


def _shards(tensors: dict[str, np.ndarray], max_shard_bytes: int | None) -> list[list[str]]:
  """Names grouped into shards of at most `max_shard_bytes` (a larger tensor gets a shard alone)."""
  if max_shard_bytes is None:
    return [list(tensors)]
  shards: list[list[str]] = [[]]
  size = 0
  for name, value in tensors.items():
    if shards[-1] and size + value.nbytes > max_shard_bytes:
      shards.append([])
      size = 0
    shards[-1].append(name)
    size += value.nbytes
  return shards


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
  if out_dir.exists() and not out_dir.is_dir():
    raise FileExistsError(f"{out_dir} exists and is not a directory")
  if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
    raise FileExistsError(f"{out_dir} already exists and is not empty (pass overwrite=True to replace it)")


def _move_into_place(tmp: Path, out_dir: Path) -> None:
  """Renames the finished `tmp` to `out_dir`, replacing what is there (checked by the caller)."""
  if out_dir.is_dir():
    old = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex}")
    os.rename(out_dir, old)
    os.rename(tmp, out_dir)
    shutil.rmtree(old)
  else:
    os.rename(tmp, out_dir)


def export_hf(params: Mapping[str, Any], config: TransformerConfig, out_dir: str | Path, *, model_type: str,
              max_shard_bytes: int | None = None, dtype: str = "float32", overwrite: bool = False,
              **hf_config_fields) -> Path:
  """Writes our parameters as a Hugging Face checkpoint transformers loads with `from_pretrained`.

  Writes config.json and `model.safetensors`, or, when the tensors exceed
  `max_shard_bytes`, shards `model-0000i-of-0000n.safetensors` with
  `model.safetensors.index.json`; every file has the metadata {"format": "pt"}. Everything
  is written to a temporary sibling directory first and renamed into place at the end, so
  an interrupted export leaves no half-written checkpoint at `out_dir`.

  Args:
    params: Our parameter tree.
    config: Its config.
    out_dir: The directory to create.
    model_type: 'qwen2' or 'llama'.
    max_shard_bytes: The largest shard size in bytes; None writes one file.
    dtype: The dtype of the written tensors, 'float32' or 'bfloat16'.
    overwrite: Replace a non-empty `out_dir` (else that is an error).
    **hf_config_fields: Passed to `config_to_hf` (bos_token_id, eos_token_id, pad_token_id,
      max_position_embeddings).

  Returns:
    The absolute path of `out_dir`.
  """
  out_dir = Path(out_dir).absolute()
  _prepare_out_dir(out_dir, overwrite)
  hf_config = config_to_hf(config, model_type, dtype=dtype, **hf_config_fields)
  tensors = hf_tensors_from_params(params, config, dtype)
  shards = _shards(tensors, max_shard_bytes)
  out_dir.parent.mkdir(parents=True, exist_ok=True)
  tmp = out_dir.with_name(f".{out_dir.name}.tmp-{uuid.uuid4().hex}")
  tmp.mkdir()
  try:
    (tmp / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    if len(shards) == 1:
      save_file(tensors, str(tmp / SINGLE_FILE), metadata={"format": "pt"})
    else:
      weight_map = {}
      for i, names in enumerate(shards):
        shard = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file({name: tensors[name] for name in names}, str(tmp / shard), metadata={"format": "pt"})
        weight_map.update({name: shard for name in names})
      index = {"metadata": {"total_size": sum(v.nbytes for v in tensors.values()),
                            "total_parameters": sum(v.size for v in tensors.values())},
               "weight_map": dict(sorted(weight_map.items()))}
      (tmp / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    _move_into_place(tmp, out_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return out_dir


# -- parameter checkpoints (the CLI's import-hf and export-hf) ----------------------------------


def import_to_checkpoint(hf_dir: str | Path, out_dir: str | Path) -> Path:
  """Imports a Hugging Face checkpoint and saves it as a parameter-only checkpoint.

  Also keeps the source config.json as `hf_config.json` in `out_dir`, so that
  `export_from_checkpoint` to the same model type keeps its token ids and context length.

  Args:
    hf_dir: The Hugging Face checkpoint directory.
    out_dir: The parameter checkpoint to create (must not exist or be empty).

  Returns:
    The absolute path of `out_dir`.
  """
  hf_config = read_hf_config(hf_dir)
  config, params = import_hf(hf_dir)
  out = Path(out_dir).absolute()
  if out.exists() and any(out.iterdir()):
    raise FileExistsError(f"{out} already exists and is not empty")
  params = jax.device_put(params, jax.devices("cpu")[0])
  checkpoints.save_params(params, out, config)
  if jax.process_index() == 0:
    (out / SOURCE_CONFIG_FILE).write_text(json.dumps(hf_config, indent=2) + "\n")
  print(f"Imported {hf_config['model_type']} from {hf_dir}: {config.num_layers} layers, d_model {config.d_model}, "
        f"{config.num_heads} heads ({config.num_kv_heads} key/value) of {config.kv_dim}, mlp {config.mlp_dim}, "
        f"vocab {config.vocab_size}, {config.num_params():,} parameters"
        f"{', tied embeddings' if config.tie_embeddings else ''} -> {out}")
  return out


def export_from_checkpoint(checkpoint_dir: str | Path, out_dir: str | Path, model_type: str,
                           max_shard_bytes: int | None = None, *, dtype: str = "float32",
                           overwrite: bool = False) -> Path:
  """Exports a parameter-only checkpoint as a Hugging Face checkpoint.

  Args:
    checkpoint_dir: A parameter-only checkpoint (params/ and model_config.json).
    out_dir: The Hugging Face directory to create.
    model_type: 'qwen2' or 'llama'.
    max_shard_bytes: The largest shard size in bytes; None writes one file.
    dtype: 'float32' or 'bfloat16'.
    overwrite: Replace a non-empty `out_dir`.

  Returns:
    The absolute path of `out_dir`.
  """
  config = checkpoints.load_config(checkpoint_dir)
  params = checkpoints.load_params(checkpoint_dir)
  fields = {}
  source = Path(checkpoint_dir) / SOURCE_CONFIG_FILE
  if source.is_file():
    source_config = json.loads(source.read_text())
    if source_config.get("model_type") == model_type:
      fields = {key: source_config[key] for key in _CARRIED_KEYS if key in source_config}
  out = export_hf(params, config, out_dir, model_type=model_type, max_shard_bytes=max_shard_bytes, dtype=dtype,
                  overwrite=overwrite, **fields)
  print(f"Exported {checkpoint_dir} as {model_type} ({config.num_params():,} parameters, {dtype}) -> {out}")
  return out
