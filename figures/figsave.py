"""How every figure script writes its figure: a 150-dpi PNG and a PDF without a creation date (so
that redrawing from the same results gives byte-identical files), then prints the PNG's path."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt


def save(fig, out: Path) -> None:
    """Write ``fig`` to ``out`` with suffixes .png and .pdf (parents created) and close it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=150)
    fig.savefig(out.with_suffix(".pdf"), metadata={"CreationDate": None})
    plt.close(fig)
    print(f"wrote {out.with_suffix('.png')}")
