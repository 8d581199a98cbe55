#!/usr/bin/env python3
"""Turns the raw measurements of bench/run.sh into Markdown (median over rounds).

  report.py OUTDIR RESULTS_MD

OUTDIR holds (tab-separated, one record a line):
  meta.tsv    key, value (tools: the tools that ran, storage: local, s3 or sftp, ...)
  corpora.tsv corpus, description, files_v1, bytes_v1, files_v2, bytes_v2
  steps.tsv   round, corpus, tool, step, wall_s, user_s, sys_s, maxrss_kb, exit_code[, server_cpu_s, requests]
  sizes.tsv   round, corpus, tool, when, bytes[, objects]
  verify.tsv  round, corpus, tool, result (ok|DIFFERS|SKIPPED), detail
  kdf.tsv     round, corpus, N,r,p of the scrypt key both Haven and restic used (runs with both)

server_cpu_s (S3 and SFTP) is the CPU time the server (SeaweedFS; sshd's sessions) used during the step, requests (S3 only) the S3
requests it served during the step by type ("GET=12,LIST=3,PUT=4"); objects (S3 only) the number of objects
in the repository.
"""
import os
import statistics
import sys

ALL_TOOLS = ["haven", "restic", "borg"]
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
INDEX_TARGET = 64   # bytes per blob of the in-memory index, scale case
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
    meta = dict((r[0], r[1] if len(r) > 1 else "") for r in read_tsv(os.path.join(outdir, "meta.tsv")) if r)
    tools = [t for t in ALL_TOOLS if t in meta.get("tools", " ".join(ALL_TOOLS)).split()]
    s3 = meta.get("storage") == "s3"
    sftp = meta.get("storage") == "sftp"
    ratios = "haven" in tools and "restic" in tools
    corpora = read_tsv(os.path.join(outdir, "corpora.tsv"))
    steps = read_tsv(os.path.join(outdir, "steps.tsv"))
    sizes = read_tsv(os.path.join(outdir, "sizes.tsv"))
    verify = read_tsv(os.path.join(outdir, "verify.tsv"))

    # (corpus, tool, step) -> list of (wall, cpu, rss) for successful rounds; failures counted separately.
    samples, failures, server, reqs = {}, {}, {}, {}
    # (corpus, tool, step) -> {round: wall}, for the ratios of each round's pair of runs.
    walls_by_round = {}
    for row in steps:
        rnd, corpus, tool, step, wall, user, sys_, rss, code = row[:9]
        key = (corpus, tool, step)
        if int(code) in OK_CODES.get(tool, {0}):
            samples.setdefault(key, []).append((float(wall), float(user) + float(sys_), int(rss)))
            walls_by_round.setdefault(key, {})[rnd] = float(wall)
            if len(row) > 9 and row[9]:
                server.setdefault(key, []).append(float(row[9]))
            if len(row) > 10 and row[10]:
                by_type = {}
                for item in row[10].split(","):
                    k, _, v = item.partition("=")
                    if v:
                        by_type[k] = int(v)
                reqs.setdefault(key, []).append(by_type)
        else:
            failures.setdefault(key, []).append((rnd, code))
    size_samples, object_samples = {}, {}
    for row in sizes:
        rnd, corpus, tool, when, b = row[:5]
        size_samples.setdefault((corpus, tool, when), []).append(int(b))
        if len(row) > 5 and row[5]:
            object_samples.setdefault((corpus, tool, when), []).append(int(row[5]))

    def med(corpus, tool, step):
        s = samples.get((corpus, tool, step))
        if not s:
            return None
        return (statistics.median(x[0] for x in s), statistics.median(x[1] for x in s),
                statistics.median(x[2] for x in s))

    def med_size(corpus, tool, when):
        s = size_samples.get((corpus, tool, when))
        return int(statistics.median(s)) if s else None

    def med_objects(corpus, tool, when):
        s = object_samples.get((corpus, tool, when))
        return int(statistics.median(s)) if s else None

    def med_server(corpus, tool, step):
        s = server.get((corpus, tool, step))
        return statistics.median(s) if s else None

    def med_requests(corpus, tool, step):
        """(total, {type: count}) as medians over the rounds, or None."""
        s = reqs.get((corpus, tool, step))
        if not s:
            return None
        kinds = sorted({k for d in s for k in d})
        return (statistics.median(sum(d.values()) for d in s),
                {k: statistics.median(d.get(k, 0) for d in s) for k in kinds})

    def fmt_requests(r):
        if r is None:
            return "—"
        total, by_type = r
        parts = ", ".join(f"{k} {v:g}" for k, v in sorted(by_type.items(), key=lambda kv: -kv[1]) if v)
        return f"{total:g}" + (f" ({parts})" if parts else "")

    out = []
    if s3:
        out.append("# Haven benchmark results: S3 storage (SeaweedFS on loopback)\n")
        out.append(f"- **Storage: S3** — SeaweedFS {meta.get('seaweedfs_version', '?')}, one `weed server` process "
                   "(master, volume server, filer, S3 gateway) on 127.0.0.1 of the same machine, plain HTTP, "
                   "signed requests (AWS Signature V4), a fresh bucket per round, corpus and tool. No network "
                   "latency or bandwidth limit: this measures request count and client efficiency, not a WAN. "
                   "The server shares the CPUs with the tool being measured.")
    elif sftp:
        out.append("# Haven benchmark results: SFTP storage (OpenSSH on loopback)\n")
        out.append(f"- **Storage: SFTP** — {meta.get('openssh_version', 'OpenSSH')} sshd on 127.0.0.1 of the same "
                   "machine, key login, its internal SFTP server; the repositories are directories on the same disk "
                   "as the corpora. haven and restic start `ssh -F CONFIG havenbench -s sftp` (their `sftp.command` "
                   "option), borg runs `borg serve` through the same ssh (`BORG_RSH`). No network latency or bandwidth "
                   "limit: this measures protocol overhead and client efficiency, not a WAN. The server shares the "
                   "CPUs with the tool being measured.")
    else:
        out.append("# Haven benchmark results\n")
        out.append("- Storage: local directory on the same disk as the corpora.")
    out.append(f"- Date: {meta.get('date', '?')}")
    out.append(f"- Machine: {meta.get('nproc', '?')} CPUs ({meta.get('cpu', '?')}), {meta.get('memory', '?')} memory, "
               f"kernel {meta.get('kernel', '?')}")
    if "haven" in tools:
        out.append(f"- Haven: {meta.get('haven_version', '?')} (commit {meta.get('haven_commit', '?')}, release build)")
    if "restic" in tools:
        out.append(f"- restic: {meta.get('restic_version', '?')} (compression auto, cache in a per-run temp dir)")
    if "borg" in tools:
        out.append(f"- borg: {meta.get('borg_version', '?')} (`-e repokey`, `--compression zstd,3`)")
    kdf_rows = [r for r in read_tsv(os.path.join(outdir, "kdf.tsv")) if len(r) == 3]
    if kdf_rows:
        counts = {}
        for _, _, params in kdf_rows:
            counts[params] = counts.get(params, 0) + 1
        listed = ", ".join(f"{p} ({n} of {len(kdf_rows)})" for p, n in sorted(counts.items()))
        out.append(f"- scrypt: restic calibrates its key whenever it makes one, and on this machine its choice drifts "
                   f"from minute to minute; so in each round, restic's repository for a corpus is made (untimed) before "
                   f"either tool runs, and Haven's key in that round gets the same N,r,p. Each password check costs both "
                   f"tools the same work. N,r,p per round and corpus: {listed}.")
    elif meta.get("kdf"):
        kdf = meta["kdf"]
        if kdf[0].isdigit():
            out.append(f"- scrypt: Haven's keys use N,r,p = {kdf}, restic's calibration at the start of the run; "
                       f"restic calibrates its own keys at each init, so its parameters may differ from round to round.")
        else:
            out.append(f"- scrypt: {kdf}.")
    if meta.get("polynomial"):
        out.append(f"- Chunker polynomial: {meta['polynomial']}")
    if meta.get("not_run"):
        out.append(f"- Not run: {meta['not_run']}.")
    out.append(f"- Mode: {meta.get('mode', '?')}; rounds: {meta.get('rounds', '?')} (median shown); "
               f"corpora: {meta.get('corpora', '?')}; total run time {meta.get('elapsed', '?')}")
    out.append("- Page cache warm: each tool gets a fresh copy of the corpus at the same path, read once before its "
               "first backup (and again after the change to the next version); each repository is read once before "
               "its restore (untimed), since Haven writes packs around the page cache and restic's stay in it.")
    out.append("- Each step starts after an untimed `sync`, so writeback of what the previous step wrote is not charged to it.")
    out.append("- Order: each round runs the tools in turn on a corpus, starting with the next tool each round, so that "
               "what one run leaves behind (freed inodes, the filesystem's state) does not always fall on the same tool.")
    if "loop device" in meta.get("restore_fs", ""):
        out.append(f"- Restores write to {meta['restore_fs']}. (This machine's own ext4 has no journal; there, creating "
                   "files within minutes of a mass deletion costs up to a minute of system time, and that fell on whichever "
                   "tool reached its restore soonest after the previous run.)"
                   + (" With direct I/O, what a restore writes is cached once, as the restored files; through the page "
                      "cache the image's copy of each block would outlive the files and fill memory over a run, and the "
                      "kernel's reclaim would then fall on whichever tool restored next."
                      if "direct I/O" in meta["restore_fs"] else ""))
    elif meta.get("restore_fs"):
        out.append(f"- Restores write to {meta['restore_fs']}.")
    if meta.get("host_memory", "").startswith("no "):
        out.append(f"- Host memory: {meta['host_memory']}.")
    elif meta.get("host_memory"):
        out.append(f"- Host memory: {meta['host_memory']}. (This machine is a virtual machine whose balloon driver "
                   "hands freed pages back to its host; touching one again costs about 10 µs of system time, so a "
                   "restore that fills 1.84 GiB of new page cache took 3.6 s instead of 1.7 s when its pages had been "
                   "free for half a minute. That cost belongs to neither tool.)")
    if meta.get("page_cache", "").startswith("no "):
        out.append(f"- Idle page cache: {meta['page_cache']}.")
    elif meta.get("page_cache"):
        out.append(f"- Idle page cache: {meta['page_cache']}. (On this machine a DAMON scheme evicts file pages "
                   "nobody touched for about a minute: the 200,000 tiny files, read and then left alone for 75 s, "
                   "took 12.4 s to back up instead of 2.9 s.)")
    out.append("- Binaries: both tools' executables are dropped from the page cache once at the start (a freshly "
               "written file sits in large folios, which adds ~4 MB of code pages to a process's RSS).")
    cells = "- Cells are `wall / CPU (user+sys) / peak RSS`"
    if s3:
        cells += (" of the client only; a second table per corpus gives, for each step, the S3 requests SeaweedFS "
                  "served (its Prometheus counter, by HTTP method; GET-range = partial reads, status 206; GET-404 etc. = "
                  "error answers; LIST = bucket listings) and the CPU time it used")
    elif sftp:
        cells += (" of the client, with the ssh client it starts (a child process, so its CPU counts in the tool's; "
                  "peak RSS is the tool's own process); a second table per corpus gives the CPU time of the server side "
                  "(the sshd sessions with the SFTP server in them, or borg serve), from the sshd listener's reaped "
                  "children")
    if ratios:
        cells += ("; ratios are Haven ÷ restic, ✅ = meets the target from the performance issue, ❌ = misses it"
                  + (" (the targets were set for local repositories)" if s3 or sftp else ""))
    else:
        cells += "; no Haven ÷ restic ratios: they need both haven and restic in `--tools`"
    out.append(cells + ".")
    if s3:
        out.append("- Repository size on S3: the sum of the object sizes under the repository prefix (ListObjectsV2), "
                   "with the object count; SeaweedFS's own disk use (volume files, filer metadata, deleted data "
                   "until vacuum) is not counted.")
    out.append("")

    if ratios:
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
        out.append(f"## {corpus}{' (S3)' if s3 else ' (SFTP)' if sftp else ''}\n")
        head = "| step | " + " | ".join(f"{t} wall / CPU / RSS" for t in tools)
        ncols = 1 + len(tools)
        if ratios:
            head += " | haven/restic wall | haven/restic RSS"
            ncols += 2
        out.append(head + " |")
        out.append("|" + "---|" * ncols)
        for step, label, target in STEPS:
            cells = []
            for tool in tools:
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
            row = f"| {label} | {' | '.join(cells)} |"
            if ratios:
                row += f" {fmt_ratio(rw, target)} | {fmt_ratio(rr, RSS_TARGET)} |"
            out.append(row)
        out.append("")
        if s3:
            out.append("| server side (SeaweedFS) | " + " | ".join(f"{t} S3 requests (by type) / server CPU"
                                                              for t in tools) +
                       (" | haven/restic requests | haven/restic server CPU |" if ratios else " |"))
            out.append("|" + "---|" * (1 + len(tools) + (2 if ratios else 0)))
            for step, label, _ in STEPS:
                cells = [f"{fmt_requests(med_requests(corpus, t, step))} / {fmt_time(med_server(corpus, t, step))}"
                         for t in tools]
                row = f"| {label} | " + " | ".join(cells) + " |"
                if ratios:
                    hr, rr_ = med_requests(corpus, "haven", step), med_requests(corpus, "restic", step)
                    row += (f" {fmt_ratio(ratio(hr and hr[0], rr_ and rr_[0]), None)} |"
                            f" {fmt_ratio(ratio(med_server(corpus, 'haven', step), med_server(corpus, 'restic', step)), None)} |")
                out.append(row)
            out.append("")
        if sftp:
            out.append("| server side (sshd) | " + " | ".join(f"{t} server CPU" for t in tools) +
                       (" | haven/restic server CPU |" if ratios else " |"))
            out.append("|" + "---|" * (1 + len(tools) + (1 if ratios else 0)))
            for step, label, _ in STEPS:
                row = f"| {label} | " + " | ".join(fmt_time(med_server(corpus, t, step)) for t in tools) + " |"
                if ratios:
                    row += f" {fmt_ratio(ratio(med_server(corpus, 'haven', step), med_server(corpus, 'restic', step)), None)} |"
                out.append(row)
            out.append("")
        size_head = "repository size (sum of S3 objects)" if s3 else "repository size"
        out.append(f"| {size_head} | " + " | ".join(tools) + (" | haven/restic |" if ratios else " |"))
        out.append("|" + "---|" * (1 + len(tools) + (1 if ratios else 0)))
        for when, label in SIZES:
            vals = [med_size(corpus, t, when) for t in tools]
            objs = [med_objects(corpus, t, when) for t in tools]
            shown = [fmt_bytes(v) + (f" ({o} objects)" if o is not None else "") for v, o in zip(vals, objs)]
            row = f"| {label} | {' | '.join(shown)} |"
            if ratios:
                rs = ratio(med_size(corpus, "haven", when), med_size(corpus, "restic", when))
                if when == "after_backups":
                    summary[(corpus, "size")] = rs
                row += f" {fmt_ratio(rs, SIZE_TARGET if when == 'after_backups' else None)} |"
            out.append(row)
        out.append("")

    if corpora and ratios:
        out.append(f"## Summary: Haven ÷ restic against the targets{' (S3)' if s3 else ' (SFTP)' if sftp else ''}\n")
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

        def round_ratios(corpus, step):
            h = walls_by_round.get((corpus, "haven", step), {})
            r = walls_by_round.get((corpus, "restic", step), {})
            return [h[k] / r[k] for k in sorted(h, key=int) if k in r and r[k] > 0]

        if int(meta.get("rounds", "1") or 1) > 1:
            out.append("### The same, round by round\n")
            out.append("Each round runs both tools on a corpus one after the other, so a round's ratio compares runs "
                       "minutes apart, while the medians above may pair runs from different rounds. On a machine "
                       "whose speed drifts, the median of these per-round ratios is the steadier figure; cells show "
                       "that median and, in brackets, each round's ratio.\n")
            out.append("| metric | target | " + " | ".join(names) + " |")
            out.append("|---|---|" + "---|" * len(names))
            for step, label, target in STEPS:
                if target is None:
                    continue
                cells = []
                for n in names:
                    rr = round_ratios(n, step)
                    if not rr:
                        cells.append("—")
                        continue
                    cells.append(fmt_ratio(statistics.median(rr), target) + " [" +
                                 " ".join(f"{x:.2f}" for x in rr) + "]")
                out.append(f"| {label} (wall) | ≤ {target:.2f} | " + " | ".join(cells) + " |")
            out.append("")

    index_rows = read_tsv(os.path.join(outdir, "index.tsv"))
    if index_rows:
        out.append("## Haven's index in memory\n")
        out.append("After both backups (`haven stats --mode index`): the index's own count of the bytes its arrays and "
                   "tables take, and the peak RSS of that process (which includes the 32 MiB scrypt table and the "
                   f"binary's code). Target: ≤ {INDEX_TARGET} bytes per blob in the scale case (million).\n")
        out.append("| corpus | index files | packs | blobs (data + tree) | index memory | bytes per blob | peak RSS |")
        out.append("|---|---|---|---|---|---|---|")
        by_corpus = {}
        for row in index_rows:
            by_corpus.setdefault(row[1], []).append(row)
        for corpus, rows in by_corpus.items():
            files, packs, data, tree, mem, rss = (int(statistics.median(int(r[i]) for r in rows)) for i in range(2, 8))
            blobs = data + tree
            per = mem / blobs if blobs else 0
            mark = (" ✅" if per <= INDEX_TARGET else " ❌") if corpus == "million" else ""
            out.append(f"| {corpus} | {files} | {packs} | {blobs:,} ({data:,} + {tree:,}) | {fmt_bytes(mem)} | "
                       f"{per:.1f}{mark} | {fmt_mb(rss)} |")
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
