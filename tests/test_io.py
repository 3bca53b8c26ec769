import os
import stat
import threading

import pytest

from steerable.io import atomic_write_text


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_write_gives_a_plain_opens_mode_without_touching_the_umask(tmp_path, monkeypatch, umask):
    """Setting the umask to read it would, for a moment, give every file another thread creates
    mode 0666; the write must leave the process umask alone."""
    old = os.umask(umask)
    try:

        def no_umask(mask):
            raise AssertionError(f"os.umask({mask:o}) called from thread {threading.get_ident()}")

        monkeypatch.setattr(os, "umask", no_umask)
        path = atomic_write_text(tmp_path / "f.txt", "x")
    finally:
        monkeypatch.undo()
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert path.read_text() == "x" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]
