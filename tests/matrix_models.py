"""The real-architecture matrix: models people export, each with a trained scalar.

Every factory builds a small version of a production architecture, trains it briefly on
generated data (so its `Scale`/`Offset` scalar moves away from its initial value) and returns
`(model, initial scalar values)`. `save` writes it the way a user would hand it to the CLI:
`.keras` for Keras 3, `.h5` or a SavedModel directory for tf_keras.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from exporter.model.layers import Offset, Scale

SEED = 0
N = 64  # training examples: enough for a few gradient steps, no more
WORDS = ["red", "green", "blue", "cat", "dog", "bird", "fast", "slow", "big", "small"]
INT_VOCAB = [3, 7, 11, 42, 99, 123]


def _rng() -> np.random.Generator:
    return np.random.default_rng(SEED)


def _tensor(x: Any) -> Any:
    """Keras' fit refuses numpy str arrays: strings go in as tf.string tensors."""
    if isinstance(x, dict):
        return {k: _tensor(v) for k, v in x.items()}
    return tf.constant(x.astype(object)) if x.dtype.kind in "US" else x


def _fit(model: keras.Model, x: Any, y: Any, epochs: int = 2) -> None:
    # jit_compile="auto" would XLA-compile the train step: seconds per model for 4 steps.
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse", jit_compile=False)
    model.fit(_tensor(x), y, epochs=epochs, batch_size=16, verbose=0)


def _sentences(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.array(
        [" ".join(rng.choice(WORDS, size=rng.integers(1, 6))).title() + "!" for _ in range(n)]
    )


def mobilenet() -> keras.Model:
    """keras.applications.MobileNetV2 (alpha 0.35, 32x32, no weights) + Scale head."""
    keras.utils.set_random_seed(SEED)
    backbone = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, include_top=False, weights=None, pooling="avg"
    )
    image = keras.Input((32, 32, 3), name="image")
    features = Scale(1.0, name="scale")(backbone(image))
    model = keras.Model(image, keras.layers.Dense(3, name="logits")(features), name="mobilenet")
    rng = _rng()
    _fit(model, rng.normal(size=(N, 32, 32, 3)).astype("float32"), rng.normal(size=(N, 3)), 1)
    return model


def bn_cnn() -> keras.Model:
    """Conv -> BatchNorm -> ReLU -> Dropout, twice, then Offset: BN stats frozen too."""
    keras.utils.set_random_seed(SEED)
    image = keras.Input((16, 16, 1), name="image")
    x = image
    for filters in (8, 16):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.Dropout(0.2)(x)
        x = keras.layers.MaxPooling2D()(x)
    x = Offset(0.0, name="offset")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(image, keras.layers.Dense(2, name="out")(x), name="bn_cnn")
    rng = _rng()
    _fit(model, rng.normal(size=(N, 16, 16, 1)).astype("float32"), rng.normal(size=(N, 2)))
    return model


