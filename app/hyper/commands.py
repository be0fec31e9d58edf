"""Running commands on a hypervisor: over asyncssh (``ssh``) or as local processes (``local``/``test``).

A command is always an argument vector. Over SSH the remote side needs one
command string, so each argument is quoted with :func:`shlex.quote` and joined:
the remote shell then sees exactly the original arguments, nothing is expanded.
Locally the vector goes straight to ``exec``, no shell at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncssh

from app.hyper.errors import CommandCutOff, CommandError
from app.i18n import gettext as _

log = logging.getLogger("kvmvdi.hyper.commands")

OutputCallback = Callable[[str], None]
_READ_SIZE = 64 * 1024
# Output kept per stream; more is dropped from the middle (commands we run print little).
_KEEP = 4 * 1024 * 1024


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    exit_status: int
    stdout: str
    stderr: str


def command_line(argv: Sequence[str]) -> str:
    """The one string sent over SSH: every argument quoted on its own."""
    if not argv:
        raise ValueError("empty command")
    for arg in argv:
        if not isinstance(arg, str):
            raise TypeError(f"command arguments must be strings, got {type(arg).__name__}")
        if "\0" in arg:
            raise ValueError("command arguments cannot contain NUL bytes")
    return shlex.join(argv)


class _Collector:
    def __init__(self, on_output: OutputCallback | None) -> None:
        self.buffer = bytearray()
        self.on_output = on_output

    def feed(self, data: bytes) -> None:
        if len(self.buffer) < _KEEP:
            self.buffer += data[: _KEEP - len(self.buffer)]
        if self.on_output is not None:
            self.on_output(data.decode("utf-8", errors="replace"))

    def text(self) -> str:
        return self.buffer.decode("utf-8", errors="replace")


async def _pump(read: Callable[[int], Any], collector: _Collector) -> None:
    while True:
        data = await read(_READ_SIZE)
        if not data:
            return
        collector.feed(data if isinstance(data, bytes) else str(data).encode())


class CommandRunner(ABC):
    """Runs argument vectors on one hypervisor."""

    @abstractmethod
    async def _start(self, argv: Sequence[str], *, stdin: bool = False) -> _Process: ...

    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 -- kills the command when it expires
        check: bool = True,
        on_output: OutputCallback | None = None,
        input: bytes | None = None,
    ) -> CommandResult:
        """Run ``argv``; ``on_output`` sees stdout as it arrives; ``input`` is its whole stdin
        (a certificate to write: never a secret in an argument). Cancelling kills the command."""
        argv = tuple(argv)
        command_line(argv)  # validates
        process = await self._start(argv, stdin=input is not None)
        stdout, stderr = _Collector(on_output), _Collector(None)
        try:
            async with asyncio.timeout(timeout):
                if input is not None:
                    await process.feed(input)
                await asyncio.gather(_pump(process.read_stdout, stdout), _pump(process.read_stderr, stderr))
                status = await process.wait()
        except TimeoutError:
            await process.kill()
            raise CommandError(
                argv, None, stderr.text(), reason=_("timed out after {timeout:g} s").format(timeout=timeout)
            ) from None
        except BaseException:
            await process.kill()
            raise
        result = CommandResult(argv, status if status is not None else -1, stdout.text(), stderr.text())
        if check and (status is None or status != 0):
            raise CommandError(argv, status, result.stderr)
        return result

    @abstractmethod
    async def close(self, *, abort: bool = False) -> None:
        """Release the transport; ``abort`` drops it at once (the peer is gone anyway)."""


class _Process(ABC):
    @abstractmethod
    async def feed(self, data: bytes) -> None:
        """Write ``data`` to stdin and close it."""

    @abstractmethod
    async def read_stdout(self, size: int) -> bytes: ...

    @abstractmethod
    async def read_stderr(self, size: int) -> bytes: ...

    @abstractmethod
    async def wait(self) -> int | None:
        """Exit status, or ``None`` when the command died from a signal."""

    @abstractmethod
    async def kill(self) -> None: ...


# -- local --------------------------------------------------------------------------


class _LocalProcess(_Process):
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def feed(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        await self.proc.stdin.drain()
        self.proc.stdin.close()

    async def read_stdout(self, size: int) -> bytes:
        assert self.proc.stdout is not None
        return await self.proc.stdout.read(size)

    async def read_stderr(self, size: int) -> bytes:
        assert self.proc.stderr is not None
        return await self.proc.stderr.read(size)

    async def wait(self) -> int | None:
        code = await self.proc.wait()
        return None if code < 0 else code

    async def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                await asyncio.wait_for(asyncio.shield(self.proc.wait()), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()


class LocalCommands(CommandRunner):
    """Commands of a ``local``/``test`` hypervisor: processes on the dashboard's own machine."""

    async def _start(self, argv: Sequence[str], *, stdin: bool = False) -> _Process:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except FileNotFoundError as exc:
            raise CommandError(
                argv, 127, "", reason=_("{value}: command not found").format(value=argv[0])
            ) from exc
        return _LocalProcess(proc)

    async def close(self, *, abort: bool = False) -> None:
        return None


