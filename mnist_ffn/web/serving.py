"""The web servers' plumbing (the demo's and the playground's): the address checked before anything starts, who can
reach the page said once, and only requests meant for this server answered.

A page served on this machine can be reached by any web site open in the same browser: a form posted to it, a
fetch from another origin, or a name of the other site's that it makes resolve to 127.0.0.1 (DNS rebinding).
The Host header of a rebound request names the other site, so every server answers only the host names it was
started for (`allowed_hosts`), on whatever address it listens; and a request that changes something must come
from the page's own origin. Whether the page is open to the network is decided by the address it binds, not
by how `--host` spells it: 127.1, 2130706433, LOCALHOST and ::ffff:127.0.0.1 are all this machine alone.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import sys

from mnist_ffn.errors import UsageError
from mnist_ffn.messages import cut, one_line, reason

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
WILDCARDS = ("0.0.0.0", "::", "")


def bound_addresses(host: str, port: int) -> list[str]:
    """The addresses a server started with `--host host` listens on, as the operating system resolves it."""
    return list(dict.fromkeys(found[4][0] for found in _resolve(bind_host(host), port)))


def page_url(host: str, port: int) -> str:
    """The page's address to print and open: an IPv6 address in brackets, as URLs write it."""
    host = host.strip("[]")
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def _resolve(host: str, port: int) -> list[tuple]:
    """getaddrinfo's answers for a server's address; one line (UsageError) for a host that is no address or name."""
    try:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError) as exc:
        raise UsageError(f"--host {cut(host)}: not an address or name of this machine ({reason(exc)})") from None


def bind_host(host: str) -> str:
    """The address to give the web server: an IPv4 address written as IPv6 (::ffff:127.0.0.1), which an IPv6-only
    socket cannot bind, as the IPv4 address it is; anything else as typed."""
    try:
        mapped = getattr(ipaddress.ip_address(host.strip("[]")), "ipv4_mapped", None)
    except ValueError:  # a name
        return host
    return str(mapped) if mapped is not None else host.strip("[]")


def is_loopback(address: str) -> bool:
    """127.0.0.0/8, ::1, and an IPv4 loopback address written as IPv6 (::ffff:127.0.0.1)."""
    ip = ipaddress.ip_address(address.split("%")[0])
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


def exposure_warning(host: str, port: int, allowed: set[str]) -> str | None:
    """Who else can reach a page served on `host`, and by which names; None for this machine only."""
    addresses = bound_addresses(host, port)
    if all(is_loopback(address) for address in addresses):
        return None
    whom = "this machine" if host.strip("[]") in WILDCARDS else ", ".join(addresses)
    names = ", ".join(sorted({name.rsplit(":", 1)[0] for name in allowed}))
    return (
        f"--host {cut(host)}: the page is open to everyone who can reach {whom} over the network, unencrypted; "
        f"it answers to {cut(names, 300)} (add a name it is reached by with --allow-host)"
    )


def allowed_hosts(host: str, port: int, extra: list[str] | tuple[str, ...] = ()) -> set[str]:
    """The Host headers the server answers to: this machine's loopback names, the host as typed, this machine's
    own names when it listens on every address, and `extra` (--allow-host); each with the port, and also without
    it on port 80, where browsers leave it out."""
    host = host.strip("[]")
    names = {*LOOPBACK_NAMES, *extra}
    if host not in WILDCARDS:
        names.add(f"[{host}]" if ":" in host and not host.startswith("[") else host)
    if host in WILDCARDS or not all(is_loopback(address) for address in bound_addresses(host, port)):
        names |= {socket.gethostname(), socket.getfqdn()}
        names |= {f"[{address}]" if ":" in address else address for address in _own_addresses()}
    normalized = {name.lower().rstrip(".") for name in names if name}
    allowed = {f"{name}:{port}" for name in normalized}
    if port == 80:
        allowed |= normalized
    return allowed


