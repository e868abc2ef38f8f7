"""The operator console: the queue at a glance (``queue``) and the last 24 hours as charts (``history``), on one
admin page that refreshes itself from a staff-only JSON endpoint (``views``)."""
