"""The sandbox against hostile programs, and grading in LiveCodeBench's format.

Every attack is bounded by the program itself (a deadline, a number of forks, a total of bytes),
so that a broken sandbox costs at most that and harms neither the machine nor this test process.
Attacks that only namespaces stop run with isolation "namespaces", which CI must have (the
Makefile installs bubblewrap): there they fail instead of being skipped.
"""

import base64
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest

from crv_dagster.sandbox import Limits, Sandbox, namespaces_available
from crv_dagster.sandbox.cases import TestCase, TestCaseError, parse_cases, problem_cases
from crv_dagster.sandbox.grading import all_passed, extract_program, grade_program, outputs_match
from crv_dagster.sandbox.runner import FIRST_UID

if not namespaces_available() and os.environ.get("CI"):
    raise RuntimeError("CI must run the sandbox tests with namespaces: install bubblewrap (make setup does)")
needs_namespaces = pytest.mark.skipif(not namespaces_available(), reason="bubblewrap, setpriv and root needed")

LIMITS = Limits(cpu_seconds=2, wall_seconds=10, memory_mb=256, file_size_mb=8, processes=16, disk_mb=32)


@pytest.fixture(scope="module")
def sandbox():
    return Sandbox(LIMITS, isolation="namespaces" if namespaces_available() else "limits", concurrency=2)


