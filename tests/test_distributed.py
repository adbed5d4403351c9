"""Multi-host helpers, and a real 2-process CPU run on localhost checked against one process."""
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest

import jflow.train as jt

REPO = pathlib.Path(__file__).resolve().parents[1]
CLUSTER_VARS = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "SLURM_JOB_ID",
                "SLURM_NTASKS", "SLURM_NPROCS", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES")


@pytest.fixture
def clean_env(monkeypatch):
    for name in CLUSTER_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_single_machine_does_nothing(clean_env):
    assert jt.cluster_detected() is None
    assert jt.initialize_distributed() is False
    assert jt.initialize_distributed(num_processes=1) is False
    clean_env.setenv("JAX_NUM_PROCESSES", "1")
    assert jt.initialize_distributed() is False
    assert not jax.distributed.is_initialized()
    assert jt.is_main_process()
    assert jt.process_batch_slice(12) == slice(0, 12)


def test_cluster_detection_and_argument_errors(clean_env):
    clean_env.setenv("SLURM_JOB_ID", "42")
    clean_env.setenv("SLURM_NTASKS", "1")
    assert jt.cluster_detected() is None  # a one-task SLURM job is a single machine
    clean_env.setenv("SLURM_NTASKS", "4")
    assert jt.cluster_detected() == "slurm"
    clean_env.delenv("SLURM_JOB_ID")
    clean_env.setenv("OMPI_COMM_WORLD_SIZE", "2")
    assert jt.cluster_detected() == "openmpi"
    clean_env.delenv("OMPI_COMM_WORLD_SIZE")
    clean_env.setenv("TPU_WORKER_HOSTNAMES", "h0,h1")
    assert jt.cluster_detected() == "tpu"
    clean_env.delenv("TPU_WORKER_HOSTNAMES")
    with pytest.raises(ValueError, match="missing: process_id / JAX_PROCESS_ID"):
        jt.initialize_distributed("localhost:1234", num_processes=2)
    with pytest.raises(ValueError, match=r"process_id must lie in \[0, 2\)"):
        jt.initialize_distributed("localhost:1234", 2, 2)
    clean_env.setenv("JAX_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES must be an integer"):
        jt.initialize_distributed()
    assert not jax.distributed.is_initialized()


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_agree_with_each_other_and_with_one_process(tmp_path):
    import _dist_worker as w

    port = _free_port()
    procs = []
    for pid in range(2):
        env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu",
                   XLA_FLAGS="--xla_force_host_platform_device_count=2 "
                             "--xla_cpu_collective_call_terminate_timeout_seconds=300",
                   JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="2",
                   JAX_PROCESS_ID=str(pid))
        procs.append(subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "_dist_worker.py"), str(tmp_path / f"out{pid}.npz"),
             str(tmp_path / "ckpt")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    try:
        logs = [p.communicate(timeout=180)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    out = [dict(np.load(tmp_path / f"out{pid}.npz")) for pid in range(2)]
    assert [bool(o["main"]) for o in out] == [True, False]
    assert [int(o["process_index"]) for o in out] == [0, 1]
    for name in ("w", "b", "ema_w", "losses", "restored_w"):
        np.testing.assert_array_equal(out[0][name], out[1][name])  # the processes agree exactly
    np.testing.assert_array_equal(out[0]["restored_w"], out[0]["w"])
    assert int(out[0]["restored_step"]) == w.NUM_STEPS and int(out[0]["data_step"]) == w.NUM_STEPS

    # the same run in this single process, unsharded, on the same global batches
    step = jt.make_train_step(w.loss_fn, donate=False)
    state = jt.create_train_state(w.init_params(), optax.adam(1e-2), ema_decay=0.9)
    key = jax.random.PRNGKey(w.KEY_SEED)
    losses = []
    for s in range(w.NUM_STEPS):
        state, m = step(state, w.global_batch(s), key)
        losses.append(float(m["loss"]))
    np.testing.assert_allclose(out[0]["losses"], losses, rtol=1e-5)
    np.testing.assert_allclose(out[0]["w"], state.params["w"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[0]["b"], state.params["b"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[0]["ema_w"], state.ema_params["w"], rtol=1e-5, atol=1e-6)
