"""The Gram-matrix solvers against independent float64 solutions (scipy).

Each solver gets the float32 Gram matrix `G = J J^T` of `K` gradients in
`R^D`. The references solve the same problems in float64 by other methods:
NNLS (Lawson-Hanson, finite and exact) for MGDA and the dual-cone
projections, SLSQP polished by a root solve on its support for CAGrad, and
a root solve of the stationarity equations for Nash-MTL and FairGrad.

The combined update `d = J^T a` is compared relative to `max_i |g_i|`
(through `G`: `|J^T e|^2 = e^T G e`), the coefficients relative to their
largest entry. Rounding `G` to float32 alone moves the exact answer of some
instances by more than the tolerance (nearly dependent gradients); an
instance is only checked where its float64 reference moves by less than a
tenth of the tolerance when `G` is perturbed by two float32 roundings.
"""

import functools

import numpy as np
import pytest
from keras import ops
from scipy import optimize

from joint_keras import linalg as solvers
from tests.conftest import BACKEND
from tests.reference import float64_enabled

TOLERANCE = 1e-5
SIZES = [(k, d) for k in (2, 3, 4, 8) for d in (5, 50, 1000)]
FAMILIES = (
    "random",
    "conflicting",
    "aligned",
    "nearly_opposed",
    "collinear",
    "zero_row",
    "norms_1e4",
    "rank_deficient",
    # Singular Gram matrices: the weights are not unique, the update is.
    "rank_one",
    "duplicated",
    "opposite",
    "zero_rows",
    "wide",
)
CAGRAD_C = 0.4


# ----------------------------------------------------------------------------
# Independent float64 references.


def ref_min_norm(jac):
    """MGDA by NNLS: `min_{u >= 0} |J^T u|^2 + (1 - sum u)^2`; at its
    solution `G u - (1 - sum u) 1 >= 0` with equality on the support, so
    `u / sum(u)` satisfies the simplex problem's KKT conditions exactly."""
    k = jac.shape[0]
    a = np.vstack([jac.T, np.ones((1, k))])
    b = np.zeros(a.shape[0])
    b[-1] = 1.0
    u, _ = optimize.nnls(a, b, maxiter=100 * k)
    return u / u.sum()


def ref_dual_cone(jac, lower):
    """`min_{v >= u} |J^T v|^2` as NNLS in `x = v - u >= 0`."""
    rows = []
    for u in np.atleast_2d(lower):
        x, _ = optimize.nnls(jac.T, -jac.T @ u, maxiter=100 * len(u))
        rows.append(u + x)
    return np.array(rows)


def ref_cagrad(gram, c):
    """CAGrad's coefficients `a` by SLSQP, polished on its support by a
    root solve of the stationarity conditions."""
    k = len(gram)
    b = gram.mean(axis=1)
    radius = c * np.sqrt(max(b.mean(), 0.0))

    def objective(w):
        return w @ b + radius * np.sqrt(max(w @ gram @ w, 1e-300))

    def gradient(w):
        return b + radius * (gram @ w) / np.sqrt(max(w @ gram @ w, 1e-300))

    best = None
    vertex = np.eye(k)[np.argmin([objective(e) for e in np.eye(k)])]
    for start in (np.full(k, 1.0 / k), vertex):
        result = optimize.minimize(
            objective,
            start,
            jac=gradient,
            method="SLSQP",
            bounds=[(0.0, 1.0)] * k,
            constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0}],
            options={"ftol": 1e-16, "maxiter": 1000},
        )
        if best is None or result.fun < best.fun:
            best = result
    w = np.clip(best.x, 0.0, None)
    w /= w.sum()
    support = np.flatnonzero(w > 1e-7)

    def stationarity(z):
        full = np.zeros(k)
        full[support] = z[:-1]
        norm = np.sqrt(full @ gram @ full)
        grad = b + radius * (gram @ full) / norm
        return np.append(grad[support] - z[-1], full.sum() - 1.0)

    if w @ gram @ w > 1e-12 * np.trace(gram):
        polished = optimize.root(
            stationarity, np.append(w[support], w @ gradient(w)), tol=1e-15
        )
        if polished.success and np.all(polished.x[:-1] >= 0):
            w = np.zeros(k)
            w[support] = polished.x[:-1]
    norm = np.sqrt(max(w @ gram @ w, 0.0))
    at_kink = norm <= 1e-6 * np.sqrt(np.diag(gram).max())
    lam = 0.0 if at_kink else radius / norm
    return (1.0 / k + lam * w) / (1.0 + c**2)


