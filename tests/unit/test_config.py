from pathlib import Path

import pytest

from ourmail.config import (
    ConfigError,
    default_listen,
    domain_from_hostname,
    load_settings,
    parse_listen_option,
)


def test_defaults_use_unprivileged_ports_when_not_root(tmp_path: Path) -> None:
    s = load_settings(data=str(tmp_path), hostname="mail.example.org", is_root=False)
    assert s.data_dir == tmp_path
    assert s.domains == ("example.org",)
    assert s.listen["smtp"] == "tcp:2525:backlog=1024"
    assert s.listen["imaps"] == "tcp:1993:backlog=1024"
    assert s.tls_certificate == tmp_path / "tls" / "cert.pem"


def test_root_gets_standard_ports() -> None:
    assert default_listen(True)["submission"] == "tcp:587:backlog=1024"
    assert default_listen(True)["pop3s"] == "tcp:995:backlog=1024"


@pytest.mark.parametrize(
    ("host", "domain"),
    [("mail.example.org", "example.org"), ("example.org", "example.org"), ("vm", "vm.localdomain")],
)
def test_domain_from_hostname(host: str, domain: str) -> None:
    assert domain_from_hostname(host) == domain


def test_file_then_command_line(tmp_path: Path) -> None:
    (tmp_path / "ourmail.toml").write_text(
        'hostname = "mx.a.org"\ndomains = ["a.org", "b.org"]\n'
        '[listen]\nimap = "none"\npop3 = "tcp:9110"\n[limits]\nmax_message_size = 1000\n'
    )
    s = load_settings(data=str(tmp_path), listen=("pop3=tcp:9999",), is_root=False)
    assert s.hostname == "mx.a.org"
    assert s.domains == ("a.org", "b.org")
    assert s.primary_domain == "a.org"
    assert s.listen["imap"] is None
    assert s.listen["pop3"] == "tcp:9999"
    assert s.limits.max_message_size == 1000
    s = load_settings(data=str(tmp_path), domains=("c.org", "C.org"), is_root=False)
    assert s.domains == ("c.org",)


