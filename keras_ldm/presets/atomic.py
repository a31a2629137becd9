"""Writing a folder (or a file) atomically: build it next to where it goes, then swap it in.

`save_to_preset` (and so `keras-ldm convert`) and `export` write through `atomic_folder`, and
`save_lora_weights` through `atomic_file`: if anything fails half-way (an exception while writing the
weights, a full disk), what was at the destination before is left untouched and the half-written copy is
removed.
"""

import contextlib
import os
import shutil
import stat
import uuid


@contextlib.contextmanager
def atomic_folder(path, replaces=None):
    """Yields a new empty folder next to `path`; when the block ends without error it becomes `path`.

    The folder is made in `path`'s parent directory (`.{name}.tmp-XXXXXXXX`), so the swap is a rename
    within one file system: an existing `path` is moved aside (`.{name}.old-XXXXXXXX/{name}`), the new
    folder renamed to `path` (the old one is moved back if that fails), then the old one is deleted.
    If the block raises, the new folder is removed and `path` is left as it was.

    Args:
        path: the folder to write (missing parents are created); a symbolic link to a folder is
            followed, so the link keeps pointing at the new folder.
        replaces: names of the entries of an existing `path` that the new folder replaces; its other
            entries (e.g. a `README.md` beside a preset's files) are carried over (hard-linked, or
            copied). None: the new folder replaces everything.

    Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "out")
    >>> with atomic_folder(path) as folder:
    ...     with open(os.path.join(folder, "weights.txt"), "w") as f:
    ...         _ = f.write("old")
    >>> with atomic_folder(path) as folder:
    ...     with open(os.path.join(folder, "weights.txt"), "w") as f:
    ...         _ = f.write("half-writ")
    ...     raise OSError("No space left on device")
    Traceback (most recent call last):
    OSError: No space left on device
    >>> open(os.path.join(path, "weights.txt")).read(), os.listdir(os.path.dirname(path))
    ('old', ['out'])
    """
    path = os.path.realpath(os.fspath(path))
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"path={path!r} is a file; expected a folder (a new, empty or replaceable one).")
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    folder = _new_folder(parent, f".{name}.tmp-")
    try:
        yield folder
        if os.path.isdir(path):
            _carry_over(path, folder, replaces)
            os.chmod(folder, stat.S_IMODE(os.stat(path).st_mode))  # not the 0o700 of a temporary folder
        _swap(folder, path)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_file(path):
    """Yields a new file name next to `path`; when the block ends without error that file becomes `path`.

    The block writes the file (its name is `.{name}.tmp-XXXXXXXX` in `path`'s folder, so that
    `os.replace` swaps it in within one file system). If the block raises, the file is removed and
    `path` is left as it was.

    Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "lora.safetensors")
    >>> with atomic_file(path) as temporary:
    ...     with open(temporary, "w") as f:
    ...         _ = f.write("good")
    >>> with atomic_file(path) as temporary:
    ...     with open(temporary, "w") as f:
    ...         _ = f.write("half-writ")
    ...     raise OSError("No space left on device")
    Traceback (most recent call last):
    OSError: No space left on device
    >>> open(path).read(), os.listdir(os.path.dirname(path))
    ('good', ['lora.safetensors'])
    """
    path = os.path.realpath(os.fspath(path))
    if os.path.isdir(path):
        raise ValueError(f"path={path!r} is a folder; expected a file name.")
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    temporary = os.path.join(parent, f".{name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        if os.path.lexists(temporary):
            os.remove(temporary)
        raise


def _new_folder(parent, prefix):
    """A new empty folder `{parent}/{prefix}XXXXXXXX`, created with the default permissions (umask)."""
    while True:
        folder = os.path.join(parent, prefix + uuid.uuid4().hex[:8])
        try:
            os.mkdir(folder)
            return folder
        except FileExistsError:
            continue


def _carry_over(path, folder, replaces):
    """Hard-links (or copies) into `folder` the entries of `path` that are not in `replaces`."""
    if replaces is None:
        return
    for entry in os.listdir(path):
        source, target = os.path.join(path, entry), os.path.join(folder, entry)
        if entry in replaces or os.path.lexists(target):
            continue
        if os.path.isdir(source) and not os.path.islink(source):
            shutil.copytree(source, target, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(source, target)


def _link_or_copy(source, target):
    if os.path.islink(source):
        os.symlink(os.readlink(source), target)
        return
    try:
        os.link(source, target)
    except OSError:  # another file system, or one without hard links
        shutil.copy2(source, target)


def _swap(folder, path):
    """Renames `folder` to `path`; an existing `path` is moved aside first and deleted after."""
    if not os.path.lexists(path):
        os.rename(folder, path)
        return
    parent, name = os.path.split(path)
    aside = _new_folder(parent, f".{name}.old-")
    old = os.path.join(aside, name)
    try:
        os.rename(path, old)
    except BaseException:
        os.rmdir(aside)
        raise
    try:
        os.rename(folder, path)
    except BaseException:
        os.rename(old, path)  # if this fails too, the old folder stays in `aside`
        os.rmdir(aside)
        raise
    shutil.rmtree(aside, ignore_errors=True)
