"""Where a result came from: the code's git commit and paths that do not name the machine."""

import os
import subprocess


def display_path(path: str) -> str:
    """``path`` relative to the working directory when it is near it (at most two levels up), else
    with the home directory written as ``~``: results files and logs then hold no machine paths."""
    if not path:
        return path
    absolute = os.path.abspath(os.path.expanduser(path))
    relative = os.path.relpath(absolute)
    if not relative.startswith(os.path.join("..", "..", "..")):
        return relative
    home = os.path.expanduser("~")
    return "~" + absolute[len(home) :] if absolute.startswith(home + os.sep) else absolute


def git_commit(path: str = ".") -> str:
    """The commit of the git checkout holding ``path`` (``+dirty`` when it has uncommitted changes),
    or ``unknown`` outside a checkout."""
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=folder,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=folder,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")
