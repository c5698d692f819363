"""Downstream question-answering tasks.

qa_world (the embedded world's multi-hop questions) and qa_hotpotqa, qa_musique,
qa_2wiki, qa_bamboogle, qa_fanoutqa, qa_freshqa, qa_flashrag, qa_searchr1, whose
files come from Gin: `QAFiles.hotpotqa = {'validation': '/data/hotpot_dev_distractor_v1.json'}`.
Gold answers and aliases are kept in the `answers` feature for evaluation.
"""

from masksearch_jax.data import seqio_tasks

seqio_tasks.register_qa_tasks()
