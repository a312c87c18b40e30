"""The remote agent: stdlib-only code that runs beside a dataset, in-process (local transport) or
as ONE `python3` exec on the remote (ssh transport), and answers in JSON.

Why over ~1500 lines: its source is sent to the remote whole and run as one exec, so it cannot be
split into modules that import each other.

It must stay self-contained (no imports from usrbatch) and run on Python 3.6+: its source is sent
to the remote host. No walrus, no `from __future__ import annotations`, no 3.7+ stdlib APIs.
So it keeps its own copies of the file-system primitives the rest of the package takes from
usrbatch/files.py (streamed sha256, fsync of a directory, prune of empty parents, temp names).

Operations (request `{"op": ..., ...}` as the first stdin line or argv[1]; one JSON object
`{"ok": bool, "agent_version": N, "result"|"error": ...}` on stdout):
  inventory: every regular file under a dataset dir with size, mtime_ns and sha256 (streamed,
             with a hash cache keyed by path/size/mtime_ns/ctime_ns/inode that lives OUTSIDE the
             dataset), line count of .events.log, optional parquet rows/cols read from the footer
             by a stdlib Thrift Compact parser (no pyarrow needed); symlinks and
             special files are reported as rejected, never followed.
  apply:     renames (src, dst) then removals, all relative to `base`; every path is validated
             before anything is changed; empty parent dirs of removed files are pruned. Optional
             `verify` {rel: sha256}: hash those (uploaded temp) files first and refuse to change
             anything on a mismatch (the listed files are removed; error kind "verification").
             Optional `payload` {rel: kind}: then validate those files (payload_problem: complete
             parquet with the core schema / a key column, UTF-8 meta.md) and refuse likewise
             (error kind "payload"). Optional `snapshot` [src, dst]: copy the primary a rename
             replaces to `_snapshots/records-<stamp>.parquet` first.
             Optional `inventory` rel dir (+ `parquet_stats`): the post-apply inventory, same exec;
             verified uploads enter its hash cache under the renamed file's fresh lstat key, so
             their bytes are not hashed a second time. Without `inventory` they enter the hash
             cache of their own directory (the one `stat` reads).
  hash:      size, mtime_ns and sha256 of the given relative paths (regular files only).
  stat:      one path (FILE mode): its kind (file, missing, symlink, directory, special), and for
             a regular file size, mtime_ns, sha256 (hash cache of its directory) and optional
             parquet rows/cols; never follows a symlink.
  mkdir:     create the given relative dirs (and parents).
  recv/send: file bytes through the exec's stdin/stdout (framing: transport/ssh_stream.py).
             `recv` writes [rel, size, mtime_ns] files (parents created, a kept prefix resumed,
             each temp flock'ed while written), hashing as it writes; those hashes enter the
             directory's hash cache under the final lstat key, so `apply`'s verify of an
             unchanged temp reads nothing again. `send` streams [rel, offset] files.
  probe:     python/pyarrow versions and the tools doctor checks; base_dir existence/writability.
  lease:     hold `<dir>/.usr.lock` (+ `.events.lock` shared/exclusive) with a timeout, print
             `USR_REMOTE_LOCK_ACQUIRED:<token>`, then block until `release` or EOF on stdin.
             Timeout: `USR_REMOTE_LOCK_TIMEOUT:<token>` (or `USR_REMOTE_EVENT_LOCK_TIMEOUT:<token>`)
             and exit 73. `hold_lock()` is the same lock for in-process (local) use.

Hash cache files record their dataset dir; at most once a day per cache dir a save deletes the
cache files whose dataset dir is gone (prune_cache_dir).

All relative paths are checked like transport.base.validate_relpath (no absolute paths, no `.`/`..`,
no empty components, NUL, newline or backslash) and must not escape `base` through a symlink;
directories are created one component at a time inside `base` (makedirs_inside).
"""

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import stat
import sys
import time

# codecs, secrets, shutil and tempfile are imported where used: most calls (a hash, an inventory)
# need none of them, and each exec of the agent would pay for them (bench B5, docs/benchmarks.md).

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
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as fh:
        if hasattr(hashlib, "file_digest"):  # 3.11+: one reused buffer, no bytes object per read
            return hashlib.file_digest(fh, "sha256").hexdigest()
        h = hashlib.sha256()
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


def save_cache(path, files, dataset_dir=None):
    """Write the cache atomically; `dataset_dir` is stored in it so prune_cache_dir can tell
    when the dataset is gone (at most once a day per cache dir, after the write)."""
    import tempfile

    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".hash-cache-", dir=os.path.dirname(path))
        body = {"v": AGENT_VERSION}
        if dataset_dir is not None:
            body["dir"] = os.path.abspath(dataset_dir)
        body["files"] = files
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(body, fh, separators=(",", ":"))
        os.replace(tmp, path)
    except OSError:
        return  # a cache that cannot be written only costs time
    if dataset_dir is not None:
        prune_cache_dir(os.path.dirname(path))


PRUNE_MARKER = ".last-prune"
PRUNE_EVERY_S = 86400
LEGACY_MAX_AGE_S = 30 * 86400  # cache files written before "dir" was stored: dropped when this old


def cache_dataset_dir(path):
    """The dataset dir a cache file belongs to (None when it does not say); reads only its head."""
    try:
        with open(path, encoding="utf-8") as fh:
            head = fh.read(65536)
    except (OSError, ValueError):
        return None
    at = head.find('"dir":')
    if at < 0 or at > 32:
        return None
    try:
        value = json.JSONDecoder().raw_decode(head, at + len('"dir":'))[0]
    except ValueError:
        return None
    return value if isinstance(value, str) else None


def prune_cache_dir(cache_dir, now=None, force=False):
    """Delete cache files whose dataset dir no longer exists (and legacy files without a dataset
    dir not written for LEGACY_MAX_AGE_S). Runs at most once per PRUNE_EVERY_S per cache dir
    (the mtime of PRUNE_MARKER) unless `force`. Returns the number of files removed."""
    now = time.time() if now is None else now
    marker = os.path.join(cache_dir, PRUNE_MARKER)
    if not force:
        try:
            if now - os.stat(marker).st_mtime < PRUNE_EVERY_S:
                return 0
        except OSError:
            pass
    try:
        with open(marker, "a"):
            pass
        os.utime(marker, (now, now))
        names = os.listdir(cache_dir)
    except OSError:
        return 0
    removed = 0
    for name in names:
        if name.startswith(".") or not name.endswith(".json"):
            continue
        path = os.path.join(cache_dir, name)
        owner = cache_dataset_dir(path)
        try:
            if owner is not None:
                gone = not os.path.isdir(owner)
            else:
                gone = now - os.stat(path).st_mtime > LEGACY_MAX_AGE_S
            if gone:
                os.unlink(path)
                removed += 1
        except OSError:
            continue
    return removed


def remember_hashes(dataset_dir, entries, cache_path=None):
    """Add {rel: [size, mtime_ns, ctime_ns, ino, sha256]} (keys from a FRESH lstat of files whose
    content was just verified) to the dataset's hash cache, so the next inventory reads nothing."""
    if not entries:
        return
    cache_path = cache_path or default_cache_path(dataset_dir)
    cache = load_cache(cache_path)
    cache.update(entries)
    save_cache(cache_path, cache, dataset_dir)


