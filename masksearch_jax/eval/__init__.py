"""Evaluation: answer metrics, benchmark runs of the search agent (and its baselines), reports.

  metrics      EM and F1 as the benchmarks' official scripts compute them, and token recall.
  benchmarks   Loading any benchmark the repository reads (and the embedded world's questions).
  predictions  Predictions in each benchmark's official shape, and in FlashRAG jsonl.
  runner       `evaluate`: the agent (or plain RAG) over one benchmark, into a run directory.
  report       Tables (markdown, JSON) and bar charts of one run or many (`masksearch report`).
"""
