"""Compiled (numba) per-user kernels for the hot paths of an outer iteration.

The numpy implementations in :mod:`lowrank_sparse.local` and
:mod:`lowrank_sparse.global_step` batch every operation over the user axis, so each
operation is its own pass over X: an outer iteration at t=1e5 costs ~20 passes. Here one
loop over users does all of a user's work while X_i (n x d, 16 KB at n=20, d=100) is in
cache (prefetched while the user before was fitted): A_i = X_i U, a basis of its range, the OMP starts, hard thresholding pursuit
with its refits, and the user's contributions to the U step's normal equations.

The arithmetic is the numpy reference's (:func:`lowrank_sparse.local._solve_block`),
step for step; they differ by rounding (Cholesky instead of LU solves, a basis from the
Cholesky factor of A^T A instead of Householder QR), which ``tests/test_kernels.py``
bounds. X may be stored in float32 or float64; every product and sum is float64.

Inputs must come in one layout (:func:`lowrank_sparse.local.kernel_arrays`): C-contiguous
arrays, X float32 or float64, everything else float64 or intp, so that each X dtype
compiles once (about 20 s of CPU, cached on disk by numba; what makes the compile
long is the size of the code numba generates, hence the struct of work arrays and
the few, single-site inlined helpers).

Determinism: users are independent, and sums over users are taken in blocks of
``BLOCK`` users fixed by t alone, then added in block order, so results do not depend on
the number of threads.
"""

from __future__ import annotations

import functools
from collections import namedtuple
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.experimental import structref
from numba.extending import intrinsic

from ._linalg import worth_threads
from .local import CAP_FLOOR, STEP_CAP_SLACK

#: Users per block of the partial sums over users (fixed, so sums do not depend on the
#: number of threads).
BLOCK = 256
#: Users per parallel task of the local step (small: restarts touch few users).
USERS_PER_TASK = 64
#: The next user's X_i is prefetched in this many parts spread over this user's work
#: (:func:`_prefetch_ahead`).
PREFETCH_PARTS = 12

# Reassociation lets reductions vectorize; no "nnan"/"ninf": -inf marks chosen columns.
_FAST = {"reassoc", "contract"}


# inline="always" (numba's own inlining: the callee's IR is copied and typed again at
# every call site) only for helpers with one call site (two for _keep_as_best): small
# helpers called from many sites are inlined by LLVM anyway, and inlining them in numba
# made the cold compile 38 s of CPU instead of 30 s (benchmarks/bench_first_fit.py) for
# no measurable speed. numba's wrappers that make a compiled function callable from
# Python and as a C callback are compiled code too (~8% of what numba generated for the
# helpers): only the kernels (entry=True) get them, and the inlined helpers, which are
# compiled on their own only when called from Python (_n_tasks).
# error_model="numpy": no zero-divisor check (and ZeroDivisionError) at each division:
# the kernels check or clamp divisors before, or (_step_cap) take the inf or NaN of a
# division by zero as the answer; ~1.5 s less of the cold compile.
def _jit(inline="never", entry=False):
    wrappers = {} if entry or inline != "never" else {"no_cpython_wrapper": True,
                                                      "no_cfunc_wrapper": True}
    return njit(cache=True, fastmath=_FAST, nogil=True, inline=inline, error_model="numpy",
                **wrappers)


#: What the local step writes, one row per user: support (t, k) intp, coef (t, r + k)
#: [w_i, the values of b_i on the support], residual (t,) ||e_i||^2, vectors (t, n) the
#: residual e_i, lowrank (t, n) A_i w_i, corr_residual (t, d) X_i^T e_i.
LocalOutputs = namedtuple("LocalOutputs",
                          "support coef residual vectors lowrank corr_residual")

#: How the local step fits each user it is given: HTP from the user's warm support (if
#: use_warm) and from n_starts greedy starts, at most max_iter iterations each; with
#: keep_existing the fit already in the outputs competes too (a restart); HTP's step
#: capped as :func:`lowrank_sparse.local._step_cap` says (its constants passed at run
#: time: numba's cache would not notice a change to them in local.py).
LocalSettings = namedtuple("LocalSettings",
                           "sparsity n_starts max_iter use_warm keep_existing "
                           "step_cap_slack cap_floor",
                           defaults=(STEP_CAP_SLACK, CAP_FLOOR))

@structref.register
class _WorkType(types.StructRef):
    """A struct of arrays passed by reference: a call or a copy costs one reference
    count, where a namedtuple of the same arrays costs one per array (and numba's IR for
    each grows with the number of arrays: as a namedtuple, the Work arrays made up half
    of the compiled code and of the cold compile time)."""


_VECTOR, _MATRIX, _INDICES = types.float64[::1], types.float64[:, ::1], types.intp[::1]

