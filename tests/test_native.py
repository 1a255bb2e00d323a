"""The native (C) distance kernel against the eager one, its build and its error paths."""

import math
import os
import re
import stat
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperr1 import geometry as G
from hyperr1 import native
from hyperr1.native import dispatch as D
from hyperr1.native import fit_log_poly
from hyperr1.nn import HyperbolicDistanceHead

pytestmark = pytest.mark.skipif(not native.available(), reason="no C compiler: the native kernel cannot be built")


def ball_points(n, d, *, c, seed, radii=(0.0, 0.9)):
    """Random directions, norms uniform in radii/√c, float32."""
    g = torch.Generator().manual_seed(seed)
    direction = torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    lo, hi = radii
    radius = (lo + (hi - lo) * torch.rand(n, 1, generator=g, dtype=torch.float64)) / math.sqrt(c)
    return (direction * radius).float()


def separated_points(n, m, d, *, c, seed):
    """x inside radius 0.45/√c, y between 0.5/√c and 0.9/√c: every pair at least 0.05/√c apart, so
    that 1/√(w + w²) is well conditioned and float32 kernels can be held to a float64 reference."""
    return ball_points(n, d, c=c, seed=seed, radii=(0.0, 0.45)), ball_points(m, d, c=c, seed=seed + 1, radii=(0.5, 0.9))


def logits_and_grads(x, y, *, c, alpha, bias, kernel, upstream):
    """Outputs and gradients of distance_logits for every input (c and α as learnable tensors)."""
    leaves = [x.clone().requires_grad_(), y.clone().requires_grad_(), torch.tensor(c, dtype=x.dtype)]
    leaves += [torch.tensor(alpha, dtype=x.dtype), None if bias is None else bias.clone()]
    for t in leaves[2:]:
        if t is not None:
            t.requires_grad_()
    out = D.distance_logits(leaves[0], leaves[1], c=leaves[2], alpha=leaves[3], bias=leaves[4], kernel=kernel)
    out.backward(upstream.to(x.dtype))
    return [out.detach()] + [None if t is None else t.grad for t in leaves]


def assert_close_scaled(actual, expected, rtol, atol=0.0):
    """|actual − expected| ≤ rtol · max|expected| + atol elementwise (float32 against a float64 reference)."""
    expected = expected.to(actual.dtype)
    scale = expected.abs().max().clamp_min(1e-12)
    err = (actual - expected).abs().max()
    assert err <= rtol * scale + atol, f"max error {float(err):.3g} > {rtol} × {float(scale):.3g} + {atol:.3g}"


@pytest.mark.parametrize("d", [1, 2, 5, 16])
@pytest.mark.parametrize("c", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("bias", [True, False])
def test_native_matches_the_eager_kernel_in_float64(d, c, bias):
    n, m = 37, 53  # neither a multiple of the row block (8) nor of a vector width
    x, y = separated_points(n, m, d, c=c, seed=1)
    b = torch.randn(m, generator=torch.Generator().manual_seed(3)) if bias else None
    upstream = torch.randn(n, m, generator=torch.Generator().manual_seed(4))
    got = logits_and_grads(x, y, c=c, alpha=-1.7, bias=b, kernel="native", upstream=upstream)
    ref = logits_and_grads(
        x.double(),
        y.double(),
        c=c,
        alpha=-1.7,
        bias=None if b is None else b.double(),
        kernel="eager",
        upstream=upstream,
    )
    for name, a, e in zip(["out", "x", "y", "c", "alpha", "bias"], got, ref, strict=True):
        if e is None:
            assert a is None, name
            continue
        assert a.dtype == torch.float32, name
        assert_close_scaled(a, e, rtol=2e-5)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 40),
    m=st.integers(1, 40),
    d=st.sampled_from([1, 2, 3, 8]),
    c=st.floats(0.3, 3.0),
    alpha=st.floats(-8.0, 8.0).filter(lambda a: abs(a) > 1e-3),
    seed=st.integers(0, 2**16),
)
def test_native_matches_eager_for_any_shape(n, m, d, c, alpha, seed):
    x, y = separated_points(n, m, d, c=c, seed=seed)
    b = torch.randn(m, generator=torch.Generator().manual_seed(seed))
    upstream = torch.randn(n, m, generator=torch.Generator().manual_seed(seed + 2))
    got = logits_and_grads(x, y, c=c, alpha=alpha, bias=b, kernel="native", upstream=upstream)
    ref = logits_and_grads(x.double(), y.double(), c=c, alpha=alpha, bias=b.double(), kernel="eager", upstream=upstream)
    for a, e in zip(got, ref, strict=True):
        # the gradients of c and α are sums of n·m float32 terms of either sign: judged in absolute terms.
        # ∂ℓ/∂c scales with α but ∂ℓ/∂α = Σ g·acosh(·) does not, so a small α must not shrink the bound
        atol = 1e-6 * max(1.0, abs(alpha)) * n * m if e.dim() == 0 else 0.0
        assert_close_scaled(a, e, rtol=5e-5, atol=atol)


