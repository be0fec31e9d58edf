"""The launcher's session state machine, driven event by event without a display or a network."""

from __future__ import annotations

from pathlib import Path

import pytest
from kvm_vdi_client.config import BootingConfig, KioskConfig
from kvm_vdi_client.events import (
    BootRetryDue,
    CallFailed,
    CallLogin,
    CallLogout,
    CallPower,
    CheckDesktop,
    CheckDue,
    DesktopAnswered,
    DesktopChecked,
    Dismissed,
    Failure,
    FetchPools,
    HeartbeatAccepted,
    HeartbeatDue,
    LoggedIn,
    LoginRejected,
    LoginSubmitted,
    LogoutRequested,
    Phase,
    PoolChosen,
    PoolsLoaded,
    PowerDone,
    PowerRequested,
    Released,
    ReleaseLease,
    RequestDesktop,
    RetryRequested,
    Schedule,
    SendHeartbeat,
    Started,
    StartFailoverViewer,
    StartSpiceViewer,
    ViewerExited,
    ViewerFailed,
)
from kvm_vdi_client.machine import CHECK_ATTEMPTS, MAX_RECONNECTS, Credentials, SessionMachine
from kvm_vdi_client.model import (
    Desktop,
    DesktopBooting,
    DesktopReady,
    DesktopRefused,
    FailoverOffered,
    HorizonFailover,
    Lease,
    Pool,
    RdpFailover,
    SpiceConnection,
    User,
    parse_desktop_answer,
)

ALICE = User("alice", "Alice Example", "local")
OFFICE = Pool(1, "Office", "Office desktops", 4, 2, False, False, None)
LAB = Pool(2, "Lab", "", 2, 0, False, True, Desktop(7, "lab-07", "running"))
CONNECTION = SpiceConnection("10.0.0.5", 5901, "spice-secret-pw", "http://ticket:tkt@gw:8443", "Office")
READY = DesktopReady(Lease("L1", "2026-01-01T00:00:00", 20.0), Desktop(3, "office-03", "running"), CONNECTION)
UNREACHABLE = "The dashboard at https://vdi.example refused the connection (is it running?)."


def logged_in(**options: object) -> SessionMachine:
    machine = SessionMachine(**options)  # type: ignore[arg-type]
    machine.handle(Started())
    machine.handle(LoginSubmitted("alice", "alice-pw"))
    machine.handle(LoggedIn(ALICE))
    machine.handle(PoolsLoaded((OFFICE, LAB)))
    return machine


def viewing() -> SessionMachine:
    machine = logged_in()
    machine.handle(PoolChosen(1))
    machine.handle(DesktopAnswered(READY))
    return machine


def test_a_full_session_logs_in_chooses_a_pool_views_heartbeats_and_releases() -> None:
    machine = SessionMachine()
    assert machine.handle(Started()) == []
    assert machine.phase is Phase.LOGGED_OUT

    assert machine.handle(LoginSubmitted(" alice ", "alice-pw")) == [CallLogin("alice", "alice-pw")]
    assert machine.phase is Phase.LOGGING_IN
    assert machine.handle(LoggedIn(ALICE)) == [FetchPools()]
    assert machine.phase is Phase.CHOOSING_POOL
    assert machine.handle(PoolsLoaded((OFFICE, LAB))) == []
    assert machine.pools == (OFFICE, LAB)

    assert machine.handle(PoolChosen(1)) == [RequestDesktop(1)]
    assert machine.phase is Phase.REQUESTING
    effects = machine.handle(DesktopAnswered(READY))
    assert effects == [StartSpiceViewer(CONNECTION), Schedule(20.0, HeartbeatDue("L1"))]
    assert machine.phase is Phase.VIEWING

    assert machine.handle(HeartbeatDue("L1")) == [SendHeartbeat("L1")]
    assert machine.handle(HeartbeatAccepted("L1")) == [Schedule(20.0, HeartbeatDue("L1"))]

    # The viewer closed: the desktop was shut down, so the session is over.
    assert machine.handle(ViewerExited(0)) == [CheckDesktop(1)]
    assert machine.phase is Phase.RECONNECTING
    assert machine.handle(DesktopChecked(1, Desktop(3, "office-03", "shutoff"))) == [ReleaseLease("L1")]
    assert machine.phase is Phase.RELEASING
    assert machine.handle(Released("L1")) == [CallLogout()]
    assert machine.phase is Phase.LOGGED_OUT
    assert machine.user is None and machine.lease is None
    assert machine.notice == "Your session has ended."


