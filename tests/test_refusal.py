"""What a user is told when the broker refuses their topics: the topic, the account, the fix."""

from __future__ import annotations

from shared.refusal import Refusal, discovery_advice, node_advice, worker_advice

BROKER = "mqtts://broker.lan:8883"
STATUS = Refusal("isplitee/cam2/status", "Not authorized")


def test_a_node_on_another_accounts_id_is_told_both_ways_out() -> None:
    line = node_advice([STATUS], broker=BROKER, user="cam1", device_id="cam2")
    assert line.startswith(
        "the broker at mqtts://broker.lan:8883 refused account 'cam1' a publish on "
        "isplitee/cam2/status (Not authorized)"
    )
    assert "--device-id cam1" in line and "broker-setup.sh add-node DIR cam2" in line
    assert "\n" not in line


def test_an_anonymous_node_is_told_to_log_in() -> None:
    line = node_advice([STATUS, STATUS], broker=BROKER, user=None, device_id="cam2")
    assert "refused an anonymous client" in line and "(and 1 more topics)" in line
    assert "ISPLITEE_USERNAME" in line and "add-node DIR cam2" in line


def test_a_node_on_its_own_account_is_pointed_at_the_acl() -> None:
    line = node_advice([STATUS], broker=BROKER, user="cam2", device_id="cam2")
    assert "broker_config/acl" in line and "--device-id" not in line


def test_worker_and_discovery_advice_name_their_fix() -> None:
    sub = Refusal("$share/isplitee/isplitee/+/activation", "Not authorized", "subscribe")
    line = worker_advice([sub], broker=BROKER, user=None, worker_id="w1")
    assert "a subscribe on $share/isplitee/isplitee/+/activation" in line
    assert "add-worker DIR w1" in line
    line = discovery_advice([STATUS], broker=BROKER, user="cam1")
    assert "pattern write homeassistant/+/isplitee_%u/+/config" in line


def test_a_worker_on_another_accounts_id_is_told_to_use_its_own() -> None:
    status = Refusal("isplitee/workers/w2/status", "Not authorized")
    line = worker_advice([status], broker=BROKER, user="w1", worker_id="w2")
    assert "--worker-id w1" in line and "add-worker DIR w2" in line
    assert "add-worker DIR w1" not in line  # w1 exists: re-adding it is not the fix


def test_discovery_advice_follows_the_configured_prefix() -> None:
    line = discovery_advice([STATUS], broker=BROKER, user="cam1", ha_prefix="hass")
    assert "pattern write hass/+/isplitee_%u/+/config" in line
