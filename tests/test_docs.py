"""The documentation builds with warnings as errors (a broken link fails), and the README stays a
page a newcomer reads: short, with every link it gives pointing at a file that exists."""

import re
import subprocess
import sys
from pathlib import Path

from crv_dagster.config import PROJECT_ROOT

README = PROJECT_ROOT / "README.md"


def test_the_docs_build_strictly(tmp_path):
    done = subprocess.run([str(Path(sys.executable).with_name("mkdocs")), "build", "--strict", "--site-dir",
                           str(tmp_path / "site")], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "sharing" / "index.html").is_file()


def test_the_readme_is_short_and_its_links_resolve():
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    local = [target for target in re.findall(r"\]\(([^)#]+)\)", text) if not target.startswith("http")]
    assert local and all((PROJECT_ROOT / target).is_file() for target in local), local
