"""Unclear inputs refused before anything is read, built or compiled, each message naming
the flag, the value and what would be valid: empty paths, a directory as gin file,
--examples < 1, an unprepared TFDS task in eval, a damaged safetensors file, a bad decode
flag, an empty prompt."""

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from model_zoo.interop import hf
from model_zoo import preset
from model_zoo.decoding import DecodeConfig
from tools import cache_tasks, convert, infer, quickstart, study, sweep, train, wikispell_compare
from tools import eval as eval_tool

EMPTY = "'' is empty (an unset shell variable?): give a file or directory path"


@pytest.mark.parametrize("main,argv,flag", [
    (train.main, ["--model_dir=", "--gin_file=runs/demo_pretrain.gin"], "--model_dir"),
    (eval_tool.main, ["--model_dir=", "--task=glue_sst2"], "--model_dir"),
    (eval_tool.main, ["--model_dir=m", "--metrics_dir="], "--metrics_dir"),
    (infer.main, ["--model_dir=", "--prompt=hello"], "--model_dir"),
    (infer.main, ["--model_dir=m", "--input=in.jsonl", "--output="], "--output"),
    (convert.main, ["--model_dir=", "--to_hf_dir=out"], "--model_dir"),
    (convert.main, ["--hf_dir=hf", "--to_model_dir="], "--to_model_dir"),
    (sweep.main, ["--sweep=sweeps/lr.gin", "--out="], "--out"),
    (study.main, ["--study=precision", "--out="], "--out"),
    (quickstart.main, ["--out="], "--out"),
    (wikispell_compare.main, ["--out="], "--out"),
    (cache_tasks.main, ["--cache_dir=", "--task=demo_span_corruption"], "--cache_dir"),
])
def test_an_empty_path_flag_is_refused_naming_it(main, argv, flag, capsys, tmp_path,
                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        main(argv)
    assert f"argument {flag}: {EMPTY}" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("given", ["runs", "TMP"])
def test_a_directory_as_gin_file_says_so(given, tmp_path):
    (tmp_path / "gin").mkdir()
    (tmp_path / "gin" / "mine.gin").write_text("")
    given = str(tmp_path / "gin") if given == "TMP" else given
    with pytest.raises(IsADirectoryError, match=rf"--gin_file='{given}' is a directory \(.*\), "
                                                r"not a gin file; give one of the \d+ gin files "
                                                rf"under it, e.g. \['{given}/\w+\.gin'"):
        train.main([f"--model_dir={tmp_path / 'run'}", f"--gin_file={given}"])
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("examples", ["0", "-3"])
def test_eval_refuses_fewer_than_one_example(examples, capsys, tmp_path):
    with pytest.raises(SystemExit):
        eval_tool.main([f"--model_dir={tmp_path}", "--task=demo_span_corruption",
                        f"--examples={examples}"])
    assert (f"--examples={examples} must be >= 1 (leave it out for the default: every "
            "example, or 256 for a task without metrics)") in capsys.readouterr().err


def test_eval_says_how_to_prepare_a_tfds_task(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"TFDS dataset 'glue/sst2:2.0.0' is not prepared "
                                                r".*Prepare it with `tfds build glue/sst2"):
        eval_tool.main([f"--model_dir={tmp_path / 'none'}", "--task=glue_sst2"])


def _hf_dir(path, weights: bytes):
    path.mkdir()
    (path / "config.json").write_text(json.dumps(hf.config_to_hf(preset("t5_1_1_tiny"))))
    (path / "model.safetensors").write_bytes(weights)
    return path


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_convert_names_a_damaged_safetensors_file(damage, tmp_path):
    save_file({"shared.weight": np.zeros((64, 8), np.float32)}, str(tmp_path / "whole"))
    whole = (tmp_path / "whole").read_bytes()
    weights = whole[:len(whole) // 2] if damage == "truncated" else b"not safetensors" * 9
    source = _hf_dir(tmp_path / "hf", weights)
    with pytest.raises(ValueError, match=rf"^{source}/model.safetensors is damaged: not a "
                                         r"complete safetensors file \(safetensors: .+\); "
                                         r"download or save it again$"):
        convert.main(["--hf_dir", str(source), "--to_model_dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag,message", [
    ("--num_beams=0", "--num_beams=0 is invalid: expected an integer >= 1"),
    ("--top_k=-1", "--top_k=-1 is invalid: expected an integer >= 0 (0: no top-k filter)"),
])
def test_infer_names_only_the_decode_flag_given(flag, message, capsys, tmp_path):
    with pytest.raises(SystemExit):
        infer.main([f"--model_dir={tmp_path}", "--prompt=hello", "--method=beam", flag])
    error = capsys.readouterr().err.strip().splitlines()[-1]  # below the usage
    assert error.endswith(f"error: {message}")


def test_decode_config_names_the_bad_field_alone():
    with pytest.raises(ValueError, match=r"^DecodeConfig.num_beams=0 is invalid: expected an "
                                         r"integer >= 1$"):
        DecodeConfig(num_beams=0)


@pytest.mark.parametrize("prompt", ["", "  "])
def test_infer_refuses_an_empty_prompt(prompt, capsys, tmp_path):
    with pytest.raises(SystemExit):
        infer.main([f"--model_dir={tmp_path}", "--prompt", "hello", "--prompt", prompt])
    assert f"--prompt {prompt!r} is empty: give the text to decode" in capsys.readouterr().err
