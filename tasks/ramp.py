"""RAMP tasks and curriculum mixtures.

Tasks: ramp_mask1, ramp_mask2, ramp_mask3, ramp_mask4 (exactly k masks),
ramp_mixed (MaskSearch's mask-count rule), ramp_records (MaskSearch-format jsonl
that a user brings). Mixtures: ramp_curriculum_stage1..4 (stage k mixes the
tasks with at most k masks) and ramp_mixed_1to4 (all four, for mixed training).

Gin knobs (see masksearch_jax/data/ramp_source.py and seqio_tasks.py):
  RampCorpus.path / .format / .world      which corpus (default: the embedded world)
  RampMasking.spans / .strategy / .scorer  how spans are found and chosen
  mixture_rate.rates                       {mixture: {task: rate}}
  RampRecordFiles.paths                    {split: path} for ramp_records
"""

from masksearch_jax.data import seqio_tasks

seqio_tasks.register_ramp_tasks()
seqio_tasks.register_ramp_record_task()
