#!/usr/bin/env python3
"""Render the pictures of the docs: every docs/**/*.dot to an .svg and a .png beside it.

    scripts/render_docs.py            render them all (writes only files whose content changes)
    scripts/render_docs.py --check    render in memory; exit 1 naming every stale .svg or .png

Graphviz's `dot` does the layout (Debian package graphviz, in versions.env DEBIAN_PACKAGES; the
fonts come from fonts-dejavu-core, listed there too). On one Debian release `dot` output is
deterministic, so tests/docs/test_docs.py holds the committed SVG to a fresh render. The PNG is
held to the fresh render's size only: its bytes depend on the cairo and zlib builds.
"""

from __future__ import annotations

import argparse
import shutil
import struct
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FORMATS = ("svg", "png")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class RenderError(RuntimeError):
    """`dot` is missing or refused a source file."""


def sources(docs: Path = DOCS) -> list[Path]:
    """The Graphviz sources under docs/, in a stable order."""
    return sorted(docs.rglob("*.dot"))


def render(source: Path, fmt: str) -> bytes:
    """`dot -T<fmt>` of one source file, as bytes."""
    dot = shutil.which("dot")
    if dot is None:
        raise RenderError(
            "Graphviz's dot is not installed (Debian: apt-get install graphviz; see versions.env)"
        )
    proc = subprocess.run([dot, f"-T{fmt}", source.name], cwd=source.parent, capture_output=True, check=False)
    if proc.returncode != 0:
        raise RenderError(f"dot -T{fmt} {source}: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    if data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        raise ValueError("not a PNG file")
    return struct.unpack(">II", data[16:24])


def stale(source: Path) -> list[str]:
    """Why the committed renders of `source` are not what `dot` makes of it now (empty: current)."""
    problems = []
    svg, png = source.with_suffix(".svg"), source.with_suffix(".png")
    if not svg.exists():
        problems.append(f"{svg.relative_to(ROOT)} is missing")
    elif svg.read_bytes() != render(source, "svg"):
        problems.append(f"{svg.relative_to(ROOT)} differs from a fresh render of {source.name}")
    if not png.exists():
        problems.append(f"{png.relative_to(ROOT)} is missing")
    else:
        try:
            committed = png_size(png.read_bytes())
        except ValueError:
            committed = None
        fresh = png_size(render(source, "png"))
        if committed != fresh:
            problems.append(f"{png.relative_to(ROOT)} is {committed}, a fresh render is {fresh}")
    return problems


def write(source: Path) -> list[Path]:
    """Render `source` to every format; return the files whose content changed."""
    changed = []
    for fmt in FORMATS:
        target = source.with_suffix(f".{fmt}")
        data = render(source, fmt)
        if not target.exists() or target.read_bytes() != data:
            target.write_bytes(data)
            changed.append(target)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 when a render is stale")
    args = parser.parse_args(argv)
    try:
        if args.check:
            problems = [p for source in sources() for p in stale(source)]
            for problem in problems:
                print(f"render_docs: {problem}; run scripts/render_docs.py", file=sys.stderr)
            return 1 if problems else 0
        for source in sources():
            changed = write(source)
            names = ", ".join(str(p.relative_to(ROOT)) for p in changed) or "unchanged"
            print(f"render_docs: {source.relative_to(ROOT)}: {names}")
    except RenderError as error:
        print(f"render_docs: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
