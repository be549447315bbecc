"""Keras 3 layers that hold trainable scalars the right way: tracked, trained, exportable.

Every layer here creates its scalars with `add_weight` (so the optimizer sees them and
`model.weights` lists them), stores its initial value in `get_config()` (so `.keras`
round trips rebuild it), and reports that value through `initial_weight_values()`, which
`exporter.model.audit` uses to warn about a "trainable" scalar that never moved.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import keras
from keras import ops

from exporter.errors import ModelLoadError

_PACKAGE = "frozen_scalars"


class _ScalarLayer(keras.layers.Layer):
    """Base: one or more rank-0 weights, each filled with a known constant at build."""

    # Subclasses define `initial_weight_values() -> {weight name: initial constant}`,
    # read by `exporter.model.audit` to tell a trained scalar from one that never moved.

    def _scalar(self, name: str, value: float) -> keras.Variable:
        return self.add_weight(shape=(), name=name, initializer=keras.initializers.Constant(value))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Scale(_ScalarLayer):
    """`inputs * scale` with a tracked scalar `scale` (recipe 1, done with `add_weight`)."""

    def __init__(self, initial_value: float = 1.0, trainable: bool = True, **kwargs: Any):
        super().__init__(trainable=trainable, **kwargs)
        self.initial_value = float(initial_value)
        self.scale = self._scalar("scale", self.initial_value)

    def call(self, inputs: Any) -> Any:
        return inputs * ops.cast(self.scale, inputs.dtype)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def initial_weight_values(self) -> dict[str, float]:
        return {"scale": self.initial_value}

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "initial_value": self.initial_value}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Offset(_ScalarLayer):
    """`inputs + offset` with a tracked scalar: the fix for recipe 3's `Lambda` closure."""

    def __init__(self, initial_value: float = 0.0, **kwargs: Any):
        super().__init__(**kwargs)
        self.initial_value = float(initial_value)
        self.offset = self._scalar("offset", self.initial_value)

    def call(self, inputs: Any) -> Any:
        return inputs + ops.cast(self.offset, inputs.dtype)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def initial_weight_values(self) -> dict[str, float]:
        return {"offset": self.initial_value}

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "initial_value": self.initial_value}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Temperature(_ScalarLayer):
    """`logits / T` with T = exp(log_temperature): positive whatever the optimizer does."""

    def __init__(self, initial_value: float = 1.0, **kwargs: Any):
        if not initial_value > 0:
            raise ValueError(f"Temperature must be > 0, got initial_value={initial_value!r}.")
        super().__init__(**kwargs)
        self.initial_value = float(initial_value)
        self.log_temperature = self._scalar("log_temperature", math.log(self.initial_value))

    @property
    def temperature(self) -> float:
        """Current temperature, exp(log_temperature)."""
        return float(ops.convert_to_numpy(ops.exp(self.log_temperature)))

    def call(self, logits: Any) -> Any:
        return logits * ops.cast(ops.exp(-self.log_temperature), logits.dtype)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def initial_weight_values(self) -> dict[str, float]:
        return {"log_temperature": math.log(self.initial_value)}

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "initial_value": self.initial_value}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class UncertaintyWeightedLoss(keras.losses.Loss):
    """exp(-s_i)·L_i + s_i for one task, reading s_i from a `LossWeighting` layer.

    A loss object is not a model weight, so the layer it reads must be tracked by the
    model (see `LossWeighting.attach`) for the optimizer to update s_i. Serializable so a
    `.keras` file of a model compiled with it loads; the loaded loss has no layer (a
    fresh, untracked one would silently never train), so using it for training raises.
    """

    def __init__(self, weighting: LossWeighting | None, index: int, base_loss: Any, **kwargs: Any):
        kwargs.setdefault("name", f"uncertainty_weighted_{index}")
        super().__init__(**kwargs)
        self.weighting = weighting
        self.index = int(index)
        self.base_loss = keras.losses.get(base_loss)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        if self.weighting is None:
            raise ModelLoadError(
                f"Loss {self.name!r} was loaded from a file without its LossWeighting layer. "
                "Re-attach one before training: "
                "model.compile(loss=LossWeighting(n).attach(model, base_losses))."
            )
        s = self.weighting.log_vars[self.index]
        per_sample = self.base_loss(y_true, y_pred)
        return ops.exp(-s) * per_sample + s

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "index": self.index,
            "base_loss": keras.losses.serialize(self.base_loss),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> UncertaintyWeightedLoss:
        return cls(weighting=None, **config)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LossWeighting(_ScalarLayer):
    """Homoscedastic-uncertainty weighting of several task losses (Kendall et al., 2018).

    Holds one rank-0 trainable weight s_i = log σ_i² per task (`log_var_0`, ...), and
    combines losses as Σ exp(-s_i)·L_i + s_i: the `+ s_i` term stops the optimizer from
    driving a loss weight to zero, which is what a bare multiplicative weight would do.

    The weights are used only by the loss, never by inference. In Keras 3, wire it into
    `fit` with `attach`, which tracks the layer on the model and returns per-output losses
    for `compile`:

        weighting = LossWeighting(2)
        model.compile("adam", loss=weighting.attach(model, {"a": "mse", "b": "mse"}))

    `call(losses)` does the same combination on already computed scalar losses.
    """

    def __init__(self, num_losses: int, initial_value: float = 0.0, **kwargs: Any):
        if int(num_losses) < 1:
            raise ValueError(f"num_losses must be >= 1, got {num_losses!r}.")
        super().__init__(**kwargs)
        self.num_losses = int(num_losses)
        self.initial_value = float(initial_value)
        self.log_vars = [
            self._scalar(f"log_var_{i}", self.initial_value) for i in range(self.num_losses)
        ]

    def call(self, losses: Sequence[Any]) -> Any:
        if len(losses) != self.num_losses:
            raise ValueError(
                f"LossWeighting({self.num_losses}) got {len(losses)} losses; "
                "pass exactly one scalar loss per task."
            )
        total = 0.0
        for s, loss in zip(self.log_vars, losses, strict=True):
            total = total + ops.exp(-s) * loss + s
        return total

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape[0]  # losses broadcast together; all have the same shape

    def attach(
        self, model: keras.Model, base_losses: Mapping[str, Any] | Sequence[Any]
    ) -> dict[str, UncertaintyWeightedLoss] | list[UncertaintyWeightedLoss]:
        """Track this layer on `model` and wrap one base loss per output for `compile`.

        Tracking (an attribute on the model) puts s_i in `model.trainable_weights`, so
        `fit` updates them; the model's `call` never reads them, so the inference
        function does not capture them.
        """
        count = len(base_losses)
        if count != self.num_losses:
            raise ValueError(
                f"LossWeighting({self.num_losses}) cannot weight {count} losses; "
                "build it with num_losses equal to the number of model outputs."
            )
        model.loss_weighting = self
        if isinstance(base_losses, Mapping):
            return {
                key: UncertaintyWeightedLoss(self, i, loss)
                for i, (key, loss) in enumerate(base_losses.items())
            }
        return [UncertaintyWeightedLoss(self, i, loss) for i, loss in enumerate(base_losses)]

    def initial_weight_values(self) -> dict[str, float]:
        return {f"log_var_{i}": self.initial_value for i in range(self.num_losses)}

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_losses": self.num_losses,
            "initial_value": self.initial_value,
        }
