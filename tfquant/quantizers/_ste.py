"""Pure straight-through-estimator (STE) functions.

Every function here is stateless: a forward pass in a form Larq Compute Engine recognises
(``LceQuantize`` for signs) and a surrogate gradient written with ``tf.custom_gradient``. The classes in
``tfquant.quantizers`` are thin serializable wrappers around these.
"""

from __future__ import annotations

from tfquant._keras import tf


def _sign_zero_positive(x: tf.Tensor) -> tf.Tensor:
    # sign with sign(0) = +1 in the form LCE turns into LceQuantize: sign(sign(x) + 0.1).
    return tf.sign(tf.sign(x) + 0.1)


def _clip_mask(x: tf.Tensor, clip_value: float | None) -> tf.Tensor | None:
    if clip_value is None:
        return None
    return tf.cast(tf.abs(x) <= clip_value, x.dtype)


def ste_sign(x: tf.Tensor, clip_value: float | None = 1.0) -> tf.Tensor:
    r"""Sign with a straight-through gradient.

    \\[ q(x) = \begin{cases} -1 & x < 0 \\ 1 & x \ge 0 \end{cases}, \qquad
        \frac{\partial q}{\partial x} = 1_{|x| \le c} \\]

    With ``clip_value=None`` the gradient passes unchanged everywhere.
    """

    @tf.custom_gradient
    def _call(x):
        def grad(dy):
            mask = _clip_mask(x, clip_value)
            return dy if mask is None else dy * mask

        return _sign_zero_positive(x), grad

    return _call(tf.convert_to_tensor(x))


def approx_sign(x: tf.Tensor) -> tf.Tensor:
    r"""Sign with Bi-Real Net's piecewise polynomial surrogate gradient.

    \\[ q(x) = \operatorname{sign}(x), \qquad
        \frac{\partial q}{\partial x} = (2 - 2|x|)\, 1_{|x| \le 1} \\]

    References: Liu et al., "Bi-Real Net", ECCV 2018.
    """

    @tf.custom_gradient
    def _call(x):
        def grad(dy):
            abs_x = tf.abs(x)
            return dy * tf.where(abs_x <= 1.0, 2.0 - 2.0 * abs_x, tf.zeros_like(x))

        return _sign_zero_positive(x), grad

    return _call(tf.convert_to_tensor(x))


def _channel_matrix(x: tf.Tensor, per_channel: bool) -> tf.Tensor:
    """View ``x`` as (elements, channels) with the last axis as output channel."""
    if per_channel and x.shape.rank and x.shape.rank > 1:
        return tf.reshape(x, (-1, tf.shape(x)[-1]))
    return tf.reshape(x, (-1, 1))


def channel_scale(x: tf.Tensor, per_channel: bool = True) -> tf.Tensor:
    """Mean absolute value per output channel (last axis), broadcastable against ``x``."""
    scale = tf.reduce_mean(tf.abs(_channel_matrix(x, per_channel)), axis=0)
    return scale if per_channel and x.shape.rank and x.shape.rank > 1 else tf.reshape(scale, ())


def scaled_sign(
    x: tf.Tensor, clip_value: float | None = None, per_channel: bool = True
) -> tf.Tensor:
    r"""XNOR-Net weight binarisation: :math:`\alpha_o \operatorname{sign}(w)`.

    \\[ q(w)_{\cdot o} = \alpha_o \operatorname{sign}(w_{\cdot o}), \quad
        \alpha_o = \operatorname{mean} |w_{\cdot o}|, \qquad
        \frac{\partial q}{\partial w} = 1_{|w| \le c} \\]

    The scale is treated as a constant in the backward pass (straight-through on the whole
    product). LCE folds ``alpha_o`` into LceBconv2d's output multiplier.

    References: Rastegari et al., "XNOR-Net", ECCV 2016.
    """

    @tf.custom_gradient
    def _call(x):
        def grad(dy):
            mask = _clip_mask(x, clip_value)
            return dy if mask is None else dy * mask

        alpha = tf.stop_gradient(channel_scale(x, per_channel))
        return alpha * _sign_zero_positive(x), grad

    return _call(tf.convert_to_tensor(x))


def ternary_support(x: tf.Tensor, method: str, per_channel: bool, threshold_value: float):
    """Return (alpha, mask) of the ternary approximation ``alpha * sign(x) * mask``.

    ``alpha`` and ``mask`` broadcast against ``x``. See :func:`ste_ternary`.
    """
    if method == "fixed":
        return tf.ones((), x.dtype), tf.cast(tf.abs(x) > threshold_value, x.dtype)
    mat = tf.abs(_channel_matrix(x, per_channel))  # (n, C)
    if method == "twn":
        delta = 0.7 * tf.reduce_mean(mat, axis=0)
        keep = tf.cast(mat > delta, x.dtype)
    elif method == "optimal":
        # Exact minimiser of ||w - alpha t||^2 over t in {-1,0,1}^n, alpha > 0: keep the k
        # largest |w|, k maximising (sum of top-k |w|)^2 / k (Li & Liu 2016, appendix). On
        # an exact tie the largest k wins, as in TSQ's Caffe code (tfquant.methods.tsq).
        ordered = -tf.sort(-mat, axis=0)
        csum = tf.cumsum(ordered, axis=0)
        n = tf.shape(mat)[0]
        k = tf.cast(tf.range(1, n + 1), x.dtype)[:, None]
        score = tf.square(csum) / k
        best = tf.cast(n - 1, tf.int64) - tf.argmax(tf.reverse(score, axis=[0]), axis=0)
        threshold = tf.experimental.numpy.take_along_axis(ordered, best[None, :], axis=0)
        keep = tf.cast(mat >= threshold, x.dtype)
    else:  # validated by the class
        raise ValueError(f"Unknown ternary method: {method!r}")
    alpha = tf.reduce_sum(mat * keep, axis=0) / tf.maximum(tf.reduce_sum(keep, axis=0), 1.0)
    mask = tf.reshape(keep, tf.shape(x))
    if not (per_channel and x.shape.rank and x.shape.rank > 1):
        alpha = tf.reshape(alpha, ())
    return alpha, mask


