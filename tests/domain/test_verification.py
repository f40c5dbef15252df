"""Risk-control TOTP (RFC 6238: SHA-1, 6 digits, 30 s, ±1 step); codes are made with pyotp directly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyotp
import pytest

from domain.verification import code_at, matching_time_step, new_secret

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
STEP = timedelta(seconds=30)
NOW_STEP = int(NOW.timestamp()) // 30


def code(at: datetime, secret: str = SECRET) -> str:
    """What an RFC 6238 authenticator shows at `at`."""
    return str(pyotp.TOTP(secret).at(at))


def codes_within_window(at: datetime) -> set[str]:
    return {code(at + offset * STEP) for offset in (-1, 0, 1)}


def test_now_is_on_a_step_boundary() -> None:
    assert int(NOW.timestamp()) % 30 == 0


def test_the_current_code_matches_and_returns_its_step() -> None:
    assert matching_time_step(SECRET, code(NOW), NOW) == NOW_STEP


@pytest.mark.parametrize("seconds_into_step", [0, 1, 15, 29])
def test_the_current_code_matches_anywhere_in_its_step(seconds_into_step: int) -> None:
    at = NOW + timedelta(seconds=seconds_into_step)
    assert matching_time_step(SECRET, code(NOW), at) == NOW_STEP


@pytest.mark.parametrize("offset", [-1, 1])
def test_one_step_either_side_is_accepted(offset: int) -> None:
    assert matching_time_step(SECRET, code(NOW + offset * STEP), NOW) == NOW_STEP + offset


@pytest.mark.parametrize("offset", [-2, 2, -3, 3, -10, 10])
def test_two_or_more_steps_away_is_refused(offset: int) -> None:
    stale = code(NOW + offset * STEP)
    assert stale not in codes_within_window(NOW)  # precondition: no accidental collision
    assert matching_time_step(SECRET, stale, NOW) is None


def test_the_window_follows_the_verification_time() -> None:
    earlier = code(NOW)
    assert matching_time_step(SECRET, earlier, NOW + STEP) == NOW_STEP
    assert matching_time_step(SECRET, earlier, NOW + 2 * STEP) is None


def test_a_wrong_code_is_refused() -> None:
    valid = codes_within_window(NOW)
    wrong = next(f"{n:06d}" for n in range(1_000_000) if f"{n:06d}" not in valid)
    assert matching_time_step(SECRET, wrong, NOW) is None


def test_a_code_of_another_secret_is_refused() -> None:
    other = "KRSXG5CTMVRXEZLUKRSXG5CTMVRXEZLU"
    their_code = code(NOW, other)
    assert their_code not in codes_within_window(NOW)  # precondition
    assert matching_time_step(SECRET, their_code, NOW) is None


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param("", id="empty"),
        pytest.param("12345", id="5 digits"),
        pytest.param("1234567", id="7 digits"),
        pytest.param("12a456", id="letter"),
        pytest.param("12 456", id="inner space"),
        pytest.param("+12345", id="sign"),
        pytest.param("-12345", id="minus"),
        pytest.param("12.456", id="dot"),
    ],
)
def test_malformed_codes_are_refused(bad: str) -> None:
    assert matching_time_step(SECRET, bad, NOW) is None


@pytest.mark.parametrize("padding", [" {}", "{} ", "0{}", "{}0", "{}\n"])
def test_a_valid_code_with_extra_characters_is_refused(padding: str) -> None:
    assert matching_time_step(SECRET, padding.format(code(NOW)), NOW) is None


@pytest.mark.parametrize(
    "non_ascii",
    [
        pytest.param("\u0661\u0662\u0663\u0664\u0665\u0666", id="arabic-indic digits"),
        pytest.param("\uff11\uff12\uff13\uff14\uff15\uff16", id="fullwidth digits"),
        pytest.param("12345\u00b2", id="superscript two"),
    ],
)
def test_non_ascii_digits_are_refused_not_raised(non_ascii: str) -> None:
    assert matching_time_step(SECRET, non_ascii, NOW) is None


def test_code_at_is_what_an_authenticator_shows() -> None:
    for offset in range(-3, 4):
        at = NOW + offset * STEP + timedelta(seconds=7)
        assert code_at(SECRET, at) == code(at)


def test_new_secret_is_base32_and_usable() -> None:
    secret = new_secret()
    assert secret
    assert set(secret) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
    assert secret != new_secret()
    assert matching_time_step(secret, code(NOW, secret), NOW) == NOW_STEP
