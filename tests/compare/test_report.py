"""`rnnlab compare --profile tiny`: the report's structure, its self-containment, the run cache,
and the page in headless Chromium (skipped when there is none)."""

import io
import json
import re

import pytest
from click.testing import CliRunner

from rnnlab.cli import main
from rnnlab.compare import SECTIONS, SEED_TABLE, run_comparison
from rnnlab.compare.browser import check_page, find_chromium
from rnnlab.compare.document import anchor


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    log = io.StringIO()
    paths = run_comparison("tiny", out=root / "report", cache=root / "runs", jobs=1, log=log)
    return root, paths, log.getvalue()


def test_every_section_and_seed_row_is_there(tiny):
    _, paths, _ = tiny
    md = paths["markdown"].read_text()
    page = paths["html"].read_text()
    for title in SECTIONS:
        assert f"\n## {title}\n" in md
        assert f'<h2 id="{anchor(title)}">' in page
    table = md.split("## The seed's table, measured")[1].split("\n## ")[0]
    for feature, rnn, lstm, gru in SEED_TABLE:
        row = next(line for line in table.splitlines() if line.startswith(f"| {feature} |"))
        assert f"| {rnn} | {lstm} | {gru} |" in row
        verdict = row.rstrip(" |").rsplit("| ", 1)[1]
        assert re.fullmatch(r"\*\*(confirmed|refuted|not resolved at this budget|partly: .+|.+: .+)\*\*", verdict)


def test_html_is_self_contained(tiny):
    _, paths, _ = tiny
    page = paths["html"].read_text()
    srcs = re.findall(r'\bsrc\s*=\s*"([^"]*)"', page)
    hrefs = re.findall(r'\bhref\s*=\s*"([^"]*)"', page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert all(h.startswith("#") or h == "unroll.html" for h in hrefs)  # the interactive page beside it
    assert paths["unrolled"].name == "unroll.html" and paths["unrolled"].parent == paths["html"].parent
    unrolled = paths["unrolled"].read_text(encoding="utf-8")  # the three trained cells, drawn from their own numbers
    assert unrolled.count("<svg xmlns") == 3 and 'href="unroll.html"' in page and not re.search(r"\bsrc\s*=", unrolled)
    assert "<link" not in page and "@import" not in page and "url(http" not in page
    assert "gate-text" in page  # the gate-coloured text view is inlined
    # the markdown's plots exist beside it
    md = paths["markdown"].read_text()
    for name in re.findall(r"\]\(plots/([^)]+)\)", md):
        assert (paths["plots"] / name).read_bytes().startswith(b"\x89PNG")


def test_measurements_match_the_report(tiny):
    _, paths, _ = tiny
    m = json.loads(paths["measurements"].read_text())
    assert [r["feature"] for r in m["seed_table"]] == [row[0] for row in SEED_TABLE]
    cells = m["parameters"]["cells"]
    assert all(c["counted"] == c["closed_form"] for c in cells.values())
    assert set(m["memory"]["ladder"]) == {"adding", "copy", "temporal_order"}
    assert len(m["memory"]["ladder"]["adding"]["lstm"]["5"]["solved"]) == len(m["seeds"]) >= 3
    assert m["run"]["trained"] > 0


def test_rerun_trains_nothing(tiny, tmp_path):
    root, _, first_log = tiny
    assert "0 cached" in first_log
    log = io.StringIO()
    run_comparison("tiny", out=tmp_path / "again", cache=root / "runs", jobs=1, log=log)
    assert "0 to train" in log.getvalue()


def test_cli_rejects_unknown_profile():
    result = CliRunner().invoke(main, ["compare", "--profile", "huge"])
    assert result.exit_code != 0 and "huge" in result.output


def test_bad_arguments():
    with pytest.raises(ValueError, match="profile: expected one of"):
        run_comparison("huge")
    with pytest.raises(ValueError, match="jobs"):
        run_comparison("tiny", jobs=0)


@pytest.mark.skipif(find_chromium() is None, reason="no chromium on PATH (apt-get install -y chromium)")
def test_report_renders_in_chromium(tiny):
    _, paths, _ = tiny
    result = check_page(paths["html"])
    assert result.images > 5 and result.loaded == result.images
    assert result.errors == [] and result.console == []
    assert result.headings == len(SECTIONS)
    assert result.ok


@pytest.mark.skipif(find_chromium() is None, reason="no chromium on PATH (apt-get install -y chromium)")
def test_chromium_check_catches_a_broken_page(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text('<html><head></head><body><img src="missing.png"><script>notDefined()</script></body></html>')
    result = check_page(bad)
    assert result.images == 1 and result.loaded == 0
    assert any("notDefined" in e for e in result.errors)
    assert not result.ok


def test_no_train_reports_missing_yardstick_runs_and_refuses_other_gaps(tiny, tmp_path):
    import shutil

    from rnnlab.compare.protocol import PROFILES, schedule
    from rnnlab.compare.training import RunCache

    root, _, _ = tiny
    cache = tmp_path / "runs"
    shutil.copytree(root / "runs", cache)
    sched = schedule(PROFILES["tiny"])
    gone = next(spec for info, spec in sched["yardsticks"] if info["cell"] == "gru" and info["seed"] == 1)
    shutil.rmtree(RunCache(cache)._dir(gone))
    paths = run_comparison("tiny", out=tmp_path / "report", cache=cache, jobs=1, log=io.StringIO(), train=False)
    md = paths["markdown"].read_text()
    assert "(1 of 3 runs not trained: no verdict)" in md
    m = json.loads(paths["measurements"].read_text())
    row = next(c for r in m["yardsticks"]["results"] if r["yardstick"]["key"] == "mnist1d" for c in r["cells"]
               if c["cell"] == "gru")
    assert row["missing"] == 1 and row["verdict"] is None and len(row["result"]["values"]) == 2
    shutil.rmtree(RunCache(cache)._dir(sched["memory"][0][1]))
    with pytest.raises(ValueError, match="cache: 1 runs of profile 'tiny' outside the yardsticks"):
        run_comparison("tiny", out=tmp_path / "again", cache=cache, jobs=1, log=io.StringIO(), train=False)


def test_cli_no_train_names_the_missing_runs(tmp_path):
    result = CliRunner().invoke(main, ["compare", "--profile", "tiny", "--no-train", "--cache", str(tmp_path / "empty"),
                                       "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "outside the yardsticks are not in" in result.output
