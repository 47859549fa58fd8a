"""State, events and snapshots from per-frame answers: the pure tracker on a fake clock."""

from __future__ import annotations

import itertools

from device.config import DeviceConfig
from device.events import NONE, Answer, EventRules, LabelTracker, Updates
from shared.config import load_config

T0 = 1_800_000_000.0
FPS = 20


class Camera:
    """Feeds a tracker answers at FPS on a fake clock and keeps everything it returns."""

    def __init__(self, rules: EventRules | None = None) -> None:
        self.tracker = LabelTracker("cam1", rules or EventRules(), now=T0)
        self.frame = 0
        self.states: list[tuple[int, object]] = [(0, self.tracker.initial())]  # (frame, state)
        self.events: list[tuple[int, object]] = []
        self.snapshots: list[tuple[int, object]] = []

    @property
    def now(self) -> float:
        return T0 + self.frame / FPS

    def _keep(self, out: Updates) -> None:
        if out.state is not None:
            self.states.append((self.frame, out.state))
        self.events += [(self.frame, e) for e in out.events]
        self.snapshots += [(self.frame, s) for s in out.snapshots]

    def see(self, label: int | None, n: int = 1, conf: float = 0.9, source: str = "edge"):
        """``n`` frames of ``label`` (None: an unsure answer)."""
        for _ in range(n):
            a = Answer(
                frame_id=self.frame,
                label=0 if label is None else label,
                class_name=str(0 if label is None else label),
                confidence=0.1 if label is None else conf,
                source=source,
                split_block=6,
                captured_at=self.now,
            )
            self._keep(self.tracker.observe(a))
            self.frame += 1
        return self

    def wait(self, seconds: float) -> Camera:
        """No frames for ``seconds`` (ticks every 0.1 s, as the node's reply loop does)."""
        end = self.now + seconds
        t = self.now
        while t < end:
            t = min(t + 0.1, end)
            self._keep(self.tracker.advance(t))
        self.frame += round(seconds * FPS)  # the clock of later frames
        return self

    def labels(self) -> list[str]:
        return [s.class_name for _, s in self.states]

    def kinds(self, label: str | None = None) -> list[str]:
        return [e.type for _, e in self.events if label is None or e.class_name == label]


def test_a_label_becomes_the_state_after_min_frames_in_a_row_not_before() -> None:
    cam = Camera(EventRules(min_frames=3)).see(7, 2)
    assert cam.labels() == [NONE]  # the first state, at start
    cam.see(7)
    assert cam.labels() == [NONE, "7"] and cam.states[-1][0] == 2
    s = cam.states[-1][1]
    assert s.label == 7 and s.confidence == 0.9
    assert s.sources == {"edge": 3, "cloud": 0, "fallback": 0}
    assert s.since.endswith("00.000Z") and s.active_events == ["7"]


def test_flicker_and_unsure_answers_never_change_the_state() -> None:
    cam = Camera(EventRules(min_frames=3, hold_s=100))
    for _ in range(40):
        cam.see(1, 2).see(2, 2).see(None)
    assert cam.labels() == [NONE]
    assert cam.events == [] and cam.snapshots == []


def test_an_unsure_answer_breaks_a_run() -> None:
    cam = Camera(EventRules(min_frames=3)).see(4, 2).see(None).see(4, 2)
    assert cam.labels() == [NONE]
    cam.see(4)
    assert cam.labels() == [NONE, "4"]


def test_the_state_goes_to_none_after_hold_s_without_an_agreeing_answer() -> None:
    cam = Camera(EventRules(min_frames=2, hold_s=3, end_s=100)).see(5, 5)
    cam.see(None, 3 * FPS - 1)
    assert cam.labels()[-1] == "5"
    cam.see(None)
    assert cam.labels()[-1] == NONE
    # ... and without any frame at all, from the ticks
    cam = Camera(EventRules(min_frames=2, hold_s=3, end_s=100)).see(5, 5).wait(2.9)
    assert cam.labels()[-1] == "5"
    cam.wait(0.2)
    assert cam.labels()[-1] == NONE


def test_a_change_within_the_rate_limit_waits_and_the_newest_state_wins() -> None:
    rules = EventRules(min_frames=1, state_min_interval_s=2.0, end_s=100)
    cam = Camera(rules).see(1).see(2).see(3)  # three changes in 0.15 s
    assert cam.labels() == [NONE, "1"]  # 2 and 3 wait: 1 took the slot at t=0
    cam.see(3, 2 * FPS)
    assert cam.labels() == [NONE, "1", "3"]
    assert cam.states[-1][0] == 2 * FPS  # exactly when the interval allowed it


def test_events_start_update_and_end_with_ids_times_best_and_frames() -> None:
    rules = EventRules(min_frames=3, end_s=2.0, snapshot_interval_s=1.0)
    cam = Camera(rules).see(8, 3, conf=0.7).see(8, 5, conf=0.8).see(8, 30, conf=0.95)
    assert cam.kinds() == ["start", "update"]
    start = cam.events[0][1]
    assert start.start.endswith("00.000Z") and start.frames == 3 and start.end is None
    assert start.best_confidence == 0.7 and start.snapshot_frame_id == 0
    # better frames came within 1 s of the start's snapshot: the best of them waits its turn
    assert cam.events[1][0] == 2 + FPS and cam.events[1][1].best_confidence == 0.95
    assert cam.events[1][1].snapshot_frame_id == 8 and cam.events[1][1].frames == 23
    assert [s.frame_id for _, s in cam.snapshots] == [0, 8]
    assert {e.id for _, e in cam.events} == {"cam1-1800000000000-8"}
    cam.see(None, 2 * FPS - 1)
    assert cam.kinds()[-1] == "update"
    cam.see(None)
    end = cam.events[-1][1]
    assert end.type == "end" and end.frames == 38 and end.best_confidence == 0.95
    assert end.end.endswith("01.850Z")  # its last frame with the label, frame 37
    assert cam.states[-1][1].active_events == []


