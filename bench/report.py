#!/usr/bin/env python3
"""Turns the raw measurements of bench/run.sh into Markdown (median over rounds).

  report.py OUTDIR RESULTS_MD

OUTDIR holds (tab-separated, one record a line):
  meta.tsv    key, value
  corpora.tsv corpus, description, files_v1, bytes_v1, files_v2, bytes_v2
  steps.tsv   round, corpus, tool, step, wall_s, user_s, sys_s, maxrss_kb, exit_code
  sizes.tsv   round, corpus, tool, when, bytes
  verify.tsv  round, corpus, tool, result (ok|DIFFERS|SKIPPED), detail
"""
import os
import statistics
import sys

TOOLS = ["haven", "restic", "borg"]
STEPS = [
    ("init", "init", None),
    ("backup1", "first backup", 0.35),
    ("backup_unchanged", "re-backup, nothing changed", 0.25),
    ("backup_next", "backup of next version", 0.35),
    ("restore", "full restore", 0.40),
    ("check", "check, full data read", 0.50),
    ("forget_prune", "forget --keep-last 1 + prune", None),
]
SIZES = [("after_first", "after first backup"), ("after_backups", "after all 3 backups"),
         ("after_prune", "after forget + prune")]
RSS_TARGET = 1.00
SIZE_TARGET = 1.00
# Exit codes that mean "finished with warnings" rather than failure (restic/haven 3, borg 1 on backup).
OK_CODES = {"haven": {0, 3}, "restic": {0, 3}, "borg": {0, 1}}


def read_tsv(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.rstrip("\n").split("\t") for line in f if line.strip()]


def fmt_time(s):
    if s is None:
        return "—"
    return f"{s:.2f} s" if s < 100 else f"{s:.0f} s"


def fmt_mb(kb):
    if kb is None:
        return "—"
    mb = kb / 1024
    return f"{mb:.0f} MB" if mb >= 10 else f"{mb:.1f} MB"


def fmt_bytes(b):
    if b is None:
        return "—"
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if b >= div:
            return f"{b / div:.2f} {unit}"
    return f"{b} B"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt_ratio(r, target):
    if r is None:
        return "—"
    text, mark = f"{r:.2f}", ""
    if target is not None:
        mark = " ✅" if r <= target else " ❌"
        if (float(text) <= target) != (r <= target):
            text = f"{r:.3f}"    # rounding would hide which side of the target it is on
    return f"{text}{mark}"


