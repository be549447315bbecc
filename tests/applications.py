"""Every `keras.applications` architecture as a user exports it: random weights, smallest input.

Each backbone is built with `weights=None`, `include_top=False`, average pooling and the
smallest input its builder accepts, then gets a head with a trainable scalar (`Scale`, or
`LegacyScale` for tf_keras) that a short fit moves (the backbone is frozen for the fit: only
the head trains, so the fit costs one forward pass per step). Random weights with
BatchNormalization's initial statistics (mean 0, variance 1) make a deep net's activations
vanish (MobileNetV3Small's features are ~1e-11) and parity vacuous, so each BatchNormalization
first takes its moving statistics from one batch of CALIBRATION images (`calibrate`) drawn like
the export's random parity inputs, N(0, 1). Both choices decide whether the float32 answer is
reproducible at all: statistics from 16 images (16 values per channel once the 32x32 input is
pooled to 1x1) leave a random EfficientNetB1 so ill-conditioned that Keras' own eager run and
tf.function differ by 4.5 % of its logits, and from 0-255 pixels while the gate checks N(0, 1)
(EfficientNetV2B0: 2.5e3 on logits of 8e3); from 256 N(0, 1) images they differ by 2e-5.
Keras 3 models are saved as
`.keras`; RegNet and ResNet-RS, which only tf_keras ships, as `.h5` (loaded with
`--custom-objects tests.matrix_legacy`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

SEED = 0
SAMPLES, BATCH = 16, 8  # two fit steps
CALIBRATION = 256  # images whose statistics every BatchNormalization takes (`calibrate`)
#: Builders whose smallest input is not 32x32 (keras.applications' `min_size`).
_MIN_SIZE = {"InceptionV3": 75, "InceptionResNetV2": 75, "Xception": 71}
KERAS3 = (
    "ConvNeXtTiny", "ConvNeXtSmall", "ConvNeXtBase", "ConvNeXtLarge", "ConvNeXtXLarge",
    "DenseNet121", "DenseNet169", "DenseNet201",
    "EfficientNetB0", "EfficientNetB1", "EfficientNetB2", "EfficientNetB3",
    "EfficientNetB4", "EfficientNetB5", "EfficientNetB6", "EfficientNetB7",
    "EfficientNetV2B0", "EfficientNetV2B1", "EfficientNetV2B2", "EfficientNetV2B3",
    "EfficientNetV2S", "EfficientNetV2M", "EfficientNetV2L",
    "InceptionResNetV2", "InceptionV3",
    "MobileNet", "MobileNetV2", "MobileNetV3Small", "MobileNetV3Large",
    "NASNetMobile", "NASNetLarge",
    "ResNet50", "ResNet101", "ResNet152", "ResNet50V2", "ResNet101V2", "ResNet152V2",
    "VGG16", "VGG19", "Xception",
)  # fmt: skip
#: Families only tf_keras ships (the smallest of each; the larger ones repeat the same blocks).
TF_KERAS = ("RegNetX002", "RegNetY002", "ResNetRS50")
ARCHITECTURES = (*KERAS3, *TF_KERAS)
#: The `make test` handful (the fastest to export: 20-45 s each on an idle 2-core machine):
#: a mobile net, a compound-scaled net with squeeze-excite blocks, a plain deep CNN. The rest
#: run in `make test-all`; the grouped-convolution path (ConvNeXt, RegNet) is in `make test`
#: through the matrix model `grouped_conv`.
DEFAULT = ("MobileNetV3Small", "EfficientNetB0", "VGG19")


def input_size(arch: str) -> int:
    return _MIN_SIZE.get(arch, 32)


def _calibration_images(arch: str) -> np.ndarray:
    size = input_size(arch)
    rng = np.random.default_rng(SEED + 1)
    return rng.standard_normal(size=(CALIBRATION, size, size, 3)).astype("float32")


def _data(arch: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(SEED)
    size = input_size(arch)
    images = rng.standard_normal(size=(SAMPLES, size, size, 3)).astype("float32")
    return images, rng.normal(size=(SAMPLES, 3)).astype("float32")


def calibrate(backbone: Any, images: np.ndarray, batch_norm: type) -> None:
    """Give every `batch_norm` layer the moving statistics of `images` (one training-mode pass
    with momentum 0), as a trained network's would be: activations neither vanish nor blow up."""
    layers = [layer for layer in backbone._flatten_layers() if isinstance(layer, batch_norm)]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    backbone(images, training=True)
    for layer, momentum in zip(layers, momenta, strict=True):
        layer.momentum = momentum


def _keras3(arch: str) -> Any:
    import keras

    from exporter.model.layers import Scale

    keras.utils.set_random_seed(SEED)
    size = input_size(arch)
    backbone = getattr(keras.applications, arch)(
        input_shape=(size, size, 3), include_top=False, weights=None, pooling="avg"
    )
    calibrate(backbone, _calibration_images(arch), keras.layers.BatchNormalization)
    backbone.trainable = False
    image = keras.Input((size, size, 3), name="image")
    x = Scale(1.0, name="scale")(backbone(image))
    model = keras.Model(image, keras.layers.Dense(3, name="logits")(x), name=arch.lower())
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse", jit_compile=False)
    model.fit(*_data(arch), epochs=1, batch_size=BATCH, verbose=0)
    return model


def _tf_keras(arch: str) -> Any:
    import tf_keras

    from tests.matrix_legacy import LegacyScale

    tf_keras.utils.set_random_seed(SEED)
    size = input_size(arch)
    backbone = getattr(tf_keras.applications, arch)(
        input_shape=(size, size, 3), include_top=False, weights=None, pooling="avg"
    )
    calibrate(backbone, _calibration_images(arch), tf_keras.layers.BatchNormalization)
    backbone.trainable = False
    image = tf_keras.Input((size, size, 3), name="image")
    x = LegacyScale(name="scale")(backbone(image))
    model = tf_keras.Model(image, tf_keras.layers.Dense(3, name="logits")(x), name=arch.lower())
    model.compile(optimizer=tf_keras.optimizers.Adam(1e-2), loss="mse")
    model.fit(*_data(arch), epochs=1, batch_size=BATCH, verbose=0)
    return model


def save(arch: str, directory: Path) -> Path:
    """Build, train the head and save `arch` the way a user hands it to the CLI."""
    if arch in TF_KERAS:
        path = directory / f"{arch}.h5"
        _tf_keras(arch).save(path)
    else:
        path = directory / f"{arch}.keras"
        _keras3(arch).save(path)
    return path


def export_argv(arch: str, source: Path, out: Path) -> list[str]:
    """`python -m exporter export` for the saved architecture, with default flags (the
    float32 tolerance is `exporter.verify.tolerances.FLOAT_TOLERANCES`'s)."""
    argv = ["export", "--model", str(source), "--name", arch.lower(), "--out", str(out)]
    return argv + (["--custom-objects", "tests.matrix_legacy"] if arch in TF_KERAS else [])
