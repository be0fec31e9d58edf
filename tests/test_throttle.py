"""Log-in throttling: few failures per user name, many per address (IPv6 by /64), every attempt counted
before it is checked, trusted NAT networks by user name only; 429 + Retry-After."""

from __future__ import annotations

import asyncio

import httpx

from app.auth.throttle import Admission, LoginThrottle, Throttled, address_key, parse_networks
from app.auth.throttle_store import SWEEP_THRESHOLD, MemoryThrottleStore
from tests.broker.records import CLIENT_PASSWORD, add_client
from tests.dashboard import DashboardFactory, RunningDashboard


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def throttle(
    clock: FakeClock, *, per_user: int = 5, per_address: int = 100, trusted: tuple[str, ...] = ()
) -> LoginThrottle:
    return LoginThrottle(
        MemoryThrottleStore(clock=clock),
        max_failures=per_user,
        max_failures_per_address=per_address,
        window=300,
        trusted_networks=parse_networks(trusted),
    )


async def fail(gate: LoginThrottle, username: str, address: str) -> None:
    admission = await gate.admit(username=username, address=address)
    assert isinstance(admission, Admission), (username, address)
    await admission.failed()


async def wait_for(gate: LoginThrottle, username: str, address: str) -> int:
    outcome = await gate.admit(username=username, address=address)
    if isinstance(outcome, Throttled):
        return outcome.retry_after
    await outcome.withdrawn()
    return 0


async def test_five_failures_block_the_user_name_until_the_window_passes() -> None:
    clock = FakeClock()
    gate = throttle(clock)
    for attempt in range(5):
        await fail(gate, "alice", f"10.0.0.{attempt}")
        clock.now += 10
    # The oldest failure was 50 s ago: it leaves the window in 250 s.
    assert await wait_for(gate, "alice", "10.9.9.9") == 250
    assert await wait_for(gate, "ALICE", "10.9.9.9") > 0, "user names are case-insensitive"
    assert await wait_for(gate, "bob", "10.9.9.9") == 0, "other users are not affected"
    clock.now += 250
    assert await wait_for(gate, "alice", "10.9.9.9") == 0


async def test_an_address_may_fail_far_more_often_than_a_user_name() -> None:
    """A classroom behind one NAT address survives its typos; a guessing address is still stopped."""
    clock = FakeClock()
    gate = throttle(clock, per_address=20)
    for attempt in range(19):
        await fail(gate, f"pupil{attempt}", "192.0.2.7")
    assert await wait_for(gate, "pupil-20", "192.0.2.7") == 0, "19 failures of 19 names: still allowed"
    await fail(gate, "pupil-20", "192.0.2.7")
    assert await wait_for(gate, "someone-else", "192.0.2.7") == 300
    assert await wait_for(gate, "someone-else", "192.0.2.8") == 0


async def test_ipv6_addresses_count_by_their_slash_64() -> None:
    clock = FakeClock()
    gate = throttle(clock, per_address=3)
    for host in (1, 2, 3):
        await fail(gate, f"name{host}", f"2001:db8:1:2::{host}")
    assert await wait_for(gate, "another", "2001:db8:1:2:ffff:ffff:ffff:ffff") > 0, "same /64"
    assert await wait_for(gate, "another", "2001:db8:1:3::1") == 0, "another /64"
    assert address_key("2001:db8:1:2:aaaa::1") == "addr:2001:db8:1:2::/64"
    assert address_key("::ffff:192.0.2.9") == "addr:192.0.2.9", "an IPv4 client on a dual-stack socket"
    assert address_key("192.0.2.9") == "addr:192.0.2.9"


async def test_trusted_networks_are_counted_by_user_name_only() -> None:
    clock = FakeClock()
    gate = throttle(clock, per_address=2, trusted=("10.20.0.0/16",))
    for index in range(10):
        await fail(gate, f"name{index}", "10.20.3.4")
    assert await wait_for(gate, "fresh", "10.20.3.4") == 0
    for _ in range(5):
        await fail(gate, "target", "10.20.3.4")
    assert await wait_for(gate, "target", "10.20.9.9") > 0, "the user name still counts"


async def test_a_success_clears_the_user_name_but_not_the_address() -> None:
    clock = FakeClock()
    gate = throttle(clock, per_address=5)
    for _ in range(5):
        await fail(gate, "alice", "192.0.2.7")
    clock.now += 300
    for _ in range(4):
        await fail(gate, "alice", "192.0.2.7")
    admission = await gate.admit(username="alice", address="192.0.2.7")
    assert isinstance(admission, Admission)
    await admission.succeeded()
    assert await wait_for(gate, "alice", "192.0.2.99") == 0
    await fail(gate, "bob", "192.0.2.7")
    assert await wait_for(gate, "carol", "192.0.2.7") > 0, "4 + 1 failures of this address remain"


