"""Wrap PyInstaller's `dn` folder into one executable file that unpacks once, not on every start.

    python binary/onefile.py FOLDER OUT

The file is a short POSIX `sh` script followed by a gzip'd tar of FOLDER. On the first run it
unpacks into `${XDG_CACHE_HOME:-~/.cache}/deepnode/dn-<digest>` (`DN_BINARY_CACHE` moves it),
into a temporary folder renamed into place, so two first runs at once cannot see half a folder;
every later run finds that folder and `exec`s the program in it: starting costs what the folder
costs, where PyInstaller's own one-file mode unpacks the whole ~100 MB on every start. The digest
is the payload's SHA-256, so a new build never runs an old cache; old caches are left for the
user to remove (`dn-*` folders there). It needs only `sh`, `tail`, `tar`, `gzip` and `mkdir`.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tarfile
from pathlib import Path

STUB = """#!/bin/sh
# DeepNode's `dn` as one file: a shell stub, then a gzip'd tar of the program's folder. The
# first run unpacks it into a cache folder (DN_BINARY_CACHE, else $XDG_CACHE_HOME/deepnode or
# ~/.cache/deepnode); later runs start the program there directly.
set -eu
digest=@DIGEST@
base="${DN_BINARY_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/deepnode}"
dir="$base/dn-$digest"
if [ ! -x "$dir/dn/dn" ]; then
  mkdir -p "$base"
  tmp=$(mktemp -d "$base/.unpack-XXXXXX")
  trap 'rm -rf "$tmp"' EXIT INT TERM
  if ! tail -n +@LINES@ "$0" | tar -xzf - -C "$tmp"; then
    echo "dn: cannot unpack into $base (disk full or not writable?)" >&2
    exit 70
  fi
  # Renamed into place; if another first run won, mv put ours inside its folder: drop that.
  mv "$tmp" "$dir" 2>/dev/null || true
  rm -rf "$tmp" "$dir/${tmp##*/}"
  trap - EXIT INT TERM
fi
exec "$dir/dn/dn" "$@"
"""


def payload(folder: Path) -> bytes:
    """FOLDER as a gzip'd tar whose one top entry is `dn/` (stable order, no owners, mtime 0)."""

    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        return info

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=6) as tar:
        paths = sorted(folder.rglob("*"))
        tar.add(folder, arcname="dn", recursive=False, filter=clean)
        for path in paths:
            tar.add(path, arcname=f"dn/{path.relative_to(folder)}", recursive=False, filter=clean)
    return buffer.getvalue()


def build(folder: Path, out: Path) -> int:
    """Write the one file for FOLDER (which must hold the program `dn`) to OUT; its size."""
    if not (folder / "dn").is_file():
        raise SystemExit(f"{folder} has no program 'dn' (run PyInstaller first)")
    data = payload(folder)
    digest = hashlib.sha256(data).hexdigest()[:16]
    head = STUB.replace("@DIGEST@", digest)
    head = head.replace("@LINES@", str(head.count("\n") + 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("wb") as fh:
        fh.write(head.encode())
        fh.write(data)
    tmp.chmod(0o755)
    os.replace(tmp, out)
    return out.stat().st_size


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    size = build(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"{sys.argv[2]}: {size / 2**20:.1f} MiB")
