"""Template integrations (Jinja2, Django): slot helpers that open lazily and never raise."""