def test_an_empty_login_form_is_not_sent() -> None:
    machine = SessionMachine()
    assert machine.handle(LoginSubmitted("alice", "")) == []
    assert machine.phase is Phase.LOGGED_OUT
    assert machine.notice == "Enter your user name and password."


def test_a_wrong_password_returns_to_the_login_screen_with_the_reason() -> None:
    machine = SessionMachine()
    machine.handle(LoginSubmitted("alice", "wrong"))
    assert machine.handle(LoginRejected("Wrong user name or password.")) == []
    assert machine.phase is Phase.LOGGED_OUT
    assert machine.notice == "Wrong user name or password."
    assert not machine.can_retry


def test_an_unreachable_dashboard_at_login_shows_the_reason_and_retries_the_login() -> None:
    machine = SessionMachine()
    login = CallLogin("alice", "alice-pw")
    machine.handle(LoginSubmitted("alice", "alice-pw"))
    assert machine.handle(CallFailed(login, Failure.UNREACHABLE, UNREACHABLE)) == []
    assert machine.phase is Phase.ERROR
    assert machine.error == UNREACHABLE
    assert machine.can_retry

    assert machine.handle(RetryRequested()) == [login]
    assert machine.phase is Phase.LOGGING_IN
    machine.handle(LoggedIn(ALICE))
    assert machine.phase is Phase.CHOOSING_POOL


def test_dismissing_a_login_error_goes_back_to_the_login_screen() -> None:
    machine = SessionMachine()
    machine.handle(LoginSubmitted("alice", "alice-pw"))
    machine.handle(CallFailed(CallLogin("alice", "alice-pw"), Failure.UNREACHABLE, UNREACHABLE))
    assert machine.handle(Dismissed()) == []
    assert machine.phase is Phase.LOGGED_OUT
    assert machine.notice is None


def test_no_pools_says_so_and_names_who_can_help() -> None:
    machine = SessionMachine()
    machine.handle(LoginSubmitted("alice", "alice-pw"))
    machine.handle(LoggedIn(ALICE))
    machine.handle(PoolsLoaded(()))
    assert machine.phase is Phase.CHOOSING_POOL
    assert machine.notice is not None and "No desktop pools" in machine.notice
    assert "administrator" in machine.notice


def test_an_unreachable_dashboard_while_listing_pools_offers_a_retry_of_the_listing() -> None:
    machine = SessionMachine()
    machine.handle(LoginSubmitted("alice", "alice-pw"))
    machine.handle(LoggedIn(ALICE))
    machine.handle(CallFailed(FetchPools(), Failure.UNREACHABLE, UNREACHABLE))
    assert machine.phase is Phase.ERROR and machine.can_retry
    assert machine.handle(RetryRequested()) == [FetchPools()]
    assert machine.phase is Phase.CHOOSING_POOL


def test_an_expired_token_sends_the_user_back_to_log_in() -> None:
    machine = logged_in()
    message = "Your session with the dashboard has ended; log in again."
    assert machine.handle(CallFailed(FetchPools(), Failure.SESSION_ENDED, message)) == [CallLogout()]
    assert machine.phase is Phase.LOGGED_OUT
    assert machine.notice == message


