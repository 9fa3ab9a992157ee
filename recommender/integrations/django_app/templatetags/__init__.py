"""Template tag libraries of the recommender Django app."""
