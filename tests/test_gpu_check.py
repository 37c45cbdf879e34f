"""The GPU check, run where there is no GPU: its CPU fallback, through the real training job."""

import json
import math
import subprocess
import sys

from crv_dagster.config import PROJECT_ROOT


def test_the_gpu_check_runs_on_a_cpu_and_reports_what_it_checked(tmp_path):
    run = subprocess.run([sys.executable, str(PROJECT_ROOT / "benchmarks" / "gpu_check.py"), "--out", str(tmp_path),
                          "--steps", "2"], capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    from crv_dagster.models.loading import cpu_has_bf16

    # bf16 mixed precision on a CPU only where it multiplies bf16 natively (AMX, AVX512-BF16)
    assert report["device"] == "cpu" and report["bf16"] is cpu_has_bf16() and report["passed"] is True
    assert set(report["students"]) == {"tiny-qwen2", "tiny-llama"}
    for student in report["students"].values():
        assert set(student["runs"]) == {"sft", "cogpo", "dpo"}
        for method, result in student["runs"].items():
            assert result["steps"] == 2 and result["finite_losses"]
            assert math.isfinite(result["loss"]["last"])
            assert result["checkpoint"] == {"dtype": "torch.float32", "finite_logits": True}
        assert student["runs"]["cogpo"]["loss_by_kind_after"]  # the per-pair-beta trainer ran
    assert report["peak_host_memory_mib"] > 0


def test_a_non_finite_loss_fails_the_check():
    sys.path.insert(0, str(PROJECT_ROOT / "benchmarks"))
    try:
        from gpu_check import _finite_losses
    finally:
        sys.path.pop(0)
    from types import SimpleNamespace as Result  # what the check reads of a TrainingResult: its curves

    assert _finite_losses(Result(history=[{"sft/loss": 1.2, "step": 1}, {"sft/loss": 0.9, "step": 2}]))
    assert not _finite_losses(Result(history=[{"sft/loss": 1.2}, {"sft/loss": float("nan")}]))
    assert not _finite_losses(Result(history=[]))  # nothing logged is not a pass
