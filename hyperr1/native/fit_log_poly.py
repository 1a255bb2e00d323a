"""Fit the polynomial of ``log_ge1`` in ``vector_math.h`` and print it as C.

log m for m in [√½, √2) is written as f − f²/2 + f³ P(f) with f = m − 1; P (degree 7) is the
least-squares fit of (log(1 + f) − f + f²/2) / f³ at 4,000 Chebyshev nodes of [√½ − 1, √2 − 1],
in float64. Its largest absolute error on the interval is below 1e-8, under float32 rounding.

    python -m hyperr1.native.fit_log_poly
"""

from __future__ import annotations

import numpy as np

DEGREE, NODES = 7, 4000


def coefficients() -> np.ndarray:
    """P's coefficients, lowest degree first."""
    lo, hi = np.sqrt(0.5) - 1, np.sqrt(2.0) - 1
    f = (lo + hi) / 2 + (hi - lo) / 2 * np.cos(np.pi * (np.arange(NODES) + 0.5) / NODES)
    return np.polynomial.polynomial.polyfit(f, (np.log1p(f) - f + f * f / 2) / f**3, DEGREE)


def max_error(coef: np.ndarray) -> float:
    """Largest absolute error of f − f²/2 + f³ P(f) against log(1 + f) on the interval (float64)."""
    f = np.linspace(np.sqrt(0.5) - 1, np.sqrt(2.0) - 1, 200_001)
    return float(np.abs(f - f * f / 2 + f**3 * np.polynomial.polynomial.polyval(f, coef) - np.log1p(f)).max())


def main() -> None:
    coef = coefficients()
    print(f"    float p = {coef[-1]:.9e}f;")
    for c in coef[-2::-1]:
        print(f"    p = p * f {'+' if c >= 0 else '-'} {abs(c):.9e}f;")
    print(f"    /* max abs error {max_error(coef):.2e} */")


if __name__ == "__main__":
    main()
