"""The node's bookkeeping of what it sent (device/pending.py): pure, on a fake clock, no broker.

An offload is settled exactly once, by its reply or by its timeout after one re-send; a reply
for anything no longer pending matches nothing; an offload being settled still counts until its
result is out, so the frame loop never runs ahead of a result."""

from __future__ import annotations

import threading

import pytest

from device.pending import PendingOffloads, PendingProbes


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _pending(resends: int = 1) -> tuple[PendingOffloads[str], FakeClock]:
    clock = FakeClock()
    return PendingOffloads(timeout_s=2.0, resends=resends, clock=clock), clock


def test_a_reply_settles_its_offload_once_and_a_duplicate_or_stranger_matches_nothing() -> None:
    pending, _ = _pending()
    pending.add(7, b"act", "frame 7")
    with pending.settle(7) as offload:
        assert offload is not None
        assert (offload.frame_id, offload.payload, offload.context) == (7, b"act", "frame 7")
    with pending.settle(7) as again:  # a QoS 1 duplicate, or a reply after the re-send's
        assert again is None
    with pending.settle(8) as stranger:
        assert stranger is None
    assert len(pending) == 0


def test_an_offload_counts_as_pending_until_its_result_is_out() -> None:
    pending, _ = _pending()
    pending.add(1, b"", None)
    with pending.settle(1):
        assert len(pending) == 1 and not pending.wait_below(1, 0)
        assert pending.next_deadline() is None  # nothing left to time out
    assert len(pending) == 0 and pending.wait_below(1, 0)


def test_an_unanswered_offload_is_sent_again_once_then_expires() -> None:
    pending, clock = _pending(resends=1)
    pending.add(3, b"act", "ctx")
    clock.now += 1.9
    assert not pending.due()  # not yet
    clock.now += 0.1
    due = pending.due()
    assert [(o.frame_id, o.attempts, o.sent) for o in due.resend] == [(3, 2, clock.now)]
    assert due.expired == [] and len(pending) == 1
    assert pending.next_deadline() == clock.now + 2.0  # timed from the re-send
    clock.now += 2.0
    due = pending.due()
    assert due.resend == [] and [(o.frame_id, o.attempts) for o in due.expired] == [(3, 2)]
    assert len(pending) == 1  # until its fallback is out
    with pending.settle(3) as late:  # the first send's reply, after all
        assert late is None
    pending.done()
    assert len(pending) == 0 and not pending.due(clock.now + 100)


def test_without_resends_an_unanswered_offload_expires_at_its_first_timeout() -> None:
    pending, clock = _pending(resends=0)
    pending.add(3, b"act", "ctx")
    due = pending.due(clock.now + 2.0)  # an explicit now, as the node's caller may pass
    assert due.resend == [] and [o.frame_id for o in due.expired] == [3]


def test_final_takes_every_offload_at_once_and_sends_none_again() -> None:
    pending, clock = _pending(resends=1)
    pending.add(1, b"", None)
    clock.now += 5.0
    pending.add(2, b"", None)
    due = pending.due(final=True)
    assert due.resend == [] and sorted(o.frame_id for o in due.expired) == [1, 2]
    pending.done(2)
    assert len(pending) == 0


def test_the_next_deadline_is_the_oldest_offloads() -> None:
    pending, clock = _pending()
    assert pending.next_deadline() is None
    pending.add(1, b"", None)
    clock.now += 0.5
    pending.add(2, b"", None)
    assert pending.next_deadline() == 100.0 + 2.0
    with pending.settle(1):
        pass
    assert pending.next_deadline() == 100.5 + 2.0


def test_a_waiting_frame_loop_wakes_when_a_result_frees_a_place() -> None:
    pending, _ = _pending()
    pending.add(1, b"", None)
    woke = []
    waiter = threading.Thread(target=lambda: woke.append(pending.wait_below(1, 5.0)))
    waiter.start()
    with pending.settle(1):
        waiter.join(0.05)
        assert waiter.is_alive()  # the result is not out yet
    waiter.join(5.0)
    assert woke == [True]


def test_bad_bookkeeping_values_are_refused_with_the_value() -> None:
    with pytest.raises(ValueError, match="timeout_s should be > 0, got 0"):
        PendingOffloads(timeout_s=0, resends=1)
    with pytest.raises(ValueError, match="resends should be >= 0, got -1"):
        PendingOffloads(timeout_s=1.0, resends=-1)


def test_a_probe_comes_back_once_with_its_arm_and_when_it_went() -> None:
    clock = FakeClock()
    probes = PendingProbes(clock=clock)
    first = probes.add(2)
    clock.now += 1.0
    second = probes.add(0)
    assert second > first and len(probes) == 2
    assert probes.match(second) == (0, 101.0)
    assert probes.match(second) is None  # a duplicate
    assert probes.match(999) is None
    assert len(probes) == 1


def test_lost_probes_are_forgotten_oldest_first() -> None:
    probes = PendingProbes(keep=3, clock=FakeClock())
    seqs = [probes.add(arm) for arm in range(5)]
    assert len(probes) == 3
    assert probes.match(seqs[0]) is None and probes.match(seqs[1]) is None
    assert probes.match(seqs[4]) == (4, 100.0)


def test_a_probe_is_in_flight_from_its_send_until_it_comes_back_unless_lost() -> None:
    clock = FakeClock()
    probes = PendingProbes(clock=clock)
    assert not probes.in_flight(99.0, 101.0, lost_after=5.0)
    seq = probes.add(1)  # sent at 100
    assert probes.in_flight(99.0, 101.0, lost_after=5.0)  # out while an offload was
    assert not probes.in_flight(99.0, 99.5, lost_after=5.0)  # sent after that offload came back
    assert not probes.in_flight(104.0, 106.0, lost_after=5.0)  # out 6 s: lost, holds nothing up
    probes.match(seq, received=102.0)
    assert probes.in_flight(101.0, 103.0, lost_after=5.0)  # came back after the offload went
    assert not probes.in_flight(102.5, 103.0, lost_after=5.0)  # back before it went
