"""scripts/reliability_report.py --quick runs every campaign and writes the report with its counts."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_report(tmp_path):
    out = tmp_path / "RELIABILITY.md"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "reliability_report.py"), "--quick", "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    text = out.read_text()

    def count(label):
        m = re.search(rf"\| {re.escape(label)}[^|]*\| ([\d,]+) \|", text)
        assert m, label
        return int(m.group(1).replace(",", ""))

    calls = count("calls fuzzed")
    assert calls >= 60
    assert count("... answered") + count("... refused with a ValueError") + count("... refused with a TypeError") == calls
    assert count("kills survived") >= 4 and count("bytes lost") == 0
    assert count("files rejected") >= 30
    assert "| Ctrl-C: exit code, checkpoint at the step reached | 130," in text


HANG = """
import sys, time
sys.path.insert(0, {scripts!r})
import reliability_report
with reliability_report.time_limit("a call that never returns", 1.0):
    {body}
print("returned")
"""


def _hang(body: str) -> subprocess.CompletedProcess:
    code = HANG.format(scripts=str(ROOT / "scripts"), body=body)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)


def test_a_call_past_its_time_limit_is_reported_as_a_hang():
    r = _hang("time.sleep(60)")
    assert r.returncode == 3 and "returned" not in r.stdout
    assert "HANG: a call that never returns did not return within 1 s" in r.stderr
    assert "time.sleep" in r.stderr or "line 6" in r.stderr  # the hanging call's traceback


def test_a_call_that_holds_the_gil_is_stopped_too():
    r = _hang("import ctypes; ctypes.PyDLL(None).sleep(60)")  # a C call that never releases the GIL
    assert r.returncode != 0 and "returned" not in r.stdout
    assert "Timeout" in r.stderr  # faulthandler's own report, from its C thread


def test_a_call_within_its_limit_runs_normally():
    r = _hang("time.sleep(0.1)")
    assert r.returncode == 0 and r.stdout.strip() == "returned", r.stderr
