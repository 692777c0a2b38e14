"""Cluster-Promoting Quantization (CPQ) with DropBits and learned bit-widths on Fashion-MNIST.

Measures the hard-quantized test accuracy of ``tfquant.zoo.binary_cnn`` (float stem and
classifier, four hidden 3x3 convolutions whose inputs and kernels are quantized) trained
the same way in every variant: Adam at learning rate 1e-3 for ``--epochs`` epochs on the
first ``--train`` training images, batch ``--batch-size``, then ``tfquant.finalize`` (each
quantizer's learned bit-width fixed, kernels exactly on their grids, BatchNorm re-estimated
on 20 training batches) and one evaluation on the test set (used for nothing else):

* ``float``: ``zoo.build(..., method="float")``, the reference.
* ``cpq2``, ``cpq3``, ``cpq4``: ``method="cpq"`` at 2, 3, 4 bits (inputs and kernels), with
  DropBits scheme ``"A"`` on the kernels (the method's default).
* ``cpq3_nodrop``: ``cpq3`` without DropBits (``dropbits=None``): what DropBits adds.
* ``dorefa2``, ``dorefa3``, ``dorefa4``: ``method="dorefa"``, DoReFa-Net's k-bit weights and
  activations with a straight-through estimator: CPQ's baseline.
* ``cpq_learned``: ``method="cpq"`` with ``learn_bits=True`` from 4 bits: every kernel
  quantizer gets ``bit_penalty = --bit-penalty`` and its top gate (the 4th bit's level,
  ``bit_gates[-1]``) starts at ``log a = --top-gate-init``, just open (see below); the
  learned per-layer bits are read off after training.
* ``cpq_fixed``: the same per-layer bits trained from scratch with the widths held fixed:
  a 4-bit ``cpq`` model whose kernel quantizers' gates are set so that ``learned_bits()``
  equals the ``cpq_learned`` layer's bits of the same seed, then ``finalize()``-d before
  training (gates constant, not trainable). CPQ's hypothesis: learned beats fixed.

Why the top gate starts near closing: with Adam every gate moves at most about the
learning rate per step whatever ``bit_penalty`` is (Adam normalises the gradient), and a
test-time gate closes at ``log a <= -log(11) = -2.398`` (``sigmoid(log a) * 1.2 - 0.1 <= 0``).
From the quantizer's ``gate_init = 3.0`` that is over 5000 steps of penalty alone, far
beyond this benchmark's budget; starting the top gate at ``--top-gate-init`` (default
-2.37: open, 4 bits at the start) lets a layer drop a level within about 30-60 steps when
the penalty outweighs the task's pull on that gate, and keep it otherwise. The default
``--bit-penalty`` 2e-3 was chosen from the task-loss gradients on the top gates measured at
the start (about 1e-5 to 5e-4 per layer, by layer): the penalty's gradient there,
``lambda_b P(1 - P)`` with ``P = P(z != 0) = 0.32``, is about 4.3e-4, between them.

Every variant runs once per seed of ``--seeds`` (a seed fixes the initial weights and the
data order). The JSON gives per-seed accuracies, train seconds and step times, the learned
bits, the paired gains in accuracy points (``common.paired_gain``, 95% interval over
seeds), four targets with verdicts (3-bit CPQ within 1 point of float; CPQ >= DoReFa at 2
bits; DropBits helps at 3 bits; learned widths beat fixed ones), a step-time and peak
memory table of CPQ vs DoReFa at 2, 3, 4 bits (per bit width one subprocess that trains
both models in alternating steps: the median and quartiles of the per-step ratio, against
the target 1.5x; one subprocess per configuration for the peak RSS ``VmHWM``, against
1.2x), and, unless ``--no-convert``, the conversion of the first seed's ``cpq3`` model
(ops, per-layer ``became`` and reasons, size vs float, TFLite vs Keras argmax agreement on
the test set).

The defaults are the study: the whole Fashion-MNIST training set (60,000 images), 3
epochs (1,407 steps per run), 3 seeds, the whole test set: 30 training runs; see
benchmarks/README.md for the estimated wall time::

    .venv/bin/python benchmarks/cpq.py --out runs/cpq.json --png runs/cpq.png

The step-time and memory table alone (no training runs)::

    .venv/bin/python benchmarks/cpq.py --variants float --seeds 0 --train 256 --test 128 \
        --epochs 1 --no-convert --timing-steps 30 --out runs/cpq_timing.json

A smoke run (tiny sizes, under a minute)::

    .venv/bin/python benchmarks/cpq.py --smoke --variants float,cpq3,cpq_learned,cpq_fixed
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import common  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfquant  # noqa: E402
from tfquant import zoo  # noqa: E402
from tfquant.models import quantized_layers  # noqa: E402
from tfquant.train import layer_bits  # noqa: E402

VARIANTS = (
    "float",
    "cpq2",
    "cpq3",
    "cpq4",
    "cpq3_nodrop",
    "dorefa2",
    "dorefa3",
    "dorefa4",
    "cpq_learned",
    "cpq_fixed",
)
QUANT_LAYERS = ("s0_conv0", "s0_conv1", "s1_conv0", "s1_conv1")
LEARNING_RATE = 1e-3
BN_BATCHES = 20  # finalize re-estimates BatchNorm on this many training batches
LEARN_FROM_BITS = 4
TARGET_WITHIN_FLOAT_POINTS = -1.0  # cpq3 - float, in accuracy points, at least
TARGET_AGREEMENT = 0.995  # TFLite vs Keras argmax agreement on the test set, at least
WARMUP_STEPS = 5  # step times of the first steps (tracing) are dropped
TARGET_STEP_RATIO = 1.5  # CPQ's training step / DoReFa's, at most (median of interleaved pairs)
TARGET_RSS_RATIO = 1.2  # CPQ's peak RSS / DoReFa's, at most
SMOKE = {"train": 256, "test": 128, "epochs": 1, "timing_steps": 7, "timing_bits": "2"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"some of {VARIANTS}")
    p.add_argument("--train", type=int, default=0, help="training images (0: all 60k)")
    p.add_argument("--test", type=int, default=0, help="test images (0: all 10k)")
    p.add_argument("--epochs", type=int, default=3, help="epochs of every variant")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument(
        "--bit-penalty", type=float, default=2e-3, help="cpq_learned: each kernel's lambda_b"
    )
    p.add_argument(
        "--top-gate-init",
        type=float,
        default=-2.37,
        help="cpq_learned: initial log a of the top bit level's gate (> -2.398: open)",
    )
    p.add_argument(
        "--timing-steps",
        type=int,
        default=20,
        help="interleaved CPQ / DoReFa step pairs timed per bit width (0: skip the table)",
    )
    p.add_argument("--timing-bits", default="2,3,4", help="bits of the timing table")
    p.add_argument("--out", default=None, help="also write the JSON here")
    p.add_argument("--png", default=None, help="plot the accuracies here (needs matplotlib)")
    p.add_argument("--no-convert", action="store_true", help="skip the conversion")
    p.add_argument(
        "--smoke",
        action="store_true",
        help=f"tiny sizes for a test: {SMOKE} (overrides those options)",
    )
    p.add_argument("--_timing", default=None, help=argparse.SUPPRESS)  # METHOD:BITS, internal
    args = p.parse_args(argv)
    if args.smoke:
        for k, v in SMOKE.items():
            setattr(args, k, v)
    if args.epochs < 1:
        p.error(f"Expected --epochs >= 1. Received: --epochs={args.epochs}")
    if args.batch_size < 1:
        p.error(f"Expected --batch-size >= 1. Received: --batch-size={args.batch_size}")
    for name in ("train", "test", "timing_steps"):
        if getattr(args, name) < 0:
            p.error(f"Expected --{name.replace('_', '-')} >= 0. Received: {getattr(args, name)}")
    if 0 < args.timing_steps <= WARMUP_STEPS:
        p.error(
            f"Expected --timing-steps 0 or > {WARMUP_STEPS} (warm-up steps are dropped). "
            f"Received: {args.timing_steps}"
        )
    if not (np.isfinite(args.bit_penalty) and args.bit_penalty >= 0):
        p.error(f"Expected --bit-penalty >= 0. Received: {args.bit_penalty}")
    if not np.isfinite(args.top_gate_init):
        p.error(f"Expected a finite --top-gate-init. Received: {args.top_gate_init}")
    try:
        bits = [int(b) for b in args.timing_bits.split(",") if b.strip()]
    except ValueError:
        bits = []
    if not bits or any(not 1 <= b <= 8 for b in bits) or len(set(bits)) != len(bits):
        p.error(f"Expected --timing-bits distinct integers in 1..8. Received: {args.timing_bits!r}")
    args.timing_bits = bits
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or not variants:
        p.error(f"Expected --variants among {VARIANTS}. Received: {args.variants!r}")
    if len(set(variants)) != len(variants):
        p.error(f"Expected each of --variants once. Received: {args.variants!r}")
    if "cpq_fixed" in variants and "cpq_learned" not in variants:
        p.error("Expected --variants cpq_fixed with cpq_learned (it trains the learned bits)")
    args.variants = [v for v in VARIANTS if v in variants]
    args.seeds = common.parse_seeds(p, args.seeds)
    if len(set(args.seeds)) != len(args.seeds):
        p.error(f"Expected distinct --seeds. Received: {args.seeds}")
    if args._timing is not None:
        method, _, b = args._timing.partition(":")
        if method not in ("cpq", "dorefa", "pair") or not b.isdigit():
            p.error(f"Expected --_timing cpq:B, dorefa:B or pair:B. Received: {args._timing!r}")
    return args


# ----------------------------------------------------------------- the variants
def kernel_quantizers(model: keras.Model) -> dict:
    return {layer.name: layer.kernel_quantizer for layer in quantized_layers(model)}


def build(variant: str, input_shape, seed: int, args, fixed_bits: dict | None = None):
    keras.utils.set_random_seed(seed)
    kwargs = {"input_shape": input_shape, "classes": 10}
    if variant == "float":
        return zoo.build("binary_cnn", method="float", **kwargs)
    if variant.startswith("dorefa"):
        return zoo.build(
            "binary_cnn", method="dorefa", method_options={"bits": int(variant[6])}, **kwargs
        )
    if variant in ("cpq2", "cpq3", "cpq4", "cpq3_nodrop"):
        options = {"bits": int(variant[3]), "dropbits": None if "nodrop" in variant else "A"}
        return zoo.build("binary_cnn", method="cpq", method_options=options, **kwargs)
    learn = variant == "cpq_learned"
    options = {"bits": LEARN_FROM_BITS, "dropbits": "A", "learn_bits": learn}
    model = zoo.build("binary_cnn", method="cpq", method_options=options, **kwargs)
    for name, q in kernel_quantizers(model).items():
        gates = q.bit_gates.numpy()
        if learn:
            q.bit_penalty = float(args.bit_penalty)
            gates[-1] = args.top_gate_init
            q.bit_gates.assign(gates)
            if q.learned_bits() != LEARN_FROM_BITS:
                raise ValueError(
                    f"--top-gate-init {args.top_gate_init} closes {name}'s top gate at the "
                    f"start ({q.learned_bits()} bits, not {LEARN_FROM_BITS})"
                )
        else:  # cpq_fixed: the learned layer's width, fixed before training
            b = fixed_bits[name]
            q.bit_gates.assign(
                np.asarray([10.0 if j < b - 1 else -10.0 for j in range(len(gates))], np.float32)
            )
            if q.finalize() != b or q.learned_bits() != b or q.bit_gates.trainable:
                raise RuntimeError(f"{name}: could not fix the width at {b} bits")
    return model


def run_variant(variant: str, args, train, test, seed: int, fixed_bits=None):
    model = build(variant, train[0].shape[1:], seed, args, fixed_bits)
    run: dict = {"seed": seed}
    if variant == "cpq_learned":
        run["gates_start"] = {
            n: q.bit_gates.numpy().tolist() for n, q in kernel_quantizers(model).items()
        }
    if variant == "cpq_fixed":
        run["fixed_bits"] = dict(fixed_bits)
    timer = common.StepTimer(skip=WARMUP_STEPS)
    model.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    history = model.fit(
        *train,
        batch_size=args.batch_size,
        epochs=args.epochs,
        verbose=0,
        shuffle=True,
        callbacks=[timer],
    )
    run["train_seconds"] = time.perf_counter() - start
    run["ms_per_step"] = 1000 * timer.seconds_per_step
    run["steps"] = len(timer.times)
    run["train_accuracy_last_epoch"] = float(history.history["accuracy"][-1])
    if variant == "cpq_learned":
        qs = kernel_quantizers(model)
        run["gates_end"] = {n: q.bit_gates.numpy().tolist() for n, q in qs.items()}
        run["learned_bits"] = {n: q.learned_bits() for n, q in qs.items()}
    tfquant.finalize(model, train[0][: BN_BATCHES * args.batch_size], batch_size=args.batch_size)
    run["test_accuracy"] = common.accuracy(model, *test)
    if variant.startswith("cpq"):
        run["layer_bits"] = layer_bits(model)
    return model, run


# ----------------------------------------------------------------- step time and memory
def _status_mib(field: str) -> float:
    """``VmRSS`` or ``VmHWM`` (peak RSS) of this process in MiB. Not ``ru_maxrss``: on Linux
    it survives fork + exec, so a child of the (large) benchmark process reports its parent's
    RSS at the fork; ``VmHWM`` belongs to the new address space of the exec."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _timing_model(method: str, bits: int) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = zoo.build(
        "binary_cnn",
        method=method,
        method_options={"bits": bits},
        input_shape=(28, 28, 1),
        classes=10,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE), loss="sparse_categorical_crossentropy"
    )
    return model