# -- ssh ----------------------------------------------------------------------------


class _SSHProcess(_Process):
    def __init__(self, proc: asyncssh.SSHClientProcess[bytes]) -> None:
        self.proc = proc

    async def feed(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        await self.proc.stdin.drain()
        self.proc.stdin.write_eof()

    async def read_stdout(self, size: int) -> bytes:
        return await self.proc.stdout.read(size)

    async def read_stderr(self, size: int) -> bytes:
        return await self.proc.stderr.read(size)

    async def wait(self) -> int | None:
        completed = await self.proc.wait(check=False)
        if completed.exit_signal is not None:
            return None
        return completed.exit_status

    async def kill(self) -> None:
        # Closing the channel alone leaves the remote command running (no tty, no SIGHUP):
        # ask sshd to deliver SIGTERM first.
        with contextlib.suppress(Exception):
            self.proc.send_signal("TERM")
        self.proc.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.proc.wait_closed(), 5)


# sshd's MaxSessions defaults to 10 channels per connection; stay below it and queue the rest.
SSH_SESSIONS = 8
_OPEN_ATTEMPTS = 6


class SSHCommands(CommandRunner):
    """Commands of an ``ssh`` hypervisor, over one multiplexed asyncssh connection."""

    def __init__(self, connection: asyncssh.SSHClientConnection, *, sessions: int = SSH_SESSIONS) -> None:
        self.connection = connection
        self._sessions = asyncio.Semaphore(sessions)
        # Dropped by the dashboard (the hypervisor stopped answering), or closed from the other end.
        self._aborted = False

    @property
    def _dropped(self) -> bool:
        return self._aborted or self.connection.is_closed()

    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 -- kills the command when it expires
        check: bool = True,
        on_output: OutputCallback | None = None,
        input: bytes | None = None,
    ) -> CommandResult:
        # Waiting for a free session counts against the timeout too.
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            async with asyncio.timeout_at(deadline):
                await self._sessions.acquire()
        except TimeoutError:
            raise CommandError(
                argv, None, "", reason=_("no free SSH session within {timeout:g} s").format(timeout=timeout)
            ) from None
        try:
            remaining = None if deadline is None else max(0.0, deadline - loop.time())
            return await super().run(argv, timeout=remaining, check=check, on_output=on_output, input=input)
        except (asyncssh.Error, ConnectionError) as exc:
            # sshd died, the hypervisor rebooted or the network failed: not a failure of the command
            # itself, whose fate is unknown.
            raise CommandCutOff(argv, f"the SSH connection to the hypervisor was lost ({exc})") from exc
        except CommandError as exc:
            if exc.exit_status is None and self._dropped:
                # Its channel ended with the connection the dashboard dropped as dead.
                raise CommandCutOff(argv, "the SSH connection to the hypervisor was lost") from exc
            raise
        finally:
            self._sessions.release()

    async def _start(self, argv: Sequence[str], *, stdin: bool = False) -> _Process:
        refusal: asyncssh.ChannelOpenError | None = None
        for attempt in range(_OPEN_ATTEMPTS):
            try:
                proc = await self.connection.create_process(
                    command_line(argv), encoding=None, stdin=asyncssh.PIPE if stdin else asyncssh.DEVNULL
                )
            except asyncssh.ChannelOpenError as exc:
                # sshd frees a finished session's slot a moment after we saw it end: retry.
                refusal = exc
                await asyncio.sleep(0.05 * 2**attempt)
            except (asyncssh.Error, OSError) as exc:
                raise CommandError(
                    argv, None, "", reason=_("could not start over SSH: {exc}").format(exc=exc)
                ) from exc
            else:
                return _SSHProcess(proc)
        raise CommandError(
            argv, None, "", reason=_("could not start over SSH: {refusal}").format(refusal=refusal)
        )

    async def close(self, *, abort: bool = False) -> None:
        if abort:
            self._aborted = True
            self.connection.abort()
            return
        self.connection.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.connection.wait_closed(), 5)
