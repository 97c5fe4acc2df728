#!/usr/bin/env python3
"""Reading big captures: `tracer stats` and `tracer report` on a big
synthetic capture, `stats --format json` (every flow) and `show --json` on a
smaller one (scripts/synth_capture.py), peak RSS and
sightings per second, beside the in-memory reader this replaced (the code
of a given git revision, run from an extracted copy) on a capture it can
still hold.

Usage: scripts/bench_analysis.py [--sightings 100M] [--baseline-sightings 10M]
       [--baseline-rev d1598c0] [--dir /var/tmp] [--rounds 1] [--keep]
       [--schema 2] [--baseline-big] [--files 5000] [--no-extra] [--small-only]
Targets: stats and report at <= 1 GB peak RSS and >= 5 M sightings/s.

--schema 2 makes journey-row captures (scripts/synth_journeys.py, what
`tracer record` writes now) instead of sighting rows (1, synth_capture.py);
--baseline-big also runs the baseline's stats and report on the big capture
(before/after on the same file, or, for a baseline older than this tree's
journey schema, on the same synthetic traffic written by the baseline's own
synth_journeys.py); --files N adds `report` over the small capture's
sightings rotated into about N parts, ours and the baseline's.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from bench_figures import load_average, tree_env  # noqa: E402
from synth_capture import parse_count  # noqa: E402


def run(cmd: list[str], env: dict | None = None, stdout=subprocess.DEVNULL, cwd: Path | None = None) -> tuple[float, float, float, int]:
    """(seconds, peak RSS in MiB, CPU seconds, exit code) of a command, from GNU time."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as t:
        started = time.perf_counter()
        # cwd elsewhere than the repository: `python -m` puts the cwd first on sys.path
        proc = subprocess.run(["/usr/bin/time", "-f", "%M %U %S", "-o", t.name, *cmd], env=env, stdout=stdout,
                              stderr=subprocess.PIPE, text=True, cwd=cwd)
        took = time.perf_counter() - started
        text = Path(t.name).read_text().strip().splitlines()
    fields = text[-1].split() if text else []
    try:
        rss, cpu = int(fields[0]) / 1024, float(fields[1]) + float(fields[2])
    except (IndexError, ValueError):
        rss = cpu = float("nan")
    if proc.returncode:
        print(f"  ({' '.join(cmd[-3:])} exited {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]})")
    return took, rss, cpu, proc.returncode


def make(path: Path, n: int, schema: int = 1, files: int = 1, root: Path = ROOT) -> int:
    """A synthetic capture of ``n`` sightings at ``path``, written by the
    synth script (and so the writer) of the tree at ``root``."""
    if not path.exists():
        script = "synth_journeys.py" if schema == 2 else "synth_capture.py"
        extra = ["--files", str(files)] if files > 1 else []
        out = subprocess.run([sys.executable, str(root / "scripts" / script), str(path), "--sightings", str(n), *extra],
                             check=True, capture_output=True, text=True, env=tree_env(root)).stdout
        print("  made", out.strip())
    return n


def baseline_tree(rev: str, where: Path) -> Path:
    """The tracer package and scripts of ``rev``, extracted (the reader before streaming)."""
    from bench_overhead import archive_tree

    return archive_tree(rev, where, "tracer", "scripts")


