"""Checkpoint files: atomic writes, the record inside the tensors file, refusal of truncated,
altered or mixed-up files, a full disk, and nothing ever unpickled."""

import errno
import hashlib
import json
import os
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as save_tensors

from rnnlab.train import checkpoint


def test_round_trip_and_no_temporary_files(tmp_path):
    tensors = {"a": torch.randn(3, 4), "step": torch.tensor(5.0), "g": torch.ByteTensor([1, 2])}
    checkpoint.save(tmp_path, "last", tensors, {"step": 5, "x": [1, "y"]})
    got, meta = checkpoint.load(tmp_path, "last")
    assert meta["step"] == 5 and meta["x"] == [1, "y"]
    assert all(torch.equal(got[k], v) for k, v in tensors.items())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.json", "last.safetensors"]
    assert json.loads((tmp_path / "last.json").read_text())["x"] == [1, "y"]  # the readable copy


def test_a_json_copy_from_an_earlier_save_is_ignored(tmp_path):
    checkpoint.save(tmp_path, "last", {"a": torch.zeros(1)}, {"step": 5, "config": {"c": 1}})
    old = (tmp_path / "last.json").read_bytes()
    checkpoint.save(tmp_path, "last", {"a": torch.ones(1)}, {"step": 10, "config": {"c": 1}})
    (tmp_path / "last.json").write_bytes(old)  # killed between the tensors file and its JSON copy
    got, meta = checkpoint.load(tmp_path, "last")
    assert meta["step"] == 10 and torch.equal(got["a"], torch.ones(1))
    (tmp_path / "last.json").unlink()  # or killed before the first JSON copy was written
    assert checkpoint.load(tmp_path, "last")[1]["step"] == 10