@pytest.fixture(autouse=True)
def this_process_is_unharmed():
    """After every test of this module, whatever it ran: this process, its parent and the signal
    handlers pytest installed are as they were (a sandbox escape could kill or re-signal them)."""
    before = (os.getpid(), os.getppid(), signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
    yield
    # A parent that died would leave this process re-parented (to init or a subreaper).
    assert (os.getpid(), os.getppid(), signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    os.kill(before[1], 0)  # and the parent itself is still there


def _leftover_processes() -> list[str]:
    """Processes of the sandbox's uids still alive."""
    out = subprocess.run(["ps", "-eo", "uid=,pid=,comm="], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if FIRST_UID <= int(line.split()[0]) < FIRST_UID + 64]


# --------------------------------------------------------------------------- hostile programs


def test_an_endless_loop_is_stopped_at_its_cpu_limit(sandbox):
    program = "import time\nend = time.time() + 60\nwhile time.time() < end:\n    pass\n"
    result = sandbox.run_python(program)
    assert result.status == "timeout" and result.wall_s < LIMITS.wall_seconds


def test_a_sleeping_program_is_killed_at_the_wall_clock_limit():
    quick = Sandbox(Limits(wall_seconds=1.5), isolation="auto")
    started = time.monotonic()
    result = quick.run_python("import time\ntime.sleep(30)\n")
    assert result.status == "timeout" and time.monotonic() - started < 10


@needs_namespaces
def test_a_fork_bomb_hits_the_process_limit_and_leaves_nothing_behind(sandbox):
    # At most 200 children, each gone after 20 s: bounded even with no limit at all.
    program = ("import os, time\nforked = 0\n"
               "try:\n"
               "    for _ in range(200):\n"
               "        if os.fork() == 0:\n"
               "            time.sleep(20)\n"
               "            os._exit(0)\n"
               "        forked += 1\n"
               "finally:\n"
               "    print(forked, flush=True)\n")
    result = sandbox.run_python(program)
    assert result.status == "runtime_error" and "BlockingIOError" in result.detail, result
    assert int(result.stdout) < LIMITS.processes
    time.sleep(0.5)
    assert _leftover_processes() == []  # the children died with the sandbox's PID namespace


def test_a_memory_hog_gets_a_memory_error(sandbox):
    program = "chunks = []\nfor _ in range(64):\n    chunks.append(bytearray(64 << 20))  # at most 4 GiB\n"
    result = sandbox.run_python(program)
    assert result.status == "runtime_error" and "MemoryError" in result.detail


def test_a_1_gb_write_stops_at_the_file_size_limit(sandbox):
    program = ("chunk = b'0' * (1 << 20)\nwith open('big.bin', 'wb') as f:\n"
               "    for _ in range(1024):\n        f.write(chunk)\n")
    result = sandbox.run_python(program)
    assert result.status == "runtime_error" and "File too large" in result.detail


def test_the_environment_is_empty(sandbox, monkeypatch):
    monkeypatch.setenv("CRV_SANDBOX_SECRET", "hunter2")
    result = sandbox.run_python("import os\nprint(sorted(os.environ.items()))\n")
    assert result.status == "ok" and "hunter2" not in result.stdout and "CRV_SANDBOX_SECRET" not in result.stdout
    assert "OPENAI_API_KEY" not in result.stdout and "HF_TOKEN" not in result.stdout


@needs_namespaces
def test_a_socket_to_loopback_reaches_nothing(sandbox):
    received = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(8)
    port = server.getsockname()[1]

    def accept():
        try:
            conn, _ = server.accept()
            received.append(conn.recv(100))
            conn.close()
        except OSError:
            pass

    listener = threading.Thread(target=accept)
    listener.start()
    program = (f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=3)\n"
               "s.sendall(b'exfiltrated')\n")
    result = sandbox.run_python(program)
    listener.join()
    server.close()
    assert received == [] and result.status == "runtime_error"
    assert "Connection refused" in result.detail or "unreachable" in result.detail


@needs_namespaces
def test_writes_outside_its_directory_fail(sandbox, tmp_path):
    import shutil
    import tempfile

    outside = Path(tempfile.mkdtemp(dir="/var/tmp"))
    outside.chmod(0o777)  # writable by anyone: only the read-only mount can stop the write
    try:
        target = outside / "outside.txt"
        result = sandbox.run_python(f"open({str(target)!r}, 'w').write('owned')\n")
        assert result.status == "runtime_error" and "Read-only file system" in result.detail
        assert not target.exists()
    finally:
        shutil.rmtree(outside)
    # The host's /tmp is not the sandbox's: a file written "there" stays inside the sandbox.
    (tmp_path / "dir").mkdir()
    result = sandbox.run_python(f"import os\nos.makedirs({str(tmp_path / 'dir')!r}, exist_ok=True)\n"
                                f"open({str(tmp_path / 'dir' / 'x.txt')!r}, 'w').write('owned')\n")
    assert result.status == "ok" and list((tmp_path / "dir").iterdir()) == []
    # Its own directory is writable.
    assert sandbox.run_python("open('mine.txt', 'w').write('ok')\nprint(open('mine.txt').read())\n").stdout == "ok\n"


@needs_namespaces
def test_a_program_that_kills_its_parent_harms_no_one(tmp_path):
    """Run through the command line, so that even with the sandbox broken the parent it kills is
    that command, never this test process; the decoy stands in for any other process."""
    decoy = subprocess.Popen(["sleep", "60"])
    try:
        program = tmp_path / "killer.py"
        program.write_text("import os, signal\ntarget = int(input())\nhit = []\n"
                           "for pid in (os.getppid(), target, 1):\n"
                           "    try:\n        os.kill(pid, signal.SIGKILL)\n        hit.append(pid)\n"
                           "    except OSError:\n        pass\n"
                           "print(hit)\n")
        tests = tmp_path / "tests.json"
        tests.write_text(json.dumps([{"input": f"{decoy.pid}\n", "output": "[]", "testtype": "stdin"}]))
        run = subprocess.run([sys.executable, "-m", "crv_dagster.sandbox", str(program), "--tests", str(tests),
                              "--isolation", "namespaces"], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stdout + run.stderr  # the command lived to report, and the test passed
        [outcome, summary] = [json.loads(line) for line in run.stdout.splitlines()]
        assert outcome["status"] == "pass" and summary["all_passed"]  # it killed nothing
        assert decoy.poll() is None  # the decoy is alive
    finally:
        decoy.kill()
        decoy.wait()


def test_output_is_capped():
    small = Sandbox(Limits(output_bytes=1000, wall_seconds=10), isolation="auto")
    result = small.run_python("import sys\nfor _ in range(100000):\n    sys.stdout.write('x' * 100)\n")
    assert result.status == "ok" and len(result.stdout) == 1000 and result.output_truncated


def test_a_segfault_is_a_crash(sandbox):
    result = sandbox.run_python("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n")
    assert result.status == "crash" and "SIGSEGV" in result.detail


# --------------------------------------------------------------------------- grading


def test_stdin_tests_compare_lines_and_numbers_as_decimals(sandbox):
    program = "a, b = map(float, input().split())\nprint(f'{a + b:.2f}')\nprint()\n"
    cases = [TestCase("1 2\n", "3.0\n", "stdin"), TestCase("1 1\n", "3\n", "stdin")]
    outcomes = grade_program(sandbox, program, cases)
    assert [o.status for o in outcomes] == ["pass", "fail"]
    assert outcomes[1].detail == "line 1: printed '2.00', expected '3'"
    assert outputs_match("1 2.50\n\n", "1 2.5") and not outputs_match("1 2", "1 2 3")


def test_functional_tests_call_the_solution_method(sandbox):
    program = ("class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n"
               "        print('noise')\n        seen = {}\n        for i, x in enumerate(nums):\n"
               "            if target - x in seen:\n                return (seen[target - x], i)\n"
               "            seen[x] = i\n")
    cases = [TestCase("[2,7,11,15]\n9", "[0, 1]", "functional"), TestCase("[1,2]\n3", "[1,0]", "functional")]
    outcomes = grade_program(sandbox, program, cases, func_name="twoSum")
    assert [o.status for o in outcomes] == ["pass", "fail"] and "expected [1, 0]" in outcomes[1].detail
    assert not all_passed(outcomes) and all_passed(outcomes[:1])


def test_no_code_block_fails_every_test_without_running(sandbox):
    assert extract_program("I would write a loop.") is None
    assert extract_program("```python\nprint(1)\n```\nthen\n```\nprint(2)\n```") == "print(2)\n"
    outcomes = grade_program(sandbox, None, [TestCase("", "1", "stdin")])
    assert outcomes[0].status == "fail" and "no fenced code block" in outcomes[0].detail


def test_livecodebench_fields_json_and_compressed():
    cases = [{"input": "1\n", "output": "2\n", "testtype": "stdin"}]
    compressed = base64.b64encode(zlib.compress(pickle.dumps(json.dumps(cases)))).decode()
    record = {"public_test_cases": json.dumps(cases), "private_test_cases": compressed,
              "metadata": json.dumps({"func_name": None})}
    parsed, func_name = problem_cases(record)
    assert parsed == [TestCase("1\n", "2\n", "stdin")] * 2 and func_name is None


def test_a_pickle_that_would_run_code_is_refused():
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch /tmp/crv-pwned",))

    payload = base64.b64encode(zlib.compress(pickle.dumps(Evil()))).decode()
    with pytest.raises(TestCaseError, match="private_test_cases: neither JSON"):
        problem_cases({"public_test_cases": "[]", "private_test_cases": payload}, where="lcb[3]")
    assert not os.path.exists("/tmp/crv-pwned")


def test_bad_test_cases_name_the_field():
    with pytest.raises(TestCaseError, match=r"p\[1\]: a test case needs 'input' and 'output'"):
        parse_cases([{"input": "", "output": ""}, {"input": ""}], "p")
    with pytest.raises(TestCaseError, match="metadata.func_name"):
        problem_cases({"public_test_cases": [{"input": "1", "output": "1", "testtype": "functional"}]})


def test_the_command_line_prints_one_verdict_per_test(tmp_path):
    program = tmp_path / "p.py"
    program.write_text("print(int(input()) * 2)\n")
    tests = tmp_path / "t.json"
    tests.write_text(json.dumps([{"input": "2\n", "output": "4\n", "testtype": "stdin"},
                                 {"input": "x\n", "output": "0\n", "testtype": "stdin"}]))
    run = subprocess.run([sys.executable, "-m", "crv_dagster.sandbox", str(program), "--tests", str(tests)],
                         capture_output=True, text=True, timeout=120)
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert run.returncode == 1
    assert [(l["test"], l["status"]) for l in lines[:2]] == [(0, "pass"), (1, "runtime_error")]
    assert "ValueError" in lines[1]["detail"] and lines[2]["passed"] == 1
    bad = subprocess.run([sys.executable, "-m", "crv_dagster.sandbox", str(program), "--tests", str(program)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "cannot read test cases" in bad.stderr
