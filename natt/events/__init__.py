"""The event logs of the seed's two devices: the VPN 3000 concentrator's Filterable Event Log
and the Cisco VPN Client's log. ``catalog`` holds every message; ``EventLog`` numbers, counts
and keeps them; ``render_*`` print them in each device's format."""

from natt.events import catalog
from natt.events.catalog import Message, MessageFieldError, Origin
from natt.events.model import (
    MASK,
    SEVERITY_MAX,
    SEVERITY_MIN,
    EventClass,
    LogEntry,
    client_code,
    client_severity,
    is_secret_field,
    severity_category,
)
from natt.events.render import render_client, render_concentrator, render_json
from natt.events.store import EventLog, Listener

__all__ = [
    "MASK",
    "SEVERITY_MAX",
    "SEVERITY_MIN",
    "EventClass",
    "EventLog",
    "Listener",
    "LogEntry",
    "Message",
    "MessageFieldError",
    "Origin",
    "catalog",
    "client_code",
    "client_severity",
    "is_secret_field",
    "render_client",
    "render_concentrator",
    "render_json",
    "severity_category",
]
