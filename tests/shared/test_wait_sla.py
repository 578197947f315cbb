"""The wait-time SLA's thresholds in Tools → Human Handoff (shared/chatbots.py,
shared/wait_sla.py): defaults 5 and 15 minutes, each may be off, urgent after alert, and
every refusal in words."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.chatbots import ChatbotSettings, HumanHandoffSettings


def test_defaults_are_five_and_fifteen_minutes_also_for_settings_stored_before():
    assert (HumanHandoffSettings().alert_after_min, HumanHandoffSettings().urgent_after_min) == (5, 15)
    stored = ChatbotSettings.model_validate({"chatbot_id": "b", "name": "B", "human_handoff": {"enabled": True}})
    assert (stored.human_handoff.alert_after_min, stored.human_handoff.urgent_after_min) == (5, 15)


@pytest.mark.parametrize(("alert", "urgent", "saved"), [
    (None, 30, (None, 30)),
    (10, None, (10, None)),
    (None, None, (None, None)),
    ("", "20", (None, 20)),  # an emptied field is off; digits as text are minutes
    (1, 10_080, (1, 10_080)),
])
def test_each_threshold_may_be_off(alert, urgent, saved):
    hh = HumanHandoffSettings(alert_after_min=alert, urgent_after_min=urgent)
    assert (hh.alert_after_min, hh.urgent_after_min) == saved


@pytest.mark.parametrize(("alert", "urgent", "says"), [
    (15, 15, "Urgent after must be more minutes than Alert after (or turn one of them off)."),
    (20, 10, "Urgent after must be more minutes than Alert after (or turn one of them off)."),
    (0, 15, "Alert after must be a whole number of minutes from 1 to 10,080, or off."),
    (5, -1, "Urgent after must be a whole number of minutes from 1 to 10,080, or off."),
    (2.5, 15, "Alert after must be a whole number of minutes from 1 to 10,080, or off."),
    ("soon", 15, "Alert after must be a whole number of minutes from 1 to 10,080, or off."),
    (True, 15, "Alert after must be a whole number of minutes from 1 to 10,080, or off."),
    (5, 10_081, "Urgent after must be a whole number of minutes from 1 to 10,080, or off."),
])
def test_refusals_say_what_is_wrong(alert, urgent, says):
    with pytest.raises(ValidationError) as err:
        HumanHandoffSettings(alert_after_min=alert, urgent_after_min=urgent)
    assert says in str(err.value)
