"""The exit status tells systemd whether to start a program again: 2 for a mistake (the units'
RestartPreventExitStatus=2), 75 for what may mend by itself (a broker not up yet)."""

from __future__ import annotations

import pytest

from device.camera import SourceUnavailable, open_source
from shared.entrypoint import report_error
from shared.errors import EXIT_MISTAKE, EXIT_TEMPORARY, IsplitEEError
from shared.lab.broker import free_port
from shared.mqtt import BrokerUnavailable, MqttError, MqttLink


def test_a_broker_not_up_yet_is_temporary(capsys) -> None:
    link = MqttLink(f"mqtt://127.0.0.1:{free_port()}", "exit-check")
    with pytest.raises(BrokerUnavailable, match="Connection refused") as caught:
        link.start(1.5)
    assert report_error("isplitee-device", caught.value) == EXIT_TEMPORARY
    assert capsys.readouterr().err.count("\n") == 1


def test_a_camera_not_there_yet_is_temporary() -> None:
    with pytest.raises(SourceUnavailable, match="cannot open camera 9") as caught:
        open_source("9")
    assert report_error("isplitee-device", caught.value) == EXIT_TEMPORARY


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no such file"), ("not a certificate\n", "is not a readable PEM CA certificate")],
)
def test_a_bad_ca_file_is_a_one_line_mistake(tmp_path, content, message) -> None:
    ca = tmp_path / "ca.crt"
    if content is not None:
        ca.write_text(content)
    with pytest.raises(MqttError, match=message) as caught:
        MqttLink("mqtts://127.0.0.1:8883", "exit-check", ca_file=str(ca))
    assert not isinstance(caught.value, BrokerUnavailable)
    assert report_error("isplitee-cloud", caught.value) == EXIT_MISTAKE


def test_every_other_user_error_is_a_mistake() -> None:
    assert report_error("isplitee-device", IsplitEEError("bad")) == EXIT_MISTAKE
    assert report_error("isplitee-device", ValueError("bad")) == EXIT_MISTAKE
