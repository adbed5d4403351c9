r"""MLPs for vector data (the 2-D toy problems): a residual FiLM MLP and a plain MLP.

Both represent ``u_t^theta(x | y)`` for ``x`` of shape ``(B, d)``; flow time ``t = 0`` noise,
``t = 1`` data.

- :class:`MLP`: time (and label) enter *every* residual block through a feature-wise affine
  modulation (FiLM, Perez et al. 2018):

  .. math:: h \leftarrow h + W_2\, \mathrm{drop}\big(\phi\big((1 + \gamma(c)) \odot W_1 \phi(\mathrm{LN}(h)) + \beta(c)\big)\big),
            \qquad c = \mathrm{TimeEmb}(t) + \mathrm{ClassEmb}(y).

- :class:`PlainMLP`: the network of the labs and of the PyTorch libraries' 2-D examples,
  ``[x, t] -> (Dense(width) -> phi) x depth -> Dense(d)``, with ``t`` concatenated to ``x``.

:func:`dense_init` gives the two weight initialisations a :class:`PlainMLP` offers: flax's
LeCun normal and PyTorch's ``nn.Linear`` default.
"""
from __future__ import annotations

import math
from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from jflow._checks import check_choice, check_positive_int
from jflow.models.embeddings import ConditionedModel
from jflow.models.layers import (
    Activation,
    Dtype,
    check_dropout,
    get_activation,
    output_dense_init,
    prepare_inputs,
)

__all__ = ["MLP", "FiLMBlock", "PlainMLP", "dense_init", "DENSE_INITS"]

DENSE_INITS = ("torch", "lecun_normal")


def dense_init(name: str, fan_in: int) -> dict:
    r"""``kernel_init`` and ``bias_init`` of a ``flax.linen.Dense`` with ``fan_in`` inputs.

    - ``"torch"``: PyTorch's ``nn.Linear`` default, ``kaiming_uniform_(a=sqrt(5))`` for the
      weight and the same bound for the bias: every entry
      :math:`\sim \mathrm{Unif}(-1/\sqrt{n_{in}}, 1/\sqrt{n_{in}})`, variance :math:`1/(3 n_{in})`.
    - ``"lecun_normal"``: flax's default, a truncated normal kernel of variance
      :math:`1/n_{in}` and a zero bias.
    """
    check_choice(name, DENSE_INITS, "dense initialisation")
    check_positive_int(fan_in, "fan_in")
    if name == "lecun_normal":
        return dict(kernel_init=nn.initializers.lecun_normal(), bias_init=nn.initializers.zeros)
    bound = 1.0 / math.sqrt(fan_in)

    def bias_init(key, shape, dtype=jnp.float32):
        return nn.initializers.uniform(2.0 * bound)(key, shape, dtype) - jnp.asarray(bound, dtype)

    # variance_scaling(1/3, fan_in, uniform) draws from U(-sqrt(3 * scale / fan_in), +...) = U(-bound, bound)
    return dict(kernel_init=nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"), bias_init=bias_init)


class FiLMBlock(nn.Module):
    """Pre-norm residual block whose hidden layer is scaled and shifted by the conditioning vector."""

    width: int
    activation: Activation = "silu"
    dropout: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, h, c, *, train: bool = False):
        act = get_activation(self.activation)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        z = nn.LayerNorm(**kw, name="norm")(h)
        z = nn.Dense(self.width, **kw, name="dense_0")(act(z))
        scale, shift = jnp.split(nn.Dense(2 * self.width, **kw, name="film")(act(c)), 2, axis=-1)
        z = act(z * (1.0 + scale) + shift)
        z = nn.Dropout(self.dropout)(z, deterministic=not train)
        return h + nn.Dense(self.width, **kw, name="dense_1")(z)


