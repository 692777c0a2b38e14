"""tfquant.progress: whole lines with the elapsed time and an estimate of what is left."""

from __future__ import annotations

import io
import re

import numpy as np

from tfquant._keras import keras
from tfquant.progress import EpochLines, Progress, elapsed_and_left


def test_estimate_is_the_pace_so_far_times_what_is_left():
    assert elapsed_and_left(12.34, 2, 5) == "12.3 s  ~19 s left"
    assert elapsed_and_left(3.0, 0, 5) == "3.0 s"  # nothing done yet: no estimate
    assert elapsed_and_left(3.0, 5, 5) == "3.0 s"  # all done
    assert elapsed_and_left(3.0, 2, None) == "3.0 s"  # total unknown


def test_progress_prints_one_whole_line_per_step():
    out = io.StringIO()
    progress = Progress(total=3, stream=out)
    for step in ("loading", "converting", "timing"):
        progress(step)
    progress.close()
    lines = out.getvalue().splitlines()
    assert [line.split("  ")[0] for line in lines] == [
        "[1/3] loading",
        "[2/3] converting",
        "[3/3] timing",
        "done in 0.0 s",
    ]
    assert "\r" not in out.getvalue()
    assert re.fullmatch(r"\[2/3\] converting  \d+\.\d s  ~\d+ s left", lines[1]), lines[1]

    failed = io.StringIO()
    progress = Progress(stream=failed)
    progress("exporting")
    progress.close(failed=True)
    assert re.fullmatch(r"exporting  0\.0 s\nfailed after \d+\.\d s\n", failed.getvalue())

    quiet = io.StringIO()
    progress = Progress(enabled=False, stream=quiet)
    progress("anything")
    progress.close()
    assert quiet.getvalue() == ""


def test_epoch_lines_callback_prints_one_line_per_epoch():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    out = io.StringIO()
    model.fit(
        x,
        y,
        epochs=4,
        initial_epoch=1,
        batch_size=8,
        validation_data=(x, y),
        verbose=0,
        callbacks=[EpochLines(stream=out, every=None)],
    )
    lines = out.getvalue().splitlines()
    assert len(lines) == 3, lines  # epochs 2..4 of a run resumed after epoch 1
    number = r"-?[\d.e+-]+"
    for i, line in enumerate(lines):
        left = "" if i == 2 else r"  ~\d+ s left"
        assert re.fullmatch(
            rf"epoch {i + 2}/4  acc {number}  loss {number}  val_acc {number}  "
            rf"val_loss {number}  \d+\.\d s{left}",
            line,
        ), line


def test_epoch_lines_within_a_long_epoch():
    # every=0: a line after each step (a long epoch in a log), with the run's estimate
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.zeros((32, 4), "float32")
    out = io.StringIO()
    model.fit(x, x[:, :1], epochs=2, batch_size=8, verbose=0, callbacks=[EpochLines(out, every=0)])
    lines = out.getvalue().splitlines()
    assert [line.split("  ")[:2] for line in lines] == [
        *[["epoch 1/2", f"step {i}/4"] for i in range(1, 5)],
        ["epoch 1/2", lines[4].split("  ")[1]],
        *[["epoch 2/2", f"step {i}/4"] for i in range(1, 5)],
        ["epoch 2/2", lines[9].split("  ")[1]],
    ]
    assert lines[4].split("  ")[1].startswith("loss ")
    assert re.fullmatch(r"epoch 1/2  step 2/4  \d+\.\d s  ~\d+ s left", lines[1]), lines[1]
    assert re.fullmatch(r"epoch 2/2  step 4/4  \d+\.\d s", lines[8]), lines[8]  # all done


def test_tfquant_train_prints_one_line_per_epoch(tmp_path, capsys):
    # In a log (stdout not a terminal): tfquant's own lines and one line per epoch, never
    # Keras' progress bar (verbose 1, carriage returns) nor its per-epoch "8/8 - 2s" lines.
    from tfquant.train import TrainConfig, run

    config = TrainConfig(
        dataset="digits",
        model="binary_cnn",
        method="ste",
        epochs=2,
        limit=64,
        batch_size=32,
        out=str(tmp_path / "run"),
        convert=False,
    )
    run(config)
    out = capsys.readouterr().out
    assert "\r" not in out and "\x08" not in out
    epochs = [line for line in out.splitlines() if line.startswith("epoch ")]
    number = r"-?[\d.e+-]+"
    for i, line in enumerate(epochs):
        left = r"  ~\d+ s left" if i == 0 else ""
        assert re.fullmatch(
            rf"epoch {i + 1}/2  acc {number}  loss {number}  val_acc {number}  val_loss {number}"
            rf"  hard_val_accuracy {number}  hard_val_loss {number}  \d+\.\d s{left}",
            line,
        ), line
    assert len(epochs) == 2, out
    others = [line for line in out.splitlines() if not line.startswith("epoch ")]
    assert others and all(line.startswith("[tfquant train] ") for line in others), others


def test_tfquant_train_ends_keras_bar_before_its_epoch_line(tmp_path, capsys):
    # verbose 1 (a terminal): Keras' bar ends its line before the epoch line, which starts
    # a line of its own rather than being glued to the end of the bar.
    from tfquant.train import TrainConfig, run

    config = TrainConfig(
        dataset="digits",
        model="binary_cnn",
        method="ste",
        epochs=1,
        limit=64,
        batch_size=32,
        out=str(tmp_path / "run"),
        convert=False,
        verbose=1,
    )
    run(config)
    out = capsys.readouterr().out
    assert re.search(r"val_loss: [\d.]+.*\n", out), out  # Keras' bar was drawn
    assert re.search(r"(^|\n)epoch 1/1  acc ", out), out
    assert not re.search(r"[^\n]epoch 1/1  acc ", out), out