#: One thread's work arrays for a user (m = r + k), from :func:`_work`.
Work = _WorkType([
    ("At", _MATRIX),         # (r, n) A_i^T = (X_i U)^T: the first r rows of Mt
    ("LA", _MATRIX),         # (r, r) Cholesky factor of A^T A, or I when Qt is the basis
    ("Qt", _MATRIX),         # (r, n) orthonormal basis of range(A_i) when A^T A is singular
    ("coords", _VECTOR),     # (r,) Q^T v, coordinates in range(A_i)
    ("Mt", _MATRIX),         # (m, n) regressors of the refit, [A_i, X_i[:, S]]^T
    ("G", _MATRIX),          # (m, m) their Gram matrix
    ("h", _VECTOR),          # (m,) M^T y_i
    ("L", _MATRIX),          # (m, m) Cholesky factor of G
    ("factored", types.boolean),  # whether L is G's factor (the last refit's test)
    ("coef", _VECTOR),       # (m,) refit coefficients [w, b_S]
    ("res", _VECTOR),        # (n,) refit residual
    ("S", _INDICES),         # (k,) current support, sorted
    ("T", _INDICES),         # (k,) the k largest gradient entries
    ("grad", _VECTOR),       # (d,) X_i^T res
    ("b", _VECTOR),          # (d,) b of the current point
    ("score", _VECTOR),      # (d,) selection scores
    ("top_score", _VECTOR),  # (k,) scores of the k best so far (top-k insertion list)
    ("direction", _VECTOR),  # (n,) X_T g_T, the line-search direction in sample space
    ("Py", _VECTOR),         # (n,) P y_i, the response off range(A_i)
    ("colnorm", _VECTOR),    # (d,) ||P x_j||, projected column norms
    ("BX", _MATRIX),         # (r, d) B^T X_i, then LA^{-1} B^T X_i, for them
    ("seeds", _INDICES),     # (n_starts,) first columns of the greedy starts
    ("best_S", _INDICES),    # (k,) the lowest-residual point of an HTP run: support,
    ("best_coef", _VECTOR),  # (m,) coefficients,
    ("best_res", _VECTOR),   # (n,) residual,
    ("best_grad", _VECTOR),  # (d,) X_i^T residual (when HTP stopped there)
    ("full_rank", types.boolean),  # whether A^T A had a Cholesky factor (_range_basis)
    ("ahead", types.intp),   # the first cache line of the next user's X_i, prefetched:
    ("ahead_sent", types.intp),   # its first ahead_sent lines sent so far,
    ("ahead_lines", types.intp),  # of ahead_lines (0: no next user)
])


@_jit(inline="always")
def _work(n, d, r, k, n_starts):
    """Work arrays for users with n samples, d features, rank r, sparsity k."""
    m, kk, rr = r + k, max(k, 1), max(r, 1)
    w = structref.new(Work)
    w.Mt = np.empty((m, n))
    w.At = w.Mt[:r]
    w.LA = np.zeros((rr, rr))
    w.Qt = np.empty((r, n))
    w.coords = np.empty(rr)
    w.G = np.empty((m, m))
    w.h = np.empty(m)
    w.L = np.zeros((m, m))
    w.coef = np.empty(m)
    w.res = np.empty(n)
    w.S = np.empty(kk, dtype=np.intp)
    w.T = np.empty(kk, dtype=np.intp)
    w.grad = np.empty(d)
    w.b = np.empty(d)
    w.score = np.empty(d)
    w.top_score = np.empty(kk)
    w.direction = np.empty(n)
    w.Py = np.empty(n)
    w.colnorm = np.empty(d)
    w.BX = np.empty((r, d))
    w.seeds = np.empty(max(n_starts, 1), dtype=np.intp)
    w.best_S = np.empty(kk, dtype=np.intp)
    w.best_coef = np.empty(m)
    w.best_res = np.empty(n)
    w.best_grad = np.empty(d)
    w.full_rank = w.factored = False
    w.ahead = w.ahead_sent = w.ahead_lines = 0
    return w


# ---------------------------------------------------------------- small dense algebra

@_jit()
def _copy(src, dst):
    """dst = src for vectors (a loop: slice assignment is slow to compile; this is
    compiled once and inlined by LLVM)."""
    for a in range(src.shape[0]):
        dst[a] = src[a]


@_jit()
def _copy_head(src, dst, m):
    """dst[:m] = src[:m]."""
    for a in range(m):
        dst[a] = src[a]


@_jit()
def _fill(dst, value):
    for a in range(dst.shape[0]):
        dst[a] = value


@_jit()
def _dot_rows(A, p, B, q):
    """A[p] . B[q] for rows of 2-d arrays (no views: each view costs a reference count)."""
    s = 0.0
    for a in range(A.shape[1]):
        s += A[p, a] * B[q, a]
    return s


@_jit()
def _sum_squares(u, m):
    """||u[:m]||^2."""
    s = 0.0
    for c in range(m):
        s += u[c] * u[c]
    return s


@_jit()
def _dot(u, v):
    """u . v without a temporary (array expressions allocate inside a kernel)."""
    s = 0.0
    for a in range(u.shape[0]):
        s += u[a] * v[a]
    return s


@_jit()
def _correlate(Xi, v, g):
    """g = X_i^T v, four rows of X_i at a time (g is loaded and stored once per four)."""
    n, d = Xi.shape
    _fill(g, 0.0)
    a = 0
    while a + 4 <= n:
        v0, v1, v2, v3 = v[a], v[a + 1], v[a + 2], v[a + 3]
        for j in range(d):
            g[j] += (Xi[a, j] * v0 + Xi[a + 1, j] * v1) + (Xi[a + 2, j] * v2 + Xi[a + 3, j] * v3)
        a += 4
    for a in range(a, n):
        va = v[a]
        for j in range(d):
            g[j] += Xi[a, j] * va


@_jit()
def _cholesky(G, L, m, rel_tol):
    """L = the lower Cholesky factor of the leading m x m block of the symmetric G.
    Returns False (L unfinished) at a pivot not above rel_tol times its diagonal entry:
    G is numerically singular (or not finite). Column by column: the entries of a
    column are independent of each other (row by row, :func:`_cholesky_row`, each row
    is a chain of dependent divisions: a refit ~10% slower)."""
    for c in range(m):
        s = G[c, c]
        for p in range(c):
            s -= L[c, p] * L[c, p]
        if not s > rel_tol * G[c, c]:
            return False
        L[c, c] = np.sqrt(s)
        for a in range(c + 1, m):
            s = G[a, c]
            for p in range(c):
                s -= L[a, p] * L[c, p]
            L[a, c] = s / L[c, c]
    return True


@_jit()
def _cholesky_row(G, L, a, rel_tol):
    """Row a of G's Cholesky factor L, given its rows above: the numbers of
    :func:`_cholesky`, in its order (a refit grown by a column extends the last refit's
    factor by this row alone). Returns False at a pivot not above rel_tol times its
    diagonal entry."""
    for c in range(a):
        s = G[a, c]
        for p in range(c):
            s -= L[a, p] * L[c, p]
        L[a, c] = s / L[c, c]
    s = G[a, a]
    for p in range(a):
        s -= L[a, p] * L[a, p]
    if not s > rel_tol * G[a, a]:
        return False
    L[a, a] = np.sqrt(s)
    return True


