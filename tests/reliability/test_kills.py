"""Training survives being killed: SIGKILL at random moments and in the middle of a checkpoint
write, Ctrl-C, always resuming from the last complete checkpoint with nothing corrupt, at most one
checkpoint interval lost, and a finished run identical, bit for bit, to an uninterrupted one."""

import pytest

from campaigns import EVAL_EVERY, TINY, cli, complete, die_mid_write, kill_campaign, sigint_run


def test_sigkill_at_random_moments_twenty_times(tmp_path):
    report = kill_campaign(tmp_path, kills=20, steps=200, fork=True)
    assert report.kills == 20
    assert report.resumed >= 10 and report.files_checked >= 20
    assert max(report.steps_lost) <= EVAL_EVERY
    assert report.bytes_lost == 0 and report.identical


# a save writes best.safetensors and best.json (when the evaluation improved), then last.safetensors
# and last.json; kill the run half-way through each of its first eight checkpoint writes
@pytest.mark.parametrize("n", range(1, 9))
def test_sigkill_in_the_middle_of_a_checkpoint_write(tmp_path, n):
    torn, trained, saved = die_mid_write(tmp_path, n)
    assert trained % EVAL_EVERY == 0  # it died in the save after step `trained`
    # the tensors file carries the checkpoint: once last.safetensors landed, only its JSON copy was torn
    assert saved == (trained if torn == "last.json" else trained - EVAL_EVERY)


def test_sigkill_of_the_real_command_line(tmp_path):
    """The same through new interpreters running python -m rnnlab.cli (and slow_disk.py)."""
    report = kill_campaign(tmp_path, kills=2, steps=40, fork=False)
    assert report.kills == 2 and report.identical and report.bytes_lost == 0


def test_sigint_saves_the_current_step_and_exits_130(tmp_path):
    code, out, saved, logged = sigint_run(tmp_path)
    assert code == 130, out
    assert f"saved checkpoint 'last' at step {saved}" in out and "--resume" in out
    assert saved == logged and saved > 0  # nothing trained was lost
    code, out = complete(cli(*TINY, "--runs-dir", str(tmp_path / "runs"), "--name", "i", "--resume",
                             "--steps", str(saved + 3)), fork=False)
    assert code == 0 and f"resuming at step {saved}" in out and f"step {saved + 3}" in out, out
