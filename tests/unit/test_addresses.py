import pytest

from ourmail.addresses import AddressError, normalise_address


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("Alice@Example.ORG", "alice@example.org"),
        ("alice", "alice@default.test"),
        ("Jürgen@Bücher.Example", "jürgen@xn--bcher-kva.example"),  # RFC 6531, IDNA
        ("ju\u0308rgen@example.org", "jürgen@example.org"),  # NFC
        ("first.last+tag@example.org", "first.last+tag@example.org"),
    ],
)
def test_normalise(raw: str, normal: str) -> None:
    assert normalise_address(raw, "default.test") == normal


@pytest.mark.parametrize(
    "bad",
    ["", "@example.org", "a..b@example.org", ".a@example.org", '"quoted"@example.org',
     "a b@example.org", "a\u00a0b@example.org", "a\u200bb@example.org", "x" * 65 + "@example.org",
     "ü" * 33 + "@example.org", "a@-bad-.org", "a@exa mple.org"],
)  # fmt: skip
def test_rejects(bad: str) -> None:
    with pytest.raises(AddressError):
        normalise_address(bad)