def _recurrent(cell: Callable[..., Any], name: str) -> keras.Model:
    keras.utils.set_random_seed(SEED)
    tokens = keras.Input((12,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(50, 8, mask_zero=True)(tokens)
    x = keras.layers.Bidirectional(cell(8))(x)
    x = Scale(1.0, name="scale")(x)
    model = keras.Model(tokens, keras.layers.Dense(1, name="score")(x), name=name)
    rng = _rng()
    ids = rng.integers(1, 50, size=(N, 12))
    lengths = rng.integers(3, 13, size=N)
    ids[np.arange(12)[None, :] >= lengths[:, None]] = 0  # right-padded: the mask matters
    _fit(model, ids.astype("int32"), rng.normal(size=(N, 1)))
    return model


def bilstm() -> keras.Model:
    """Masked bidirectional LSTM over right-padded int tokens."""
    return _recurrent(keras.layers.LSTM, "bilstm")


def bigru() -> keras.Model:
    """Masked bidirectional GRU over right-padded int tokens."""
    return _recurrent(keras.layers.GRU, "bigru")


def transformer() -> keras.Model:
    """One Transformer encoder block; its feed-forward uses exact GELU (TF Erfc)."""
    keras.utils.set_random_seed(SEED)
    tokens = keras.Input((10,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(40, 16)(tokens)
    attention = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8)(x, x)
    x = keras.layers.LayerNormalization()(x + attention)
    ff = keras.layers.Dense(32, activation="gelu")(x)  # approximate=False: erf
    x = keras.layers.LayerNormalization()(x + keras.layers.Dense(16)(ff))
    x = Scale(1.0, name="scale")(keras.layers.GlobalAveragePooling1D()(x))
    model = keras.Model(tokens, keras.layers.Dense(2, name="logits")(x), name="transformer")
    rng = _rng()
    _fit(model, rng.integers(0, 40, size=(N, 10)).astype("int32"), rng.normal(size=(N, 2)))
    return model


def string_lookup() -> keras.Model:
    """Raw categorical strings -> StringLookup (adapted) -> Embedding -> Offset."""
    keras.utils.set_random_seed(SEED)
    rng = _rng()
    words = rng.choice(WORDS[:7], size=(N, 1))
    lookup = keras.layers.StringLookup(name="lookup")
    lookup.adapt(words)
    colour = keras.Input((1,), dtype="string", name="colour")
    x = keras.layers.Flatten()(keras.layers.Embedding(lookup.vocabulary_size(), 4)(lookup(colour)))
    x = Offset(0.0, name="offset")(x)
    model = keras.Model(colour, keras.layers.Dense(1, name="score")(x), name="string_lookup")
    _fit(model, words, rng.normal(size=(N, 1)))
    return model


def text_vectorization() -> keras.Model:
    """Raw sentences -> TextVectorization (lower, strip punctuation, split) -> pooled -> Scale."""
    keras.utils.set_random_seed(SEED)
    rng = _rng()
    text = _sentences(rng, N)
    vectorize = keras.layers.TextVectorization(
        max_tokens=20, output_sequence_length=6, name="vectorize"
    )
    vectorize.adapt(text)
    sentence = keras.Input((), dtype="string", name="sentence")
    x = keras.layers.Embedding(20, 4)(vectorize(sentence))
    x = Scale(1.0, name="scale")(keras.layers.GlobalAveragePooling1D()(x))
    model = keras.Model(sentence, keras.layers.Dense(1, name="score")(x), name="text_vec")
    _fit(model, text, rng.normal(size=(N, 1)))
    return model


def integer_lookup() -> keras.Model:
    """Sparse int64 ids -> IntegerLookup (fixed vocabulary) -> Embedding -> Scale."""
    keras.utils.set_random_seed(SEED)
    ids = keras.Input((2,), dtype="int64", name="ids")
    lookup = keras.layers.IntegerLookup(vocabulary=INT_VOCAB, name="lookup")
    x = keras.layers.Flatten()(keras.layers.Embedding(len(INT_VOCAB) + 1, 4)(lookup(ids)))
    x = Scale(1.0, name="scale")(x)
    model = keras.Model(ids, keras.layers.Dense(1, name="score")(x), name="integer_lookup")
    rng = _rng()
    _fit(model, rng.choice(INT_VOCAB, size=(N, 2)).astype("int64"), rng.normal(size=(N, 1)))
    return model


def mixed_precision() -> keras.Model:
    """mixed_float16 hidden layers (float16 compute), float32 output; ORT runs float16 kernels."""
    keras.utils.set_random_seed(SEED)
    features = keras.Input((12,), name="features")
    x = keras.layers.Dense(32, activation="relu", dtype="mixed_float16")(features)
    x = keras.layers.Dense(16, activation="tanh", dtype="mixed_float16")(x)
    x = Scale(1.0, name="scale", dtype="mixed_float16")(x)
    out = keras.layers.Dense(2, name="out", dtype="float32")(x)
    model = keras.Model(features, out, name="mixed")
    rng = _rng()
    _fit(model, rng.normal(size=(N, 12)).astype("float32"), rng.normal(size=(N, 2)))
    return model


def dict_inputs() -> keras.Model:
    """Dict of float32, int64 and string inputs (a tabular model), two named outputs."""
    keras.utils.set_random_seed(SEED)
    rng = _rng()
    inputs = {
        "price": keras.Input((3,), name="price"),
        "store": keras.Input((1,), dtype="int64", name="store"),
        "city": keras.Input((1,), dtype="string", name="city"),
    }
    city_lookup = keras.layers.StringLookup(vocabulary=WORDS[:5], name="city_lookup")
    store = keras.layers.Flatten()(keras.layers.Embedding(10, 3)(inputs["store"]))
    city = keras.layers.Flatten()(keras.layers.Embedding(6, 3)(city_lookup(inputs["city"])))
    x = keras.layers.Concatenate()([inputs["price"], store, city])
    x = Offset(0.0, name="offset")(keras.layers.Dense(8, activation="relu")(x))
    outputs = {
        "demand": keras.layers.Dense(1, name="demand")(x),
        "margin": keras.layers.Dense(1, name="margin")(x),
    }
    model = keras.Model(inputs, outputs, name="dict_inputs")
    data = {
        "price": rng.normal(size=(N, 3)).astype("float32"),
        "store": rng.integers(0, 10, size=(N, 1)).astype("int64"),
        "city": rng.choice(WORDS[:6], size=(N, 1)),
    }
    _fit(model, data, {"demand": rng.normal(size=(N, 1)), "margin": rng.normal(size=(N, 1))})
    return model


def hashing_lookup() -> keras.Model:
    """StringLookup with hashed OOV buckets: SavedModel only (no faithful ONNX FarmHash)."""
    keras.utils.set_random_seed(SEED)
    colour = keras.Input((1,), dtype="string", name="colour")
    lookup = keras.layers.StringLookup(vocabulary=WORDS[:4], num_oov_indices=3)
    x = keras.layers.Flatten()(keras.layers.Embedding(7, 2)(lookup(colour)))
    x = Offset(0.0, name="offset")(x)
    model = keras.Model(colour, keras.layers.Dense(1, name="score")(x), name="hashing")
    rng = _rng()
    _fit(model, rng.choice(WORDS, size=(N, 1)), rng.normal(size=(N, 1)))
    return model


def grouped_conv() -> keras.Model:
    """ResNeXt/RegNet-style grouped Conv2D(groups=4), then a ConvNeXt-style depthwise
    Conv2D(groups=channels): Keras 3's TF backend runs each through a nested XLA function."""
    keras.utils.set_random_seed(SEED)
    image = keras.Input((12, 12, 8), name="image")
    x = keras.layers.Conv2D(16, 3, padding="same", groups=4, use_bias=False, name="grouped")(image)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    x = keras.layers.Conv2D(16, 5, padding="same", groups=16, name="depthwise")(x)
    x = keras.layers.LayerNormalization(epsilon=1e-6)(x)
    x = Scale(1.0, name="scale")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(image, keras.layers.Dense(3, name="logits")(x), name="grouped_conv")
    rng = _rng()
    _fit(model, rng.normal(size=(N, 12, 12, 8)).astype("float32"), rng.normal(size=(N, 3)))
    return model


KERAS3 = {
    "mobilenet": mobilenet,
    "bn_cnn": bn_cnn,
    "grouped_conv": grouped_conv,
    "bilstm": bilstm,
    "bigru": bigru,
    "transformer": transformer,
    "string_lookup": string_lookup,
    "text_vectorization": text_vectorization,
    "integer_lookup": integer_lookup,
    "mixed_precision": mixed_precision,
    "dict_inputs": dict_inputs,
}
#: The models whose inputs are raw strings: served over REST and gRPC too.
STRING_INPUT = {"string_lookup", "text_vectorization", "dict_inputs"}
#: The models holding lookup tables.
TABLES = {"string_lookup", "text_vectorization", "integer_lookup", "dict_inputs"}


def save_keras3(name: str, directory: Path) -> tuple[Path, dict[str, float]]:
    """Build, train and save one Keras 3 matrix model; return its file and initial scalars."""
    model = KERAS3[name]()
    path = directory / f"{name}.keras"
    model.save(path)
    return path, {"scale": 1.0, "offset": 0.0}