def inventory(dataset_dir, hashes=True, parquet_stats=False, cache_path=None, known=None):
    """Walk dataset_dir without following links. Returns a JSON-able dict. `known` adds cache
    entries {rel: [size, mtime_ns, ctime_ns, ino, sha256]} for files whose hash the caller has
    just verified (used only when the walk's own lstat matches the key).

    {"exists": bool, "files": {rel: [size, mtime_ns, sha256|None]}, "rejected": [[rel, kind]],
     "events_lines": int|None, "primary_shape": [rows, cols]|None, "hashed_bytes": int,
     "temps": [[rel, size]]}  (upload temps left by pushes: regular files named TEMP_PREFIX*)
    """
    out = {
        "exists": False,
        "files": {},
        "rejected": [],
        "events_lines": None,
        "primary_shape": None,
        "hashed_bytes": 0,
        "temps": [],
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
    on_disk = load_cache(cache_path) if hashes else {}
    cache = dict(on_disk)
    if hashes and known:
        cache.update(known)
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
                if entry.name.startswith(TEMP_PREFIX) and entry.is_file(follow_symlinks=False):
                    out["temps"].append([rel, entry.stat(follow_symlinks=False).st_size])
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
    if hashes and new_cache != on_disk:
        save_cache(cache_path, new_cache, dataset_dir)
    return out


# ---------------------------------------------------------------------------------------------
# Parquet footer (stdlib only): rows and leaf-column count from the Thrift Compact FileMetaData.

PARQUET_MAGIC = b"PAR1"
MAX_FOOTER = 64 * 1024 * 1024  # a larger footer is treated as unreadable
MAX_DEPTH = 64  # nesting limit while skipping unknown structs/containers
(CT_STOP, CT_TRUE, CT_FALSE, CT_BYTE, CT_I16, CT_I32, CT_I64, CT_DOUBLE) = range(8)
(CT_BINARY, CT_LIST, CT_SET, CT_MAP, CT_STRUCT) = range(8, 13)


class ParquetFooterError(Exception):
    """The footer is missing, truncated or not valid Thrift Compact FileMetaData."""


class _CompactReader(object):
    """Reads Thrift Compact values from the footer bytes; never past their end."""

    def __init__(self, data):
        self.data = data
        self.pos = 0

    def read(self, n):
        end = self.pos + n
        if n < 0 or end > len(self.data):
            raise ParquetFooterError("footer truncated")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def byte(self):
        if self.pos >= len(self.data):
            raise ParquetFooterError("footer truncated")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def varint(self):
        shift = 0
        value = 0
        while True:
            b = self.byte()
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7
            if shift > 70:
                raise ParquetFooterError("varint too long")

    def zigzag(self):
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def field_header(self, last_id):
        """(field_id, type) or (None, CT_STOP) at the end of a struct."""
        b = self.byte()
        ftype = b & 0x0F
        if ftype == CT_STOP:
            return None, CT_STOP
        delta = b >> 4
        fid = last_id + delta if delta else self.zigzag()
        return fid, ftype

    def list_header(self):
        b = self.byte()
        size = b >> 4
        if size == 15:
            size = self.varint()
        return size, b & 0x0F

    def skip(self, ftype, depth=0, in_container=False):
        """Skip one value of compact type `ftype` (bools inside containers take one byte)."""
        if depth > MAX_DEPTH:
            raise ParquetFooterError("footer nested too deeply")
        if ftype in (CT_TRUE, CT_FALSE):
            if in_container:
                self.read(1)
        elif ftype == CT_BYTE:
            self.read(1)
        elif ftype in (CT_I16, CT_I32, CT_I64):
            self.varint()
        elif ftype == CT_DOUBLE:
            self.read(8)
        elif ftype == CT_BINARY:
            self.read(self.varint())
        elif ftype in (CT_LIST, CT_SET):
            size, etype = self.list_header()
            for _ in range(size):
                self.skip(etype, depth + 1, True)
        elif ftype == CT_MAP:
            size = self.varint()
            if size:
                kv = self.byte()
                for _ in range(size):
                    self.skip(kv >> 4, depth + 1, True)
                    self.skip(kv & 0x0F, depth + 1, True)
        elif ftype == CT_STRUCT:
            last = 0
            while True:
                fid, t = self.field_header(last)
                if t == CT_STOP:
                    return
                self.skip(t, depth + 1)
                last = fid
        else:
            raise ParquetFooterError("unknown compact type %d" % ftype)


def _schema_element_is_leaf(r):
    """Read one SchemaElement struct; True when it has no num_children (field 5)."""
    leaf = True
    last = 0
    while True:
        fid, t = r.field_header(last)
        if t == CT_STOP:
            return leaf
        if fid == 5 and t == CT_I32:
            r.zigzag()
            leaf = False
        else:
            r.skip(t, 1)
        last = fid


def _read_footer(fh, size):
    """The FileMetaData bytes of an open binary parquet file of `size` bytes.

    Reads the 4-byte head magic, the 8-byte tail and then only the footer (at most MAX_FOOTER
    bytes in memory). Raises ParquetFooterError."""
    if size < 12:
        raise ParquetFooterError("file too small for parquet (%d bytes)" % size)
    fh.seek(0)
    if fh.read(4) != PARQUET_MAGIC:
        raise ParquetFooterError("missing head magic PAR1")
    fh.seek(size - 8)
    tail = fh.read(8)
    if len(tail) != 8 or tail[4:] != PARQUET_MAGIC:
        raise ParquetFooterError("missing tail magic PAR1 (truncated or encrypted footer)")
    length = int.from_bytes(tail[:4], "little")
    if length <= 0 or length > size - 12 or length > MAX_FOOTER:
        raise ParquetFooterError("footer length %d out of range" % length)
    fh.seek(size - 8 - length)
    footer = fh.read(length)
    if len(footer) != length:
        raise ParquetFooterError("footer truncated")
    return footer


def read_parquet_footer_shape(fh, size):
    """(rows, leaf columns) from an open binary parquet file of `size` bytes.

    Reads only the footer (see _read_footer), which must be exactly one well-formed FileMetaData
    struct: a damaged footer is refused even where fields 2 (schema) and 3 (num_rows) survived.
    Raises ParquetFooterError.
    """
    footer = _read_footer(fh, size)
    length = len(footer)
    r = _CompactReader(footer)
    rows = None
    cols = None
    last = 0
    while True:
        fid, t = r.field_header(last)
        if t == CT_STOP:
            break
        if fid == 2 and t == CT_LIST and cols is None:
            n, etype = r.list_header()
            if etype != CT_STRUCT:
                raise ParquetFooterError("schema is not a list of structs")
            leaves = 0
            for i in range(n):
                if _schema_element_is_leaf(r) and i > 0:
                    leaves += 1
            cols = leaves
        elif fid == 3 and t == CT_I64 and rows is None:
            rows = r.zigzag()
        else:
            r.skip(t)
        last = fid
    if r.pos != length:
        raise ParquetFooterError("footer length does not match FileMetaData")
    if rows is None or cols is None or rows < 0:
        raise ParquetFooterError("FileMetaData lacks num_rows or schema")
    return rows, cols


def parquet_shape(path):
    """[rows, leaf columns] from the parquet footer (stdlib only), or None when unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            rows, cols = read_parquet_footer_shape(fh, size)
        return [rows, cols]
    except (OSError, ParquetFooterError, ValueError, IndexError):
        return None


# ---------------------------------------------------------------------------------------------
# Payload validation (stdlib only): what may replace a dataset file. records.parquet must be a
# complete parquet file with the core schema, overlays (`_derived/**.parquet`) complete with a
# key column, snapshots complete, meta.md UTF-8 text. Only the footer of a parquet file is read.

CORE_COLUMNS = (  # usrbatch.dataset.schema.CORE_SCHEMA (a test keeps the two equal)
    ("id", "string"),
    ("bio_type", "string"),
    ("sequence", "string"),
    ("alphabet", "string"),
    ("length", "int32"),
    ("source", "string"),
    ("created_at", "timestamp[us, UTC]"),
)
OVERLAY_KEYS = ("id", "sequence", "sequence_norm", "sequence_ci")  # attach --key; column id|sequence
OVERLAY_KEY_META = "usr:overlay_key"
PAYLOAD_KINDS = ("records", "overlay", "snapshot", "meta", "parquet")  # parquet: FILE mode
SNAPSHOT_DIGITS = 6  # records-<8 digits>T<6+ digits>.parquet (layout.SNAPSHOT_NAME)
_PHYSICAL = {0: "bool", 1: "int32", 2: "int64", 3: "int96", 4: "float", 5: "double", 6: "binary"}
_PHYSICAL[7] = "fixed_size_binary"
_CONVERTED = {0: "string", 6: "date32", 9: "timestamp[ms, UTC]", 10: "timestamp[us, UTC]"}
_CONVERTED.update({11: "uint8", 12: "uint16", 13: "uint32", 14: "uint64", 15: "int8", 16: "int16"})
_CONVERTED.update({17: "int32", 18: "int64", 19: "json", 5: "decimal"})
_LOGICAL_OTHER = {2: "map", 3: "list", 4: "enum", 5: "decimal", 6: "date32", 7: "time", 11: "null"}
_LOGICAL_OTHER.update({12: "json", 13: "bson", 14: "uuid", 15: "float16"})


def file_payload_kind(name):
    """FILE mode: the kind of a single file by its name (records.parquet, meta.md, any other
    .parquet must be a complete parquet file), or None when it is not checked."""
    if name in ("records.parquet", "meta.md"):
        return payload_kind(name)
    return "parquet" if name.endswith(".parquet") else None


def _is_snapshot_name(name):
    if not (name.startswith("records-") and name.endswith(".parquet")):
        return False
    stamp = name[len("records-") : -len(".parquet")]
    day, sep, clock = stamp.partition("T")
    return bool(sep) and len(day) == 8 and day.isdigit() and len(clock) >= SNAPSHOT_DIGITS and clock.isdigit()


def payload_kind(rel):
    """The payload kind of a path relative to its dataset dir, or None when it is not checked."""
    if rel == "records.parquet":
        return "records"
    if rel == "meta.md":
        return "meta"
    parts = rel.split("/")
    if parts[0] == "_derived" and len(parts) > 1 and rel.endswith(".parquet"):
        return "overlay"
    if parts[0] == "_snapshots" and len(parts) == 2 and _is_snapshot_name(parts[1]):
        return "snapshot"
    return None


def _fields(r):
    """(field id, compact type) of each field of the struct at the reader; the caller reads or
    skips each value before asking for the next."""
    last = 0
    while True:
        fid, t = r.field_header(last)
        if t == CT_STOP:
            return
        yield fid, t
        last = fid


def _binary(r):
    return r.read(r.varint())


def _list_of_structs(r, what):
    n, etype = r.list_header()
    if etype != CT_STRUCT:
        raise ParquetFooterError("%s is not a list of structs" % what)
    return n


def _read_logical_type(r):
    """LogicalType union: ("STRING",), ("TIMESTAMP", utc, unit), ("INTEGER", bits, signed), ("OTHER", id)."""
    out = None
    for fid, t in _fields(r):
        if t != CT_STRUCT:
            r.skip(t, 2)
        elif fid == 8:
            utc, unit = None, None
            for tfid, tt in _fields(r):
                if tfid == 1 and tt in (CT_TRUE, CT_FALSE):
                    utc = tt == CT_TRUE
                elif tfid == 2 and tt == CT_STRUCT:
                    for ufid, ut in _fields(r):
                        r.skip(ut, 4)
                        unit = {1: "ms", 2: "us", 3: "ns"}.get(ufid, "?")
                else:
                    r.skip(tt, 3)
            out = ("TIMESTAMP", utc, unit)
        elif fid == 10:
            bits, signed = None, None
            for ifid, it in _fields(r):
                if ifid == 1 and it == CT_BYTE:
                    bits = r.byte()
                elif ifid == 2 and it in (CT_TRUE, CT_FALSE):
                    signed = it == CT_TRUE
                else:
                    r.skip(it, 3)
            out = ("INTEGER", bits, signed)
        else:
            r.skip(t, 2)
            out = ("STRING",) if fid == 1 else ("OTHER", fid)
    return out


def _read_schema_element(r):
    el = {"type": None, "repetition": None, "name": None, "children": None, "converted": None}
    el["logical"] = None
    for fid, t in _fields(r):
        if fid == 1 and t == CT_I32:
            el["type"] = r.zigzag()
        elif fid == 3 and t == CT_I32:
            el["repetition"] = r.zigzag()
        elif fid == 4 and t == CT_BINARY:
            el["name"] = _binary(r).decode("utf-8", "replace")
        elif fid == 5 and t == CT_I32:
            el["children"] = r.zigzag()
        elif fid == 6 and t == CT_I32:
            el["converted"] = r.zigzag()
        elif fid == 10 and t == CT_STRUCT:
            el["logical"] = _read_logical_type(r)
        else:
            r.skip(t, 1)
    if el["name"] is None:
        raise ParquetFooterError("a schema element has no name")
    return el


def _read_column_chunk(r, ranges):
    """One ColumnChunk: appends (what, offset, length) of every byte range it points at."""
    meta = None
    index = {}
    for fid, t in _fields(r):
        if fid == 1 and t == CT_BINARY:
            _binary(r)
            raise ParquetFooterError("a column chunk lives in another file (file_path)")
        elif fid == 3 and t == CT_STRUCT:
            meta = {}
            for mfid, mt in _fields(r):
                if (mfid in (5, 7, 9, 11, 14) and mt == CT_I64) or (mfid == 15 and mt == CT_I32):
                    meta[mfid] = r.zigzag()
                else:
                    r.skip(mt, 2)
        elif (fid in (4, 6) and t == CT_I64) or (fid in (5, 7) and t == CT_I32):
            index[fid] = r.zigzag()
        else:
            r.skip(t, 1)
    if meta is None:
        raise ParquetFooterError("a column chunk has no (plaintext) column metadata")
    if 9 not in meta or 7 not in meta or meta.get(5, 0) < 0:
        raise ParquetFooterError("a column chunk lacks its data page offset or size")
    # Writers store 0 for an absent dictionary page, and pyarrow a data page offset of 0 for an
    # empty chunk: the chunk starts at the first real page offset.
    pages = [o for o in (meta[9], meta.get(11)) if o is not None and o >= 4]
    if not pages and meta[7] > 0:
        raise ParquetFooterError("a column chunk has no page offset inside the file")
    for offset in pages:
        ranges.append(("column chunk", offset, 0))
    if pages:
        ranges.append(("column chunk", min(pages), meta[7]))
    if 14 in meta and 15 in meta:
        ranges.append(("bloom filter", meta[14], meta[15]))
    for off, length, what in ((4, 5, "offset index"), (6, 7, "column index")):
        if off in index and length in index:
            ranges.append((what, index[off], index[length]))


def describe_parquet(fh, size):
    """What a complete parquet file holds, from its footer alone, after checking that it IS
    complete: magic at both ends, a sane footer length, exactly one well-formed FileMetaData, a
    consistent schema tree, every row group with one chunk per leaf column, and every chunk,
    index and bloom filter inside the data region (between the head magic and the footer).

    Returns {"rows": int, "leaves": int, "top": [schema elements of the top-level fields],
    "kv": {key: value} (only OVERLAY_KEY_META)}. Raises ParquetFooterError naming the defect."""
    footer = _read_footer(fh, size)
    data_end = size - 8 - len(footer)
    r = _CompactReader(footer)
    rows, schema, groups, kv = None, None, [], {}
    ranges = []
    for fid, t in _fields(r):
        if fid == 2 and t == CT_LIST and schema is None:
            schema = [_read_schema_element(r) for _ in range(_list_of_structs(r, "schema"))]
        elif fid == 3 and t == CT_I64 and rows is None:
            rows = r.zigzag()
        elif fid == 4 and t == CT_LIST:
            for _ in range(_list_of_structs(r, "row_groups")):
                chunks, group_rows = 0, None
                for gfid, gt in _fields(r):
                    if gfid == 1 and gt == CT_LIST:
                        n = _list_of_structs(r, "columns")
                        for _ in range(n):
                            _read_column_chunk(r, ranges)
                        chunks += n
                    elif gfid == 3 and gt == CT_I64:
                        group_rows = r.zigzag()
                    else:
                        r.skip(gt, 1)
                groups.append((chunks, group_rows))
        elif fid == 5 and t == CT_LIST:
            for _ in range(_list_of_structs(r, "key_value_metadata")):
                key, value = None, None
                for kfid, kt in _fields(r):
                    if kfid == 1 and kt == CT_BINARY:
                        key = _binary(r)
                    elif kfid == 2 and kt == CT_BINARY:
                        value = _binary(r)
                    else:
                        r.skip(kt, 2)
                if key == OVERLAY_KEY_META.encode("ascii") and value is not None:
                    kv[OVERLAY_KEY_META] = value.decode("utf-8", "replace")
        else:
            r.skip(t)
    if r.pos != len(footer):
        raise ParquetFooterError("footer length does not match FileMetaData")
    if rows is None or schema is None or rows < 0 or not schema:
        raise ParquetFooterError("FileMetaData lacks num_rows or schema")
    top, leaves = _schema_tree(schema)
    for chunks, group_rows in groups:
        if chunks != leaves:
            raise ParquetFooterError("a row group has %d column chunks for %d columns" % (chunks, leaves))
        if group_rows is None or group_rows < 0:
            raise ParquetFooterError("a row group lacks its row count")
    if not groups and rows > 0:
        raise ParquetFooterError("the footer says %d rows but holds no row groups" % rows)
    if groups and sum(g[1] for g in groups) != rows:
        raise ParquetFooterError(
            "row groups hold %d rows, the footer says %d" % (sum(g[1] for g in groups), rows)
        )
    for what, offset, length in ranges:
        if offset < 4 or length < 0 or offset + length > data_end:
            raise ParquetFooterError(
                "a %s (bytes %d..%d) lies outside the data region (4..%d): truncated or spliced file"
                % (what, offset, offset + length, data_end)
            )
    return {"rows": rows, "leaves": leaves, "top": top, "kv": kv}


def _schema_tree(schema):
    """(top-level elements, leaf count) of a flattened schema; ParquetFooterError when the
    num_children counts do not describe exactly the elements present."""
    root = schema[0]
    if not root["children"] and len(schema) > 1:
        raise ParquetFooterError("schema root has no children but %d elements follow" % (len(schema) - 1))
    top, leaves = [], 0
    pending = [root["children"] or 0]  # children still to read at each open level
    for el in schema[1:]:
        while pending and pending[-1] == 0:
            pending.pop()
        if not pending:
            raise ParquetFooterError("schema has more elements than its tree describes")
        pending[-1] -= 1
        if len(pending) == 1:
            top.append(el)
        if el["children"]:
            pending.append(el["children"])
        else:
            leaves += 1
    if any(pending):
        raise ParquetFooterError("schema tree is missing elements")
    return top, leaves


def column_type(el):
    """A top-level schema element's type in Arrow words (string, int32, timestamp[us, UTC], ...)."""
    if el["children"]:
        logical = el["logical"]
        return _LOGICAL_OTHER.get(logical[1], "struct") if logical and logical[0] == "OTHER" else "struct"
    physical = _PHYSICAL.get(el["type"], "unknown")
    logical, converted = el["logical"], el["converted"]
    if logical and logical[0] == "STRING" and el["type"] == 6:
        out = "string"
    elif logical and logical[0] == "TIMESTAMP" and el["type"] == 2:
        out = "timestamp[%s%s]" % (logical[2], ", UTC" if logical[1] else "")
    elif logical and logical[0] == "INTEGER" and el["type"] in (1, 2):
        out = "%sint%s" % ("" if logical[2] else "u", logical[1])
    elif logical and logical[0] == "OTHER":
        out = _LOGICAL_OTHER.get(logical[1], physical)
    elif converted is not None:
        out = _CONVERTED.get(converted, physical)
    else:
        out = physical
    return "repeated " + out if el["repetition"] == 2 else out


def _records_problem(info):
    types = dict((el["name"], column_type(el)) for el in info["top"])
    for name, expected in CORE_COLUMNS:
        if name not in types:
            return "lacks core column '%s' (columns: %s)" % (name, ", ".join(sorted(types)[:12]) or "none")
        if types[name] != expected:
            return "has core column '%s' as %s, expected %s" % (name, types[name], expected)
    return None


def _overlay_problem(info):
    types = dict((el["name"], column_type(el)) for el in info["top"])
    declared = info["kv"].get(OVERLAY_KEY_META)
    if declared is not None and declared not in OVERLAY_KEYS:
        return "declares %s %r, not one of %s" % (OVERLAY_KEY_META, declared, ", ".join(OVERLAY_KEYS))
    if declared == "id":
        wanted = ["id"]
    elif declared is not None:
        wanted = [declared] if declared in types else ["sequence"]
    else:
        wanted = ["id", "sequence"]
    for name in wanted:
        if types.get(name) == "string":
            return None
    present = [n for n in wanted if n in types]
    if present:
        return "has key column '%s' as %s, expected string" % (present[0], types[present[0]])
    return "has no key column %s" % " or ".join("'%s'" % n for n in wanted)


def _text_problem(fh):
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    consumed = 0
    while True:
        block = fh.read(CHUNK)
        nul = block.find(b"\x00")
        if nul >= 0:
            return "holds a NUL byte at offset %d (binary data, not text)" % (consumed + nul)
        pending = len(decoder.getstate()[0])  # bytes of a character cut at the previous block's end
        try:
            decoder.decode(block, not block)
        except UnicodeDecodeError as exc:
            return "is not UTF-8 text (invalid byte near offset %d)" % (consumed - pending + exc.start)
        if not block:
            return None
        consumed += len(block)


def payload_problem(path, kind):
    """None when the regular file at `path` is a valid payload of `kind` (PAYLOAD_KINDS), else a
    short text saying what is wrong with it. Never follows a symlink; reads a parquet footer or
    streams a text file (bounded memory)."""
    if kind not in PAYLOAD_KINDS:
        raise AgentError("unknown payload kind %r" % (kind,))
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        return "cannot be read (%s)" % (exc.strerror or exc)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return "is not a regular file"
    with os.fdopen(fd, "rb") as fh:
        if kind == "meta":
            return _text_problem(fh)
        try:
            info = describe_parquet(fh, st.st_size)
        except ParquetFooterError as exc:
            return "is not a complete parquet file: %s" % exc
        except (ValueError, IndexError, OverflowError) as exc:
            return "is not a complete parquet file: %s" % exc
    if kind == "records":
        return _records_problem(info)
    if kind == "overlay":
        return _overlay_problem(info)
    return None


# ---------------------------------------------------------------------------------------------
# Paths: every path the agent touches is base + a validated relative path that stays inside base.


class AgentError(Exception):
    """A refused request (bad path, missing file, ...); reported as {"ok": false, "error": ...}."""


def check_rel(raw, what="path"):
    """Return a safe POSIX relative path (same rules as transport.base.validate_relpath)."""
    text = raw[2:] if isinstance(raw, str) and raw.startswith("./") else raw
    if not isinstance(text, str):
        raise AgentError("%s is not a string: %r" % (what, raw))
    bad = (
        not text
        or text.startswith("/")
        or "\x00" in text
        or "\n" in text
        or "\r" in text
        or "\\" in text
        or any(part in ("", ".", "..") for part in text.split("/"))
    )
    if bad:
        raise AgentError("%s contains unsafe relative path %r." % (what, raw))
    return text


def expand_base(base):
    if not isinstance(base, str) or not base:
        raise AgentError("base_dir is empty")
    return os.path.abspath(os.path.expanduser(base))


def _inside(root_real, path):
    return path == root_real or path.startswith(root_real.rstrip(os.sep) + os.sep)


def _nearest_existing(path):
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def require_base(base):
    """Refuse a base_dir that is missing or not a directory (a symlinked base_dir is fine)."""
    if os.path.isdir(base):
        return
    if os.path.lexists(base):
        raise AgentError("base_dir is not a directory: %s" % base)
    raise AgentError(
        "base_dir %s does not exist; create it (mkdir -p '%s') or correct base_dir in remotes.yaml"
        % (base, base)
    )


def resolve_under(base, rel, what="path", checked=None):
    """base/rel after checking rel, that base_dir exists, and that rel's existing parent chain
    does not leave base. `checked` (a set kept for ONE request) skips the parent-chain check of a
    directory already checked in it (thousands of files in a few directories)."""
    rel = check_rel(rel, what)
    path = os.path.join(base, rel)
    directory = os.path.dirname(path)
    if checked is not None and directory in checked:
        return path
    require_base(base)
    root_real = os.path.realpath(base)
    anchor = os.path.realpath(_nearest_existing(directory))
    if not _inside(root_real, anchor):
        raise AgentError("%s %r escapes base_dir through a symlink." % (what, rel))
    if checked is not None:
        checked.add(directory)
    return path


def makedirs_inside(base, directory):
    """Create `directory` (base + a relative path) one component at a time; each component must
    resolve inside base before anything is created beneath it, so nothing is ever created
    outside base_dir (a symlink on the way out is refused, not followed)."""
    root_real = os.path.realpath(base)
    rel = os.path.relpath(directory, base)
    if rel == ".":
        return
    if rel == ".." or rel.startswith(".." + os.sep) or os.path.isabs(rel):
        raise AgentError("directory %r is not under base_dir." % (directory,))
    current = base
    for part in rel.split(os.sep):
        current = os.path.join(current, part)
        with contextlib.suppress(FileExistsError):
            os.mkdir(current)
        real = os.path.realpath(current)
        if not _inside(root_real, real):
            raise AgentError("directory %r escapes base_dir through a symlink." % (directory,))
        if not os.path.isdir(real):
            raise AgentError("%r is not a directory." % (current,))


# ---------------------------------------------------------------------------------------------
# apply / hash / mkdir / probe


class VerifyMismatch(AgentError):
    """An uploaded temp file's sha256 differs from the expected one (nothing was renamed)."""

    def __init__(self, rel, got, expected, bad):
        AgentError.__init__(
            self,
            "uploaded %s does not match: remote sha256 %s != expected %s (%d file(s) failed verification)"
            % (rel, got, expected, bad),
        )
        self.rel = rel


def _check_uploads(base, verify, checked=None):
    """sha256 of every path in `verify` ({rel: expected}); on any mismatch remove them all and
    raise VerifyMismatch naming the first (sorted) bad file. Nothing else is touched.

    Returns {path: (st_ino, st_size, st_mtime_ns, sha256)} from an lstat taken before hashing,
    so a caller can tell the file it renames is the one that was verified."""
    if not isinstance(verify, dict):
        raise AgentError("verify must be a {path: sha256} object")
    paths = [
        (rel, resolve_under(base, rel, "verify path", checked), str(sha))
        for rel, sha in sorted(verify.items())
    ]
    bad = []
    verified = {}
    received = {}  # per directory: hashes the `recv` op computed as it wrote (hash cache entries)
    for directory in set(os.path.dirname(path) for _rel, path, _sha in paths):
        received[directory] = load_cache(default_cache_path(directory))
    used = {}
    for rel, path, expected in paths:
        try:
            st = os.lstat(path)
            hit = received[os.path.dirname(path)].get(os.path.basename(path))
            if (
                stat.S_ISREG(st.st_mode)
                and hit
                and hit[:4] == [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
            ):
                got = hit[4]  # written and hashed by `recv`, unchanged since (same lstat key)
                used.setdefault(os.path.dirname(path), []).append(os.path.basename(path))
            else:
                got = sha256_file(path) if stat.S_ISREG(st.st_mode) else None
            after = os.lstat(path)
            if got is not None and (after.st_ino, after.st_size, after.st_mtime_ns) == (
                st.st_ino,
                st.st_size,
                st.st_mtime_ns,
            ):
                verified[path] = (st.st_ino, st.st_size, st.st_mtime_ns, got)
        except OSError:
            got = None
        if got != expected:
            bad.append((rel, got, expected))
    for directory, names in used.items():  # consumed: the temps are renamed or removed next
        entries = received[directory]
        for name in names:
            entries.pop(name, None)
        save_cache(default_cache_path(directory), entries, directory)
    if bad:
        _remove_regular([path for _rel, path, _sha in paths])
        raise VerifyMismatch(bad[0][0], bad[0][1], bad[0][2], len(bad))
    return verified


def _set_mtimes(base, mtimes, sources):
    """Set the mtime (ns) of rename sources only; every path validated before any change."""
    if not isinstance(mtimes, dict):
        raise AgentError("mtimes must be a {path: mtime_ns} object")
    plan = []
    for rel, mtime_ns in sorted(mtimes.items()):
        path = resolve_under(base, rel, "mtime path")
        if path not in sources:
            raise AgentError("mtime path is not a rename source: %s" % rel)
        if isinstance(mtime_ns, bool) or not isinstance(mtime_ns, int) or mtime_ns < 0:
            raise AgentError("mtime for %s must be a non-negative integer of nanoseconds" % rel)
        plan.append((path, mtime_ns))
    for path, mtime_ns in plan:
        st = os.lstat(path)
        os.utime(path, ns=(st.st_atime_ns, mtime_ns))


def _remove_regular(paths):
    """Best-effort removal of the regular files among `paths` (refused uploads)."""
    for path in paths:
        try:
            if stat.S_ISREG(os.lstat(path).st_mode):
                os.unlink(path)
        except OSError:
            pass


KIND_TEXT = {
    "records": "records.parquet (parquet with the core schema)",
    "overlay": "overlay (parquet with an id or sequence key column)",
    "snapshot": "snapshot (parquet)",
    "meta": "meta.md (UTF-8 text)",
    "parquet": "parquet file",
}


class PayloadInvalid(AgentError):
    """An uploaded temp file is not a valid payload of its kind (nothing was renamed)."""

    def __init__(self, rel, target, kind, problem):
        AgentError.__init__(
            self,
            "post-push-payload: the uploaded copy of %s (remote temp %s) is not a valid %s: it %s. "
            "Nothing was renamed and the uploads were removed: the remote dataset is unchanged."
            % (target, rel, KIND_TEXT.get(kind, kind), problem),
        )
        self.rel = rel
        self.hint = "Check the local file with `usr validate`, then push again."


def _check_payload(base, payload, renames, checked=None):
    """Validate every uploaded file in `payload` ({rel: kind}) before any rename; on a problem
    remove all of them (and every rename source) and raise PayloadInvalid for the first one."""
    if not isinstance(payload, dict):
        raise AgentError("payload must be a {path: kind} object")
    targets = dict((pair[0], pair[1]) for pair in renames)
    files = [
        (rel, resolve_under(base, rel, "payload path", checked), kind)
        for rel, kind in sorted(payload.items())
    ]
    for rel, path, kind in files:
        problem = payload_problem(path, kind)
        if problem is not None:
            _remove_regular(
                [p for _r, p, _k in files]
                + [resolve_under(base, r, "rename source", checked) for r in targets]
            )
            raise PayloadInvalid(rel, targets.get(rel, rel), kind, problem)


def _snapshot_copy(base, snapshot):
    """Copy the file that a rename will replace ([src, dst]: dst is `<ds>/_snapshots/records-<stamp>.parquet`)
    to dst through a temp beside it (never overwriting). Returns (dst path, [size, mtime_ns,
    ctime_ns, ino, sha256]) or None when src does not exist."""
    if not isinstance(snapshot, (list, tuple)) or len(snapshot) != 2:
        raise AgentError("snapshot must be [src, dst]: %r" % (snapshot,))
    src = resolve_under(base, snapshot[0], "snapshot source")
    dst = resolve_under(base, snapshot[1], "snapshot target")
    if not _is_snapshot_name(os.path.basename(dst)) or os.path.basename(os.path.dirname(dst)) != "_snapshots":
        raise AgentError("snapshot target is not a _snapshots/records-<stamp>.parquet name: %s" % snapshot[1])
    if os.path.lexists(dst):
        raise AgentError("snapshot target already exists: %s" % snapshot[1])
    try:
        fd = os.open(src, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as fin:
        if not stat.S_ISREG(os.fstat(fin.fileno()).st_mode):
            raise AgentError("snapshot source is not a regular file: %s" % snapshot[0])
        makedirs_inside(base, os.path.dirname(dst))
        import secrets

        tmp = os.path.join(os.path.dirname(dst), TEMP_PREFIX + "snapshot-" + secrets.token_hex(6))
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        h = hashlib.sha256()
        try:
            with os.fdopen(os.open(tmp, flags, 0o666), "wb") as fout:  # umask decides
                while True:
                    block = fin.read(CHUNK)
                    if not block:
                        break
                    fout.write(block)
                    h.update(block)
                fout.flush()
                os.fsync(fout.fileno())
            os.rename(tmp, dst)
        except BaseException:
            _remove_regular([tmp])
            raise
    st = os.lstat(dst)
    return dst, [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, h.hexdigest()]


def apply_changes(
    base,
    renames,
    removals,
    verify=None,
    inventory_rel=None,
    parquet_stats=False,
    cache_path=None,
    mtimes=None,
    payload=None,
    snapshot=None,
):
    """Rename each (src, dst) into place (parents created, dst replaced atomically), then remove
    each file in `removals` (missing ones are skipped) and prune directories left empty.

    Every path is validated and every source checked BEFORE anything changes. With `verify`
    ({rel: sha256}, normally the uploaded temp files) every listed file is hashed first: one
    mismatch removes them all and raises VerifyMismatch, renaming nothing. With `payload`
    ({rel: kind}) those files are then validated (payload_problem): one invalid file removes the
    uploads and raises PayloadInvalid, renaming nothing. With `snapshot` ([src, dst]) src is
    copied to the snapshot name dst before the first rename (skipped when src is missing).
    With `inventory_rel`,
    the result carries the post-apply inventory of that dir under "inventory" (same exec).
    Directories are never removed except empty ones during pruning; base itself is never removed.
    `mtimes` ({rename source: mtime_ns}) sets those sources' mtimes first (an upload keeps its
    source's mtime, as rsync -t does; the public tool compares meta.md by mtime).
    """
    base = expand_base(base)
    require_base(base)
    inv_path = resolve_under(base, inventory_rel, "inventory dir") if inventory_rel is not None else None
    checked = set()  # directories whose parent chain this call checked (resolve_under)
    plan_ren = []
    for pair in renames:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise AgentError("rename entry must be [src, dst]: %r" % (pair,))
        src = resolve_under(base, pair[0], "rename source", checked)
        dst = resolve_under(base, pair[1], "rename target", checked)
        try:
            st = os.lstat(src)
        except OSError:
            raise AgentError("rename source missing: %s" % pair[0]) from None
        if not stat.S_ISREG(st.st_mode):
            raise AgentError("rename source is not a regular file: %s" % pair[0])
        if os.path.isdir(dst) and not os.path.islink(dst):
            raise AgentError("rename target is a directory: %s" % pair[1])
        plan_ren.append((src, dst))
    plan_rm = []
    for rel in removals:
        path = resolve_under(base, rel, "removal", checked)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            raise AgentError("refusing to remove a directory: %s" % rel)
        plan_rm.append(path)
    _set_mtimes(base, mtimes or {}, [src for src, _dst in plan_ren])
    verified = _check_uploads(base, verify, checked) if verify else {}
    if payload:
        _check_payload(base, payload, renames, checked)
    known = {}
    inv_prefix = os.path.join(inv_path, "") if inv_path is not None else None
    snapped = _snapshot_copy(base, snapshot) if snapshot else None
    if snapped is not None and inv_prefix is not None and snapped[0].startswith(inv_prefix):
        known[snapped[0][len(inv_prefix) :].replace(os.sep, "/")] = snapped[1]
    by_dir = {}  # verified renames outside an inventoried dataset: cached per directory
    made = set()
    for src, dst in plan_ren:
        if os.path.dirname(dst) not in made:
            makedirs_inside(base, os.path.dirname(dst))
            made.add(os.path.dirname(dst))
        os.replace(src, dst)
        seen = verified.get(src)
        if seen is None:
            continue
        st = os.lstat(dst)  # fresh key: the rename changed the path and the ctime
        if not stat.S_ISREG(st.st_mode) or (st.st_ino, st.st_size, st.st_mtime_ns) != seen[:3]:
            continue
        entry = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, seen[3]]
        if inv_prefix is not None and dst.startswith(inv_prefix):
            known[dst[len(inv_prefix) :].replace(os.sep, "/")] = entry
        elif inv_prefix is None and cache_path is None:
            by_dir.setdefault(os.path.dirname(dst), {})[os.path.basename(dst)] = entry
    for directory, entries in by_dir.items():
        remember_hashes(directory, entries)  # what stat_path of these files reads (FILE mode)
    removed = 0
    parents = set()
    for path in plan_rm:
        try:
            os.unlink(path)
            removed += 1
        except FileNotFoundError:
            pass
        parents.add(os.path.dirname(path))
    pruned = 0
    for parent in sorted(parents, key=len, reverse=True):
        current = parent
        while current != base and _inside(base, current):
            try:
                os.rmdir(current)
            except OSError:
                break
            pruned += 1
            current = os.path.dirname(current)
    out = {"renamed": len(plan_ren), "removed": removed, "pruned": pruned}
    if snapshot:
        out["snapshot"] = snapshot[1] if snapped is not None else None
    if inv_path is not None:
        out["inventory"] = inventory(inv_path, True, parquet_stats, cache_path, known)
    return out


def hash_paths(base, paths):
    """{rel: [size, mtime_ns, sha256] | None} for regular files; None when missing or not regular."""
    base = expand_base(base)
    out = {}
    for rel in paths:
        path = resolve_under(base, rel, "hash path")
        try:
            st = os.lstat(path)
        except OSError:
            out[rel] = None
            continue
        if not stat.S_ISREG(st.st_mode):
            out[rel] = None
            continue
        out[rel] = [st.st_size, st.st_mtime_ns, sha256_file(path)]
    return {"files": out}


def stat_path(base, rel, hashes=True, parquet_stats=False, cache_path=None):
    """FILE mode: what `base/rel` is, without following it.

    {"kind": "file"|"missing"|"symlink"|"directory"|"special", "size", "mtime_ns", "sha256",
     "shape": [rows, cols]|None, "hashed_bytes"}; the numbers are None unless kind is "file".
    The hash comes from the hash cache of rel's directory when its lstat key matches, and a file
    that changes while it is hashed is an error (AgentError), never a wrong answer.
    """
    base = expand_base(base)
    out = {"kind": "missing", "size": None, "mtime_ns": None, "sha256": None, "shape": None}
    out["hashed_bytes"] = 0
    if not os.path.isdir(base):  # follows links: a symlinked base_dir is fine
        if os.path.lexists(base):
            raise AgentError("base_dir is not a directory: %s" % base)
        check_rel(rel, "stat path")
        return out  # a file in a directory that does not exist (yet)
    path = resolve_under(base, rel, "stat path")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return out
    except NotADirectoryError:
        raise AgentError("a parent of %r is not a directory" % (rel,)) from None
    if stat.S_ISLNK(st.st_mode):
        out["kind"] = "symlink"
        return out
    if stat.S_ISDIR(st.st_mode):
        out["kind"] = "directory"
        return out
    if not stat.S_ISREG(st.st_mode):
        out["kind"] = "special"
        return out
    out.update(kind="file", size=st.st_size, mtime_ns=st.st_mtime_ns)
    if hashes:
        directory, name = os.path.split(path)
        cache_path = cache_path or default_cache_path(directory)
        key = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        hit = load_cache(cache_path).get(name)
        if hit and hit[:4] == key:
            out["sha256"] = hit[4]
        else:
            out["sha256"] = sha256_file(path)
            out["hashed_bytes"] = st.st_size
            after = os.lstat(path)
            if [after.st_size, after.st_mtime_ns, after.st_ctime_ns, after.st_ino] != key:
                raise AgentError("%r changed while it was hashed; retry when it is quiet" % (rel,))
            remember_hashes(directory, {name: key + [out["sha256"]]}, cache_path)
    if parquet_stats:
        out["shape"] = parquet_shape(path)
    return out


def make_dirs(base, paths):
    base = expand_base(base)
    os.makedirs(base, exist_ok=True)
    for rel in paths:
        makedirs_inside(base, resolve_under(base, rel, "mkdir path"))
    return {"created": len(paths)}


def probe(base=None):
    """What `usr remotes doctor` needs to know about this host, in one call."""
    import shutil
    import tempfile

    out = {
        "python": "%d.%d.%d" % sys.version_info[:3],
        "pyarrow": None,
        "flock": shutil.which("flock"),
        "sha256sum": shutil.which("sha256sum") or shutil.which("shasum"),
        "base_exists": None,
        "base_writable": None,
    }
    try:
        if sys.flags.no_site:  # the ssh transports start the agent with -S: site-packages on demand
            import site

            site.main()
        import pyarrow  # informational: --verify parquet reads the footer without it

        out["pyarrow"] = pyarrow.__version__
    except Exception:
        pass
    if base:
        path = expand_base(base)
        out["base_exists"] = os.path.isdir(path)
        if out["base_exists"]:
            try:
                fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX + "doctor-", dir=path)
                os.close(fd)
                os.unlink(tmp)
                out["base_writable"] = True
            except OSError:
                out["base_writable"] = False
    return out


# ---------------------------------------------------------------------------------------------
# Streams: file bytes through the exec's own stdin/stdout (one session for many files, hashed
# while they pass: one pass on each side, as rsync does). Framing in transport/ssh_stream.py.

STREAM_LOCK_S = 30.0  # an upload temp another (dying) stream still writes: wait this long for it
_F_SETPIPE_SZ = 1031


def _grow_pipe(fd):
    with contextlib.suppress(OSError, ValueError):
        fcntl.fcntl(fd, _F_SETPIPE_SZ, CHUNK)


def _lock_temp(fd, rel):
    deadline = time.time() + STREAM_LOCK_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError:
            if time.time() > deadline:
                raise AgentError("upload temp %s is still being written by another session" % rel) from None
            time.sleep(POLL_S)


class StreamFileError(AgentError):
    """One file of a stream cannot be opened; the answer names it (`path`)."""

    def __init__(self, rel, why):
        AgentError.__init__(self, why)
        self.rel = rel


def _inside_dir(base, rel, what, checked, create=False):
    """base/rel after resolve_under's checks, made once per directory of a stream (`checked`);
    with `create` its parents are made (makedirs_inside)."""
    directory = os.path.dirname(os.path.join(base, check_rel(rel, what)))
    fresh = directory not in checked
    path = resolve_under(base, rel, what, checked)
    if fresh and create:
        makedirs_inside(base, directory)
    return path


def _kept_bytes(base, rel, size, restart, checked):
    """How much of an upload target's partial temp a stream keeps (0 unless it is a regular file
    no longer than `size` and not `restart`); its parents are made on the way."""
    path = _inside_dir(base, rel, "upload path", checked, create=True)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0
    if not stat.S_ISREG(st.st_mode):
        raise StreamFileError(rel, "not a regular file")
    return 0 if restart or st.st_size > size else st.st_size


def _open_upload(base, rel, offset):
    """(fd, running sha256) of an upload target, flock'ed, cut to and positioned after its first
    `offset` bytes (hashed), one file at a time (no descriptor limit on a stream's length)."""
    try:
        fd = os.open(os.path.join(base, rel), os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError as exc:
        raise StreamFileError(rel, (exc.strerror or str(exc)).lower()) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StreamFileError(rel, "not a regular file")
        _lock_temp(fd, rel)
        h = hashlib.sha256()
        left = offset
        while left > 0:
            block = os.read(fd, min(CHUNK, left))
            if not block:
                raise StreamFileError(rel, "shrank while the upload started (retry it)")
            h.update(block)
            left -= len(block)
        os.ftruncate(fd, offset)
        os.lseek(fd, offset, os.SEEK_SET)
        return fd, h
    except BaseException:
        os.close(fd)
        raise


def receive_files(base, files, restart, stdin, out):
    """The `recv` op: write each [rel, size, mtime_ns|null] from stdin (resuming kept prefixes),
    hashing as the bytes pass; verified hashes enter the directory's hash cache under the file's
    final lstat key, so apply's `verify` reads nothing again. Emits the offsets line first, the
    result line last. Returns the exit code (3: the stream ended early; partial temps stay)."""
    base = expand_base(base)
    os.makedirs(base, exist_ok=True)
    plan = []
    for entry in files:
        rel, size, mtime_ns = entry
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise AgentError("upload size of %s must be a non-negative integer" % rel)
        plan.append((check_rel(rel, "upload path"), size, mtime_ns))
    checked = set()
    offsets = [_kept_bytes(base, rel, size, restart, checked) for rel, size, _mtime in plan]
    out.write(json.dumps({"ok": True, "python": sys.executable, "offsets": offsets}).encode() + b"\n")
    out.flush()
    shas = []
    by_dir = {}
    for index, (rel, size, mtime_ns) in enumerate(plan):
        fd, h = _open_upload(base, rel, offsets[index])
        try:
            left = size - offsets[index]
            while left > 0:
                block = stdin.read(min(CHUNK, left))
                if not block:
                    return 3
                h.update(block)
                view = memoryview(block)
                while view:
                    view = view[os.write(fd, view) :]
                left -= len(block)
            if mtime_ns is not None:
                os.utime(fd, ns=(os.fstat(fd).st_atime_ns, int(mtime_ns)))
            st = os.fstat(fd)
        finally:
            os.close(fd)
        sha = h.hexdigest()
        path = os.path.join(base, rel)
        key = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, sha]
        by_dir.setdefault(os.path.dirname(path), {})[os.path.basename(path)] = key
        shas.append(sha)
    for directory, entries in by_dir.items():
        remember_hashes(directory, entries)
    out.write(json.dumps({"ok": True, "agent_version": AGENT_VERSION, "result": {"files": shas}}).encode())
    out.write(b"\n")
    out.flush()
    return 0


def send_files(base, files, out):
    """The `send` op: a first answer line, then for each [rel, offset] a header line {"size",
    "from"} (or {"error"}) and the bytes from `from` to the end; then the result line. Returns the exit code (3: a file
    shrank while being sent; the stream is cut so the receiver cannot take short bytes)."""
    base = expand_base(base)
    plan = [(check_rel(rel, "download path"), offset) for rel, offset in files]
    out.write(json.dumps({"ok": True, "python": sys.executable}).encode() + b"\n")
    checked = set()
    for rel, offset in plan:
        try:
            path = _inside_dir(base, rel, "download path", checked)
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        except (OSError, AgentError) as exc:
            missing = isinstance(exc, OSError) and exc.errno in (errno.ENOENT, errno.ENOTDIR)
            out.write(json.dumps({"error": "missing" if missing else str(exc)}).encode() + b"\n")
            continue
        with os.fdopen(fd, "rb", buffering=0) as fh:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                out.write(json.dumps({"error": "not a regular file"}).encode() + b"\n")
                continue
            start = offset if 0 <= offset <= st.st_size else 0
            out.write(json.dumps({"size": st.st_size, "from": start}).encode() + b"\n")
            fh.seek(start)
            left = st.st_size - start
            while left > 0:
                block = fh.read(min(CHUNK, left))
                if not block:
                    out.flush()
                    return 3
                out.write(block)
                left -= len(block)
    out.write(
        json.dumps({"ok": True, "agent_version": AGENT_VERSION, "result": {"files": len(plan)}}).encode()
    )
    out.write(b"\n")
    out.flush()
    return 0


def run_stream(req, stdin, out):
    """`recv`/`send`: the request's files move through this exec's stdin/stdout."""
    _grow_pipe(0)
    _grow_pipe(1)
    if req.get("op") == "recv":
        return receive_files(req["base"], req.get("files", []), bool(req.get("restart")), stdin, out)
    return send_files(req["base"], req.get("files", []), out)


# ---------------------------------------------------------------------------------------------
# The dataset lock (section 8.2 of the contract): .usr.lock exclusive, optional .events.lock,
# a lease marker, released on release/EOF or when the holder dies (flock dies with the fd).

DATASET_LOCK = ".usr.lock"
EVENTS_LOCK = ".events.lock"
LOCK_TIMEOUT_EXIT = 73
LOCK_ACQUIRED = "USR_REMOTE_LOCK_ACQUIRED:"  # + token: the lease handshake's markers (ssh_lease.py)
LOCK_TIMEOUT = "USR_REMOTE_LOCK_TIMEOUT:"
EVENT_LOCK_TIMEOUT = "USR_REMOTE_EVENT_LOCK_TIMEOUT:"
LOCK_RELEASED = "USR_REMOTE_LOCK_RELEASED:"
POLL_S = 0.05


class LockTimeout(Exception):
    """A lock was not acquired within its timeout; `which` is "dataset" or "events"."""

    def __init__(self, which, timeout):
        Exception.__init__(self, "%s lock timeout after %s seconds" % (which, timeout))
        self.which = which
        self.timeout = timeout


def _open_lock_file(path):
    flags = os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, os.O_RDWR | flags, 0o666)  # umask decides (dataset file rule)
    except PermissionError:
        fd = os.open(path, os.O_RDONLY | flags)  # flock works on a read-only fd (shared datasets)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise AgentError("lock path is not a regular file: %s" % path)
    return fd