def main(outdir, results_md):
    meta = dict((r[0], r[1]) for r in read_tsv(os.path.join(outdir, "meta.tsv")) if len(r) >= 2)
    corpora = read_tsv(os.path.join(outdir, "corpora.tsv"))
    steps = read_tsv(os.path.join(outdir, "steps.tsv"))
    sizes = read_tsv(os.path.join(outdir, "sizes.tsv"))
    verify = read_tsv(os.path.join(outdir, "verify.tsv"))

    # (corpus, tool, step) -> list of (wall, cpu, rss) for successful rounds; failures counted separately.
    samples, failures = {}, {}
    for rnd, corpus, tool, step, wall, user, sys_, rss, code in steps:
        key = (corpus, tool, step)
        if int(code) in OK_CODES.get(tool, {0}):
            samples.setdefault(key, []).append((float(wall), float(user) + float(sys_), int(rss)))
        else:
            failures.setdefault(key, []).append((rnd, code))
    size_samples = {}
    for rnd, corpus, tool, when, b in sizes:
        size_samples.setdefault((corpus, tool, when), []).append(int(b))

    def med(corpus, tool, step):
        s = samples.get((corpus, tool, step))
        if not s:
            return None
        return (statistics.median(x[0] for x in s), statistics.median(x[1] for x in s),
                statistics.median(x[2] for x in s))

    def med_size(corpus, tool, when):
        s = size_samples.get((corpus, tool, when))
        return int(statistics.median(s)) if s else None

    out = []
    out.append("# Haven benchmark results\n")
    out.append(f"- Date: {meta.get('date', '?')}")
    out.append(f"- Machine: {meta.get('nproc', '?')} CPUs ({meta.get('cpu', '?')}), {meta.get('memory', '?')} memory, "
               f"kernel {meta.get('kernel', '?')}")
    out.append(f"- Haven: {meta.get('haven_version', '?')} (commit {meta.get('haven_commit', '?')}, release build)")
    out.append(f"- restic: {meta.get('restic_version', '?')} (compression auto, cache in a per-run temp dir)")
    out.append(f"- borg: {meta.get('borg_version', '?')} (`-e repokey`, `--compression zstd,3`)")
    out.append(f"- Mode: {meta.get('mode', '?')}; rounds: {meta.get('rounds', '?')} (median shown); "
               f"corpora: {meta.get('corpora', '?')}; total run time {meta.get('elapsed', '?')}")
    out.append("- Page cache warm: each tool gets a fresh copy of the corpus at the same path, read once before its "
               "first backup (and again after the change to the next version).")
    out.append("- Cells are `wall / CPU (user+sys) / peak RSS`; ratios are Haven ÷ restic, ✅ = meets the target "
               "from the performance issue, ❌ = misses it.\n")

    out.append("## Targets (Haven ÷ restic)\n")
    out.append("| metric | target |\n|---|---|")
    for _, label, target in STEPS:
        if target is not None:
            out.append(f"| {label} (wall) | ≤ {target:.2f} |")
    out.append(f"| repository size | ≤ {SIZE_TARGET:.2f} |")
    out.append(f"| peak RSS (every step) | ≤ {RSS_TARGET:.2f} |\n")

    out.append("## Corpora\n")
    out.append("| corpus | description | v1 files | v1 size | next version files | next version size |")
    out.append("|---|---|---|---|---|---|")
    for c in corpora:
        out.append(f"| {c[0]} | {c[1]} | {c[2]} | {fmt_bytes(int(c[3]))} | {c[4]} | {fmt_bytes(int(c[5]))} |")
    out.append("")

    summary = {}
    for c in corpora:
        corpus = c[0]
        out.append(f"## {corpus}\n")
        out.append("| step | haven wall / CPU / RSS | restic wall / CPU / RSS | borg wall / CPU / RSS "
                   "| haven/restic wall | haven/restic RSS |")
        out.append("|---|---|---|---|---|---|")
        for step, label, target in STEPS:
            cells = []
            for tool in TOOLS:
                m = med(corpus, tool, step)
                fails = failures.get((corpus, tool, step))
                if m is None:
                    cells.append("FAILED" if fails else "—")
                else:
                    cell = f"{fmt_time(m[0])} / {fmt_time(m[1])} / {fmt_mb(m[2])}"
                    if fails:
                        cell += f" ({len(fails)} failed)"
                    cells.append(cell)
            h, r = med(corpus, "haven", step), med(corpus, "restic", step)
            rw = ratio(h and h[0], r and r[0])
            rr = ratio(h and h[2], r and r[2])
            summary[(corpus, step)] = (rw, rr)
            out.append(f"| {label} | {' | '.join(cells)} | {fmt_ratio(rw, target)} | {fmt_ratio(rr, RSS_TARGET)} |")
        out.append("")
        out.append("| repository size | haven | restic | borg | haven/restic |")
        out.append("|---|---|---|---|---|")
        for when, label in SIZES:
            vals = [med_size(corpus, t, when) for t in TOOLS]
            rs = ratio(vals[0], vals[1])
            if when == "after_backups":
                summary[(corpus, "size")] = rs
            out.append(f"| {label} | {' | '.join(fmt_bytes(v) for v in vals)} | "
                       f"{fmt_ratio(rs, SIZE_TARGET if when == 'after_backups' else None)} |")
        out.append("")

    if corpora:
        out.append("## Summary: Haven ÷ restic against the targets\n")
        names = [c[0] for c in corpora]
        out.append("| metric | target | " + " | ".join(names) + " |")
        out.append("|---|---|" + "---|" * len(names))
        for step, label, target in STEPS:
            if target is None:
                continue
            out.append(f"| {label} (wall) | ≤ {target:.2f} | " +
                       " | ".join(fmt_ratio(summary.get((n, step), (None, None))[0], target) for n in names) + " |")
        out.append(f"| repository size after backups | ≤ {SIZE_TARGET:.2f} | " +
                   " | ".join(fmt_ratio(summary.get((n, "size")), SIZE_TARGET) for n in names) + " |")
        worst = []
        for n in names:
            rs = [summary.get((n, s), (None, None))[1] for s, _, _ in STEPS]
            rs = [x for x in rs if x is not None]
            incomplete = any((n, "haven", s) in failures or (n, "restic", s) in failures for s, _, _ in STEPS)
            worst.append(None if incomplete or not rs else max(rs))
        out.append(f"| peak RSS, worst step | ≤ {RSS_TARGET:.2f} | " +
                   " | ".join(fmt_ratio(w, RSS_TARGET) for w in worst) + " |")
        out.append("")

    out.append("## Correctness\n")
    bad = [v for v in verify if v[3] != "ok"]
    if verify:
        oks = sum(1 for v in verify if v[3] == "ok")
        out.append(f"Restores compared with `diff -r` against the source tree: {oks} of {len(verify)} identical.")
        for v in bad:
            out.append(f"- **{v[3]}**: round {v[0]}, {v[1]}, {v[2]}: {v[4] if len(v) > 4 else ''}")
    else:
        out.append("No restore was compared.")
    all_fail = [(k, v) for k, v in failures.items()]
    if all_fail:
        out.append("\nFailed steps (exit code; see the logs under the bench dir):")
        for (corpus, tool, step), fl in sorted(all_fail):
            out.append(f"- **{tool} {step}** on {corpus}: " + ", ".join(f"round {r}: exit {c}" for r, c in fl))
    out.append("")
    text = "\n".join(out)
    with open(results_md, "w") as f:
        f.write(text)
    print(text)
    return 1 if (bad or any(k[1] == "haven" for k in failures)) else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
