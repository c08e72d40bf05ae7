"""A toy iterative method in one file: gradient steps on the support images under KIP's loss with the
linear kernel. Registering it is all a method does to be listed by ``kdistill methods``, to get its
``--step-size`` / ``--ridge`` options (checked, in ``--help``, in ``run.json``), checkpoints and
``--resume``, and to be run by the contract tests (tests/test_iterative_contract.py)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from kdistill import krr
from kdistill.kernels import from_spec
from kdistill.methods import iterative
from kdistill.methods.iterative import DriverSettings, IterativeMethod, option


@dataclasses.dataclass(frozen=True)
class ToySettings(DriverSettings):
    steps: int = 20
    target_batch: int = 200
    step_size: float = option(0.05, "gradient step on the images", min=0, min_exclusive=True, max=10)
    ridge: float = option(1e-3, "relative ridge of the linear-kernel KRR", min=0, min_exclusive=True, max=1)


def build(s: ToySettings, ctx) -> IterativeMethod:
    linear = from_spec("linear").fn

    def loss(x_s, y_s, x_t, y_t, w):
        return iterative.mse(iterative.krr_predictions(linear, x_s, y_s, x_t, reg=s.ridge), y_t, w)

    grad = jax.jit(jax.value_and_grad(loss))

    def step(state, batch):
        value, g = grad(state["x"], state["y"], batch.x, batch.y, batch.weights)
        return {"x": state["x"] - s.step_size * g, "y": state["y"]}, {"loss": value}

    def validate(x_s, y_s, x_val, labels_val):
        model = krr.fit(linear, np.asarray(x_s), np.asarray(y_s), reg=s.ridge)
        return krr.accuracy(krr.predict(linear, model, x_val), labels_val)

    return IterativeMethod("toy", init=lambda x, y: {"x": jnp.asarray(x), "y": jnp.asarray(y)}, step=step,
                           support=lambda state: (state["x"], state["y"]), validate=validate)


iterative.register_iterative("toy", ToySettings, build, doc="gradient steps on the images under a linear-kernel KRR "
                             "loss (a test plug-in)",
                             smoke={"steps": 4, "target_batch": 60, "val_every": 2, "checkpoint_every": 1})