def test_snapshots_never_come_faster_than_the_rate_over_all_events() -> None:
    rules = EventRules(min_frames=1, snapshot_interval_s=2.0, end_s=100)
    cam = Camera(rules)
    for i in range(1, 200):
        cam.see(i % 3, 1, conf=min(0.6 + i / 500, 1.0))
    times = [f / FPS for f, _ in cam.snapshots]
    assert times and all(b - a >= 2.0 for a, b in itertools.pairwise(times))
    assert len(cam.events) < 40  # updates are tied to snapshots, so they are limited too


def test_event_filters_labels_and_minimum_confidence() -> None:
    rules = EventRules(min_frames=2, min_confidence=0.5, event_labels=frozenset({"3"}))
    cam = Camera(rules).see(2, 10).see(3, 10, conf=0.4)
    assert cam.labels()[-1] == "2" and cam.events == []  # 3 below the minimum confidence
    cam.see(3, 2, conf=0.6)
    assert cam.labels()[-1] == "3" and cam.kinds() == ["start"]


def test_close_ends_open_events_and_states_it_at_once() -> None:
    cam = Camera(EventRules(min_frames=1, state_min_interval_s=60)).see(6, 3)
    out = cam.tracker.close()
    assert [e.type for e in out.events] == ["end"]
    assert out.state is not None and out.state.active_events == []
    # the camera is off: the retained state must not go on naming the last label
    assert (out.state.class_name, out.state.label, out.state.confidence) == (NONE, None, None)
    assert out.state.since == out.state.updated_at


def test_wanted_frames_are_only_those_a_snapshot_may_still_show() -> None:
    rules = EventRules(min_frames=3, snapshot_interval_s=5.0, end_s=100)
    cam = Camera(rules).see(1, 1, conf=0.9).see(1, 1, conf=0.7)
    assert cam.tracker.wanted_frames() == {0}  # the run's best, an event may start on it
    cam.see(1)
    assert cam.tracker.wanted_frames() == set()  # shown at the start
    cam.see(1, 1, conf=0.99)
    assert cam.tracker.wanted_frames() == {3}  # waits for the rate limit


def test_rules_take_their_defaults_and_values_from_the_node_config() -> None:
    """One home for defaults and bounds: the config (which refuses bad values, test_config)."""
    cfg = load_config(DeviceConfig, None, {"model": "m.pt"})
    assert EventRules.from_config(cfg) == EventRules()
    cfg = load_config(
        DeviceConfig,
        None,
        {"model": "m.pt", "hold_s": 9.0, "snapshot_max_fps": 4.0, "event_labels": "a,b"},
    )
    rules = EventRules.from_config(cfg)
    assert (rules.hold_s, rules.snapshot_interval_s) == (9.0, 0.25)
    assert rules.event_labels == {"a", "b"}


def test_after_a_lapse_a_label_holds_again_only_after_min_frames_as_a_new_event() -> None:
    rules = EventRules(min_frames=3, hold_s=3, end_s=3, state_min_interval_s=0)
    cam = Camera(rules).see(5, 4, source="cloud").wait(3.5)  # the lapse: ticks alone
    first = cam.events[0][1]
    assert cam.labels()[-1] == NONE and cam.kinds() == ["start", "end"]
    n_states = len(cam.states)
    cam.see(5)  # one frame: not min_frames in a row, so no state and no event
    assert len(cam.states) == n_states and cam.kinds() == ["start", "end"]
    cam.see(5, 2)
    start, s = cam.events[-1][1], cam.states[-1][1]
    assert start.type == "start" and start.id != first.id and start.frames == 3
    assert start.start > first.start and s.since == start.start  # from the new run
    assert s.class_name == "5" and s.sources == {"edge": 3, "cloud": 0, "fallback": 0}


def test_an_event_that_ended_while_its_label_held_starts_again_only_after_min_frames() -> None:
    rules = EventRules(min_frames=3, hold_s=100, end_s=3, state_min_interval_s=0)
    cam = Camera(rules).see(5, 4).wait(3.5)
    assert cam.labels()[-1] == "5" and cam.kinds() == ["start", "end"]
    cam.see(5, 2)
    assert cam.kinds() == ["start", "end"]
    cam.see(5)
    assert cam.kinds() == ["start", "end", "start"]
    assert cam.events[-1][1].id != cam.events[0][1].id and cam.events[-1][1].frames == 3


def test_a_start_snapshot_held_back_by_the_rate_limit_is_sent_without_an_update() -> None:
    rules = EventRules(min_frames=1, snapshot_interval_s=2.0, end_s=100)
    cam = Camera(rules).see(1).see(2)  # 2 starts 0.05 s after 1 took the snapshot slot
    assert cam.kinds() == ["start", "start"] and [s.frame_id for _, s in cam.snapshots] == [0]
    cam.see(2, 2 * FPS)  # no better frame of 2 than its first
    assert [s.frame_id for _, s in cam.snapshots] == [0, 1]  # the start's frame, when allowed
    assert cam.kinds() == ["start", "start"]  # named by the start already: no update
    cam.see(2, FPS, conf=0.95)
    assert cam.kinds() == ["start", "start"]  # better, but within 2 s of the last snapshot
    cam.see(2, FPS)
    assert cam.kinds() == ["start", "start", "update"]
    assert cam.events[-1][1].snapshot_frame_id == cam.snapshots[-1][1].frame_id
