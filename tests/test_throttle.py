"""Log-in throttling: 5 failures in 5 minutes, per user name and per address, then 429 + Retry-After."""

from __future__ import annotations

from app.auth.throttle import LoginThrottle
from tests.dashboard import RunningDashboard


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_five_failures_block_the_user_name_until_the_window_passes() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(max_failures=5, window=300, clock=clock)
    for attempt in range(5):
        assert throttle.retry_after(username="alice", address=f"10.0.0.{attempt}") == 0
        throttle.failed(username="alice", address=f"10.0.0.{attempt}")
        clock.now += 10
    # The oldest failure was 50 s ago: it leaves the window in 250 s.
    assert throttle.retry_after(username="alice", address="10.9.9.9") == 251
    assert throttle.retry_after(username="ALICE", address="10.9.9.9") > 0, "user names are case-insensitive"
    assert throttle.retry_after(username="bob", address="10.9.9.9") == 0, "other users are not affected"
    clock.now += 250
    assert throttle.retry_after(username="alice", address="10.9.9.9") == 0


def test_five_failures_from_one_address_block_that_address_for_every_name() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(max_failures=5, window=300, clock=clock)
    for attempt in range(5):
        throttle.failed(username=f"guess{attempt}", address="192.0.2.7")
    assert throttle.retry_after(username="someone-else", address="192.0.2.7") > 0
    assert throttle.retry_after(username="someone-else", address="192.0.2.8") == 0


def test_a_success_clears_the_user_name_but_not_the_address() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(max_failures=5, window=300, clock=clock)
    for _ in range(5):
        throttle.failed(username="alice", address="192.0.2.7")
    throttle.succeeded(username="alice")
    assert throttle.retry_after(username="alice", address="192.0.2.99") == 0
    assert throttle.retry_after(username="alice", address="192.0.2.7") > 0


def test_failures_spread_over_more_than_the_window_never_block() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(max_failures=5, window=300, clock=clock)
    for _ in range(20):
        assert throttle.retry_after(username="alice", address="192.0.2.7") == 0
        throttle.failed(username="alice", address="192.0.2.7")
        clock.now += 61


def test_many_guessed_names_do_not_accumulate_forever() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(max_failures=5, window=300, clock=clock)
    for index in range(12_000):
        throttle.failed(username=f"name{index}", address=f"addr{index}")
        clock.now += 1
    # Everything older than the window is swept away once the table grows large.
    assert len(throttle._failures) < 10_000 + 2 * 300


async def test_the_sixth_bad_login_in_a_row_gets_429_with_retry_after(dashboard: RunningDashboard) -> None:
    client = dashboard.client()
    await client.refresh_csrf()
    statuses = []
    for _ in range(5):
        response = await client.post("/login", {"username": "admin", "password": "wrong-password"})
        statuses.append(response.status_code)
        assert "Wrong user name or password" in response.text
    assert statuses == [401] * 5

    sixth = await client.post("/login", {"username": "admin", "password": "wrong-password"})
    assert sixth.status_code == 429
    assert 0 < int(sixth.headers["Retry-After"]) <= 300
    assert "Too many failed attempts" in sixth.text

    # Even the right password waits: the throttle answers before the password is checked.
    right = await client.post("/login", {"username": "admin", "password": dashboard.admin_password})
    assert right.status_code == 429
    assert (await client.get("/")).status_code == 303, "not logged in"

    failures = await dashboard.services.audit.recent(action="login_failed")
    throttled = await dashboard.services.audit.recent(action="login_throttled")
    assert len(failures) == 5 and len(throttled) == 2
