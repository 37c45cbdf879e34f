"""A persistent, content-addressed response cache in front of any backend.

The key is a hash of (model id, messages, sampling parameters incl. seed). Entries are
committed one by one as the backend reports them, so an interrupted run keeps everything that
finished, and a second run of the same work makes no model calls. SQLite in WAL mode lets
several processes (parallel partitions) share one cache file.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from crv_dagster.llm import progress
from crv_dagster.llm.base import ChatBackend, ChatRequest, Completion, ResultCallback

# New requests go to the model in chunks of this many (a backend may set its own): each chunk's
# replies are in the cache when it ends, and progress is reported after each.
CHUNK_SIZE = 256


def cache_key(model_id: str, request: ChatRequest) -> str:
    return hashlib.sha256(f"{model_id}\n{request.canonical()}".encode()).hexdigest()


class ResponseCache:
    """A damaged cache file (one SQLite cannot read, or that fails its integrity check) is set
    aside as ``<name>.damaged-<time>`` with a warning naming it, and a new cache is started: a
    cache is never half-used, and what it held is only model calls to make again."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self.set_aside: Path | None = None
        try:
            self._open()
        except sqlite3.OperationalError:
            raise  # a locked database, a full disk, no write permission: nothing to set aside for
        except sqlite3.DatabaseError as err:
            self._set_aside(err)
            self._open()

    def _open(self) -> None:
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS responses ("
                " key TEXT PRIMARY KEY, model_id TEXT NOT NULL, request TEXT NOT NULL,"
                " completion TEXT NOT NULL, created REAL NOT NULL)"
            )
            [verdict] = conn.execute("PRAGMA quick_check").fetchone()
        if verdict != "ok":
            raise sqlite3.DatabaseError(verdict)

    def _set_aside(self, err: Exception) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        self.set_aside = self.path.with_name(f"{self.path.name}.damaged-{int(time.time())}")
        for suffix in ("", "-wal", "-shm"):
            part = Path(f"{self.path}{suffix}")
            if part.exists():
                part.rename(Path(f"{self.set_aside}{suffix}"))
        warnings.warn(f"{self.path}: the response cache is damaged ({err}); set aside as {self.set_aside} "
                      "and started anew (its replies will be generated again)", stacklevel=3)

    def _connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=60.0)
            self._local.conn = conn
        return conn

    def get_many(self, keys: Sequence[str]) -> dict[str, Completion]:
        found: dict[str, Completion] = {}
        conn = self._connect()
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for key, raw in conn.execute(f"SELECT key, completion FROM responses WHERE key IN ({marks})", chunk):
                found[key] = Completion.from_json(raw)
        return found

    def put(self, key: str, model_id: str, request: ChatRequest, completion: Completion) -> None:
        conn = self._connect()
        with conn:
            conn.execute(
                "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?)",
                (key, model_id, request.canonical(), completion.to_json(), time.time()),
            )

    def __len__(self) -> int:
        return self._connect().execute("SELECT COUNT(*) FROM responses").fetchone()[0]


@dataclass
class CacheStats:
    """What a backend's requests cost. Tokens count every completion handed out, from the cache or
    new: what the data took to make. ``new_*`` and ``generation_s`` are this process's own work."""

    hits: int = 0
    new_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    new_completion_tokens: int = 0
    generation_s: float = 0.0
    chunks: int = 0  # of new requests sent to the model
    served_by: dict[str, int] = field(default_factory=dict)  # per replica, for a backend that has several

    def as_metadata(self, prefix: str = "llm") -> dict[str, int | float]:
        out = {f"{prefix}_cache_hits": self.hits, f"{prefix}_new_calls": self.new_calls,
               f"{prefix}_prompt_tokens": self.prompt_tokens, f"{prefix}_completion_tokens": self.completion_tokens,
               f"{prefix}_new_completion_tokens": self.new_completion_tokens,
               f"{prefix}_generation_s": round(self.generation_s, 3), f"{prefix}_chunks": self.chunks}
        if self.new_calls and self.generation_s > 0:
            out[f"{prefix}_new_calls_per_s"] = round(self.new_calls / self.generation_s, 3)
        if len(self.served_by) > 1:  # endpoint i is the i-th of the backend's base_urls
            out.update({f"{prefix}_endpoint_{i}_served": n for i, n in enumerate(self.served_by.values())})
        return out


class CachedBackend:
    """Wraps a backend: answers from the cache first, sends only the misses to the model."""

    def __init__(self, backend: ChatBackend, cache: ResponseCache, chunk_size: int = CHUNK_SIZE):
        self.backend = backend
        self.cache = cache
        self.chunk_size = chunk_size
        self.stats = CacheStats()
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return self.backend.model_id

    def generate(self, requests: Sequence[ChatRequest], on_result: ResultCallback | None = None) -> list[Completion]:
        keys = [cache_key(self.model_id, r) for r in requests]
        cached = self.cache.get_many(keys)
        results: list[Completion | None] = [cached.get(k) for k in keys]
        for i, result in enumerate(results):
            if result is not None and on_result is not None:
                on_result(i, result)

        # Identical requests in one batch are generated once.
        pending: dict[str, list[int]] = {}
        for i, (key, result) in enumerate(zip(keys, results)):
            if result is None:
                pending.setdefault(key, []).append(i)
        misses = [requests[positions[0]] for positions in pending.values()]
        miss_keys = list(pending)

        heartbeat = progress.Heartbeat(self.model_id, len(misses))

        def store(j: int, completion: Completion) -> None:
            self.cache.put(miss_keys[j], self.model_id, misses[j], completion)
            heartbeat.advance()
            for i in pending[miss_keys[j]]:
                results[i] = completion
                if on_result is not None:
                    on_result(i, completion)

        started = time.perf_counter()
        chunks = 0
        with heartbeat if misses else contextlib.nullcontext():
            for first in range(0, len(misses), self.chunk_size):
                chunk = misses[first:first + self.chunk_size]
                completions = self.backend.generate(chunk, on_result=lambda j, c, first=first: store(first + j, c))
                for j, completion in enumerate(completions, start=first):
                    if results[pending[miss_keys[j]][0]] is None:  # a backend that did not call back
                        store(j, completion)
                chunks += 1
                progress.report(heartbeat.line())
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:
            raise RuntimeError(f"backend returned no completion for request(s) {missing[:10]}")
        with self._lock:
            self.stats.hits += len(requests) - sum(len(p) for p in pending.values())
            self.stats.new_calls += len(misses)
            self.stats.prompt_tokens += sum(r.prompt_tokens for r in results)
            self.stats.completion_tokens += sum(r.completion_tokens for r in results)
            self.stats.new_completion_tokens += sum(results[p[0]].completion_tokens for p in pending.values())
            self.stats.chunks += chunks
            if misses:
                self.stats.generation_s += time.perf_counter() - started
            self.stats.served_by = dict(getattr(self.backend, "served_by", {}))
        return results  # type: ignore[return-value]

    def close(self) -> None:
        self.backend.close()

    # A backend holds a model, a process or connections: `with build_backend(...) as backend:`.
    def __enter__(self) -> "CachedBackend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