@pytest.mark.parametrize(
    "text",
    [
        "bogus = 1\n",
        "[limits]\nmax_message_size = -1\n",
        "[limits]\nmax_message_size = true\n",
        "[listen]\nftp = 'tcp:21'\n",
        "domains = ['not a domain']\n",
        "[tls]\ncertificate = 'x.pem'\n",
        "this is not toml",
        "\x00\x01",
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str) -> None:
    (tmp_path / "ourmail.toml").write_text(text)
    with pytest.raises(ConfigError):
        load_settings(data=str(tmp_path), hostname="mx.a.org")


@pytest.mark.parametrize("spec", ["imap", "ftp=tcp:21", "imap=", "=tcp:1"])
def test_bad_listen_option(spec: str) -> None:
    with pytest.raises(ConfigError):
        parse_listen_option(spec)


def test_listen_none_switches_off() -> None:
    assert parse_listen_option("POP3=none") == ("pop3", None)


def test_template_is_valid_and_records_the_domains(tmp_path: Path) -> None:
    from ourmail.config import config_template

    s = load_settings(data=str(tmp_path), domains=("a.org", "b.org"), hostname="mx.a.org")
    (tmp_path / "ourmail.toml").write_text(config_template(s))
    again = load_settings(data=str(tmp_path), hostname="other.host.net")
    assert again.domains == ("a.org", "b.org")


def test_strcred_knows_the_ourmail_checker(tmp_path: Path) -> None:
    from twisted.cred import strcred

    from ourmail.auth.checker import AccountChecker

    checker = strcred.makeChecker(f"ourmail:{tmp_path}")
    assert isinstance(checker, AccountChecker)
    assert checker.accounts.path == tmp_path / "accounts.json"


def test_first_start_with_no_options_fills_the_default_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ourmail.service import first_start

    monkeypatch.chdir(tmp_path)
    settings = load_settings(hostname="mail.example.org", is_root=False)
    first_start(settings)
    data = tmp_path / "ourmail-data"
    assert settings.data_dir == data
    assert {p.name for p in data.iterdir()} >= {
        "ourmail.toml",
        "shards.toml",
        "accounts.json",
        "tls",
    }
    assert oct(data.stat().st_mode & 0o777) == "0o700"
    assert load_settings(hostname="other.host.net").domains == ("example.org",)


def test_config_file_may_name_the_data_dir(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "ourmail.toml").write_text('data = "../srv"\n')
    s = load_settings(config=str(tmp_path / "etc" / "ourmail.toml"), hostname="mx.a.org")
    assert s.data_dir == tmp_path / "srv"


@pytest.mark.parametrize("text", ["[quota]\nbytes = -1\n", "[quota]\npermanent = 1\n",
                                  "[quota.domain.x]\nbytes = 'big'\n", "[quota]\ndomain = 3\n"])  # fmt: skip
def test_bad_quota_config(tmp_path: Path, text: str) -> None:
    (tmp_path / "ourmail.toml").write_text(text)
    with pytest.raises(ConfigError):
        load_settings(data=str(tmp_path), hostname="mx.a.org")


def test_parse_size() -> None:
    from ourmail.config import parse_size

    assert parse_size("1024") == 1024
    assert parse_size("500M") == 500 * 2**20
    assert parse_size("10GiB") == 10 * 2**30
    with pytest.raises(ValueError):
        parse_size("lots")


def test_lmtp_defaults_to_a_unix_socket_in_the_data_dir(tmp_path: Path) -> None:
    s = load_settings(data=str(tmp_path), hostname="mx.a.org", is_root=False)
    assert s.listen["lmtp"] == f"unix:{tmp_path}/lmtp.sock:mode=660:lockfile=1"
    s = load_settings(
        data=str(tmp_path), hostname="mx.a.org", listen=("lmtp=tcp:24:interface=::1",)
    )
    assert s.listen["lmtp"] == "tcp:24:interface=::1"


def test_local_directory_implements_the_interface(tmp_path: Path) -> None:
    from zope.interface.verify import verifyObject

    from ourmail.auth.accounts import AccountDB
    from ourmail.directory.local import LocalDirectory
    from ourmail.interfaces import IDirectory

    verifyObject(IDirectory, LocalDirectory(AccountDB(tmp_path), ("a.org",)))


@pytest.mark.parametrize(
    "text",
    [
        "[queue]\nretry_first = 0\n",
        "[queue]\nmax_age = -5\n",
        "[queue]\ndns_servers = ['8.8.8.8']\n",
        "[queue]\ndns_servers = 'x'\n",
        "[queue.relay]\nhost = 'smtp.example.net'\n",
        "[queue.relay]\nhost = 'smtp.example.net:587'\ntls = 'maybe'\n",
        "[queue.relay]\nhost = 'smtp.example.net:587'\nusername = 'u'\n",
        "[queue]\nrelay = 3\n",
    ],
)
def test_bad_queue_config(tmp_path: Path, text: str) -> None:
    (tmp_path / "ourmail.toml").write_text(text)
    with pytest.raises(ConfigError):
        load_settings(data=str(tmp_path), hostname="mx.a.org")


def test_queue_config(tmp_path: Path) -> None:
    (tmp_path / "ourmail.toml").write_text(
        "[queue]\nretry_first = 60\ndelay_warning = 0\ndns_servers = ['127.0.0.1:53']\n"
        "[queue.relay]\nhost = '[smtp.example.net]:465'\ntls = 'implicit'\n"
    )
    queue = load_settings(data=str(tmp_path), hostname="mx.a.org").queue
    assert (queue.retry_first, queue.delay_warning, queue.max_age) == (60, 0, 5 * 24 * 3600)
    assert queue.dns_servers == ("127.0.0.1:53",)
    assert queue.relay.address == ("smtp.example.net", 465)


def test_ports_choice_overrides_the_uid(tmp_path):
    """``ports = "standard"`` (a service user with CAP_NET_BIND_SERVICE) takes 25 without root;
    ``--ports`` wins over the file; anything else is a configuration error."""
    assert load_settings(data=str(tmp_path), is_root=False).listen["smtp"].startswith("tcp:2525:")
    (tmp_path / "ourmail.toml").write_text('ports = "standard"\n')
    s = load_settings(data=str(tmp_path), is_root=False)
    assert s.listen["smtp"].startswith("tcp:25:")
    assert s.listen["imaps"].startswith("tcp:993:")
    s = load_settings(data=str(tmp_path), is_root=True, ports="unprivileged")
    assert s.listen["submission"].startswith("tcp:2587:")
    (tmp_path / "ourmail.toml").write_text('ports = "low"\n')
    with pytest.raises(ConfigError, match="'ports' is one of standard, unprivileged"):
        load_settings(data=str(tmp_path), is_root=False)


def test_a_data_folder_that_cannot_be_made_is_a_configuration_error(tmp_path: Path) -> None:
    """Not a PermissionError traceback: one line naming the folder (twistd prints it)."""
    import attrs

    from ourmail.service import first_start

    (tmp_path / "file").write_text("")
    s = load_settings(data=str(tmp_path / "data"), is_root=False)
    s = attrs.evolve(s, data_dir=tmp_path / "file" / "data", config_path=None)
    with pytest.raises(ConfigError, match=r"cannot create the data folder .*file/data: Not a dir"):
        first_start(s)


def test_the_bind_capability_counts_as_root_for_the_ports(tmp_path: Path) -> None:
    """CapEff with bit 10 (CAP_NET_BIND_SERVICE) set: the standard ports by default."""
    import os

    from ourmail.config import may_bind_low_ports

    status = tmp_path / "status"
    status.write_text("Name:\tpython3\nCapEff:\t0000000000000400\n")
    assert may_bind_low_ports(status)
    status.write_text("Name:\tpython3\nCapEff:\t0000000000000000\n")
    assert may_bind_low_ports(status) is (os.geteuid() == 0)
