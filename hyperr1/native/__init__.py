"""Fused float32 CPU kernels for the distance head, compiled from C on first use.

:func:`hyperr1.native.dispatch.distance_logits` computes α·acosh(1 + 2 w) + b over an N×M matrix,
w being the argument of the Poincaré distance. In eager PyTorch that is a dozen small ops for the
factors of w, a matrix product, nine elementwise passes with as many fresh N×M buffers, and two
more products in backward: 4× the time of ``nn.Linear`` of the same shape. ``distance_kernels.c``
does each direction in one pass over blocks of rows, factors and chain rule included, with no N×M
buffer besides the output (see that file for the formulas); forward + backward take about 1.4×
the time of ``nn.Linear`` (``benchmarks/bench_head.py``).

This module compiles the file with the system C compiler (``$CC``, else ``cc``; ``-O3
-march=native -fopenmp``, one build per point dimension, which the loops take as a constant)
into a per-user cache, loads it with ``ctypes`` and calls it on tensors' data pointers. No build
step at install time and no torch headers: a build takes about a second, once per machine,
dimension and source version. The OpenMP loops run in PyTorch's own thread pool (PyTorch's CPU
wheels ship GNU OpenMP, which the build links by the same name) with ``torch.get_num_threads()``
threads.

Cache: ``$HYPERR1_CACHE`` or ``$XDG_CACHE_HOME/hyperr1`` (default ``~/.cache/hyperr1``), one
shared object per hash of the source, the compiler's version, the flags and the CPU's feature flags
(``-march=native`` code must not run on another CPU model). Concurrent first calls are safe: each
compiles into a temporary file and renames it into place.

The same machinery builds ``embed_kernels.c``, the fused Riemannian SGD step of the Poincaré
embeddings (:class:`EmbedStep`, float64, single-threaded, any dimension; used by
:func:`hyperr1.embeddings.train_embedding` with ``kernel="auto"``): per pair, distances, softmax,
closed-form gradients and the retraction of the touched rows in one pass, with the next pairs'
rows prefetched, about 4× the PyTorch-ops step on the 82,115 WordNet nouns
(``benchmarks/bench_embeddings.py --step-ab``).

``sample_kernels.c`` is the inner step of the KV-cache sampler (:func:`sample_rows`, float32,
OpenMP over rows): max, exp, the inverse-CDF search with one uniform per row and the log-softmax at
the draw in one pass per row, in place of four N×V passes of PyTorch ops; and the attention of a
decoding step (:func:`attend`: one query row per sample against its cached or prompt keys), in place
of ``scaled_dot_product_attention``, whose per-call cost on these one-query shapes (~80 µs) was a
third of a sampling step; the whole decoder stack of a sampling step (:class:`DecoderStep`: embedding,
attention against the cache and the prompt, GELU MLP, layer norms, one call per step); and the
attention of whole sequences with its backward for teacher forcing (:func:`attention_forward`,
:func:`attention_backward`).

:func:`available` says whether the kernels can be used; :func:`library` raises
:class:`NativeUnavailable` with the compiler's message when they cannot. The choice between these
kernels and the PyTorch-ops ones, and their autograd wrappers, are in :mod:`hyperr1.native.dispatch`.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import math
import os
import platform
import shlex
import subprocess
import tempfile
from pathlib import Path

import torch

__all__ = [
    "SOURCE",
    "VECTOR_MATH",
    "EMBED_FLAGS",
    "FLAGS",
    "NativeUnavailable",
    "available",
    "library",
    "supports",
    "distance_forward",
    "distance_backward",
    "distance_logprob_forward",
    "distance_logprob_backward",
    "EMBED_SOURCE",
    "EmbedStep",
    "embed_available",
    "embed_library",
    "SAMPLE_SOURCE",
    "sample_available",
    "sample_library",
    "sample_rows",
    "attend",
    "token_logprobs",
    "token_logprobs_backward",
    "DecoderStep",
    "attention_forward",
    "attention_backward",
    "HeadDraw",
]

SOURCE = Path(__file__).with_name("distance_kernels.c")
"""The C source of the kernels, shipped inside the package."""
VECTOR_MATH = Path(__file__).with_name("vector_math.h")
"""The vectorisable exp and log that the C sources include (the log polynomial of :mod:`fit_log_poly`)."""
_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
FLAGS = (
    "-O3", "-march=native", *(("-mprefer-vector-width=512",) if _X86 else ()), "-fno-math-errno",
    "-fno-trapping-math", "-fopenmp", "-fPIC", "-shared",
)  # fmt: skip
"""Compiler flags of the head and sampler builds (plus ``-DHYPERR1_K=<dim + 2>`` for the head).
``-mprefer-vector-width=512`` (x86 only: gcc elsewhere rejects it, and the kernels would not build
on an ARM machine): for AVX-512 cores gcc's ``-march=native`` tuning still emits 256-bit
vectors; the head's fused loops are bound by arithmetic, and 512-bit vectors took its forward +
backward (4096×16 → 1200, one thread) from 13.8 to 11.9 ms. Elsewhere the flag changes nothing.
``-fno-trapping-math``: without it gcc 12 may not evaluate a float operation on both sides of a
select (it "could trap"), and on a CPU with AVX2 but no AVX-512, where the selects cannot be
masked, it then leaves the head's forward and backward loops scalar (found on an AMD EPYC with
AVX2: tests/test_native.py's vectorisation check). No value changes: nothing here enables traps."""
EMBED_FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fPIC", "-shared")
"""Flags of the embedding step: single-threaded (no OpenMP), at gcc's default vector width (its loops
run over d ≤ 10 doubles) and without ``-fno-trapping-math``, so that its runs stay bit-comparable
with the committed noun results."""


class NativeUnavailable(RuntimeError):
    """The native kernels could not be built or loaded on this machine."""


