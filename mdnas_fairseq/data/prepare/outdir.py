"""The output folder --out DIR: checked before any work, built in a temporary folder next to it
and renamed into place at the end, so a failed run leaves nothing behind."""

import contextlib
import os
import shutil
import tempfile

from .errors import DataError


def check_out(out, force, tsv):
    """DIR may be created (or, with ``force``, replaced) without deleting the input ``tsv``."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise DataError(f"--out {out}: exists and is not a directory")
    if os.path.isdir(out) and os.listdir(out) and not force:
        raise DataError(
            f"--out {out}: directory exists and is not empty; use --force to replace it"
        )
    if force and os.path.isdir(out):
        rel = os.path.relpath(os.path.realpath(tsv), os.path.realpath(out))
        if not rel.startswith(os.pardir):
            raise DataError(f"--force would delete the input {tsv}, which is inside --out {out}")


@contextlib.contextmanager
def staged_out(out, force, tsv):
    """Yield an empty temporary folder next to the absolute path ``out``. When the block ends
    normally the folder (mode as for a new folder) replaces ``out`` in one rename, after
    :func:`check_out` again; when it raises, the folder is removed and ``out`` is left as it was."""
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp-", dir=parent)
    try:
        yield work
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(work, 0o777 & ~umask)
        check_out(out, force, tsv)
        old = None
        if os.path.exists(out):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=parent)
            os.rename(out, os.path.join(old, "d"))
        os.rename(work, out)
        if old:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
