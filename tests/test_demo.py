"""The demo of ``make demo``, run small: it succeeds and keeps its plain passwords private."""

from __future__ import annotations

import json
import stat
import subprocess
import sys

from conftest import ROOT


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_demo_keeps_its_credentials_and_database_for_its_owner_alone(tmp_path):
    """Release 1 keeps passwords in plain text and the credentials file lists them: the work
    folder is 0700 and the credentials file 0600, never world-readable."""
    work = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "sample_app.demo", "--workdir", str(work), "--accounts", "20",
         "--products", "5", "--orders", "20", "--sessions", "5", "--workers", "2",
         "--warmup", "0.5", "--after", "0.5"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    credentials = work / "credentials.json"
    assert mode(credentials) == 0o600
    assert mode(work) == 0o700
    assert json.loads(credentials.read_text())["accounts"][0]["password"]
    assert not [p.name for p in work.iterdir() if p.name.startswith(".credentials.json.")]
