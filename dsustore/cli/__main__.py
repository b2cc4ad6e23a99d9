"""``python -m dsustore.cli``: the ``dsustore`` command."""

from __future__ import annotations

from .main import main

raise SystemExit(main())
