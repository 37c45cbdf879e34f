"""vLLM's offline engine, run in a child process.

vLLM does not reliably give GPU memory back when its ``LLM`` object is deleted, and the next
asset on the same GPU (training) needs it; a child process that exits frees everything. The
child is started with ``spawn`` (CUDA cannot be forked) and handles one ``generate`` call at a
time, each sent whole so vLLM can schedule the batch itself. It is not a daemon: vLLM's engine
starts processes of its own, which a daemonic process may not. A child that dies is reported as
an error instead of being waited for; a parent that dies (a step worker killed with SIGKILL, or by
the OOM killer) takes the child and its engine with it, so a re-run finds the GPU free.

The child drives the engine itself, as ``LLM.chat`` does (``enqueue_chat``, then ``step`` until
every request is finished), and sends each completion back the moment its request finishes; the
parent hands it to ``on_result`` (the response cache stores it) at once. A run killed at hour
five keeps every reply that finished, not only those of the calls that ended.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import threading
from typing import Sequence

from crv_dagster.llm.base import BackendError, ChatRequest, Completion, ResultCallback
from crv_dagster.llm.identity import model_fingerprint


def _exit_with_parent(engine: list) -> None:
    """Ends this child when its parent ends, however it ended: a child left behind by a killed
    step keeps its GPU memory, and the re-run's engine or training would then find none."""
    parent = mp.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()  # the parent's sentinel closes when it exits, SIGKILL included
        # The engine may be mid-step in the main thread; a shutdown that hangs must not keep us.
        threading.Timer(20, os._exit, args=(1,)).start()
        try:
            if engine:
                _shutdown(engine[0])
        finally:
            for proc in mp.active_children():  # the engine core, if the shutdown left it
                proc.kill()
            os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _engine_loop(engine_kwargs: dict, inbox, outbox) -> None:
    engine: list = []  # filled once the engine exists, for the watcher to shut it down
    _exit_with_parent(engine)
    try:
        from vllm import LLM
        from vllm import SamplingParams as VllmSampling

        llm = LLM(**engine_kwargs)
        engine.append(llm)
    except Exception as err:  # report start-up failures to the parent instead of dying silently
        outbox.put(("error", f"{type(err).__name__}: {err}"))
        return
    outbox.put(("ready", None))
    while True:
        job = inbox.get()
        if job is None:
            _shutdown(llm)
            return
        requests: list[str] = []
        try:
            conversations = [c for c, _ in job]
            sampling = [
                VllmSampling(max_tokens=p["max_new_tokens"], temperature=p["temperature"], top_p=p["top_p"], seed=p["seed"])
                for _, p in job
            ]
            requests = llm.enqueue_chat(conversations, sampling, use_tqdm=False)
            # enqueue_chat gives the engine's internal ids (the caller's id, a dash and 8 random
            # characters); finished outputs carry the caller's id.
            position = {request_id.rsplit("-", 1)[0]: i for i, request_id in enumerate(requests)}
            engine = llm.llm_engine
            while position and engine.has_unfinished_requests():
                for out in engine.step():
                    if out.finished and out.request_id in position:
                        best = out.outputs[0]
                        outbox.put(("one", (position.pop(out.request_id), best.text, best.finish_reason or "stop",
                                            len(out.prompt_token_ids), len(best.token_ids))))
            if position:
                raise RuntimeError(f"the engine stopped with {len(position)} request(s) unanswered")
            outbox.put(("done", None))
        except Exception as err:
            if requests:  # leave nothing of this call running in the engine
                llm.llm_engine.abort_request(list(requests), internal=True)
            outbox.put(("error", f"{type(err).__name__}: {err}"))


def _shutdown(llm) -> None:
    """Stops the engine's own processes: left to the interpreter's exit, they kept the child
    alive for a minute."""
    client = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if client is not None and hasattr(client, "shutdown"):
        client.shutdown()


class VllmBackend:
    def __init__(self, name_or_path: str, *, tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.85,
                 max_model_len: int | None = None, dtype: str = "auto", seed: int = 0, enforce_eager: bool = False,
                 engine_args: dict | None = None):
        """``engine_args`` go to ``vllm.LLM`` as they are (``swap_space``, ``kv_cache_memory_bytes``...)."""
        try:
            import vllm  # noqa: F401  (fail early, in the parent, with a clear message)
        except ImportError:
            raise BackendError("the vllm backend needs vLLM: `make setup-gpu` on a GPU machine "
                               "(the project's gpu extra under constraints-gpu.txt)") from None
        kwargs = dict(model=name_or_path, tensor_parallel_size=tensor_parallel_size,
                      gpu_memory_utilization=gpu_memory_utilization, dtype=dtype, seed=seed,
                      enforce_eager=enforce_eager, **(engine_args or {}))
        if max_model_len:
            kwargs["max_model_len"] = max_model_len
        ctx = mp.get_context("spawn")
        self._inbox, self._outbox = ctx.Queue(), ctx.Queue()
        self._proc = ctx.Process(target=_engine_loop, args=(kwargs, self._inbox, self._outbox))
        self._proc.start()
        status, detail = self._receive()
        if status != "ready":
            self._proc.join(timeout=30)
            if self._proc.is_alive():
                self._proc.kill()
            # vLLM's exception often names only the process that failed; the cause is in its log.
            raise BackendError(f"vLLM engine for {name_or_path} failed to start: {detail} "
                               "(the root cause is in vLLM's log above)")
        self._model_id = model_fingerprint(name_or_path)

    def _receive(self) -> tuple[str, object]:
        """The child's next message; an error when it died without one."""
        while True:
            try:
                return self._outbox.get(timeout=5)
            except queue.Empty:
                if not self._proc.is_alive():
                    return "error", f"the engine process died (exit code {self._proc.exitcode})"

    @property
    def model_id(self) -> str:
        return self._model_id

    def generate(self, requests: Sequence[ChatRequest], on_result: ResultCallback | None = None) -> list[Completion]:
        if not requests:
            return []
        self._inbox.put([(r.message_dicts(), vars(r.params)) for r in requests])
        results: list[Completion | None] = [None] * len(requests)
        while True:
            status, payload = self._receive()
            if status == "done":
                return results  # type: ignore[return-value]
            if status != "one":
                raise BackendError(f"vLLM generation failed: {payload}")
            i, text, finish, n_prompt, n_out = payload
            results[i] = Completion(text.strip(), "length" if finish == "length" else "stop", n_prompt, n_out)
            if on_result is not None:  # as each request finishes, not when the call ends
                on_result(i, results[i])

    def close(self) -> None:
        if self._proc.is_alive():
            self._inbox.put(None)
            self._proc.join(timeout=60)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(timeout=10)