def test_booting_polls_after_retry_after_and_connects_when_ready() -> None:
    machine = logged_in(booting=BootingConfig(max_attempts=10, max_wait=60))
    machine.handle(PoolChosen(1))
    booting = DesktopBooting(retry_after=3, desktop=Desktop(3, "office-03", "starting"))

    assert machine.handle(DesktopAnswered(booting)) == [Schedule(3.0, BootRetryDue(1, 1))]
    assert machine.phase is Phase.BOOTING
    assert machine.progress == 3 / 60
    assert "office-03" in machine.status and "starting" in machine.status
    assert machine.handle(BootRetryDue(1, 1)) == [RequestDesktop(1)]
    assert machine.handle(DesktopAnswered(booting)) == [Schedule(3.0, BootRetryDue(1, 2))]
    assert machine.progress == 6 / 60

    # A timer from an earlier attempt must not cause a second request.
    assert machine.handle(BootRetryDue(1, 1)) == []
    machine.handle(BootRetryDue(1, 2))
    assert machine.handle(DesktopAnswered(READY))[0] == StartSpiceViewer(CONNECTION)
    assert machine.phase is Phase.VIEWING


def test_retry_after_is_clamped_so_a_broken_answer_cannot_stall_or_hammer() -> None:
    machine = logged_in(booting=BootingConfig(max_attempts=10, max_wait=600, min_retry=0.5, max_retry=10))
    machine.handle(PoolChosen(1))
    assert machine.handle(DesktopAnswered(DesktopBooting(3600, None))) == [Schedule(10.0, BootRetryDue(1, 1))]
    machine.handle(BootRetryDue(1, 1))
    assert machine.handle(DesktopAnswered(DesktopBooting(0, None))) == [Schedule(0.5, BootRetryDue(1, 2))]
    machine.handle(BootRetryDue(1, 2))
    assert machine.handle(DesktopAnswered(DesktopBooting(None, None))) == [Schedule(2.0, BootRetryDue(1, 3))]


def test_booting_gives_up_after_max_attempts_with_a_message_and_a_retry() -> None:
    machine = logged_in(booting=BootingConfig(max_attempts=4, max_wait=600))
    machine.handle(PoolChosen(1))
    requests = 1
    for _ in range(100):  # far more answers than the bound: the machine must stop by itself
        effects = machine.handle(DesktopAnswered(DesktopBooting(1, Desktop(3, "office-03", "starting"))))
        if machine.phase is Phase.ERROR:
            break
        (schedule,) = effects
        assert isinstance(schedule, Schedule)
        effects = machine.handle(schedule.event)
        assert effects == [RequestDesktop(1)]
        requests += 1
    assert machine.phase is Phase.ERROR
    assert requests == 4 + 1  # the first request plus one per allowed attempt
    assert (
        machine.error is not None
        and "office-03" in machine.error
        and "did not finish starting" in machine.error
    )
    assert machine.can_retry

    # Retrying starts a fresh, again bounded, wait.
    assert machine.handle(RetryRequested()) == [RequestDesktop(1)]
    assert machine.phase is Phase.REQUESTING
    assert machine.handle(DesktopAnswered(DesktopBooting(1, None))) == [Schedule(1.0, BootRetryDue(1, 1))]


def test_booting_gives_up_when_the_total_wait_would_pass_max_wait() -> None:
    machine = logged_in(booting=BootingConfig(max_attempts=1000, max_wait=10, max_retry=10))
    machine.handle(PoolChosen(1))
    machine.handle(DesktopAnswered(DesktopBooting(4, None)))
    machine.handle(BootRetryDue(1, 1))
    machine.handle(DesktopAnswered(DesktopBooting(4, None)))
    machine.handle(BootRetryDue(1, 2))
    assert machine.handle(DesktopAnswered(DesktopBooting(4, None))) == []
    assert machine.phase is Phase.ERROR
    assert machine.error is not None and "within 8 s" in machine.error


