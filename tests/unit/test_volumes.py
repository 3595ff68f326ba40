"""The volumes behind ``ourmail_volume_free_bytes`` (ourmail/store/volumes.py) and their
figures in ``Metrics``: one per distinct shard root, labelled by root and shard ranges."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ourmail.config import ConfigError
from ourmail.net.metrics import Metrics
from ourmail.store.volumes import Volume, measure, measure_all, ranges, volumes


def test_ranges_are_compact_and_hexadecimal() -> None:
    assert ranges(range(256)) == "00-ff"
    assert ranges([0, 1, 2, 5, 7, 8]) == "00-02,05,07-08"
    assert ranges([255]) == "ff"
    assert ranges([]) == ""


def test_the_default_store_is_the_data_folder_and_its_mail_root(tmp_path: Path) -> None:
    assert volumes(tmp_path) == [Volume(tmp_path, ""), Volume(tmp_path / "mail", "00-ff")]


def test_each_distinct_root_of_shards_toml_is_one_volume(tmp_path: Path) -> None:
    (tmp_path / "shards.toml").write_text(
        '[[shard]]\nrange = "00-7f"\nroot = "/srv/mail-a"\n'
        '[[shard]]\nrange = "80-bf"\nroot = "/srv/mail-b"\n'
        '[[shard]]\nrange = "c0-ff"\nroot = "/srv/mail-a"\n'
    )
    assert volumes(tmp_path) == [
        Volume(tmp_path, ""),
        Volume(Path("/srv/mail-a"), "00-7f,c0-ff"),
        Volume(Path("/srv/mail-b"), "80-bf"),
    ]


def test_the_data_folder_is_measured_only_on_a_filesystem_of_its_own(tmp_path: Path) -> None:
    (tmp_path / "mail").mkdir()
    found = volumes(tmp_path)
    assert [u.volume for u in measure_all(found)] == [Volume(tmp_path / "mail", "00-ff")]
    elsewhere = [Volume(tmp_path, ""), Volume(Path("/dev/shm"), "00-ff")]
    assert os.stat("/dev/shm").st_dev != os.stat(tmp_path).st_dev
    assert [u.volume for u in measure_all(elsewhere)] == elsewhere


def test_a_bad_shards_toml_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "shards.toml").write_text('[[shard]]\nrange = "00-7f"\nroot = "a"\n')
    with pytest.raises(ConfigError, match="shards without a root"):
        volumes(tmp_path)


def test_measure_is_what_statvfs_says_and_none_for_a_missing_root(tmp_path: Path) -> None:
    usage = measure(Volume(tmp_path, "00-ff"))
    st = os.statvfs(tmp_path)
    assert usage.size == st.f_blocks * st.f_frsize
    assert usage.free is not None and abs(usage.free - st.f_bavail * st.f_frsize) < 2**26
    missing = measure(Volume(tmp_path / "not-mounted", "00-ff"))
    assert (missing.free, missing.size) == (None, None)


def test_metrics_expose_the_last_measure_and_the_backends() -> None:
    metrics = Metrics()
    metrics.measured_volumes([("/srv/a", "00-7f", 10, 100), ("/srv/b", "80-ff", None, None)])
    metrics.backend("clamd", True)
    metrics.backend("spamd", False)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for s in family.samples
    }
    a = (("root", "/srv/a"), ("shards", "00-7f"))
    assert samples[("ourmail_volume_free_bytes", a)] == 10
    assert samples[("ourmail_volume_size_bytes", a)] == 100
    assert not any(labels == (("root", "/srv/b"), ("shards", "80-ff")) for _, labels in samples)
    assert samples[("ourmail_backend_up", (("backend", "clamd"),))] == 1
    assert samples[("ourmail_backend_up", (("backend", "spamd"),))] == 0
