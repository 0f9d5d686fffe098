"""Dataset-level atomic writes: a dataset folder appears complete or not at all.

A dataset is thousands of files, so :mod:`edge_stad.atomic` (one file at a time) is not
enough: the folder is built under a hidden temporary sibling and renamed into place at
the end. An interrupted run leaves at most a ``.<name>.tmp-*`` sibling, never a
half-written dataset under the requested name; a killed one (no ``finally`` runs) leaves
it too, and the next build of the same target removes it. Each build holds an advisory
lock (``flock``) on its staging folder, released by the kernel when the process dies, so
the next build tells a dead build's folder from a running one's (where ``fcntl`` exists).
"""
import contextlib
import glob
import os
import shutil
import tempfile
import uuid

from edge_stad.errors import OutputExistsError

try:
    import fcntl
except ImportError:   # Windows: no flock; stale staging folders are then left for the user
    fcntl = None


def check_output_dir(out, force=False):
    """Refuse an existing non-empty ``out`` unless ``force``; returns the absolute path."""
    out = os.path.abspath(os.fspath(out))
    if os.path.lexists(out) and not force and (not os.path.isdir(out) or os.listdir(out)):
        raise OutputExistsError(out)
    return out


@contextlib.contextmanager
def staged_dir(out, force=False):
    """Yield a temporary folder next to ``out``; on success it replaces ``out`` in one rename.

    On an exception the temporary folder is deleted and ``out`` is left as it was.
    """
    out = check_output_dir(out, force)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    remove_stale(out)
    # os.mkdir honours the umask (tempfile.mkdtemp would make the dataset private to its creator)
    tmp = os.path.join(parent, f".{os.path.basename(out)}.tmp-{uuid.uuid4().hex[:12]}")
    os.mkdir(tmp)
    locks = [_lock(tmp)]
    try:
        yield tmp
        old = None
        if os.path.lexists(out):
            if os.path.isdir(out) and not os.path.islink(out):
                old = tempfile.mkdtemp(prefix="." + os.path.basename(out) + ".old-", dir=parent)
                locks.append(_lock(old))
                os.rename(out, os.path.join(old, "data"))
            else:
                os.unlink(out)
        try:
            os.rename(tmp, out)
        except BaseException:
            if old is not None:  # put the previous dataset back
                os.rename(os.path.join(old, "data"), out)
                os.rmdir(old)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        for fd in locks:
            if fd is not None:
                os.close(fd)


def _lock(folder):
    """A descriptor holding an exclusive ``flock`` on ``folder`` (None without fcntl, or where the
    filesystem refuses locks), or None when another live process holds it."""
    if fcntl is None:
        return None
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def remove_stale(out):
    """Remove the staging (``.<name>.tmp-*``) and set-aside (``.<name>.old-*``) siblings of ``out`` that no
    live process holds: what a killed build of ``out`` left behind. Returns the folders removed."""
    removed = []
    if fcntl is None:
        return removed
    pattern = os.path.join(glob.escape(os.path.dirname(out)), "." + glob.escape(os.path.basename(out)))
    for folder in sorted(glob.glob(pattern + ".tmp-*") + glob.glob(pattern + ".old-*")):
        if not os.path.isdir(folder) or os.path.islink(folder):
            continue
        try:
            fd = os.open(folder, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)   # free: its build is gone
        except OSError:
            continue                                         # a build that is still running
        else:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        finally:
            os.close(fd)
    return removed