def test_native_is_finite_at_the_boundary_and_for_coincident_points():
    g = torch.Generator().manual_seed(0)
    ball = G.ball(1.0)
    x = ball.projx(torch.randn(64, 8, generator=g) * 10)  # on geoopt's float32 boundary
    y = torch.cat([x[:16], torch.zeros(1, 8), ball.projx(torch.randn(20, 8, generator=g))])  # x = y for 16 pairs
    got = logits_and_grads(x, y, c=1.0, alpha=-1.0, bias=torch.zeros(37), kernel="native", upstream=torch.ones(64, 37))
    for t in got:
        assert torch.isfinite(t).all()
    # d(x, x) = 0 up to the float32 cancellation in ‖x‖² + ‖y‖² − 2⟨x, y⟩, which the conformal
    # factors (1 − ‖x‖²)⁻¹ ≈ 125 amplify at this boundary: about 0.1, against ~10 between other pairs
    eager = D.distance_logits(x, y, c=1.0, alpha=-1.0, kernel="eager")
    assert got[0][:16, :16].diagonal().abs().max() <= 2 * eager[:16, :16].diagonal().abs().max() + 1e-3
    assert got[0][:16, :16].diagonal().abs().max() < 0.25


def test_native_inference_paths_are_bitwise_the_autograd_output():
    x, y = ball_points(50, 6, c=1.3, seed=5), ball_points(70, 6, c=1.3, seed=6)
    b = torch.randn(70)
    train = D.distance_logits(x, y.requires_grad_(), c=1.3, alpha=-2.0, bias=b, kernel="native")
    with torch.no_grad():
        infer = D.distance_logits(x, y, c=1.3, alpha=-2.0, bias=b, kernel="native")
        fixed = D.DistanceLogits(y, c=1.3, alpha=-2.0, bias=b, kernel="native")(x)
    assert torch.equal(train.detach(), infer)
    assert torch.equal(fixed, infer)


def test_native_output_does_not_depend_on_the_thread_count():
    x, y = ball_points(300, 16, c=1.0, seed=7), ball_points(700, 16, c=1.0, seed=8)  # above the 1-thread size
    threads = torch.get_num_threads()
    try:
        results = []
        for t in (1, 2):
            torch.set_num_threads(t)
            results.append(
                logits_and_grads(x, y, c=1.0, alpha=-1.0, bias=None, kernel="native", upstream=torch.ones(300, 700))
            )
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0][0], results[1][0])  # rows are independent: same values bit for bit
    for a, b in zip(results[0][1:], results[1][1:], strict=True):  # sums over rows: reassociated
        if a is not None:
            assert_close_scaled(a, b, rtol=1e-5)


def test_head_with_native_kernel_trains_like_the_eager_head():
    torch.manual_seed(0)
    heads = {k: HyperbolicDistanceHead(5, 31, init_std=0.3, learnable_c=True, kernel=k) for k in ("eager", "native")}
    heads["native"].load_state_dict(heads["eager"].state_dict())
    x = ball_points(24, 5, c=1.0, seed=9)
    target = torch.randint(0, 31, (24,))
    grads = {}
    for k, head in heads.items():
        loss = torch.nn.functional.cross_entropy(head(x), target)
        loss.backward()
        grads[k] = {name: p.grad for name, p in head.named_parameters()}
    assert set(grads["native"]) == {"ball.isp_c", "prototypes", "log_scale", "bias"}
    for name, g in grads["eager"].items():
        torch.testing.assert_close(grads["native"][name], g, rtol=1e-4, atol=1e-6)


