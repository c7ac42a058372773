"""benchmarks/serve.py's pure parts: reading wrk's output, wrk's Lua bodies, the goals (no wrk, no server)."""

from __future__ import annotations

import json
from types import ModuleType

import pytest

from tests.conftest import load_benchmark

WRK_OK = """\
Running 5s test @ http://127.0.0.1:41234/predict
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.31ms  702.11us  12.05ms   81.20%
    Req/Sec     3.47k   201.33     3.80k    72.00%
  Latency Distribution
     50%  241.00us
     75%    2.60ms
     90%    3.01ms
     99%    4.57ms
  17290 requests in 5.00s, 4.07MB read
Requests/sec:   3457.81
Transfer/sec:    833.29KB
"""

WRK_ERRORS = """\
Running 1s test @ http://127.0.0.1:41234/predict
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   101.20ms   90.00ms    1.20s    90.00%
    Req/Sec   300.00     20.00     350.00    70.00%
  Latency Distribution
     50%   80.00ms
     75%  120.00ms
     90%  200.00ms
     99%    1.20s
  310 requests in 1.00m, 80.00KB read
  Socket errors: connect 0, read 2, write 0, timeout 5
  Non-2xx or 3xx responses: 12
Requests/sec:    305.12
Transfer/sec:     79.10KB
"""


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_benchmark("serve")


def test_wrk_output_is_read(bench: ModuleType) -> None:
    result = bench.parse_wrk(WRK_OK)
    assert result.requests == 17290
    assert result.seconds == pytest.approx(5.0)
    assert result.requests_per_s == pytest.approx(3457.81)
    assert result.p50_ms == pytest.approx(0.241)
    assert result.p99_ms == pytest.approx(4.57)
    assert result.failure is None


def test_wrk_errors_fail_the_row(bench: ModuleType) -> None:
    result = bench.parse_wrk(WRK_ERRORS)
    assert result.seconds == pytest.approx(60.0)
    assert result.p99_ms == pytest.approx(1200.0)
    assert result.non_2xx == 12
    assert result.socket_errors == {"connect": 0, "read": 2, "write": 0, "timeout": 5}
    assert result.failure == "12 non-2xx responses of 310; socket errors: connect 0, read 2, write 0, timeout 5"


def test_output_without_a_rate_is_an_error(bench: ModuleType) -> None:
    with pytest.raises(ValueError, match=r"no Requests/sec line"):
        bench.parse_wrk("unable to connect to 127.0.0.1:1 Connection refused")


@pytest.mark.parametrize(("text", "ms"), [("241.00us", 0.241), ("1.23ms", 1.23), ("2.00s", 2000.0), ("1.50m", 90e3)])
def test_latency_units(bench: ModuleType, text: str, ms: float) -> None:
    assert bench.latency_ms(text) == pytest.approx(ms)


def test_lua_body_escapes_every_byte_lua_could_misread(bench: ModuleType) -> None:
    # A quote, a backslash, UTF-8 (é), and a digit after an escape (three-digit escapes cannot swallow it).
    assert bench.lua_string('{"a":"\\é1"}'.encode()) == '"{\\034a\\034:\\034\\092\\195\\1691\\034}"'
    script = bench.wrk_script(b"{}")
    assert 'wrk.method = "POST"' in script
    assert 'wrk.headers["Content-Type"] = "application/json"' in script
    assert 'wrk.body = "{}"' in script


def test_bodies_per_server(bench: ModuleType) -> None:
    records = [{"age": 50, "sex": None}, {"age": 30, "sex": "Female"}]
    gitml = bench.bodies("gitml", records)
    assert json.loads(gitml[1]) == records[0]  # one record: a JSON object
    assert json.loads(gitml[100]) == (records * 50)  # a batch: an array, rows repeated to fill it
    bentoml = bench.bodies("bentoml", records)
    assert json.loads(bentoml[1]) == {"records": [records[0]]}  # BentoML: the API's parameter names
    assert len(json.loads(bentoml[100])["records"]) == 100


def cells(bench: ModuleType, failed: str | None = None) -> list[object]:
    cell = bench.Cell
    return [
        cell("gitml", 1, 8, 4000.0, 1.0, 3.0),
        cell("gitml", 1, 32, 5000.0, 4.0, 9.0),
        cell("constant", 1, 8, 10000.0, 0.5, 1.0),
        cell("bentoml", 1, 8, 500.0, 10.0, 100.0, failure=failed),
        cell("gitml", 100, 8, 900.0, 8.0, 16.0),
    ]


def test_goals_are_ratios_at_eight_connections(bench: ModuleType) -> None:
    figures = bench.goal_figures(cells(bench))
    assert figures == {
        "gitml_over_constant": pytest.approx(0.4),
        "gitml_over_bentoml": pytest.approx(8.0),
        "gitml_p99_ms": pytest.approx(3.0),
        "gitml_records_per_s": pytest.approx(90_000.0),
    }
    met = {goal.key: bench.goal_met(goal, figures[goal.key]) for goal in bench.GOALS}
    assert met == {
        "gitml_over_constant": False,
        "gitml_over_bentoml": True,
        "gitml_p99_ms": True,
        "gitml_records_per_s": False,
    }


def test_a_failed_row_counts_for_no_goal(bench: ModuleType) -> None:
    figures = bench.goal_figures(cells(bench, failed="3 non-2xx responses of 2,500"))
    assert figures["gitml_over_bentoml"] is None
    goal = next(g for g in bench.GOALS if g.key == "gitml_over_bentoml")
    assert bench.goal_met(goal, None) is None
    assert "not measured" in bench.goal_line(goal, None)
    assert bench.goal_line(goal, 8.0).endswith("(goal >= 5: met)")
    rows = bench.table(cells(bench, failed="3 non-2xx responses of 2,500"), 1)
    assert rows[4].endswith("FAIL: 3 non-2xx responses of 2,500")
    assert len(rows) == 5  # the header and the four single-record rows


def test_in_process_figures_come_from_per_call_times(bench: ModuleType) -> None:
    times = [0.001] * 98 + [0.002, 0.010]
    cell = bench.in_process_cell("in-process", 100, times)
    assert cell.requests_per_s == pytest.approx(100 / 0.11)
    assert cell.records_per_s == pytest.approx(100 * 100 / 0.11)
    assert cell.p50_ms == pytest.approx(1.0)
    assert cell.p99_ms == pytest.approx(2.0)
    assert bench.percentile([3.0, 1.0, 2.0], 100) == 3.0
