"""Triggers: callbacks, alerts and schedules, attached to an executor from outside."""
