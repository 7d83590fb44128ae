"""What a retry can do about each error: the classification the Temporal layer turns into retry rules."""

from __future__ import annotations

import errno

import pytest

from bert_eval.core.errors import (
    DeterministicFailure,
    InvalidInputError,
    TransientError,
    classify,
    classify_os_error,
)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (InvalidInputError("run r: bad label"), "invalid_input"),
        (TransientError("run r: hub unreachable"), "transient"),
        (ConnectionResetError(errno.ECONNRESET, "reset"), "transient"),
        (TimeoutError("read timed out"), "transient"),
        (OSError(errno.EIO, "I/O error"), "transient"),
        (OSError(errno.ENOSPC, "No space left on device"), "deterministic"),
        (OSError(errno.EROFS, "Read-only file system"), "deterministic"),
        (FileNotFoundError(errno.ENOENT, "No such file"), "deterministic"),
        (DeterministicFailure("run r: max_seq_length too long"), "deterministic"),
        (RuntimeError("CUDA error: device-side assert"), "deterministic"),
    ],
)
def test_each_error_is_classified_by_what_a_retry_can_do(error: BaseException, kind: str) -> None:
    assert classify(error) == kind


def test_volume_errors_name_the_run_the_path_and_the_fix() -> None:
    full = classify_os_error(OSError(errno.ENOSPC, "No space left on device", "/runs/r/checkpoints"), "r")
    assert isinstance(full, DeterministicFailure)
    assert (
        str(full) == "run r: No space left on device (/runs/r/checkpoints): the volume is full; "
        "free space or grow the volume, then resubmit"
    )
    outage = classify_os_error(OSError(errno.ESTALE, "Stale file handle", "/runs/r"), "r")
    assert isinstance(outage, TransientError) and "retrying with backoff" in str(outage)
