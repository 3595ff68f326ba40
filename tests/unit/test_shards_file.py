"""``shards.toml`` is read at start and by the commands: a wrong file is one clear line
(ConfigError), never a traceback."""

from pathlib import Path

import pytest

from ourmail.config import ConfigError
from ourmail.store.shards import ShardMap


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("shard = 5\n", "'shard' must be a list of \\[\\[shard\\]\\] tables"),
        ("shard = 'x'\n", "'shard' must be a list"),
        ("shard = [5]\n", "bad \\[\\[shard\\]\\] entry 5"),
        ('[[shard]]\nrange = 5\nroot = "m"\n', "bad \\[\\[shard\\]\\] entry"),
        ('[[shard]]\nrange = "00-ff"\nroot = 3\n', "bad \\[\\[shard\\]\\] entry"),
        ('[[shard]]\nrange = "zz"\nroot = "m"\n', "bad \\[\\[shard\\]\\] entry"),
        ('[[shard]]\nrange = "00-1ff"\nroot = "m"\n', "out of 00-ff"),
        ('[[shard]]\nrange = "00-7f"\nroot = "m"\n', "shards without a root: 80"),
        ("[[shard]\n", "shards.toml: "),
        (b"\xff\xfe".decode("latin-1"), "shards.toml: "),
    ],
)
def test_a_wrong_shards_file_is_a_configuration_error(
    tmp_path: Path, text: str, message: str
) -> None:
    (tmp_path / "shards.toml").write_text(text, "latin-1")
    with pytest.raises(ConfigError, match=message):
        ShardMap(tmp_path)
