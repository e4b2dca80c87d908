"""scripts/record_result.py: a study's report copied for docs/results, assets renamed, the reading after the verdicts."""

import gzip
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "record_result.py"


def _record(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=False)


def test_report_assets_and_reading_land_under_the_name(tmp_path):
    study, into = tmp_path / "study", tmp_path / "results"
    study.mkdir()
    into.mkdir()
    (study / "report.md").write_text("# s\n\n## Verdicts\n\n- a beats b.\n- c vs d: no difference.\n\nNote.\n\n"
                                     "![curves_val.png](curves_val.png)\n\nData: `curves.csv` (cumulative).\n")
    (study / "curves_val.png").write_bytes(b"\x89PNG fake")
    (study / "curves.csv").write_text("run,step,val_loss\na,1,2.0\n")
    (tmp_path / "reading.txt").write_text("both\nend level.\n")
    done = _record(str(study), "s-converge", "--where", "2 cores, 2026-11-27", "--reading", str(tmp_path / "reading.txt"),
                   "--into", str(into))
    assert done.returncode == 0, done.stderr
    md = (into / "s-converge.md").read_text().splitlines()
    assert md[0] == "<!-- 2 cores, 2026-11-27 -->"
    at = md.index("- c vs d: no difference.")
    assert md[at + 1] == "" and md[at + 2] == "Reading (written by hand after the run): both end level."
    assert "![curves_val.png](s-converge-curves_val.png)" in md and "Data: `s-converge-curves.csv.gz` (cumulative)." in md
    assert (into / "s-converge-curves_val.png").read_bytes() == b"\x89PNG fake"
    assert gzip.decompress((into / "s-converge-curves.csv.gz").read_bytes()) == b"run,step,val_loss\na,1,2.0\n"


def test_a_folder_without_a_report_is_one_line(tmp_path):
    done = _record(str(tmp_path), "x", "--where", "here", "--into", str(tmp_path))
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "report.md" in done.stderr
    assert not (tmp_path / "x.md").exists()