def _flock_until(fd, mode, deadline):
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)


class DatasetLock(object):
    """Hold `<dataset_dir>/.usr.lock` exclusively (plus `.events.lock` in "shared"/"exclusive"
    mode) and a lease marker `.usr.lease.dataset.<token>`. Creates dataset_dir; with `base` (a
    remote's base_dir) it is created by makedirs_inside and must resolve inside base, so no lock
    file is ever written outside base_dir.

    acquire() raises LockTimeout after `timeout` seconds (one deadline for both locks).
    release() is idempotent and removes the marker only if it is still ours.
    """

    def __init__(self, dataset_dir, timeout=300.0, events="none", token=None, base=None):
        if events not in ("none", "shared", "exclusive"):
            raise AgentError("events mode must be none, shared or exclusive, got %r" % (events,))
        self.dataset_dir = dataset_dir
        self.base = base
        self.timeout = float(timeout)
        self.events = events
        import secrets

        self.token = token or secrets.token_hex(16)
        self._fds = []
        self._marker = None
        self._marker_id = None

    def acquire(self):
        if self.base is not None:
            makedirs_inside(self.base, self.dataset_dir)
        else:
            os.makedirs(self.dataset_dir, exist_ok=True)
        deadline = time.monotonic() + self.timeout
        try:
            fd = _open_lock_file(os.path.join(self.dataset_dir, DATASET_LOCK))
            self._fds.append(fd)
            if not _flock_until(fd, fcntl.LOCK_EX, deadline):
                raise LockTimeout("dataset", self.timeout)
            if self.events != "none":
                efd = _open_lock_file(os.path.join(self.dataset_dir, EVENTS_LOCK))
                self._fds.append(efd)
                mode = fcntl.LOCK_SH if self.events == "shared" else fcntl.LOCK_EX
                if not _flock_until(efd, mode, deadline):
                    raise LockTimeout("events", self.timeout)
            self._write_marker()
        except BaseException:
            self.release()
            raise
        return self

    def _write_marker(self):
        path = os.path.join(self.dataset_dir, LEASE_PREFIX + "dataset." + self.token)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(path, flags, 0o600)
        try:
            os.write(fd, ("%s %d\n" % (self.token, os.getpid())).encode("ascii"))
            st = os.fstat(fd)
        finally:
            os.close(fd)
        self._marker = path
        self._marker_id = (st.st_dev, st.st_ino)

    def release(self):
        if self._marker is not None:
            try:
                st = os.lstat(self._marker)
                if (st.st_dev, st.st_ino) == self._marker_id:
                    os.unlink(self._marker)
            except OSError:
                pass
            self._marker = None
        while self._fds:
            fd = self._fds.pop()
            with contextlib.suppress(OSError):
                os.close(fd)  # closing drops the flock

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False


