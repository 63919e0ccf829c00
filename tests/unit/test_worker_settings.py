"""``WorkerSettings.from_env``: the RocksDB memory bound per table partition."""

from __future__ import annotations

import pytest
from recstream.stream.settings import WorkerSettings
from recstream.stream.tables import rocksdb_options


def test_rocksdb_memory_is_read_from_the_environment_and_split() -> None:
    assert WorkerSettings.from_env({}).rocksdb_mb == 32
    assert WorkerSettings.from_env({"RECSTREAM_ROCKSDB_MB": "64"}).rocksdb_mb == 64
    mib = 1024 * 1024
    assert rocksdb_options(64) == {"driver": "rocksdict", "write_buffer_size": 16 * mib,
                                   "max_write_buffer_number": 2, "block_cache_size": 32 * mib}


def test_too_little_rocksdb_memory_is_named() -> None:
    with pytest.raises(ValueError, match="RECSTREAM_ROCKSDB_MB must be >= 4"):
        WorkerSettings.from_env({"RECSTREAM_ROCKSDB_MB": "2"})
