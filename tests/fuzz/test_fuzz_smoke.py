"""A short coverage-guided fuzz run in every `make test` (the long one is `make fuzz`): libFuzzer through atheris
over the concentrator's and client's datagram entry points (tests.fuzz.targets), from the seed flow's datagrams.
Any exception leaving the core stops the run with a crash file, and fails this test."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.fuzz, pytest.mark.skipif(sys.platform != "linux", reason="atheris runs on Linux")]
REPO = Path(__file__).resolve().parents[2]


def test_fuzz_entry_points_briefly(tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    corpus = tmp_path / "corpus"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-m", "tests.fuzz.seeds", str(corpus)], check=True, cwd=REPO, env=env,
                   capture_output=True, timeout=120)
    run = subprocess.run([sys.executable, "-m", "tests.fuzz.run", "-runs=40000", "-max_len=700", "-seed=1",
                          f"-artifact_prefix={tmp_path}/", str(corpus)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    done = re.search(r"#(\d+)\s+DONE\s+cov: (\d+)", run.stderr)
    assert done and int(done.group(1)) == 40000, run.stderr[-2000:]
    assert int(done.group(2)) > 500, "the inputs reached the core (coverage)"
    assert not list(tmp_path.glob("crash-*"))
