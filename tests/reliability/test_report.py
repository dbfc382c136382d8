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
