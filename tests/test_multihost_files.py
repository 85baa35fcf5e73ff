"""Per-host file sharding on 2 real processes (gloo): the live feed of a file source and the
cached feed each read disjoint files whose union is every file; with fewer cache files than
hosts, every host reads every file and takes its share of the records or examples (said
once)."""

import json
import logging

import numpy as np

from tasks.feed_config import FeedConfig
from tasks.feeding.host_feed import HostFeed
from tests.test_feed_resume import write_cache
from tests.test_multihost import free_port, spawn, wait_all

LENGTHS = {"inputs": 32, "targets": 16}


def test_two_hosts_read_disjoint_files_covering_the_source_and_the_cache(tmp_path):
    corpus = [tmp_path / f"part{i}.txt" for i in range(4)]
    for i, path in enumerate(corpus):
        path.write_text("\n".join(f"file {i} line {j} of a corpus long enough to corrupt"
                                  for j in range(20)))
    pattern = str(tmp_path / "part*.txt")
    cache = tmp_path / "cache"
    write_cache(cache, 4, "text_span_corruption", LENGTHS, {"text_corpus": {"train": pattern}})
    port, logs = free_port(), [tmp_path / f"log{i}" for i in range(2)]
    outs = [tmp_path / f"out{i}.json" for i in range(2)]
    procs = [spawn(logs[i], "files", i, port, pattern, cache, outs[i]) for i in range(2)]
    wait_all(procs, logs, timeout=240)
    hosts = [json.loads(o.read_text()) for o in outs]
    assert [h["process_index"] for h in hosts] == [0, 1]
    for key in ("opened", "live_files", "cache_files"):
        a, b = (set(h[key]) for h in hosts)
        assert a and b and not a & b, key
    assert set(hosts[0]["opened"]) | set(hosts[1]["opened"]) == {str(p) for p in corpus}
    assert hosts[0]["opened"] == hosts[0]["live_files"]
    every = {str(p) for p in sorted(cache.glob("shard-*"))}
    assert len(every) == 4 and set(hosts[0]["cache_files"]) | set(hosts[1]["cache_files"]) == every


def test_fewer_cache_files_than_hosts_shares_records_and_says_so_once(tmp_path, caplog):
    write_cache(tmp_path, 2)
    config = FeedConfig("test_cache_counting", {"inputs": 16, "targets": 16}, batch_size=3,
                        shuffle=False, num_epochs=1, cache_dir=str(tmp_path))
    with caplog.at_level(logging.WARNING):
        hosts = [HostFeed(config, i, 3) for i in range(3)]
    assert sum("has 2 shard file(s) for 3 hosts" in r.message for r in caplog.records) == 1
    rows = [tuple(r) for h in hosts for b in h for r in b["encoder_input_tokens"]]
    whole = [tuple(r) for b in HostFeed(config, 0, 1)
             for r in b["encoder_input_tokens"]]
    assert sorted(rows) == sorted(whole) and len(rows) == len(whole)
    assert rows and all(h.files == hosts[0].files for h in hosts)


def test_a_file_source_with_fewer_files_than_hosts_is_shared_by_example_said_once(tmp_path,
                                                                                   caplog):
    path = tmp_path / "one.txt"
    path.write_text("\n".join(f"line {j} of a corpus long enough to corrupt" for j in range(30)))
    config = FeedConfig("text_span_corruption", LENGTHS, batch_size=2,
                        task_settings={"text_corpus": {"train": str(path)}})
    with caplog.at_level(logging.WARNING):
        hosts = [HostFeed(config, i, 2) for i in range(2)]
    said = [r for r in caplog.records if "has 1 input shard(s) for 2 hosts" in r.message]
    assert len(said) == 1 and all(h.files == [str(path)] for h in hosts)
    assert not np.array_equal(next(hosts[0])["encoder_input_tokens"],
                              next(hosts[1])["encoder_input_tokens"])
