r"""Field adapters: a model as a sampler's field, parameterisation conversions, and their singular times.

Flow time: ``t = 0`` is noise, ``t = 1`` is data. Three calling conventions meet in jflow:

- the integrators and samplers call a field ``u(x, t, *args)`` with a **scalar** ``t``;
- flax models are called ``model.apply(params, x, t, y)`` with ``t`` of shape ``(B,)``;
- :func:`jflow.sampling.langevin` calls a static score ``score(x, *args)`` (no time).

:func:`as_field` turns a model into the first form (one call instead of a lambda);
:func:`as_velocity` / :func:`as_score` convert a network of any parameterisation
(velocity, score, noise, data) with the closed forms of :func:`jflow.paths.convert`.

Singular times. A converted field is undefined where the conversion divides by zero:
for the built-in schedulers every score and a velocity from a data prediction at ``t = 1``
(:math:`\beta_1 = 0`), a velocity from a score or noise prediction at ``t = 0``
(:math:`\alpha_0 = 0`; not for ``VPScheduler``, whose :math:`\alpha_0 > 0`). The
:class:`ConvertedField` returned by the converters knows where (:meth:`ConvertedField.finite_at`,
computed from its scheduler, so custom schedulers are covered), and
:func:`check_grid` (called by ``sample_ode``, ``sample_sde`` and ``log_likelihood``) refuses a
concrete grid on which the chosen method would evaluate it there, with the grid to use.
Which times a method evaluates is :func:`evaluation_times`: every method evaluates the
left end of each step, so ``ts[0]`` always; Euler and Euler-Maruyama only those,
midpoint adds ``t + h/2``, Heun and RK4 add the right end, so ``ts[-1]`` too.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jflow import paths
from jflow._checks import check_choice, is_concrete
from jflow.integrators import SDE_METHODS, TABLEAUS

Array = jax.Array

__all__ = ["as_field", "as_velocity", "as_score", "ConvertedField", "evaluation_times", "check_grid"]


def as_field(apply_fn: Callable, params, *, y=None) -> Callable:
    r"""A model ``apply_fn(params, x, t, [y,] *args)`` as a field ``u(x, t, *args)`` for the samplers.

    The returned ``u`` broadcasts the integrators' scalar ``t`` to shape ``(B,)``
    (``B = x.shape[0]``, what the models expect) and calls
    ``apply_fn(params, x, t, y, *args)`` when ``y`` (labels ``(B,)``) is given, else
    ``apply_fn(params, x, t, *args)``. So, for ``model`` of :mod:`jflow.models`::

        sample_ode(as_field(model.apply, params), x0, ts)                   # velocity model
        sample_ode(as_field(model.apply, params, y=labels), x0, ts)         # fixed labels
        as_velocity(as_field(model.apply, params), sched, "noise")          # a noise model
        guided = classifier_free_guidance(as_field(model.apply, params), model.null_label)
        sample_ode(guided, x0, ts, args=(labels, w))                        # CFG (Algorithm 8)

    For guidance leave ``y`` unset: the guided field passes the labels (and the null
    label) as the first extra argument. Under ``jit``, build the field inside the jitted
    function from traced ``params`` (closing over concrete ``params`` bakes them into the
    compiled program as constants, and a new value recompiles).
    """
    if not callable(apply_fn) or (hasattr(apply_fn, "init") and hasattr(apply_fn, "apply")):
        raise ValueError(f"apply_fn must be a model's apply function, e.g. model.apply; got {apply_fn!r}")

    def u(x, t, *args):
        t = jnp.asarray(t)
        if t.ndim == 0:
            t = jnp.broadcast_to(t, jnp.shape(x)[:1])
        extra = args if y is None else (y, *args)
        return apply_fn(params, x, t, *extra)

    return u


@dataclasses.dataclass(frozen=True)
class ConvertedField:
    r"""``fn``'s prediction of ``source`` converted to ``target`` by :func:`jflow.paths.convert`.

    Called as ``field(x, t, *args)`` (``fn(x, t, *args)`` then the closed-form conversion).
    :meth:`finite_at` tells where the conversion is defined, so samplers can refuse grids
    that evaluate it at a singular time (see the module docstring).
    """

    fn: Callable
    sched: Any
    source: str
    target: str

    def __call__(self, x, t, *args):
        return paths.convert(self.sched, self.fn(x, t, *args), x, t, source=self.source, target=self.target)

    def finite_at(self, ts) -> Optional[np.ndarray]:
        """Boolean mask over the concrete times ``ts``: False where the field is non-finite for every ``x``.

        The conversion's coefficients are probed at ``ts`` (in ``ts``'s dtype); a conversion
        that divides by zero is inf or NaN there whatever the prediction. Also False where
        ``fn`` itself is a converted field singular at that time. ``None`` when the
        scheduler's parameters are traced (the mask is unknown under ``vmap`` over them).
        """
        with jax.ensure_compile_time_eval():
            t = jnp.asarray(ts).reshape(-1)
            ones = jnp.ones(t.shape + (1,), t.dtype)
            value = paths.convert(self.sched, ones, ones, t, source=self.source, target=self.target)
            ok = jnp.all(jnp.isfinite(value), axis=-1)
        if not is_concrete(ok):
            return None
        ok = np.asarray(ok)
        inner = getattr(self.fn, "finite_at", None)
        inner_ok = inner(ts) if inner is not None else None
        return ok if inner_ok is None else ok & np.asarray(inner_ok).reshape(-1)

    @property
    def singular_ends(self) -> tuple:
        """The ends of ``[0, 1]`` (``0.0``, ``1.0``) where the field is singular, probed in float32."""
        ok = self.finite_at(np.array([0.0, 1.0], np.float32))
        return () if ok is None else tuple(end for end, fine in zip((0.0, 1.0), ok) if not fine)


def _converter(fn: Callable, sched, parameterization: str, target: str) -> Callable:
    check_choice(parameterization, paths.PARAMETERIZATIONS, "parameterization")
    if not callable(fn):
        raise ValueError(f"fn must be callable as fn(x, t, *args); got {fn!r}")
    if parameterization == target:
        return fn
    return ConvertedField(fn, sched, parameterization, target)


def as_velocity(fn: Callable, sched, parameterization: str) -> Callable:
    r"""Turn a network of any parameterisation into the velocity field :math:`u_t(x)`.

    ``fn(x, t, *args)`` predicts ``parameterization`` in ``{"velocity", "score", "noise",
    "data"}``; returns ``fn`` itself for ``"velocity"``, else a :class:`ConvertedField`
    ``u(x, t, *args)`` applying :func:`jflow.paths.convert`. E.g. from a score model
    (lecture "conversion formula"):
    :math:`u_t(x) = \big(\beta_t^2\frac{\dot\alpha_t}{\alpha_t} - \dot\beta_t\beta_t\big)\nabla\log p_t(x) + \frac{\dot\alpha_t}{\alpha_t}x`,
    singular at ``t = 0`` (:math:`\alpha_0 = 0`; so is the velocity of a noise model); from a
    data prediction singular at ``t = 1``. ``sample_ode``, ``sample_sde`` and
    ``log_likelihood`` raise for a concrete grid that evaluates it there; under ``jit``
    with a traced grid the samples are NaN instead: use e.g. ``uniform_grid(n, t0=1e-3)``.
    """
    return _converter(fn, sched, parameterization, "velocity")


def as_score(fn: Callable, sched, parameterization: str) -> Callable:
    r"""Turn a network of any parameterisation into the score :math:`\nabla\log p_t(x)`.

    E.g. from a velocity model
    :math:`\nabla\log p_t(x) = \frac{\alpha_t u_t(x) - \dot\alpha_t x}{\beta_t^2\dot\alpha_t - \alpha_t\dot\beta_t\beta_t}`,
    from a noise model :math:`-\epsilon_t(x)/\beta_t`; singular at ``t = 1``
    (:math:`\beta_1 = 0`), which Euler-Maruyama never evaluates on a grid ending there.
    Returns ``fn`` for ``"score"``, else a :class:`ConvertedField`. Used by
    :func:`jflow.sampling.sample_sde` so that a flow-matching network can be sampled
    stochastically.
    """
    return _converter(fn, sched, parameterization, "score")


def evaluation_times(method: str, ts, dtype=None) -> np.ndarray:
    """The sorted distinct times at which ``odeint``/``sdeint`` with ``method`` evaluate the field on ``ts``.

    Step ``[t_i, t_{i+1}]`` of an explicit Runge-Kutta method evaluates
    ``t_i + c_j (t_{i+1} - t_i)`` for its tableau's nodes ``c`` (Euler ``0``; midpoint
    ``0, 1/2``; Heun ``0, 1``; RK4 ``0, 1/2, 1/2, 1``), computed as the integrator does in
    ``dtype`` (the state's; default ``ts``'s); Euler-Maruyama evaluates the left ends
    ``ts[:-1]``. ``ts`` must be concrete (host values).
    """
    check_choice(method, tuple(TABLEAUS) + SDE_METHODS, "method")
    grid = np.asarray(ts)
    grid = grid.astype(np.dtype(dtype) if dtype is not None else grid.dtype)
    left, h = grid[:-1], grid[1:] - grid[:-1]
    nodes = (0.0,) if method in SDE_METHODS else TABLEAUS[method].c
    return np.unique(np.concatenate([left + c * h for c in nodes]))


def _suggestion(grid: np.ndarray, bad: np.ndarray, method: str, alternatives: str) -> str:
    start, end, n = float(grid[0]), float(grid[-1]), grid.shape[0] - 1
    inward = 1e-3 if end > start else -1e-3
    new_start = start + inward if np.any(bad == grid[0]) else start
    new_end = end - inward if np.any(bad == grid[-1]) else end
    fixes = []
    if (new_start, new_end) != (start, end):
        fixes.append(f"uniform_grid({n}, t0={new_start:.6g}, t1={new_end:.6g})")
    if np.any(bad == grid[-1]) and not np.any(bad == grid[0]) and method in ("heun", "rk4"):
        fixes.append("method='euler' or 'midpoint' (they never evaluate ts[-1])")
    if not fixes:
        fixes.append("a grid that avoids these times")
    return " or ".join(fixes) + alternatives


def check_grid(field: Callable, ts, method: str, dtype, *, caller: str, name: str, alternatives: str = "") -> None:
    """Raise ``ValueError`` if ``method`` would evaluate ``field`` on the concrete grid ``ts`` where it is singular.

    Only for fields that carry a ``finite_at(times)`` mask (:class:`ConvertedField`, and a
    classifier-free guided one); a no-op for other callables, for a traced grid (under
    ``jit``: the result is then NaN, never a finite number) and for grids or methods the
    integrators will reject anyway. ``dtype`` is the state's (the grid is cast to it).
    """
    finite_at = getattr(field, "finite_at", None)
    if finite_at is None or not is_concrete(ts) or method not in tuple(TABLEAUS) + SDE_METHODS:
        return
    grid = np.asarray(ts)
    if grid.ndim != 1 or grid.shape[0] < 2 or not np.isfinite(grid).all():
        return
    dtype = dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.result_type(float)
    times = evaluation_times(method, grid, dtype)
    ok = finite_at(times)
    if ok is None or bool(np.all(ok)):
        return
    bad = times[~np.asarray(ok)]
    what = f" (converted from a {field.source!r} prediction)" if isinstance(field, ConvertedField) else ""
    raise ValueError(
        f"{caller}: {name}{what} is singular at t = {', '.join(f'{v:.6g}' for v in bad[:4])} and method={method!r} "
        f"evaluates it there on this grid, which would give NaN; use "
        f"{_suggestion(grid.astype(dtype), bad, method, alternatives)}"
    )
