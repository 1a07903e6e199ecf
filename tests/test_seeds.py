"""Seed lanes: vmapped, looping or one per device, the results are those of ``jax.vmap``."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from poison_jax.poisoning import seeds


def _newton_sqrt(a):
    """A data-dependent while_loop: the iterations depend on the seed's value."""

    def cond(carry):
        x, k = carry
        return (jnp.abs(x * x - a) > 1e-5 * a) & (k < 100)

    def body(carry):
        x, k = carry
        return 0.5 * (x + a / x), k + 1

    return jax.lax.while_loop(cond, body, (a, jnp.asarray(0, jnp.int32)))


@pytest.mark.parametrize("lanes", [None, 1, 2, 3, 6])
def test_lanes_give_the_results_of_vmap(lanes):
    a = jnp.array([1.0, 4.0, 9.0, 1e4, 2.0, 1e-2])
    expected = jax.vmap(_newton_sqrt)(a)
    got = jax.jit(lambda a: seeds.over_seeds(_newton_sqrt, a, lanes=lanes))(a)
    np.testing.assert_array_equal(got[1], expected[1])  # each seed ran its own iterations
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-6)


def test_lanes_must_divide_the_seeds():
    with pytest.raises(ValueError, match="lanes = 4 must divide the number of seeds, 6"):
        seeds.over_seeds(_newton_sqrt, jnp.ones(6), lanes=4)


def _run_in_a_fresh_interpreter(script):
    """Run ``script`` where the CPU backend has not started (so it can get 2 devices); it prints "ok"."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=root, timeout=600)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


def test_one_lane_per_device_runs_a_program_per_device():
    """With 2 CPU devices, lanes=2 is a shard_map: same results as vmap, each device's loops its own."""
    script = textwrap.dedent(
        """
        import poison_jax
        assert poison_jax.experiments.devices.use_cpu_cores(2) == 2
        import jax, jax.numpy as jnp, numpy as np
        from poison_jax.poisoning import seeds
        from tests.test_seeds import _newton_sqrt
        a = jnp.array([1.0, 4.0, 9.0, 1e4, 2.0, 1e-2, 3.0, 5.0])
        fn = jax.jit(lambda a: seeds.over_seeds(_newton_sqrt, a, lanes=2))
        assert "shard_map" in str(jax.make_jaxpr(fn)(a)), "lanes=2 on 2 devices should be a shard_map"
        sharding = jax.sharding.NamedSharding(
            jax.sharding.Mesh(np.array(jax.devices()), ("seed",)), jax.sharding.PartitionSpec("seed"))
        got = fn(jax.device_put(a, sharding))
        expected = jax.vmap(_newton_sqrt)(a)
        np.testing.assert_array_equal(got[1], expected[1])
        np.testing.assert_allclose(got[0], expected[0], rtol=1e-6)
        assert got[0].sharding.spec == jax.sharding.PartitionSpec("seed")
        print("ok")
        """
    )
    _run_in_a_fresh_interpreter(script)


def test_the_strong_attack_on_two_devices_matches_one_vmap():
    """The sweep's CPU path (one lane per device, shard_map) gives the attack of a plain vmap."""
    script = textwrap.dedent(
        """
        import poison_jax
        assert poison_jax.experiments.devices.use_cpu_cores(2) == 2
        import dataclasses, jax, numpy as np
        from poison_jax.poisoning import attack, data
        from poison_jax.experiments.devices import SeedSharding
        from tests.test_strong import BATCH, N_TRAIN, N_VAL, started, strong_settings
        splits = data.sample_splits(data.load_dataset("digits"), seeds=[0, 1, 2, 3], n_train=N_TRAIN, n_val=N_VAL)
        results = []
        for lanes in (None, 2):
            settings = strong_settings(seed_lanes=lanes)
            sharding = SeedSharding(4)
            sp = sharding.put_splits(splits)
            state = sharding.put(started(settings, splits))
            state, info = attack.run_attack(settings, sp, state, num_iters=4, update_lam=True)
            results.append((np.asarray(state.xp), np.asarray(state.log_lam), np.asarray(info.val_loss)))
        for a, b in zip(*results):
            np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-3)
        assert not np.allclose(results[0][0], np.asarray(started(strong_settings(), splits).xp))  # it moved
        print("ok")
        """
    )
    _run_in_a_fresh_interpreter(script)
