"""Copy a study's report into docs/results/ for readers who will not run it.

    python scripts/record_result.py STUDY_DIR NAME --where "machine, torch, date, wall time, load" [--reading FILE]

writes docs/results/NAME.md (the report with a header comment saying where and when it was measured, and an optional
hand-written "Reading" paragraph after the verdicts), NAME-curves_*.png and NAME-curves.csv.gz.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("study_dir", type=Path)
    p.add_argument("name", help="e.g. vit_x_convmixer-converge")
    p.add_argument("--where", required=True, help="the header comment: machine, torch, date, wall time, load")
    p.add_argument("--reading", type=Path, help="a text file: the hand-written reading, placed after the verdicts")
    p.add_argument("--into", type=Path, default=RESULTS, help="the folder to write into (default: docs/results)")
    args = p.parse_args(argv)
    into = args.into
    report, curves = args.study_dir / "report.md", args.study_dir / "curves.csv"
    if not report.is_file() or not curves.is_file():
        print(f"record_result: {args.study_dir} has no report.md and curves.csv; give a study directory with a written report",
              file=sys.stderr)
        return 2
    text = report.read_text()
    for png in sorted(args.study_dir.glob("curves_*.png")):
        shutil.copyfile(png, into / f"{args.name}-{png.name}")
        text = text.replace(f"]({png.name})", f"]({args.name}-{png.name})")
    with open(curves, "rb") as src, gzip.GzipFile(into / f"{args.name}-curves.csv.gz", "wb", mtime=0) as dst:
        shutil.copyfileobj(src, dst)
    text = text.replace("`curves.csv`", f"`{args.name}-curves.csv.gz`")
    lines = text.splitlines()
    if args.reading:
        reading = " ".join(args.reading.read_text().split())
        after = next((i for i, line in enumerate(lines) if line.startswith("- ")), 1)  # the first verdict (else after the title)
        while after < len(lines) and lines[after].startswith("- "):
            after += 1
        lines[after:after] = ["", f"Reading (written by hand after the run): {reading}"]
    out = into / f"{args.name}.md"
    out.write_text(f"<!-- {args.where} -->\n\n" + "\n".join(lines) + "\n")
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
