"""A scripted chat backend for testing agent control flow.

It implements the backend interface with replies chosen by a function of the prompt, so a test
can say "the Rethinker's first two rewrites are wrong" exactly. Model behaviour itself is tested
against real models elsewhere; this double only drives the loops.
"""

from crv_dagster.llm.base import Completion


class ScriptedBackend:
    model_id = "scripted"

    def __init__(self, reply, finish_reason="stop"):
        self.reply = reply  # (prompt_text, params) -> str
        self.finish_reason = finish_reason
        self.prompts: list[str] = []

    def generate(self, requests, on_result=None):
        out = []
        for i, request in enumerate(requests):
            prompt = request.messages[-1][1]
            self.prompts.append(prompt)
            completion = Completion(self.reply(prompt, request.params), self.finish_reason)
            out.append(completion)
            if on_result:
                on_result(i, completion)
        return out

    def close(self):
        pass
