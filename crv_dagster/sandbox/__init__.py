"""Running untrusted programs (a model's code) and checking them against tests.

``runner`` isolates one run; ``cases`` reads test cases in LiveCodeBench's format; ``grading``
runs a program against its tests and says, per test, pass, fail, timeout, crash or runtime error.
No Dagster here: the evaluation and the Verifier call these functions.
"""

from crv_dagster.sandbox.runner import Limits, RunResult, Sandbox, namespaces_available

__all__ = ["Limits", "RunResult", "Sandbox", "namespaces_available"]