def journey_schema(root: Path) -> str:
    """The journey capture schema the tree at ``root`` writes ('' before it had one)."""
    found = re.search(r'^JOURNEY_SCHEMA_VERSION = "([^"]+)"', (root / "tracer" / "events.py").read_text(), re.M)
    return found.group(1) if found else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sightings", default="100M")
    ap.add_argument("--baseline-sightings", default="10M")
    ap.add_argument("--baseline-rev", default=None,
                    help="default: d1598c0 (the in-memory reader) with --schema 1, 317aa09 (session 8's start: "
                         "journey schema 2.1, before the packet rows' Parquet file) with --schema 2; a baseline older "
                         "than this tree's journey schema reads captures written by its own synth_journeys.py")
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--capture", help="use this capture instead of making one (its sightings: --sightings)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the generated captures")
    ap.add_argument("--quick", action="store_true", help="1M and 200k sightings (a smoke test)")
    ap.add_argument("--schema", type=int, choices=(1, 2), default=1, help="captures of sighting (1) or journey (2) rows")
    ap.add_argument("--baseline-big", action="store_true", help="the baseline's stats and report on the big capture too")
    ap.add_argument("--files", type=int, default=0, help="report over the small capture rotated into about N parts")
    ap.add_argument("--no-extra", action="store_true", help="leave out stats --format json and show --json")
    ap.add_argument("--small-only", action="store_true", help="only the small capture's cases (rounds of them: intervals)")
    args = ap.parse_args()
    if args.quick:
        args.sightings, args.baseline_sightings = "1M", "200k"
    if args.baseline_rev is None:
        args.baseline_rev = "317aa09" if args.schema == 2 else "d1598c0"
    big_n, base_n = parse_count(args.sightings), parse_count(args.baseline_sightings)
    work = Path(tempfile.mkdtemp(prefix="tracer-bench-analysis-", dir=args.dir))
    tracer = [sys.executable, "-m", "tracer"]
    env = tree_env(ROOT)
    try:
        free = shutil.disk_usage(work).free
        print(f"disk free under {work}: {free / 1e9:.1f} GB (a synthetic capture takes about 8-11 B per sighting)")
        big = Path(args.capture) if args.capture else work / "big.arrows"
        if not args.small_only:
            make(big, big_n, args.schema)
        small = work / "small.arrows"
        make(small, base_n, args.schema)
        parts: list[str] = []
        if args.files:
            (work / "parts").mkdir(exist_ok=True)
            make(work / "parts" / "cap.arrows", base_n, args.schema, args.files)
            parts = sorted(str(p) for p in (work / "parts").glob("cap.*.arrows"))
        old = baseline_tree(args.baseline_rev, work / "baseline")
        old_env = tree_env(old)
        # A baseline older than this tree's journey schema cannot read its
        # captures: it gets the same synthetic traffic written by its own
        # writer (this tree reads both; each side reads what it would write).
        big0, small0, parts0 = big, small, parts
        if args.schema == 2 and journey_schema(old) != journey_schema(ROOT):
            print(f"  baseline {args.baseline_rev} writes journey schema {journey_schema(old) or '(none)'}, this tree "
                  f"{journey_schema(ROOT)}: the baseline reads captures its own scripts/synth_journeys.py writes")
            if not (old / "scripts" / "synth_journeys.py").exists():
                raise SystemExit(f"bench_analysis: baseline {args.baseline_rev} cannot read this tree's captures and has "
                                 "no scripts/synth_journeys.py to write its own: give a later --baseline-rev")
            big0, small0 = work / "big.baseline.arrows", work / "small.baseline.arrows"
            if not args.small_only and args.baseline_big:
                make(big0, big_n, args.schema, root=old)
            make(small0, base_n, args.schema, root=old)
            if args.files:
                (work / "parts0").mkdir(exist_ok=True)
                make(work / "parts0" / "cap.arrows", base_n, args.schema, args.files, root=old)
                parts0 = sorted(str(p) for p in (work / "parts0").glob("cap.*.arrows"))
        rows = []
        base_label = f"baseline {args.baseline_rev}"
        cases = [] if args.small_only else [
            (f"stats {args.sightings}", [*tracer, "stats", str(big)], big_n, env),
            *([(f"stats {args.sightings}, {base_label}", [*tracer, "stats", str(big0)], big_n, old_env)]
              if args.baseline_big else []),
            (f"report {args.sightings}", [*tracer, "report", str(big), "-o", str(work / "r.html")], big_n, env),
            *([(f"report {args.sightings}, {base_label}", [*tracer, "report", str(big0), "-o", str(work / "r0.html")],
                big_n, old_env)] if args.baseline_big else []),
            *([(f"report {len(parts)} files, {args.baseline_sightings}", [*tracer, "report", *parts, "-o",
                                                                         str(work / "rf.html")], base_n, env),
               (f"report {len(parts)} files, {args.baseline_sightings}, {base_label}",
                [*tracer, "report", *parts0, "-o", str(work / "rf0.html")], base_n, old_env)] if parts else []),
        ]
        for r in range(args.rounds):
            for label, cmd, n, e in (
                *cases,
                (f"stats {args.baseline_sightings}", [*tracer, "stats", str(small)], base_n, env),
                (f"stats {args.baseline_sightings}, baseline {args.baseline_rev}", [*tracer, "stats", str(small0)],
                 base_n, old_env),
                (f"report {args.baseline_sightings}", [*tracer, "report", str(small), "-o", str(work / "s.html")],
                 base_n, env),
                (f"report {args.baseline_sightings}, baseline {args.baseline_rev}",
                 [*tracer, "report", str(small0), "-o", str(work / "s0.html")], base_n, old_env),
                *([] if args.no_extra else [
                    (f"stats --format json {args.baseline_sightings}", [*tracer, "stats", "--format", "json", str(small)],
                     base_n, env),
                    (f"show --json {args.baseline_sightings}", [*tracer, "show", "--json", str(small)], base_n, env)]),
            ):
                took, rss, cpu, rc = run(cmd, e, cwd=work)
                rows.append((label, took, rss, n / took / 1e6 if not rc else float("nan"), cpu, load_average()))
                print(f"  round {r + 1}: {label:<40} {took:8.1f} s  peak RSS {rss:8.0f} MiB  "
                      f"{rows[-1][3]:5.2f} M sightings/s  CPU {cpu:6.1f} s  load {rows[-1][5]}", flush=True)
        print()
        print(f"{'case':<42}{'seconds':>9}{'peak RSS MiB':>14}{'M sightings/s':>15}{'CPU s':>8}{'M/CPU-s':>9}  load")
        for label, took, rss, rate, cpu, ld in rows:
            n = big_n if f" {args.sightings}" in label and "files" not in label else base_n
            print(f"{label:<42}{took:9.1f}{rss:14.0f}{rate:15.2f}{cpu:8.1f}{n / cpu / 1e6:9.2f}  {ld}")
        print("(M/CPU-s: sightings per CPU-second of the process, user + system: steadier than wall time on a shared VM;"
              " load: the host's 1/5/15-minute load averages at the end of the run, on 2 vCPUs)")
        for label, took, rss, rate, cpu, ld in rows:
            if label in (f"stats {args.sightings}", f"report {args.sightings}"):
                print(f"target {label}: peak RSS <= 1024 MiB: {'met' if rss <= 1024 else 'NOT met'}; "
                      f">= 5 M sightings/s: {'met' if rate >= 5 else 'NOT met'} ({rate:.2f})")
        base = [r for r in rows if r[0] == f"stats {args.baseline_sightings}, baseline {args.baseline_rev}"]
        # (label, seconds, rss, rate, cpu, load)
        ours = [r for r in rows if r[0] == f"stats {args.baseline_sightings}"]
        if base and ours:
            print(f"baseline/ours at {args.baseline_sightings}: peak RSS {base[0][2] / ours[0][2]:.1f}x, "
                  f"time {base[0][1] / ours[0][1]:.2f}x")
        suffix = f", baseline {args.baseline_rev}"
        for label in dict.fromkeys(r[0] for r in rows):
            if not label.endswith(suffix):
                continue
            # rounds pair up in order: each round ran the baseline right after ours (same load)
            base_r = [r for r in rows if r[0] == label]
            mine = [r for r in rows if r[0] == label[: -len(suffix)]]
            pairs = list(zip(base_r, mine))
            if not pairs:
                continue
            cpu_ratio = sorted(b[4] / m[4] for b, m in pairs)
            wall_ratio = sorted(b[1] / m[1] for b, m in pairs)
            mid = len(pairs) // 2
            print(f"{label[: -len(suffix)]}: baseline/ours CPU {cpu_ratio[mid]:.2f}x [{cpu_ratio[0]:.2f}-{cpu_ratio[-1]:.2f}], "
                  f"wall {wall_ratio[mid]:.2f}x [{wall_ratio[0]:.2f}-{wall_ratio[-1]:.2f}] over {len(pairs)} round(s); "
                  f"peak RSS {max(b[2] for b in base_r):.0f} / {max(m[2] for m in mine):.0f} MiB")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
