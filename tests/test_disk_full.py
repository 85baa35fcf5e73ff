"""A checkpoint save that fails on a full disk ends the run with its error as the last line
of stderr: the writes orbax abandoned are closed before Python shuts down, so no
"sys.meta_path is None" tracebacks follow the error."""

import asyncio
import os
import shutil
import subprocess
import sys

import pytest

from training.checkpoints.abandoned_writes import close_abandoned_writes

from tests.test_run_guards import FLAGS as SMALLEST, ROOT

# The smallest demo run: a checkpoint of about 1.4 MB, which a 512 KiB disk cannot hold.
FLAGS = SMALLEST + ["--gin.TRAIN_STEPS=6", "--gin.run.train.eval_feed=None"]
# A private mount namespace (as root, or as a user through a user namespace): the tmpfs is
# seen by this command alone and goes with it.
ON_A_SMALL_DISK = ["unshare", "--mount", "--map-root-user", "sh", "-c",
                   'mount -t tmpfs -o size=512k tmpfs "$0" && exec "$@"']


def test_abandoned_writes_are_closed_now():
    loop, cleaned = asyncio.new_event_loop(), []

    async def write():
        try:
            await asyncio.sleep(3600)
        finally:
            cleaned.append(True)

    async def save():
        loop.create_task(write())
        await asyncio.sleep(0)  # the write starts, then another one fails
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        loop.run_until_complete(save())
    loop.close()  # as orbax does: the write stays pending on a closed loop
    assert cleaned == []
    assert close_abandoned_writes() == 1 and cleaned == [True]
    assert close_abandoned_writes() == 0


def _can_mount(directory) -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run([*ON_A_SMALL_DISK, str(directory), "true"],
                          capture_output=True).returncode == 0


def test_a_full_disk_leaves_the_save_error_as_the_last_line(tmp_path):
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    if not _can_mount(checkpoints):
        pytest.skip("no private mount namespace here (unshare --mount --map-root-user)")
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run([*ON_A_SMALL_DISK, str(checkpoints), sys.executable, "-m",
                          "tools.train", f"--model_dir={tmp_path / 'run'}", *FLAGS],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stderr[-3000:]
    last = [line for line in out.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("training.checkpoints.manager.CheckpointSaveError: saving "
                           f"checkpoint step 2 to {checkpoints}/2 failed: "), last
    assert "No space left on device" in last and "No checkpoint of this run was saved" in last
    assert "sys.meta_path is None" not in out.stderr