async def test_attempts_in_flight_count_for_the_user_name() -> None:
    """Admitted but not yet settled: a sixth parallel guess at one name is refused at once."""
    clock = FakeClock()
    gate = throttle(clock)
    pending = [await gate.admit(username="alice", address=f"198.51.100.{i}") for i in range(5)]
    assert all(isinstance(a, Admission) for a in pending)
    sixth = asyncio.create_task(gate.admit(username="alice", address="198.51.100.99"))
    await asyncio.sleep(0)  # let it look once and start waiting
    assert not sixth.done(), "five attempts in flight fill the name's places"
    for admission in pending:
        assert isinstance(admission, Admission)
        await admission.failed()
    refused = await asyncio.wait_for(sixth, 10)
    assert isinstance(refused, Throttled), "five failures now"


async def test_an_attempt_with_no_place_waits_for_an_earlier_one_to_settle() -> None:
    """Two places at this name: a third parallel attempt waits; a success lets it in, a failure does not."""
    clock = FakeClock()
    gate = throttle(clock, per_user=2)
    first = await gate.admit(username="kiosk", address="192.0.2.1")
    second = await gate.admit(username="kiosk", address="192.0.2.2")
    assert isinstance(first, Admission) and isinstance(second, Admission)
    third = asyncio.create_task(gate.admit(username="kiosk", address="192.0.2.3"))
    await asyncio.sleep(0)  # let it look once and start waiting
    assert not third.done()
    await first.succeeded()
    admitted = await asyncio.wait_for(third, 10)
    assert isinstance(admitted, Admission), "a success made room"
    fourth = asyncio.create_task(gate.admit(username="kiosk", address="192.0.2.4"))
    await asyncio.sleep(0)
    await second.failed()
    await admitted.failed()
    refused = await asyncio.wait_for(fourth, 10)
    assert isinstance(refused, Throttled) and refused.retry_after == 300, "two failures fill both places"


async def test_failures_spread_over_more_than_the_window_never_block() -> None:
    clock = FakeClock()
    gate = throttle(clock)
    for _ in range(20):
        await fail(gate, "alice", "192.0.2.7")
        clock.now += 61


async def test_many_guessed_names_do_not_accumulate_forever() -> None:
    clock = FakeClock()
    store = MemoryThrottleStore(clock=clock)
    gate = LoginThrottle(store, max_failures=5, max_failures_per_address=100, window=300)
    for index in range(12_000):
        await fail(gate, f"name{index}", f"addr{index}")
        clock.now += 1
    # Everything older than the window is swept away once the table grows large.
    assert store.tracked_keys() < SWEEP_THRESHOLD + 2 * 300


async def test_fifty_parallel_wrong_guesses_get_five_checked(dashboard: RunningDashboard) -> None:
    """The throttle counts each guess before checking it: a burst cannot slip through together."""
    await add_client(dashboard.services.db, "target")
    async with httpx.AsyncClient(base_url=dashboard.url, timeout=120) as http:
        answers = await asyncio.gather(
            *(
                http.post("/api/v1/login", json={"username": "target", "password": f"guess-{n:02d}-wrong"})
                for n in range(50)
            )
        )
        statuses = sorted(answer.status_code for answer in answers)
        assert statuses == [401] * 5 + [429] * 45
        assert all(0 < int(a.headers["Retry-After"]) <= 300 for a in answers if a.status_code == 429)
        right = await http.post("/api/v1/login", json={"username": "target", "password": CLIENT_PASSWORD})
        assert right.status_code == 429, "the right password waits too"
    assert len(await dashboard.services.audit.recent(action="login_failed")) == 5


async def test_a_shared_kiosk_account_logs_in_on_twenty_thin_clients_at_once(
    dashboard: RunningDashboard,
) -> None:
    """Parallel correct log-ins at one name wait their turn instead of being refused."""
    await add_client(dashboard.services.db, "kiosk-hall")
    async with httpx.AsyncClient(base_url=dashboard.url, timeout=120) as http:
        answers = await asyncio.gather(
            *(
                http.post("/api/v1/login", json={"username": "kiosk-hall", "password": CLIENT_PASSWORD})
                for _ in range(20)
            )
        )
    assert [answer.status_code for answer in answers] == [200] * 20


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


