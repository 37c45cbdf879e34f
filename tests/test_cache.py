import json
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from crv_dagster.llm.base import ChatRequest, Completion, SamplingParams
from crv_dagster.llm.cache import CachedBackend, ResponseCache, cache_key
from crv_dagster.llm.transformers_backend import TransformersBackend


def _requests(n, **params):
    return [ChatRequest.of([{"role": "user", "content": f"What is {i} + {i}?"}], SamplingParams(**params))
            for i in range(n)]


@pytest.fixture(scope="module")
def backend(tiny_model):
    return TransformersBackend(tiny_model, batch_size=3)


def test_key_depends_on_model_messages_params_and_seed():
    base = _requests(1, max_new_tokens=8)[0]
    keys = {
        cache_key("m", base),
        cache_key("other-model", base),
        cache_key("m", _requests(2, max_new_tokens=8)[1]),
        cache_key("m", _requests(1, max_new_tokens=9)[0]),
        cache_key("m", _requests(1, max_new_tokens=8, seed=1)[0]),
        cache_key("m", _requests(1, max_new_tokens=8, temperature=0.7)[0]),
    }
    assert len(keys) == 6
    assert cache_key("m", base) == cache_key("m", _requests(1, max_new_tokens=8)[0])


def test_second_run_makes_no_model_calls(tmp_path, backend):
    requests = _requests(7, max_new_tokens=8)
    first = CachedBackend(backend, ResponseCache(tmp_path / "c.sqlite"))
    out1 = first.generate(requests)
    assert (first.stats.hits, first.stats.new_calls) == (0, 7)

    # A new process would open the same file: so does a new cache object here.
    second = CachedBackend(backend, ResponseCache(tmp_path / "c.sqlite"))
    out2 = second.generate(requests)
    assert (second.stats.hits, second.stats.new_calls) == (7, 0)
    assert out1 == out2


def test_only_misses_reach_the_model_and_duplicates_are_generated_once(tmp_path, backend):
    calls = []

    class Counting:
        model_id = backend.model_id

        def generate(self, requests, on_result=None):
            calls.append(len(requests))
            return backend.generate(requests, on_result)

        def close(self):
            pass

    cached = CachedBackend(Counting(), ResponseCache(tmp_path / "c.sqlite"))
    cached.generate(_requests(3, max_new_tokens=4))
    batch = _requests(5, max_new_tokens=4) + _requests(5, max_new_tokens=4)[3:]
    results = cached.generate(batch)
    assert calls == [3, 2]
    assert results[3] == results[5] and results[4] == results[6]
    assert (cached.stats.hits, cached.stats.new_calls) == (3, 3 + 2)


def test_generation_matches_uncached_backend(tmp_path, backend):
    requests = _requests(4, max_new_tokens=6)
    cached = CachedBackend(backend, ResponseCache(tmp_path / "c.sqlite"))
    assert cached.generate(requests) == backend.generate(requests)


KILLED_RUN = textwrap.dedent(
    """
    import json, os, signal, sys
    from crv_dagster.llm.base import ChatRequest, SamplingParams
    from crv_dagster.llm.cache import CachedBackend, ResponseCache
    from crv_dagster.llm.transformers_backend import TransformersBackend

    model, cache_file, n, die_after = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    requests = [ChatRequest.of([{"role": "user", "content": f"What is {i} + {i}?"}], SamplingParams(max_new_tokens=8))
                for i in range(n)]
    cached = CachedBackend(TransformersBackend(model, batch_size=2), ResponseCache(cache_file))
    done = []

    def on_result(i, completion):
        done.append(i)
        if die_after and len(done) == die_after:
            os.kill(os.getpid(), signal.SIGKILL)  # a hard crash: no cleanup, no finally

    cached.generate(requests, on_result=on_result)
    print(json.dumps({"hits": cached.stats.hits, "new_calls": cached.stats.new_calls}))
    """
)


def _run(tiny_model, cache_file, n, die_after):
    return subprocess.run([sys.executable, "-c", KILLED_RUN, tiny_model, str(cache_file), str(n), str(die_after)],
                          capture_output=True, text=True, timeout=300)


def test_a_killed_run_resumes_without_redoing_finished_items(tmp_path, tiny_model):
    cache_file = tmp_path / "c.sqlite"
    killed = _run(tiny_model, cache_file, 10, die_after=5)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(ResponseCache(cache_file)) == 5

    resumed = _run(tiny_model, cache_file, 10, die_after=0)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout.strip().splitlines()[-1]) == {"hits": 5, "new_calls": 5}

    again = _run(tiny_model, cache_file, 10, die_after=0)
    assert json.loads(again.stdout.strip().splitlines()[-1]) == {"hits": 10, "new_calls": 0}


def test_completion_round_trips_through_json():
    completion = Completion("a\n\nb \\boxed{3}", "length", 12, 34)
    assert Completion.from_json(completion.to_json()) == completion


def test_sampled_generation_is_seeded(backend):
    params = dict(max_new_tokens=8, temperature=1.0)
    a = backend.generate(_requests(2, seed=1, **params))
    b = backend.generate(_requests(2, seed=1, **params))
    assert a == b


