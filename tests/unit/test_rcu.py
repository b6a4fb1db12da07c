"""topology.effects.rcu on stand-in files: the kernel knob is set only for the block, only when it
was off, put back on every exit, and a teardown killed inside the block leaves what clean restores."""

from __future__ import annotations

from pathlib import Path

import pytest

from topology.effects import rcu


@pytest.fixture
def knob(tmp_path: Path) -> Path:
    path = tmp_path / "rcu_expedited"
    path.write_text("0\n")
    return path


def test_on_inside_the_block_and_back_after(knob: Path, tmp_path: Path) -> None:
    saved = tmp_path / "state" / rcu.SAVED_NAME
    with rcu.expedited(saved, knob) as turned_on:
        assert turned_on and knob.read_text() == "1" and saved.read_text() == "0\n"
    assert knob.read_text() == "0" and not saved.exists()


def test_put_back_when_the_teardown_raises(knob: Path, tmp_path: Path) -> None:
    saved = tmp_path / rcu.SAVED_NAME
    with pytest.raises(RuntimeError), rcu.expedited(saved, knob):
        raise RuntimeError("teardown failed")
    assert knob.read_text() == "0" and not saved.exists()


def test_left_alone_when_already_on(knob: Path, tmp_path: Path) -> None:
    knob.write_text("1\n")  # an administrator's choice, or another run's teardown
    saved = tmp_path / rcu.SAVED_NAME
    with rcu.expedited(saved, knob) as turned_on:
        assert not turned_on and not saved.exists()
    assert knob.read_text() == "1\n"


def test_no_knob_no_change(tmp_path: Path) -> None:
    saved = tmp_path / rcu.SAVED_NAME
    with rcu.expedited(saved, tmp_path / "absent") as turned_on:
        assert not turned_on
    assert not saved.exists() and not (tmp_path / "absent").exists()


def test_nothing_changes_when_the_value_cannot_be_saved_or_the_knob_read(tmp_path: Path) -> None:
    knob = tmp_path / "knob"
    knob.write_text("0")
    saved = tmp_path / "nodir" / rcu.SAVED_NAME
    saved.parent.write_text("a file where the state directory should be")  # the save fails...
    with rcu.expedited(saved, knob) as turned_on:
        assert not turned_on
    assert knob.read_text() == "0"  # ...so the knob is not set: a kill -9 could not be undone
    unreadable = tmp_path / "unreadable"
    unreadable.mkdir()  # reading fails, as on a kernel without the knob
    with rcu.expedited(tmp_path / rcu.SAVED_NAME, unreadable) as turned_on:
        assert not turned_on


def test_clean_restores_what_a_killed_teardown_left(knob: Path, tmp_path: Path) -> None:
    saved = tmp_path / rcu.SAVED_NAME
    assert not rcu.restore_leftover(saved, knob)  # nothing saved: nothing to do
    knob.write_text("1")
    saved.write_text("0\n")  # as expedited() leaves them when the process is killed in the block
    assert rcu.restore_leftover(saved, knob)
    assert knob.read_text() == "0" and not saved.exists()
