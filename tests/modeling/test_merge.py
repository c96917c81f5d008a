"""python -m chimed_trl.merge: mistakes in --base/--adapter are one line and exit 2, never a traceback
(main() in process: the same argparse + error path as ``python -m chimed_trl.merge``)."""

import json

import pytest

from chimed_trl.merge import main


# Catches: a missing base or adapter reaching from_pretrained (an OSError traceback) instead of a one-line error
# naming the flag; the output directory created although nothing was merged.
@pytest.mark.parametrize("case", ["missing_base", "base_not_a_model", "missing_adapter", "adapter_without_config"])
def test_bad_base_or_adapter_is_one_line(tmp_path, capsys, monkeypatch, case):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    adapter, base = tmp_path / "adapter", tmp_path / "base"
    adapter.mkdir()
    base.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"task_type": "CAUSAL_LM"}))
    (base / "notes.txt").write_text("not a model")
    base_arg, adapter_arg = str(base), str(adapter)
    expected = {
        "missing_base": "error: --base: model directory /nonexistent/model does not exist",
        "base_not_a_model": f"error: --base: {base} is not a model directory (no config.json)",
        "missing_adapter": f"error: --adapter {tmp_path / 'nope'}: no such directory",
        "adapter_without_config": f"error: --adapter {base}: no adapter_config.json",
    }[case]
    if case == "missing_base":
        base_arg = "/nonexistent/model"
    elif case == "missing_adapter":
        adapter_arg = str(tmp_path / "nope")
    elif case == "adapter_without_config":
        adapter_arg = str(base)
    out = tmp_path / "merged"
    with pytest.raises(SystemExit) as exit_info:  # an OSError from transformers would escape here instead
        main(["--base", base_arg, "--adapter", adapter_arg, "--output", str(out)])
    assert exit_info.value.code == 2
    assert expected in capsys.readouterr().err
    assert not out.exists()


def test_old_command_line_still_runs(tmp_path):
    """catches: the deprecated ``python -m chimed_trl.merge`` (README, user scripts) importing fine but doing
    nothing (a compat module without its ``__main__`` guard exits 0 and merges nothing)."""
    import subprocess
    import sys

    args = ["--base", "/nonexistent/model", "--adapter", str(tmp_path), "--output", str(tmp_path / "out")]
    done = subprocess.run([sys.executable, "-m", "chimed_trl.merge", *args], capture_output=True, text=True)
    assert done.returncode == 2 and "no adapter_config.json" in done.stderr