def ref_fair(gram, alpha):
    """`w > 0` with `G w = w^(-1/alpha)`: a root of the equations in
    `log w`, or None when there is none (checked residual)."""
    p = 1.0 / alpha

    def equations(y):
        with np.errstate(over="ignore", invalid="ignore"):
            return (gram @ np.exp(y)) * np.exp(y) ** p - 1.0

    start = -np.log(np.maximum(np.diag(gram), 1e-300)) / (1.0 + p)
    best = None
    for method in ("hybr", "lm"):
        result = optimize.root(equations, start, method=method, tol=1e-15)
        residual = np.max(np.abs(equations(result.x)))
        if np.all(np.isfinite(result.x)) and (best is None or residual < best[1]):
            best = (result.x, residual)
    return np.exp(best[0]) if best[1] < 1e-9 else None


# ----------------------------------------------------------------------------
# The solvers under test, by name, as functions of a float32 Gram matrix.


def _upgrad_rows(gram):
    eye = ops.eye(gram.shape[0], dtype=gram.dtype)
    return solvers.project_to_dual_cone(gram, eye)


def _upgrad(gram):
    return ops.mean(_upgrad_rows(gram), axis=0)


def _dual_proj(gram):
    k = gram.shape[0]
    mean = ops.full((1, k), 1.0 / k, dtype=gram.dtype)
    return solvers.project_to_dual_cone(gram, mean)[0]


RAW = {
    "mgda": solvers.min_norm_weights,
    "upgrad": _upgrad,
    "upgrad_rows": _upgrad_rows,
    "dualproj": _dual_proj,
    "cagrad": lambda gram: solvers.cagrad_coefficients(gram, CAGRAD_C),
    "nash_mtl": solvers.nash_mtl_weights,
    "fairgrad_0.5": lambda gram: solvers.fairgrad_weights(gram, 0.5),
    "fairgrad_2": lambda gram: solvers.fairgrad_weights(gram, 2.0),
}


