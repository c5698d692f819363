"""Checkpoints with orbax: training checkpoints, and parameter-only checkpoints.

A training run writes `MODEL_DIR/checkpoints/<step>/` with two items: `state`
(parameters, optimizer state, step; sharded arrays written once across hosts)
and `meta` (JSON: the curriculum stage, the input position within it, the model
config). Orbax writes each step into a temporary directory and renames it when
complete, so an interrupted save never looks like a checkpoint.

A parameter-only checkpoint (what `masksearch import-hf` writes and what
`INITIAL_CHECKPOINT_PATH` may name) is a directory with `params/` (orbax) and
`model_config.json`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from masksearch_jax.models.transformer import TransformerConfig
from masksearch_jax.errors import ConfigError


# -- configs ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SaveCheckpointConfig:
  """When and how many checkpoints to write (T5X's SaveCheckpointConfig).

  Attributes:
    period: Save every this many steps (and at the end of training, and at the end of
      each curriculum stage).
    keep: Keep only the newest this many checkpoints; None keeps all.
    asynchronous: Write in the background while training goes on (orbax's async
      checkpointing); the next save, and the end of training, wait for it.
  """

  period: int = 1000
  keep: int | None = 3
  asynchronous: bool = True


@dataclasses.dataclass(frozen=True)
class RestoreCheckpointConfig:
  """Which checkpoint to resume from (T5X's RestoreCheckpointConfig).

  Attributes:
    path: Another run's checkpoints directory to start from; None means MODEL_DIR/checkpoints.
      The run still saves into MODEL_DIR/checkpoints and, once that holds a checkpoint, a
      restart resumes from there.
    mode: 'latest' (the newest step), or 'specific' (the step in `step`).
    step: The step for mode 'specific'.
    fallback_to_scratch: Start from scratch when there is no checkpoint (else it is an error).
  """

  path: str | None = None
  mode: str = "latest"
  step: int | None = None
  fallback_to_scratch: bool = True

  def __post_init__(self):
    if self.mode not in ("latest", "specific"):
      raise ConfigError(f"RestoreCheckpointConfig.mode must be 'latest' or 'specific', got {self.mode!r}")
    if self.mode == "specific" and self.step is None:
      raise ConfigError("RestoreCheckpointConfig.mode = 'specific' needs RestoreCheckpointConfig.step")


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  """T5X's CheckpointConfig: `save` and `restore` settings."""

  save: SaveCheckpointConfig = SaveCheckpointConfig()
  restore: RestoreCheckpointConfig = RestoreCheckpointConfig()


# -- training checkpoints -------------------------------------------------------------------------


class TrainingCheckpoints:
  """The checkpoints of one run: save (periodic, keep-N, async) and restore (latest or a step)."""

  def __init__(self, directory: str | Path, save: SaveCheckpointConfig = SaveCheckpointConfig()):
    self.directory = Path(directory).absolute()
    options = ocp.CheckpointManagerOptions(max_to_keep=save.keep, enable_async_checkpointing=save.asynchronous,
                                           create=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

  def save(self, step: int, state: Any, meta: dict) -> None:
    """Starts writing `state` and `meta` as checkpoint `step` (returns before an async write ends)."""
    self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                    meta=ocp.args.JsonSave(meta)), force=True)

  def steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
    """Checkpoint `step`, laid out as `abstract_state` (shapes, dtypes and shardings)."""
    restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                                  meta=ocp.args.JsonRestore()))
    return restored.state, dict(restored.meta)

  def wait(self) -> None:
    """Blocks until any background write has finished."""
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


# -- parameter-only checkpoints -------------------------------------------------------------------


def save_params(params: Any, directory: str | Path, config: TransformerConfig) -> Path:
  """Writes `params` and the model config as a parameter-only checkpoint."""
  directory = Path(directory).absolute()
  if directory.exists() and any(directory.iterdir()):
    raise FileExistsError(f"{directory} already exists and is not empty")
  directory.mkdir(parents=True, exist_ok=True)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(directory / "params", params)
    checkpointer.wait_until_finished()
  if jax.process_index() == 0:
    (directory / "model_config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")
  return directory


def load_config(directory: str | Path) -> TransformerConfig:
  """The model config of a parameter-only checkpoint."""
  path = Path(directory) / "model_config.json"
  if not path.is_file():
    raise FileNotFoundError(f"{directory} is not a parameter checkpoint (no model_config.json)")
  return TransformerConfig(**json.loads(path.read_text()))


def load_params(directory: str | Path, abstract_params: Any | None = None) -> Any:
  """Parameters of a parameter-only checkpoint, or of the newest step of a training run.

  Args:
    directory: A parameter-only checkpoint, or a run's checkpoints directory.
    abstract_params: Shapes, dtypes and shardings to restore into (None: on the default
      device; a training checkpoint is read onto this process's first device whatever
      devices or hosts wrote it).
  """
  directory = Path(directory).absolute()
  if (directory / "params").is_dir():
    with ocp.StandardCheckpointer() as checkpointer:
      return checkpointer.restore(directory / "params", abstract_params)
  manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True),
                                  item_handlers={"state": ocp.StandardCheckpointHandler(),
                                                 "meta": ocp.JsonCheckpointHandler()})
  step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(f"{directory} holds neither a parameter checkpoint (params/) nor training "
                            "checkpoints")
  # Restoring "as saved" needs the saving devices (orbax refuses a checkpoint of two hosts on one),
  # so read every array onto this process's first device instead.
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree_util.tree_map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                                  manager.item_metadata(step)["state"])
  state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))).state
  manager.close()
  params = state["params"]
  if abstract_params is not None:
    params = jax.tree_util.tree_map(lambda x, a: jax.device_put(x, a.sharding), params, abstract_params)
  return params
