"""The `ttlib` command in-process: its sub-commands, and one place that turns bad input into
one line and an exit code."""

import pytest

from ttlib import cli
from ttlib.data import DatasetError
from ttlib.memory import PlanningMemoryError
from ttlib.train import CheckpointError


def test_runners_raise_and_only_main_reports(capsys):
    args = cli.build_parser().parse_args(["make-data", "--env", "hopper", "--kind", "medum"])
    with pytest.raises(ValueError, match="medum"):
        args.func(args)  # the runner itself prints nothing and raises
    assert capsys.readouterr().err == ""
    assert cli.main(["make-data", "--env", "hopper", "--kind", "medum"]) == 2
    assert capsys.readouterr().err.startswith("ttlib make-data: error: Unknown dataset kind")


@pytest.mark.parametrize(
    "error, code",
    [
        (DatasetError("no such dataset"), 2),
        (CheckpointError("truncated"), 2),
        (PlanningMemoryError("too big"), 2),
        (FileNotFoundError("no policy"), 2),
        (KeyboardInterrupt(), 130),
    ],
)
def test_user_errors_end_as_one_line_and_an_exit_code(monkeypatch, capsys, error, code):
    def fail(args):
        raise error

    monkeypatch.setattr(cli, "_run_data_summary", fail)
    assert cli.main(["data-summary"]) == code
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ttlib data-summary: "), lines


@pytest.mark.parametrize("error", [RuntimeError("a bug"), KeyError("bug"), OSError("disk")])
def test_unexpected_errors_keep_their_traceback(monkeypatch, error):
    def crash(args):
        raise error

    monkeypatch.setattr(cli, "_run_data_summary", crash)
    with pytest.raises(type(error)):
        cli.main(["data-summary"])


def test_every_sub_command_of_the_console_script_is_there():
    sub = next(a for a in cli.build_parser()._actions if a.choices)  # the sub-parsers
    assert set(sub.choices) == {
        "make-policies",
        "make-controller",
        "make-data",
        "data-summary",
        "train",
        "plan",
        "reproduce",
    }
    make_policies = sub.choices["make-policies"].parse_args(["--stop-score", "80", "--train-only"])
    assert (make_policies.stop_score, make_policies.train_only) == (80.0, True)


# ---------------------------------------------------------------- bad input up front (#22)
def test_a_bad_option_is_one_line_not_the_usage_block(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["plan", "--checkpoint", "x", "--env", "hopper", "--horizon", "0"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "ttlib plan: error: argument --horizon: must be an integer >= 1, got '0' "
        "(see `ttlib plan --help`)"
    ]


@pytest.mark.parametrize(
    "make",
    [
        lambda: __import__("ttlib.train").train.TrainConfig(max_steps=0),
        lambda: __import__("ttlib.train").train.TrainConfig(batch_size=-1),
        lambda: __import__("ttlib.train").train.TrainConfig(checkpoint_every=0),
        lambda: __import__("ttlib.train").train.TrainConfig(lr=0.0),
        lambda: __import__("ttlib.train").train.TrainConfig(device="gpu0"),
        lambda: __import__("ttlib.data").data.DataConfig("x", n_transitions=0),
        lambda: __import__("ttlib.data").data.DataConfig("x", max_transitions=-5),
        lambda: __import__("ttlib.data").data.DataConfig("x", n_bins=1),
        lambda: __import__("ttlib.data").data.DataConfig("x", discount=0.0),
    ],
)
def test_config_dataclasses_refuse_out_of_range_fields(make):
    from ttlib.errors import ConfigError

    with pytest.raises(ConfigError):
        make()


def test_generator_configs_refuse_empty_budgets():
    from ttlib.datagen.datasets_gen import GenConfig
    from ttlib.datagen.policies import PolicyConfig
    from ttlib.errors import ConfigError

    with pytest.raises(ConfigError, match="transitions=0"):
        GenConfig(transitions=0)
    with pytest.raises(ConfigError, match="total_steps=-1"):
        PolicyConfig(total_steps=-1)


def test_a_device_this_machine_lacks_is_a_config_error():
    import torch

    from ttlib.errors import ConfigError
    from ttlib.train import resolve_device

    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ConfigError, match="not a device name"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_output_checks_create_nothing(tmp_path):
    from ttlib.errors import OutputError
    from ttlib.io import check_output_dir, check_output_file

    check_output_dir(tmp_path / "a" / "b", "--out")
    check_output_file(tmp_path / "a" / "r.json", "--out")
    assert list(tmp_path.iterdir()) == []  # neither the folders nor a probe file remain
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="a file of that name exists"):
        check_output_dir(tmp_path / "f", "--out")
    with pytest.raises(OutputError, match="is a file, so no folder can be made there"):
        check_output_file(tmp_path / "f" / "r.json", "--out")
    with pytest.raises(OutputError, match="is a folder; give a file name"):
        check_output_file(tmp_path, "--video")


def test_main_reports_any_library_error_as_one_line(monkeypatch, capsys):
    from ttlib.errors import OutputError

    def fail(args):
        raise OutputError("--out x: cannot write in /")

    monkeypatch.setattr(cli, "_run_data_summary", fail)
    assert cli.main(["data-summary"]) == 2
    assert capsys.readouterr().err == "ttlib data-summary: error: --out x: cannot write in /\n"
