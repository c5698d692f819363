"""The `masksearch` command: one entry point with sub-commands.

Heavy libraries (jax, tensorflow, tantivy) are imported inside each sub-command
so that `masksearch --help` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


def _add_generate_world(sub: argparse._SubParsersAction) -> None:
  p = sub.add_parser("generate-world", help="Generate the embedded fictional encyclopedia.")
  p.add_argument("--out", required=True, help="Output directory (written atomically).")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--size", type=int, default=2000, help="Number of people; other kinds scale with it.")
  p.add_argument("--num_passages", type=int, default=None,
                 help="Pick the size that gives about this many passages (overrides --size).")
  p.add_argument("--overwrite", action="store_true")
  p.add_argument("--formats", default="",
                 help="Extra real-format copies, comma separated: wiki18,wikiextractor,flashrag,hotpotqa,musique,2wiki.")
  p.set_defaults(func=_run_generate_world)


def _run_generate_world(args: argparse.Namespace) -> int:
  from masksearch_jax.data import world_io
  from masksearch_jax.data.world import WorldConfig
  if args.num_passages:
    config = WorldConfig.for_num_passages(args.num_passages, seed=args.seed)
  else:
    config = WorldConfig(seed=args.seed, size=args.size)
  formats = [f for f in args.formats.split(",") if f]
  world_io.generate_and_write(config, args.out, overwrite=args.overwrite, formats=formats)
  return 0


def _add_build_index(sub: argparse._SubParsersAction) -> None:
  p = sub.add_parser("build-index", help="Build a Tantivy index from any supported corpus.")
  p.add_argument("--corpus", required=True, help="Corpus file or directory (see README for formats).")
  p.add_argument("--format", default="auto")
  p.add_argument("--index", required=True, help="Index directory to create.")
  p.add_argument("--overwrite", action="store_true", help="Rebuild when the index already exists.")
  p.add_argument("--threads", type=int, default=1,
                 help="Writer threads (0: the cores, at most 8). More than one builds faster but ranks passages "
                      "with equal scores differently from build to build; default 1.")
  p.add_argument("--skip_bad", action="store_true", help="Skip malformed records and report how many.")
  p.set_defaults(func=_run_build_index)


def _run_build_index(args: argparse.Namespace) -> int:
  from masksearch_jax.data import corpus_readers
  from masksearch_jax.retrieval import tantivy_index
  stats = corpus_readers.ReadStats()
  passages = corpus_readers.read_corpus(args.corpus, args.format, skip_bad=args.skip_bad, stats=stats)
  tantivy_index.build_index(passages, args.index, overwrite=args.overwrite, num_threads=args.threads)
  if stats.skipped:
    print(f"skipped {stats.skipped} malformed records (first: {stats.first_error})", file=sys.stderr)
  return 0


def _add_search(sub: argparse._SubParsersAction) -> None:
  p = sub.add_parser("search", help="Search an index (in process, or a server with --url).")
  p.add_argument("queries", nargs="+")
  group = p.add_mutually_exclusive_group(required=True)
  group.add_argument("--index", help="Index directory.")
  group.add_argument("--url", help="Base URL of a `masksearch serve-index` server.")
  p.add_argument("-k", "--top_k", type=int, default=5)
  p.set_defaults(func=_run_search)


def _run_search(args: argparse.Namespace) -> int:
  from masksearch_jax.retrieval import open_retriever
  with open_retriever(index=args.index, url=args.url) as retriever:
    for query, hits in zip(args.queries, retriever.batch_search(args.queries, args.top_k)):
      print(f"query: {query}")
      for rank, hit in enumerate(hits, 1):
        print(f"  {rank}. [{hit.score:.2f}] {hit.title} ({hit.id}): {hit.text[:160]}")
  return 0


def _add_serve_index(sub: argparse._SubParsersAction) -> None:
  p = sub.add_parser("serve-index", help="Serve an index over HTTP with Search-R1's /retrieve protocol.")
  p.add_argument("--index", required=True)
  p.add_argument("--port", type=int, default=8000)
  p.add_argument("--host", default="127.0.0.1", help="Bind address (loopback unless told otherwise).")
  p.add_argument("--max_queries", type=int, default=512, help="Most queries one request may carry.")
  p.add_argument("--max_query_chars", type=int, default=10_000, help="Longest query accepted.")
  p.add_argument("--max_topk", type=int, default=100, help="Largest topk accepted.")
  p.set_defaults(func=_run_serve_index)


def _run_serve_index(args: argparse.Namespace) -> int:
  from masksearch_jax.retrieval import server
  server.serve_forever(index_dir=args.index, host=args.host, port=args.port,
                       limits=server.ServerLimits(max_queries=args.max_queries,
                                                  max_query_chars=args.max_query_chars,
                                                  max_topk=args.max_topk))
  return 0


def _add_train_vocab(sub: argparse._SubParsersAction) -> None:
  p = sub.add_parser("train-vocab", help="Train a SentencePiece vocabulary on a corpus or a generated world.")
  p.add_argument("--out", required=True, help="Model file to write (atomically), e.g. vocab.model.")
  source = p.add_mutually_exclusive_group(required=True)
  source.add_argument("--corpus", help="Corpus file or directory (any format build-index reads).")
  source.add_argument("--world_seed", type=int, help="Train on the embedded world of this seed (cached).")
  p.add_argument("--format", default="auto", help="Corpus format (with --corpus).")
  p.add_argument("--world_size", type=int, default=None, help="People in the world (with --world_seed; default 4000).")
  p.add_argument("--trajectories", nargs="+", default=(), metavar="FILE",
                 help="Trajectory jsonl files whose model-written text is also trained on (the words the "
                      "policy writes become whole pieces).")
  p.add_argument("--trajectories_per_file", type=int, default=2000,
                 help="Trajectories read from the start of each --trajectories file (0: all).")
  p.add_argument("--vocab_size", type=int, default=4000, help="Most pieces; a small corpus supports fewer.")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--no_name_syllables", action="store_true",
                 help="Do not force invented names to split into their syllables.")
  p.add_argument("--max_sentences", type=int, default=1_000_000, help="Most texts trained on (sampled with --seed).")
  p.add_argument("--threads", type=int, default=1, help="Trainer threads (the output bytes depend on it; default 1).")
  p.add_argument("--overwrite", action="store_true", help="Replace an existing model file.")
  p.set_defaults(func=_run_train_vocab, parser=p)


def _run_train_vocab(args: argparse.Namespace) -> int:
  import itertools
  import os
  import time
  from masksearch_jax.data import vocabularies
  if args.corpus is not None and args.world_size is not None:
    args.parser.error("--world_size goes with --world_seed, not --corpus")
  if os.path.exists(args.out) and not args.overwrite:
    raise FileExistsError(f"{args.out} already exists; pass --overwrite to replace it")
  if args.corpus is not None:
    from masksearch_jax.data import corpus_readers
    passages = corpus_readers.read_corpus(args.corpus, args.format)
    texts = itertools.chain(vocabularies.prompt_texts(), vocabularies.passage_training_texts(passages))
    source = args.corpus
  else:
    from masksearch_jax.data import world_io
    from masksearch_jax.data.world import WorldConfig
    config = WorldConfig(seed=args.world_seed, size=args.world_size or 4000)
    world = world_io.load_world(world_io.cached_world_dir(config))
    texts = vocabularies.world_training_texts(world)
    source = f"world seed={config.seed} size={config.size}"
  if args.trajectories:
    texts = itertools.chain(texts, vocabularies.model_written_texts(args.trajectories,
                                                                    per_file=args.trajectories_per_file))
    source += f" and what the model writes in {len(args.trajectories)} trajectory file(s)"
  start = time.perf_counter()
  path = vocabularies.train_sentencepiece(
      texts, args.out, vocab_size=args.vocab_size, seed=args.seed, name_syllables=not args.no_name_syllables,
      max_sentences=args.max_sentences, num_threads=args.threads, overwrite=args.overwrite)
  seconds = time.perf_counter() - start
  vocabulary = vocabularies.sentencepiece_vocabulary(path)
  names = "" if args.no_name_syllables else "; every invented name encodes as its syllables"
  print(f"vocabulary of {vocabulary.vocab_size:,} pieces (at most {args.vocab_size:,}) from {source}, "
        f"trained in {seconds:.1f}s{names} -> {path}")
  return 0


def _add_make_ramp(sub: argparse._SubParsersAction) -> None:
  p = sub.add_parser("make-ramp", help="Write RAMP examples as MaskSearch's jsonl records.")
  p.add_argument("--out", required=True, help="Output .jsonl (.gz/.bz2 compress); written atomically.")
  p.add_argument("--num_masks", type=int, default=0, help="Masks per paragraph; 0 uses MaskSearch's own rule.")
  p.add_argument("--split", default="train", choices=("train", "validation", "test"))
  p.add_argument("--limit", type=int, default=0, help="Stop after this many records (0: all).")
  p.add_argument("--corpus", default=None, help="Corpus path (default: the embedded world; see RampCorpus).")
  p.add_argument("--overwrite", action="store_true")
  _add_gin_flags(p)
  p.set_defaults(func=_run_make_ramp)


def _run_make_ramp(args: argparse.Namespace) -> int:
  import itertools

  from tqdm.auto import tqdm

  from masksearch_jax import gin_flags
  from masksearch_jax.data import masking
  from masksearch_jax.data.ramp_source import RampDataSource
  bindings = list(args.gin_bindings)
  if args.corpus:
    bindings.append(f"masksearch_jax.data.ramp_source.RampCorpus.path = {args.corpus!r}")
  gin_flags.parse(gin_files=args.gin_file, bindings=bindings, search_paths=args.gin_search_paths)
  records = RampDataSource(args.num_masks or None).records(args.split, source=args.corpus or "world")
  if args.limit:
    records = itertools.islice(records, args.limit)
  count = masking.write_ramp_jsonl(tqdm(records, desc="RAMP records", unit=" records"), args.out,
                                   overwrite=args.overwrite)
  print(f"wrote {count:,} RAMP records ({args.split}) -> {args.out}")
  return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
  p = sub.add_parser("train", help="Train with a T5X-style Gin config (gin/runs/*.gin).")
  _add_gin_flags(p)
  _add_multihost_flags(p)
  p.set_defaults(func=_run_train)


def _add_multihost_flags(p: argparse.ArgumentParser) -> None:
  p.add_argument("--coordinator_address", default=None, help="Multi-host: host:port of process 0.")
  p.add_argument("--num_processes", type=int, default=None, help="Multi-host: number of processes.")
  p.add_argument("--process_id", type=int, default=None, help="Multi-host: this process's index.")
  p.add_argument("--multihost", action="store_true",
                 help="Multi-host with peers found by JAX itself (Cloud TPU pod slices).")


def _start_run(args: argparse.Namespace, what: str, *modules: str) -> None:
  """Joins the other hosts (if any), imports `modules` (their Gin configurables), then parses the run's Gin
  files (required) and bindings."""
  import importlib

  from masksearch_jax import gin_flags
  from masksearch_jax.training import multihost
  multihost.initialize(coordinator_address=args.coordinator_address, num_processes=args.num_processes,
                       process_id=args.process_id, auto=args.multihost)
  for module in modules:
    importlib.import_module(module)
  if not args.gin_file:
    raise gin_flags.ConfigError(f"masksearch {args.command} needs --gin_file ({what})")
  gin_flags.parse(gin_files=args.gin_file, bindings=args.gin_bindings, search_paths=args.gin_search_paths)


def _run_train(args: argparse.Namespace) -> int:
  from masksearch_jax import gin_flags
  _start_run(args, "a model file and a run file")
  import gin

  from masksearch_jax.training import trainer
  summary = gin_flags.call_configured(gin.get_configurable(trainer.train))
  print(f"trained to step {summary.final_step} (loss {summary.final_loss}) in {summary.seconds:.1f}s -> "
        f"{summary.model_dir}")
  return 0


def _add_import_hf(sub: argparse._SubParsersAction) -> None:
  p = sub.add_parser("import-hf", help="Import a Hugging Face Qwen2/Llama checkpoint as a parameter checkpoint.")
  p.add_argument("--hf_dir", required=True, help="Directory with config.json and *.safetensors.")
  p.add_argument("--out", required=True, help="Parameter checkpoint to write (INITIAL_CHECKPOINT_PATH).")
  p.set_defaults(func=_run_import_hf)


def _add_export_hf(sub: argparse._SubParsersAction) -> None:
  p = sub.add_parser("export-hf", help="Export a checkpoint as a Hugging Face Qwen2/Llama checkpoint.")
  p.add_argument("--checkpoint", required=True, help="A parameter checkpoint (params/ and model_config.json).")
  p.add_argument("--out", required=True, help="Directory to write config.json and safetensors into.")
  p.add_argument("--model_type", required=True, choices=("qwen2", "llama"))
  p.add_argument("--max_shard_bytes", type=int, default=None, help="Split the weights into files of this size.")
  p.add_argument("--overwrite", action="store_true")
  p.set_defaults(func=_run_export_hf)


def _run_import_hf(args: argparse.Namespace) -> int:
  from masksearch_jax.models import hf_io
  hf_io.import_to_checkpoint(args.hf_dir, args.out)
  return 0


def _run_export_hf(args: argparse.Namespace) -> int:
  from masksearch_jax.models import hf_io
  hf_io.export_from_checkpoint(args.checkpoint, args.out, args.model_type, args.max_shard_bytes,
                               overwrite=args.overwrite)
  return 0


def _add_synthesize(sub: argparse._SubParsersAction) -> None:
  p = sub.add_parser("synthesize", help="Write agent trajectories for RAMP examples or questions (SFT data).")
  p.add_argument("--kind", required=True, choices=("ramp", "qa"))
  p.add_argument("--out", required=True, help="Trajectory jsonl; an existing file is continued.")
  p.add_argument("--teacher", default="offline", choices=("offline", "llm", "policy"),
                 help="offline: the embedded world's teacher (no endpoint needed); llm: MaskSearch's "
                      "planner/rewriter/observer/judge over an OpenAI-compatible endpoint set in Gin; policy: "
                      "the search agent of --checkpoint (rollout settings: rollout.RolloutConfig in Gin).")
  p.add_argument("--checkpoint", help="With --teacher policy: the policy's checkpoint or run directory.")
  p.add_argument("--split", default="train", choices=("train", "validation", "test"))
  p.add_argument("--num_masks", type=int, default=1, help="RAMP masks per paragraph; 0: MaskSearch's own rule.")
  p.add_argument("--limit", type=int, default=0, help="Examples to take (0: all).")
  group = p.add_mutually_exclusive_group()
  group.add_argument("--index", help="Index directory (default: the world's index, built into the cache).")
  group.add_argument("--url", help="A retrieval server (Search-R1's /retrieve).")
  p.add_argument("--top_k", type=int, default=3)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--overwrite", action="store_true", help="Start the output file afresh.")
  _add_gin_flags(p)
  p.set_defaults(func=_run_synthesize)


def _run_synthesize(args: argparse.Namespace) -> int:
  from pathlib import Path

  from masksearch_jax import gin_flags
  from masksearch_jax.data import world_io
  from masksearch_jax.data.ramp_source import RampCorpus
  from masksearch_jax.data.seqio_tasks import QAFiles
  from masksearch_jax.retrieval import open_retriever, tantivy_index
  if args.teacher == "policy":  # Gin configurables of the policy's modules, registered before parsing.
    from masksearch_jax.agent import rollout  # noqa: F401
    from masksearch_jax.models import span_scorer  # noqa: F401
  gin_flags.parse(gin_files=args.gin_file, bindings=args.gin_bindings, search_paths=args.gin_search_paths)
  world_config = RampCorpus().world if args.kind == "ramp" else QAFiles().world
  world_dir = world_io.cached_world_dir(world_config)
  index = args.index
  if args.url is None and index is None:
    index = str(tantivy_index.cached_index_dir(Path(world_dir) / "passages.jsonl", corpus_format="jsonl"))
  if args.overwrite and Path(args.out).exists():
    Path(args.out).unlink()
  if args.teacher == "offline":
    from masksearch_jax.agent import offline_teacher
    offline_teacher.synthesize_to_file(
        args.kind, args.out, world=world_dir if args.kind == "qa" else None, index=index, url=args.url,
        split=args.split, num_masks=args.num_masks or None, limit=args.limit, top_k=args.top_k, seed=args.seed)
    return 0
  import itertools

  from masksearch_jax.agent import synthesis
  if args.kind == "ramp":
    from masksearch_jax.data.ramp_source import RampDataSource
    tasks = RampDataSource(args.num_masks or None).examples(args.split)
  else:
    world_split = {"train": "train", "validation": "dev", "test": "test"}[args.split]
    tasks = (q for q in world_io.load_world(world_dir).questions if q.split == world_split)
  if args.limit:
    tasks = itertools.islice(tasks, args.limit)
  if args.teacher == "policy":
    if not args.checkpoint:
      raise gin_flags.ConfigError("--teacher policy needs --checkpoint")
    from masksearch_jax.agent.rollout import RolloutConfig, SearchAgent
    from masksearch_jax.agent.self_evolve import synthesize_with_policy
    from masksearch_jax.data import seqio_tasks
    from masksearch_jax.models.span_scorer import load_checkpoint
    params, config = load_checkpoint(args.checkpoint)
    with open_retriever(index=index, url=args.url) as retriever:
      agent = SearchAgent(config, params, seqio_tasks.VOCABULARY.vocabulary, retriever, RolloutConfig())
      synthesize_with_policy(args.kind, tasks, agent, args.out, seed=args.seed)
    return 0
  backend, judge_backend = synthesis.teacher_backends()
  with open_retriever(index=index, url=args.url) as retriever:
    synthesis.synthesize_with_llm(args.kind, tasks, retriever, backend, args.out, judge_backend=judge_backend,
                                  top_k=args.top_k)
  return 0


def _add_dapo(sub: argparse._SubParsersAction) -> None:
  p = sub.add_parser("dapo", help="RL with DAPO on search-agent rollouts (gin/runs/dapo_ramp.gin, dapo_qa.gin).")
  _add_gin_flags(p)
  _add_multihost_flags(p)
  p.set_defaults(func=_run_dapo)


def _run_dapo(args: argparse.Namespace) -> int:
  from masksearch_jax import gin_flags
  _start_run(args, "a model file and runs/dapo_ramp.gin or dapo_qa.gin", "masksearch_jax.rl.dapo")
  from masksearch_jax.rl import dapo
  import gin
  summary = gin_flags.call_configured(gin.get_configurable(dapo.train_dapo))
  print(f"DAPO to step {summary.final_step} (last batch reward {summary.final_reward}) after "
        f"{summary.generation_batches} generation batches ({summary.discarded_groups} groups discarded) in "
        f"{summary.seconds:.1f}s -> {summary.model_dir}")
  return 0


def _add_self_evolve(sub: argparse._SubParsersAction) -> None:
  p = sub.add_parser("self-evolve", help="Self-evolving distillation: rounds of train, teach with own rollouts, judge "
                                         "(gin/runs/self_evolve.gin).")
  _add_gin_flags(p)
  p.set_defaults(func=_run_self_evolve)


def _run_self_evolve(args: argparse.Namespace) -> int:
  from masksearch_jax import gin_flags
  if not args.gin_file:
    raise gin_flags.ConfigError("masksearch self-evolve needs --gin_file (a model file and runs/self_evolve.gin)")
  from masksearch_jax.agent import self_evolve  # noqa: F401 -- registers its configurables before parsing.
  gin_flags.parse(gin_files=args.gin_file, bindings=args.gin_bindings, search_paths=args.gin_search_paths)
  import gin
  history = gin_flags.call_configured(gin.get_configurable(self_evolve.self_evolve))
  for record in history:
    print(f"round {record['round']}: acceptance {record['acceptance_rate']:.1%} ({record['kept']}/"
          f"{record['attempted']}), checkpoint {record['checkpoint']}, data {record['trajectories']}")
  return 0


def _add_quickstart(sub: argparse._SubParsersAction) -> None:
  p = sub.add_parser("quickstart", help="Run the main job on the embedded world (gin/quickstart.gin).")
  _add_gin_flags(p)
  p.set_defaults(func=_run_quickstart)


def _add_gin_flags(p: argparse.ArgumentParser) -> None:
  p.add_argument("--gin_file", action="append", default=[],
                 help="Gin file; repeatable, later files override earlier ones.")
  p.add_argument("--gin_bindings", action="append", default=[], help="A Gin binding; repeatable.")
  p.add_argument("--gin_search_paths", default="", help="Comma-separated directories to find Gin files in.")


def _import_stage_configurables() -> None:
  """Registers the Gin configurables of every main-job stage before a config is parsed and locked."""
  import importlib
  for module in ("masksearch_jax.agent.offline_teacher", "masksearch_jax.agent.synthesis",
                 "masksearch_jax.eval.runner", "masksearch_jax.rl.dapo"):
    importlib.import_module(module)


def _run_quickstart(args: argparse.Namespace) -> int:
  from masksearch_jax import gin_flags, quickstart
  _import_stage_configurables()
  gin_flags.parse(gin_files=args.gin_file or ["quickstart.gin"], bindings=args.gin_bindings,
                  search_paths=args.gin_search_paths)
  import gin
  gin.get_configurable(quickstart.run)()
  return 0


def _add_table(sub: argparse._SubParsersAction) -> None:
  p = sub.add_parser("table", help="MaskSearch's main table in miniature on the embedded world "
                                   "(gin/runs/mini_masksearch_table.gin).")
  _add_gin_flags(p)
  p.set_defaults(func=_run_table)


def _run_table(args: argparse.Namespace) -> int:
  from masksearch_jax import gin_flags, mini_table
  _import_stage_configurables()
  gin_flags.parse(gin_files=args.gin_file or ["runs/mini_masksearch_table.gin"], bindings=args.gin_bindings,
                  search_paths=args.gin_search_paths)
  import gin
  gin.get_configurable(mini_table.run_table)()
  return 0


def _add_serve_model(sub: argparse._SubParsersAction) -> None:
  p = sub.add_parser("serve-model", help="Serve the policy as an OpenAI-compatible /v1/chat/completions endpoint.")
  p.add_argument("--checkpoint", required=True,
                 help="A parameter checkpoint, a run's checkpoints directory (newest step) or a run's model directory.")
  p.add_argument("--vocabulary", help="The policy's SentencePiece model (default: the tasks' vocabulary from Gin).")
  p.add_argument("--port", type=int, default=8001, help="Port (0: any free port; the URL is printed).")
  p.add_argument("--host", default="127.0.0.1", help="Bind address (loopback unless told otherwise).")
  p.add_argument("--model_name", default="masksearch-policy", help="The model name the server reports.")
  p.add_argument("--batch_size", type=int, default=8, help="Requests decoded together.")
  p.add_argument("--max_length", type=int, default=2048, help="Most tokens of a conversation and its reply.")
  p.add_argument("--max_new_tokens", type=int, default=512, help="Most tokens of one reply.")
  _add_gin_flags(p)
  p.set_defaults(func=_run_serve_model)


def _run_serve_model(args: argparse.Namespace) -> int:
  from masksearch_jax import gin_flags
  from masksearch_jax.agent.model_server import ModelServer
  from masksearch_jax.agent.policy_backend import PolicyBackend
  from masksearch_jax.data import seqio_tasks, vocabularies  # noqa: F401 -- Gin configurables, before parsing.
  gin_flags.parse(gin_files=args.gin_file, bindings=args.gin_bindings, search_paths=args.gin_search_paths)
  vocabulary = None
  if args.vocabulary:
    vocabulary = vocabularies.sentencepiece_vocabulary(args.vocabulary)
  backend = PolicyBackend(args.checkpoint, vocabulary=vocabulary, batch_size=args.batch_size,
                          max_length=args.max_length, max_new_tokens=args.max_new_tokens, model_name=args.model_name)
  server = ModelServer(backend, host=args.host, port=args.port)
  print(f"serving {backend!r} at {server.url}/v1 (POST /v1/chat/completions); Ctrl-C stops", flush=True)
  try:
    server.serve_forever()
  except KeyboardInterrupt:
    print("stopped", flush=True)
  finally:
    server.stop()
  return 0


# Flags of `masksearch eval` and the runs/eval.gin macros they set.
_EVAL_MACROS = (("checkpoint", "EVAL_CHECKPOINT"), ("benchmark", "EVAL_BENCHMARK"), ("path", "EVAL_PATH"),
                ("out", "EVAL_DIR"), ("method", "EVAL_METHOD"), ("mode", "EVAL_MODE"), ("label", "EVAL_LABEL"),
                ("split", "EVAL_SPLIT"), ("limit", "EVAL_LIMIT"), ("types", "EVAL_TYPES"), ("seed", "EVAL_SEED"),
                ("index", "EVAL_INDEX"), ("url", "EVAL_URL"), ("rag_top_k", "RAG_TOP_K"),
                ("vocabulary", "EVAL_VOCABULARY"), ("overwrite", "EVAL_OVERWRITE"))


def _add_eval(sub: argparse._SubParsersAction) -> None:
  p = sub.add_parser("eval", help="Evaluate a policy as a search agent (or a baseline) on a benchmark "
                                  "(gin/runs/eval.gin): recall, EM, F1, predictions, report.")
  p.add_argument("--checkpoint", help="The policy: a parameter checkpoint, a run's checkpoints or model directory.")
  p.add_argument("--benchmark", help="hotpotqa, musique, 2wiki, bamboogle, fanoutqa, freshqa, flashrag, searchr1 "
                                     "or world (the embedded world's questions).")
  p.add_argument("--path", help="The benchmark's file (for world: a world directory; default: the tasks' world).")
  p.add_argument("--out", help="The run directory (one method and seed; any number of benchmarks).")
  p.add_argument("--method", help="The method's name, the report's row (default masksearch).")
  p.add_argument("--mode", choices=("agent", "rag"), help="agent: multi-turn search (default); rag: retrieve the "
                                                          "top --rag_top_k passages once, then answer.")
  p.add_argument("--label", help="The benchmark's column name (default: its own name).")
  p.add_argument("--split", choices=("train", "dev", "test"), help="world only: the questions' split (default test).")
  p.add_argument("--limit", type=int, help="Evaluate the first N questions (0: all).")
  p.add_argument("--types", type=lambda s: [t for t in s.split(",") if t],
                 help="Only questions of these types, comma separated.")
  p.add_argument("--seed", type=int, help="Seed of the rollouts (default 0).")
  group = p.add_mutually_exclusive_group()
  group.add_argument("--index", help="Index directory (default for world: the world's index, built into the cache).")
  group.add_argument("--url", help="A retrieval server (Search-R1's /retrieve).")
  p.add_argument("--rag_top_k", type=int, help="Passages for --mode rag (default 3).")
  p.add_argument("--vocabulary", help="The policy's SentencePiece model (default: the tasks' vocabulary from Gin).")
  p.add_argument("--overwrite", action="store_const", const=True, help="Redo a finished evaluation.")
  _add_gin_flags(p)
  p.set_defaults(func=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
  import os

  from masksearch_jax import gin_flags
  files = list(args.gin_file)
  if not any(os.path.basename(f) == "eval.gin" for f in files):
    files.insert(0, "runs/eval.gin")
  flags = [f"{macro} = {getattr(args, name)!r}" for name, macro in _EVAL_MACROS if getattr(args, name) is not None]
  if len(files) == 1:  # Only runs/eval.gin: the required macros must come from flags or bindings.
    for name, macro in (("checkpoint", "EVAL_CHECKPOINT"), ("benchmark", "EVAL_BENCHMARK"), ("out", "EVAL_DIR")):
      if getattr(args, name) is None and not any(b.split("=")[0].strip() == macro for b in args.gin_bindings):
        raise gin_flags.ConfigError(f"masksearch eval needs --{name} (or --gin.{macro})")
  from masksearch_jax.eval import runner  # Registers the Gin configurables of evaluation before parsing.
  gin_flags.parse(gin_files=files, bindings=[*args.gin_bindings, *flags], search_paths=args.gin_search_paths)
  import gin
  result = gin_flags.call_configured(gin.get_configurable(runner.evaluate))
  if result.already_done:
    print(f"{result.directory} was already evaluated (--overwrite redoes it)")
  runner.print_summary(result)
  return 0


def _add_report(sub: argparse._SubParsersAction) -> None:
  p = sub.add_parser("report", help="Join evaluation runs into one table (markdown, JSON, PNG chart).")
  p.add_argument("run_dirs", nargs="+", help="Run directories of `masksearch eval` (seeds of a method are joined).")
  p.add_argument("--out", help="Directory for report.md, report.json and report.png (default: print only).")
  p.add_argument("--metric", default="recall", choices=("recall", "em", "f1", "judge"),
                 help="The main metric: the first table and the chart (default recall, the paper's).")
  p.set_defaults(func=_run_report)


def _run_report(args: argparse.Namespace) -> int:
  from masksearch_jax.eval import report
  content = report.report(report.load_results(args.run_dirs), args.metric)
  print(report.markdown_report(content), end="")
  if args.out:
    paths = report.write_report(args.run_dirs, args.out, args.metric)
    print(f"report of {len(content['runs'])} results -> {paths['md']}, {paths['json']}, {paths['png']}")
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  from masksearch_jax import gin_flags
  argv = list(sys.argv[1:] if argv is None else argv)
  # T5X-style `--gin.NAME=VALUE` flags become bindings before argparse sees them.
  argv = gin_flags.rewrite_macro_flags(argv)
  parser = argparse.ArgumentParser(prog="masksearch", description=__doc__.splitlines()[0])
  sub = parser.add_subparsers(dest="command", required=True)
  for add in (_add_quickstart, _add_train, _add_generate_world, _add_build_index, _add_search, _add_serve_index,
              _add_serve_model, _add_train_vocab, _add_make_ramp, _add_synthesize, _add_self_evolve, _add_dapo,
              _add_import_hf, _add_export_hf, _add_eval, _add_report, _add_table):
    add(sub)
  args = parser.parse_args(argv)
  _persist_compiled_programs()
  try:
    return int(args.func(args) or 0)
  except Exception as e:  # pylint: disable=broad-except
    if not isinstance(e, _user_errors()):
      raise
    # A mistake in the user's input or paths: one line, no traceback.
    print(f"masksearch {args.command}: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
          file=sys.stderr)
    return 2


def _persist_compiled_programs() -> None:
  """Keeps compiled XLA programs on disk, so a rerun, a resumed run or the table's next row does not
  compile the same train step and sampler again (about a minute per training stage of the tiny model
  on 2 CPU cores). The directory is $JAX_COMPILATION_CACHE_DIR when set (empty: no cache), else
  $MASKSEARCH_CACHE/xla (default ~/.cache/masksearch_jax/xla). JAX reads the variable when it is
  first imported, which the sub-commands do after this.
  """
  import os
  from pathlib import Path
  if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    root = os.environ.get("MASKSEARCH_CACHE") or Path.home() / ".cache" / "masksearch_jax"
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(Path(root) / "xla")


def _user_errors() -> tuple[type[Exception], ...]:
  """Errors that describe bad input or paths, imported only once a command has failed."""
  from masksearch_jax.data.passage import CorpusFormatError
  from masksearch_jax.errors import ConfigError
  errors: list[type[Exception]] = [CorpusFormatError, FileExistsError, FileNotFoundError, ConfigError]
  if "masksearch_jax.retrieval.tantivy_index" in sys.modules:
    errors.append(sys.modules["masksearch_jax.retrieval.tantivy_index"].IncompleteIndexError)
  if "masksearch_jax.models.hf_io" in sys.modules:
    hf_io = sys.modules["masksearch_jax.models.hf_io"]
    errors += [hf_io.UnsupportedHFConfigError, hf_io.CheckpointMismatchError]
  if "masksearch_jax.training.trainer" in sys.modules:
    errors.append(sys.modules["masksearch_jax.training.trainer"].NonFiniteLossError)
  if "masksearch_jax.rl.dynamic_sampling" in sys.modules:
    errors.append(sys.modules["masksearch_jax.rl.dynamic_sampling"].DynamicSamplingError)
  if "masksearch_jax.retrieval.client" in sys.modules:
    errors.append(sys.modules["masksearch_jax.retrieval.client"].RetrievalError)
  return tuple(errors)


if __name__ == "__main__":
  sys.exit(main())
