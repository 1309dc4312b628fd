"""The README's examples run as written: every ```python block (```py marks fragments that
need a process group), and the DDP example script."""

import pathlib
import re
import subprocess
import sys

import torch

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["x"].grad is not None and torch.isfinite(namespace["x"].grad).all()
    assert namespace["edges"].grad is not None and namespace["bandwidth"].grad is not None


def test_ddp_example_matches_single_process():
    script = README.parent / "examples" / "ddp_histogram_loss.py"
    assert "examples/ddp_histogram_loss.py" in README.read_text()
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("match")
