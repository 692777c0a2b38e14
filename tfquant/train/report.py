"""What a run reports: each quantized layer's bits (:func:`layer_bits`), the accuracy, the
training curves (``curves.png``, with matplotlib) and ``report.md``.

Imports :mod:`tfquant.methods` (each method's own report section), :mod:`tfquant.models` and
Keras.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tfquant import methods
from tfquant._keras import keras
from tfquant.models import quantized_layers


def layer_bits(model: keras.Model) -> list[dict[str, Any]]:
    """Each quantized layer's weight and input bits (32: float), and CPQ's learned grid
    steps: what the report lists."""
    rows = []
    for layer in quantized_layers(model):
        row: dict[str, Any] = {
            "layer": layer.name,
            "weight_bits": layer.kernel_precision,
            "input_bits": layer.input_precision,
        }
        for role, q in (("weight", layer.kernel_quantizer), ("input", layer.input_quantizer)):
            if q is not None and hasattr(q, "alpha_value"):
                row[f"{role}_alpha"] = q.alpha_value
        rows.append(row)
    return rows


def _accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(predictions, -1) == labels))


def _plot(history: dict, path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ModuleNotFoundError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    epochs = np.arange(1, len(history["loss"]) + 1)
    for ax, key in zip(axes, ("loss", "accuracy")):
        ax.plot(epochs, history[key], "o-", label=f"train {key}")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], "s--", label=f"test {key} (soft)")
        if f"hard_val_{key}" in history:
            ax.plot(
                epochs, history[f"hard_val_{key}"], "r^-", label=f"test {key} (hard, finalized)"
            )
        ax.set_xticks(epochs)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
    return True


def _markdown(report: dict, summary_table: str, conversion_text: str) -> str:
    r = report
    lat = r.get("latency_ms")
    lines = [
        f"# tfquant train: {r['config']['model']} on "
        f"{r['config'].get('data_dir') or r['config']['dataset']} ({r['config']['method']})",
        "",
        "| metric | value |",
        "|---|---|",
        f"| test accuracy, hard-quantized Keras | {r['test_accuracy']:.4f} |",
    ]
    if r.get("test_accuracy_tflite") is not None:
        lines.append(
            f"| test accuracy, TFLite (first {r['tflite_eval_samples']} test samples) | "
            f"{r['test_accuracy_tflite']:.4f} (Keras on the same: "
            f"{r['test_accuracy_keras_same_samples']:.4f}) |"
        )
    lines += [
        f"| epochs / fit time (with per-epoch soft and hard test evaluation) | "
        f"{r['config']['epochs']} / {r['train_seconds']:.0f} s |",
        f"| model size, bit-packed ideal | {r['size']['bitpacked_bytes'] / 1024:.1f} KiB |",
        f"| float-32 equivalent | {r['size']['float32_bytes'] / 1024:.1f} KiB |",
    ]
    if r.get("tflite_bytes"):
        lines.append(f"| model.tflite | {r['tflite_bytes'] / 1024:.1f} KiB |")
    if lat:
        lines.append(
            f"| latency, LCE interpreter on this x86 CPU, 1 thread | {lat['median_ms']:.3f} ms |"
        )
    method = r["config"]["method"]
    if r.get(method):
        lines += methods.get(method).report_markdown(r[method])
    if r.get("layer_bits"):
        lines += [
            "",
            "## Bits per layer" + (" (learned)" if r["config"].get("learn_bits") else ""),
            "",
            "| layer | weight bits | input bits | weight step | input step |",
            "|---|---|---|---|---|",
            *(
                f"| {x['layer']} | {x['weight_bits']} | {x['input_bits']} | "
                + " | ".join(
                    f"{x[k]:.4g}" if k in x else "-" for k in ("weight_alpha", "input_alpha")
                )
                + " |"
                for x in r["layer_bits"]
            ),
        ]
    lines += [
        "",
        "## Conversion",
        "",
        "```",
        conversion_text,
        "```",
        "",
        "## Model",
        "",
        "```",
        summary_table,
        "```",
        "",
    ]
    return "\n".join(lines)
