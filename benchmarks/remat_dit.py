"""Temporary memory and compile time of a DiT gradient: unrolled vs scanned blocks, with and without remat.

    python -m benchmarks.remat_dit        # from the repository root

Memory is XLA's ``memory_analysis()`` of the compiled program (independent of load); compile
time is the wall time of ``lower(...).compile()`` (depends on load).
"""
import time

import jax
import jax.numpy as jnp

from jflow.models import DiT


def measure(depth: int, scan: bool, remat, batch: int = 16) -> tuple:
    """``(temporary MiB, compile seconds)`` of ``grad(sum(DiT(x)^2))`` for one configuration."""
    x, t, y = jnp.zeros((batch, 32, 32, 3)), jnp.zeros((batch,)), jnp.zeros((batch,), jnp.int32)
    model = DiT(patch_size=2, hidden_size=128, depth=depth, num_heads=4, num_classes=10, scan_blocks=scan, remat=remat)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), x, t, y)
    grad = jax.jit(jax.grad(lambda p: jnp.sum(model.apply(p, x, t, y) ** 2)))
    start = time.perf_counter()
    compiled = grad.lower(params).compile()
    seconds = time.perf_counter() - start
    return compiled.memory_analysis().temp_size_in_bytes / 2**20, seconds


def main():
    print("| depth | blocks | remat policy | temporary memory | compile |\n|---:|---|---|---:|---:|")
    for depth in (4, 12):
        for scan in (False, True):
            for remat in (None, "nothing_saveable", "dots_saveable"):
                mib, seconds = measure(depth, scan, remat)
                blocks = "scanned" if scan else "unrolled"
                print(f"| {depth} | {blocks} | {remat or 'none'} | {mib:.0f} MiB | {seconds:.2f} s |", flush=True)


if __name__ == "__main__":
    main()