class MLP(ConditionedModel, nn.Module):
    """Time- and class-conditioned residual MLP: ``(x (B, d), t, y) -> (B, d)``.

    Layout: ``c = ConditionEmbedding(t, y)`` (sinusoidal or Fourier features of ``t`` ->
    ``Dense(width) -> phi -> Dense(width)``, plus a label table), ``h = Dense(width)(x)``, then
    ``depth`` residual blocks, then ``Dense(d)(phi(LayerNorm(h)))``. **One block**
    (:class:`FiLMBlock`) is ``h + Dense_1(drop(phi(FiLM_c(Dense_0(phi(LayerNorm(h)))))))``
    with ``FiLM_c(z) = (1 + scale) * z + shift`` and ``(scale, shift) = Dense(2 width)(phi(c))``:
    three weight matrices, ``W x W``, ``W x 2W`` and ``W x W``, so about ``4 W^2`` parameters.
    ``depth`` counts these blocks, not layers (each block holds two hidden layers on the
    data path); for a network whose ``depth`` is its number of hidden layers, see
    :class:`PlainMLP`.

    Parameter count (``W = width``, ``F = time_features``, data dimension ``d``,
    unconditional, sinusoidal time features)::

        depth * (4 W^2 + 6 W) + W^2 + (F + 2 d + 5) W + d

    (per block ``4 W^2 + 6 W``: three weight matrices with their biases and the LayerNorm's
    scale and offset; ``W^2 + (F + 2) W`` for the time embedding MLP; ``(d + 1) W``,
    ``2 W`` and ``(W + 1) d`` for the input layer, the output LayerNorm and the output
    layer). ``num_classes = K`` adds a ``(K + 1) x W`` label table. E.g. ``width=144,
    depth=2`` has 198,866 parameters, about as many as a plain 4 x 256 MLP (198,914).

    Attributes:
      width: hidden width (also the width of the conditioning vector).
      depth: number of residual FiLM blocks (>= 1).
      activation: name in ``jflow.models.layers.ACTIVATIONS`` or a callable.
      num_classes: ``K`` for a class-conditional model (labels ``0..K-1``; ``K`` is the null
        label of classifier-free guidance; ``y=None`` means the null label), or ``None``.
        Labels outside ``0..K`` raise ``ValueError`` outside ``jit`` and give NaN outputs for
        those examples under ``jit`` (see :class:`~jflow.models.ClassEmbedding`).
      time_embedding: ``"sinusoidal"`` or ``"fourier"``; ``learnable_frequencies`` for the latter.
      time_features: number of time features before the embedding MLP.
      dropout: dropout rate inside each block, active only with ``train=True`` (rng ``"dropout"``).
      zero_init_output: zero the output layer, so a fresh model predicts exactly zero.
      dtype: compute dtype (e.g. ``jnp.bfloat16``); ``param_dtype`` stays float32. The output
        has ``x``'s dtype.
    """

    width: int = 128
    depth: int = 4
    activation: Activation = "silu"
    num_classes: Optional[int] = None
    time_embedding: str = "sinusoidal"
    learnable_frequencies: bool = False
    time_features: int = 64
    dropout: float = 0.0
    zero_init_output: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, t, y=None, *, train: bool = False):
        """Evaluate ``u_t(x | y)``: ``x`` (B, d), ``t`` scalar or (B,) in [0, 1] (0 noise, 1 data), ``y`` (B,) or None."""
        check_positive_int(self.width, "width", why="the hidden width of the MLP")
        check_positive_int(self.depth, "depth", why="the number of residual FiLM blocks")
        check_dropout(self.dropout)
        x, t, y = prepare_inputs(
            x, t, y, num_classes=self.num_classes, event_ndim=1, model="MLP", event_desc="d"
        )
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        act = get_activation(self.activation)
        c = self.condition_embedding(self.width, time_features=self.time_features)(t, y)
        h = nn.Dense(self.width, **kw, name="input")(x)
        for i in range(self.depth):
            h = FiLMBlock(self.width, self.activation, self.dropout, **kw, name=f"block_{i}")(h, c, train=train)
        h = act(nn.LayerNorm(**kw, name="norm_out")(h))
        out = nn.Dense(
            x.shape[-1], kernel_init=output_dense_init(self.zero_init_output), **kw, name="output"
        )(h)
        return out.astype(x.dtype)


class PlainMLP(nn.Module):
    r"""Plain MLP field ``[x, t] -> (Dense(width) -> phi) x depth -> Dense(d)``: ``(x (B, d), t) -> (B, d)``.

    The network of the MIT 6.S184 labs and of the 2-D examples of ``flow_matching`` and
    ``torchcfm``: flow time ``t`` (0 noise, 1 data) is concatenated to ``x`` as one more
    input, with no embedding, and ``depth`` is the number of hidden layers. Unconditional:
    ``y`` must be ``None``.

    Parameter count (``W = width``, ``L = depth``, data dimension ``d``)::

        (d + 1) W + W  +  (L - 1) (W^2 + W)  +  W d + d

    e.g. 198,914 for ``width=256, depth=4, d=2``.

    Attributes:
      width: units of each hidden layer.
      depth: number of hidden layers (>= 1).
      activation: name in ``jflow.models.layers.ACTIVATIONS`` or a callable (``"silu"``, the
        examples' Swish).
      initializer: ``"torch"`` (PyTorch's ``nn.Linear`` default, the default here) or
        ``"lecun_normal"`` (flax's default); see :func:`dense_init`.
      dtype: compute dtype; ``param_dtype`` stays float32. The output has ``x``'s dtype.
    """

    # same shape as MLP's attributes, signature and width/depth checks (with other messages): flax
    # modules declare their attributes field by field; a shared base would hide them from the reader
    width: int = 256
    depth: int = 4
    activation: Activation = "silu"
    initializer: str = "torch"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, t, y=None, *, train: bool = False):
        """Evaluate ``u_t(x)``: ``x`` (B, d), ``t`` scalar or (B,) in [0, 1] (0 noise, 1 data), ``y`` None."""
        check_positive_int(self.width, "width", why="the units of each hidden layer")
        check_positive_int(self.depth, "depth", why="the number of hidden layers")
        check_choice(self.initializer, DENSE_INITS, "initializer")
        x, t, _ = prepare_inputs(x, t, y, num_classes=None, event_ndim=1, model="PlainMLP", event_desc="d")
        act = get_activation(self.activation)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = jnp.concatenate([x, t[:, None].astype(x.dtype)], axis=-1)
        for i in range(self.depth):
            h = act(nn.Dense(self.width, **dense_init(self.initializer, h.shape[-1]), **kw, name=f"hidden_{i}")(h))
        out = nn.Dense(x.shape[-1], **dense_init(self.initializer, self.width), **kw, name="output")(h)
        return out.astype(x.dtype)
