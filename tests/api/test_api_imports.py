"""The HTTP layer stays light: importing it never pulls in torch or transformers."""

from __future__ import annotations

import subprocess
import sys


def test_api_does_not_import_torch():
    code = (
        "import sys, toolkit.api; "
        "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