def _own_addresses() -> set[str]:
    try:
        return {address[4][0] for address in socket.getaddrinfo(socket.gethostname(), None)}
    except OSError:  # a machine whose own name does not resolve
        return set()


class OnlyThisServer:
    """ASGI middleware: a request whose Host is not one this server answers to (a rebound name), or that would
    change something (any method but GET and HEAD, or a WebSocket) from another origin, gets 403 and one JSON
    line; the page's own requests pass."""

    def __init__(self, app, allowed: set[str]):
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            pairs = [(name.lower(), value.decode("latin-1")) for name, value in scope.get("headers", [])]
            headers = dict(pairs)
            host = headers.get(b"host", "").lower()
            refusal = None
            if any(sum(name == header for name, _ in pairs) > 1 for header in (b"host", b"origin")):
                refusal = "not a request this page makes (two Host or Origin headers)"
            elif _without_dot(host) not in self.allowed:
                refusal = f"not a host this server answers to: {cut(host, 80)}"
            else:
                origin = headers.get(b"origin")
                changes = scope["type"] == "websocket" or scope.get("method", "GET") not in ("GET", "HEAD")
                if changes and origin is not None and origin.lower() != f"http://{host}":
                    refusal = f"not a request from this page (origin {cut(origin, 80)})"
            if refusal is not None:
                await _refuse(scope, receive, send, one_line(refusal))
                return
        await self.app(scope, receive, send)


def _without_dot(host: str) -> str:
    """`localhost.:7861` as `localhost:7861`: a name with its root's dot is the same name."""
    if host.startswith("["):  # an IPv6 address: no name
        return host
    name, colon, port = host.partition(":")
    return f"{name.rstrip('.')}{colon}{port}"


async def _refuse(scope, receive, send, message: str) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
        return
    from starlette.responses import JSONResponse

    await JSONResponse({"error": message}, status_code=403)(scope, receive, send)


def check_port(host: str, port: int) -> None:
    """Refuse a host that is not this machine's, or a port already in use, before anything starts, naming it."""
    family, kind, protocol, _, address = _resolve(bind_host(host), port)[0]  # as the server will bind it
    with socket.socket(family, kind, protocol) as probe:
        # as the server binds: connections of a server just stopped, waiting out TIME_WAIT, do not hold the port
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:  # uvicorn's IPv6 sockets take IPv6 alone
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT, errno.EINVAL):
                raise UsageError(f"--host {cut(host)}: not an address of this machine ({exc.strerror})") from None
            reason = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be used ({exc.strerror})"
            raise UsageError(f"--port {port}: {host}:{port} {reason}; choose another with --port") from None


def announce_exposure(host: str, port: int, allowed: set[str]) -> None:
    exposed = exposure_warning(host, port, allowed)
    if exposed:
        print(f"mnist-ffn: warning: {exposed}", file=sys.stderr, flush=True)


class MalformedRequestLine(logging.Filter):
    """The web server's log of a request that failed before any page code ran (an unknown endpoint, a
    malformed body): one warning line on stderr instead of the server's traceback. The server goes on."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.exc_info and "Invalid HTTP request" in record.getMessage():  # the server's own words for it
            print("mnist-ffn: warning: refused a malformed request to the page", file=sys.stderr, flush=True)
            return False
        if not record.exc_info:
            return True
        error = record.exc_info[1]
        print(
            f"mnist-ffn: warning: refused a malformed request to the page ({one_line(type(error).__name__)}: "
            f"{one_line(cut(str(error), 200))})",
            file=sys.stderr,
            flush=True,
        )
        return False


def quiet_server_logs() -> None:
    """Requests no page of ours makes must not fill the server's stderr with tracebacks (see
    MalformedRequestLine), nor with the multipart parser's warnings about a body it then refuses."""
    logging.getLogger("uvicorn.error").addFilter(MalformedRequestLine())  # uvicorn keeps a logger's filters
    logging.getLogger("python_multipart").setLevel(logging.ERROR)
