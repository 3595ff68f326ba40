"""The queue's counters over two real servers (tests/queuehelp.py): a recipient the other
server takes, one it refuses, and one whose server cannot be reached."""

from __future__ import annotations

from pathlib import Path

from conftest import dns_zone
from metricshelp import scrape, value
from queuehelp import server_pair, submit, wait_for


def test_remote_deliveries_bounces_and_deferrals_are_counted(tmp_path: Path) -> None:
    zone, _ = dns_zone()
    zone.set_mx("unreachable.test", [(10, "mx.unreachable.test")])
    zone.set_address("mx.unreachable.test", "127.0.0.9")  # nothing listens there
    with server_pair(tmp_path) as pair:
        ours = pair.ours
        rcpts = ["carol@remote.test", "nobody@remote.test", "dan@unreachable.test"]
        assert submit(ours, rcpts) == {}

        def counted() -> bool:
            samples = scrape(ours)
            return (
                value(samples, "ourmail_messages_delivered_total", destination="remote") == 1
                and value(samples, "ourmail_messages_bounced_total") == 1
                and value(samples, "ourmail_messages_deferred_total") == 1
            )

        wait_for(counted, 30)
        # The other server counts what it took and what it refused.
        theirs = scrape(pair.theirs, host="127.0.0.2")
        assert value(theirs, "ourmail_messages_accepted_total", service="smtp") == 1
        assert (
            value(theirs, "ourmail_messages_refused_total", service="smtp", reason="recipient") == 1
        )
        # The unreachable recipient waits for its retry.
        assert value(scrape(ours), "ourmail_queue_messages") >= 1