def ste_ternary(
    x: tf.Tensor,
    method: str = "twn",
    per_channel: bool = True,
    threshold_value: float = 0.5,
    clip_value: float | None = 1.0,
) -> tf.Tensor:
    r"""Ternary quantization with a straight-through gradient.

    \\[ q(w) = \alpha\, \operatorname{sign}(w)\, 1_{|w| > \Delta}, \qquad
        \frac{\partial q}{\partial w} = 1_{|w| \le c} \\]

    * ``"twn"``: :math:`\Delta = 0.7\,\operatorname{mean}|w|`, :math:`\alpha` the mean of the
      kept :math:`|w|` (Li & Liu, "Ternary Weight Networks", 2016).
    * ``"optimal"``: the exact minimiser of :math:`\|w - \alpha t\|^2` per channel (sort
      :math:`|w|`, keep the top :math:`k` maximising :math:`(\sum_{i \le k} |w|_{(i)})^2 / k`).
    * ``"fixed"``: :math:`\Delta` = ``threshold_value`` and :math:`\alpha = 1`: levels exactly
      :math:`\{-1, 0, 1\}` (mirror descent's hard ternary projection thresholds at 0.5).
    """

    @tf.custom_gradient
    def _call(x):
        def grad(dy):
            mask = _clip_mask(x, clip_value)
            return dy if mask is None else dy * mask

        alpha, keep = ternary_support(x, method, per_channel, threshold_value)
        alpha, keep = tf.stop_gradient(alpha), tf.stop_gradient(keep)
        return alpha * tf.sign(x) * keep, grad

    return _call(tf.convert_to_tensor(x))


def ste_round(x: tf.Tensor) -> tf.Tensor:
    r"""Round to the nearest integer (half away from zero) with an identity gradient."""

    @tf.custom_gradient
    def _call(x):
        return tf.sign(x) * tf.floor(tf.abs(x) + 0.5), lambda dy: dy

    return _call(tf.convert_to_tensor(x))


def uniform_quantize(x: tf.Tensor, bits: int, mode: str = "activation") -> tf.Tensor:
    r"""k-bit uniform quantization (DoReFa-Net).

    With :math:`n = 2^k - 1` and :math:`r_n(v) = \operatorname{round}(n v) / n` (STE):

    * activations: :math:`q(x) = r_n(\operatorname{clip}(x, 0, 1))`, gradient
      :math:`1_{0 \le x \le 1}`; levels :math:`\{0, 1/n, \dots, 1\}`;
    * weights: :math:`q(w) = 2\, r_n\!\left(\frac{\tanh w}{2 \max |\tanh w|} + \frac12\right) - 1`,
      gradient through the smooth part; levels :math:`\{-1, -1 + 2/n, \dots, 1\}`.

    References: Zhou et al., "DoReFa-Net", 2016.
    """
    n = float(2**bits - 1)
    if mode == "activation":
        return ste_round(tf.clip_by_value(x, 0.0, 1.0) * n) / n
    t = tf.tanh(x)
    t = t / (2.0 * tf.reduce_max(tf.abs(t)) + 1e-12) + 0.5
    return 2.0 * ste_round(t * n) / n - 1.0


def sparse_quantize(x: tf.Tensor, threshold: float, step: float, bits: int = 2) -> tf.Tensor:
    r"""Two-Step Quantization's sparse activation quantizer with a clipped straight-through
    gradient (TSQ's sparse quantization, as in the authors' ``relu2b_layer``).

    With :math:`n = 2^b - 1`, threshold :math:`\epsilon` and step :math:`\delta`:

    \\[ q(x) = \begin{cases} 0 & x \le \epsilon \\
        \delta\, \min\!\big(n, \max(1, \lceil x/\delta - \tfrac12 \rceil)\big) & x > \epsilon
        \end{cases}, \qquad \frac{\partial q}{\partial x} = 1_{0 < x < n\delta} \\]

    The bins are closed on the right, :math:`(\epsilon, 1.5\delta], (1.5\delta, 2.5\delta],
    \dots`, and the gradient gate opens at 0, not at :math:`\epsilon`. The boundaries are
    compared directly (computed in float64, then cast) rather than through ``x / delta``, so
    an input equal to a boundary lands in the lower bin exactly. The general-``b`` form is a
    reconstruction (the released code is 2-bit).

    References: Wang et al., "Two-Step Quantization for Low-bit Neural Networks", CVPR 2018.
    """
    n = 2**bits - 1
    x = tf.convert_to_tensor(x)
    bounds = [(k + 0.5) * step for k in range(1, n)]

    @tf.custom_gradient
    def _call(x):
        def grad(dy):
            inside = tf.logical_and(x > 0.0, x < tf.constant(n * step, x.dtype))
            return dy * tf.cast(inside, x.dtype)

        # d [x > eps] (1 + sum_k [x > b_k]): scalar constants only, so a converted graph
        # holds no activation-sized constant (zeros_like / ones_like fold into one)
        count = tf.constant(1.0, x.dtype)
        for bound in bounds:
            count += tf.cast(x > tf.constant(bound, x.dtype), x.dtype)
        on = tf.cast(x > tf.constant(threshold, x.dtype), x.dtype)
        return on * count * tf.constant(step, x.dtype), grad

    return _call(x)
