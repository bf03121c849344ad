"""Interrupted runs, bad input and unsafe loading: nothing is lost, every error is one line."""

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ttlib import io
from ttlib.train import load_checkpoint

from conftest import linear_episodes, write_minari_dataset

TTLIB = [sys.executable, "-m", "ttlib.cli"]


def run_cli(*args, **kw):
    return subprocess.run([*TTLIB, *args], capture_output=True, text=True, timeout=120, **kw)


def test_unknown_dataset_is_one_line_and_nonzero():
    r = run_cli("train", "--dataset", "ttlib/hoper/medium-v0", "--out", "x")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert "ttlib/hoper/medium-v0" in r.stderr


def test_killed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    io.save_torch({"w": torch.ones(3)}, path)

    def dying_save(obj, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # the process is stopped in the middle of writing

    monkeypatch.setattr(io.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        io.save_torch({"w": torch.zeros(3)}, path)
    assert torch.equal(io.load_torch(path)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temporary left behind


def test_training_killed_by_a_signal_resumes_to_the_same_weights(tmp_path):
    write_minari_dataset("ttlibtest/linear/medium-v0", linear_episodes(30, 30))
    common = [
        "train",
        "--dataset",
        "ttlibtest/linear/medium-v0",
        "--n-bins",
        "10",
        "--n-transitions",
        "3",
        "--steps",
        "60",
        "--batch-size",
        "16",
        "--n-layer",
        "1",
        "--n-head",
        "2",
        "--n-embd",
        "16",
        "--checkpoint-every",
        "5",
    ]
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    ref = run_cli(*common, "--out", str(tmp_path / "ref"), env=env)
    assert ref.returncode == 0, ref.stderr

    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [*TTLIB, *common, "--out", str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while not (out / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _, _, partial = load_checkpoint(out)  # what survived the kill loads as a valid checkpoint
    assert 0 < partial["step"] <= 60
    resumed = run_cli(*common, "--out", str(out), env=env)
    assert resumed.returncode == 0, resumed.stderr
    a, _, ca = load_checkpoint(tmp_path / "ref")
    b, _, cb = load_checkpoint(out)
    assert ca["step"] == cb["step"] == 60
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def test_every_torch_load_in_the_package_is_weights_only():
    pkg = Path(__file__).resolve().parents[1] / "ttlib"
    offenders = []
    for f in pkg.rglob("*.py"):
        for m in re.finditer(r"torch\.load\(([^)]*)\)", f.read_text()):
            if "weights_only=True" not in m.group(1):
                offenders.append(f"{f.name}: {m.group(0)}")
    assert not offenders, offenders
