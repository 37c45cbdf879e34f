"""OpenMP threads sleep while they wait, unless the user chose otherwise: spinning threads of two
processes sharing the cores made CPU generation 16x slower (benchmarks/omp_wait_policy.py)."""

import os
import subprocess
import sys


def _policy_after_import(env: dict) -> str:
    code = "import crv_dagster, os; print(os.environ.get('OMP_WAIT_POLICY'))"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_importing_the_package_makes_openmp_wait_passively_unless_told_otherwise():
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    assert _policy_after_import(env) == "PASSIVE"
    assert _policy_after_import({**env, "OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"
