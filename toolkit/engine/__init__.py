"""The engine: a synchronous core (schedule -> execute -> update) and its async facade."""
