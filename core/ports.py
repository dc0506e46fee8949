"""Who listens on a TCP port, from /proc: for ``ready: {port: N}``.

A TCP connect answers "somebody listens", not "the step listens": with another server already
on the port, a step was "ready" in milliseconds, died with "Address already in use", and its
dependents ran against the stranger. So readiness looks up the LISTEN socket itself in
/proc/net/tcp{,6} and checks that one of the step's processes holds it (a ``socket:[inode]``
link in /proc/<pid>/fd). Reading /proc/net/tcp is not free (about 10 ms
here, more with many connections), so it is read only once a plain connect has said that
somebody listens; a psutil.net_connections() call would read it too, and every process's
descriptors besides.

Only for a host on this machine (an address of one of its interfaces, ``localhost``, or the
wildcard); for another host nobody's processes can be seen and a connect is all there is.
"""

from __future__ import annotations

import ipaddress
import os

import msgspec

_LISTEN = "0A"
_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")
_WILDCARDS = frozenset({"0.0.0.0", "::"})


class Listener(msgspec.Struct, frozen=True):
    """A LISTEN socket: its address, its inode (to find the process) and its owner's uid."""

    address: str
    inode: int
    uid: int


def local_addresses(host: str) -> frozenset[str] | None:
    """The addresses ``host`` stands for on this machine; empty = any; None = not this machine.

    No DNS: only ``localhost`` and address literals count (a lookup could block the runner).
    """
    if host == "localhost":
        return frozenset({"127.0.0.1", "::1"})
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if address.is_unspecified:
        return frozenset()
    if address.is_loopback:
        return frozenset({str(address)})
    import socket  # here, as in answers(): a run without a port to check does not load it

    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:  # binding succeeds only to an address of one of this machine's interfaces
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((str(address), 0))
    except OSError:
        return None
    return frozenset({str(address)})


def answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """Somebody accepts a TCP connection on ``host:port`` (the cheap first question).

    ValueError for a host that cannot even be looked up ("label too long")."""
    import socket

    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    # the kernel prints each 32-bit word in host order (little-endian here)
    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(raw)  # 4 bytes: IPv4, 16: IPv6
    mapped = getattr(address, "ipv4_mapped", None)
    return str(mapped or address)


def listeners(port: int, addresses: frozenset[str]) -> list[Listener]:
    """LISTEN sockets on ``port`` that take connections to ``addresses`` (empty: any)."""
    suffix = f":{port:04X}"
    found = []
    for table in _TABLES:
        try:
            with open(table) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _LISTEN or not fields[1].endswith(suffix):
                continue
            address = _address(fields[1].rsplit(":", 1)[0])
            if addresses and address not in _WILDCARDS and address not in addresses:
                continue
            found.append(Listener(address, int(fields[9]), int(fields[7])))
    return found


def group_members(pgid: int) -> list[int]:
    """Live processes of the process group or session ``pgid`` (a shell step's tree)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 3 and fields[0] != b"Z" and pgid in (int(fields[2]), int(fields[3])):
            members.append(int(entry))
    return members


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:  # gone, or another user's
        return inodes
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(int(link[8:-1]))
    return inodes


def held_by(found: list[Listener], pids: list[int]) -> bool:
    """Whether one of ``pids`` holds one of the ``found`` sockets."""
    wanted = {listener.inode for listener in found}
    return any(wanted & _socket_inodes(pid) for pid in pids)


def describe_holder(listener: Listener) -> str:
    """Who holds ``listener``: "pid N (command)" when this user can see it."""
    for entry in os.listdir("/proc"):
        if entry.isdigit() and listener.inode in _socket_inodes(int(entry)):
            return f"pid {entry} ({_command(int(entry))})"
    if listener.uid != os.getuid():
        return "another user's process"
    return "a process not visible here"


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().rstrip(b"\0").split(b"\0")
    except OSError:
        return "?"
    text = " ".join(os.fsdecode(arg) for arg in argv)
    return text if len(text) <= 80 else text[:77] + "..."
