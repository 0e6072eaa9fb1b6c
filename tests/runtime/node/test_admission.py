"""Who gets a connection, decided before any association exists: per address, in all, and with
slots kept for known callers that unknown peers cannot take."""

from __future__ import annotations

from chexplain.runtime.node.admission import Admission, AdmissionLimits

LIMITS = AdmissionLimits(max_total=8, max_per_address=3, reserved=2)


def test_an_address_gets_its_share_and_a_released_slot_is_free_at_once():
    admission = Admission(LIMITS)
    tokens = [admission.admit("10.0.0.9", [])[0] for _ in range(3)]
    assert None not in tokens
    token, reason = admission.admit("10.0.0.9", [])
    assert token is None and "3 connections from this address (limit 3)" in reason
    admission.release(tokens[0])
    assert admission.admit("10.0.0.9", [])[0] is not None  # no timeout to wait for


def test_running_associations_count_with_the_connections_not_yet_associations():
    admission = Admission(LIMITS)
    assert admission.admit("10.0.0.9", ["10.0.0.9", "10.0.0.9"])[0] is not None
    assert admission.admit("10.0.0.9", ["10.0.0.9", "10.0.0.9"])[0] is None


def test_unknown_peers_never_take_the_slots_kept_for_known_callers():
    admission = Admission(LIMITS, known=["10.0.0.1"])
    unknown = [f"10.0.1.{n}" for n in range(4)]
    admitted = [admission.admit(address, [])[0] for address in unknown for _ in range(3)]
    assert sum(token is not None for token in admitted) == 6  # 8 slots, 2 kept
    token, reason = admission.admit("10.0.2.1", [])
    assert token is None and "not known as callers (limit 6: 2 kept for known callers)" in reason
    assert admission.admit("10.0.0.1", [])[0] is not None and admission.admit("10.0.0.1", [])[0] is not None
    token, reason = admission.admit("10.0.0.1", [])
    assert token is None and "8 connections in all (limit 8)" in reason


def test_an_address_that_has_associated_becomes_known():
    admission = Admission(LIMITS)
    for n in range(6):
        assert admission.admit(f"10.0.1.{n}", [])[0] is not None
    assert admission.admit("10.0.0.5", [])[0] is None
    admission.know("10.0.0.5")
    assert admission.admit("10.0.0.5", [])[0] is not None
