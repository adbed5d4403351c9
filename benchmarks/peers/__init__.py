"""jflow against the PyTorch flow matching libraries: ``flow_matching`` (Meta) and ``torchcfm``.

Usage (from the repository root, in an environment with the ``bench`` extra)::

    python -m benchmarks.peers                  # full run, writes benchmarks/results/peers.md
    python -m benchmarks.peers --quick          # small sizes, few repeats (a smoke run)
    python -m benchmarks.peers --parts train sample --repeats 9 --out /tmp/peers.md
    python -m benchmarks.peers --xla-flags "--xla_cpu_use_thunk_runtime=false"

Everything runs in one process on the same machine, float32, and the measurements of jflow
and of the peers are *interleaved* (repeat ``r`` times every runner once, alternating the
order), so a change of machine load hits all runners alike. Each cell is the median over
repeats of a throughput; the spread is the interquartile range (IQR). A ratio ``jflow /
peer`` is the median over repeats of the per-repeat ratio of the paired measurements.

Parts (``--parts``):

``train``
    Flow matching training steps per second (CondOT path, velocity target, Adam 1e-3, loss
    ``mean_i ||u(x_t, t) - (z - eps)||^2``) on 2-D data. The model is the labs' MLP: ``t``
    concatenated to ``x``, ``depth`` hidden layers of ``width`` with SiLU, a linear output;
    ``jflow.models.PlainMLP`` in flax and its twin ``TorchPlainMLP`` in torch; the same
    weights give the same outputs (checked). jflow runs ``jflow.losses.make_loss`` +
    ``jflow.train.make_train_step`` (one update per call) and ``make_fused_train_step`` (k
    updates per call, ``lax.scan``). flow_matching: ``AffineProbPath(CondOTScheduler())``;
    torchcfm: ``ConditionalFlowMatcher(sigma=0)``; both in a plain PyTorch loop
    (``zero_grad``, ``backward``, ``torch.optim.Adam.step``). Sizes 4 x 64 (the labs') at
    batch 256 and 1000, and 4 x 512 at batch 4096.
``film``
    The same, with jflow's own model ``jflow.models.MLP`` (residual FiLM blocks, sinusoidal
    time embedding) against a torch twin (``TorchFiLMMLP``, same layers,
    weights copied and outputs checked).
``sample``
    Sampling throughput (points per second) of 100 Euler steps and 100 midpoint steps (200
    evaluations) on the 4 x 64 lab MLP with random weights: ``jflow.integrators.odeint``
    jitted, against flow_matching's ``ODESolver.sample(step_size=0.01)`` and torchdiffeq's
    ``odeint`` on a 101-point grid (torchcfm's examples sample with torchdyn or torchdiffeq;
    torchdyn does not import next to a CPU build of torch, see the README). The number of
    field evaluations is counted and the final points are compared.
``unet``
    One training step of a U-Net on 28 x 28 x 1 images: ``jflow.models.UNet`` with the
    ``unet_mnist`` configuration (dropout 0) against ``TorchUNet``, a PyTorch port
    with the same blocks, channels and parameter count (weights copied, outputs checked),
    trained with flow_matching's path.
``dit``
    The same step with ``jflow.models.DiT`` in its ``dit_tiny`` configuration (patch 2,
    hidden 128, 4 blocks, 4 heads; 196 tokens per 28 x 28 image) against ``TorchDiT``, a
    PyTorch port with the same layers and parameter count (weights copied, outputs checked).

Also reported: jflow's first-call time (trace + compile) apart from steady state, the FLOPs
of one step from XLA's cost analysis, and the utilisation FLOPs/s over the float32 matmul
peak of this machine measured in the same run (a jitted ``jnp.dot`` and ``torch.mm``).

Modules: :mod:`.twins`, :mod:`.unet_twin` and :mod:`.dit_twin` (the torch models),
:mod:`.training`, :mod:`.sampling`, :mod:`.unet` and :mod:`.dit` (the cases),
:mod:`.report` (tables), :mod:`.run` (the run) and ``__main__`` (the command line, and the
environment JAX and glibc read when they start). The targets the ratios are judged against are in ``benchmarks/README.md``.
"""