@_jit()
def _forward(L, x, m):
    """x[:m] <- L^{-1} x[:m] (L lower triangular)."""
    for a in range(m):
        s = x[a]
        for p in range(a):
            s -= L[a, p] * x[p]
        x[a] = s / L[a, a]


@_jit()
def _backward(L, x, m):
    """x[:m] <- L^{-T} x[:m]."""
    for a in range(m - 1, -1, -1):
        s = x[a]
        for p in range(a + 1, m):
            s -= L[p, a] * x[p]
        x[a] = s / L[a, a]


@_jit(inline="always")
def _solve_factored(G, h, x, L, m, factored):
    """x[:m] = G^{-1} h for the leading m x m block of the symmetric PSD G, by L, its
    Cholesky factor, if ``factored``; else (G numerically singular: a pivot below 1e-12
    of its diagonal entry, regressors collinear to within ~1e-6;
    `_linalg.SINGULAR_PIVOT`, the rule of the numpy backend too) the pseudo-inverse
    solution (:func:`_solve_pinv`)."""
    if not factored:
        _solve_pinv(G, h, x, m)
        return
    _copy_head(h, x, m)
    _forward(L, x, m)
    _backward(L, x, m)


@_jit()
def _solve_pinv(G, h, x, m):
    """The minimum-norm least-squares x[:m] for a singular G, as numpy's hermitian pinv at
    rcond 1e-12 (`_linalg.SINGULAR_PIVOT`): x = sum over the eigenpairs (lambda, v) of G
    with |lambda| > 1e-12 max|lambda| of v (v . h) / lambda, the eigenpairs by cyclic
    Jacobi rotations (plain loops: the kernels link no LAPACK). x = 0 if G or h is not finite: an overflowing user then
    gets no fit instead of stopping everyone's."""
    _fill(x[:m], 0.0)
    for a in range(m):
        if not np.isfinite(h[a]):
            return
        for b in range(m):
            if not np.isfinite(G[a, b]):
                return
    A = np.empty((m, m))  # becomes diag(lambda) = V^T G V
    V = np.zeros((m, m))
    scale = 0.0
    for a in range(m):
        V[a, a] = 1.0
        for b in range(m):
            A[a, b] = G[a, b]
            scale += G[a, b] * G[a, b]
    for _ in range(100):  # sweeps; convergence is quadratic once off-diagonals are small
        off = 0.0
        for p in range(m):
            for q in range(p + 1, m):
                off += A[p, q] * A[p, q]
        if not off > 1e-36 * scale:
            break
        for p in range(m - 1):
            for q in range(p + 1, m):
                if A[p, q] == 0.0:
                    continue
                # The rotation J (c, s) in the (p, q) plane that zeroes A[p, q] of J^T A J.
                theta = (A[q, q] - A[p, p]) / (2.0 * A[p, q])
                if abs(theta) < 1e150:
                    tan = 1.0 / (abs(theta) + np.sqrt(theta * theta + 1.0))
                else:
                    tan = 0.5 / abs(theta)
                if theta < 0.0:
                    tan = -tan
                c = 1.0 / np.sqrt(tan * tan + 1.0)
                s = tan * c
                for a in range(m):  # A <- A J, V <- V J
                    ap, aq = A[a, p], A[a, q]
                    A[a, p], A[a, q] = c * ap - s * aq, s * ap + c * aq
                    vp, vq = V[a, p], V[a, q]
                    V[a, p], V[a, q] = c * vp - s * vq, s * vp + c * vq
                for a in range(m):  # A <- J^T A
                    pa, qa = A[p, a], A[q, a]
                    A[p, a], A[q, a] = c * pa - s * qa, s * pa + c * qa
    cutoff = 0.0
    for c in range(m):
        cutoff = max(cutoff, abs(A[c, c]))
    cutoff *= 1e-12  # the singular rule's threshold: a G singular by it loses an eigenvalue
    for c in range(m):
        if abs(A[c, c]) > cutoff:
            s = 0.0
            for a in range(m):
                s += V[a, c] * h[a]
            s /= A[c, c]
            for a in range(m):
                x[a] += s * V[a, c]


# ---------------------------------------------------------------- reading X_i ahead

@intrinsic
def _prefetch(typingctx, address):
    """A software prefetch, for reading, into L2 (x86 ``prefetcht1``), of the cache line
    at an integer address: a hint, which never faults."""
    def codegen(context, builder, signature, args):
        byte_ptr = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        # The intrinsic's name carries its pointer type: p0 with LLVM's opaque pointers.
        name = "llvm.prefetch." + ("p0" if str(byte_ptr) == "ptr" else "p0i8")
        prefetch = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [byte_ptr, i32, i32, i32]), name)
        read, into_l2, data = ir.Constant(i32, 0), ir.Constant(i32, 2), ir.Constant(i32, 1)
        builder.call(prefetch, [builder.inttoptr(args[0], byte_ptr), read, into_l2, data])
        return context.get_dummy_value()
    return types.void(types.intp), codegen


@_jit()
def _aim_ahead(w, X, users, u, stop):
    """From now on :func:`_prefetch_ahead` prefetches X_i of user users[u] (none if u is
    ``stop``): the next user's, while this user's arithmetic runs."""
    w.ahead_sent = 0
    if u >= stop:
        w.ahead_lines = 0
        return
    Xnext = X[users[u]]
    start = Xnext.ctypes.data
    w.ahead = start - start % 64  # its first cache line
    w.ahead_lines = (start + Xnext.size * Xnext.itemsize - w.ahead + 63) // 64


