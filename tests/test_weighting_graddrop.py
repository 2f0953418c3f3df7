"""GradDrop against its formula (Chen et al. 2020), with the same uniform
draws, and in a training step."""

import keras
import numpy as np
from keras import ops

import joint_keras as jk
from tests.test_weighting_gradient_level import shared_trunk
from tests.test_weighting_gradient_level import task_data


def graddrop_by_hand(jacobian, uniform, leak):
    purity = 0.5 * (1 + jacobian.sum(0) / np.abs(jacobian).sum(0))
    keep = ((purity > uniform) & (jacobian > 0)) | ((purity < uniform) & (jacobian < 0))
    return (np.where(keep, 1.0, leak) * jacobian).sum(0)


def test_graddrop_keeps_one_sign_per_coordinate_as_the_paper_says():
    rng = np.random.default_rng(0)
    jacobian = rng.normal(size=(3, 4, 5)).astype("float32")
    for leak in (0.0, 0.3):
        strategy = jk.weighting.GradDrop(leak=leak, seed=4)
        strategy.build_for_tasks(["a", "b", "c"], [1.0] * 3)
        updates, other = strategy.combine(
            [ops.convert_to_tensor(jacobian)], ops.ones((3,)), [0, 1, 2], True
        )
        uniform = keras.random.uniform((4, 5), seed=keras.random.SeedGenerator(4))
        want = graddrop_by_hand(jacobian, ops.convert_to_numpy(uniform), leak)
        np.testing.assert_allclose(ops.convert_to_numpy(updates[0]), want, atol=1e-6)
        np.testing.assert_allclose(ops.convert_to_numpy(other), np.ones(3))
    # All gradients of one sign at a coordinate: all kept (P = 1 or 0).
    same = np.abs(jacobian)
    strategy = jk.weighting.GradDrop(seed=1)
    strategy.build_for_tasks(["a", "b", "c"], [1.0] * 3)
    updates, _ = strategy.combine([ops.convert_to_tensor(same)], None, [0, 1, 2], True)
    np.testing.assert_allclose(ops.convert_to_numpy(updates[0]), same.sum(0), rtol=1e-6)


def test_graddrop_trains_on_the_representation(tmp_path):
    x, ys = task_data(n=64)
    joint = jk.JointModel(shared_trunk())
    joint.compile(
        optimizer="adam",
        loss="mse",
        weighting=jk.weighting.GradDrop(representation="trunk", seed=0),
    )
    history = joint.fit(x, ys, batch_size=16, epochs=2, verbose=0, shuffle=False)
    assert np.all(np.isfinite(history.history["loss"]))
    assert history.history["loss"][1] < history.history["loss"][0]
    joint.save(tmp_path / "g.keras")
    loaded = keras.models.load_model(tmp_path / "g.keras")
    assert isinstance(loaded.weighting, jk.weighting.GradDrop)