async def test_the_throttle_opens_again_when_the_dashboards_clock_leaves_the_window(
    dashboard: RunningDashboard,
) -> None:
    client = dashboard.client()
    await client.refresh_csrf()
    for _ in range(dashboard.settings.security.login_max_failures):
        await client.post("/login", {"username": "admin", "password": "wrong-password"})
    right = {"username": "admin", "password": dashboard.admin_password}
    assert (await client.post("/login", right)).status_code == 429
    dashboard.clock.advance(dashboard.settings.security.login_failure_window - 30)
    assert (await client.post("/login", right)).status_code == 429, "the failures are still in the window"
    dashboard.clock.advance(31)
    assert (await client.post("/login", right)).status_code == 303


async def test_one_throttle_for_the_admin_form_the_portal_and_the_api(dashboard: RunningDashboard) -> None:
    await add_client(dashboard.services.db, "shared")
    admin_form, portal = dashboard.client(), dashboard.client()
    await admin_form.refresh_csrf("/login")
    await portal.refresh_csrf("/client/login")
    wrong = {"username": "shared", "password": "not-the-password"}
    for _ in range(2):
        assert (await admin_form.post("/login", wrong)).status_code == 401
        assert (await portal.post("/client/login", wrong)).status_code == 401
    async with httpx.AsyncClient(base_url=dashboard.url, timeout=30) as http:
        assert (await http.post("/api/v1/login", json=wrong)).status_code == 401
        assert (await http.post("/api/v1/login", json=wrong)).status_code == 429
    assert (await portal.post("/client/login", wrong)).status_code == 429


async def test_a_nat_address_is_not_locked_out_by_other_peoples_typos(dashboard: RunningDashboard) -> None:
    """Six people behind one address each mistype once; the seventh still logs in."""
    await add_client(dashboard.services.db, "seventh")
    nat = {"X-Forwarded-For": "203.0.113.50"}
    async with httpx.AsyncClient(base_url=dashboard.url, timeout=30, headers=nat) as http:
        for index in range(6):
            body = {"username": f"pupil{index}", "password": "typo-typo"}
            typo = await http.post("/api/v1/login", json=body)
            assert typo.status_code == 401
        ok = await http.post("/api/v1/login", json={"username": "seventh", "password": CLIENT_PASSWORD})
        assert ok.status_code == 200, ok.text


async def test_ipv6_clients_hopping_within_their_slash_64_are_throttled(
    dashboard_factory: DashboardFactory,
) -> None:
    dashboard = await dashboard_factory(security={"login_max_failures_per_address": 3})
    async with httpx.AsyncClient(base_url=dashboard.url, timeout=30) as http:

        async def guess(host: int, name: str) -> int:
            headers = {"X-Forwarded-For": f"2001:db8:77:1::{host:x}"}
            body = {"username": name, "password": "a-wrong-guess"}
            return (await http.post("/api/v1/login", json=body, headers=headers)).status_code

        assert [await guess(host, f"name{host}") for host in (1, 2, 3)] == [401, 401, 401]
        assert await guess(0xBEEF, "fresh-name") == 429
        other = await http.post(
            "/api/v1/login",
            json={"username": "fresh-name", "password": "a-wrong-guess"},
            headers={"X-Forwarded-For": "2001:db8:77:2::1"},
        )
        assert other.status_code == 401, "another /64 is another client"


async def test_trusted_networks_from_the_settings(dashboard_factory: DashboardFactory) -> None:
    dashboard = await dashboard_factory(
        security={"login_max_failures_per_address": 2, "login_trusted_networks": ["198.51.100.0/24"]}
    )
    async with httpx.AsyncClient(base_url=dashboard.url, timeout=30) as http:
        for index in range(4):
            answer = await http.post(
                "/api/v1/login",
                json={"username": f"who{index}", "password": "a-wrong-guess"},
                headers={"X-Forwarded-For": "198.51.100.1"},
            )
            assert answer.status_code == 401, index


async def test_the_change_password_form_is_throttled_too(dashboard: RunningDashboard) -> None:
    """A stolen session cannot guess the current password at full speed."""
    admin = await dashboard.admin()
    wrong = {"current_password": "wrong-guess-1", "new_password": "x" * 12, "repeat_password": "x" * 12}
    for _ in range(5):
        assert (await admin.post("/account/password", wrong)).status_code == 400
    sixth = await admin.post("/account/password", wrong)
    assert sixth.status_code == 429 and "Too many failed attempts" in sixth.text
    assert 0 < int(sixth.headers["Retry-After"]) <= 300
    right = {
        "current_password": dashboard.admin_password,
        "new_password": "a-new-password-1",
        "repeat_password": "a-new-password-1",
    }
    assert (await admin.post("/account/password", right)).status_code == 429, "the right one waits too"
