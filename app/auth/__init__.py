"""Authentication and request protection: passwords, sessions, CSRF, throttling."""
