"""A few seconds of the soak (bench/soak.py) against a live server: every body it sends gets the
status it expects, no 5xx, and /metrics counts exactly the requests and inputs the clients saw."""

from __future__ import annotations

import asyncio

from bench.soak import soak, start


def test_a_short_soak_answers_as_expected_and_metrics_count_what_the_clients_saw() -> None:
    server = start(workers=1)
    try:
        result = asyncio.run(soak(server.url, clients=4, seconds=4, seed=1, pid=server.process.pid))
    finally:
        server.stop()
    assert result["unexpected"] == {}, server.output()[-3000:]
    assert result["count_differences"] == {"requests": [], "inputs": []}
    assert all(code.isdigit() and int(code) < 500 for code in result["answers"]), result["answers"]
    assert result["requests"] > 0 and result["check_pass"]["requests"] == sum(result["cases"].values())
    assert set(result["answers"]) == {"200", "400", "422"}  # the check pass sends every bad body
    assert len(result["rss_mb"]) == 2 and result["rss_mb"][0][1] > 0
