"""Todo api service: accounts, tasks and tags; each task change and its event are written in
one transaction (outbox) and published through Dapr pub/sub.

Modules: ``main`` (the ``todo-api`` command), ``app`` (``create_api_app``), ``settings``,
``tables`` + ``migrations/`` + ``migrate``, ``db``, ``schemas``, ``store``, ``outbox``,
``recurrence``, ``passwords``, ``routes/`` (auth, tasks, tags). See ``todo_api.main``.
"""