@_jit()
def _prefetch_ahead(w):
    """Prefetch the next of the :data:`PREFETCH_PARTS` parts of the X_i aimed at
    (nothing once all are sent). Called between the pieces of a user's work, so the next
    user's X_i streams into cache while this one's arithmetic runs, instead of being read
    (:func:`_stream_in`) while no arithmetic runs. Twelve parts, one per four rows inside
    :func:`_lowrank_features` (five at n=20; all twelve there from n=48 on): the whole X_i prefetched at once, or in four parts, gained
    nothing (benchmarks/results/lanes.md); in twelve the steady-state local step at
    t=1e5 took ~10% less time, one thread or two."""
    stop = min(w.ahead_sent + (w.ahead_lines + PREFETCH_PARTS - 1) // PREFETCH_PARTS,
               w.ahead_lines)
    for line in range(w.ahead_sent, stop):
        _prefetch(w.ahead + 64 * line)
    w.ahead_sent = stop


@_jit()
def _stream_in(Xi):
    """Read X_i once in memory order (returns the sum of its entries, which the caller
    must use so the reads are kept), for a user whose X_i was not prefetched: the
    kernels then find X_i in cache. Read this way the hardware prefetcher streams it at
    the memory's speed, where the first touch by :func:`_lowrank_features` (four rows
    at a time) left it waiting on each line (measured at t=1e4, d=100, n=20: X_i read
    first, then A_i, 1.05 passes over X; A_i alone 1.40)."""
    s = 0.0
    for a in range(Xi.shape[0]):
        for j in range(Xi.shape[1]):
            s += Xi[a, j]
    return s


# ---------------------------------------------------------------- A_i = X_i U and its range

@_jit()
def _lowrank_features(Xi, Ut, w):
    """A_i^T = (X_i U)^T (r, n) into w.At from U^T (r, d): dot products along the
    contiguous d, four rows of X_i by two columns of U at a time (8 accumulators share
    each load; 2.4x faster than one dot product at a time at n=20, d=100, r=5); a part
    of the next user's X_i prefetched before each four rows."""
    At = w.At
    n, d = Xi.shape
    r = Ut.shape[0]
    a = 0
    while a + 4 <= n:
        _prefetch_ahead(w)
        c = 0
        while c + 2 <= r:
            s0 = s1 = s2 = s3 = t0 = t1 = t2 = t3 = 0.0
            for j in range(d):
                u, v = Ut[c, j], Ut[c + 1, j]
                x0, x1, x2, x3 = Xi[a, j], Xi[a + 1, j], Xi[a + 2, j], Xi[a + 3, j]
                s0 += x0 * u
                s1 += x1 * u
                s2 += x2 * u
                s3 += x3 * u
                t0 += x0 * v
                t1 += x1 * v
                t2 += x2 * v
                t3 += x3 * v
            At[c, a], At[c, a + 1], At[c, a + 2], At[c, a + 3] = s0, s1, s2, s3
            At[c + 1, a], At[c + 1, a + 1], At[c + 1, a + 2], At[c + 1, a + 3] = t0, t1, t2, t3
            c += 2
        if c < r:
            s0 = s1 = s2 = s3 = 0.0
            for j in range(d):
                u = Ut[c, j]
                s0 += Xi[a, j] * u
                s1 += Xi[a + 1, j] * u
                s2 += Xi[a + 2, j] * u
                s3 += Xi[a + 3, j] * u
            At[c, a], At[c, a + 1], At[c, a + 2], At[c, a + 3] = s0, s1, s2, s3
        a += 4
    for a in range(a, n):
        for c in range(r):
            s = 0.0
            for j in range(d):
                s += Xi[a, j] * Ut[c, j]
            At[c, a] = s


@_jit(inline="always")
def _prepare(w, yi):
    """The parts of the refit's normal equations that do not depend on the support:
    A^T A and A^T y (A_i^T is already in the first rows of Mt)."""
    At, G, h = w.At, w.G, w.h
    n = At.shape[1]
    for p in range(At.shape[0]):
        for q in range(p + 1):
            s = _dot_rows(At, p, At, q)
            G[p, q] = s
            G[q, p] = s
        s = 0.0
        for a in range(n):
            s += At[p, a] * yi[a]
        h[p] = s


@_jit(inline="always")
def _range_basis(w):
    """A basis (B, LA) of range(A_i) with Q = B LA^{-T} orthonormal, so Q^T v =
    LA^{-1} B^T v (:func:`_range_coords`) without forming Q: B = A_i and LA the Cholesky
    factor of the Gram matrix A^T A that :func:`_prepare` left in G. If A^T A is not
    numerically positive definite: B = Q from modified Gram-Schmidt (twice) into Qt and
    LA = I; a vanishing column then gives a zero row, which the projection ignores, but
    a column that is a combination of the others to within rounding gives a direction of
    rounding errors outside range(A_i) (w.full_rank: whether B = A_i). Returns B^T."""
    At, LA, Qt = w.At, w.LA, w.Qt
    r, n = At.shape
    w.full_rank = _cholesky(w.G, LA, r, 1e-12)
    if w.full_rank:
        return At
    for c in range(r):
        _fill(LA[c], 0.0)
    for c in range(r):
        LA[c, c] = 1.0
        _copy(At[c], Qt[c])
        for _ in range(2):
            for p in range(c):
                s = _dot(Qt[p], Qt[c])
                for a in range(n):
                    Qt[c, a] -= s * Qt[p, a]
        norm = np.sqrt(_dot(Qt[c], Qt[c]))
        scale = 1.0 / norm if norm > 1e-300 else 0.0
        for a in range(n):
            Qt[c, a] *= scale
    return Qt


@_jit()
def _range_coords(Bt, LA, v, u):
    """u = Q^T v = LA^{-1} B^T v: ||P v||^2 = ||v||^2 - ||u||^2 for P = I - Q Q^T."""
    r = Bt.shape[0]
    for c in range(r):
        s = 0.0
        for a in range(v.shape[0]):
            s += Bt[c, a] * v[a]
        u[c] = s
    _forward(LA, u, r)


