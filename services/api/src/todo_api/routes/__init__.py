"""HTTP routes of the api: /api/v1/auth, /api/v1/tasks, /api/v1/tags."""