def test_mismatched_files_are_detected(tmp_path):
    checkpoint.save(tmp_path, "last", {"a": torch.zeros(1)}, {"step": 5})
    meta = json.loads((tmp_path / "last.json").read_text())
    meta["step"] = 6  # a JSON copy newer than the tensors: never written by a save, the files were mixed
    (tmp_path / "last.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"different saves \(step: 6 in the JSON, 5 in the tensors file\)"):
        checkpoint.load(tmp_path, "last")


def test_a_checkpoint_without_its_record_inside_still_checks_the_steps(tmp_path):
    """Checkpoints written before the record went into the tensors file: the JSON is the record."""
    blob = save_tensors({"a": torch.zeros(1)}, metadata={"format": checkpoint.LEGACY, "step": "5"})
    (tmp_path / "last.safetensors").write_bytes(blob)
    (tmp_path / "last.json").write_text(json.dumps({"format": checkpoint.LEGACY, "step": 5}))
    assert checkpoint.load(tmp_path, "last")[1]["step"] == 5
    (tmp_path / "last.json").write_text(json.dumps({"format": checkpoint.LEGACY, "step": 6}))
    with pytest.raises(ValueError, match="interrupted"):
        checkpoint.load(tmp_path, "last")
    (tmp_path / "last.json").unlink()
    with pytest.raises(ValueError, match="expected last.json"):
        checkpoint.load(tmp_path, "last")


def corruptions(blob: bytes):
    n = int.from_bytes(blob[:8], "little")
    yield "empty", b"", "fewer than a safetensors header"
    yield "cut in the length", blob[:5], "fewer than a safetensors header"
    yield "cut in the header", blob[:8 + n // 2], "truncated"
    yield "cut in the data", blob[:-3], "digest"
    yield "a flipped bit", blob[:-1] + bytes([blob[-1] ^ 1]), "digest"
    yield "a header that is not JSON", blob[:8] + b"{" * n + blob[8 + n:], "not valid JSON"
    yield "a JSON list header", (2).to_bytes(8, "little") + b"[]", "expected an object"
    yield "a huge length", (1 << 62).to_bytes(8, "little") + blob[8:], "truncated"
    yield "another program's file", save_tensors({"a": torch.zeros(1)}), "expected an rnnlab-checkpoint-2"
    yield "text", b"hello, world: this is not a checkpoint", "truncated"


@pytest.mark.parametrize("case", range(10))
def test_corrupt_files_are_refused_with_the_reason(tmp_path, case):
    checkpoint.save(tmp_path, "last", {"w": torch.randn(4, 4), "b": torch.randn(4)}, {"step": 3})
    name, bad, words = list(corruptions((tmp_path / "last.safetensors").read_bytes()))[case]
    (tmp_path / "last.safetensors").write_bytes(bad)
    with pytest.raises(ValueError, match=re.escape(words)) as e:
        checkpoint.load(tmp_path, "last")
    assert "last.safetensors" in str(e.value), name


def test_corrupt_json_copy(tmp_path):
    checkpoint.save(tmp_path, "last", {"a": torch.zeros(1)}, {"step": 5})
    (tmp_path / "last.json").write_bytes(b"\xff\xfe not json")
    assert checkpoint.load(tmp_path, "last")[1]["step"] == 5  # the record inside the tensors file is complete


def test_a_full_disk_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    checkpoint.save(tmp_path, "last", {"a": torch.zeros(100)}, {"step": 5})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real_write = os.write

    for fail_on in ("safetensors", "json"):
        calls = []

        def full(fd, data, *, fail_on=fail_on):
            name = os.readlink(f"/proc/self/fd/{fd}")
            calls.append(name)
            if fail_on in name:
                real_write(fd, bytes(data)[: len(data) // 2])  # part of it lands, then the disk is full
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_write(fd, data)

        monkeypatch.setattr(checkpoint, "_write", full)
        with pytest.raises(OSError) as e:
            checkpoint.save(tmp_path, "last", {"a": torch.ones(100)}, {"step": 10})
        assert e.value.errno == errno.ENOSPC
        assert any(fail_on in c for c in calls)
        monkeypatch.undo()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["last.json", "last.safetensors"]  # no temporaries
        tensors, meta = checkpoint.load(tmp_path, "last")
        if fail_on == "safetensors":
            assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
            assert meta["step"] == 5 and torch.equal(tensors["a"], torch.zeros(100))
        else:  # the tensors file, record inside, had landed: the new checkpoint is complete
            assert meta["step"] == 10 and torch.equal(tensors["a"], torch.ones(100))


def test_stale_temporaries_are_removed(tmp_path):
    checkpoint.save(tmp_path, "last", {"a": torch.zeros(1)}, {"step": 5})
    (tmp_path / ".last.safetensors.tmp-12345").write_bytes(b"half a file")
    assert checkpoint.remove_temporaries(tmp_path) == [".last.safetensors.tmp-12345"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.json", "last.safetensors"]


def test_missing_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="found none"):
        checkpoint.load(tmp_path, "best")


def test_check_tensors_names_the_mismatch():
    model = {"rnn.weight_hh_l0": torch.zeros(32, 8), "rnn.bias_l0": torch.zeros(32)}
    checkpoint.check_tensors(model, dict(model), "model")
    with pytest.raises(ValueError, match=r"rnn.weight_hh_l0 is \(24, 8\).*\(32, 8\)"):
        checkpoint.check_tensors(model, {**model, "rnn.weight_hh_l0": torch.zeros(24, 8)}, "model")
    with pytest.raises(ValueError, match="missing rnn.bias_l0; unexpected rnn.bias_l1"):
        checkpoint.check_tensors(model, {"rnn.weight_hh_l0": torch.zeros(32, 8), "rnn.bias_l1": torch.zeros(32)}, "model")


def test_nothing_is_ever_unpickled():
    """No pickle, and torch.load only with weights_only=True, anywhere in the package or scripts."""
    root = Path(checkpoint.__file__).parents[3]
    files = [*(root / "src" / "rnnlab").rglob("*.py"), *(root / "scripts").rglob("*.py")]
    assert len(files) > 50
    for path in files:
        text = path.read_text(encoding="utf-8")
        for bad in ("import pickle", "from pickle", "pickle.load", "cPickle", "import dill", "joblib.load",
                    "np.load(", "numpy.load("):
            assert bad not in text or "allow_pickle=False" in text, f"{path}: {bad}"
        for m in re.finditer(r"torch\.load\(", text):
            call = text[m.start(): text.find(")", m.start()) + 1]
            assert "weights_only=True" in call, f"{path}: {call}"


def _rewrite_header(blob: bytes, change) -> bytes:
    """The file with its header parsed, changed by ``change(header)`` and written back (data unchanged)."""
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    change(header)
    text = json.dumps(header).encode("utf-8")
    text += b" " * (-len(text) % 8)  # safetensors pads its header to 8 bytes
    return len(text).to_bytes(8, "little") + text + blob[8 + n:]


def _edit_record(header):
    meta = header["__metadata__"]
    record = json.loads(meta["meta"])
    record["step"] = 9
    meta["meta"], meta["step"] = json.dumps(record, indent=1), "9"


def _edit_table(header):
    header["w"]["shape"] = [2, 8]  # the same bytes read as another shape


def _drop_digest(header):
    del header["__metadata__"]["sha256"]


@pytest.mark.parametrize("change, words", [(_edit_record, "header or tensor data do not match the digest"),
                                           (_edit_table, "header or tensor data do not match the digest"),
                                           (_drop_digest, "header has no digest")])
def test_an_edited_header_is_refused(tmp_path, change, words):
    checkpoint.save(tmp_path, "last", {"w": torch.randn(4, 4), "b": torch.randn(4)}, {"step": 3})
    path = tmp_path / "last.safetensors"
    path.write_bytes(_rewrite_header(path.read_bytes(), change))
    (tmp_path / "last.json").unlink()  # no JSON copy to disagree with: the digest alone must catch it
    with pytest.raises(ValueError, match=re.escape(words)):
        checkpoint.load(tmp_path, "last")


def test_a_header_written_with_other_spacing_but_the_same_content_loads(tmp_path):
    saved = {"w": torch.randn(4, 4), "b": torch.randn(4)}
    checkpoint.save(tmp_path, "last", saved, {"step": 3})
    path = tmp_path / "last.safetensors"
    path.write_bytes(_rewrite_header(path.read_bytes(), lambda header: None))  # json.dumps' own spacing
    tensors, meta = checkpoint.load(tmp_path, "last")
    assert meta["step"] == 3 and all(torch.equal(tensors[k], v) for k, v in saved.items())


def test_a_first_format_file_with_a_data_only_digest_still_loads(tmp_path):
    record = json.dumps({"format": checkpoint.LEGACY, "step": 4}, indent=1)
    base = {"format": checkpoint.LEGACY, "step": "4", "meta": record}
    flat = {"a": torch.arange(3.0)}
    data = save_tensors(flat, metadata=base)[8 + int.from_bytes(save_tensors(flat, metadata=base)[:8], "little"):]
    blob = save_tensors(flat, metadata={**base, "sha256": hashlib.sha256(data).hexdigest()})
    (tmp_path / "last.safetensors").write_bytes(blob)
    assert checkpoint.load(tmp_path, "last")[1]["step"] == 4
    (tmp_path / "last.safetensors").write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))
    with pytest.raises(ValueError, match="tensor data does not match the digest"):
        checkpoint.load(tmp_path, "last")