@_jit(inline="always")
def _project_out(Bt, LA, v, out, u):
    """out = P v = v - Q Q^T v = v - B LA^{-T} u with u = Q^T v (overwritten)."""
    r = Bt.shape[0]
    _range_coords(Bt, LA, v, u)
    _backward(LA, u, r)
    _copy(v, out)
    for c in range(r):
        uc = u[c]
        for a in range(v.shape[0]):
            out[a] -= uc * Bt[c, a]


# ---------------------------------------------------------------- supports

@_jit()
def _sort_small(S, k):
    """Insertion sort of S[:k] in place (k is small: cheaper than a call to sort)."""
    for j in range(1, k):
        v = S[j]
        m = j
        while m > 0 and S[m - 1] > v:
            S[m] = S[m - 1]
            m -= 1
        S[m] = v


@_jit()
def _top_k(score, k, S, best):
    """S = sorted indices of the k largest score (first index on ties), in one pass:
    an insertion list of the k best so far (best: their scores, descending)."""
    count = 0
    for j in range(score.shape[0]):
        s = score[j]
        if count < k or s > best[k - 1]:
            m = min(count, k - 1)  # a free slot, or the weakest entry's
            while m > 0 and s > best[m - 1]:
                best[m] = best[m - 1]
                S[m] = S[m - 1]
                m -= 1
            best[m] = s
            S[m] = j
            count = min(count + 1, k)
    _sort_small(S, k)


@_jit()
def _is_top_k(score, S, k):
    """Whether the sorted support S (k) is what :func:`_top_k` would choose: no entry off
    S beats its weakest entry (is greater, or equal with a smaller index; scores
    descending, first index on ties). HTP's fixed-point test: the entries that beat S's
    weakest are counted over all of score, a sum without data-dependent branches, and
    those on S taken off again. A running maximum with branches, whose outcomes the
    branch predictor cannot learn from one user to the next, cost ~0.1 passes over X
    more per steady-state local step at t=1e5 (benchmarks/bench_lanes.py). NaN never
    beats."""
    worst, worst_j = np.inf, -1
    for c in range(k):
        s = score[S[c]]
        if s < worst or (s == worst and S[c] > worst_j):
            worst, worst_j = s, S[c]
    beats = 0
    for j in range(score.shape[0]):
        s = score[j]
        beats += np.intp(s > worst) + np.intp(s == worst) * np.intp(j < worst_j)
    for c in range(k):
        s, j = score[S[c]], S[c]
        beats -= np.intp(s > worst) + np.intp(s == worst) * np.intp(j < worst_j)
    return beats == 0


# ---------------------------------------------------------------- one user's local fit

