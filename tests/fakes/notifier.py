"""A notifier that keeps the alerts it is sent (unit tests of the alert rules' logic)."""

from __future__ import annotations

from bastion.intelligence.alerts import Alert


class RecordingNotifier:
    def __init__(self, name: str = "rec", fail: bool = False) -> None:
        self.name = name
        self.fail = fail
        self.sent: list[Alert] = []

    def send(self, alert: Alert) -> None:
        if self.fail:
            raise ConnectionError("receiver down")
        self.sent.append(alert)

    def close(self) -> None:
        pass
