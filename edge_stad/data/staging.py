"""Dataset-level atomic writes: a dataset folder appears complete or not at all.

A dataset is thousands of files, so :mod:`edge_stad.atomic` (one file at a time) is not
enough: the folder is built under a hidden temporary sibling and renamed into place at
the end. An interrupted run leaves at most a ``.<name>.tmp-*`` sibling, never a
half-written dataset under the requested name.
"""
import contextlib
import os
import shutil
import tempfile
import uuid

from edge_stad.errors import OutputExistsError


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
    # os.mkdir honours the umask (tempfile.mkdtemp would make the dataset private to its creator)
    tmp = os.path.join(parent, f".{os.path.basename(out)}.tmp-{uuid.uuid4().hex[:12]}")
    os.mkdir(tmp)
    try:
        yield tmp
        old = None
        if os.path.lexists(out):
            if os.path.isdir(out) and not os.path.islink(out):
                old = tempfile.mkdtemp(prefix="." + os.path.basename(out) + ".old-", dir=parent)
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
