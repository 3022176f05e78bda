"""The driver page's helpers: browser sessions, CSRF, languages and templates."""