def test_failover_to_rdp_starts_the_rdp_viewer_with_the_login_credentials() -> None:
    machine = logged_in()
    machine.handle(PoolChosen(2))
    failover = RdpFailover("rdp.example", "EXAMPLE")
    effects = machine.handle(DesktopAnswered(FailoverOffered(failover)))
    assert effects == [StartFailoverViewer(failover, "alice", "alice-pw")]
    assert machine.phase is Phase.FAILOVER
    assert "rdp.example" in machine.status

    assert machine.handle(ViewerExited(0)) == [CallLogout()]
    assert machine.phase is Phase.LOGGED_OUT


def test_an_rdp_viewer_that_could_not_connect_says_why_and_retry_starts_it_again() -> None:
    machine = logged_in()
    machine.handle(PoolChosen(2))
    failover = RdpFailover("rdp.example:3390")
    machine.handle(DesktopAnswered(FailoverOffered(failover)))
    assert machine.handle(ViewerExited(143)) == []  # xfreerdp: TLS connection failed
    assert machine.phase is Phase.ERROR and machine.can_retry
    assert machine.error == (
        "The RDP viewer closed: the certificate of rdp.example:3390 is not trusted "
        "(pin its SHA-256 fingerprint in viewer.rdp_certificates)."
    )
    assert machine.handle(RetryRequested()) == [StartFailoverViewer(failover, "alice", "alice-pw")]
    assert machine.phase is Phase.FAILOVER
    machine.handle(ViewerExited(131))
    assert machine.error == "The RDP viewer closed: it could not connect to rdp.example:3390."
    machine.handle(RetryRequested())
    machine.handle(ViewerExited(250))
    assert machine.error == "The RDP viewer closed: it stopped with status 250."
    assert machine.handle(Dismissed()) == [CallLogout()]
    assert machine.phase is Phase.LOGGED_OUT and machine.notice == "Your session has ended."


@pytest.mark.parametrize("returncode", [0, 1, 2, 11, -15])
def test_an_rdp_session_that_ran_and_ended_ends_the_launcher_session(returncode: int) -> None:
    machine = logged_in()
    machine.handle(PoolChosen(2))
    machine.handle(DesktopAnswered(FailoverOffered(RdpFailover("rdp.example"))))
    assert machine.handle(ViewerExited(returncode)) == [CallLogout()]
    assert machine.phase is Phase.LOGGED_OUT and machine.notice == "Your session has ended."


def test_the_horizon_clients_exit_status_is_not_read_as_xfreerdps() -> None:
    machine = logged_in()
    machine.handle(PoolChosen(2))
    machine.handle(DesktopAnswered(FailoverOffered(HorizonFailover("https://horizon.example", "Lab"))))
    assert machine.handle(ViewerExited(143)) == [CallLogout()]
    assert machine.phase is Phase.LOGGED_OUT


def test_a_full_pool_with_failover_answers_409_and_the_launcher_fails_over() -> None:
    answer = parse_desktop_answer(
        409,
        {
            "error": "no_free_desktop",
            "message": "No free desktop in pool Lab.",
            "failover": {"protocol": "horizon", "server": "https://horizon.example", "pool": "Lab"},
        },
    )
    machine = logged_in()
    machine.handle(PoolChosen(2))
    effects = machine.handle(DesktopAnswered(answer))
    assert effects == [
        StartFailoverViewer(HorizonFailover("https://horizon.example", "Lab"), "alice", "alice-pw")
    ]
    assert machine.notice == "No free desktop in pool Lab."


def test_a_full_pool_without_failover_returns_to_the_pools_with_the_reason() -> None:
    machine = logged_in()
    machine.handle(PoolChosen(1))
    refused = DesktopRefused("no_free_desktop", "No free desktop in pool Office.")
    assert machine.handle(DesktopAnswered(refused)) == [FetchPools()]
    assert machine.phase is Phase.CHOOSING_POOL
    assert machine.notice == "No free desktop in pool Office."


