"""One `requests.Session` per thread, for the HTTP clients that may be called from many threads."""

from __future__ import annotations

import threading

import requests


class ThreadSessions:
  """Keep-alive sessions, one per calling thread, all closed together.

  `requests.Session` is not documented as thread-safe, so threads do not share one.
  """

  def __init__(self):
    self._local = threading.local()
    self._sessions: list[requests.Session] = []
    self._lock = threading.Lock()

  def get(self) -> requests.Session:
    """The calling thread's session, made on its first call."""
    session = getattr(self._local, "session", None)
    if session is None:
      session = requests.Session()
      self._local.session = session
      with self._lock:
        self._sessions.append(session)
    return session

  def close(self) -> None:
    """Closes every session made so far; later calls of `get` make new ones. Safe to call twice."""
    with self._lock:
      sessions, self._sessions = self._sessions, []
    for session in sessions:
      session.close()
    self._local = threading.local()
