"""Start and drive the real external parts (registry, engines) for demos and tests.

Everything here is synchronous: plain subprocesses and urllib, no reactor. Each
long-running process is a `Service`: it binds to 127.0.0.1 on a free port, keeps all
its state in a directory given by the caller, writes its output to a log file there,
and stops with `stop()` or at the end of a ``with`` block.

Clients started here get a proxy environment (`offline_env`) that sends every HTTP
request not aimed at the hosts under test to a dead loopback port, so a fallback to
a public registry fails at once instead of leaving the machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = [
    "LabError",
    "Service",
    "free_port",
    "hostname",
    "offline_env",
    "run",
    "unavailable",
    "unmount_under",
]

#: Where HTTP clients send requests for hosts outside the lab: nothing listens there.
DEAD_PROXY = "http://127.0.0.1:9"


class LabError(RuntimeError):
    """A lab tool failed; the message carries its output."""


def unavailable(*tools: str, root: bool = False) -> str | None:
    """Why the lab cannot run with these tools, or None when it can.

    Tests skip with this reason (or fail when every part must be tested).
    """
    missing = [tool for tool in tools if shutil.which(tool) is None]
    reasons = []
    if missing:
        reasons.append("missing tools: " + ", ".join(missing))
    if root and os.geteuid() != 0:
        reasons.append("needs root")
    return "; ".join(reasons) or None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def hostname(ref: str) -> str:
    """The host name in a URL, a ``host:port`` or an image reference."""
    host = ref.split("://", 1)[-1].split("/", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def offline_env(*hosts: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """An environment whose HTTP clients reach only loopback and ``hosts``.

    Go and Python clients bypass the proxy for loopback addresses themselves; every
    other host goes to `DEAD_PROXY` and fails without a DNS lookup.
    """
    env = dict(os.environ if base is None else base)
    no_proxy = ",".join(["127.0.0.1", "localhost", "::1", *hosts])
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env[name] = DEAD_PROXY
    env["NO_PROXY"] = env["no_proxy"] = no_proxy
    return env


def run(
    argv: Sequence[str | os.PathLike],
    *,
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> str:
    """Run a tool to completion and return its stdout; raise LabError on failure."""
    argv = [str(arg) for arg in argv]
    try:
        done = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=timeout
        )
    except FileNotFoundError as e:
        raise LabError(f"{argv[0]} is not installed") from e
    except subprocess.TimeoutExpired as e:
        raise LabError(f"{' '.join(argv)} timed out after {timeout}s") from e
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip()
        raise LabError(f"{' '.join(argv)} exited {done.returncode}:\n{output}")
    return done.stdout


def unmount_under(path: str | os.PathLike) -> None:
    """Unmount every mount point at or below ``path``, deepest first."""
    root = os.path.realpath(path)
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    points = [p.replace("\\040", " ") for p in points]
    inside = [p for p in points if p == root or p.startswith(root + "/")]
    for point in sorted(set(inside), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


class Service:
    """An external process that runs until stopped, its output in a log file.

    Subclasses give the command line (`argv`) and say when the process is ready
    (`ready`); `start` waits for that, within `start_timeout` seconds.
    """

    name = "service"
    start_timeout = 30.0
    stop_timeout = 15.0

    def __init__(self, state_dir: str | os.PathLike):
        self.state_dir = Path(state_dir).absolute()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.state_dir / f"{self.name}.log"
        self.process: subprocess.Popen | None = None

    def argv(self) -> list[str]:
        """The command line that runs the service."""
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        """The environment the service runs in."""
        return offline_env()

    def ready(self) -> bool:
        """Whether the service answers; called until true while starting."""
        return True

    def start(self) -> Service:
        """Start the process and wait until it is ready."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env(),
                start_new_session=True,
            )
        try:
            self.wait_for(self.ready, f"{self.name} to answer", self.start_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_for(self, check: Callable[[], bool], what: str, timeout: float) -> None:
        """Poll ``check`` until true; fail if the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        while not check():
            if self.process is not None and self.process.poll() is not None:
                raise LabError(
                    f"{self.name} exited {self.process.returncode} while waiting "
                    f"for {what}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise LabError(
                    f"timed out after {timeout}s waiting for {what}:\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop the process (TERM, then KILL) and whatever it started."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                pass
        _kill_group(process.pid)
        process.wait()

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self):
        if self.process is None:
            self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def _kill_group(pgid: int) -> None:
    """Kill what is left of a process group (children the leader started)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
