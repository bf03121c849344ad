"""Bad input given to the command line, end to end: one line on stderr, exit code 2, nothing
damaged.

Each test runs the real entry point in a subprocess (as a user would) and checks the message,
the exit code, that no traceback leaks out, and that the files it was given are unchanged.
"""

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ttlib import cli
from ttlib.data import DataConfig, load_minari, minari_root
from ttlib.discretize import make_discretizer
from ttlib.io import load_torch, save_torch
from ttlib.model import GPTConfig, TrajectoryGPT
from ttlib.train import TrainConfig, checkpoint_dict

from conftest import linear_episodes, write_minari_dataset

pytestmark = pytest.mark.slow  # every test starts `python -m ttlib.cli` as a user would


def run(*args, module="ttlib.cli", env=None, timeout=120):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    cmd = [sys.executable, "-m", module, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def one_line_error(r, command: str, *fragments: str) -> str:
    """Assert a failed run printed exactly one error line with ``fragments``; return it."""
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    # MuJoCo's C library prints its own notices (a deprecated XML attribute in HalfCheetah).
    lines = [x for x in r.stderr.splitlines() if x.strip() and not x.startswith("WARNING: ")]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"ttlib {command}: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def hopper_like_checkpoint(path, obs_dim=11, act_dim=3, n_bins=10, n_transitions=3, edit=None):
    """An untrained checkpoint with the given dimensions (Hopper's by default)."""
    torch.manual_seed(0)
    model_cfg = GPTConfig(
        obs_dim, act_dim, n_bins, n_transitions, n_layer=1, n_head=2, n_embd=16, dropout=0.0
    )
    data_cfg = DataConfig(
        "ttlibtest/hopperlike/medium-v0", n_bins=n_bins, n_transitions=n_transitions
    )
    x = np.random.default_rng(0).normal(size=(200, obs_dim + act_dim + 2))
    disc = make_discretizer("quantile", n_bins).fit(x)
    ckpt = checkpoint_dict(TrajectoryGPT(model_cfg), disc, data_cfg, TrainConfig())
    if edit is not None:
        edit(ckpt)
    return save_torch(ckpt, path)


PLAN = ["plan", "--env", "hopper", "--horizon", "2", "--beam-width", "2", "--max-steps", "1"]


@pytest.mark.parametrize(
    "args, command, fragment",
    [
        (["make-data", "--env", "hopper", "--kind", "medum"], "make-data", "medum"),
        (["data-summary", "--ids", "ttlib/hoper/x-v0"], "data-summary", "hoper"),
        (
            ["plan", "--checkpoint", "/nonexistent", "--env", "hopper"],
            "plan",
            "no checkpoint at /nonexistent",
        ),
    ],
)
def test_the_entry_point_reports_through_the_same_path(args, command, fragment):
    one_line_error(run(*args), command, fragment)


def test_plan_with_a_checkpoint_from_another_env_names_both_dims(tmp_path):
    ckpt = hopper_like_checkpoint(tmp_path / "checkpoint.pt")
    before = digest(ckpt)
    r = run(
        "plan", "--checkpoint", str(ckpt), "--env", "halfcheetah", "--out", str(tmp_path / "r.json")
    )
    one_line_error(
        r, "plan", "observation/action dims 11/3", "'halfcheetah' has 17/6", "hopperlike"
    )
    assert digest(ckpt) == before and not (tmp_path / "r.json").exists()


def _other_discretizer(ckpt):
    x = np.random.default_rng(1).normal(size=(200, 16))
    ckpt["discretizer"] = make_discretizer("quantile", 20).fit(x).state_dict()


def _longer_block(ckpt):
    ckpt["gpt_config"]["n_transitions"] = 5


def _more_bins(ckpt):
    ckpt["gpt_config"]["n_bins"] = 20


@pytest.mark.parametrize(
    "edit, fragments",
    [
        (_other_discretizer, ["discretizer (20 bins, 16 dims)", "n_bins 10"]),
        (_longer_block, ["block size 47 in the weights vs 79"]),
        (
            _more_bins,
            ["vocabulary size 161 in the weights vs 321", "n_bins 10 in the weights vs 20"],
        ),
    ],
)
def test_plan_with_a_checkpoint_whose_parts_disagree_names_the_mismatch(tmp_path, edit, fragments):
    ckpt = hopper_like_checkpoint(tmp_path / "checkpoint.pt", edit=edit)
    before = digest(ckpt)
    one_line_error(run(*PLAN, "--checkpoint", str(ckpt)), "plan", str(ckpt), *fragments)
    assert digest(ckpt) == before


def test_plan_longer_than_the_models_block_is_refused_up_front(tmp_path):
    ckpt = hopper_like_checkpoint(tmp_path / "checkpoint.pt", n_transitions=1)
    r = run(*PLAN, "--checkpoint", str(ckpt))
    one_line_error(r, "plan", "block size (15 tokens, n_transitions 1)", "--horizon 1")


TRAIN = ["train", "--n-bins", "5", "--n-transitions", "2", "--steps", "2", "--batch-size", "4"]
TRAIN += ["--n-layer", "1", "--n-head", "1", "--n-embd", "8", "--checkpoint-every", "1"]


def test_train_resuming_from_a_checkpoint_of_other_data_names_the_dims(tmp_path):
    write_minari_dataset("ttlibtest/two/medium-v0", linear_episodes(4, 10, obs_dim=2))
    write_minari_dataset("ttlibtest/one/medium-v0", linear_episodes(4, 10, obs_dim=1))
    out = tmp_path / "run"
    assert cli.main([*TRAIN, "--dataset", "ttlibtest/two/medium-v0", "--out", str(out)]) == 0
    before = digest(out / "checkpoint.pt")
    r = run(*TRAIN, "--dataset", "ttlibtest/one/medium-v0", "--out", str(out))
    one_line_error(r, "train", "cannot resume", "observation_dim: checkpoint 2 vs now 1")
    assert digest(out / "checkpoint.pt") == before


# --------------------------------------------------------------- corrupt checkpoint files
def _truncated(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbage(path):
    path.write_bytes(b"\x80\x02 this is not what torch.save writes")


def _not_a_checkpoint(path):
    save_torch({"weights": torch.ones(2)}, path)


def _incomplete(path):
    ckpt = load_torch(path)
    del ckpt["model"]
    save_torch(ckpt, path)


@pytest.mark.parametrize(
    "damage, fragment",
    [
        (_truncated, "is not a readable checkpoint"),
        (_garbage, "is not a readable checkpoint (UnpicklingError): the file is truncated"),
        (_not_a_checkpoint, "is not a ttlib checkpoint"),
        (_incomplete, "is incomplete (no model)"),
    ],
)
def test_plan_with_a_damaged_checkpoint_is_one_line(tmp_path, damage, fragment):
    ckpt = hopper_like_checkpoint(tmp_path / "checkpoint.pt")
    damage(ckpt)
    before = digest(ckpt)
    one_line_error(run(*PLAN, "--checkpoint", str(tmp_path)), "plan", fragment)
    assert digest(ckpt) == before


def test_train_does_not_overwrite_a_truncated_checkpoint(tmp_path):
    write_minari_dataset("ttlibtest/two/medium-v0", linear_episodes(4, 10, obs_dim=2))
    out = tmp_path / "run"
    args = [*TRAIN, "--dataset", "ttlibtest/two/medium-v0", "--out", str(out)]
    assert cli.main(args) == 0
    _truncated(out / "checkpoint.pt")
    before = digest(out / "checkpoint.pt")
    one_line_error(run(*args), "train", "not a readable checkpoint", "truncated or corrupt")
    assert digest(out / "checkpoint.pt") == before
    assert [p.name for p in out.iterdir()] == ["checkpoint.pt"]  # no temporary file left


def test_plan_with_a_corrupt_q_checkpoint_is_one_line(tmp_path):
    ckpt = hopper_like_checkpoint(tmp_path / "checkpoint.pt")
    q = tmp_path / "iql.pt"
    q.write_bytes(b"\x80\x02 not really a torch file")
    r = run(*PLAN, "--checkpoint", str(ckpt), "--mode", "q", "--q-checkpoint", str(q))
    one_line_error(r, "plan", "is not a readable IQL model")


# --------------------------------------------------------------- remote data, no network
# huggingface_hub (Minari's default remote), where installed, fails at once: offline mode, and
# an endpoint on a closed local port in case offline mode were ignored.
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}


def test_remote_dataset_without_network_says_how_to_make_a_local_one(tmp_path):
    write_minari_dataset("ttlibtest/local/medium-v0", linear_episodes(3, 5))
    start = time.monotonic()
    r = run(
        "train",
        "--dataset",
        "mujoco/halfcheetah/medium-v0",
        "--download",
        "--out",
        str(tmp_path / "run"),
        env=OFFLINE,
        timeout=60,
    )
    assert time.monotonic() - start < 60
    one_line_error(
        r,
        "train",
        "could not download 'mujoco/halfcheetah/medium-v0'",
        "need network access",
        "`ttlib make-data --env halfcheetah --kind medium`",
        "'ttlib/halfcheetah/medium-v0'",
    )
    assert not (tmp_path / "run").exists()
    assert load_minari("ttlibtest/local/medium-v0").total_steps == 15  # the local data is intact


def test_failed_download_names_the_network_error(tmp_path):
    # The download itself fails the way it does without network, whatever is installed.
    code = (
        "import sys, minari\n"
        "def offline(*args, **kwargs):\n"
        "    raise ConnectionError('Temporary failure in name resolution')\n"
        "minari.download_dataset = offline\n"
        "from ttlib.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    cmd = [
        sys.executable,
        "-c",
        code,
        "train",
        "--dataset",
        "D4RL/antmaze/umaze-v1",
        "--download",
        "--out",
        str(tmp_path / "run"),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    one_line_error(
        r,
        "train",
        "ConnectionError: Temporary failure in name resolution",
        "need network access",
        "`ttlib make-data --env antmaze --kind umaze`",
    )


# ---------------------------------------------------------------- planning memory
def test_plan_too_big_for_memory_fails_before_planning(tmp_path):
    ckpt = hopper_like_checkpoint(tmp_path / "checkpoint.pt")
    out = tmp_path / "r.json"
    r = run(
        *PLAN,
        "--checkpoint",
        str(ckpt),
        "--beam-width",
        "4000000",
        "--episodes",
        "50",
        "--out",
        str(out),
    )
    line = one_line_error(r, "plan", "beam_width 4000000 × n_expand 2", "needs about", "limit")
    assert "TiB" in line and "--memory-limit" in line
    assert not out.exists()
    r = run(*PLAN, "--checkpoint", str(ckpt), "--memory-limit", "100K")
    one_line_error(r, "plan", "above the limit of 100.0 KiB")
    r = run(*PLAN, "--checkpoint", str(ckpt), "--quiet", env={"TTLIB_MEMORY_LIMIT": "1K"})
    one_line_error(r, "plan", "above the limit of 1.0 KiB")


def test_plan_memory_limit_option_overrides_the_default_everywhere(tmp_path, monkeypatch):
    from ttlib import memory

    ckpt = hopper_like_checkpoint(tmp_path / "checkpoint.pt")
    monkeypatch.setenv(memory.LIMIT_ENV, "")  # restored after the test; the CLI sets it
    monkeypatch.setattr(memory, "available_memory", lambda device=None: 1024)
    assert cli.main([*PLAN, "--checkpoint", str(ckpt), "--quiet"]) == 2  # default: 768 bytes
    assert cli.main([*PLAN, "--checkpoint", str(ckpt), "--quiet", "--memory-limit", "1G"]) == 0


# --------------------------------------------------------------- options out of range (#22)
# Each is refused before any work: one line naming the option, the value and what is allowed,
# exit code 2, and nothing written (the --out folder is never created).
TINY = ["train", "--dataset", "ttlibtest/two/medium-v0", *TRAIN[1:]]


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--steps", "0"], ["argument --steps: must be an integer >= 1, got '0'"]),
        (["--steps", "-3"], ["argument --steps", "'-3'"]),
        (["--batch-size", "0"], ["argument --batch-size: must be an integer >= 1"]),
        (["--n-transitions", "0"], ["argument --n-transitions: must be an integer >= 1"]),
        (["--max-transitions", "0"], ["argument --max-transitions"]),
        (["--n-bins", "1"], ["argument --n-bins: must be an integer >= 2"]),
        (["--n-head", "3"], ["--n-head 3 does not divide --n-embd 8"]),
        (["--lr", "0"], ["argument --lr: must be a number in (0, inf)"]),
        (["--dropout", "1.5"], ["argument --dropout: must be a number in [0, 1)"]),
        (["--checkpoint-every", "0"], ["argument --checkpoint-every"]),
        (["--seed", "-1"], ["argument --seed: must be an integer >= 0"]),
        (["--device", "gpu0"], ["device 'gpu0' is not a device name"]),
    ],
)
def test_train_options_out_of_range_are_refused_before_any_work(tmp_path, args, fragments):
    write_minari_dataset("ttlibtest/two/medium-v0", linear_episodes(4, 10, obs_dim=2))
    out = tmp_path / "run"
    one_line_error(run(*TINY, "--out", str(out), *args), "train", *fragments)
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_train_on_a_missing_cuda_device_is_one_line(tmp_path):
    write_minari_dataset("ttlibtest/two/medium-v0", linear_episodes(4, 10, obs_dim=2))
    r = run(*TINY, "--out", str(tmp_path / "run"), "--device", "cuda")
    one_line_error(r, "train", "device 'cuda'", "no CUDA GPU", "use cpu or auto")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "args, command, fragment",
    [
        (["plan", "--horizon", "0"], "plan", "argument --horizon: must be an integer >= 1"),
        (["plan", "--beam-width", "0"], "plan", "argument --beam-width"),
        (["plan", "--episodes", "-1"], "plan", "argument --episodes"),
        (["plan", "--context", "-1"], "plan", "argument --context: must be an integer >= 0"),
        (["plan", "--cdf-act", "1.5"], "plan", "argument --cdf-act: must be a number in [0, 1)"),
        (["plan", "--memory-limit", "lots"], "plan", "cannot read 'lots' as a memory size"),
        (["make-data", "--transitions", "0"], "make-data", "argument --transitions"),
        (["make-policies", "--total-steps", "0"], "make-policies", "argument --total-steps"),
        (["reproduce", "--preset", "huge"], "reproduce", "argument --preset: invalid choice"),
        (["train", "--out", "x"], "train", "the following arguments are required: --dataset"),
    ],
)
def test_bad_options_are_one_line_without_the_usage_block(tmp_path, args, command, fragment):
    if command == "plan":
        args = [*args, "--checkpoint", str(tmp_path), "--env", "hopper"]
    line = one_line_error(run(*args), command, fragment)
    assert line.endswith(f"(see `ttlib {command} --help`)")
    assert not list(tmp_path.iterdir())  # nothing written
    if command == "make-data":  # not even an empty dataset
        assert not (minari_root() / "ttlib").exists()