def test_a_second_backward_through_retained_graph_gives_the_same_gradients():
    x = ball_points(9, 3, c=1.0, seed=10).requires_grad_()
    y = ball_points(11, 3, c=1.0, seed=11)
    out = D.distance_logits(x, y, c=1.0, alpha=-1.0, kernel="native")
    (first,) = torch.autograd.grad(out.sum(), x, retain_graph=True)
    (second,) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(first, second)


def test_native_rejects_what_it_cannot_run():
    x, y = ball_points(4, 3, c=1.0, seed=0), ball_points(5, 3, c=1.0, seed=1)
    with pytest.raises(ValueError, match="float32 tensors on the CPU"):
        D.distance_logits(x.double(), y.double(), c=1.0, kernel="native")
    with pytest.raises(ValueError, match="unknown kernel"):
        D.distance_logits(x, y, c=1.0, kernel="cuda")
    with pytest.raises(ValueError, match="y must be a contiguous float32"):
        D.distance_logits(x, y.double(), c=1.0, kernel="native")
    out = D.distance_logits(x, y.requires_grad_(), c=1.0, alpha=-1.0, kernel="native")
    out.mul_(2)  # the output is read by backward: autograd's version check must catch this
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()
    # float64 under "auto" is the eager kernel, silently and correctly
    torch.testing.assert_close(
        D.distance_logits(x.double(), y.detach().double(), c=1.0),
        D.distance_logits(x.double(), y.detach().double(), c=1.0, kernel="eager"),
    )


@pytest.fixture
def fresh_native(monkeypatch, tmp_path):
    """An empty kernel cache and no memoised builds, restored afterwards."""
    monkeypatch.setenv("HYPERR1_CACHE", str(tmp_path / "cache"))

    def clear():
        native.library.cache_clear()
        native.available.cache_clear()
        native._compiler_version.cache_clear()
        D._native_builds.cache_clear()

    clear()
    yield tmp_path
    clear()