def test_a_damaged_cache_is_set_aside_and_rebuilt_never_half_used(tmp_path):
    # A file SQLite cannot read at all.
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.warns(UserWarning, match=r"garbage.sqlite: the response cache is damaged"):
        cache = ResponseCache(garbage)
    assert cache.set_aside is not None and cache.set_aside.exists() and len(cache) == 0

    # A cache whose pages were overwritten: it opens, and fails its integrity check.
    path = tmp_path / "cache.sqlite"
    cache = ResponseCache(path)
    for i in range(400):
        cache.put(f"k{i}", "m", ChatRequest.of([{"role": "user", "content": f"q{i}"}], SamplingParams()),
                  Completion("x" * 200, "stop"))
    cache._connect().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    cache._connect().close()
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2: len(raw) // 2 + 8192] = b"\xff" * 8192
    path.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="set aside as"):
        reopened = ResponseCache(path)
    assert len(reopened) == 0 and reopened.set_aside.read_bytes() == bytes(raw)
    reopened.put("k", "m", ChatRequest.of([{"role": "user", "content": "q"}], SamplingParams()), Completion("y", "stop"))
    assert len(reopened) == 1


def test_a_damaged_stored_table_names_its_file_and_what_to_do(tmp_path):
    import pandas as pd

    from crv_dagster.storage import StoredTableError, read_table, write_table

    path = tmp_path / "critiques" / "arith" / "tiny-a.parquet"
    write_table(pd.DataFrame({"a": range(100)}), path)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(StoredTableError) as err:
        read_table(path, "asset 'critiques', partition 'arith|tiny-a'")
    message = str(err.value)
    assert message.startswith(f"{path}: the stored table (asset 'critiques', partition 'arith|tiny-a')")
    assert "materialize its asset again" in message


class _Counting:
    """A model that answers with the request's own question, and can fail on a chosen call (a run killed
    part way through a long step)."""

    model_id = "counting"

    def __init__(self, fail_on_call: int | None = None):
        self.calls: list[int] = []
        self.fail_on_call = fail_on_call

    def generate(self, requests, on_result=None):
        self.calls.append(len(requests))
        if len(self.calls) == self.fail_on_call:
            raise KeyboardInterrupt("killed")
        out = []
        for i, request in enumerate(requests):
            out.append(Completion(f"answer to {request.messages[-1][1]}", "stop", 3, 2))
            if on_result is not None:
                on_result(i, out[-1])
        return out


def test_new_requests_go_in_chunks_with_progress_and_a_killed_step_resumes_from_its_last_chunk(tmp_path):
    from crv_dagster.llm.progress import reporting_to

    cache = ResponseCache(tmp_path / "cache.sqlite")
    requests = _requests(10)
    lines: list[str] = []
    killed = CachedBackend(_Counting(fail_on_call=3), cache, chunk_size=3)
    with reporting_to(lines.append), pytest.raises(KeyboardInterrupt):
        killed.generate(requests)
    # Two chunks finished before the third was killed: their replies are kept, and said so.
    assert killed.backend.calls == [3, 3, 3] and len(cache) == 6
    assert [line.split(": ", 1)[1].split(" new")[0] for line in lines] == ["3/10", "6/10"]
    assert all("/s, about " in line and line.endswith(" left") for line in lines)

    lines.clear()
    again = CachedBackend(_Counting(), cache, chunk_size=3)
    with reporting_to(lines.append):
        results = again.generate(requests)
    assert [r.text for r in results] == [f"answer to {r.messages[-1][1]}" for r in requests]
    assert again.backend.calls == [3, 1]  # only the four that never finished
    assert [line.split(": ", 1)[1].split(" new")[0] for line in lines] == ["3/4", "4/4"]
    assert "(100%)" in lines[-1] and "about 0 s left" in lines[-1]
    meta = again.stats.as_metadata("teacher")
    assert meta["teacher_chunks"] == 2 and meta["teacher_cache_hits"] == 6 and meta["teacher_new_calls"] == 4
    assert meta["teacher_new_calls_per_s"] > 0


def test_progress_without_a_step_goes_to_the_python_log(tmp_path, caplog):
    with caplog.at_level("INFO", logger="crv_dagster.llm.progress"):
        CachedBackend(_Counting(), ResponseCache(tmp_path / "cache.sqlite"), chunk_size=8).generate(_requests(2))
    assert "counting: 2/2 new requests (100%)" in caplog.text


class _Slow(_Counting):
    """Each reply takes ``delay_s``: one chunk that lasts longer than the report interval."""

    def __init__(self, delay_s: float):
        super().__init__()
        self.delay_s = delay_s

    def generate(self, requests, on_result=None):
        out = []
        for i, request in enumerate(requests):
            time.sleep(self.delay_s)
            out.append(Completion(f"answer to {request.messages[-1][1]}", "stop", 3, 2))
            if on_result is not None:
                on_result(i, out[-1])
        return out


def test_a_long_chunk_still_reports_its_progress_at_the_interval(tmp_path, monkeypatch):
    from crv_dagster.llm import progress

    monkeypatch.setattr(progress, "REPORT_EVERY_S", 0.1)
    lines: list[str] = []
    backend = CachedBackend(_Slow(delay_s=0.25), ResponseCache(tmp_path / "cache.sqlite"), chunk_size=256)
    with progress.reporting_to(lines.append):
        backend.generate(_requests(4))
    # One chunk of four: without the interval, a single line at its end.
    assert len(lines) >= 5
    assert lines[0].startswith("counting: 0/4 new requests") and "no reply finished yet" in lines[0]
    during = [line for line in lines[1:-1] if not line.startswith("counting: 0/4")]
    assert during and all("/s, about " in line and line.endswith(" left") for line in during)
    assert lines[-1].startswith("counting: 4/4 new requests (100%)")
    # Nothing is reported once the call has returned.
    count = len(lines)
    time.sleep(0.3)
    assert len(lines) == count