def test_a_missing_failover_viewer_is_an_error_on_screen_not_a_crash() -> None:
    machine = logged_in()
    machine.handle(PoolChosen(2))
    machine.handle(DesktopAnswered(FailoverOffered(RdpFailover("rdp.example"))))
    message = "The RDP viewer (xfreerdp) is not installed on this thin client"
    assert machine.handle(ViewerFailed(message)) == []
    assert machine.phase is Phase.ERROR and machine.error == message
    assert machine.handle(Dismissed()) == [FetchPools()]
    assert machine.phase is Phase.CHOOSING_POOL


def test_a_spice_viewer_that_cannot_start_releases_the_lease_then_shows_why() -> None:
    machine = viewing()
    assert machine.handle(ViewerFailed("The SPICE viewer (remote-viewer) is not installed")) == [
        ReleaseLease("L1")
    ]
    assert machine.handle(Released("L1")) == []
    assert machine.phase is Phase.ERROR
    assert machine.error == "The SPICE viewer (remote-viewer) is not installed"
    assert machine.user == ALICE  # still logged in: Back returns to the pools


def test_heartbeats_keep_trying_while_the_dashboard_is_away_and_the_desktop_stays_open() -> None:
    machine = viewing()
    machine.handle(HeartbeatDue("L1"))
    effects = machine.handle(CallFailed(SendHeartbeat("L1"), Failure.UNREACHABLE, UNREACHABLE))
    assert effects == [Schedule(10.0, HeartbeatDue("L1"))]
    assert machine.phase is Phase.VIEWING
    assert machine.heartbeat_failures == 1
    assert machine.notice is not None and UNREACHABLE in machine.notice
    machine.handle(HeartbeatDue("L1"))
    machine.handle(HeartbeatAccepted("L1"))
    assert machine.heartbeat_failures == 0 and machine.notice is None


def test_a_lease_ended_by_the_dashboard_stops_heartbeats() -> None:
    machine = viewing()
    machine.handle(HeartbeatDue("L1"))
    assert machine.handle(CallFailed(SendHeartbeat("L1"), Failure.LEASE_ENDED, "lease ended")) == []
    assert machine.phase is Phase.VIEWING
    assert machine.notice == "The dashboard has ended this session."


def closed_for_good(machine: SessionMachine, returncode: int = 0) -> None:
    """The viewer exits and the dashboard says the session ended (no desktop held in the pool)."""
    assert machine.handle(ViewerExited(returncode)) == [CheckDesktop(1)]
    assert machine.handle(DesktopChecked(1, None)) == [ReleaseLease("L1")]


def test_a_dashboard_gone_at_release_is_a_readable_error_with_retry() -> None:
    machine = viewing()
    closed_for_good(machine, 1)
    assert machine.handle(CallFailed(ReleaseLease("L1"), Failure.UNREACHABLE, UNREACHABLE)) == []
    assert machine.phase is Phase.ERROR and machine.can_retry
    assert machine.error is not None and machine.error.startswith(UNREACHABLE)
    assert "lease expires" in machine.error

    assert machine.handle(RetryRequested()) == [ReleaseLease("L1")]
    assert machine.phase is Phase.RELEASING
    assert machine.handle(Released("L1")) == [CallLogout()]
    assert machine.phase is Phase.LOGGED_OUT


def test_dismissing_a_failed_release_ends_the_session_locally() -> None:
    machine = viewing()
    closed_for_good(machine, 1)
    machine.handle(CallFailed(ReleaseLease("L1"), Failure.UNREACHABLE, UNREACHABLE))
    assert machine.handle(Dismissed()) == [CallLogout()]
    assert machine.phase is Phase.LOGGED_OUT


def test_a_lease_already_gone_at_release_counts_as_released() -> None:
    machine = viewing()
    closed_for_good(machine)
    assert machine.handle(CallFailed(ReleaseLease("L1"), Failure.LEASE_ENDED, "gone")) == [CallLogout()]
    assert machine.phase is Phase.LOGGED_OUT


RUNNING = Desktop(3, "office-03", "running")


