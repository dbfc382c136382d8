"""The python examples of docs/deploying.md run, in order, and their assertions hold."""

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "deploying.md"


def blocks():
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_doc_has_an_example_for_each_way_to_deploy():
    code = "\n".join(blocks())
    for name in ("to_onnx(", "Streamer(", "compile_model(", "export_program("):
        assert name in code


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
def test_doc_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the examples write their .onnx files to the working directory
    namespace = {"__name__": "deploying_md"}
    for i, code in enumerate(blocks()):
        exec(compile(code, f"{DOC.name}[block {i}]", "exec"), namespace)
    assert (tmp_path / "gru.onnx").exists() and (tmp_path / "tagger.onnx").exists()
