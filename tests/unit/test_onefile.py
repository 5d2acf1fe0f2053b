"""binary/onefile.py: the one file unpacks once into its cache, then only starts the program.

A stand-in program folder (a shell script called `dn`) is packed as `make binary` packs
PyInstaller's folder, and the file is run with `sh` as a user would run dist/dn.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("onefile", ROOT / "binary" / "onefile.py")
assert spec is not None and spec.loader is not None
onefile = importlib.util.module_from_spec(spec)
spec.loader.exec_module(onefile)

PROGRAM = """#!/bin/sh
echo "args:$*"
echo "from:$(dirname "$0")"
cat "$(dirname "$0")/_internal/data.txt"
exit 3
"""


def make_folder(root: Path, data: str = "payload one") -> Path:
    folder = root / "dn"
    (folder / "_internal").mkdir(parents=True)
    (folder / "dn").write_text(PROGRAM)
    (folder / "dn").chmod(0o755)
    (folder / "_internal" / "data.txt").write_text(data)
    return folder


def run(binary: Path, cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cache.parent), "DN_BINARY_CACHE": str(cache)}
    return subprocess.run(
        [str(binary), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_first_run_unpacks_and_later_runs_use_the_cache(tmp_path):
    binary = tmp_path / "out" / "dn"
    onefile.build(make_folder(tmp_path / "src"), binary)
    cache = tmp_path / "cache"
    first = run(binary, cache, "model", "fetch", "two words")
    assert first.returncode == 3, first.stderr  # the program's own exit status comes through
    assert first.stdout.splitlines()[0] == "args:model fetch two words"
    assert first.stdout.splitlines()[-1] == "payload one"
    [unpacked] = cache.iterdir()
    assert unpacked.name.startswith("dn-") and (unpacked / "dn" / "dn").is_file()
    assert first.stdout.splitlines()[1] == f"from:{unpacked / 'dn'}"
    (unpacked / "dn" / "_internal" / "data.txt").write_text("from the cache")
    again = run(binary, cache, "--help")
    assert again.returncode == 3 and again.stdout.splitlines()[-1] == "from the cache"
    assert [p.name for p in cache.iterdir()] == [unpacked.name]


def test_a_new_build_never_runs_an_old_cache(tmp_path):
    binary = tmp_path / "out" / "dn"
    cache = tmp_path / "cache"
    onefile.build(make_folder(tmp_path / "one"), binary)
    assert run(binary, cache).stdout.splitlines()[-1] == "payload one"
    onefile.build(make_folder(tmp_path / "two", "payload two"), binary)
    assert run(binary, cache).stdout.splitlines()[-1] == "payload two"
    assert len(list(cache.iterdir())) == 2


def test_first_runs_at_once_all_start_and_leave_one_clean_folder(tmp_path):
    binary = tmp_path / "out" / "dn"
    folder = make_folder(tmp_path / "src")
    (folder / "_internal" / "bulk").write_bytes(os.urandom(16 << 20))  # runs overlap unpacking
    onefile.build(folder, binary)
    cache = tmp_path / "cache"
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda i: run(binary, cache, str(i)), range(6)))
    assert all(r.returncode == 3 and r.stdout.splitlines()[-1] == "payload one" for r in results), [
        r.stderr for r in results
    ]
    [unpacked] = cache.iterdir()  # no .unpack-* left behind, beside it or inside it
    assert [p.name for p in unpacked.iterdir()] == ["dn"]
    assert sorted(p.name for p in (unpacked / "dn").iterdir()) == ["_internal", "dn"]


def test_a_cache_that_cannot_be_written_fails_with_a_message(tmp_path):
    binary = tmp_path / "out" / "dn"
    onefile.build(make_folder(tmp_path / "src"), binary)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = run(binary, blocker / "cache")
    assert result.returncode != 0 and result.returncode != 3
    assert str(blocker) in result.stderr


def test_a_folder_without_the_program_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no program 'dn'"):
        onefile.build(tmp_path / "empty", tmp_path / "out" / "dn")