def hold_lock(dataset_dir, timeout=300.0, events="none", token=None, base=None):
    """Context manager for in-process use (local transport): `with hold_lock(d, 5) as lock:`."""
    return DatasetLock(dataset_dir, timeout, events, token, base)


def _emit(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def run_lease(req, stdin):
    """The `lease` op: lock, print the ACQUIRED marker, block until release/EOF. Returns exit code.

    With `inventory` ({"parquet_stats": bool}) the line after the marker is the dataset's
    inventory taken under the lock ({"ok": true, "result": ...} as any op answers, or ok false),
    so a sync re-observes the locked remote without another round trip."""
    base = expand_base(req["base"])
    rel = check_rel(req["rel"], "dataset dir")
    token = str(req["token"])
    path = resolve_under(base, rel, "dataset dir")
    lock = DatasetLock(path, float(req.get("timeout", 300)), req.get("events", "none"), token, base)
    try:
        lock.acquire()
    except LockTimeout as exc:
        label = EVENT_LOCK_TIMEOUT if exc.which == "events" else LOCK_TIMEOUT
        _emit(label + token)
        return LOCK_TIMEOUT_EXIT
    try:
        _emit(LOCK_ACQUIRED + token)
        if isinstance(req.get("inventory"), dict):
            try:
                reply = {
                    "ok": True,
                    "result": inventory(path, True, bool(req["inventory"].get("parquet_stats"))),
                }
            except Exception as exc:  # the caller raises a TransferError and releases
                reply = {"ok": False, "error": "%s: %s" % (exc.__class__.__name__, exc)}
            _emit(json.dumps(reply, separators=(",", ":")))
        while True:
            line = stdin.readline()
            if not line or line.strip() == b"release":
                break
    finally:
        lock.release()
    _emit(LOCK_RELEASED + token)
    return 0


def _inventory_op(req):
    if "path" in req:
        path = req["path"]
    else:
        base = expand_base(req["base"])
        path = resolve_under(base, req["rel"], "dataset dir")
    return inventory(path, req.get("hashes", True), req.get("parquet_stats", False), req.get("cache_path"))


OPS = {
    "inventory": _inventory_op,
    "apply": lambda req: apply_changes(
        req["base"],
        req.get("renames", []),
        req.get("removals", []),
        req.get("verify"),
        req.get("inventory"),
        req.get("parquet_stats", False),
        req.get("cache_path"),
        req.get("mtimes"),
        req.get("payload"),
        req.get("snapshot"),
    ),
    "hash": lambda req: hash_paths(req["base"], req.get("paths", [])),
    "stat": lambda req: stat_path(
        req["base"],
        req["rel"],
        req.get("hashes", True),
        req.get("parquet_stats", False),
        req.get("cache_path"),
    ),
    "mkdir": lambda req: make_dirs(req["base"], req.get("paths", [])),
    "probe": lambda req: probe(req.get("base")),
}


def answer(req, raise_permission=False):
    """The answer object of one request (every op but `lease`): what main() prints, and what the
    client gets when it runs the agent in-process (usrbatch/agent/client.py maps it to errors).
    In-process (`raise_permission`), an unreadable local file raises its PermissionError, which
    the CLI prints as `Permission denied: <path>` (over ssh it is the remote's refusal text)."""
    op = OPS.get(req.get("op"))
    if op is None:
        return {"ok": False, "error": "unknown op %r" % (req.get("op"),)}
    try:
        return {"ok": True, "agent_version": AGENT_VERSION, "python": sys.executable, "result": op(req)}
    except VerifyMismatch as exc:  # the caller raises a VerificationError
        return {"ok": False, "kind": "verification", "path": exc.rel, "error": str(exc)}
    except PayloadInvalid as exc:  # the caller raises a VerificationError with the hint
        return {"ok": False, "kind": "payload", "path": exc.rel, "error": str(exc), "hint": exc.hint}
    except PermissionError as exc:
        if raise_permission:
            raise
        return {"ok": False, "error": "%s: %s" % (exc.__class__.__name__, exc)}
    except Exception as exc:  # reported to the caller, which raises a TransferError
        return {"ok": False, "error": "%s: %s" % (exc.__class__.__name__, exc)}


def main():
    stdin = sys.stdin.buffer
    raw = sys.argv[1] if len(sys.argv) > 1 else stdin.readline().decode("utf-8")
    try:
        req = json.loads(raw)
        if not isinstance(req, dict):
            raise ValueError("request must be a JSON object")
    except ValueError as exc:
        _emit(json.dumps({"ok": False, "error": "bad request: %s" % exc}))
        return 2
    if req.get("op") in ("recv", "send"):
        out = sys.stdout.buffer
        try:
            return run_stream(req, stdin, out)
        except Exception as exc:
            failed = {"ok": False, "error": "%s: %s" % (exc.__class__.__name__, exc)}
            if isinstance(exc, StreamFileError):
                failed = {"ok": False, "path": exc.rel, "error": str(exc)}
            out.write(b"\n" + json.dumps(failed).encode() + b"\n")
            out.flush()
            return 2
    if req.get("op") == "lease":
        try:
            return run_lease(req, stdin)
        except Exception as exc:
            _emit(json.dumps({"ok": False, "error": "%s: %s" % (exc.__class__.__name__, exc)}))
            return 2
    _emit(json.dumps(answer(req), separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
