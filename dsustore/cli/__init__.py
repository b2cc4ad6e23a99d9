"""The ``dsustore`` command line: a thin layer over :mod:`dsustore.commands`."""

from __future__ import annotations

from .main import (
           EXIT_DRIFT,
           EXIT_FAILURE,
           EXIT_INTERRUPTED,
           EXIT_LOCKED,
           EXIT_OK,
           EXIT_PARTIAL,
           EXIT_PENDING,
           EXIT_USAGE,
           EXIT_VALIDATION,
           build_parser,
           main,
)

__all__ = ["EXIT_DRIFT", "EXIT_FAILURE", "EXIT_INTERRUPTED", "EXIT_LOCKED", "EXIT_OK",
           "EXIT_PARTIAL", "EXIT_PENDING", "EXIT_USAGE", "EXIT_VALIDATION", "build_parser", "main"]
