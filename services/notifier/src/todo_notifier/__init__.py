"""The Todo notifier: consumes task events, schedules reminders with the Dapr Jobs API, stores
notifications exactly once per occurrence and publishes ``reminder.due``; serves the
notification endpoints. See ``todo_notifier.main`` for the module layout."""