@_jit()
def _step_cap(g, k, res_sq, slack, floor):
    """An upper bound on HTP's step eta = ||g_T||^2 / ||P X_T g_T||^2 (T: the k largest
    |g|; P projects off range(A_i)) from the refit's residual e (res_sq = ||e||^2) and
    g = X_i^T e alone, without T; and max_j |g_j| (NaN if g is not finite).

    The refit's residual is orthogonal to range(A_i), so P e = e and <P X_T g_T, e> =
    g_T . X_T^T e = ||g_T||^2: by Cauchy-Schwarz eta <= ||e||^2 / ||g_T||^2 <=
    ||e||^2 / lower, where lower sums the squares of the largest |g| in k disjoint blocks
    of the d entries (k distinct entries: at most ||g_T||^2; the bound is ~1.7 eta at
    n=20). :func:`_htp` caps its step there (times 1 + slack). In exact arithmetic, for
    A_i of full rank and a refit solved exactly, the cap never binds; in floating point it
    binds where rounding lifted the computed step above what exact arithmetic allows (a
    residual at rounding level, which is not orthogonal to range(A_i) to working
    precision, or cancellation in ||P X_T g_T||^2), where the fixed-point test is
    decided by rounding anyway. (A review's 837 adversarial inputs: outputs changed only
    where rounding or overflow decided: between exact fits of integer data or at n near
    r + k, residuals below 1e-29 ||y||^2; and at per-user scales near 1e+-150, where
    ||X_T g_T||^2 overflows and the uncapped step was garbage. Whole fits unchanged.)
    The cap is what lets :func:`_surely_fixed_point` bound the step the kernel computes.
    No cap (inf) where ||e||^2, lower or the bound is below ``floor`` (subnormal numbers,
    whose rounding the slack does not cover) or not finite; and :func:`_htp` caps only
    where A_i has full numerical rank (otherwise its projection is off a basis completed
    with directions e need not be orthogonal to)."""
    d = g.shape[0]
    lower, g_max, total = 0.0, 0.0, 0.0
    for c in range(k):
        block_max = 0.0
        for j in range(c * d // k, (c + 1) * d // k):
            x = abs(g[j])
            total += x  # NaN or inf anywhere in g shows in the sum
            block_max = x if x > block_max else block_max
        lower += block_max * block_max
        g_max = block_max if block_max > g_max else g_max
    cap = (1.0 + slack) * res_sq / lower
    if not (res_sq >= floor and lower >= floor and cap >= floor):
        cap = np.inf  # under- or overflow (or NaN): a bound without its precision
    return cap, (g_max if np.isfinite(total) else np.nan)


@_jit()
def _surely_fixed_point(g, coef, S, k, r, cap, g_max, floor):
    """Whether the support S (k) with refit coefficients coef = [w, b_S] is a fixed point
    of HTP for every step up to ``cap`` (:func:`_step_cap`), so certainly for the step
    :func:`_htp` would compute: then the top k of |g| and the line search need not be
    computed to find that out. Off S the scores |b_j + eta g_j| are eta |g_j| <= cap
    g_max; on S at least |b_j| - cap |g_j|. A strict margin, wide enough for the
    rounding of the scores (~1e-16), so there are no ties; b_S at least ``floor`` (no
    subnormal rounding). False if anything is NaN.
    At a steady-state local step at n=20 this settles ~99% of the users."""
    b_min, g_on_S = np.inf, 0.0
    for c in range(k):
        b_min = min(b_min, abs(coef[r + c]))
        g_on_S = max(g_on_S, abs(g[S[c]]))
    return b_min >= floor and (b_min * (1.0 - 1e-9) - cap * g_on_S * (1.0 + 1e-9)
                               > cap * g_max * (1.0 + 1e-9))


@_jit(inline="always")
def _gram_row(Xi, yi, w, p):
    """Row p >= r of the refit's normal equations: column S[p - r] of X_i into Mt[p], its
    products with Mt's rows up to p into G (both triangles) and with y_i into h[p]."""
    Mt, G, h = w.Mt, w.G, w.h
    n = Xi.shape[0]
    j = w.S[p - w.At.shape[0]]
    for a in range(n):
        Mt[p, a] = Xi[a, j]
    q = 0
    while q + 4 <= p + 1:  # four entries at a time
        s0 = s1 = s2 = s3 = 0.0
        for a in range(n):
            x = Mt[p, a]
            s0 += x * Mt[q, a]
            s1 += x * Mt[q + 1, a]
            s2 += x * Mt[q + 2, a]
            s3 += x * Mt[q + 3, a]
        G[p, q], G[p, q + 1], G[p, q + 2], G[p, q + 3] = s0, s1, s2, s3
        q += 4
    for q in range(q, p + 1):
        G[p, q] = _dot_rows(Mt, p, Mt, q)
    for q in range(p):
        G[q, p] = G[p, q]
    s = 0.0
    for a in range(n):
        s += Mt[p, a] * yi[a]
    h[p] = s


@_jit(inline="always")
def _residual(yi, w, m):
    """w.res = y_i - M coef; returns its squared norm."""
    Mt, coef, res = w.Mt, w.coef, w.res
    _copy(yi, res)
    for c in range(m):
        cc = coef[c]
        for a in range(Mt.shape[1]):
            res[a] -= cc * Mt[c, a]
    return _dot(res, res)


@_jit()
def _refit(Xi, yi, w, m_cols, grown):
    """Least squares of y_i on [A_i, X_i[:, S[:m_cols]]] (A^T A, A^T y from
    :func:`_prepare`): coefficients w.coef (r + m_cols), residual vector w.res (n);
    returns the squared residual. ``grown``: right after a refit on S[:m_cols - 1] (a
    greedy step), whose rows of the normal equations and of their Cholesky factor are
    kept and only the new column's are computed: the same numbers as from scratch."""
    r = w.At.shape[0]
    m = r + m_cols
    for p in range(m - 1 if grown else r, m):
        _gram_row(Xi, yi, w, p)
    if grown:
        w.factored = w.factored and _cholesky_row(w.G, w.L, m - 1, 1e-12)
    else:
        w.factored = _cholesky(w.G, w.L, m, 1e-12)
    _solve_factored(w.G, w.h, w.coef, w.L, m, w.factored)
    return _residual(yi, w, m)


@_jit(inline="always")
def _keep_as_best(w):
    """The current refit (w.S, coef, res) becomes HTP's best point."""
    _copy(w.S, w.best_S)
    _copy(w.coef, w.best_coef)
    _copy(w.res, w.best_res)


@_jit(inline="always")
def _htp(Xi, yi, Bt, w, settings):
    """Hard thresholding pursuit from the sorted support w.S (k): leaves the
    lowest-residual point seen in w.best_S, best_coef, best_res; returns its squared
    residual and whether w.best_grad holds X_i^T best_res (it does when HTP stopped at
    that point). The arithmetic of :func:`lowrank_sparse.local._htp` for one user; a
    support that :func:`_surely_fixed_point` certifies skips the top k, line search and
    fixed-point test that would come to the same answer."""
    S, T, coef, res, g, b, score = w.S, w.T, w.coef, w.res, w.grad, w.b, w.score
    top_score, v, u, LA = w.top_score, w.direction, w.coords, w.LA
    n, d = Xi.shape
    r = Bt.shape[0]
    k, floor = settings.sparsity, settings.cap_floor
    best = res_sq = _refit(Xi, yi, w, k, False)
    _keep_as_best(w)
    _prefetch_ahead(w)
    current_is_best = True
    for _ in range(settings.max_iter):
        _correlate(Xi, res, g)
        _prefetch_ahead(w)
        # The bound needs P to project off range(A_i) itself, not off a basis completed
        # with directions of rounding errors.
        cap, g_max = (_step_cap(g, k, res_sq, settings.step_cap_slack, floor)
                      if w.full_rank else (np.inf, np.nan))
        fixed = _surely_fixed_point(g, coef, S, k, r, cap, g_max, floor)
        if not fixed:
            _fill(b, 0.0)
            for c in range(k):
                b[S[c]] = coef[r + c]
            for j in range(d):
                score[j] = abs(g[j])
            _top_k(score, k, T, top_score)
            _prefetch_ahead(w)
            # Line search along the k largest gradient entries (the gradient vanishes on S).
            for a in range(n):
                s = 0.0
                for c in range(k):
                    s += Xi[a, T[c]] * g[T[c]]
                v[a] = s
            _range_coords(Bt, LA, v, u)  # ||P X_T g_T||^2 = ||v||^2 - ||Q^T v||^2
            denom = max(_dot(v, v) - _sum_squares(u, r), 0.0)
            num = 0.0
            for c in range(k):
                num += g[T[c]] * g[T[c]]
            eta = num / (denom if denom > 0 else 1.0)
            eta = cap if eta > cap else eta  # (NaN stays NaN)
            _prefetch_ahead(w)
            for j in range(d):
                score[j] = abs(b[j] + eta * g[j])
            fixed = _is_top_k(score, S, k)
        if fixed:  # a fixed point of HTP
            if current_is_best:
                _copy(g, w.best_grad)
            return best, current_is_best
        _top_k(score, k, S, top_score)
        res_sq = _refit(Xi, yi, w, k, False)
        current_is_best = res_sq < best
        if current_is_best:
            best = res_sq
            _keep_as_best(w)
    return best, False


@_jit(inline="always")
def _greedy(Xi, yi, w, k, first):
    """Orthogonal matching pursuit from the forced column ``first``: w.S (k, sorted)."""
    S, score, colnorm, res, g = w.S, w.score, w.colnorm, w.res, w.grad
    d = Xi.shape[1]
    S[0] = first
    for m in range(1, k + 1):
        _refit(Xi, yi, w, m, m > 1)
        if m == k:
            break
        _correlate(Xi, res, g)
        for j in range(d):
            score[j] = abs(g[j]) / colnorm[j]
        for c in range(m):
            score[S[c]] = -np.inf
        S[m] = np.argmax(score)
    _sort_small(S, k)


@_jit(inline="always")
def _greedy_seeds(Xi, yi, Bt, w, n_seeds):
    """Projected column norms ||P x_ij|| (into w.colnorm) and the ``n_seeds`` columns
    most correlated with the projected response, normalized by them, into w.seeds
    (descending, first index on ties, as a stable argsort)."""
    n, d = Xi.shape
    r = Bt.shape[0]
    u, score, LA, colnorm, BX, g, seeds = (w.coords, w.score, w.LA, w.colnorm, w.BX, w.grad,
                                           w.seeds)
    # ||P x_j||^2 = ||x_j||^2 - ||LA^{-1} B^T x_j||^2: the squared column norms and B^T X_i
    # row by row of X_i (contiguous along d), then LA^{-1} on all columns at once.
    _fill(colnorm, 0.0)
    for c in range(r):
        _fill(BX[c], 0.0)
    for a in range(n):
        for j in range(d):
            x = np.float64(Xi[a, j])  # float32 storage: square in float64
            colnorm[j] += x * x
        for c in range(r):
            b = Bt[c, a]
            for j in range(d):
                BX[c, j] += b * Xi[a, j]
    # Forward substitution row by row, along d in SIMD lanes (column by column, as
    # _forward, each column was a chain of r dependent divisions: ~4 us of a greedy start
    # per user); each entry by _forward's operations in _forward's order.
    for c in range(r):
        row = BX[c]
        for p in range(c):
            l = LA[c, p]
            above = BX[p]
            for j in range(d):
                row[j] -= l * above[j]
        pivot = LA[c, c]
        for j in range(d):
            row[j] /= pivot
    _fill(score, 0.0)
    for c in range(r):  # the squares summed as _sum_squares does, column by column
        row = BX[c]
        for j in range(d):
            score[j] += row[j] * row[j]
    for j in range(d):
        colnorm[j] = np.sqrt(max(colnorm[j] - score[j], 1e-300))
    _project_out(Bt, LA, yi, w.Py, u)
    _correlate(Xi, w.Py, g)
    for j in range(d):
        score[j] = abs(g[j]) / colnorm[j]
    for s in range(n_seeds):
        seeds[s] = np.argmax(score)
        score[seeds[s]] = -np.inf


@_jit(inline="always")
def _try_start(Xi, yi, Bt, w, settings, out, i, have, have_grad):
    """HTP from the support in w.S; its best point becomes user i's fit in ``out`` if
    there is none yet (not ``have``) or it has a smaller residual (the earlier start
    wins ties). Returns (have, have_grad): whether out.corr_residual[i] is up to date."""
    res_sq, with_grad = _htp(Xi, yi, Bt, w, settings)
    if have and not res_sq < out.residual[i]:
        return True, have_grad
    _copy(w.best_S, out.support[i])
    _copy(w.best_coef, out.coef[i])
    _copy(w.best_res, out.vectors[i])
    out.residual[i] = res_sq
    if with_grad:
        _copy(w.best_grad, out.corr_residual[i])
    return True, with_grad


@_jit(entry=True)
def _fit_tasks(X, y, Ut, users, warm, settings, out, first, stride):
    """The local fits of the users of tasks first, first + stride, ... (tasks of
    ``USERS_PER_TASK`` consecutive entries of ``users``), user i's into row i of ``out``
    (:class:`LocalOutputs`): HTP from the warm support warm[i] (if settings.use_warm)
    and from the greedy starts; the best fit (lowest residual, earliest on ties) wins,
    as in :func:`lowrank_sparse.local._solve_block`. Also, while X_i is in cache,
    A_i w_i and X_i^T e_i (the user's part of the residual of the U step's normal
    equations).

    The user's fit is written out here rather than as a function inlined into the
    loop: numba inlines by copying the callee's IR, which for this body alone was ~3 s
    of the cold compile. Returns the sum of what :func:`_stream_in` read (of no use:
    returning it keeps those reads)."""
    n, d = X.shape[1:]
    k, r = settings.sparsity, Ut.shape[0]
    w = _work(n, d, r, k, settings.n_starts)
    streamed = 0.0
    for task in range(first, _n_tasks(users.shape[0], USERS_PER_TASK), stride):
        start, stop = task * USERS_PER_TASK, min((task + 1) * USERS_PER_TASK, users.shape[0])
        for u in range(start, stop):
            i = users[u]
            Xi, yi = X[i], y[i]
            if u == start:  # the others were prefetched during the user before
                streamed += _stream_in(Xi)
            _aim_ahead(w, X, users, u + 1, stop)
            _lowrank_features(Xi, Ut, w)
            _prepare(w, yi)
            _prefetch_ahead(w)
            have_grad = False  # out.corr_residual[i] holds X_i^T e_i
            if k == 0:
                out.residual[i] = _refit(Xi, yi, w, k, False)
                _copy(w.coef, out.coef[i])
                _copy(w.res, out.vectors[i])
            else:
                Bt = _range_basis(w)
                _prefetch_ahead(w)
                have = settings.keep_existing
                n_greedy = min(settings.n_starts, d)
                if n_greedy > 0:  # (the warm start reads nothing _greedy_seeds writes)
                    _greedy_seeds(Xi, yi, Bt, w, n_greedy)
                # The starts in order, the warm one first (s = -1): one call site of
                # the HTP code, which is compiled once per site.
                for s in range(-1 if settings.use_warm else 0, n_greedy):
                    if s < 0:
                        _copy(warm[i], w.S)
                        _sort_small(w.S, k)
                    else:
                        _greedy(Xi, yi, w, k, w.seeds[s])
                    have, have_grad = _try_start(Xi, yi, Bt, w, settings, out, i, have,
                                                 have_grad)
            for a in range(n):
                s = 0.0
                for c in range(r):
                    s += w.At[c, a] * out.coef[i, c]
                out.lowrank[i, a] = s
            if not have_grad:
                _correlate(Xi, out.vectors[i], out.corr_residual[i])
            while w.ahead_sent < w.ahead_lines:  # what is left of the next X_i
                _prefetch_ahead(w)
    return streamed


def fit_users(X, y, Ut, users, warm, settings, out):
    """Local step for the users ``users`` (indices into X's rows), on numba's number of
    threads: :func:`_fit_tasks`.

    X (t, n, d), y (t, n), U^T (r, d), warm (t, k) supports (read if settings.use_warm),
    settings :class:`LocalSettings`, out :class:`LocalOutputs` (written at the users'
    rows)."""
    _on_threads(lambda first, stride: _fit_tasks(X, y, Ut, users, warm, settings, out,
                                                 first, stride),
                _n_tasks(users.shape[0], USERS_PER_TASK), users.shape[0] * X[0].size)


# ---------------------------------------------------------------- the U step's operator

def normal_operator(X, Vt, W, omega):
    """Per block of ``BLOCK`` users, sum_i omega_i w_i (X_i^T X_i V w_i)^T: (blocks, r,
    d), from V^T (r, d); X_i is read from memory once per user (X_i V w_i, then X_i^T of
    it while X_i is in cache). The caller sums the blocks in order."""
    n_blocks = _n_tasks(X.shape[0], BLOCK)
    out = np.zeros((n_blocks, W.shape[1], X.shape[2]))
    _on_threads(lambda first, stride: _normal_operator_blocks(X, Vt, W, omega, out, first,
                                                              stride), n_blocks, X.size)
    return out


@_jit(entry=True)
def _normal_operator_blocks(X, Vt, W, omega, out, first, stride):
    """out[blk] += sum_{i in block blk} omega_i w_i (X_i^T X_i V w_i)^T (r, d) for the
    blocks first, first + stride, ..."""
    t, n, d = X.shape
    r = W.shape[1]
    v = np.empty(d)
    q = np.empty(n)
    g = np.empty(d)
    for blk in range(first, out.shape[0], stride):
        acc = out[blk]
        for i in range(blk * BLOCK, min((blk + 1) * BLOCK, t)):
            if omega[i] == 0.0:
                continue  # contributes nothing: X_i need not be read (trimmed users)
            _fill(v, 0.0)
            for c in range(r):
                wc = W[i, c]
                for j in range(d):
                    v[j] += wc * Vt[c, j]
            for a in range(n):
                s = 0.0
                for j in range(d):
                    s += X[i, a, j] * v[j]
                q[a] = omega[i] * s
            _correlate(X[i], q, g)
            for c in range(r):
                wc = W[i, c]
                for j in range(d):
                    acc[c, j] += g[j] * wc


# ---------------------------------------------------------------- one pass over X

def read_pass(X):
    """Read every entry of X (t, n, d, in the kernels' layout) once, in memory order, on
    numba's threads, which share the users as the kernels do: one pass over X at the
    memory's speed, the floor of any outer iteration (:func:`lowrank_sparse.timing.
    one_pass_seconds`). Returns the sum of X (so the reads are kept)."""
    sums = np.zeros(_n_tasks(X.shape[0], BLOCK))
    _on_threads(lambda first, stride: _read_blocks(X, sums, first, stride), sums.shape[0],
                X.size)
    return sums.sum()


@_jit(entry=True)
def _read_blocks(X, sums, first, stride):
    """sums[blk] = the sum of X_i over the users of block blk, for the blocks first,
    first + stride, ..."""
    for blk in range(first, sums.shape[0], stride):
        s = 0.0
        for i in range(blk * BLOCK, min((blk + 1) * BLOCK, X.shape[0])):
            s += _stream_in(X[i])
        sums[blk] += s  # (not =: a block read twice would show in the sum)


# ---------------------------------------------------------------- threads

@_jit(inline="always")
def _n_tasks(n_items, per_task):
    return (n_items + per_task - 1) // per_task


def _on_threads(kernel, n_tasks, entries):
    """kernel(first, stride) on each of numba's threads (``numba.get_num_threads()``:
    NUMBA_NUM_THREADS or ``numba.set_num_threads``), thread p taking the tasks p, p + P,
    ... (the tasks are small and interleaved, so the threads' shares even out); on the
    calling thread alone if the kernel reads fewer than
    :data:`~lowrank_sparse._linalg.PARALLEL_MIN_ENTRIES` entries of X. The kernels
    release the GIL. Plain threads rather than a numba ``prange`` loop: a parallel
    kernel compiles the whole call tree below it again (about as long as everything
    else together)."""
    n_threads = min(numba.get_num_threads(), n_tasks) if worth_threads(entries) else 1
    if n_threads <= 1:
        kernel(0, 1)
        return
    futures = [_thread_pool(n_threads - 1).submit(kernel, p, n_threads)
               for p in range(1, n_threads)]
    try:
        kernel(0, n_threads)  # the calling thread takes the first share
    finally:
        for future in futures:
            future.result()


@functools.cache
def _thread_pool(n_threads):
    return ThreadPoolExecutor(n_threads, thread_name_prefix="lowrank_sparse")

