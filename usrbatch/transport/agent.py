"""The remote agent: stdlib-only code that runs beside a dataset, in-process (local transport) or
as ONE `python3 -` exec on the remote (ssh transport), and answers in JSON.

It must stay self-contained (no imports from usrbatch): its source is sent to the remote host.

Operations (request `{"op": ..., ...}` on stdin, one JSON object on stdout):
  inventory: every regular file under a dataset dir with size, mtime_ns and sha256 (streamed,
             with a hash cache keyed by path/size/mtime_ns/ctime_ns/inode that lives OUTSIDE the
             dataset), line count of .events.log, optional parquet footer rows/cols; symlinks and
             special files are reported as rejected, never followed.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
import tempfile

AGENT_VERSION = 1
CHUNK = 1024 * 1024
RUNTIME_TOP = (".usr.lock", ".events.lock", ".usr.transfer.lock")
LEASE_PREFIX = ".usr.lease."
TEMP_PREFIX = ".usrbatch-tmp-"


def is_runtime(rel):
    parts = rel.split("/")
    top = parts[0]
    if top in RUNTIME_TOP or top.startswith(LEASE_PREFIX):
        return True
    return any(p.startswith(TEMP_PREFIX) for p in parts)


def sha256_file(path):
    """Streamed sha256 (bounded memory); opened with O_NOFOLLOW so a swapped-in symlink fails."""
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as fh:
        while True:
            block = fh.read(CHUNK)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def count_lines(path):
    n = 0
    with open(path, "rb") as fh:
        while True:
            block = fh.read(CHUNK)
            if not block:
                break
            n += block.count(b"\n")
    return n


def default_cache_path(dataset_dir):
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    key = hashlib.sha256(os.path.abspath(dataset_dir).encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return os.path.join(base, "usrbatch", "hash-cache", key + ".json")


def load_cache(path):
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        if data.get("v") == AGENT_VERSION and isinstance(data.get("files"), dict):
            return data["files"]
    except (OSError, ValueError):
        pass
    return {}


def save_cache(path, files):
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".hash-cache-", dir=os.path.dirname(path))
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"v": AGENT_VERSION, "files": files}, fh, separators=(",", ":"))
        os.replace(tmp, path)
    except OSError:
        pass  # a cache that cannot be written only costs time


def parquet_shape(path):
    try:
        import pyarrow.parquet as pq  # optional on the remote
    except Exception:
        return None
    try:
        md = pq.ParquetFile(path).metadata
        return [md.num_rows, md.num_columns]
    except Exception:
        return None


def inventory(dataset_dir, hashes=True, parquet_stats=False, cache_path=None):
    """Walk dataset_dir without following links. Returns a JSON-able dict.

    {"exists": bool, "files": {rel: [size, mtime_ns, sha256|None]}, "rejected": [[rel, kind]],
     "events_lines": int|None, "primary_shape": [rows, cols]|None, "hashed_bytes": int}
    """
    out = {
        "exists": False,
        "files": {},
        "rejected": [],
        "events_lines": None,
        "primary_shape": None,
        "hashed_bytes": 0,
    }
    try:
        st_root = os.lstat(dataset_dir)
    except FileNotFoundError:
        return out
    if not stat.S_ISDIR(st_root.st_mode):
        out["rejected"].append([".", "not-a-directory"])
        return out
    out["exists"] = True
    cache_path = cache_path or default_cache_path(dataset_dir)
    cache = load_cache(cache_path) if hashes else {}
    new_cache = {}
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        abs_dir = os.path.join(dataset_dir, rel_dir) if rel_dir else dataset_dir
        try:
            entries = list(os.scandir(abs_dir))
        except OSError as exc:
            out["rejected"].append([rel_dir or ".", "unreadable:" + exc.__class__.__name__])
            continue
        for entry in entries:
            rel = rel_dir + "/" + entry.name if rel_dir else entry.name
            if is_runtime(rel):
                continue
            st = entry.stat(follow_symlinks=False)
            mode = st.st_mode
            if stat.S_ISLNK(mode):
                out["rejected"].append([rel, "symlink"])
            elif stat.S_ISDIR(mode):
                stack.append(rel)
            elif stat.S_ISREG(mode):
                sha = None
                if hashes:
                    key = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
                    hit = cache.get(rel)
                    if hit and hit[:4] == key:
                        sha = hit[4]
                    else:
                        sha = sha256_file(entry.path)
                        out["hashed_bytes"] += st.st_size
                    new_cache[rel] = key + [sha]
                out["files"][rel] = [st.st_size, st.st_mtime_ns, sha]
                if rel == ".events.log":
                    out["events_lines"] = count_lines(entry.path)
                elif rel == "records.parquet" and parquet_stats:
                    out["primary_shape"] = parquet_shape(entry.path)
            else:
                out["rejected"].append([rel, "special"])
    if hashes and new_cache != cache:
        save_cache(cache_path, new_cache)
    return out


OPS = {
    "inventory": lambda req: inventory(
        req["path"], req.get("hashes", True), req.get("parquet_stats", False), req.get("cache_path")
    )
}


def main():
    req = json.loads(sys.stdin.readline() if len(sys.argv) < 2 else sys.argv[1])
    op = OPS.get(req.get("op"))
    if op is None:
        result = {"ok": False, "error": "unknown op %r" % (req.get("op"),)}
    else:
        try:
            result = {"ok": True, "agent_version": AGENT_VERSION, "result": op(req)}
        except Exception as exc:  # reported to the caller, which raises a TransferError
            result = {"ok": False, "error": "%s: %s" % (exc.__class__.__name__, exc)}
    sys.stdout.write(json.dumps(result, separators=(",", ":")) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
