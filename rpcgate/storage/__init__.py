"""What is kept: whether and how long an answer may be cached (`cache_policy`, pure),
the cache itself, in process and in Redis (`response_cache`), and the small state replicas
share through Redis: the served head (`shared_head`), filters and accepted transactions
(`shared_state`); all of it over one Redis client with one outage policy (`redis_client`).
May import `consensus`, `rpc` and `config`.
"""