def fake_compiler(tmp_path, message):
    script = tmp_path / "cc"
    script.write_text(f"#!/bin/sh\necho '{message}' >&2\nexit 1\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_a_failing_compiler_is_reported_and_auto_falls_back_with_a_warning(fresh_native, monkeypatch):
    monkeypatch.setenv("CC", fake_compiler(fresh_native, "fake compiler: no such target"))
    x, y = ball_points(4, 3, c=1.0, seed=0), ball_points(5, 3, c=1.0, seed=1)
    with pytest.raises(native.NativeUnavailable, match="fake compiler: no such target"):
        D.distance_logits(x, y, c=1.0, kernel="native")
    assert not native.available()
    with pytest.warns(RuntimeWarning, match="native distance kernel is unavailable"):
        auto = D.distance_logits(x, y, c=1.0)
    torch.testing.assert_close(auto, D.distance_logits(x, y, c=1.0, kernel="eager"))


def test_a_missing_compiler_is_reported(fresh_native, monkeypatch):
    monkeypatch.setenv("CC", str(fresh_native / "no-such-cc"))
    with pytest.raises(native.NativeUnavailable, match="cannot run the C compiler"):
        native.library(3)


def test_a_corrupt_cached_library_is_reported(fresh_native):
    native.library(3)
    (built,) = (fresh_native / "cache").glob("distance_kernels-d3-*.so")
    corrupt = built.with_suffix(".tmp")
    corrupt.write_bytes(b"not an ELF file")
    corrupt.replace(built)  # a new file: writing into the loaded one would corrupt this process
    # this process keeps the library it loaded; a fresh one finds the corrupt file
    code = "from hyperr1 import native; native.library(3)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy())
    assert proc.returncode != 0
    assert "NativeUnavailable" in proc.stderr and "delete it to rebuild" in proc.stderr


def test_builds_are_cached_per_dimension(fresh_native):
    native.library(2)
    native.library(7)
    names = sorted(p.name.split("-")[1] for p in (fresh_native / "cache").glob("*.so"))
    assert names == ["d2", "d7"]
    with pytest.raises(native.NativeUnavailable, match="dim must be in"):
        native.library(0)


def test_the_log_polynomial_in_the_c_source_is_the_documented_fit():
    source = native.VECTOR_MATH.read_text()  # log_ge1, which distance_kernels.c and sample_kernels.c include
    horner = re.findall(r"p = (?:p \* f )?([+-]?) ?([0-9.]+e[+-][0-9]+)f;", source)
    in_source = [float(sign + value) for sign, value in horner][::-1]  # lowest degree first
    fit = fit_log_poly.coefficients()
    assert len(in_source) == len(fit) == fit_log_poly.DEGREE + 1
    # the fit's target (log1p(f) − f + f²/2)/f³ cancels near f = 0, so its last digits follow the
    # machine's log1p (numpy's SIMD builds differ by CPU): the coefficients agree to 1e-6, and what
    # the kernel relies on, the error of the source's own coefficients, is checked exactly
    for a, b in zip(in_source, fit, strict=True):
        assert a == pytest.approx(b, rel=1e-6)
    assert fit_log_poly.max_error(fit) < 1e-8
    assert fit_log_poly.max_error(np.array(in_source)) < 1e-8


def test_native_distances_are_accurate_far_from_the_origin():
    """acosh through the polynomial log, over distances from 1e-3 to ~12 (c = 1), against float64."""
    d = 4
    x = torch.zeros(1, d)
    radii = torch.tanh(torch.logspace(-3, math.log10(6.0), 200, dtype=torch.float64) / 2)  # d(0, r) = 2 artanh r
    y = (torch.nn.functional.one_hot(torch.zeros(200, dtype=torch.long), d) * radii[:, None]).float()
    with torch.no_grad():
        got = D.distance_logits(x, y, c=1.0, alpha=1.0, kernel="native")[0].double()
    exact = 2 * torch.atanh(y.double()[:, 0])
    torch.testing.assert_close(got, exact, rtol=2e-6, atol=2e-6)


def test_alpha_zero_gets_its_gradient_through_the_eager_path():
    x, y = separated_points(6, 7, 3, c=1.0, seed=12)
    grads = []
    for kernel in ("native", "eager"):
        alpha = torch.tensor(0.0, requires_grad=True)
        out = D.distance_logits(x, y, c=1.0, alpha=alpha, kernel=kernel)
        out.sum().backward()
        grads.append(alpha.grad)
    torch.testing.assert_close(grads[0], grads[1])
    assert grads[0] > 0  # Σ of distances


def test_empty_inputs_give_empty_outputs_and_zero_gradients():
    x, y = separated_points(5, 4, 3, c=1.0, seed=13)
    for xs, ys in ((x, y[:0]), (x[:0], y)):
        xs, ys = xs.clone().requires_grad_(), ys.clone().requires_grad_()
        out = D.distance_logits(xs, ys, c=1.0, alpha=-1.0, bias=torch.zeros(len(ys)), kernel="native")
        assert out.shape == (len(xs), len(ys))
        out.sum().backward()
        assert torch.equal(xs.grad, torch.zeros_like(xs)) and torch.equal(ys.grad, torch.zeros_like(ys))


def test_nan_inputs_show_up_as_nan_like_the_eager_kernel():
    x, y = separated_points(5, 4, 3, c=1.0, seed=14)
    x[2, 0] = float("nan")
    for kernel in ("native", "eager"):
        xs = x.clone().requires_grad_()
        out = D.distance_logits(xs, y, c=1.0, alpha=-1.0, bias=torch.zeros(4), kernel=kernel)
        assert torch.isnan(out[2]).all() and torch.isfinite(out[[0, 1, 3, 4]]).all(), kernel
        out.sum().backward()
        assert torch.isnan(xs.grad[2]).all(), kernel


def test_bias_free_calls_work_under_a_float64_default_dtype():
    x, y = separated_points(5, 4, 3, c=1.0, seed=15)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        out = D.distance_logits(x, y, c=1.0, kernel="native")
    finally:
        torch.set_default_dtype(default)
    torch.testing.assert_close(out, D.distance_logits(x, y, c=1.0, kernel="eager"))


def test_fewer_openmp_threads_than_requested_give_the_same_gradients():
    """OMP_THREAD_LIMIT caps the team below torch.get_num_threads(); the per-thread partial sums of
    the threads that did not run must not be added (they would be stale memory)."""
    code = """
import torch
from hyperr1 import geometry as G
from hyperr1.native import dispatch as D
torch.manual_seed(0)
torch.set_num_threads(2)
x = G.project(torch.randn(300, 16) * 0.05, c=1.0).requires_grad_()
for m in (1400, 700):  # the second call's scratch overlaps the partial sums the first left behind
    y = G.project(torch.randn(m, 16) * 0.05 + 0.3, c=1.0).requires_grad_()
    x.grad = None
    D.distance_logits(x, y, c=1.0, alpha=-1.0, kernel="native").sum().backward()
torch.save((x.grad, y.grad), OUT)
"""
    results = []
    for limit in ("2", "1"):
        out = f"/tmp/hyperr1-omp-{os.getpid()}-{limit}.pt"
        env = {**os.environ, "OMP_THREAD_LIMIT": limit}
        proc = subprocess.run(
            [sys.executable, "-c", code.replace("OUT", repr(out))], env=env, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr
        results.append(torch.load(out, weights_only=True))
        os.unlink(out)
    for a, b in zip(*results, strict=True):
        assert_close_scaled(a, b, rtol=1e-5)


@pytest.mark.parametrize(
    "source, defines", [(native.SOURCE, ["-DHYPERR1_K=18"]), (native.SAMPLE_SOURCE, [])], ids=["distance", "sample"]
)
def test_every_simd_loop_of_the_kernel_is_vectorised(tmp_path, source, defines):
    """A select or call the vectoriser cannot if-convert silently turns a loop scalar (one such ?:
    in log_ge1 made the forward pass 12× slower); gcc's report names each loop it vectorised."""
    version = subprocess.run([*native._compiler(), "--version"], capture_output=True, text=True).stdout
    if "Free Software Foundation" not in version:
        pytest.skip("the vectorisation report is gcc's")
    lines = source.read_text().splitlines()
    pragmas = [i + 1 for i, line in enumerate(lines) if line.strip().startswith("#pragma omp simd")]
    flags = [f for f in native.FLAGS if f not in ("-shared", "-fPIC")]
    cmd = [*native._compiler(), *flags, *defines, "-fopt-info-vec-optimized", "-c", str(source)]
    report = subprocess.run([*cmd, "-o", str(tmp_path / "k.o")], capture_output=True, text=True).stderr
    name = re.escape(source.name)
    vectorised = {int(m) for m in re.findall(rf"{name}:(\d+):\d+: optimized: loop vectorized", report)}
    # gcc places an omp simd loop at its pragma (reductions) or at one of the first lines of its body
    missing = [p for p in pragmas if not vectorised & set(range(p, p + 8))]
    assert pragmas and not missing, f"loops after the pragmas on lines {missing} are not vectorised"


@pytest.mark.parametrize("machine, x86", [("aarch64", False), ("arm64", False), ("x86_64", True), ("AMD64", True)])
def test_x86_only_flags_are_not_given_to_other_compilers(machine, x86):
    """gcc rejects -mprefer-vector-width off x86, so with it the kernels would not build on ARM."""
    code = (
        f"import platform; platform.machine = lambda: {machine!r}; from hyperr1 import native; "
        "print(any(f.startswith('-mprefer-vector-width') for f in native.FLAGS + native.EMBED_FLAGS))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(x86)


def test_gradients_repeat_bit_for_bit():
    """Static row split: the same call gives the same partial sums, so resumed runs repeat exactly."""
    x, y = separated_points(300, 700, 16, c=1.0, seed=16)  # large enough for every thread
    upstream = torch.randn(300, 700, generator=torch.Generator().manual_seed(17))
    first = logits_and_grads(x, y, c=1.0, alpha=-1.3, bias=torch.zeros(700), kernel="native", upstream=upstream)
    second = logits_and_grads(x, y, c=1.0, alpha=-1.3, bias=torch.zeros(700), kernel="native", upstream=upstream)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "code",
    [
        "import hyperr1.native.dispatch; from hyperr1.geometry import pairwise_dist",
        "from hyperr1.geometry import pairwise_dist; from hyperr1.native.dispatch import KERNELS, DistanceLogits",
        "import hyperr1.nn",
    ],
)
def test_dispatch_and_geometry_import_in_either_order(code):
    """dispatch builds on geometry and geometry's pairwise_dist calls dispatch: neither import order
    may trip over the cycle, and the kernel names live only in dispatch."""
    check = "; from hyperr1 import geometry as G; from hyperr1.native import dispatch as D"
    check += "; assert D.KERNELS and not hasattr(G, 'DistanceLogits') and not hasattr(G, 'KERNELS')"
    check += "; import torch; x = torch.rand(3, 2) / 4; assert G.pairwise_dist(x, x).shape == (3, 3)"
    proc = subprocess.run([sys.executable, "-c", code + check], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# ---------------------------------------------------------------- log-probabilities straight from the distances


def logprobs_and_grads(x, y, tokens, *, c, alpha, bias, temperature, upstream, fused):
    """log π at ``tokens`` of softmax(distance_logits / T), the entropy, and the gradients of ⟨upstream, log π⟩
    for every input: by the fused native kernel, or as log_softmax of the eager kernel's logits."""
    leaves = [x.clone().requires_grad_(), y.clone().requires_grad_(), torch.tensor(c, dtype=x.dtype)]
    leaves += [torch.tensor(alpha, dtype=x.dtype), None if bias is None else bias.clone()]
    for t in leaves[2:]:
        if t is not None:
            t.requires_grad_()
    if fused:
        logp, ent = D.distance_logprobs(leaves[0], leaves[1], tokens, c=leaves[2], alpha=leaves[3], bias=leaves[4],
                                        temperature=temperature)  # fmt: skip
    else:
        logits = D.distance_logits(leaves[0], leaves[1], c=leaves[2], alpha=leaves[3], bias=leaves[4], kernel="eager")
        log_pi = (logits / temperature).log_softmax(-1)
        logp, ent = log_pi.gather(-1, tokens[:, None]).squeeze(-1), -(log_pi.exp() * log_pi).sum(-1)
    (logp * upstream.to(x.dtype)).sum().backward()
    return [logp.detach(), ent.detach()] + [None if t is None else t.grad for t in leaves]


@pytest.mark.parametrize("d", [2, 16])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("bias", [True, False])
def test_fused_log_probabilities_match_log_softmax_of_the_distance_logits_in_float64(d, temperature, bias):
    n, m, c = 37, 53, 0.8  # n, m off the row block (8) and the vector widths
    x, y = separated_points(n, m, d, c=c, seed=5)
    g = torch.Generator().manual_seed(6)
    tokens = torch.randint(0, m, (n,), generator=g)
    b = torch.randn(m, generator=g) if bias else None
    upstream = torch.randn(n, generator=g)
    got = logprobs_and_grads(x, y, tokens, c=c, alpha=-3.0, bias=b, temperature=temperature, upstream=upstream,
                             fused=True)  # fmt: skip
    ref = logprobs_and_grads(x.double(), y.double(), tokens, c=c, alpha=-3.0, bias=None if b is None else b.double(),
                             temperature=temperature, upstream=upstream, fused=False)  # fmt: skip
    for name, a, e in zip(["logp", "entropy", "x", "y", "c", "alpha", "bias"], got, ref, strict=True):
        if e is None:
            assert a is None, name
            continue
        assert a.dtype == torch.float32, name
        assert_close_scaled(a, e, rtol=2e-5, atol=1e-6)


def test_fused_log_probabilities_refuse_bad_tokens_and_alpha_zero():
    x, y = separated_points(4, 6, 3, c=1.0, seed=0)
    with pytest.raises(IndexError, match="out of range"):
        D.distance_logprobs(x, y, torch.tensor([0, 1, 6, 2]), c=1.0, alpha=-1.0)
    ones = torch.ones(4)
    with pytest.raises(IndexError, match="out of range"):  # the backward checks its tokens too
        native.distance_logprob_backward(ones, ones, torch.tensor([0, 1, -1, 2]), 1.0, x, y, 1.0, torch.zeros(6), -1.0,
                                         root_floor=1e-3)  # fmt: skip
    with pytest.raises(ValueError, match="token ids"):
        D.distance_logprobs(x, y, torch.tensor([0, 1, 2]), c=1.0, alpha=-1.0)
    with pytest.raises(ValueError, match="α != 0"):
        D.distance_logprobs(x, y, torch.tensor([0, 1, 2, 3]), c=1.0, alpha=0.0)
    with pytest.raises(ValueError, match="temperature"):
        D.distance_logprobs(x, y, torch.tensor([0, 1, 2, 3]), c=1.0, alpha=-1.0, temperature=0.0)