def test_a_viewer_that_lost_its_running_desktop_connects_again_and_keeps_the_lease() -> None:
    machine = viewing()
    assert machine.handle(ViewerExited(0)) == [CheckDesktop(1)]
    # Still the user's, still running: the connection was lost (a dashboard replica stopped).
    assert machine.handle(DesktopChecked(1, RUNNING)) == [RequestDesktop(1)]
    assert machine.phase is Phase.REQUESTING and "reconnecting" in machine.status
    effects = machine.handle(DesktopAnswered(READY))
    assert effects == [StartSpiceViewer(CONNECTION), Schedule(20.0, HeartbeatDue("L1"))]
    assert machine.phase is Phase.VIEWING and machine.lease == READY.lease


def test_reconnects_in_a_row_are_bounded_and_then_the_user_decides() -> None:
    machine = viewing()
    for _ in range(MAX_RECONNECTS):
        machine.handle(ViewerExited(0))
        assert machine.handle(DesktopChecked(1, RUNNING)) == [RequestDesktop(1)]
        machine.handle(DesktopAnswered(READY))
    machine.handle(ViewerExited(0))
    assert machine.handle(DesktopChecked(1, RUNNING)) == []
    assert machine.phase is Phase.ERROR and machine.can_retry
    assert machine.error is not None and f"lost {MAX_RECONNECTS} times in a row" in machine.error
    # Back ends the session (and frees the desktop); Retry would connect again.
    assert machine.handle(Dismissed()) == [ReleaseLease("L1")]


def test_an_accepted_heartbeat_starts_the_count_of_reconnects_again() -> None:
    machine = viewing()
    for _ in range(MAX_RECONNECTS + 2):
        machine.handle(ViewerExited(0))
        assert machine.handle(DesktopChecked(1, RUNNING)) == [RequestDesktop(1)]
        machine.handle(DesktopAnswered(READY))
        machine.handle(HeartbeatDue("L1"))
        machine.handle(HeartbeatAccepted("L1"))


def test_a_windowed_viewer_that_closed_asks_before_connecting_again() -> None:
    machine = logged_in(reconnect=False)
    machine.handle(PoolChosen(1))
    machine.handle(DesktopAnswered(READY))
    machine.handle(ViewerExited(0))
    assert machine.handle(DesktopChecked(1, RUNNING)) == []
    assert machine.phase is Phase.ERROR and machine.can_retry
    assert machine.handle(RetryRequested()) == [RequestDesktop(1)]
    machine.handle(DesktopAnswered(READY))
    machine.handle(ViewerExited(0))
    machine.handle(DesktopChecked(1, RUNNING))
    assert machine.handle(Dismissed()) == [ReleaseLease("L1")]


def test_while_the_dashboard_cannot_answer_the_check_is_repeated_then_left_to_the_user() -> None:
    machine = viewing()
    machine.handle(ViewerExited(0))
    for attempt in range(1, CHECK_ATTEMPTS):
        failed = CallFailed(CheckDesktop(1), Failure.UNREACHABLE, UNREACHABLE)
        assert machine.handle(failed) == [Schedule(2.0, CheckDue(attempt))]
        assert machine.phase is Phase.RECONNECTING
        assert machine.handle(CheckDue(attempt)) == [CheckDesktop(1)]
    assert machine.handle(CallFailed(CheckDesktop(1), Failure.UNREACHABLE, UNREACHABLE)) == []
    assert machine.phase is Phase.ERROR
    assert machine.handle(RetryRequested()) == [RequestDesktop(1)]


def test_late_answers_do_not_move_the_session_backwards() -> None:
    machine = viewing()
    assert machine.handle(PoolsLoaded((OFFICE,))) == []
    assert machine.handle(DesktopAnswered(READY)) == []
    assert machine.handle(HeartbeatDue("old-lease")) == []
    assert machine.handle(LoginSubmitted("mallory", "x")) == []
    assert machine.phase is Phase.VIEWING


