"""Trajectory SFT tasks: trajectories, trajectories_ramp, trajectories_qa.

Files come from Gin: `TrajectoryFiles.paths = {'train': ['/runs/x/trajectories.jsonl']}`.
Observation tokens carry zero loss weight (`targets_loss_weights`).
"""

from masksearch_jax.data import seqio_tasks

seqio_tasks.register_trajectory_tasks()
