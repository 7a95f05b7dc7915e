"""Run every benchmark script one after another and write the combined results.

    python -m benchmarks.run_all                       # all five, full sizes (about 15 minutes on 2 cores)
    python -m benchmarks.run_all --only prepare,loading
    python -m benchmarks.run_all --readme              # also put the tables into benchmarks/README.md

Writes `<out>/results.jsonl` (every JSON line) and `<out>/results.md` (the machine and one table per
script). `--readme` replaces the part of benchmarks/README.md between the `results:start` and
`results:end` markers with results.md. Run it on an otherwise idle machine: shared machines drift.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: python benchmarks/run_all.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common as C  # noqa: E402

SCRIPTS = ("prepare", "loading", "train_step", "scaling", "gpu")
START, END = "<!-- results:start -->", "<!-- results:end -->"
README = Path(__file__).with_name("README.md")


def render(records: list[dict], seconds: dict[str, float]) -> str:
    info = C.machine()
    v = C.versions()
    lines = [
        f"Run {time.strftime('%Y-%m-%d %H:%M %Z')} on {info['cpu']}, {info['cores']} cores, "
        f"{info['memory_gib']} GiB, {info['os']} (load average {info['load_average_1min']} at the end); "
        f"iqa {v.get('iqa')} ({v.get('git')}), torch {v.get('torch')}, pillow {v.get('pillow')} "
        f"(libjpeg-turbo {v.get('libjpeg_turbo')}), python {v.get('python')}.",
        "",
    ]
    for name in SCRIPTS:
        mine = [r for r in records if r.get("bench") == name]
        if not mine:
            continue
        device = next((r.get("device") for r in mine if r.get("device")), "")
        took = f", {seconds[name]:.0f} s" if name in seconds else ""
        lines += [f"#### {name} ({device}{took})", "", *C.table_lines(mine), ""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = C.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(SCRIPTS), help="comma-separated scripts to run")
    parser.add_argument("--out", type=Path, default=None, help="folder for the results (default: <workdir>/results)")
    parser.add_argument("--readme", action="store_true", help="write the tables into benchmarks/README.md")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SCRIPTS))
    if unknown:
        parser.error(f"unknown script(s) {', '.join(unknown)} (known: {', '.join(SCRIPTS)})")
    args.out = Path(args.out or C.workdir_of(args) / "results")
    args.out.mkdir(parents=True, exist_ok=True)
    jsonl = args.out / "results.jsonl"
    jsonl.unlink(missing_ok=True)
    seconds: dict[str, float] = {}
    failed = []
    for name in chosen:
        command = [sys.executable, "-m", f"benchmarks.bench_{name}", "--jsonl", str(jsonl)]
        command += (["--quick"] if args.quick else []) + (["--workdir", str(args.workdir)] if args.workdir else [])
        print(f"== {' '.join(command[2:])}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        done = subprocess.run(command, cwd=C.REPO, stdout=subprocess.DEVNULL)
        seconds[name] = time.perf_counter() - started
        if done.returncode != 0:
            failed.append(name)
    records = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines()] if jsonl.is_file() else []
    text = render(records, seconds)
    (args.out / "results.md").write_text(text + "\n", encoding="utf-8")
    if args.readme:
        readme = README.read_text(encoding="utf-8")
        if START not in readme or END not in readme:
            print(f"error: {README} lacks the {START} / {END} markers", file=sys.stderr)
            return 1
        head, rest = readme.split(START, 1)
        _, tail = rest.split(END, 1)
        README.write_text(f"{head}{START}\n{text}\n{END}{tail}", encoding="utf-8")
    print(f"wrote {jsonl} and {args.out / 'results.md'}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
