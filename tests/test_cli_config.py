"""``rlvr-lens audit --config FILE``: every flag has a key, flags override the file, the resolved
run is saved as OUT/config.toml and ``--config OUT/config.toml`` repeats it."""

from __future__ import annotations

import json
import tomllib

import pytest

from rlvr_lens.cli import build_parser, main
from rlvr_lens.cli.config import config_actions, config_toml, parse_command_line
from rlvr_lens.data import Sample, write_samples
from rlvr_lens.errors import UserError


def _audit_parser():
    parser = build_parser()
    return parser, parser._subparsers._group_actions[0].choices["audit"]


def _write(path, text):
    path.write_text(text)
    return str(path)


def test_every_audit_flag_has_a_key():
    _, audit = _audit_parser()
    keys = set(config_actions(audit))
    flags = {o[2:].replace("-", "_") for a in audit._actions for o in a.option_strings if o.startswith("--")}
    assert keys == flags - {"help", "config"}
    assert {"model", "data", "out", "batch_size", "no_progress", "analyses", "fractions"} <= keys


def test_the_file_gives_what_the_flags_would(tmp_path):
    config = _write(
        tmp_path / "a.toml",
        'model = ["base=b", "rl=t"]\ndata = "d.jsonl"\nout = "o"\nbatch_size = 3\n'
        'analyses = ["perplexity", "weights"]\nfractions = [0.5, 0.7]\nno_progress = true\n',
    )
    from_file = parse_command_line(build_parser(), ["audit", "--config", config])
    from_flags = parse_command_line(
        build_parser(),
        ["audit", "--model", "base=b", "--model", "rl=t", "--data", "d.jsonl", "--out", "o", "--batch-size", "3",
         "--analyses", "perplexity,weights", "--fractions", "0.5,0.7", "--no-progress"],
    )
    for key in ("models", "data", "out", "batch_size", "analyses", "fractions", "no_progress", "template", "dtype"):
        assert getattr(from_file, key) == getattr(from_flags, key), key
    assert from_file.batch_size == 3 and from_file.models == ["base=b", "rl=t"]


def test_flags_override_the_file_and_model_is_replaced_not_appended(tmp_path):
    config = _write(tmp_path / "a.toml", 'data = "d.jsonl"\n\n[model]\nbase = "b"\nrl = "t"\n')
    args = parse_command_line(
        build_parser(), ["audit", "--config", config, "--out", "o", "--batch-size", "5", "--model", "x=1", "--model", "y=2"]
    )
    assert args.models == ["x=1", "y=2"] and args.batch_size == 5 and args.data == "d.jsonl"
    args = parse_command_line(build_parser(), ["audit", f"--config={config}", "--out", "o"])
    assert args.models == ["base=b", "rl=t"]  # a [model] table, in order


def test_unknown_key_is_named(tmp_path):
    config = _write(tmp_path / "a.toml", 'data = "d"\nbatchsize = 4\n')
    with pytest.raises(UserError, match="Unknown key 'batchsize'"):
        parse_command_line(build_parser(), ["audit", "--config", config])


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ('batch_size = "8"', "'batch_size' .* must be an integer, like the flag --batch-size; got a string"),
        ("no_progress = 1", "'no_progress' .* must be true or false"),
        ("model = 3", "'model' .* must be an array of strings"),
        ('weights_metrics = "most"', "'weights_metrics' .* is 'most'; choose one of all, cheap"),
        ("template = true", "'template' .* must be a string"),
    ],
)
def test_a_value_of_the_wrong_type_is_one_sentence(tmp_path, line, words):
    config = _write(tmp_path / "a.toml", line + "\n")
    with pytest.raises(UserError, match=words):
        parse_command_line(build_parser(), ["audit", "--config", config])


@pytest.mark.parametrize(
    ("text", "words"),
    [("batch_size = \n", "is not a valid TOML file"), (None, "No config file at")],
)
def test_bad_config_files_exit_2_with_one_line_and_no_out_dir(tmp_path, capsys, text, words):
    path = tmp_path / "a.toml"
    if text is not None:
        path.write_text(text)
    out = tmp_path / "run"
    assert main(["audit", "--config", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and words in err[0]
    assert not out.exists()


def test_config_toml_round_trips_through_tomllib():
    resolved = {"model": ["a=/x/y", 'b="q"'], "batch_size": 4, "tol": 1e-05, "flag": False, "token_pairs": None, "s": "a\\b"}
    back = tomllib.loads(config_toml(resolved, command="audit"))
    assert back == {k: v for k, v in resolved.items() if v is not None}


def test_audit_config_round_trip_repeats_the_run(tmp_path, tiny_pair, single_thread, capsys):
    """An audit from flags saves OUT/config.toml; ``audit --config OUT/config.toml`` parses to the same
    options and finds every step cached (same inputs, same config), with identical results."""
    base, tuned = tiny_pair
    data = tmp_path / "d.jsonl"
    write_samples(data, [Sample(str(i), f"What is {i} + {i}?", str(2 * i)) for i in range(4)])
    out = tmp_path / "run"
    flags = ["audit", "--model", f"base={base}", "--model", f"rl={tuned}", "--data", str(data), "--out", str(out),
             "--analyses", "perplexity", "--batch-size", "2", "--dtype", "float32", "--device", "cpu", "--no-progress"]
    assert main(flags) == 0
    saved = tomllib.loads((out / "config.toml").read_text())
    assert saved["model"] == [f"base={base}", f"rl={tuned}"] and saved["batch_size"] == 2 and saved["out"] == str(out)
    first = json.loads((out / "perplexity.json").read_text())
    capsys.readouterr()

    assert main(["audit", "--config", str(out / "config.toml")]) == 0
    err = capsys.readouterr().err
    assert "perplexity" in err and "cached" in err
    assert tomllib.loads((out / "config.toml").read_text()) == saved
    assert json.loads((out / "perplexity.json").read_text()) == first
