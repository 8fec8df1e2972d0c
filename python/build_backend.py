"""maturin, with the `abi3` feature off when the building Python is older than 3.11.

The abi3 wheel needs CPython 3.11's stable ABI (the buffer protocol joined it then); for
3.9 and 3.10, `pip install ./python` builds a wheel for that interpreter instead.
"""
import os
import sys

if sys.version_info < (3, 11):
    _args = os.environ.get("MATURIN_PEP517_ARGS", "")
    if "--no-default-features" not in _args:
        os.environ["MATURIN_PEP517_ARGS"] = (_args + " --no-default-features").strip()

from maturin import *  # noqa: E402,F401,F403  (the PEP 517 hooks)