def _random_batch(batch_size: int):
    rng = np.random.default_rng(0)
    return rng.random((batch_size, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, batch_size)


def timing_child(args) -> dict:
    """In a fresh process. ``cpq:B`` or ``dorefa:B``: the peak RSS of training one
    configuration (``WARMUP_STEPS`` + 3 steps). ``pair:B``: both models in this process,
    ``WARMUP_STEPS`` steps each, then ``--timing-steps`` rounds of one step of each, in
    alternating order, so that the other jobs' load hits both alike; per round the ratio of
    the two step times."""
    method, _, b = args._timing.partition(":")
    x, y = _random_batch(args.batch_size)
    if method == "pair":
        models = {m: _timing_model(m, int(b)) for m in ("cpq", "dorefa")}
        for model in models.values():
            for _ in range(WARMUP_STEPS):
                model.train_on_batch(x, y)
        times: dict = {"cpq": [], "dorefa": []}
        for i in range(args.timing_steps):
            for m in ("cpq", "dorefa") if i % 2 == 0 else ("dorefa", "cpq"):
                start = time.perf_counter()
                models[m].train_on_batch(x, y)
                times[m].append(time.perf_counter() - start)
        ratios = np.asarray(times["cpq"]) / np.asarray(times["dorefa"])
        q1, median, q3 = np.percentile(ratios, [25, 50, 75])
        return {
            "method": "pair",
            "bits": int(b),
            "rounds": len(ratios),
            "step_time_ratio_median": float(median),
            "step_time_ratio_quartiles": [float(q1), float(q3)],
            "cpq_ms_per_step": 1000 * float(np.median(times["cpq"])),
            "dorefa_ms_per_step": 1000 * float(np.median(times["dorefa"])),
        }
    model = _timing_model(method, int(b))
    rss_before = _status_mib("VmRSS")
    for _ in range(WARMUP_STEPS + 3):
        model.train_on_batch(x, y)
    return {
        "method": method,
        "bits": int(b),
        "rss_before_fit_mib": rss_before,
        "peak_rss_mib": _status_mib("VmHWM"),
        "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def timing_table(args) -> dict:
    rows, errors = [], []
    for b in args.timing_bits:
        for method in ("pair", "cpq", "dorefa"):
            cmd = [
                sys.executable, __file__, "--_timing", f"{method}:{b}",
                "--batch-size", str(args.batch_size), "--timing-steps", str(args.timing_steps),
            ]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
            if proc.returncode != 0:
                errors.append({"config": f"{method}:{b}", "stderr": proc.stderr[-2000:]})
                continue
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"[cpq bench] timing {method}:{b}: {rows[-1]}", file=sys.stderr, flush=True)
    side_by_side = {}
    for b in args.timing_bits:
        row = {m: next((r for r in rows if r["method"] == m and r["bits"] == b), None)
               for m in ("pair", "cpq", "dorefa")}  # fmt: skip
        if not all(row.values()):
            continue
        c, d, pair = row["cpq"], row["dorefa"], row["pair"]
        side_by_side[str(b)] = {
            "cpq_ms_per_step": pair["cpq_ms_per_step"],
            "dorefa_ms_per_step": pair["dorefa_ms_per_step"],
            "step_time_ratio_cpq_over_dorefa": pair["step_time_ratio_median"],
            "step_time_ratio_quartiles": pair["step_time_ratio_quartiles"],
            "step_time_target": _verdict(pair["step_time_ratio_median"], TARGET_STEP_RATIO),
            "cpq_peak_rss_mib": c["peak_rss_mib"],
            "dorefa_peak_rss_mib": d["peak_rss_mib"],
            "peak_rss_ratio_cpq_over_dorefa": c["peak_rss_mib"] / d["peak_rss_mib"],
            "peak_rss_target": _verdict(c["peak_rss_mib"] / d["peak_rss_mib"], TARGET_RSS_RATIO),
            "cpq_rss_growth_in_fit_mib": c["peak_rss_mib"] - c["rss_before_fit_mib"],
            "dorefa_rss_growth_in_fit_mib": d["peak_rss_mib"] - d["rss_before_fit_mib"],
        }
    return {
        "how": (
            f"per bit width one fresh subprocess trains CPQ and DoReFa binary_cnn models (Adam, "
            f"batch {args.batch_size}, random images) {WARMUP_STEPS} warm-up steps each, then "
            f"{args.timing_steps} rounds of one step of each in alternating order: the median "
            "and quartiles of the per-round ratio CPQ / DoReFa, and each method's median ms; "
            "then one fresh subprocess per method for the peak RSS (VmHWM, TensorFlow's "
            f"runtime included) of {WARMUP_STEPS + 3} training steps; growth = peak minus the "
            "RSS before training"
        ),
        "rows": rows,
        "by_bits": side_by_side,
        **({"errors": errors} if errors else {}),
    }


def _verdict(measured: float, at_most: float) -> dict:
    return {"at_most": at_most, "measured": measured,
            "verdict": "met" if measured <= at_most else "missed"}  # fmt: skip


# ----------------------------------------------------------------- statistics and targets
PAIRS = (  # (a, b): the paired gain a - b, reported when both ran
    ("cpq2", "float"), ("cpq3", "float"), ("cpq4", "float"),
    ("cpq2", "dorefa2"), ("cpq3", "dorefa3"), ("cpq4", "dorefa4"),
    ("cpq3", "cpq3_nodrop"), ("cpq_learned", "cpq_fixed"), ("cpq_learned", "cpq4"),
)  # fmt: skip
TARGETS = (
    ("cpq3_within_1pt_of_float", "cpq3", "float", None),
    ("cpq_at_least_dorefa_2bit", "cpq2", "dorefa2", "CPQ at least as accurate as DoReFa at 2 bits"),
    ("dropbits_helps_3bit", "cpq3", "cpq3_nodrop", "DropBits helps at 3 bits (CPQ vs CPQ without)"),
    (
        "learned_beats_fixed",
        "cpq_learned",
        "cpq_fixed",
        "learned bit-widths beat the same widths trained from scratch, fixed",
    ),
)


# ----------------------------------------------------------------- conversion
def conversion(model: keras.Model, float_model: keras.Model | None, train, test) -> dict:
    c = common.convert_and_compare(model, float_model, train, test, QUANT_LAYERS)
    out = {
        "model": "cpq3, first seed, finalized",
        **{k: c[k] for k in ("convert_seconds", "layers", "ops", "sizes", "parity_64", "notes")},
        "quantized_layers_int8": c["layers_int8"],
        "quantized_layers_exact": c["layers_exact"],
        "tflite_bytes_cpq3": c["tflite_bytes"],
        **{k: c[k] for k in ("tflite_test_accuracy", "keras_test_accuracy", "max_abs_prob_diff")},
        "targets": {"tflite_keras_argmax_agreement": common.agreement_target(c, TARGET_AGREEMENT)},
    }
    if c["tflite_bytes_float"] is not None:
        out["tflite_bytes_float"] = c["tflite_bytes_float"]
        out["size_ratio_cpq3_over_float"] = c["tflite_bytes"] / c["tflite_bytes_float"]
    else:
        out["size_ratio_cpq3_over_float"] = None
        out["note"] = "float not among --variants: no size ratio"
    return out


def plot(results: dict, timing: dict | None, path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("[cpq bench] matplotlib not importable: no PNG", file=sys.stderr)
        return False
    by_bits = (timing or {}).get("by_bits") or {}
    panels = 3 if by_bits else 1
    fig, axes = plt.subplots(1, panels, figsize=(1.0 * len(results) + 3 + 4 * (panels - 1), 4.2),
                             gridspec_kw={"width_ratios": [2.5] + [1] * (panels - 1)}, squeeze=False)  # fmt: skip
    ax = axes[0][0]
    names = list(results)
    means = [results[n]["test_accuracy"] for n in names]
    ax.bar(range(len(names)), means, color="#9bb7d4", label="mean over seeds")
    for i, n in enumerate(names):
        points = results[n]["test_accuracy_per_seed"]
        ax.scatter([i] * len(points), points, color="black", s=14, zorder=3)
    if "float" in results:
        ax.axhline(results["float"]["test_accuracy"], ls="--", color="gray", label="float mean")
    low = min(min(results[n]["test_accuracy_per_seed"]) for n in names)
    ax.set_ylim(max(0.0, low - 0.05), min(1.0, max(means) + 0.03))
    ax.set_xticks(range(len(names)), names, rotation=35, ha="right")
    ax.set_ylabel("hard test accuracy")
    ax.set_title("binary_cnn on Fashion-MNIST: CPQ, DoReFa, float")
    ax.legend(loc="lower right")
    if by_bits:
        bits = sorted(by_bits, key=int)
        xs = np.arange(len(bits))
        for ax, key, label in (
            (axes[0][1], "ms_per_step", "ms per training step"),
            (axes[0][2], "peak_rss_mib", "peak RSS (MiB)"),
        ):
            ax.bar(xs - 0.2, [by_bits[b][f"cpq_{key}"] for b in bits], 0.4, label="CPQ")
            ax.bar(xs + 0.2, [by_bits[b][f"dorefa_{key}"] for b in bits], 0.4, label="DoReFa")
            ax.set_xticks(xs, [f"{b} bits" for b in bits])
            ax.set_title(label)
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# ----------------------------------------------------------------- main
def main(argv=None) -> dict:
    args = parse_args(argv)
    if args._timing is not None:
        result = timing_child(args)
        print(json.dumps(result))
        return result
    wall = time.perf_counter()
    train, test = common.load_data(
        "fashion_mnist", subset=args.train or None, test_subset=args.test or None
    )
    runs: dict = {v: [] for v in args.variants}
    kept: dict = {}  # the first seed's finalized cpq3 and float models, for the conversion
    for seed in args.seeds:
        learned_bits = None
        for variant in args.variants:
            model, run = run_variant(variant, args, train, test, seed, learned_bits)
            if variant == "cpq_learned":
                learned_bits = run["learned_bits"]
            runs[variant].append(run)
            if seed == args.seeds[0] and variant in ("cpq3", "float") and not args.no_convert:
                kept[variant] = model
            extra = f" bits {run['learned_bits']}" if "learned_bits" in run else ""
            print(
                f"[cpq bench] seed {seed} {variant}: {run['test_accuracy']:.4f} "
                f"({run['train_seconds']:.0f} s, {run['ms_per_step']:.0f} ms/step){extra}",
                file=sys.stderr,
                flush=True,
            )

    results = {}
    for variant, rs in runs.items():
        results[variant] = {
            **common.over_seeds("test_accuracy", [r["test_accuracy"] for r in rs]),
            "train_seconds_per_seed": [r["train_seconds"] for r in rs],
            "ms_per_step_per_seed": [r["ms_per_step"] for r in rs],
            "steps": rs[0]["steps"],
        }
        if variant.startswith("cpq"):
            results[variant]["layer_bits_per_seed"] = [r["layer_bits"] for r in rs]
        if variant == "cpq_learned":
            for key in ("learned_bits", "gates_start", "gates_end"):
                results[variant][f"{key}_per_seed"] = [r[key] for r in rs]
        if variant == "cpq_fixed":
            results[variant]["fixed_bits_per_seed"] = [r["fixed_bits"] for r in rs]

    paired, targets = {}, {}
    for a, b in PAIRS:
        if a in results and b in results:
            paired[f"{a}_minus_{b}_points"] = common.to_points(
                common.paired_gain(
                    results[a]["test_accuracy_per_seed"], results[b]["test_accuracy_per_seed"]
                )
            )
    for key, a, b, text in TARGETS:
        gain = paired.get(f"{a}_minus_{b}_points")
        if gain is None:
            continue
        targets[key] = (
            common.verdict_within(
                gain, "3-bit CPQ within 1.0 point of float", TARGET_WITHIN_FLOAT_POINTS
            )
            if text is None
            else common.verdict_ahead(gain, text)
        )

    out = {
        "benchmark": "cpq",
        "data": "fashion_mnist",
        "model": "tfquant.zoo.binary_cnn (float stem and classifier, 4 hidden quantized 3x3 convs)",
        "train_images": len(train[0]),
        "test_images": len(test[0]),
        "config": {
            **{k: v for k, v in vars(args).items() if k not in ("out", "png", "_timing")},
            "learning_rate": LEARNING_RATE,
            "optimizer": "Adam",
            "bn_batches": BN_BATCHES,
            "learned_from_bits": LEARN_FROM_BITS,
            "dropbits_default": "A (kernels only), drop_rate 0.1",
        },
        "machine": common.machine(),
        "results": results,
        "paired": paired,
        "targets": targets,
    }
    if args.timing_steps:
        out["step_time_memory"] = timing_table(args)
    if not args.no_convert:
        if "cpq3" in kept:
            try:
                out["conversion"] = conversion(kept["cpq3"], kept.get("float"), train, test)
            except Exception as e:  # keep the training results of a long run
                print(f"[cpq bench] conversion failed: {e!r}", file=sys.stderr, flush=True)
                out["conversion"] = {"error": repr(e)}
        else:
            out["conversion"] = {"skipped": "cpq3 not among --variants"}
    out["wall_seconds"] = time.perf_counter() - wall
    if args.png:
        out["png"] = args.png if plot(results, out.get("step_time_memory"), args.png) else None
    common.dump(out, args.out)
    return out


if __name__ == "__main__":
    main()