def compiled(fn):
    """`fn` traced as in a compiled training step (eager on torch)."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=False, autograph=False)
    if BACKEND == "jax":
        import jax

        return jax.jit(fn)
    return fn


# Eager JAX compiles every operation for every new shape: the bulk of the
# tests runs jitted there (eager everywhere else).
FAST = {name: compiled(fn) if BACKEND == "jax" else fn for name, fn in RAW.items()}


def solve(name, gram):
    """Solver `name` on the float64 Gram matrix `gram` rounded to float32."""
    return to_numpy(FAST[name](gram32(gram)))


# ----------------------------------------------------------------------------
# Matrices.


def jacobian(family, k, d, seed):
    rng = np.random.default_rng(seed)
    jac = rng.normal(size=(k, d))
    if family == "conflicting":  # alternately along +c and -c, plus noise
        common = rng.normal(size=d)
        signs = np.where(np.arange(k) % 2 == 0, 1.0, -1.0)[:, None]
        jac = 0.5 * jac + signs * common
    elif family == "aligned":
        jac = rng.normal(size=d) + 0.3 * jac
    elif family == "nearly_opposed":  # cosine about -0.995
        jac[1] = -jac[0] + 0.1 * rng.normal(size=d)
    elif family == "collinear":  # rows 0 to 2 on one line, mixed signs
        jac[1] = -2.0 * jac[0]
        jac[2 % k] = 0.5 * jac[0] if k > 2 else jac[1]
    elif family == "zero_row":
        jac[-1] = 0.0
    elif family == "norms_1e4":
        jac *= np.logspace(0, -4, k)[:, None]
    elif family == "rank_deficient":  # rank at most 5
        jac = rng.normal(size=(k, 5)) @ rng.normal(size=(5, d)) / np.sqrt(5)
    elif family == "rank_one":  # g_i = c_i v, c of both signs: rank-1 G
        signs = np.where(np.arange(k) % 2 == 0, 1.0, -1.0)
        c = rng.permutation(signs * 10.0 ** rng.uniform(-2.5, 0.5, size=k))
        jac = c[:, None] * rng.normal(size=d)
    elif family == "duplicated":  # every gradient twice (K = 3: one of them)
        jac = jac[np.arange(k) % ((k + 1) // 2)]
    elif family == "opposite":  # pairs g, -g
        jac = (
            jac[np.arange(k) // 2] * np.where(np.arange(k) % 2 == 0, 1.0, -1.0)[:, None]
        )
    elif family == "zero_rows":  # every other gradient 0
        jac[1::2] = 0.0
    elif family == "wide":  # rank 3: K > D in effect (K = 4, 8)
        jac = rng.normal(size=(k, 3)) @ rng.normal(size=(3, d))
    return jac


def instances(family):
    for index, (k, d) in enumerate(SIZES):
        seed = 1000 * FAMILIES.index(family) + index
        yield k, d, jacobian(family, k, d, seed)


def factor(gram):
    """A `J` with `J J^T = gram` (negative eigenvalues clipped)."""
    values, vectors = np.linalg.eigh(gram)
    jac = vectors * np.sqrt(np.clip(values, 0.0, None))
    # A zero gradient stays exactly 0: NNLS would use its rounding-size
    # factor rows with huge coefficients.
    jac[np.diag(gram) == 0.0] = 0.0
    return jac


def perturbed(gram, seed):
    """`gram` with each entry moved by up to two float32 roundings."""
    rng = np.random.default_rng(seed)
    noise = rng.uniform(-1.0, 1.0, size=gram.shape) * 2.0**-23 * 2.0
    noise = (noise + noise.T) / 2.0
    return gram * (1.0 + noise)


def update_error(gram, a, b):
    """`|J^T (a - b)| / max_i |g_i|`, from the Gram matrix."""
    e = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return np.sqrt(max(e @ gram @ e, 0.0)) / np.sqrt(np.diag(gram).max())


def coefficient_error(a, b):
    return np.max(np.abs(np.asarray(a) - b)) / np.max(np.abs(b))


def sensitivity(gram, reference, error):
    """`reference(gram)`, and how far float32-sized perturbations of `gram`
    move it (infinite where a perturbed problem has no solution)."""
    base = reference(gram)
    moves = [np.inf]
    if base is not None:
        moved = [reference(perturbed(gram, seed)) for seed in (1, 2)]
        moves = [np.inf if m is None else error(m, base) for m in moved]
    return base, max(moves)


def to_numpy(x):
    return np.asarray(ops.convert_to_numpy(x), np.float64)


def gram32(gram):
    return ops.convert_to_tensor(gram.astype("float32"))


def check_family(family, name, reference, compare_coefficients=True):
    """Compares solver `name` on the float32 Gram matrix with `reference`
    on the float64 one, on every instance of `family` that float32 can
    resolve; returns how many were checked."""
    checked = 0
    for k, d, jac in instances(family):
        gram = jac @ jac.T
        result = solve(name, gram)

        def on_update(a, b, gram=gram):
            return update_error(gram, a, b)

        expected, spread = sensitivity(gram, reference, on_update)
        if spread <= TOLERANCE / 10:
            error = on_update(result, expected)
            assert error <= TOLERANCE, (name, family, k, d, error)
            checked += 1
        if compare_coefficients:
            expected, spread = sensitivity(gram, reference, coefficient_error)
            if spread <= TOLERANCE / 10:
                error = coefficient_error(result, expected)
                assert error <= TOLERANCE, (name, family, k, d, "weights", error)
    return checked


# ----------------------------------------------------------------------------
# Families against the references (one test per solver: each test costs a
# Keras session reset).

# Exactly singular Gram matrices (also in the property tests).
SINGULAR_FAMILIES = ("rank_one", "duplicated", "opposite", "zero_rows", "wide")
# Non-unique weights.
SINGULAR = ("collinear", "rank_deficient", "zero_row", *SINGULAR_FAMILIES)
# The updates' references, as functions of a float64 Gram matrix.
UPDATE_REFERENCES = {
    "mgda": lambda gram: ref_min_norm(factor(gram)),
    "upgrad": lambda gram: ref_dual_cone(factor(gram), np.eye(len(gram))).mean(axis=0),
    "dualproj": lambda gram: ref_dual_cone(
        factor(gram), np.full((1, len(gram)), 1.0 / len(gram))
    )[0],
    "cagrad": lambda gram: ref_cagrad(gram, CAGRAD_C),
}


def resolvable(gram, names=("mgda", "upgrad", "dualproj")):
    """Whether float32 resolves the updates `names` (see `check_family`)."""

    def error(a, b):
        return update_error(gram, a, b)

    spreads = [sensitivity(gram, UPDATE_REFERENCES[n], error)[1] for n in names]
    return max(spreads) <= TOLERANCE / 10


def check_families(name, reference, families=FAMILIES):
    for family in families:
        checked = check_family(family, name, reference, family not in SINGULAR)
        # Nearly dependent instances are partly skipped as float32-
        # unresolvable; a family must never be skipped wholesale.
        assert checked >= len(SIZES) // 3, (name, family, checked)


def test_min_norm_weights_match_nnls():
    check_families("mgda", UPDATE_REFERENCES["mgda"])


def test_upgrad_matches_nnls():
    check_families("upgrad", UPDATE_REFERENCES["upgrad"])


def test_dual_proj_matches_nnls():
    check_families("dualproj", UPDATE_REFERENCES["dualproj"])


def test_cagrad_matches_slsqp():
    check_families("cagrad", UPDATE_REFERENCES["cagrad"])


def test_fairgrad_and_nash_mtl_match_root_solve():
    # The families with a solution (gradients not Pareto-stationary).
    families = ("random", "conflicting", "aligned", "norms_1e4", "rank_deficient")
    for name, alpha in (("nash_mtl", 1.0), ("fairgrad_0.5", 0.5), ("fairgrad_2", 2.0)):

        def reference(gram, alpha=alpha):
            return ref_fair(gram, alpha)

        for family in families:
            checked = check_family(family, name, reference)
            assert checked >= 2, (name, family, checked)


# ----------------------------------------------------------------------------
# Exact cases.


def test_cagrad_reproduces_the_published_example():
    jac = np.array([[1.0, 0.1], [-2.0, 0.5], [1.0, -0.5]])
    gram = jac @ jac.T
    expected = jac.T @ ref_cagrad(gram, 0.4)
    np.testing.assert_allclose(expected, [0.006395, 0.019185], atol=5e-7)
    scale = np.linalg.norm(jac, axis=1).max()
    assert np.max(np.abs(jac.T @ solve("cagrad", gram) - expected)) <= TOLERANCE * scale


def test_upgrad_on_an_ill_conditioned_gram_matrix():
    jac = np.array([[-0.1, -2.0, 0.1], [2.0, -2.0, -0.1], [0.1, 3.0, 0.1]])
    gram = jac @ jac.T
    assert np.linalg.eigvalsh(gram)[0] / np.trace(gram) == pytest.approx(9e-4, rel=0.05)
    expected = jac.T @ ref_dual_cone(jac, np.eye(3)).mean(axis=0)
    np.testing.assert_allclose(expected, [0.6678, -0.0246, 0.2680], atol=5e-5)
    scale = np.linalg.norm(jac, axis=1).max()
    assert np.max(np.abs(jac.T @ solve("upgrad", gram) - expected)) <= TOLERANCE * scale


def test_pareto_stationary_gradients_give_a_zero_update():
    # 8 gradients spanning R^5 with sum_i c_i g_i = 0, every c_i > 0.
    rng = np.random.default_rng(7)
    jac = rng.normal(size=(8, 5))
    jac[7] = -(rng.uniform(0.5, 1.5, size=7) @ jac[:7])
    gram = jac @ jac.T
    scale = np.linalg.norm(jac, axis=1).max()
    w = solve("mgda", gram)
    assert np.linalg.norm(jac.T @ w) <= 1e-6 * scale
    assert np.all(w >= 0) and w.sum() == pytest.approx(1.0, abs=1e-6)
    v = solve("upgrad_rows", gram)
    assert np.all(v >= np.eye(8))
    assert np.linalg.norm(jac.T @ v.mean(axis=0)) <= 1e-6 * scale


# ----------------------------------------------------------------------------
# Properties.


def property_jacobians(singular=False):
    """The property tests' instances; with `singular`, also those of the
    singular families that float32 resolves (a few need coefficients so
    large that rounding `G` alone moves their updates beyond the bar)."""
    for family in ("random", "conflicting", "rank_deficient", "norms_1e4"):
        yield from ((family, jac) for _, _, jac in instances(family))
    if singular:
        yield from _resolvable_singular_jacobians()


@functools.cache
def _resolvable_singular_jacobians():
    cases = []
    for family in SINGULAR_FAMILIES:
        jacs = [jac for _, _, jac in instances(family) if resolvable(jac @ jac.T)]
        assert len(jacs) >= len(SIZES) // 2, (family, len(jacs))
        cases.extend((family, jac) for jac in jacs)
    return tuple(cases)


def test_updates_conflict_with_no_gradient():
    for family, jac in property_jacobians(singular=True):
        gram = jac @ jac.T
        scale = np.linalg.norm(jac, axis=1).max()
        for name in ("mgda", "upgrad", "dualproj"):
            products = jac @ (jac.T @ solve(name, gram))
            assert products.min() >= -1e-6 * scale**2, (name, family, products.min())


def well_conditioned(gram):
    return np.linalg.cond(gram) < 1e3  # unique, float32-resolvable weights


def test_permuting_the_tasks_permutes_the_weights():
    rng = np.random.default_rng(3)
    for family, jac in property_jacobians(singular=True):
        order = rng.permutation(len(jac))
        gram, permuted = jac @ jac.T, jac[order] @ jac[order].T
        names = ["mgda", "upgrad", "dualproj", "cagrad"]
        if ref_fair(gram, 1.0) is not None:  # not Pareto-stationary
            names.append("nash_mtl")
        for name in names:
            a, b = solve(name, gram), solve(name, permuted)
            assert update_error(permuted, a[order], b) <= TOLERANCE, (name, family)
            if well_conditioned(gram):
                assert coefficient_error(b, a[order]) <= TOLERANCE, (name, family)


def test_scaling_the_gradients():
    # J -> s J: MGDA's weights and UPGrad's v do not change (the update
    # s J^T v is linear in J).
    for family, jac in property_jacobians():
        gram = jac @ jac.T
        for name in ("mgda", "upgrad"):
            a = solve(name, gram)
            for s in (1e-3, 1e3):
                scaled = solve(name, s**2 * gram)
                assert update_error(gram, a, scaled) <= TOLERANCE, (name, family, s)
                if well_conditioned(gram):
                    assert coefficient_error(scaled, a) <= TOLERANCE, (name, family)


def test_min_norm_point_is_as_short_as_the_nnls_optimum():
    # |J^T w| is the minimum over the simplex, which NNLS finds exactly.
    for family, jac in property_jacobians(singular=True):
        gram = jac @ jac.T
        scale = np.linalg.norm(jac, axis=1).max()
        shortest = np.linalg.norm(jac.T @ ref_min_norm(jac))
        excess = np.linalg.norm(jac.T @ solve("mgda", gram)) - shortest
        assert abs(excess) <= TOLERANCE * scale, (family, len(jac), excess / scale)


def test_min_norm_weights_satisfy_the_kkt_conditions():
    for family, jac in property_jacobians(singular=True):
        gram = jac @ jac.T
        w = solve("mgda", gram)
        scale = np.diag(gram).max()
        gw = gram @ w
        assert np.all(w >= 0) and w.sum() == pytest.approx(1.0, abs=1e-6)
        assert gw.min() >= w @ gw - 1e-6 * scale, family
        support = w > 1e-4
        np.testing.assert_allclose(gw[support], w @ gw, atol=1e-5 * scale)


def test_nash_mtl_solves_its_equation_and_scales():
    for _, jac in property_jacobians():
        gram = jac @ jac.T
        if ref_fair(gram, 1.0) is None:
            continue
        alpha = solve("nash_mtl", gram)
        assert np.all(alpha > 0)
        np.testing.assert_allclose(alpha * (gram @ alpha), 1.0, rtol=1e-3)
        scaled = solve("nash_mtl", 4.0 * gram)
        np.testing.assert_allclose(scaled, alpha / 2.0, rtol=1e-4)


def test_normalize_gram():
    jac = np.random.default_rng(0).normal(size=(3, 4))
    gram = gram32(jac @ jac.T)
    normalized = to_numpy(solvers.normalize_gram(gram))
    np.testing.assert_allclose(np.trace(normalized), 1.0, rtol=1e-6)
    regularized = to_numpy(solvers.normalize_gram(gram, reg_eps=1e-4))
    np.testing.assert_allclose(regularized - normalized, 1e-4 * np.eye(3), atol=1e-7)
    zero = to_numpy(solvers.normalize_gram(gram32(np.zeros((3, 3))), norm_eps=1e-8))
    np.testing.assert_array_equal(zero, 0.0)


# ----------------------------------------------------------------------------
# Compiled, large K, edge cases.


def test_compiled_solvers_match_eager():
    jac = jacobian("conflicting", 4, 50, seed=11)
    gram = gram32(jac @ jac.T)
    for name, fn in RAW.items():
        if name == "upgrad_rows":
            continue
        eager, traced = to_numpy(fn(gram)), to_numpy(compiled(fn)(gram))
        np.testing.assert_allclose(traced, eager, rtol=1e-5, atol=1e-6, err_msg=name)


def test_the_active_set_fallback_beyond_the_enumeration_limit():
    k = solvers.MAX_ENUMERATED_TASKS + 2
    jac = jacobian("conflicting", k, 50, seed=5)
    gram = jac @ jac.T
    expected = {
        "mgda": ref_min_norm(jac),
        "upgrad": ref_dual_cone(jac, np.eye(k)).mean(axis=0),
        "cagrad": ref_cagrad(gram, CAGRAD_C),
    }
    for name, reference in expected.items():
        error = update_error(gram, solve(name, gram), reference)
        assert error <= TOLERANCE, (name, error)


@pytest.mark.heavy
def test_the_active_set_fallback_on_singular_gram_matrices():
    # K = 12 gradients of rank 2, of rank 1 (both signs), duplicated,
    # opposite, and every other one 0.
    k = solvers.MAX_ENUMERATED_TASKS + 2
    cases = {}
    for seed in (2, 19):
        rng = np.random.default_rng(seed)
        cases["rank_two", seed] = rng.normal(size=(k, 2)) @ rng.normal(size=(2, 50))
        for family in SINGULAR_FAMILIES[:-1]:
            cases[family, seed] = jacobian(family, k, 50, seed=seed)
    references = {
        name: UPDATE_REFERENCES[name] for name in ("mgda", "dualproj", "cagrad")
    }
    references["upgrad_rows"] = lambda gram: ref_dual_cone(factor(gram), np.eye(k))
    for family, jac in cases.items():
        gram = jac @ jac.T
        checked = 0
        for name, reference in references.items():
            result = solve(name, gram)

            def error(a, b, gram=gram):
                rows = np.atleast_2d(a) - np.atleast_2d(b)
                return max(update_error(gram, row, 0.0 * row) for row in rows)

            expected, spread = sensitivity(gram, reference, error)
            if spread <= TOLERANCE / 10:
                assert error(result, expected) <= TOLERANCE, (family, name)
                checked += 1
        # Six exactly opposite pairs leave UPGrad and DualProj float32-
        # unresolvable (the float64 test checks them).
        assert checked >= 2, (family, checked)


def test_compiled_solvers_on_singular_gram_matrices():
    for family in SINGULAR_FAMILIES:
        jac = jacobian(family, 8, 50, seed=17)
        gram = jac @ jac.T
        for name in ("mgda", "upgrad", "dualproj", "cagrad"):
            fn = RAW[name]
            eager, traced = (
                to_numpy(fn(gram32(gram))),
                to_numpy(compiled(fn)(gram32(gram))),
            )
            assert update_error(gram, traced, eager) <= TOLERANCE, (family, name)


@pytest.mark.heavy
def test_singular_gram_matrices_in_float64():
    # Without float32's rounding every instance is resolved: the exact
    # supports must be found (and the K = 12 active-set methods' answers).
    k = solvers.MAX_ENUMERATED_TASKS + 2
    cases = [(f, jac) for f in SINGULAR_FAMILIES for _, _, jac in instances(f)]
    cases += [(f, jacobian(f, k, 50, seed=14)) for f in SINGULAR_FAMILIES]
    references = {
        "mgda": lambda jac: ref_min_norm(jac),
        "upgrad_rows": lambda jac: ref_dual_cone(jac, np.eye(len(jac))),
        "dualproj": lambda jac: ref_dual_cone(
            jac, np.full((1, len(jac)), 1 / len(jac))
        ),
        "cagrad": lambda jac: ref_cagrad(jac @ jac.T, CAGRAD_C),
    }
    with float64_enabled():
        for family, jac in cases:
            gram = jac @ jac.T
            for name, reference in references.items():
                result = np.atleast_2d(
                    to_numpy(FAST[name](ops.convert_to_tensor(gram)))
                )
                expected = np.atleast_2d(reference(jac))
                for a, b in zip(result, expected):
                    error = update_error(gram, a, b)
                    assert error <= TOLERANCE, (family, len(jac), name, error)


def test_degenerate_inputs_give_finite_answers():
    for gram in (np.zeros((4, 4)), np.ones((4, 4)), np.diag([1.0, 0.0, 1e-30, 1.0])):
        for name in ("mgda", "upgrad", "dualproj", "cagrad"):
            assert np.all(np.isfinite(solve(name, gram))), (name, gram)


def test_single_task():
    gram = np.array([[4.0]])
    np.testing.assert_allclose(solve("mgda", gram), [1.0])
    np.testing.assert_allclose(solve("upgrad", gram), [1.0])
    np.testing.assert_allclose(solve("nash_mtl", gram), [0.5], rtol=1e-6)
    # (1/K + c |g| / |g|) / (1 + c^2)
    expected = (1.0 + CAGRAD_C) / (1.0 + CAGRAD_C**2)
    np.testing.assert_allclose(solve("cagrad", gram), [expected], rtol=1e-6)
