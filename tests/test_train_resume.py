"""`tfquant train --resume`'s refusals and a resume that needs no kill, in process.

The checks that need a real SIGKILL stay in tests/test_train_distributed.py; these ran
there as extra ``python -m tfquant train`` processes (each paying TensorFlow's import) and
moved here: a run without ``--resume`` over an unfinished run's checkpoints, a resumed run
with another configuration, a finished run resumed again, and ``--resume`` without
checkpoints (by the chief and by another worker)."""

import dataclasses
import json

import numpy as np
import pytest

from tfquant.errors import ConfigError
from tfquant.train import CHECKPOINTS, TrainConfig, checkpoint_state, run

BASE = dict(
    dataset="digits",
    model="binary_cnn",
    method="ste",
    epochs=1,
    batch_size=32,
    limit=384,
    convert=False,
    verbose=0,
)


def test_resume_refusals_and_a_resume_straight_to_finalizing(tmp_path):
    out = tmp_path / "run"
    config = TrainConfig(**BASE, out=str(out))
    whole = run(config)
    state_path = out / CHECKPOINTS / "state.json"
    state = json.loads(state_path.read_text())
    assert state["finished"] and state["epoch"] == 1
    # the state a run killed after its last epoch's checkpoint leaves: not finished
    state_path.write_text(json.dumps({**state, "finished": False}))

    with pytest.raises(ConfigError, match="Pass --resume to continue it"):
        run(config)
    with pytest.raises(ConfigError, match=r"method='md-tanh-s' \(was 'ste'\)"):
        run(dataclasses.replace(config, method="md-tanh-s", resume=True))
    resumed = run(dataclasses.replace(config, resume=True, overwrite=True))
    assert resumed["history"] == whole["history"]  # straight to finalizing, the same model
    assert resumed["test_accuracy"] == whole["test_accuracy"]
    assert checkpoint_state(out)["finished"]
    with pytest.raises(ConfigError, match="finished its 1 epochs; nothing to resume"):
        run(dataclasses.replace(config, resume=True))
    assert np.isfinite(whole["history"]["loss"][0])


def test_resume_without_checkpoints_is_refused(tmp_path, monkeypatch):
    none = tmp_path / "none"
    with pytest.raises(ConfigError, match="checkpoints"):
        run(TrainConfig(**BASE, out=str(none), resume=True))
    assert not none.exists()
    # a worker refuses too, at once, rather than wait for a chief that refused
    task = {
        "cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
        "task": {"type": "worker", "index": 1},
    }
    monkeypatch.setenv("TF_CONFIG", json.dumps(task))
    with pytest.raises(ConfigError, match="checkpoints"):
        run(TrainConfig(**BASE, out=str(none), resume=True, strategy="mirrored"))
    assert not none.exists()
