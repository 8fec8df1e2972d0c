"""The README examples run as printed (under keys of their own): the root README's Python
section and every Python block of python/README.md."""
import re
import subprocess
import sys

import pytest

import qshm
from conftest import ROOT, T, unique_key

KEYS = ("market", "quotes")


def python_blocks(text):
    return re.findall(r"```python\n(.*?)```", text, re.S)


def root_example():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("\n## Python\n"):]
    return python_blocks(section[:section.index("\n## ", 1)])


def package_examples():
    return python_blocks((ROOT / "python" / "README.md").read_text(encoding="utf-8"))


def run_example(code):
    keys = {name: unique_key(f"readme-{name}") for name in KEYS}
    for name, key in keys.items():
        code = code.replace(f'"{name}"', repr(key))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=T)
    assert (out.returncode, out.stdout, out.stderr) == (0, "", "")
    for key in keys.values():
        with pytest.raises(qshm.NotFound):  # destroyed by the last detach
            qshm.SharedMemory(key).attach()


def test_the_readme_python_section_has_one_ten_line_example():
    (code,) = root_example()
    lines = [line for line in code.splitlines() if line.strip() and not line.startswith("import")]
    assert len(lines) <= 10, lines


@pytest.mark.parametrize("where", ["README.md", "python/README.md"])
def test_the_readme_examples_run(where, np):
    blocks = root_example() if where == "README.md" else package_examples()
    assert blocks
    for code in blocks:
        run_example(code)
