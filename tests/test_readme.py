"""README.md stays true: its python examples run, in order, and their assertions hold."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def test_readme_names_the_two_commands():
    text = README.read_text()
    assert "make demo" in text and "make test" in text


def test_deploying_has_an_example_for_each_way_to_deploy():
    code = "\n".join(blocks(section("Deploying")))
    for name in ("to_onnx(", "torch.onnx.export(", "Streamer(", "torch.compile(", "torch.export.export("):
        assert name in code


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
def test_readme_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples write their .onnx files to the working directory
    namespace = {"__name__": "readme"}
    for i, code in enumerate(blocks(README.read_text())):
        exec(compile(code, f"README.md[block {i}]", "exec"), namespace)
    assert (tmp_path / "gru.onnx").exists() and (tmp_path / "tagger.onnx").exists()
