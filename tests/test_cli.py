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
        "make-data",
        "data-summary",
        "train",
        "plan",
        "reproduce",
    }
    make_policies = sub.choices["make-policies"].parse_args(["--stop-score", "80", "--train-only"])
    assert (make_policies.stop_score, make_policies.train_only) == (80.0, True)