def _cache_dir() -> Path:
    if os.environ.get("HYPERR1_CACHE"):
        return Path(os.environ["HYPERR1_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hyperr1"


def _cpu_flags() -> str:
    """The CPU's feature flags (Linux), so a -march=native build is never reused on another CPU."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _compiler() -> list[str]:
    return shlex.split(os.environ.get("CC", "cc"))


def _run_compiler(args: list[str]) -> subprocess.CompletedProcess:
    cc = _compiler()
    try:
        return subprocess.run([*cc, *args], capture_output=True, text=True)
    except OSError as e:
        raise NativeUnavailable(f"cannot run the C compiler {cc[0]!r} ({e}); set $CC or use kernel='eager'") from e


def _build(target: Path, flags: tuple[str, ...], source: Path = SOURCE) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    except OSError as e:
        raise NativeUnavailable(f"cannot write the kernel cache {target.parent} ({e}); set $HYPERR1_CACHE") from e
    os.close(fd)
    args = [*flags, "-o", tmp, str(source), "-lm"]
    try:
        proc = _run_compiler(args)
    except NativeUnavailable:
        os.unlink(tmp)
        raise
    if proc.returncode != 0:
        os.unlink(tmp)
        cmd = shlex.join([*_compiler(), *args])
        raise NativeUnavailable(f"compiling {source.name} failed ({cmd}):\n{proc.stderr.strip()}")
    os.chmod(tmp, 0o755)  # mkstemp's 0600 would keep other users of a shared cache out
    os.replace(tmp, target)  # atomic: a concurrent process sees the old file or the whole new one


@functools.cache
def _compiler_version() -> str:
    return _run_compiler(["--version"]).stdout


@functools.cache
def library(dim: int = 16) -> ctypes.CDLL:
    """The kernels for points of dimension ``dim`` (a compile-time constant of the C code), built
    on first use; raises :class:`NativeUnavailable` if that fails."""
    if not 1 <= dim <= 1024:
        raise NativeUnavailable(f"native kernel: dim must be in [1, 1024], got {dim}")
    flags = (*FLAGS, f"-DHYPERR1_K={dim + 2}")
    lib = _load(SOURCE, flags, f"distance_kernels-d{dim}")
    ptr, i64, f32, dbl = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.POINTER(ctypes.c_double)
    # x, y, c, eps, bias, alpha, out, n, m, threads
    lib.hyperr1_distance_forward.argtypes = [ptr, ptr, f32, f32, ptr, f32, ptr, i64, i64, ctypes.c_int]
    lib.hyperr1_distance_forward.restype = ctypes.c_int
    # g, out, x, y, c, eps, bias, alpha, root_floor, grad_x, grad_y, grad_c, colsum, dot, n, m, threads
    lib.hyperr1_distance_backward.argtypes = [
        ptr, ptr, ptr, ptr, f32, f32, ptr, f32, f32, ptr, ptr, dbl, ptr, dbl, i64, i64, ctypes.c_int
    ]  # fmt: skip
    lib.hyperr1_distance_backward.restype = ctypes.c_int
    # x, y, c, eps, bias, alpha, temp, tokens, logp, ent, lse, n, m, threads
    lib.hyperr1_distance_logprob_forward.argtypes = [ptr, ptr, f32, f32, ptr, f32, f32, ptr, ptr, ptr, ptr, i64, i64,
                                                     ctypes.c_int]  # fmt: skip
    lib.hyperr1_distance_logprob_forward.restype = ctypes.c_int
    # g, lse, tokens, temp, x, y, c, eps, bias, alpha, root_floor, grad_x, grad_y, grad_c, colsum, dot, n, m, threads
    lib.hyperr1_distance_logprob_backward.argtypes = [
        ptr, ptr, ptr, f32, ptr, ptr, f32, f32, ptr, f32, f32, ptr, ptr, dbl, ptr, dbl, i64, i64, ctypes.c_int
    ]  # fmt: skip
    lib.hyperr1_distance_logprob_backward.restype = ctypes.c_int
    return lib


def _load(source: Path, flags: tuple[str, ...], stem: str) -> ctypes.CDLL:
    """Build ``source`` with ``flags`` into the cache (once per source, compiler, flags and CPU) and load it."""
    headers = [h.read_text() for h in sorted(source.parent.glob("*.h"))]  # what the sources #include
    key = "\n".join([source.read_text(), *headers, shlex.join(_compiler()), _compiler_version(), " ".join(flags),
                     _cpu_flags()])  # fmt: skip
    target = _cache_dir() / f"{stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.so"
    if not target.exists():
        _build(target, flags, source)
    try:
        return ctypes.CDLL(str(target))
    except OSError as e:
        raise NativeUnavailable(
            f"cannot load {target} ({e}); if the file is damaged, delete it to rebuild; if the cache is on a "
            "filesystem that cannot execute code, set $HYPERR1_CACHE to one that can"
        ) from e


EMBED_SOURCE = Path(__file__).with_name("embed_kernels.c")
"""The C source of the embedding step (:func:`embed_sgd_step`), shipped inside the package."""


@functools.cache
def embed_library() -> ctypes.CDLL:
    """The embedding kernel of ``embed_kernels.c``, built on first use (single-threaded, any dimension);
    raises :class:`NativeUnavailable` if that fails."""
    lib = _load(EMBED_SOURCE, EMBED_FLAGS, "embed_kernels")
    ptr, i64, dbl = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double
    # table, n, d, pairs, B, neg, K, keys, num_keys, c, lr, maxnorm, poincare, grad, mark, rows, cand, cand_cap, loss
    lib.hyperr1_embed_sgd_step.argtypes = [
        ptr, i64, i64, ptr, i64, ptr, i64, ptr, i64, dbl, dbl, dbl, ctypes.c_int, ptr, ptr, ptr, ptr, i64,
        ctypes.POINTER(dbl),
    ]  # fmt: skip
    lib.hyperr1_embed_sgd_step.restype = ctypes.c_int
    return lib


@functools.cache
def embed_available() -> bool:
    """Whether :func:`embed_library` builds and loads here (cached per process)."""
    return _builds(embed_library)


class EmbedStep:
    """One Riemannian SGD step of the embedding loss on a float64 CPU table, in place (the C kernel
    ``embed_kernels.c``; same update as :func:`hyperr1.embeddings.sparse_sgd_step`).

    Holds the kernel's scratch for a table of ``n`` rows of dimension ``d`` and batches of up to
    ``batch`` pairs with ``negatives`` draws each; ``keys`` are the sorted closure keys u·n + v.
    """

    def __init__(self, n: int, d: int, keys: torch.Tensor, *, batch: int, negatives: int):
        self.lib = embed_library()
        self.n, self.d, self.negatives = n, d, negatives
        self.keys = keys.to(torch.int64).contiguous()
        self.grad = torch.zeros(n, d, dtype=torch.float64)
        self.mark = torch.zeros(n, dtype=torch.int32)
        self.rows = torch.empty(batch * (2 + negatives), dtype=torch.int64)
        self.cand = torch.empty((1 + negatives) * (d + 5), dtype=torch.float64)
        self.batch = batch

    def __call__(
        self, table: torch.Tensor, pairs: torch.Tensor, neg: torch.Tensor, *, c: float, lr: float,
        maxnorm: float, poincare: bool,
    ) -> float:  # fmt: skip
        """Update ``table`` (n, d) for ``pairs`` (B, 2) and negatives ``neg`` (B, K); returns the batch loss."""
        if table.dtype != torch.float64 or table.device.type != "cpu" or not table.is_contiguous():
            raise ValueError(f"native embedding step: table must be contiguous float64 on the CPU, got {table.dtype}")
        if tuple(table.shape) != (self.n, self.d):
            raise ValueError(f"native embedding step: table shape {tuple(table.shape)} != {(self.n, self.d)}")
        pairs, neg = pairs.to(torch.int64).contiguous(), neg.to(torch.int64).contiguous()
        b = pairs.shape[0]
        if b > self.batch or tuple(neg.shape) != (b, self.negatives):
            raise ValueError(
                f"native embedding step: batch {b} with negatives {tuple(neg.shape)} does not fit the scratch"
            )
        loss = ctypes.c_double()
        status = self.lib.hyperr1_embed_sgd_step(
            table.data_ptr(), self.n, self.d, pairs.data_ptr(), b, neg.data_ptr(), self.negatives,
            self.keys.data_ptr(), self.keys.numel(), c, lr, maxnorm, int(poincare), self.grad.data_ptr(),
            self.mark.data_ptr(), self.rows.data_ptr(), self.cand.data_ptr(), self.cand.numel(), ctypes.byref(loss),
        )  # fmt: skip
        if status != 0:
            raise RuntimeError(f"native embedding step failed with status {status}")
        return loss.value


def _builds(load, *args) -> bool:
    """Whether ``load(*args)`` builds and loads its library (False on :class:`NativeUnavailable`)."""
    try:
        load(*args)
    except NativeUnavailable:
        return False
    return True


@functools.cache
def available(dim: int = 16) -> bool:
    """Whether :func:`library` builds and loads here for ``dim`` (cached per process)."""
    return _builds(library, dim)


def supports(t: torch.Tensor) -> bool:
    """Whether the kernels apply to tensors like ``t``: float32 on the CPU."""
    return t.dtype == torch.float32 and t.device.type == "cpu"


def _check(name: str, t: torch.Tensor, shape: tuple[int, ...]) -> None:
    if not supports(t) or not t.is_contiguous() or tuple(t.shape) != shape:
        raise ValueError(
            f"native kernel: {name} must be a contiguous float32 CPU tensor of shape {shape}, "
            f"got {t.dtype} on {t.device} with shape {tuple(t.shape)} (contiguous={t.is_contiguous()})"
        )


_EPS = torch.finfo(torch.float32).eps  # the floor of 1 − c‖x‖², as in geometry.left_factor


def _shapes(x: torch.Tensor, y: torch.Tensor, bias: torch.Tensor) -> tuple[int, int, int]:
    (n, d), m = x.shape, y.shape[0]
    _check("x", x, (n, d))
    _check("y", y, (m, d))
    _check("bias", bias, (m,))
    return n, m, d


def distance_forward(x: torch.Tensor, y: torch.Tensor, c: float, bias: torch.Tensor, alpha: float) -> torch.Tensor:
    """α · d_c(x_i, y_j) · √c + bias_j = α · acosh(1 + 2 w_ij) + bias_j for x (N, D), y (M, D) on the
    ball, with w the argument of the distance (see ``distance_kernels.c``); (N, M)."""
    n, m, d = _shapes(x, y, bias)
    out = torch.empty(n, m, dtype=torch.float32)
    status = library(d).hyperr1_distance_forward(
        x.data_ptr(), y.data_ptr(), c, _EPS, bias.data_ptr(), alpha, out.data_ptr(), n, m, torch.get_num_threads()
    )
    if status != 0:
        raise MemoryError(f"native kernel: no memory for Bᵀ ({d + 2} × {m} floats)")
    return out


def distance_backward(
    grad: torch.Tensor,
    out: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    c: float,
    bias: torch.Tensor,
    alpha: float,
    *,
    root_floor: float,
) -> tuple[torch.Tensor, torch.Tensor, float, torch.Tensor, float]:
    """Backward of :func:`distance_forward` for the upstream gradient ``grad`` (N, M).

    Returns (∂L/∂x, ∂L/∂y, ∂L/∂c at fixed α, ∂L/∂bias, α ∂L/∂α); the derivative of the
    arcosh, 1/√(w + w²), has its root floored at ``root_floor`` as in the eager kernel."""
    n, m, d = _shapes(x, y, bias)
    _check("grad", grad, (n, m))
    _check("out", out, (n, m))
    grad_x = torch.empty(n, d, dtype=torch.float32)
    grad_y = torch.empty(m, d, dtype=torch.float32)
    colsum = torch.empty(m, dtype=torch.float32)
    grad_c, dot = ctypes.c_double(), ctypes.c_double()
    status = library(d).hyperr1_distance_backward(
        grad.data_ptr(),
        out.data_ptr(),
        x.data_ptr(),
        y.data_ptr(),
        c,
        _EPS,
        bias.data_ptr(),
        alpha,
        root_floor,
        grad_x.data_ptr(),
        grad_y.data_ptr(),
        ctypes.byref(grad_c),
        colsum.data_ptr(),
        ctypes.byref(dot),
        n,
        m,
        torch.get_num_threads(),
    )
    if status != 0:
        raise MemoryError(f"native kernel: no memory for the backward scratch (({d} + 12) × {m} floats per thread)")
    return grad_x, grad_y, grad_c.value, colsum, dot.value


def _tokens(tokens: torch.Tensor, n: int) -> torch.Tensor:
    if tokens.shape != (n,) or tokens.dtype != torch.int64 or not tokens.is_contiguous() or tokens.device.type != "cpu":
        raise ValueError(f"native kernel: need {n} contiguous int64 token ids on the CPU, got {tuple(tokens.shape)} "
                         f"{tokens.dtype}")  # fmt: skip
    return tokens


def distance_logprob_forward(
    x: torch.Tensor, y: torch.Tensor, c: float, bias: torch.Tensor, alpha: float, temperature: float,
    tokens: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """log softmax(out / T) at the tokens, the entropy of softmax(out / T) and its log-normaliser ℓ, each (N,),
    for the logits out = α · acosh(1 + 2 w) + b of :func:`distance_forward`, without an N×M buffer
    (``distance_kernels.c``, ``hyperr1_distance_logprob_forward``)."""
    n, m, d = _shapes(x, y, bias)
    _tokens(tokens, n)
    logp, ent, lse = (torch.empty(n, dtype=torch.float32) for _ in range(3))
    status = library(d).hyperr1_distance_logprob_forward(
        x.data_ptr(), y.data_ptr(), c, _EPS, bias.data_ptr(), alpha, temperature, tokens.data_ptr(), logp.data_ptr(),
        ent.data_ptr(), lse.data_ptr(), n, m, torch.get_num_threads(),
    )  # fmt: skip
    if status == 2:
        raise IndexError(f"token id out of range [0, {m}) in the native distance log-probabilities")
    if status != 0:
        raise MemoryError(f"native kernel: no memory for the scratch ({d} + 28) × {m} floats per thread")
    return logp, ent, lse


def distance_logprob_backward(
    grad: torch.Tensor, lse: torch.Tensor, tokens: torch.Tensor, temperature: float, x: torch.Tensor,
    y: torch.Tensor, c: float, bias: torch.Tensor, alpha: float, *, root_floor: float,
) -> tuple[torch.Tensor, torch.Tensor, float, torch.Tensor, float]:  # fmt: skip
    """Backward of :func:`distance_logprob_forward` for the gradient ``grad`` (N,) of the log-probabilities:
    as :func:`distance_backward` with ∂L/∂out_ij = g_i (1_{j = y_i} − π_ij) / T formed block by block."""
    n, m, d = _shapes(x, y, bias)
    _tokens(tokens, n)
    _check("grad", grad, (n,))
    _check("lse", lse, (n,))
    grad_x = torch.empty(n, d, dtype=torch.float32)
    grad_y = torch.empty(m, d, dtype=torch.float32)
    colsum = torch.empty(m, dtype=torch.float32)
    grad_c, dot = ctypes.c_double(), ctypes.c_double()
    status = library(d).hyperr1_distance_logprob_backward(
        grad.data_ptr(), lse.data_ptr(), tokens.data_ptr(), temperature, x.data_ptr(), y.data_ptr(), c, _EPS,
        bias.data_ptr(), alpha, root_floor, grad_x.data_ptr(), grad_y.data_ptr(), ctypes.byref(grad_c),
        colsum.data_ptr(), ctypes.byref(dot), n, m, torch.get_num_threads(),
    )  # fmt: skip
    if status == 2:
        raise IndexError(f"token id out of range [0, {m}) in the native distance log-probabilities")
    if status != 0:
        raise MemoryError(f"native kernel: no memory for the backward scratch ({d} + 28) × {m} floats per thread")
    return grad_x, grad_y, grad_c.value, colsum, dot.value


SAMPLE_SOURCE = Path(__file__).with_name("sample_kernels.c")
"""The C source of the sampler's per-step draw (:func:`sample_rows`), shipped inside the package."""
_SAMPLE_BLOCK = 16  # BLOCK in sample_kernels.c: the scratch holds v + v // BLOCK + 1 floats per thread


@functools.cache
def sample_library() -> ctypes.CDLL:
    """The draw kernel of ``sample_kernels.c``, built on first use; raises :class:`NativeUnavailable`."""
    lib = _load(SAMPLE_SOURCE, FLAGS, "sample_kernels")
    ptr, i64 = ctypes.c_void_p, ctypes.c_int64
    # logits, n, v, u, greedy, scratch, scratch_rows, tokens, logp, threads
    lib.hyperr1_sample_rows.argtypes = [ptr, i64, i64, ptr, ctypes.c_int, ptr, i64, ptr, ptr, ctypes.c_int]
    lib.hyperr1_sample_rows.restype = ctypes.c_int
    # q, q_stride, k, v, mask, b, g, h, d, len, len_max, scale, out, scratch, scratch_rows, threads
    lib.hyperr1_attend.argtypes = [ptr, i64, ptr, ptr, ptr, *[i64] * 6, ctypes.c_float, ptr, ptr, i64, ctypes.c_int]
    lib.hyperr1_attend.restype = ctypes.c_int
    # logits, tokens, n, v, p, logp, ent, threads
    lib.hyperr1_token_logprobs.argtypes = [ptr, ptr, i64, i64, ptr, ptr, ptr, ctypes.c_int]
    lib.hyperr1_token_logprobs.restype = ctypes.c_int
    # p, tokens, g, n, v, grad, threads
    lib.hyperr1_token_logprobs_backward.argtypes = [ptr, ptr, ptr, i64, i64, ptr, ctypes.c_int]
    lib.hyperr1_token_logprobs_backward.restype = ctypes.c_int
    # weights, layers, d, f, h, embed, vocab, embed_scale, pos, ln_emb, tokens, n, g, self_kt, self_v, t, t_max,
    # cross_kt, cross_v, mask, s_max, eps, out, scratch, scratch_rows, threads
    f32 = ctypes.c_float
    lib.hyperr1_decoder_step.argtypes = [
        ptr, i64, i64, i64, i64, ptr, i64, f32, ptr, ptr, ptr, i64, i64, ptr, ptr, i64, i64, ptr, ptr, ptr, i64, f32,
        ptr, ptr, i64, ctypes.c_int,
    ]  # fmt: skip
    lib.hyperr1_decoder_step.restype = ctypes.c_int
    lib.hyperr1_decoder_scratch.argtypes = [i64, i64, i64, i64]
    lib.hyperr1_decoder_scratch.restype = i64
    # q, k, v, mask, b, h, lq, lk, d, causal, scale, o, p, scratch, scratch_rows, threads
    lib.hyperr1_attention_forward.argtypes = [*[ptr] * 4, *[i64] * 5, ctypes.c_int, f32, *[ptr] * 3, i64, ctypes.c_int]
    lib.hyperr1_attention_forward.restype = ctypes.c_int
    # q, k, v, o, p, g, b, h, lq, lk, d, scale, gq, gk, gv, scratch, scratch_rows, threads
    lib.hyperr1_attention_backward.argtypes = [ptr] * 6 + [i64] * 5 + [f32] + [ptr] * 4 + [i64, ctypes.c_int]
    lib.hyperr1_attention_backward.restype = ctypes.c_int
    # hidden, n, d, wpt, bp, k, poincare, c, clip_r, eps, bt, bias, alpha, v, temp, u, done, pad, eos, tokens,
    # logp, mask, stride, next, scratch, scratch_rows, threads
    lib.hyperr1_head_draw.argtypes = [
        ptr, i64, i64, ptr, ptr, i64, ctypes.c_int, f32, f32, f32, ptr, ptr, f32, i64, f32, ptr, ptr, i64, i64, ptr,
        ptr, ptr, i64, ptr, ptr, i64, ctypes.c_int,
    ]  # fmt: skip
    lib.hyperr1_head_draw.restype = i64
    lib.hyperr1_attention_scratch.argtypes = [i64, i64]
    lib.hyperr1_attention_scratch.restype = i64
    return lib


@functools.cache
def sample_available() -> bool:
    """Whether :func:`sample_library` builds and loads here (cached per process)."""
    return _builds(sample_library)


def sample_rows(logits: torch.Tensor, u: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row of ``logits`` (N, V) float32 on the CPU and its log-softmax probability.

    With uniforms ``u`` (N,) in [0, 1): the first j whose cumulative softmax mass exceeds u·Z,
    i.e. :func:`hyperr1.decoding.sample_categorical` of softmax(logits) with those uniforms; with
    ``u=None``: the first argmax. Returns (tokens (N,) int64, log p (N,) float32); a row holding NaN
    or +inf gets token V − 1 and log p NaN.
    """
    if logits.dim() != 2 or logits.dtype != torch.float32 or logits.device.type != "cpu":
        raise ValueError(f"native sampler: need (N, V) float32 logits on the CPU, got {tuple(logits.shape)} "
                         f"{logits.dtype} on {logits.device}")  # fmt: skip
    logits = logits.contiguous()
    n, v = logits.shape
    if u is not None:
        u = u.to(torch.float32).contiguous()
        if u.shape != (n,):
            raise ValueError(f"native sampler: need {n} uniforms, got shape {tuple(u.shape)}")
    threads = max(1, torch.get_num_threads())
    scratch = torch.empty(threads, v + v // _SAMPLE_BLOCK + 1, dtype=torch.float32)
    tokens = torch.empty(n, dtype=torch.int64)
    logp = torch.empty(n, dtype=torch.float32)
    status = sample_library().hyperr1_sample_rows(
        logits.data_ptr(), n, v, 0 if u is None else u.data_ptr(), int(u is None), scratch.data_ptr(), threads,
        tokens.data_ptr(), logp.data_ptr(), threads,
    )  # fmt: skip
    if status != 0:
        raise RuntimeError(f"native sampler failed with status {status}")
    return tokens, logp


def attend(
    q: torch.Tensor, kt: torch.Tensor, v: torch.Tensor, length: int, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """One decoding step's attention, ``scaled_dot_product_attention`` of single query rows
    (``sample_kernels.c``, ``hyperr1_attend``), float32 on the CPU.

    ``q`` (B·G, D) query rows (any row stride, unit stride inside a row), D = H·d; ``kt``
    (B, H, d, L_max) the keys *transposed* and ``v`` (B, H, L_max, d) the values, contiguous, of
    which the first ``length`` positions are attended; ``mask`` (B, L_max) bool (True: attend) or
    None. The G consecutive rows of prompt b attend to its keys. Returns (B·G, D): head h of row r
    in columns h·d … h·d + d − 1.
    """
    b, h, len_max, d = v.shape
    tensors = (q, kt, v) if mask is None else (q, kt, v, mask)
    if any(t.device.type != "cpu" for t in tensors) or {q.dtype, kt.dtype, v.dtype} != {torch.float32}:
        raise ValueError("native attention: need float32 tensors on the CPU")
    if q.dim() != 2 or q.shape[1] != h * d or q.shape[0] % max(b, 1) or q.stride(1) != 1:
        raise ValueError(f"native attention: need (B·G, {h * d}) query rows with unit column stride, got "
                         f"{tuple(q.shape)} with strides {q.stride()} for values {tuple(v.shape)}")  # fmt: skip
    if kt.shape != (b, h, d, len_max) or not (kt.is_contiguous() and v.is_contiguous()) or not 1 <= length <= len_max:
        raise ValueError(f"native attention: need contiguous transposed keys (B, H, d, L_max) = {(b, h, d, len_max)}, "
                         f"got {tuple(kt.shape)}, and 1 <= length <= {len_max}, got {length}")  # fmt: skip
    if mask is not None and (mask.shape != (b, len_max) or mask.dtype != torch.bool or not mask.is_contiguous()):
        raise ValueError(f"native attention: need a contiguous (B, L_max) = {(b, len_max)} bool mask")
    g = q.shape[0] // b
    threads = max(1, torch.get_num_threads())
    out = torch.empty(b * g, h * d, dtype=torch.float32)
    scratch = torch.empty(threads, length, dtype=torch.float32)
    status = sample_library().hyperr1_attend(
        q.data_ptr(), q.stride(0), kt.data_ptr(), v.data_ptr(), 0 if mask is None else mask.data_ptr(),
        b, g, h, d, length, len_max, d**-0.5, out.data_ptr(), scratch.data_ptr(), threads, threads,
    )  # fmt: skip
    if status != 0:
        raise RuntimeError(f"native attention failed with status {status}")
    return out


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Softmax, log-probability of the given token and entropy of each row of ``logits`` (N, V)
    float32 on the CPU (``sample_kernels.c``, ``hyperr1_token_logprobs``): two passes per row.

    ``tokens`` (N,) int64 in [0, V). Returns p = softmax(logits) (N, V), log p_y (N,) and
    H = −Σ p log p (N,); a row holding NaN or +inf, or only −inf, gets NaN in all three.
    """
    if logits.dim() != 2 or logits.dtype != torch.float32 or logits.device.type != "cpu":
        raise ValueError(f"native log-probabilities: need (N, V) float32 logits on the CPU, got "
                         f"{tuple(logits.shape)} {logits.dtype} on {logits.device}")  # fmt: skip
    n, v = logits.shape
    if tokens.shape != (n,) or tokens.device.type != "cpu":
        raise ValueError(f"native log-probabilities: need {n} token ids on the CPU, got shape {tuple(tokens.shape)}")
    logits, tokens = logits.contiguous(), tokens.to(torch.int64).contiguous()
    p = torch.empty_like(logits)
    logp, ent = torch.empty(n, dtype=torch.float32), torch.empty(n, dtype=torch.float32)
    status = sample_library().hyperr1_token_logprobs(
        logits.data_ptr(), tokens.data_ptr(), n, v, p.data_ptr(), logp.data_ptr(), ent.data_ptr(),
        max(1, torch.get_num_threads()),
    )  # fmt: skip
    if status == 2:
        raise IndexError(f"token id out of range [0, {v}) in native log-probabilities")
    if status != 0:
        raise RuntimeError(f"native log-probabilities failed with status {status}")
    return p, logp, ent


def _layer_floats(d: int, f: int) -> int:
    """Floats of one packed decoder layer (``layer_floats`` in ``sample_kernels.c``)."""
    return 6 * d * d + 13 * d + 2 * d * f + f


class DecoderStep:
    """One decoding step of a whole post-LayerNorm (BART) decoder stack, one token per row, in C
    (``sample_kernels.c``, ``hyperr1_decoder_step``): embedding, every layer's self-attention against the
    cache, cross-attention against the prompt, GELU MLP and layer norms in one call per step, in place
    of ~30 PyTorch ops per layer. Float32 on the CPU.

    Holds the packed weights (``weights``: per layer, in the order of ``sample_kernels.c``, the matrices
    transposed to (in, out)), the self-attention cache (keys transposed (L, N, H, d, T_max), values
    (L, N, H, T_max, d)) and the prompts' keys (transposed, (L, B, H, d, S_max)), values (L, B, H, S_max, d)
    and mask (B, S_max); N = B·G rows, the G rows of a prompt consecutive. T_max and S_max are multiples
    of 16 (the attention's block of positions). Everything is checked here once; a call checks only
    the tokens.
    """

    def __init__(
        self, weights: torch.Tensor, *, layers: int, heads: int, d_model: int, ffn_dim: int, embed: torch.Tensor,
        embed_scale: float, positions: torch.Tensor, ln_embedding: torch.Tensor, eps: float, num_samples: int,
        self_kt: torch.Tensor, self_v: torch.Tensor, cross_kt: torch.Tensor, cross_v: torch.Tensor, mask: torch.Tensor,
    ):  # fmt: skip
        self.lib = sample_library()
        d, f, h, g = d_model, ffn_dim, heads, num_samples
        if d % h or min(layers, d, f, h, g) < 1:
            raise ValueError(f"native decoder: need layers, width, MLP width, heads >= 1 and width % heads == 0, got "
                             f"{layers}, {d}, {f}, {h}")  # fmt: skip
        vocab = embed.shape[0]
        _check("weights", weights, (layers * _layer_floats(d, f),))
        _check("embed", embed, (vocab, d))
        _check("positions", positions, (positions.shape[0], d))
        _check("ln_embedding", ln_embedding, (2, d))
        n, t_max, s_max = self_v.shape[1], self_v.shape[3], cross_v.shape[3]
        b = n // g
        if n % g or t_max % _SAMPLE_BLOCK or s_max % _SAMPLE_BLOCK:
            raise ValueError(f"native decoder: need N = B·G rows and T_max, S_max multiples of {_SAMPLE_BLOCK}, got "
                             f"N={n}, G={g}, T_max={t_max}, S_max={s_max}")  # fmt: skip
        _check("self_kt", self_kt, (layers, n, h, d // h, t_max))
        _check("self_v", self_v, (layers, n, h, t_max, d // h))
        _check("cross_kt", cross_kt, (layers, b, h, d // h, s_max))
        _check("cross_v", cross_v, (layers, b, h, s_max, d // h))
        if mask.shape != (b, s_max) or mask.dtype != torch.bool or not mask.is_contiguous():
            raise ValueError(f"native decoder: need a contiguous (B, S_max) = {(b, s_max)} bool mask")
        self.tensors = (weights, embed, positions, ln_embedding, self_kt, self_v, cross_kt, cross_v, mask)  # kept alive
        self.shape = (layers, d, f, h, vocab, n, g, t_max, s_max)
        self.embed_scale, self.eps, self.max_position = float(embed_scale), float(eps), positions.shape[0]
        self.threads = max(1, torch.get_num_threads())
        scratch = self.lib.hyperr1_decoder_scratch(d, f, t_max, s_max)
        self.scratch = torch.empty(self.threads, scratch, dtype=torch.float32)
        self.out = torch.empty(n, d, dtype=torch.float32)

    def __call__(self, tokens: torch.Tensor, t: int) -> torch.Tensor:
        """Decoder states (N, D) of ``tokens`` (N,) int64 at position ``t`` (its keys and values enter the
        cache at t; positions 0..t−1 must be there already). The returned tensor is reused by the next call."""
        layers, d, f, h, vocab, n, g, t_max, s_max = self.shape
        if tokens.shape != (n,) or tokens.dtype != torch.int64 or not tokens.is_contiguous():
            raise ValueError(f"native decoder: need {n} contiguous int64 tokens, got {tuple(tokens.shape)} "
                             f"{tokens.dtype}")  # fmt: skip
        if not 0 <= t < min(t_max, self.max_position):
            raise ValueError(f"native decoder: position {t} outside [0, {min(t_max, self.max_position)})")
        weights, embed, positions, ln_emb, self_kt, self_v, cross_kt, cross_v, mask = self.tensors
        status = self.lib.hyperr1_decoder_step(
            weights.data_ptr(), layers, d, f, h, embed.data_ptr(), vocab, self.embed_scale,
            positions[t].data_ptr(), ln_emb.data_ptr(), tokens.data_ptr(), n, g, self_kt.data_ptr(),
            self_v.data_ptr(), t, t_max, cross_kt.data_ptr(), cross_v.data_ptr(), mask.data_ptr(), s_max, self.eps,
            self.out.data_ptr(), self.scratch.data_ptr(), self.threads, self.threads,
        )  # fmt: skip
        if status == 2:
            raise IndexError(f"token id out of range [0, {vocab}) in the native decoder")
        if status != 0:
            raise RuntimeError(f"native decoder failed with status {status}")
        return self.out


def _attention_shapes(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[int, int, int, int, int]:
    b, h, lq, d = q.shape
    lk = k.shape[2]
    _check("q", q, (b, h, lq, d))
    _check("k", k, (b, h, lk, d))
    _check("v", v, (b, h, lk, d))
    return b, h, lq, lk, d


def attention_forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, causal: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q kᵀ/√d + masks) v per (batch, head) pair (``sample_kernels.c``, ``hyperr1_attention_forward``):
    ``q`` (B, H, Lq, d), ``k``, ``v`` (B, H, Lk, d) contiguous float32 on the CPU; ``mask`` (B, Lk) bool (True:
    attend) or None; ``causal``: query i attends keys j ≤ i. Returns the output (B, H, Lq, d) and the
    attention probabilities (B, H, Lq, Lk), which :func:`attention_backward` takes."""
    b, h, lq, lk, d = _attention_shapes(q, k, v)
    if mask is not None and (mask.shape != (b, lk) or mask.dtype != torch.bool or not mask.is_contiguous()):
        raise ValueError(f"native attention: need a contiguous (B, Lk) = {(b, lk)} bool mask")
    threads = max(1, torch.get_num_threads())
    o, p = torch.empty(b, h, lq, d, dtype=torch.float32), torch.empty(b, h, lq, lk, dtype=torch.float32)
    scratch = torch.empty(threads, sample_library().hyperr1_attention_scratch(d, lk), dtype=torch.float32)
    status = sample_library().hyperr1_attention_forward(
        q.data_ptr(), k.data_ptr(), v.data_ptr(), 0 if mask is None else mask.data_ptr(), b, h, lq, lk, d,
        int(causal), d**-0.5, o.data_ptr(), p.data_ptr(), scratch.data_ptr(), threads, threads,
    )  # fmt: skip
    if status != 0:
        raise RuntimeError(f"native attention forward failed with status {status}")
    return o, p


def attention_backward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor, p: torch.Tensor, grad: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(∂L/∂q, ∂L/∂k, ∂L/∂v) of :func:`attention_forward` for the upstream gradient ``grad`` (B, H, Lq, d),
    from its output ``o`` and probabilities ``p``."""
    b, h, lq, lk, d = _attention_shapes(q, k, v)
    _check("o", o, (b, h, lq, d))
    _check("p", p, (b, h, lq, lk))
    _check("grad", grad, (b, h, lq, d))
    threads = max(1, torch.get_num_threads())
    gq, gk, gv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    scratch = torch.empty(threads, sample_library().hyperr1_attention_scratch(d, lk), dtype=torch.float32)
    status = sample_library().hyperr1_attention_backward(
        q.data_ptr(), k.data_ptr(), v.data_ptr(), o.data_ptr(), p.data_ptr(), grad.data_ptr(), b, h, lq, lk, d,
        d**-0.5, gq.data_ptr(), gk.data_ptr(), gv.data_ptr(), scratch.data_ptr(), threads, threads,
    )  # fmt: skip
    if status != 0:
        raise RuntimeError(f"native attention backward failed with status {status}")
    return gq, gk, gv


class HeadDraw:
    """The output head and the draw of a sampling step in C (``sample_kernels.c``, ``hyperr1_head_draw``):
    from the decoder states (N, D), the head's projection, the Poincaré distance logits (or the Euclidean
    ones), the tempered draw of :func:`sample_rows` and the step's bookkeeping (pad, log p 0 and mask 0
    for finished rows), one call per step. Float32 on the CPU.

    ``projection`` (k, D) and ``projection_bias`` (k,) map a state to the head's space; ``factor`` is
    Bᵀ ((k + 2, V), :func:`hyperr1.geometry.right_factor` of the prototypes, transposed) for the Poincaré
    head, with its curvature ``c``, clipping radius ``clip_r`` and α = −s/√c, or Uᵀ (k, V) for the
    Euclidean one (``poincare=False``); ``bias`` (V,). Holds its scratch and the next step's tokens.
    """

    def __init__(
        self, *, projection: torch.Tensor, projection_bias: torch.Tensor, factor: torch.Tensor, bias: torch.Tensor,
        poincare: bool, c: float = 1.0, clip_r: float = math.inf, alpha: float = 1.0, temperature: float = 1.0,
        rows: int,
    ):  # fmt: skip
        self.lib = sample_library()
        k, d = projection.shape
        v = bias.shape[0]
        terms = k + 2 if poincare else k
        if not temperature > 0 or not clip_r > 0 or not c > 0:
            raise ValueError(f"native head: need temperature, clip_r, c > 0, got {temperature}, {clip_r}, {c}")
        self.wpt = projection.detach().t().contiguous()  # (D, k)
        _check("projection_bias", projection_bias, (k,))
        _check("factor", factor, (terms, v))
        _check("bias", bias, (v,))
        self.tensors = (self.wpt, projection_bias, factor, bias)
        self.shape = (rows, d, k, v)
        self.params = (int(poincare), float(c), float(clip_r), _EPS, float(alpha), float(temperature))
        self.threads = max(1, torch.get_num_threads())
        self.scratch = torch.empty(self.threads, 2 * v + v // _SAMPLE_BLOCK + k + 3, dtype=torch.float32)
        self.next = torch.empty(rows, dtype=torch.int64)

    def __call__(
        self, hidden: torch.Tensor, u: torch.Tensor | None, done: torch.Tensor, tokens: torch.Tensor,
        logprobs: torch.Tensor, mask: torch.Tensor, t: int, *, pad: int, eos: int,
    ) -> int:  # fmt: skip
        """Draw step ``t`` for every row: writes column t of ``tokens`` (N, T) int64, ``logprobs`` (N, T)
        float32 and ``mask`` (N, T) bool, updates ``done`` (N,) bool in place, leaves the drawn tokens in
        :attr:`next`; ``u`` (N,) float32 uniforms, or None for the argmax. Returns how many rows are done."""
        n, d, k, v = self.shape
        _check("hidden", hidden, (n, d))
        if u is not None:
            _check("u", u, (n,))
        if done.shape != (n,) or done.dtype != torch.bool or not done.is_contiguous():
            raise ValueError(f"native head: need a contiguous ({n},) bool done mask")
        for name, buf, dtype in (("tokens", tokens, torch.int64), ("logprobs", logprobs, torch.float32),
                                 ("mask", mask, torch.bool)):  # fmt: skip
            if buf.dtype != dtype or buf.dim() != 2 or buf.shape[0] != n or not buf.is_contiguous():
                raise ValueError(f"native head: {name} must be a contiguous ({n}, T) {dtype} tensor")
        if not 0 <= t < tokens.shape[1] or tokens.shape != logprobs.shape or tokens.shape != mask.shape:
            raise ValueError(f"native head: step {t} outside the (N, T) buffers {tuple(tokens.shape)}")
        wpt, bp, factor, bias = self.tensors
        poincare, c, clip_r, eps, alpha, temperature = self.params
        stride = tokens.shape[1]
        finished = self.lib.hyperr1_head_draw(
            hidden.data_ptr(), n, d, wpt.data_ptr(), bp.data_ptr(), k, poincare, c, clip_r, eps, factor.data_ptr(),
            bias.data_ptr(), alpha, v, temperature, 0 if u is None else u.data_ptr(), done.data_ptr(), pad, eos,
            tokens.data_ptr() + 8 * t, logprobs.data_ptr() + 4 * t, mask.data_ptr() + t, stride,
            self.next.data_ptr(), self.scratch.data_ptr(), self.threads, self.threads,
        )  # fmt: skip
        if finished < 0:
            raise RuntimeError("native head failed: bad sizes")
        return int(finished)


def token_logprobs_backward(p: torch.Tensor, tokens: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """∂L/∂logits = g (1_y − p) (N, V) of :func:`token_logprobs` for the upstream gradient ``grad`` (N,) of the
    log-probabilities, from its softmax ``p`` (N, V) and the tokens (N,) it was given."""
    n, v = p.shape
    _check("p", p, (n, v))
    _check("grad", grad, (n,))
    if tokens.shape != (n,) or tokens.dtype != torch.int64 or not tokens.is_contiguous():
        raise ValueError(f"native log-probabilities: need {n} contiguous int64 token ids")
    out = torch.empty_like(p)
    status = sample_library().hyperr1_token_logprobs_backward(
        p.data_ptr(), tokens.data_ptr(), grad.data_ptr(), n, v, out.data_ptr(), max(1, torch.get_num_threads())
    )
    if status == 2:
        raise IndexError(f"token id out of range [0, {v}) in native log-probabilities")
    if status != 0:
        raise RuntimeError(f"native log-probabilities backward failed with status {status}")
    return out
