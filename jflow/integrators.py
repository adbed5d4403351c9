r"""ODE and SDE solvers as one ``lax.scan`` over an arbitrary 1-D time grid.

The integrators know nothing about probability paths: they integrate any vector field
``u(x, t)`` (ODE :math:`dX_t = u_t(X_t)\,dt`) or any drift and diffusion coefficient
(SDE :math:`dX_t = u_t(X_t)\,dt + \sigma_t\,dW_t`). In jflow the flow-time convention is
``t = 0`` noise, ``t = 1`` data, but the grids here may be any strictly monotone sequence
(increasing to move noise to data, decreasing to run the flow backwards, or beyond
``[0, 1]`` for, e.g., an OU process).

Calling convention
------------------
``u(x, t, *args)``: ``x`` is the whole state (batch axis first, or any pytree of
floating arrays), ``t`` is a **scalar** array of the state's float dtype, ``args`` is the
tuple given as ``args=`` (default ``()``). Passing parameters, labels or a guidance scale
through ``args`` (instead of closing over them) means that changing their *values* does
not retrace or recompile a jitted caller. The same holds for the time grid ``ts``:
only its length is static.

Runge-Kutta methods are data (:class:`ButcherTableau`) consumed by one generic step
function; the number of function evaluations of a call is fixed before it runs and given
by :func:`num_evals`. Time grids (uniform, power, EDM) are in :mod:`jflow.grids`. Adaptive step sizes (Dormand-Prince 5(4), NFE returned) are
:func:`odeint_adaptive`, from :mod:`jflow.adaptive`.

Everything is jittable, vmappable and differentiable (reverse-mode through ``lax.scan``).
Outside ``jit`` the grid is validated (1-D, at least two points, finite, strictly
monotone); under ``jit`` only its shape is checked.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from jflow._checks import as_float, cast_like, check_choice, working_precision
from jflow.adaptive import odeint_adaptive
from jflow.grids import check_grid_values, edm_grid, power_grid, uniform_grid

Array = jax.Array

__all__ = [
    "ButcherTableau",
    "TABLEAUS",
    "ODE_METHODS",
    "SDE_METHODS",
    "odeint",
    "sdeint",
    "rk_step",
    "num_evals",
    "uniform_grid",
    "power_grid",
    "edm_grid",
    "odeint_adaptive",
]


class ButcherTableau(NamedTuple):
    r"""An explicit Runge-Kutta method :math:`(a, b, c)` of a given order.

    One step of size :math:`h` from :math:`(x, t)` computes, for :math:`i = 1..s`,

    .. math:: k_i = u\Big(x + h\sum_{j<i} a_{ij} k_j,\; t + c_i h\Big), \qquad
              x_{\rm next} = x + h \sum_i b_i k_i.

    ``a`` is lower triangular with zero diagonal (rows of length ``i``), so the method
    is explicit and costs ``len(b)`` evaluations per step.
    """

    a: Tuple[Tuple[float, ...], ...]
    b: Tuple[float, ...]
    c: Tuple[float, ...]
    order: int

    @property
    def stages(self) -> int:
        return len(self.b)


#: The explicit Runge-Kutta methods accepted by :func:`odeint`.
TABLEAUS = {
    # Algorithm 1 of the lectures: x <- x + h u_t(x).
    "euler": ButcherTableau(a=((),), b=(1.0,), c=(0.0,), order=1),
    # Explicit midpoint: slope at the half step.
    "midpoint": ButcherTableau(a=((), (0.5,)), b=(0.0, 1.0), c=(0.0, 0.5), order=2),
    # Heun (explicit trapezoid): average of the slopes at both ends of the step.
    "heun": ButcherTableau(a=((), (1.0,)), b=(0.5, 0.5), c=(0.0, 1.0), order=2),
    # Classical fourth-order Runge-Kutta.
    "rk4": ButcherTableau(
        a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
        b=(1 / 6, 1 / 3, 1 / 3, 1 / 6),
        c=(0.0, 0.5, 0.5, 1.0),
        order=4,
    ),
}
ODE_METHODS = tuple(TABLEAUS)
SDE_METHODS = ("euler_maruyama",)


# --------------------------------------------------------------------------- helpers


def _float_dtype(tree) -> jnp.dtype:
    # same shape as create_train_state's parameter check (jflow/train/state.py), with its own
    # words: a state is refused for what an ODE needs, parameters for what an optimizer needs
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        raise ValueError("x0 must contain at least one array; got an empty pytree")
    for leaf in leaves:
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise ValueError(
                f"x0 must hold floating arrays (the state of an ODE/SDE); got dtype "
                f"{jnp.result_type(leaf)}. Cast it, e.g. x0.astype(jnp.float32)."
            )
    return jnp.result_type(*leaves)


def _check_args(args) -> tuple:
    if not isinstance(args, tuple):
        raise ValueError(
            f"args must be a tuple (passed as u(x, t, *args)); got {type(args).__name__}. "
            "Wrap a single extra argument as args=(value,)."
        )
    return args


def _axpy(h, ks: Sequence[Any], coeffs: Sequence[float], x):
    """``x + h * sum_j coeffs[j] * ks[j]`` over pytrees, skipping zero coefficients."""
    terms = [(c, k) for c, k in zip(coeffs, ks) if c != 0.0]
    if not terms:
        return x

    def combine(xl, *kl):
        acc = sum(c * k for (c, _), k in zip(terms, kl))
        return (xl + (h * acc).astype(xl.dtype)).astype(xl.dtype)

    return jax.tree_util.tree_map(combine, x, *[k for _, k in terms])


def rk_step(tableau: ButcherTableau, u: Callable, x, t, h, args: tuple = ()):
    r"""One explicit Runge-Kutta step :math:`x(t) \mapsto x(t + h)` for the given tableau.

    The single generic stepper behind every method of :func:`odeint` (see
    :class:`ButcherTableau` for the formula). ``h`` may be negative (reverse time).
    """
    ks = []
    for i, (row, ci) in enumerate(zip(tableau.a, tableau.c)):
        xi = _axpy(h, ks, row, x)
        ks.append(u(xi, t + ci * h, *args))
        if i == 0:
            _check_field_output(x, ks[0])
    return _axpy(h, ks, tableau.b, x)


def _check_field_output(x, k):
    xs = jax.tree_util.tree_structure(x)
    ks = jax.tree_util.tree_structure(k)
    if xs != ks:
        raise ValueError(f"the vector field must return a pytree like its input x; got {ks} for x {xs}")
    for xl, kl in zip(jax.tree_util.tree_leaves(x), jax.tree_util.tree_leaves(k)):
        if jnp.shape(xl) != jnp.shape(kl):
            raise ValueError(
                f"the vector field must return an array of x's shape {jnp.shape(xl)}; got "
                f"{jnp.shape(kl)}. It is called as u(x, t, *args) with a scalar t."
            )


def _check_unroll(unroll) -> int:
    if isinstance(unroll, bool) or not isinstance(unroll, int) or unroll < 1:
        raise ValueError(f"unroll must be a positive int (steps per loop iteration); got {unroll!r}")
    return unroll


def _scan(step, carry, ts, trajectory: bool, unroll: int = 1):
    """Run ``step(carry, (i, t0, t1)) -> carry`` over consecutive grid pairs with one ``lax.scan``.

    ``unroll`` steps are placed in each iteration of the compiled loop (``lax.scan``'s
    knob for trading loop overhead against program size); the result is the same. On
    the 2-core CPU the 4x64 MLP field ran equally fast with 1, 4 and 8 at 1k and 100k points.
    """
    idx = jnp.arange(ts.shape[0] - 1)

    def body(c, inp):
        c = step(c, inp)
        return c, (c[0] if trajectory else None)

    final, path = jax.lax.scan(body, carry, (idx, ts[:-1], ts[1:]), unroll=_check_unroll(unroll))
    if not trajectory:
        return final[0]
    x0 = carry[0]
    return jax.tree_util.tree_map(lambda a, p: jnp.concatenate([a[None], p], axis=0), x0, path)


# --------------------------------------------------------------------------- solvers


def odeint(
    u: Callable, x0, ts, *, method: str = "euler", trajectory: bool = False, args: tuple = (), unroll: int = 1
):
    r"""Integrate the ODE :math:`\frac{d}{dt}X_t = u_t(X_t)` over the grid ``ts`` from ``X_{ts[0]} = x0``.

    With ``method="euler"`` and ``ts = uniform_grid(n)`` this is Algorithm 1 of the
    lectures ("Sampling from a flow model with Euler method"):
    :math:`X_{t+h} = X_t + h\,u_t(X_t)`, :math:`h = 1/n`. Other methods (``"midpoint"``,
    ``"heun"``, ``"rk4"``) are the explicit Runge-Kutta tableaux of :data:`TABLEAUS`,
    of global order 2, 2, 4.

    Args:
      u: vector field ``u(x, t, *args)`` with a scalar ``t``; returns an array (pytree)
        shaped like ``x``.
      x0: initial state, an array (batch axis first) or pytree of floating arrays.
        Its dtype is kept: ``ts`` is cast to it, so float32 in gives float32 out. A state
        below float32 (bfloat16, float16) is integrated in float32, with ``ts`` and the
        field's input in float32, and returned in its own dtype (in bfloat16 small steps
        would round away and grids of a few hundred points repeat times).
      ts: 1-D grid, strictly increasing or strictly decreasing (decreasing integrates
        backwards in time, e.g. data to noise), of any spacing.
      method: ``"euler" | "midpoint" | "heun" | "rk4"``.
      trajectory: if True return every grid point, shape ``(len(ts), *x0.shape)``
        (``[0]`` is ``x0``); otherwise only the final state.
      args: tuple of extra arguments (pytrees of arrays) passed to ``u``; changing their
        values does not recompile a jitted caller.
      unroll: steps per iteration of the compiled loop (``lax.scan(unroll=...)``); same
        result; worth trying where a step is tiny next to the loop's overhead.

    The field is evaluated ``num_evals(method, ts)`` times; Euler never evaluates ``u`` at
    ``ts[-1]``, while Heun and RK4 do (mind fields singular at an endpoint).
    """
    check_choice(method, TABLEAUS, "ODE method")
    args = _check_args(args)
    x0 = jax.tree_util.tree_map(jnp.asarray, x0)
    state = working_precision(x0)
    ts = check_grid_values(ts, jnp.promote_types(_float_dtype(x0), jnp.float32))
    tableau = TABLEAUS[method]

    def step(carry, inp):
        (x,) = carry
        _, t0, t1 = inp
        return (rk_step(tableau, u, x, t0, t1 - t0, args),)

    return cast_like(_scan(step, (state,), ts, trajectory, unroll), x0)


def _sigma_leaves(s, treedef, x_leaves) -> list:
    """One diffusion coefficient per state leaf: ``s`` broadcast to every leaf, or a pytree like the state.

    A single-array state takes ``s`` as one array (a list such as ``[0.5, 2.0]`` is a
    per-dimension array); a pytree state takes an array (broadcast to every leaf) or a
    pytree of the state's structure. Each value must broadcast to its leaf's shape.
    """
    if jax.tree_util.treedef_is_leaf(treedef):  # the state is one bare array
        per_leaf = [s]
    elif jax.tree_util.treedef_is_leaf(jax.tree_util.tree_structure(s)):
        per_leaf = [s] * len(x_leaves)
    else:
        s_def = jax.tree_util.tree_structure(s)
        if s_def != treedef:
            raise ValueError(
                f"sigma must be a scalar, an array broadcast to every leaf of the state, or a pytree "
                f"with the state's structure; got sigma structure {s_def} for state structure {treedef}"
            )
        per_leaf = jax.tree_util.tree_leaves(s)
    out = []
    for value, leaf in zip(per_leaf, x_leaves):
        value = as_float(value)
        try:
            ok = jnp.broadcast_shapes(value.shape, leaf.shape) == leaf.shape
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(
                f"sigma of shape {value.shape} does not broadcast to the state's shape {leaf.shape}; "
                "give a scalar, a per-dimension array of the trailing axes, or the state's shape"
            )
        out.append(value)
    return out


def _step_noise(key, i, x_leaves) -> list:
    """Standard normal noise of step ``i``, one array per state leaf, from ``fold_in(key, i)``.

    A one-leaf state draws from ``fold_in(key, i)`` itself; a state of ``n > 1`` leaves
    splits it into ``n`` keys, one per leaf (in ``jax.tree_util`` leaf order).
    """
    step_key = jax.random.fold_in(key, i)
    keys = [step_key] if len(x_leaves) == 1 else list(jax.random.split(step_key, len(x_leaves)))
    return [jax.random.normal(k, leaf.shape, leaf.dtype) for k, leaf in zip(keys, x_leaves)]


def sdeint(
    drift: Callable,
    sigma: Union[float, Array, Any, Callable],
    x0,
    ts,
    *,
    key: Array,
    method: str = "euler_maruyama",
    trajectory: bool = False,
    args: tuple = (),
    unroll: int = 1,
):
    r"""Integrate the SDE :math:`dX_t = u_t(X_t)\,dt + \sigma_t\,dW_t` with Euler-Maruyama.

    Euler-Maruyama (lecture notes, "Sampling from a diffusion model"):

    .. math:: X_{t+h} = X_t + h\,u_t(X_t) + \sigma_t \sqrt{|h|}\,\epsilon_t,
              \qquad \epsilon_t \sim \mathcal N(0, I),

    with ``h = ts[i+1] - ts[i]`` (negative on a decreasing grid: the drift then runs
    backwards while the noise keeps its size). ``sigma = 0`` gives the Euler ODE step.
    For a pytree state the step applies leaf by leaf, with independent noise per leaf.

    Args:
      drift: ``drift(x, t, *args)`` with a scalar ``t``, returns an array (pytree) like ``x``.
      sigma: diffusion coefficient: a float or an array broadcastable to every leaf of
        ``x0`` (e.g. per dimension), a pytree of such values with ``x0``'s structure (one
        coefficient per leaf), or a callable ``sigma(t, *args)`` returning either.
        Put array values of sigma in ``args`` or pass them as arrays to avoid recompiles.
      x0: initial state, an array (batch axis first) or pytree of floating arrays; each
        leaf keeps its dtype (leaves below float32 are integrated in float32, as in
        :func:`odeint`, with float32 noise).
      ts: 1-D strictly monotone grid (see :func:`odeint`).
      key: PRNG key; step ``i`` uses ``jax.random.fold_in(key, i)``, so the noise of a
        step does not depend on the grid length (same key, longer grid: same first steps).
        A state of one array (or a pytree with one leaf) draws its noise from that key; a
        state of ``n > 1`` leaves splits it into ``n`` keys, one per leaf.
      method: ``"euler_maruyama"``.
      trajectory: return every grid point, shape ``(len(ts), *x0.shape)`` per leaf.
      args: extra arguments for ``drift`` and a callable ``sigma``.
      unroll: steps per iteration of the compiled loop (see :func:`odeint`).
    """
    check_choice(method, SDE_METHODS, "SDE method")
    args = _check_args(args)
    x0 = jax.tree_util.tree_map(jnp.asarray, x0)
    state = working_precision(x0)
    ts = check_grid_values(ts, jnp.promote_types(_float_dtype(x0), jnp.float32))
    if key is None:
        raise ValueError("sdeint needs a PRNG key: sdeint(..., key=jax.random.PRNGKey(0))")
    x_leaves, treedef = jax.tree_util.tree_flatten(state)
    if not callable(sigma):
        _sigma_leaves(sigma, treedef, x_leaves)  # fail before tracing the loop

    def step(carry, inp):
        (x,) = carry
        i, t0, t1 = inp
        h = t1 - t0
        f = drift(x, t0, *args)
        _check_field_output(x, f)
        leaves = jax.tree_util.tree_leaves(x)
        sigmas = _sigma_leaves(sigma(t0, *args) if callable(sigma) else sigma, treedef, leaves)
        noise = _step_noise(key, i, leaves)
        new = [
            (xl + h * fl + (sl * jnp.sqrt(jnp.abs(h))) * el).astype(xl.dtype)
            for xl, fl, sl, el in zip(leaves, jax.tree_util.tree_leaves(f), sigmas, noise)
        ]
        return (jax.tree_util.tree_unflatten(treedef, new),)

    return cast_like(_scan(step, (state,), ts, trajectory, unroll), x0)


def num_evals(method: str, steps: Union[int, Array, Sequence[float]]) -> int:
    """Number of drift / vector-field evaluations of one ``odeint`` or ``sdeint`` call.

    ``steps`` is the number of steps (an int) or the grid ``ts`` itself (``len(ts) - 1``
    steps). Each step of an explicit Runge-Kutta method costs ``len(tableau.b)``
    evaluations (Euler 1, midpoint 2, Heun 2, RK4 4; a batched call counts once);
    Euler-Maruyama costs 1.
    """
    check_choice(method, ODE_METHODS + SDE_METHODS, "method")
    if isinstance(steps, (int, np.integer)):
        n = int(steps)
    else:
        shape = np.shape(steps)
        if len(shape) != 1:
            raise ValueError(f"steps must be an int or a 1-D grid; got shape {shape}")
        n = shape[0] - 1
    if n < 1:
        raise ValueError(f"need at least one step; got {n}")
    per_step = 1 if method in SDE_METHODS else TABLEAUS[method].stages
    return n * per_step
