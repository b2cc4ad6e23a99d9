"""Running one measurement in a process of its own, on a fresh copy of the database.

Each measurement of a benchmark runs in its own process so that its peak RSS is its
own, on a copy of the FileStorage so that it starts from the same records as the
others. The child prints its result as JSON on its last line.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any


def measure_in_child(path: Path, what: str, child: str) -> dict[str, Any]:
    """Run the Python source ``child`` with (copy of ``path``, ``what``) as arguments; its result."""
    copy = path.with_name(f"{what}.fs")
    shutil.copy(path, copy)
    out = subprocess.run([sys.executable, "-c", child, str(copy), what],
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{what} failed:\n{out.stderr}")
    for suffix in ("", ".index", ".lock", ".tmp", ".old"):
        Path(str(copy) + suffix).unlink(missing_ok=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result
