import argparse
import os
import stat

import pytest

from workflow.common.atomic import atomic_dir, atomic_path, write_json
from workflow.common.cli import run_cli
from workflow.common.errors import InputError


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out" / "table.csv"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_atomic_path_keeps_suffix_and_replaces(tmp_path):
    target = tmp_path / "m.json"
    write_json(target, {"a": 1})
    with atomic_path(target) as tmp:
        assert tmp.suffix == ".json" and tmp.parent == tmp_path
        tmp.write_text('{"a": 2}')
    assert target.read_text() == '{"a": 2}'


def test_atomic_dir_replaces_a_folder_whole_or_not_at_all(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.bin").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "half.bin").write_text("half")
        raise RuntimeError("killed")
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no staging folder left
    assert [p.name for p in target.iterdir()] == ["old.bin"]
    with atomic_dir(target) as tmp:
        (tmp / "new.bin").write_text("new")
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    assert [p.name for p in target.iterdir()] == ["new.bin"]
    assert oct(target.stat().st_mode & 0o777) == "0o755"


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_atomic_outputs_get_the_mode_of_a_plain_write(tmp_path, mask):
    """mkstemp's 0600 must not survive the rename: a group on a shared $WORK reads results."""
    import torch

    from workflow.common.callbacks import AtomicCheckpointIO

    old = os.umask(mask)
    try:
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        write_json(tmp_path / "metrics.json", {"a": 1})
        AtomicCheckpointIO().save_checkpoint({"w": torch.zeros(1)}, tmp_path / "final.ckpt")
        with atomic_dir(tmp_path / "model") as tmp:
            (tmp / "config.json").write_text("{}")
        (tmp_path / "folder").mkdir()
    finally:
        os.umask(old)
    expected = stat.S_IMODE(plain.stat().st_mode)
    assert expected == 0o666 & ~mask
    for name in ("metrics.json", "final.ckpt", "model/config.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name
    folder = stat.S_IMODE((tmp_path / "folder").stat().st_mode)
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == folder == 0o777 & ~mask


def test_cli_turns_input_error_into_one_line(capsys):
    def parser() -> argparse.ArgumentParser:
        p = argparse.ArgumentParser()

        def fail(_):
            raise InputError("data/x.json", "malformed JSON")

        p.set_defaults(func=fail)
        return p

    assert run_cli(parser, []) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: data/x.json: malformed JSON"
    assert "Traceback" not in err


def test_the_error_line_starts_a_line_after_a_progress_bar(capsys):
    """A failure inside a tqdm loop: the bar's last redraw ends with \\r, not a newline."""
    from tqdm import tqdm

    def parser() -> argparse.ArgumentParser:
        p = argparse.ArgumentParser()

        def fail(_):
            for i in tqdm(range(10), desc="samples", leave=False, mininterval=0):
                if i == 5:
                    raise InputError("shard.tar", "sample 5: damaged")

        p.set_defaults(func=fail)
        return p

    assert run_cli(parser, []) == 2
    err = capsys.readouterr().err
    assert "\r" in err  # the bar did draw
    assert err.split("\n")[-2] == "error: shard.tar: sample 5: damaged"


def test_run_info_of_a_missing_or_damaged_checkpoint_is_an_input_error(tmp_path):
    import torch

    from workflow.common.training import checkpoint_run_info, publish_checkpoint

    source = tmp_path / "best.ckpt"
    torch.save({"state_dict": {}}, source)
    publish_checkpoint(source, tmp_path / "final.ckpt", {"world_size": 2})
    assert checkpoint_run_info(tmp_path / "final.ckpt") == {"world_size": 2}
    assert checkpoint_run_info(source) == {}
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes((tmp_path / "final.ckpt").read_bytes()[:40])
    torch.save([1, 2], tmp_path / "list.ckpt")
    problems = {
        "missing": "checkpoint not found",
        "truncated": "not a readable checkpoint",
        "list": r"not a checkpoint \(no dict inside\)",
    }
    for name, problem in problems.items():
        with pytest.raises(InputError, match=problem) as err:
            checkpoint_run_info(tmp_path / f"{name}.ckpt")
        assert err.value.path == str(tmp_path / f"{name}.ckpt")
