"""``rlvr-lens circuits`` end to end on a memorizing pair, and its bad inputs."""

from __future__ import annotations

import json

from rlvr_lens.cli import main
from rlvr_lens.models.tiny import build_tokenizer, save_tiny_checkpoint


def _write(path, samples):
    path.write_text("".join(json.dumps(s.to_dict()) + "\n" for s in samples))
    return path


def test_circuits_command_localizes_the_memorizing_pair(memorizing_pair, tmp_path, capsys, single_thread):
    base, tuned, samples = memorizing_pair
    data = _write(tmp_path / "data.jsonl", samples)
    out = tmp_path / "run"
    argv = ["circuits", "--model", f"base={base}", "--model", f"tuned={tuned}", "--data", str(data), "--out", str(out)]
    argv += ["--device", "cpu", "--max-new-tokens", "16", "--bootstrap", "100", "--no-progress", "--batch-size", "4"]
    assert main(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "base -> tuned [leakage, 4 samples]" in printed
    result = json.loads((out / "circuits.json").read_text())
    assert result["groups"]["leakage"] == [0, 1, 2, 3] and result["groups"]["leaked"] == [0, 1, 2, 3]
    assert json.loads((out / "evaluation.json").read_text())["accuracy"] == {"base": 0.0, "tuned": 0.5}
    assert "Layer localization" in (out / "report.html").read_text()
    # a second run with other circuit settings reuses the cached evaluation
    assert main([*argv, "--parts", "lens"]) == 0
    assert "evaluation                   cached" in capsys.readouterr().err


def test_pair_of_different_depths_is_one_sentence_and_exit_2(tmp_path, capsys, tokenizer):
    base = save_tiny_checkpoint(tmp_path / "base", "qwen2", tokenizer=tokenizer)
    deep = save_tiny_checkpoint(tmp_path / "deep", "qwen2", tokenizer=tokenizer, num_hidden_layers=3)
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"id": "a", "prompt": "What is 2+2?", "answer": "4"}) + "\n")
    argv = ["circuits", "--model", f"base={base}", "--model", f"deep={deep}", "--data", str(data), "--out", str(tmp_path / "o")]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_answer_that_tokenizes_to_nothing_is_one_sentence_and_exit_2(tmp_path, capsys, single_thread):
    from tokenizers import normalizers

    tokenizer = build_tokenizer()
    tokenizer.backend_tokenizer.normalizer = normalizers.Replace("\u200b", "")  # a tokenizer that drops a character
    assert tokenizer("\u200b", add_special_tokens=False)["input_ids"] == []
    base = save_tiny_checkpoint(tmp_path / "base", "qwen2", tokenizer=tokenizer)
    tuned = save_tiny_checkpoint(tmp_path / "tuned", "qwen2", seed=1, tokenizer=tokenizer)
    data = tmp_path / "data.jsonl"
    rows = [{"id": "a", "prompt": "What is 2+2?", "answer": "4"}, {"id": "b", "prompt": "What is 0+0?", "answer": "\u200b"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = ["circuits", "--model", f"base={base}", "--model", f"tuned={tuned}", "--data", str(data), "--out", str(tmp_path / "o")]
    argv += ["--device", "cpu", "--max-new-tokens", "2", "--no-progress"]
    capsys.readouterr()  # (checkpoint writing's progress bars)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "sample 'b'" in err and "tokenizes to no tokens" in err, err
    assert len(err.splitlines()) == 1 and not (tmp_path / "o").exists()
