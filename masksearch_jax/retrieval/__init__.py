"""Retrieval: Tantivy index build and search, HTTP server and client."""

from __future__ import annotations

from masksearch_jax.retrieval.retriever import Retriever, SearchHit


def open_retriever(index: str | None = None, url: str | None = None, **kwargs) -> Retriever:
  """Opens the in-process index at `index`, or a client of the server at `url`."""
  if (index is None) == (url is None):
    raise ValueError("open_retriever needs exactly one of index= or url=")
  if index is not None:
    from masksearch_jax.retrieval.tantivy_index import TantivyRetriever
    return TantivyRetriever(index, **kwargs)
  from masksearch_jax.retrieval.client import HttpRetriever
  return HttpRetriever(url, **kwargs)


__all__ = ["Retriever", "SearchHit", "open_retriever"]
