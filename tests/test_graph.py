"""tfquant.graph: consumers, the graph walk and BatchNorm folding."""

import numpy as np

from tfquant import graph
from tfquant._keras import keras


def _model():
    x = keras.Input((6,))
    d = keras.layers.Dense(4, name="d")(x)
    bn = keras.layers.BatchNormalization(name="bn")(d)
    e = keras.layers.Dense(3, activation="relu", name="e")(bn)
    out = keras.layers.BatchNormalization(name="bn2")(e)
    return keras.Model(x, [out, bn])


def test_consumers_and_nodes():
    model = _model()
    readers = graph.consumers(model)
    assert [c.name for c in readers["d"]] == ["bn"]
    assert sorted(c.name if c else "OUTPUT" for c in readers["bn"]) == ["OUTPUT", "e"]
    nodes = graph.nodes_by_layer(model)
    assert graph.input_shape(model.get_layer("e"), nodes) == (None, 4)
    names = [n.operation.name for n in graph.graph_nodes(model)]
    assert names.index("d") < names.index("bn") < names.index("e")


def test_foldable_batchnorm():
    model = _model()
    assert graph.following_batchnorm(model, model.get_layer("d")).name == "bn"
    # "e" has an activation of its own: its BatchNorm does not fold
    assert graph.following_batchnorm(model, model.get_layer("e")) is None


def test_subclassed_model_has_no_graph():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(2)

        def call(self, x):
            return self.d(x)

    net = Net()
    net(np.zeros((1, 3), "float32"))
    assert graph.functional(net) is None and graph.graph_nodes(net) == []


def test_fold_batchnorm_matches_keras():
    model = _model()
    dense, bn = model.get_layer("d"), model.get_layer("bn")
    rng = np.random.default_rng(0)
    bn.set_weights(
        [rng.uniform(0.5, 2, 4), rng.normal(size=4), rng.normal(size=4), rng.uniform(0.5, 2, 4)]
    )
    kernel, bias, k = graph.fold_batchnorm(dense.kernel.numpy(), dense.bias.numpy(), bn)
    x = rng.normal(size=(5, 6)).astype("float32")
    want = bn(dense(x), training=False).numpy()
    np.testing.assert_allclose(x @ kernel + bias, want, rtol=1e-5, atol=1e-5)
    g, h = graph.batchnorm_affine(bn)
    np.testing.assert_allclose(g, k, rtol=1e-6)
    np.testing.assert_allclose(dense(x).numpy() * g + h, want, rtol=1e-5, atol=1e-5)
