"""The message frame's policy and headers (the serving side uses them as they are)."""

from __future__ import annotations

from ourmail.web.sanitise import SafeHTML, frame_csp, frame_document, frame_headers


def directives(policy: str) -> dict[str, list[str]]:
    parsed = {}
    for part in policy.split(";"):
        name, *values = part.split()
        parsed[name] = values
    return parsed


def test_the_frame_runs_no_script_and_loads_only_our_images() -> None:
    policy = directives(frame_csp(allow_remote=False))
    assert policy["default-src"] == ["'none'"]
    assert policy["img-src"] == ["'self'"]
    assert policy["style-src"] == ["'unsafe-inline'"]
    assert policy["form-action"] == ["'none'"] and policy["base-uri"] == ["'none'"]
    assert "script-src" not in policy  # default-src 'none' covers it
    sandbox = policy["sandbox"]
    assert "allow-scripts" not in sandbox and "allow-same-origin" not in sandbox
    assert "allow-forms" not in sandbox and "allow-top-navigation" not in sandbox


def test_remote_images_are_allowed_only_when_asked() -> None:
    assert directives(frame_csp(allow_remote=True))["img-src"] == ["'self'", "https:", "http:"]
    assert directives(frame_csp(allow_remote=True))["default-src"] == ["'none'"]


def test_frame_headers() -> None:
    headers = frame_headers(allow_remote=False)
    assert headers["Content-Security-Policy"] == frame_csp(allow_remote=False)
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Type"] == "text/html; charset=utf-8"


def test_frame_document_wraps_the_body() -> None:
    document = frame_document(SafeHTML("<p>hi</p>"))
    assert document.startswith("<!DOCTYPE html>")
    assert 'content="off"' in document and document.endswith("<body><p>hi</p></body></html>")
