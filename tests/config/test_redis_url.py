"""`cache.redis_url`: one server, a Sentinel-watched primary, or a Cluster."""

from __future__ import annotations

import pytest
import yaml

from rpcgate.config.redis_url import RedisUrlError, parse_redis_url
from rpcgate.config.settings import ConfigError, parse_config

pytestmark = pytest.mark.unit


def test_a_single_server_url_goes_to_redis_py_as_written() -> None:
    for url in ("redis://127.0.0.1:6379/0", "rediss://u:p@cache:6380/2", "unix:///run/r.sock"):
        target = parse_redis_url(url)
        assert (target.kind, target.url) == ("single", url)
    assert parse_redis_url("rediss://cache:6380").tls


def test_a_sentinel_url_names_its_sentinels_service_and_database() -> None:
    target = parse_redis_url("redis+sentinel://app:s%40cret@10.0.0.1:26379,10.0.0.2:26380/prim/3")
    assert target.kind == "sentinel"
    assert target.hosts == (("10.0.0.1", 26379), ("10.0.0.2", 26380))
    assert (target.service, target.db) == ("prim", 3)
    assert (target.username, target.password, target.tls) == ("app", "s@cret", False)
    assert parse_redis_url("rediss+sentinel://s:26379/prim").tls
    assert parse_redis_url("redis+sentinel://:pw@s:26379/prim").username is None


def test_a_cluster_url_names_its_nodes() -> None:
    target = parse_redis_url("rediss+cluster://n1:7000,[::1]:7001")
    assert target.kind == "cluster" and target.tls
    assert target.hosts == (("n1", 7000), ("::1", 7001))


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://cache:6379", "must start with redis://"),
        ("redis+sentinel://s:26379", "needs the service name"),
        ("redis+sentinel:///prim", "needs at least one host:port"),
        ("redis+sentinel://s:26379/prim/x", "only a database number"),
        ("redis+cluster://n1:7000/1", "database 0 only"),
        ("redis+cluster://user:hunter2@n1", "must be host:port, not 'n1'"),
    ],
)
def test_a_malformed_url_says_what_is_wrong_without_the_password(url: str, problem: str) -> None:
    with pytest.raises(RedisUrlError) as raised:
        parse_redis_url(url)
    assert problem in str(raised.value)
    assert "hunter2" not in str(raised.value)


def test_config_validate_reports_a_bad_redis_url_under_its_key() -> None:
    text = yaml.safe_dump(
        {
            "cache": {"redis_url": "redis+cluster://user:hunter2@n1"},
            "chains": [{"name": "d", "chain_id": 7, "upstreams": [{"url": "http://n:1"}]}],
        }
    )
    with pytest.raises(ConfigError) as raised:
        parse_config(text, env={})
    (problem,) = raised.value.problems
    assert problem.startswith("cache.redis_url: each node must be host:port")
    assert "hunter2" not in problem