def test_power_actions_on_the_users_own_desktop() -> None:
    machine = logged_in()
    assert machine.handle(PowerRequested(7, "shutdown")) == [CallPower(7, "shutdown")]
    assert machine.handle(PowerDone(7, "shutdown", "shutting down")) == [FetchPools()]
    assert machine.notice == "Shut down sent to “lab-07” (now shutting down)."
    assert machine.handle(PowerRequested(7, "poweroff")) == [CallPower(7, "poweroff")]
    refused = "This desktop is not yours."
    assert machine.handle(CallFailed(CallPower(7, "poweroff"), Failure.REFUSED, refused)) == []
    assert machine.phase is Phase.CHOOSING_POOL and machine.notice == refused
    assert machine.handle(PowerRequested(7, "format-disk")) == []


def test_logging_out_from_the_pool_list() -> None:
    machine = logged_in()
    assert machine.handle(LogoutRequested()) == [CallLogout()]
    assert machine.phase is Phase.LOGGED_OUT and machine.user is None


def test_kiosk_logs_in_selects_its_pool_and_reconnects_after_the_viewer_closes() -> None:
    kiosk = KioskConfig(
        username="kiosk1", password_file=Path("/k"), pool="Office", restart=True, restart_delay=5
    )
    machine = SessionMachine(kiosk=kiosk, auto_login=Credentials("kiosk1", "kiosk-pw"))
    assert machine.handle(Started()) == [CallLogin("kiosk1", "kiosk-pw")]
    assert machine.handle(LoggedIn(User("kiosk1", "Kiosk", "local"))) == [FetchPools()]
    assert machine.handle(PoolsLoaded((LAB, OFFICE))) == [RequestDesktop(1)]
    machine.handle(DesktopAnswered(READY))
    closed_for_good(machine)
    assert machine.handle(Released("L1")) == [CallLogout(), Schedule(5.0, Started())]
    assert machine.phase is Phase.LOGGED_OUT
    assert machine.notice is not None and "Reconnecting in 5 s" in machine.notice
    assert machine.handle(Started()) == [CallLogin("kiosk1", "kiosk-pw")]


def test_kiosk_with_a_pool_that_is_not_offered_says_so() -> None:
    kiosk = KioskConfig(username="kiosk1", password_file=Path("/k"), pool="Finance")
    machine = SessionMachine(kiosk=kiosk, auto_login=Credentials("kiosk1", "kiosk-pw"))
    machine.handle(Started())
    machine.handle(LoggedIn(User("kiosk1", "Kiosk", "local")))
    assert machine.handle(PoolsLoaded((OFFICE, LAB))) == []
    assert machine.notice == "The pool 'Finance' configured for this thin client is not available to you."


def test_a_kiosk_without_restart_returns_to_the_login_screen() -> None:
    kiosk = KioskConfig(username="kiosk1", password_file=Path("/k"), pool="Office", restart=False)
    machine = SessionMachine(kiosk=kiosk, auto_login=Credentials("kiosk1", "kiosk-pw"))
    machine.handle(Started())
    machine.handle(LoggedIn(User("kiosk1", "Kiosk", "local")))
    machine.handle(PoolsLoaded((OFFICE,)))
    machine.handle(DesktopAnswered(READY))
    closed_for_good(machine)
    assert machine.handle(Released("L1")) == [CallLogout()]


def test_passwords_never_appear_in_the_repr_of_events_effects_or_the_machine() -> None:
    machine = viewing()
    texts = [
        repr(LoginSubmitted("alice", "alice-pw")),
        repr(CallLogin("alice", "alice-pw")),
        repr(StartFailoverViewer(RdpFailover("h"), "alice", "alice-pw")),
        repr(StartSpiceViewer(CONNECTION)),
        repr(Credentials("alice", "alice-pw")),
        repr(machine),
    ]
    for text in texts:
        assert "alice-pw" not in text
        assert "spice-secret-pw" not in text
        assert "ticket:tkt" not in text
