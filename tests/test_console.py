"""The console: TensorFlow's native start-up noise is filtered out of stderr, everything else passes through."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from xentlab.cli.console import error_block, is_expected, is_native_noise

NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1795688050.517153    4533 port.cc:153] oneDNN custom operations are on. You may see slightly",
    "I0000 00:00:1795688050.518126    4533 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU",
    "E0000 00:00:1795688055.928462    4533 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed",
    "W0000 00:00:1795688055.928462    4533 op_def_util.cc:1] NodeDef mentions attribute use_unbounded_threadpool "
    "which is not in the op definition",
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the appropriate "
    "compiler flags.",
]
KEPT = [
    "E0000 00:00:1795688055.928462    4533 some_kernel.cc:52] OOM when allocating tensor with shape[1024]",
    "Traceback (most recent call last):",
    "xentlab: CheckError",
    "W1126 10:00:00.000000 123 loader.cc:5] a warning about the user's data",
]


@pytest.mark.parametrize("line", NOISE)
def test_startup_noise_is_recognised(line):
    assert is_native_noise(line)


@pytest.mark.parametrize("line", KEPT)
def test_real_errors_and_everything_else_pass(line):
    assert not is_native_noise(line)


def test_the_filter_drops_noise_written_to_file_descriptor_2_and_keeps_the_rest_in_order():
    lines = [NOISE[0], KEPT[0], NOISE[3], KEPT[1], NOISE[4], KEPT[2]]
    code = (
        "import os, sys\nfrom xentlab.cli.console import quiet_native_logs\nquiet_native_logs()\n"
        f"for line in {lines!r}:\n    os.write(2, (line + '\\n').encode())\n"
        "print('python stderr', file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stderr.splitlines() == [KEPT[0], KEPT[1], KEPT[2], "python stderr"]


def test_the_filter_lets_the_command_exit_while_a_child_process_still_holds_stderr():
    # A process pool's helpers outlive the command and keep the filter's pipe open: the command's own last lines
    # still come out, and it exits at once instead of waiting (up to 2 s) for the pipe's end.
    code = (
        "import os, subprocess, sys, time\nfrom xentlab.cli.console import quiet_native_logs\nquiet_native_logs()\n"
        "child = subprocess.Popen(['sleep', '30'], stdout=subprocess.DEVNULL)\n"
        "print(child.pid, time.time(), flush=True)\nos.write(2, b'last line')\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        child_pid, last_line_at = parent.stdout.readline().split()
        parent.wait(timeout=60)
        exited_at = time.time()
    finally:
        os.kill(int(child_pid), signal.SIGKILL)
    assert parent.returncode == 0 and parent.stderr.read() == b"last line"
    assert exited_at - float(last_line_at) < 1.9


def test_expected_errors_are_told_from_bugs_by_type_only():
    from xentlab.config.checks import CheckError
    from xentlab.core.weighting import class_weights

    assert is_expected(CheckError("bad"))
    with pytest.raises(ValueError) as raised:
        class_weights([3, 4], "custom", weights=[1.0])  # the user's config: a ConfigError, also a ValueError
    assert is_expected(raised.value)
    # A plain ValueError is a bug's wherever it is raised: in a xentlab module (an internal precondition; the
    # traceback's frames are not read) or outside.
    module = {"__name__": "xentlab.core.anything"}
    exec("def check():\n    raise ValueError('an internal precondition')", module)
    with pytest.raises(ValueError) as raised:
        module["check"]()
    assert not is_expected(raised.value)
    with pytest.raises(ValueError) as raised:
        int("x")
    assert not is_expected(raised.value)


def test_the_error_block_masks_credentials():
    text = error_block(ValueError("server http://bob:s3cret@host:5000 refused"), run="r (abc)")
    assert "s3cret" not in text and "http://bob:***@host:5000" in text and "r (abc) is marked FAILED" in text
