"""Stage two of the agent's bootstrap: run remote.py from a verified compiled copy when the remote
has one, else from the source that came with the request (and keep a compiled copy for next time).

Why: compiling the 62 KB agent costs 40-50 ms of CPU on every exec (more than python3's own start-up)
and shipping it whole costs 62 KB per exec; a cached code object costs neither.

Standard library only, Python 3.6+, sent on every exec (it is small). The bootstrap one-liner
(client.BOOTSTRAP) has already read this program from stdin; what follows on stdin is
  `<sha256 of remote.py> <n>\\n`, n bytes of zlib-compressed remote.py (n = 0: not sent), then the
  request line that remote.py reads itself.

The cache (`$XDG_CACHE_HOME/usrbatch/agent-code/`, else `~/.cache/...`) is trusted only when
  - the directory is a real directory (not a symlink) owned by this user with no group or other
    access (it is created 0700; a directory that fails the check is never used nor repaired),
  - the file is a regular file owned by this user, named for the sha256 of the source it was
    compiled from and the interpreter's bytecode magic, and
  - its body's sha256 equals the one in its header (a torn or altered file is ignored).
A compiled copy is only ever written from source whose sha256 matched the one the client asked
for, through a unique temp file, fsync and rename (readers never see a partial file). When the
cache cannot be used and no source came, the loader prints NEED_SOURCE and runs nothing: the
client sends again with the source (client.needs_source).
"""

import hashlib
import marshal
import os
import stat
import sys
import time
import zlib

NEED_SOURCE = "USRBATCH-AGENT-NEED-SOURCE"
HEADER = b"usrbatch-agent-code 1 "
MAX_CODE = 16 * 1024 * 1024
PRUNE_AGE_S = 30 * 86400  # compiled copies of older agent versions are removed after this long


def cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "usrbatch", "agent-code")


def private_dir(path):
    """`path` when it is (or could be made) a directory only this user can enter, else None."""
    try:
        os.makedirs(path, 0o700)
    except OSError:
        pass
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        return None
    return path


def code_name(sha):
    ext = sys.modules.get("_frozen_importlib_external")
    magic = getattr(ext, "MAGIC_NUMBER", None)
    if magic is None:
        from importlib.util import MAGIC_NUMBER as magic
    tag = sys.implementation.cache_tag or "python"
    return "%s-%s-%s.code" % (sha, tag, magic.hex())


def load(path):
    """The code object stored at `path`, or None when it is absent or fails any check."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_size > MAX_CODE:
                return None
            head = fh.readline()
            blob = fh.read()
        if (
            not head.startswith(HEADER)
            or head[len(HEADER) :].strip() != hashlib.sha256(blob).hexdigest().encode()
        ):
            return None
        return marshal.loads(blob)
    except Exception:
        return None


def store(directory, name, code):
    """Write the compiled copy atomically (unique temp, fsync, rename); failures are ignored."""
    blob = marshal.dumps(code)
    tmp = os.path.join(directory, ".tmp-%s-%d" % (os.urandom(6).hex(), os.getpid()))
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(HEADER + hashlib.sha256(blob).hexdigest().encode() + b"\n" + blob)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, os.path.join(directory, name))
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return
    prune(directory, name)


def prune(directory, keep):
    """Remove compiled copies (and temps) nobody has written for PRUNE_AGE_S: old agent versions."""
    now = time.time()
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for other in names:
        if other == keep or not (other.endswith(".code") or other.startswith(".tmp-")):
            continue
        path = os.path.join(directory, other)
        try:
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode) and now - st.st_mtime > PRUNE_AGE_S:
                os.unlink(path)
        except OSError:
            pass


def main():
    stdin = sys.stdin.buffer
    head = stdin.readline().split()
    sha, size = head[0].decode("ascii"), int(head[1])
    if len(sha) != 64 or sha.strip("0123456789abcdef"):
        raise SystemExit("usrbatch agent loader: bad source hash %r" % sha[:80])
    packed = stdin.read(size) if size else b""
    directory = private_dir(cache_dir())
    name = code_name(sha)
    code = load(os.path.join(directory, name)) if directory else None
    if code is None:
        if not size:
            sys.stdout.write(NEED_SOURCE + "\n")
            sys.stdout.flush()
            return
        source = zlib.decompress(packed)
        if hashlib.sha256(source).hexdigest() != sha:
            sys.stdout.write('{"ok": false, "error": "the agent source was damaged in transit"}\n')
            sys.stdout.flush()
            sys.exit(2)
        code = compile(source, "usrbatch_agent", "exec")
        if directory:
            store(directory, name, code)
    exec(code, {"__name__": "__main__"})


if __name__ == "__main__":
    main()
