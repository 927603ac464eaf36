"""Processes: their CPU time (utime + stime), children and (peak) memory from /proc; free ports;
stopping the servers the bench starts, and how those servers run until stopped."""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import socket
import subprocess
from pathlib import Path

import grpc

_TICK = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1


def _stat(pid: int) -> list[str]:
    """/proc/<pid>/stat from field 3 (state) on; the command name may hold spaces."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2 :].split()


def cpu_seconds(pid: int, reaped_children: bool = False) -> float:
    """utime + stime (and, if asked, the same of its exited children) of a live process."""
    try:
        fields = _stat(pid)
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICK


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int(_stat(int(entry.name))[1]) == pid:
                    found.append(int(entry.name))
            except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
                continue
    return found


def peak_rss_mib(pid: int, field: str = "VmHWM") -> float:
    """The peak resident set (VmHWM), or with `field="VmRSS"` the current one, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def reset_peak_rss(pid: int) -> bool:
    """Lowers the process's VmHWM to its current RSS (Linux 4.0+, `5` to /proc/<pid>/clear_refs),
    so the next reading is the peak since now; False where that is not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def die_with_parent() -> None:
    # Should the bench be killed outright, its servers get SIGTERM instead of holding the ports.
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def terminate(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (a multi-worker service passes it on to its workers), then the whole group if stuck."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


async def serve_until_signal(server: grpc.aio.Server) -> None:
    """Starts `server`, says "ready" on stdout (what the bench's Stack waits for), serves until
    SIGTERM or SIGINT, then stops it."""
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await server.start()
    print("ready", flush=True)
    await stop.wait()
    await server.stop(1)
