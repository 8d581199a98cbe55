#!/usr/bin/env python3
"""Corpus helpers for bench/run.sh: build generated corpora and apply "next version" changes.

All operations are deterministic (seeded), so every tool sees byte-identical trees.

  corpus.py copy-subset SRC DST LIMIT_BYTES   copy files of SRC (sorted walk, none over LIMIT/8) into DST
                                              until LIMIT_BYTES
  corpus.py tiny DST COUNT [SEED]             COUNT tiny text files in nested directories
  corpus.py mutate DIR [SEED]                 change ~5% of DIR: overwrite, delete and add files
  corpus.py sync SRC DST                      make DST's content equal to SRC, rewriting only what differs
                                              (what a `git checkout` of the next tag does to a work tree)
  corpus.py stats DIR                         print "FILES DIRS BYTES"
"""
import os
import random
import shutil
import stat
import sys

CHUNK = 1 << 20


def walk_files(root):
    """Sorted relative paths of regular files (not symlinks) below root."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            if stat.S_ISREG(st.st_mode):
                out.append(os.path.relpath(full, root))
    return out


def copy_subset(src, dst, limit):
    total = 0
    os.makedirs(dst, exist_ok=True)
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        rel = os.path.relpath(dirpath, src)
        os.makedirs(os.path.join(dst, rel), exist_ok=True)
        for name in sorted(filenames):
            s = os.path.join(dirpath, name)
            d = os.path.join(dst, rel, name)
            st = os.lstat(s)
            if stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(s), d)
            elif stat.S_ISREG(st.st_mode):
                if st.st_size > limit // 8:
                    continue    # a subset of many files, not two or three huge ones
                shutil.copy2(s, d)
                total += st.st_size
            if total >= limit:
                return total
    return total


WORDS = ("alpha beta gamma delta epsilon config value name path size owner group mode time "
         "error warning info debug enabled disabled true false none default server client port "
         "host user id key token index cache buffer limit retry timeout version release build").split()


def tiny_content(rng, i):
    n = rng.randint(0, 40)
    lines = [f"# file {i}"]
    for _ in range(n):
        lines.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6))) + f" = {rng.randint(0, 99999)}")
    return ("\n".join(lines) + "\n").encode()


def tiny(dst, count, seed):
    rng = random.Random(seed)
    per_dir = 200
    for i in range(count):
        d = os.path.join(dst, f"d{i // (per_dir * 100):03d}", f"d{(i // per_dir) % 100:02d}")
        if i % per_dir == 0:
            os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i:07d}.txt"), "wb") as f:
            f.write(tiny_content(rng, i))


def fresh_bytes(rng, n, textlike):
    if textlike:
        out = bytearray()
        while len(out) < n:
            out += (" ".join(rng.choice(WORDS) for _ in range(8)) + f" {rng.randint(0, 1 << 30)}\n").encode()
        return bytes(out[:n])
    return rng.randbytes(n)


def overwrite_region(path, rng, size, textlike):
    """Rewrite the whole file if small, else a quarter of it at a random offset (in place)."""
    if size <= 64 * 1024:
        data = fresh_bytes(rng, max(1, size + rng.randint(-16, 64)), textlike)
        with open(path, "wb") as f:
            f.write(data)
        return len(data)
    length = size // 4
    offset = rng.randrange(0, size - length + 1)
    with open(path, "r+b") as f:
        f.seek(offset)
        left = length
        while left > 0:
            n = min(CHUNK, left)
            f.write(fresh_bytes(rng, n, textlike))
            left -= n
    return length


def mutate(root, seed):
    """~5% of files change: 3% overwritten (partly, for big files), 1% deleted, 1% added (a modified copy
    of an existing file, so part of it deduplicates, as in a new version of a library)."""
    rng = random.Random(seed)
    files = walk_files(root)
    if not files:
        raise SystemExit(f"mutate: no files below {root}")
    sizes = {p: os.path.getsize(os.path.join(root, p)) for p in files}
    textlike = all(p.endswith(".txt") for p in files[:100])
    n = len(files)
    order = files[:]
    rng.shuffle(order)
    k_mod = max(1, round(n * 0.03))
    k_del = max(1, round(n * 0.01))
    k_add = max(1, round(n * 0.01))
    modified, deleted = order[:k_mod], order[k_mod:k_mod + k_del]
    changed = 0
    for p in sorted(modified):
        changed += overwrite_region(os.path.join(root, p), rng, sizes[p], textlike)
    for p in sorted(deleted):
        os.unlink(os.path.join(root, p))
    gone = set(deleted)
    survivors = [p for p in files if p not in gone]
    for j in range(k_add):
        base = rng.choice(survivors)
        d, name = os.path.split(base)
        new = os.path.join(root, d, f"new{j:05d}-{name}")
        shutil.copyfile(os.path.join(root, base), new)
        changed += overwrite_region(new, rng, os.path.getsize(new), textlike)
    print(f"mutate {root}: {k_mod} overwritten, {k_del} deleted, {k_add} added, {changed} bytes of new content")


def same_content(a, b):
    if os.path.getsize(a) != os.path.getsize(b):
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(CHUNK), fb.read(CHUNK)
            if x != y:
                return False
            if not x:
                return True


def sync(src, dst):
    """Make dst equal to src; files with identical content are left untouched (inode and mtime kept)."""
    written = removed = 0
    # Remove what src does not have (deepest first).
    for dirpath, dirnames, filenames in os.walk(dst, topdown=False):
        rel = os.path.relpath(dirpath, dst)
        for name in filenames + dirnames:
            d = os.path.join(dirpath, name)
            s = os.path.join(src, rel, name)
            if not os.path.lexists(s) or (os.path.isdir(s) and not os.path.islink(s)) != (os.path.isdir(d) and not os.path.islink(d)):
                if os.path.isdir(d) and not os.path.islink(d):
                    shutil.rmtree(d)
                else:
                    os.unlink(d)
                removed += 1
    for dirpath, dirnames, filenames in os.walk(src):
        rel = os.path.relpath(dirpath, src)
        os.makedirs(os.path.join(dst, rel), exist_ok=True)
        for name in filenames:
            s = os.path.join(dirpath, name)
            d = os.path.join(dst, rel, name)
            if os.path.islink(s):
                if os.path.islink(d) and os.readlink(d) == os.readlink(s):
                    continue
                if os.path.lexists(d):
                    os.unlink(d)
                os.symlink(os.readlink(s), d)
                written += 1
            elif not (os.path.isfile(d) and not os.path.islink(d) and same_content(s, d)):
                if os.path.lexists(d):
                    os.unlink(d)
                shutil.copyfile(s, d)
                shutil.copymode(s, d)
                written += 1
    print(f"sync {src} -> {dst}: {written} written, {removed} removed")


def stats(root):
    files = dirs = total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirs += len(dirnames)
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            files += 1
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    print(files, dirs, total)


def main(argv):
    if len(argv) < 2:
        raise SystemExit(__doc__)
    cmd, args = argv[1], argv[2:]
    if cmd == "copy-subset":
        print(copy_subset(args[0], args[1], int(args[2])))
    elif cmd == "tiny":
        tiny(args[0], int(args[1]), int(args[2]) if len(args) > 2 else 1)
    elif cmd == "mutate":
        mutate(args[0], int(args[1]) if len(args) > 1 else 2)
    elif cmd == "sync":
        sync(args[0], args[1])
    elif cmd == "stats":
        stats(args[0])
    else:
        raise SystemExit(f"unknown command {cmd}\n{__doc__}")


if __name__ == "__main__":
    main(sys.argv)
