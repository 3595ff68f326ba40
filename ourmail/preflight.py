"""Start-up checks: everything the configuration names must load before the server starts.

A setting that cannot work (a listener endpoint that does not parse or cannot bind, a shard
root that is not there, an LDAP URL, password file or CA file that cannot be read, a module a
configured feature needs) stops ``twistd ourmail`` with one :class:`ConfigError` line, instead
of surfacing later as a failed login or a deferred message.  The certificate and key are
checked where they are loaded (:func:`ourmail.net.tls.server_context`).  Each check reads or
binds and releases at once; nothing here keeps state.
"""

from __future__ import annotations

import errno
import importlib
import os
import socket
from collections.abc import Mapping
from pathlib import Path

from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IReactorCore

from ourmail.config import ConfigError, RelaySettings, Settings

#: A unix socket path is stored in a fixed ``sun_path`` of 108 bytes, NUL included (unix(7)).
UNIX_PATH_MAX = 107
#: Endpoint types that listen on a TCP port.
TCP_KINDS = ("tcp", "tcp6", "ssl")


def check(settings: Settings) -> None:
    """Check what ``settings`` configure beyond their syntax (config.py checks that)."""
    check_shard_roots(settings.data_dir)
    if settings.ldap_url:
        check_ldap(settings.ldap_url)
    check_relay(settings.queue.relay)


def check_shard_roots(data_dir: Path) -> None:
    """``shards.toml`` parses and each volume it names is a folder ourmail can write.

    Only the default root (``<data>/mail``) is created when missing: another root that does
    not exist is most likely a volume that is not mounted, and creating it would fill the
    wrong file system.
    """
    from ourmail.store.shards import DEFAULT_ROOT
    from ourmail.store.volumes import volumes

    for volume in volumes(data_dir):
        root, which = volume.root, volume.shards
        if not which or (root == data_dir / DEFAULT_ROOT and not root.exists()):
            continue  # the data folder itself, or the default root made at first delivery
        if not root.is_dir():
            raise ConfigError(
                f"shards.toml: the root {root} of shards {which} is not a folder "
                "(is the volume mounted?)"
            )
        if not os.access(root, os.W_OK | os.X_OK):
            raise ConfigError(f"shards.toml: no permission to write in {root} (shards {which})")


def check_ldap(urls: str) -> None:
    """The LDAP module loads, the URLs parse, and the files they name can be read."""
    require_module("ldaptor", "LDAP")
    from ourmail.directory.ldap import LDAPSettings

    ldap = LDAPSettings.from_urls(urls)
    ldap.bind_password()
    if ldap.ca_file is not None:
        _check_ca_file(ldap.ca_file, "the LDAP CA file")


def check_relay(relay: RelaySettings) -> None:
    """The smart host's password and CA files can be read."""
    if relay.password_file:
        try:
            Path(relay.password_file).read_bytes()
        except OSError as e:
            raise ConfigError(
                f"cannot read queue.relay.password_file {relay.password_file}: {e.strerror}"
            ) from e
    if relay.ca_file:
        _check_ca_file(Path(relay.ca_file), "queue.relay.ca_file")


def _check_ca_file(path: Path, what: str) -> None:
    from cryptography import x509

    try:
        if not x509.load_pem_x509_certificates(path.read_bytes()):
            raise ValueError("no certificate in it")
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror}") from e
    except ValueError as e:
        raise ConfigError(f"{what} {path} holds no PEM certificate: {e}") from e


def require_module(name: str, feature: str) -> None:
    """Import ``name`` or fail with the package to install."""
    try:
        importlib.import_module(name)
    except ImportError as e:
        raise ConfigError(
            f"{feature} needs the Python package {name!r}, which cannot be imported ({e}); "
            "reinstall ourmail with its dependencies (pip install ourmail)"
        ) from e