# --------------------------------------------------------------- output locations, up front
@pytest.fixture
def read_only_dir(tmp_path):
    """A folder no file can be created in. root ignores permissions, so it gets /sys, where
    even root cannot create files."""
    if os.geteuid() == 0:
        yield Path("/sys")
        return
    d = tmp_path / "read-only"
    d.mkdir()
    d.chmod(0o555)
    yield d
    d.chmod(0o755)


def test_train_into_an_existing_file_or_a_read_only_folder_fails_before_training(
    tmp_path, read_only_dir
):
    write_minari_dataset("ttlibtest/two/medium-v0", linear_episodes(4, 10, obs_dim=2))
    afile = tmp_path / "results.txt"
    afile.write_text("keep me")
    r = run(*TINY, "--out", str(afile))
    one_line_error(r, "train", f"--out {afile}: a file of that name exists; give a folder")
    assert afile.read_text() == "keep me"
    r = run(*TINY, "--out", str(read_only_dir / "run"))
    one_line_error(r, "train", f"cannot write in {read_only_dir}")
    r = run(*TINY, "--out", str(afile / "run"))
    one_line_error(r, "train", f"{afile} is a file, so no folder can be made there")


def test_plan_outputs_are_checked_before_the_evaluation(tmp_path, read_only_dir):
    ckpt = hopper_like_checkpoint(tmp_path / "checkpoint.pt")
    r = run(*PLAN, "--checkpoint", str(ckpt), "--out", str(read_only_dir / "r.json"))
    one_line_error(r, "plan", f"--out {read_only_dir / 'r.json'}: cannot write in")
    r = run(*PLAN, "--checkpoint", str(ckpt), "--video", str(tmp_path))
    one_line_error(r, "plan", f"--video {tmp_path}: is a folder; give a file name")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_make_data_into_a_read_only_minari_folder_fails_at_once(read_only_dir):
    r = run("make-data", "--env", "fourrooms", env={"MINARI_DATASETS_PATH": str(read_only_dir)})
    one_line_error(r, "make-data", "MINARI_DATASETS_PATH", "cannot write in")


# --------------------------------------------------------------- malformed Minari datasets
@pytest.mark.parametrize(
    "name, data",
    [
        ("main_data.hdf5", b""),
        ("main_data.hdf5", b"\x89HDF\r\n\x1a\n truncated"),
        ("metadata.json", b"{"),
    ],
)
def test_a_malformed_minari_file_is_one_line_naming_the_dataset(tmp_path, name, data):
    did = "ttlibtest/two/medium-v0"
    write_minari_dataset(did, linear_episodes(4, 10, obs_dim=2))
    (minari_root() / did / "data" / name).write_bytes(data)
    r = run(*TINY, "--out", str(tmp_path / "run"))
    one_line_error(r, "train", f"dataset '{did}' in {minari_root() / did} exists but cannot")
    assert not (tmp_path / "run").exists()
