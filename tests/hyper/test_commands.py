"""Commands on hypervisors are argument vectors: passed literally, failures explained, and
killed on timeout or cancellation, over real SSH (the test hypervisor h0) and locally."""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path

import pytest

from app.hyper.commands import CommandRunner, LocalCommands
from app.hyper.errors import CommandError
from app.hyper.session import Session
from tests.services.libvirt_host import LibvirtHost
from tests.waiting import eventually

HOSTILE = "name with spaces; $(touch {marker}) `touch {marker}` 'quote\" && rm -rf ~ | cat *"


@pytest.fixture(params=[pytest.param("ssh", marks=pytest.mark.service), "local"])
def runner(request: pytest.FixtureRequest) -> CommandRunner:
    if request.param == "ssh":
        session: Session = request.getfixturevalue("h0_session")
        return session.runner
    return LocalCommands()


def processes_running(needle: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmdline and "pytest" not in cmdline:
            found.append(int(entry))
    return found


async def wait_gone(needle: str) -> None:
    await eventually(lambda: not processes_running(needle), f"no process running {needle!r}")


async def test_hostile_arguments_reach_the_command_literally_and_nothing_else_runs(
    runner: CommandRunner, h0: LibvirtHost
) -> None:
    marker = Path(f"/tmp/kvmvdi-pwned-{secrets.token_hex(4)}")
    name = HOSTILE.format(marker=marker)
    result = await runner.run(["printf", "%s\\n", name, "second", ""])
    assert result.stdout == f"{name}\nsecond\n\n"
    assert result.exit_status == 0
    assert not marker.exists(), "a shell expanded an argument"


async def test_a_file_named_like_shell_code_is_created_with_exactly_that_name(
    h0_session: Session, h0: LibvirtHost
) -> None:
    marker = Path(f"/tmp/kvmvdi-pwned-{secrets.token_hex(4)}")
    path = h0.images_dir / HOSTILE.format(marker=marker).replace("/", "_")
    await h0_session.runner.run(["touch", "--", str(path)])
    try:
        assert path.exists()
        assert path.stat().st_uid != 0, "the command ran as the service user, not root"
        assert not marker.exists()
    finally:
        path.unlink()


async def test_a_failing_command_raises_with_its_exit_status_and_stderr(runner: CommandRunner) -> None:
    with pytest.raises(CommandError) as failure:
        await runner.run(["ls", "/nonexistent-kvmvdi-dir"])
    assert failure.value.exit_status == 2
    assert "No such file or directory" in failure.value.stderr
    assert "exit status 2" in str(failure.value)
    assert failure.value.argv == ("ls", "/nonexistent-kvmvdi-dir")


async def test_without_check_a_failure_is_returned_not_raised(runner: CommandRunner) -> None:
    result = await runner.run(["sh", "-c", "echo out; echo err >&2; exit 3"], check=False)
    assert (result.exit_status, result.stdout, result.stderr) == (3, "out\n", "err\n")


async def test_a_missing_program_is_a_command_error(runner: CommandRunner) -> None:
    with pytest.raises(CommandError) as failure:
        await runner.run(["kvmvdi-no-such-program", "x"])
    assert failure.value.exit_status == 127


async def test_a_command_past_its_timeout_is_killed(runner: CommandRunner) -> None:
    duration = f"{300 + secrets.randbelow(1000)}.{secrets.randbelow(1000)}"
    with pytest.raises(CommandError, match="timed out"):
        await runner.run(["sleep", duration], timeout=1)
    await wait_gone(f"sleep {duration}")


async def test_cancelling_a_command_kills_it_on_the_hypervisor(runner: CommandRunner) -> None:
    duration = f"{300 + secrets.randbelow(1000)}.{secrets.randbelow(1000)}"
    task = asyncio.create_task(runner.run(["sleep", duration]))
    await eventually(lambda: processes_running(f"sleep {duration}"), "the command running")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_gone(f"sleep {duration}")


async def test_output_is_streamed_while_the_command_runs(runner: CommandRunner) -> None:
    seen: list[str] = []
    await runner.run(["sh", "-c", "printf one; sleep 0.3; printf two"], on_output=seen.append)
    assert "".join(seen) == "onetwo"
    assert len(seen) >= 2, "output arrived only at the end"