def check_listeners(listen: Mapping[str, str | None], reactor: IReactorCore) -> None:
    """Every listener endpoint parses and its address can be bound now.

    The address is bound and released at once, so a port in use or a privileged port is
    reported before anything starts.  Port 0 (any free port) is not tried.
    """
    for service, endpoint in listen.items():
        if endpoint is None:
            continue
        where = f"{service} cannot listen on {endpoint}"
        try:
            kind, args, options = parse_endpoint(endpoint)
            port = _port(args, options, where) if kind in TCP_KINDS else 0
            serverFromString(reactor, endpoint)
        except (ValueError, TypeError, KeyError, OSError) as e:
            raise ConfigError(f"listen.{service} = {endpoint!r}: {e}") from e
        except IndexError:  # a systemd: endpoint's index beyond what was passed (sd_listen_fds)
            raise ConfigError(
                f"listen.{service} = {endpoint!r}: systemd passed no such socket (start ourmail "
                "from ourmail.socket, whose ListenStream= lines are index=0, 1...)"
            ) from None
        if kind in TCP_KINDS and port:
            _check_bind(kind, port, options.get("interface", ""), where)
        elif kind == "unix":
            _check_unix(args, options, where)


def parse_endpoint(text: str) -> tuple[str, list[str], dict[str, str]]:
    """Split a Twisted server endpoint string into its type, positional and named arguments
    (``:`` separates them, ``\\`` escapes the next character)."""
    parts: list[str] = [""]
    chars = iter(text)
    for char in chars:
        if char == "\\":
            parts[-1] += next(chars, "")
        elif char == ":":
            parts.append("")
        else:
            parts[-1] += char
    kind = parts[0].strip().lower()
    if not kind:
        raise ValueError("no endpoint type (e.g. tcp:2525)")
    args, options = [], {}
    for part in parts[1:]:
        name, equals, value = part.partition("=")
        if equals:
            options[name] = value
        else:
            args.append(part)
    return kind, args, options


def _port(args: list[str], options: dict[str, str], where: str) -> int:
    text = options.get("port", args[0] if args else "")
    if not text.isdigit() or int(text) > 65535:
        raise ConfigError(f"{where}: {text!r} is not a port number")
    return int(text)


def _check_bind(kind: str, port: int, interface: str, where: str) -> None:
    family = socket.AF_INET6 if kind == "tcp6" or ":" in interface else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # Twisted sets SO_REUSEADDR on listening sockets too, so TIME_WAIT is no conflict.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((interface, port))
        except OSError as e:
            raise ConfigError(f"{where}: {_bind_problem(e, port, interface)}") from e


def _bind_problem(e: OSError, port: int, interface: str) -> str:
    if e.errno == errno.EADDRINUSE:
        return f"port {port} is already in use (another mail server, or ourmail already running?)"
    if e.errno == errno.EACCES:
        return f"port {port} needs root or CAP_NET_BIND_SERVICE; use a port above 1023"
    if e.errno == errno.EADDRNOTAVAIL:
        return f"{interface} is not an address of this machine"
    return e.strerror or str(e)


def unix_path(args: list[str], options: dict[str, str]) -> Path:
    """The socket path of a ``unix:`` endpoint, from :func:`parse_endpoint`'s parts."""
    return Path(options.get("address", args[0] if args else ""))


def _check_unix(args: list[str], options: dict[str, str], where: str) -> None:
    path = unix_path(args, options)
    if not path.name:
        raise ConfigError(f"{where}: no socket path")
    if len(bytes(path)) > UNIX_PATH_MAX:
        raise ConfigError(
            f"{where}: the path is {len(bytes(path))} bytes; a unix socket path may have at "
            f"most {UNIX_PATH_MAX} (move the data directory or set listen.lmtp)"
        )
    if not path.parent.is_dir():
        raise ConfigError(f"{where}: the folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{where}: no permission to create the socket in {path.parent}")
    if path.exists() and not path.is_socket():
        raise ConfigError(f"{where}: {path} exists and is not a socket")
