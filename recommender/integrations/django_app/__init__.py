"""The Django app that carries the `recommender` template tag library."""
