"""Resolve the GPU install (the project with its `dev` and `gpu` extras) for Linux x86_64 with
NVIDIA's CUDA wheels, from a machine that has neither: pip's resolver in dry-run mode, told the
target's platform tags and Python version, reading only package metadata.

    python scripts/gpu_resolve.py            # resolve afresh, write constraints-gpu.txt
    python scripts/gpu_resolve.py --check    # resolve under constraints-gpu.txt: still complete and installable?

Why each choice (docs/development.md, "The GPU install", has the measured outcome):
- pip's own configuration on the machine is ignored (``--isolated``): a developer machine may cap
  torch or point at a folder of CPU wheels (torch 2.13.0+cpu satisfies ``torch==2.13.0``), and the
  GPU machine has neither.
- Every manylinux tag up to the target's glibc is listed: pip does not widen ``--platform
  manylinux_2_35_x86_64`` to older tags, and wheels come tagged 2_17 to 2_31 (llguidance 1.7, which
  vLLM requires, only as manylinux_2_31: a list stopping at 2_28 finds no 1.7 wheel).
- DeepSpeed is published as a source archive only, which a platform-targeted resolve may not
  build. Its metadata is built here (it does not depend on the platform: its ops compile at run
  time), its requirements join the resolve, and it is pinned as a source build on the target.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

if sys.version_info < (3, 11):  # tomllib reads pyproject.toml
    sys.exit("gpu_resolve.py needs Python 3.11 or newer")
import tomllib  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "constraints-gpu.txt"
EXTRAS = ("dev", "gpu")
SOURCE_ONLY = {"deepspeed"}  # no wheels on the index: built on the target
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


class ResolveError(RuntimeError):
    pass


def platform_args(glibc: str) -> list[str]:
    major, minor = (int(x) for x in glibc.split("."))
    if major != 2:
        raise SystemExit(f"--glibc {glibc}: expected 2.N")
    tags = [f"manylinux_2_{m}_x86_64" for m in range(minor, 4, -1)]
    tags += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
    return [arg for tag in tags for arg in ("--platform", tag)]


def _name(requirement: str) -> str:
    """The requirement's project name, normalised as the index spells it (PEP 503)."""
    return re.sub(r"[-_.]+", "-", re.split(r"[\s\[<>=!~;(]", requirement.strip(), maxsplit=1)[0]).lower()


def project_requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {})
    missing = [e for e in EXTRAS if e not in extras]
    if missing:
        raise ResolveError(f"pyproject.toml has no extra {missing}")
    return list(project["dependencies"]) + [r for e in EXTRAS for r in extras[e]]


def _pip(*args: str) -> list[str]:
    base = [sys.executable, "-m", "pip", "--isolated", "--disable-pip-version-check"]
    if Path(CA_BUNDLE).is_file():
        base += ["--cert", CA_BUNDLE]
    return base + list(args)


def _run_pip(args: list[str], report: Path) -> dict:
    run = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "PIP_NO_INPUT": "1"})
    if run.returncode != 0:
        errors = [line for line in run.stderr.splitlines() if line.startswith("ERROR")] or run.stderr.splitlines()[-15:]
        raise ResolveError("\n".join(errors))
    return json.loads(report.read_text())


def source_only_requirements(requirement: str, work: Path) -> list[str]:
    """The base (no extra) requirements of a source-only package, from metadata built here."""
    report = work / f"{_name(requirement)}.json"
    data = _run_pip(_pip("install", "--dry-run", "--no-deps", "--ignore-installed", "--quiet",
                         "--target", str(work / "meta"), "--report", str(report), requirement), report)
    [item] = data["install"]
    return [r for r in item["metadata"].get("requires_dist", []) if "extra ==" not in r]


def resolve(python_version: str, glibc: str, constraints: Path | None = None) -> tuple[list[dict], list[str]]:
    """(the resolved wheels as pip's report lists them, the source-only pins)."""
    requirements = project_requirements()
    with tempfile.TemporaryDirectory(prefix="gpu-resolve-") as tmp:
        work = Path(tmp)
        source_pins = [r for r in requirements if _name(r) in SOURCE_ONLY]
        wheels = [r for r in requirements if _name(r) not in SOURCE_ONLY]
        for pin in source_pins:
            wheels += source_only_requirements(pin, work)
        (work / "requirements.txt").write_text("\n".join(wheels) + "\n")
        args = ["install", "--dry-run", "--ignore-installed", "--target", str(work / "target"),
                "--only-binary=:all:", *platform_args(glibc), "--python-version", python_version,
                "--implementation", "cp", "--report", str(work / "report.json"), "-r", str(work / "requirements.txt")]
        if constraints is not None:
            # The source-only pins are not installed by this resolve: leave them out of its constraints.
            kept = [line for line in constraints.read_text().splitlines()
                    if line.strip() and not line.startswith("#") and _name(line) not in SOURCE_ONLY]
            (work / "constraints.txt").write_text("\n".join(kept) + "\n")
            args += ["-c", str(work / "constraints.txt")]
        data = _run_pip(_pip(*args), work / "report.json")
    return data["install"], source_pins


def constraints_text(installed: list[dict], source_pins: list[str], python_version: str, glibc: str) -> str:
    lines = [
        "# The GPU install, resolved by `make gpu-resolve` (scripts/gpu_resolve.py): the project with its",
        f"# dev and gpu extras for CPython {python_version} on Linux x86_64 with glibc {glibc} (manylinux",
        "# wheels up to that), CUDA builds from the index. Install with `make setup-gpu`. Generated:",
        "# change pyproject.toml and re-run `make gpu-resolve` (docs/development.md, \"The GPU install\").",
    ]
    pins = {_name(item["metadata"]["name"]): item["metadata"]["version"] for item in installed}
    lines += [f"{name}=={version}" for name, version in sorted(pins.items())]
    lines.append("# Source only on the index (no wheels): built on the target.")
    lines += sorted(source_pins)
    return "\n".join(lines) + "\n"


def pins_of(text: str) -> dict[str, str]:
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[_name(name)] = version.strip()
    return pins


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python-version", default="3.11")
    parser.add_argument("--glibc", default="2.35", help="the target's glibc (Ubuntu 22.04: 2.35)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--check", action="store_true",
                        help="resolve under --out's pins and fail unless they are complete and resolve unchanged")
    args = parser.parse_args()
    try:
        installed, source_pins = resolve(args.python_version, args.glibc, args.out if args.check else None)
    except ResolveError as err:
        print(f"gpu-resolve: the GPU install does not resolve for CPython {args.python_version}, Linux x86_64, "
              f"glibc {args.glibc}:\n{err}", file=sys.stderr)
        return 1
    text = constraints_text(installed, source_pins, args.python_version, args.glibc)
    if args.check:
        expected, got = pins_of(args.out.read_text()), pins_of(text)
        if expected != got:
            changed = sorted(set(expected.items()) ^ set(got.items()))
            print(f"gpu-resolve: {args.out.name} is not what its own pins resolve to: {changed}", file=sys.stderr)
            return 1
        print(f"gpu-resolve: {args.out.name} resolves unchanged ({len(got)} packages)")
        return 0
    args.out.write_text(text)
    versions = pins_of(text)
    print(f"gpu-resolve: {len(versions)} packages written to {args.out.name} (torch {versions.get('torch')}, "
          f"vllm {versions.get('vllm')}, deepspeed {versions.get('deepspeed')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
