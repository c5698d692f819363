"""Starting JAX's multi-host runtime when the environment or flags say so.

On a Cloud TPU pod slice `jax.distributed.initialize()` finds its peers by
itself; elsewhere (GPU clusters, two local CPU processes in tests) T5X-style
flags or the JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID
environment variables name the coordinator and this process.
"""

from __future__ import annotations

import logging
import os

import jax

logger = logging.getLogger(__name__)

_TPU_POD_ENV = ("TPU_WORKER_HOSTNAMES", "CLOUD_TPU_TASK_ID", "MEGASCALE_COORDINATOR_ADDRESS")


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, auto: bool = False) -> bool:
  """Calls `jax.distributed.initialize` when running multi-host; returns whether it did.

  Args:
    coordinator_address: host:port of process 0 (else $JAX_COORDINATOR_ADDRESS).
    num_processes: Number of processes (else $JAX_NUM_PROCESSES).
    process_id: This process's index (else $JAX_PROCESS_ID).
    auto: Let JAX find its peers itself (Cloud TPU VMs: from the TPU metadata server,
      where the environment variables above are not set); also $MASKSEARCH_MULTIHOST=1.
  """
  coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
  if num_processes is None and os.environ.get("JAX_NUM_PROCESSES"):
    num_processes = int(os.environ["JAX_NUM_PROCESSES"])
  if process_id is None and os.environ.get("JAX_PROCESS_ID"):
    process_id = int(os.environ["JAX_PROCESS_ID"])
  if coordinator_address:
    # CPU processes exchange gradients with gloo collectives (no effect on TPU or GPU). Asking
    # for the backend here would start it, and it must start after `initialize`.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id)
  elif auto or os.environ.get("MASKSEARCH_MULTIHOST") == "1" or any(name in os.environ for name in _TPU_POD_ENV):
    jax.distributed.initialize()  # Cloud TPU: peers from the TPU metadata.
  else:
    return False
  logger.info("multi-host: process %d of %d, %d devices in all", jax.process_index(), jax.process_count(),
              jax.device_count())
  return True
