"""Atomic writes: whole files only, and the permissions any newly created file would get."""

from __future__ import annotations

from pathlib import Path

from tunesmith.utils import atomic_write_json, atomic_write_text


def test_atomic_files_get_ordinary_permissions(tmp_path: Path) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic_write_text(tmp_path / "a.txt", "x")
    atomic_write_json(tmp_path / "b.json", {"a": 1})
    expected = plain.stat().st_mode & 0o777
    # A bug made these 0600 (mkstemp's private mode): other users could not read a run's metrics.
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == expected
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == expected


def test_atomic_write_replaces_whole_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    atomic_write_json(target, {"v": 1})
    atomic_write_json(target, {"v": 2})
    assert target.read_text(encoding="utf-8").strip().endswith("}")
    assert '"v": 2' in target.read_text(encoding="utf-8")
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
